"""Recycling efficiency and material recovery by the method of Delegated Regulation (EU) 2025/606.

Pure functions over fractions the caller measured, so a hand-computed example can check them.
The method (docs/purity.md, docs/reference/eu-recycling-method.md): per calendar year,
recycling efficiency = sum of the output fractions' counted mass / sum of the input fractions'
mass; material recovery of an element = its mass in the output fractions / its mass in the
input fractions; each fraction is weighed and assayed at its calculation point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

RECOVERY_METALS = ("Co", "Cu", "Li", "Ni")  # Annex XII Part C (Pb: lead-acid batteries only)


@dataclass(frozen=True)
class Fraction:
    """One input or output fraction: what it is, where it was measured and what it holds.

    `counted_kg`: for an output, the mass that counts for recycling efficiency (the elements
    from the waste batteries, not water or reagents); for an input, its dry mass."""

    name: str
    calculation_point: str
    counted_kg: float
    metals_g: Mapping[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "calculation_point": self.calculation_point,
            "counted_kg": round(self.counted_kg, 3),
            "metals_g": {k: round(v, 1) for k, v in sorted(self.metals_g.items())},
        }


def _pct(num: float, den: float) -> float | None:
    return None if den <= 0 else round(100.0 * num / den, 2)


def recycling_efficiency(
    inputs: Sequence[Fraction], outputs: Sequence[Fraction], targets: Mapping[str, float]
) -> dict[str, Any]:
    """rRE = sum(output counted mass) / sum(input mass) x 100, against each Annex XII target."""
    m_in = math.fsum(f.counted_kg for f in inputs)
    m_out = math.fsum(f.counted_kg for f in outputs)
    rate = _pct(m_out, m_in)
    return {
        "rate_pct": rate,
        "input_kg": round(m_in, 3),
        "output_kg": round(m_out, 3),
        "targets": dict(targets),
        "meets": {k: rate is not None and rate >= v for k, v in targets.items()},
        "calculation_points": {
            "input": sorted({f.calculation_point for f in inputs}),
            "output": sorted({f.calculation_point for f in outputs}),
        },
    }


def material_recovery(
    inputs: Sequence[Fraction],
    outputs: Sequence[Fraction],
    targets: Mapping[str, Mapping[str, float]],
) -> dict[str, dict[str, Any]]:
    """rRM,i = mass of element i in the output fractions / its mass in the input fractions."""
    out: dict[str, dict[str, Any]] = {}
    for metal in RECOVERY_METALS:
        g_in = math.fsum(f.metals_g.get(metal, 0.0) for f in inputs)
        g_out = math.fsum(f.metals_g.get(metal, 0.0) for f in outputs)
        rate = _pct(g_out, g_in)
        tgt = {label: t[metal] for label, t in targets.items() if metal in t}
        out[metal] = {
            "rate_pct": rate,
            "input_g": round(g_in, 1),
            "output_g": round(g_out, 1),
            "targets": tgt,
            "meets": {k: rate is not None and rate >= v for k, v in tgt.items()},
            "calculation_points": {
                "input": sorted({f.calculation_point for f in inputs if f.metals_g.get(metal)}),
                "output": sorted({f.calculation_point for f in outputs if f.metals_g.get(metal)}),
            },
        }
    return out
