"""WLS reconciliation against hand-computed examples (plant/reconciliation.py)."""

from __future__ import annotations

import pytest

from plant.reconciliation import Stream, reconcile, reconciliation_json


def _three(out2: float, sd_in: float = 2.0) -> list[Stream]:
    return [
        Stream("cells in", "lot", 100.0, sd_in, {"mech": +1}),
        Stream("steel", "weighing", 60.0, 1.0, {"mech": -1}),
        Stream("black mass", "weighing", out2, 1.0, {"mech": -1}),
    ]


def test_three_streams_reconcile_by_hand() -> None:
    # 100 in, 60 + 38 out: 2 kg unaccounted. V = diag(4, 1, 1), A = [1, -1, -1]:
    # A V A^T = 6, lambda = 2 / 6; the adjustments are -V A^T lambda = [-4/3, +1/3, +1/3],
    # the in-stream, the least certain, takes 4/6 of the 2 kg.
    done, imbalance = reconcile(_three(38.0))
    assert imbalance == {"mech": pytest.approx(2.0)}
    assert [d.reconciled for d in done] == pytest.approx([100 - 4 / 3, 60 + 1 / 3, 38 + 1 / 3])
    assert [d.adjustment for d in done] == pytest.approx([-4 / 3, 1 / 3, 1 / 3])
    # One node: every normalised adjustment is r / sqrt(A V A^T) = 2 / sqrt(6).
    assert [d.normalised for d in done] == pytest.approx([2 / 6**0.5] * 3)
    assert not any(d.gross_error for d in done)
    closed = done[0].reconciled - done[1].reconciled - done[2].reconciled
    assert closed == pytest.approx(0.0, abs=1e-9)


def test_a_stream_off_by_ten_sigma_is_a_gross_error_warning() -> None:
    # 100 - 60 - 28 = 12 kg unaccounted: 12 / sqrt(6) = 4.9 > 3.
    rep = reconciliation_json(_three(28.0), {"mech": "kg"})
    assert rep["nodes"] == {"mech": {"unit": "kg", "unaccounted": 12.0}}
    assert [s["normalised_adjustment"] for s in rep["streams"]] == [4.9, 4.9, 4.9]
    assert all(s["gross_error"] for s in rep["streams"])
    # One warning for the node; the in-stream (sd 2) took the largest adjustment for its sd:
    # adjustments V A^T lambda = [8, -2, -2] (lambda = 12 / 6), over sd [4, 2, 2].
    assert rep["warnings"] == [
        "gross error suspected in mech: unaccounted 12 kg, normalised adjustment 4.9 > 3; "
        "adjusted most: cells in (measured 100, reconciled 92)"
    ]


def test_a_fixed_stream_is_not_adjusted_and_two_nodes_share_a_stream() -> None:
    # Node a: 10 in (fixed) = x + y; node b: y = 4 (fixed). Measured x 7, y 4.5 (sd 1 each):
    # the constraints leave y = 4, x = 6 whatever the weights.
    streams = [
        Stream("in", "lot", 10.0, 0.0, {"a": +1}),
        Stream("x", "weighing", 7.0, 1.0, {"a": -1}),
        Stream("y", "weighing", 4.5, 1.0, {"a": -1, "b": +1}),
        Stream("y check", "weighing", 4.0, 0.0, {"b": -1}),
    ]
    done, imbalance = reconcile(streams)
    assert [d.reconciled for d in done] == pytest.approx([10.0, 6.0, 4.0, 4.0])
    assert imbalance == {"a": pytest.approx(-1.5), "b": pytest.approx(0.5)}
    assert done[0].adjustment == 0.0 and done[0].normalised == 0.0


def test_no_nodes_leaves_the_measurements() -> None:
    done, imbalance = reconcile([Stream("alone", "lot", 5.0, 1.0, {})])
    assert done[0].reconciled == 5.0 and imbalance == {}
