"""Data reconciliation of the measured streams by weighted least squares, so the mass balance an
engineer reports closes and a bad measurement stands out (docs/purity.md, "Reconciliation").

Pure: streams and balance nodes in, reconciled values out. The classical solution (Kuehn and
Davidson 1961; Narasimhan and Jordache, "Data Reconciliation and Gross Error Detection", 2000):
minimise sum((x_hat - x)^2 / sd^2) subject to A x_hat = 0, which gives
x_hat = x - V A^T (A V A^T)^-1 A x with V = diag(sd^2). The adjustment a = x - x_hat has the
covariance V A^T (A V A^T)^-1 A V; a normalised adjustment |a_i| / sd(a_i) above 3 (the
measurement test) flags a gross error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

GROSS_ERROR_LIMIT = 3.0


@dataclass(frozen=True)
class Stream:
    """One measured stream: its value, its 1-sigma and its sign in each balance node it enters
    (+1 into the node, -1 out of it)."""

    name: str
    kind: str
    value: float
    sd: float
    nodes: Mapping[str, int]


@dataclass(frozen=True)
class Reconciled:
    """A stream after reconciliation."""

    stream: Stream
    reconciled: float
    adjustment: float
    normalised: float

    @property
    def gross_error(self) -> bool:
        return self.normalised > GROSS_ERROR_LIMIT

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.stream.name,
            "kind": self.stream.kind,
            "measured": round(self.stream.value, 3),
            "sd": round(self.stream.sd, 3),
            "reconciled": round(self.reconciled, 3),
            "adjustment": round(self.adjustment, 3),
            "normalised_adjustment": round(self.normalised, 2),
            "gross_error": self.gross_error,
        }


def reconcile(streams: Sequence[Stream]) -> tuple[list[Reconciled], dict[str, float]]:
    """Reconciled streams, and each node's imbalance before reconciliation (in - out of the
    measured values: the unaccounted loss). Streams with sd 0 are held fixed."""
    nodes = sorted({n for s in streams for n in s.nodes})
    x = np.array([s.value for s in streams], dtype=float)
    imbalance = {n: 0.0 for n in nodes}
    if not nodes:
        return [Reconciled(s, s.value, 0.0, 0.0) for s in streams], imbalance
    a = np.zeros((len(nodes), len(streams)))
    for j, s in enumerate(streams):
        for n, sign in s.nodes.items():
            a[nodes.index(n), j] = sign
    v = np.diag([s.sd**2 for s in streams])
    r = a @ x
    m = a @ v @ a.T
    # pinv: a node whose streams are all fixed (sd 0) or two identical nodes make M singular.
    m_inv = np.linalg.pinv(m)
    adj = v @ a.T @ m_inv @ r
    cov = v @ a.T @ m_inv @ a @ v
    sd_adj = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    norm = np.divide(np.abs(adj), sd_adj, out=np.zeros_like(adj), where=sd_adj > 1e-12)
    for i, n in enumerate(nodes):
        imbalance[n] = float(r[i])
    out = [
        Reconciled(s, float(x[j] - adj[j]), float(-adj[j]), float(norm[j]))
        for j, s in enumerate(streams)
    ]
    return out, imbalance


def reconciliation_json(streams: Sequence[Stream], units: Mapping[str, str]) -> dict[str, Any]:
    """The report's `reconciliation`: streams, per-node unaccounted loss and gross-error warnings.
    `units`: each node's unit (kg, g). One warning per node with a gross error, naming the
    stream adjusted most for its own sd (with one balance, every stream of a node has the same
    normalised adjustment: the test finds the node, the sd-weighted adjustment the suspect)."""
    done, imbalance = reconcile(streams)
    warnings = []
    for node, unaccounted in imbalance.items():
        flagged = [d for d in done if d.gross_error and node in d.stream.nodes]
        if not flagged:
            continue
        worst = max(flagged, key=lambda d: abs(d.adjustment) / max(d.stream.sd, 1e-12))
        warnings.append(
            f"gross error suspected in {node}: unaccounted {unaccounted:.6g} {units.get(node, '')}"
            f", normalised adjustment {worst.normalised:.1f} > {GROSS_ERROR_LIMIT:g}; adjusted "
            f"most: {worst.stream.name} (measured {worst.stream.value:.6g}, reconciled "
            f"{worst.reconciled:.6g})"
        )
    return {
        "method": "weighted least squares (measurement test for gross errors)",
        "streams": [d.as_json() for d in done],
        "nodes": {
            n: {"unit": units.get(n, ""), "unaccounted": round(v, 3)} for n, v in imbalance.items()
        },
        "warnings": warnings,
    }
