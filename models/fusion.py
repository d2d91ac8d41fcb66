"""Passport + spectrum -> one chemistry, with a confidence and a reason an operator can read.

Rules (docs/architecture.md, "One cell, end to end", step 4; docs/classifier.md):
- both name a chemistry and agree -> that chemistry (the more specific of the two: a passport's
  family `NMC` agrees with any NMC grade from the spectrum, and takes that grade), confidence
  raised as for two independent witnesses: 1 - (1 - c_spectrum)(1 - c_passport);
- they disagree -> `UNKNOWN`, reason code `passport_spectrum_mismatch`. NMC vs NCA counts as a
  disagreement too: both go to hydromet, but a passport that names the wrong cathode is a sign
  of mislabelling or counterfeit, and someone should look at the cell;
- the spectrum sees only a steel can (`can_occluded`), or has no confident answer -> the
  passport decides;
- one of them missing or unreadable -> the other decides; neither -> `UNKNOWN`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from models.classifier import (
    CAN_OCCLUDED,
    LOW_COUNTS,
    NMC_GRADES,
    OUT_OF_DOMAIN,
    UNKNOWN,
    SpectrumResult,
)

# How far a passport's stated chemistry is trusted on its own: mislabelled or counterfeit
# passports are a real risk (docs/architecture.md), so less than certain, but above the route
# thresholds.
PASSPORT_CONFIDENCE = 0.95

# Reason codes of a FusedResult.
AGREE = "agree"
PASSPORT_ONLY = "passport_only"
SPECTRUM_ONLY = "spectrum_only"
MISMATCH = "passport_spectrum_mismatch"
NO_EVIDENCE = "no_evidence"
PASSPORT_UNDECIDED = "passport_no_chemistry"


class PassportLike(Protocol):
    """What fusion reads of a models.passport.Passport."""

    @property
    def chemistry(self) -> str: ...
    @property
    def chemistry_reason(self) -> str: ...


@dataclass(frozen=True)
class FusedResult:
    """The fused chemistry; `source` is a plant.domain.DecisionSource value."""

    chemistry: str
    confidence: float
    source: str  # "passport" | "spectrum" | "fused" | "none"
    reason_code: str
    reason: str


def _agree(passport: str, spectrum: str) -> str | None:
    """The chemistry both support (the more specific one), or None if they conflict."""
    if passport == spectrum:
        return passport
    if passport == "NMC" and spectrum in NMC_GRADES:
        return spectrum
    if spectrum == "NMC" and passport in NMC_GRADES:
        return passport
    return None


def _spectrum_words(s: SpectrumResult) -> str:
    if s.reason == CAN_OCCLUDED:
        return "spectrum sees only the steel can"
    if s.reason == LOW_COUNTS:
        return "spectrum has too few counts"
    if s.reason == OUT_OF_DOMAIN:
        return f"spectrum is no battery cell's: {s.detail}"
    return f"spectrum unsure ({s.detail})" if s.detail else "spectrum unsure"


def fuse(
    passport: PassportLike | None,
    spectrum: SpectrumResult | None,
    *,
    passport_error: str | None = None,
    spectrum_error: str | None = None,
    passport_confidence: float = PASSPORT_CONFIDENCE,
) -> FusedResult:
    """Combine what the passport states with what the spectrum shows (either may be absent)."""
    notes = []
    if passport_error:
        notes.append(f"passport unusable: {passport_error}")
    if spectrum_error:
        notes.append(f"no spectrum: {spectrum_error}")
    p_chem = passport.chemistry if passport is not None else None
    if p_chem == UNKNOWN and passport is not None:
        notes.append(f"passport states no single chemistry ({passport.chemistry_reason})")
        p_chem = None
    s_chem = spectrum.chemistry if spectrum is not None and spectrum.chemistry != UNKNOWN else None
    suffix = "; " + "; ".join(notes) if notes else ""

    if p_chem is not None and s_chem is not None:
        assert spectrum is not None
        both = _agree(p_chem, s_chem)
        if both is None:
            return FusedResult(
                UNKNOWN,
                0.0,
                "fused",
                MISMATCH,
                f"passport says {p_chem}, spectrum says {s_chem} {spectrum.confidence:.2f}: "
                "possible mislabelled or counterfeit passport",
            )
        conf = 1.0 - (1.0 - spectrum.confidence) * (1.0 - passport_confidence)
        return FusedResult(
            both,
            conf,
            "fused",
            AGREE,
            f"{s_chem} from spectrum {spectrum.confidence:.2f}, passport agrees ({p_chem})",
        )
    if p_chem is not None:
        seen = f"; {_spectrum_words(spectrum)}" if spectrum is not None else ""
        return FusedResult(
            p_chem,
            passport_confidence,
            "passport",
            PASSPORT_ONLY,
            f"{p_chem} from passport{seen}{suffix}",
        )
    if s_chem is not None:
        assert spectrum is not None
        return FusedResult(
            s_chem,
            spectrum.confidence,
            "spectrum",
            SPECTRUM_ONLY,
            f"{s_chem} from spectrum {spectrum.confidence:.2f}{suffix or '; no passport'}",
        )
    if spectrum is not None:
        return FusedResult(
            UNKNOWN,
            spectrum.confidence,
            "spectrum",
            spectrum.reason,
            f"{_spectrum_words(spectrum)}{suffix or '; no passport'}",
        )
    if passport is not None:  # it states none or several chemistries, and nothing else says
        return FusedResult(
            UNKNOWN, 0.0, "passport", PASSPORT_UNDECIDED, "; ".join([*notes, "no spectrum"])
        )
    return FusedResult(UNKNOWN, 0.0, "none", NO_EVIDENCE, "neither passport nor spectrum" + suffix)
