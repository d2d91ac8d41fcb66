"""The classifier process's frames carry every piece of evidence and every decision unchanged,
and refuse a frame whose counts do not add up."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from drivers.spectra import Spectrum
from models.passport import Passport, PassportModel
from plant.classifier_frames import (
    HEAD,
    Frame,
    decisions_frame,
    decisions_of,
    evidence_frame,
    evidence_of,
)
from plant.decide import Evidence
from plant.domain import Chemistry, Decision, DecisionSource, Route


def _passport() -> Passport:
    return Passport(
        source="label:BP-7", passport_id="BP-7", model=PassportModel.catenax_6,
        manufacturer="ACME", chemistry=Chemistry.NMC622, chemistry_reason="cathode formula",
        chemistry_text="LiNi0.6Mn0.2Co0.2O2", mass_g=46.5, expires_on=date(2031, 5, 1),
        authenticity="verified", fields_used={"chemistry": "cathodeActiveMaterials"},
    )  # fmt: skip


def _cross(frame: Frame) -> Frame:
    """What the other end reads: the bytes, split as the socket delivers them."""
    data = frame.to_bytes()
    head, counts = HEAD.unpack(data[: HEAD.size])
    body = data[HEAD.size :]
    assert len(body) == head + counts
    return Frame.parse(body[:head], body[head:])


def test_evidence_crosses_unchanged() -> None:
    rng = np.random.default_rng(3)
    spectra = [
        Spectrum(counts=rng.poisson(20.0, n).astype(float), offset_kev=-0.01,
                 kev_per_channel=0.02, live_time_s=0.2, real_time_s=0.21, tube_kv=40.0,
                 source=f"xrf{k}:CELL:{k}", metadata={"head": str(k)})
        for k, n in enumerate((2048, 1024))
    ]  # fmt: skip
    items = [
        Evidence(spectrum=spectra[0], passport_id="BP-7", passport=_passport(),
                 buffers_full=frozenset({"hydromet", "reject"}), duplicate_of="L1/3/17",
                 cell_mass_g=45.9, seen_on=date(2026, 12, 8)),
        Evidence(spectrum_error="xrf1: timeout", passport_error="BP-8: no chemistry"),
        Evidence(spectrum=spectra[1]),
    ]  # fmt: skip
    back = evidence_of(_cross(evidence_frame(items)))
    for sent, got in zip(items, back, strict=True):
        for name in ("spectrum_error", "passport_id", "passport", "passport_error",
                     "buffers_full", "duplicate_of", "cell_mass_g", "seen_on"):  # fmt: skip
            assert getattr(got, name) == getattr(sent, name), name
        if sent.spectrum is None:
            assert got.spectrum is None
        else:
            assert got.spectrum is not None
            assert np.array_equal(got.spectrum.counts, sent.spectrum.counts)
            for name in ("offset_kev", "kev_per_channel", "live_time_s", "real_time_s",
                         "tube_kv", "source", "metadata"):  # fmt: skip
                assert getattr(got.spectrum, name) == getattr(sent.spectrum, name), name


def test_decisions_cross_unchanged() -> None:
    decisions = [
        Decision(Chemistry.LFP, 0.987, DecisionSource.fused, Route.black_mass, "both agree", "v3"),
        Decision(Chemistry.UNKNOWN, 0.0, DecisionSource.none, Route.quarantine, "no data", None),
    ]
    assert decisions_of(_cross(decisions_frame(decisions)).message["value"]) == decisions


def test_a_frame_whose_counts_do_not_add_up_is_refused() -> None:
    spectrum = Spectrum(counts=np.ones(64), offset_kev=0.0, kev_per_channel=0.1, live_time_s=1.0)
    frame = evidence_frame([Evidence(spectrum=spectrum)])
    with pytest.raises(ValueError, match="holds 65 counts, its cells use 64"):
        evidence_of(Frame(frame.message, frame.counts + np.ones(1).tobytes()))
