"""Historian on SQLite and PostgreSQL: roll-ups kept incrementally, trends downsampled right,
each line's samples its own, each tag from one writer."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from plant.historian import HYDROMET_TAGS, PROCESS_TAGS, Historian, lines_recording
from plant.store import Store

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _series(n: int, start: datetime = T0) -> list[tuple[str, datetime, float]]:
    return [
        ("purification.ph", start + timedelta(seconds=i), 4.0 + 0.1 * math.sin(i / 300))
        for i in range(n)
    ]


def test_rollups_match_raw_whatever_the_recording_chunks(store: Store) -> None:
    h = Historian(store, "L1", writes=HYDROMET_TAGS)
    samples = _series(3 * 3600)
    # Chunks that cut minutes and hours in odd places: the upserts must merge them exactly.
    for a, b in ((0, 7), (7, 1000), (1000, 5555), (5555, len(samples))):
        assert h.record(samples[a:b]) == b - a
    values = [v for _, _, v in samples]
    for max_points, res in ((1000, 0), (100, 60), (2, 3600)):
        end = T0 + timedelta(hours=3)
        assert h.resolution_for(3 * 3600, max_points) == res
        buckets = h.trend("purification.ph", T0, end, max_points)
        assert 1 <= len(buckets) <= max_points + 1
        assert sum(b.n for b in buckets) == len(samples)
        assert min(b.min for b in buckets) == pytest.approx(min(values))
        assert max(b.max for b in buckets) == pytest.approx(max(values))
        first = buckets[0]
        raw = values[: first.width_s]
        assert first.start == T0
        assert first.mean == pytest.approx(sum(raw) / len(raw))
        assert first.sd == pytest.approx(
            math.sqrt(sum((v - first.mean) ** 2 for v in raw) / len(raw)), abs=1e-6
        )


def test_trend_window_and_tags_are_respected(store: Store) -> None:
    h = Historian(store, "L1", writes=("purification.ph", "leach.temp_c"))
    h.record(_series(7200))
    h.record([("leach.temp_c", T0 + timedelta(seconds=i), 70.0) for i in range(600)])
    part = h.trend("purification.ph", T0 + timedelta(minutes=30), T0 + timedelta(minutes=40))
    assert sum(b.n for b in part) == 600
    assert part[0].start == T0 + timedelta(minutes=30)
    temp = h.trend("leach.temp_c", T0, T0 + timedelta(hours=2), 10)
    assert [b.mean for b in temp] == [70.0] and temp[0].n == 600
    assert h.trend("nope", T0, T0 + timedelta(hours=1)) == []
    assert h.trend("purification.ph", T0, T0) == []


def test_not_a_number_is_refused_and_nothing_is_half_written(store: Store) -> None:
    h = Historian(store, "L1", writes=HYDROMET_TAGS)
    with pytest.raises(ValueError, match=r"purification\.ph .* nan"):
        h.record([("purification.ph", T0, 4.0), ("purification.ph", T0, float("nan"))])
    assert h.trend("purification.ph", T0, T0 + timedelta(hours=1)) == []


def test_two_lines_keep_their_own_samples_and_each_tag_has_one_writer(store: Store) -> None:
    plc = {line: Historian(store, line, writes=PROCESS_TAGS) for line in ("L1", "L2")}
    for k, h in enumerate(plc.values()):
        # Same tag, same seconds, different values: a line column keeps them apart.
        h.record([("leach.orp_mv", T0 + timedelta(seconds=i), 560.0 - 110 * k) for i in range(90)])
    for line, want in (("L1", 560.0), ("L2", 450.0)):
        for max_points in (1000, 2):  # raw samples, then the 1-minute roll-ups
            got = Historian(store, line).trend("leach.orp_mv", T0, T0 + timedelta(hours=1),
                                               max_points)  # fmt: skip
            assert sum(b.n for b in got) == 90
            assert {b.min for b in got} == {want} and {b.max for b in got} == {want}
    assert lines_recording(store, "leach.orp_mv") == ["L1", "L2"]
    assert lines_recording(store, "purification.ph") == []
    # The hydromet runner owns purification.ph; the controller's writer refuses it, and back.
    with pytest.raises(ValueError, match=r"purification\.ph is not written by this writer of L1"):
        plc["L1"].record([("purification.ph", T0, 4.0)])
    with pytest.raises(ValueError, match=r"leach\.orp_mv is not written by this writer"):
        Historian(store, "L1", writes=HYDROMET_TAGS).record([("leach.orp_mv", T0, 450.0)])
