"""The chemistry classes, spelled once for the whole plant (docs/architecture.md, "Chemistry
classes and routes"): the classifier, the passports, routing, the store and the simulators all
take their names from here."""

from __future__ import annotations

from enum import StrEnum


class Chemistry(StrEnum):
    """Chemistry classes; members compare and hash equal to their names as plain strings."""

    NMC111 = "NMC111"
    NMC532 = "NMC532"
    NMC622 = "NMC622"
    NMC811 = "NMC811"
    NCA = "NCA"
    LCO = "LCO"
    LMO = "LMO"
    LFP = "LFP"
    NiMH = "NiMH"
    NiCd = "NiCd"
    ZnMn = "ZnMn"
    NMC = "NMC"  # family known, ratio not
    UNKNOWN = "UNKNOWN"


NMC_GRADES = frozenset({Chemistry.NMC111, Chemistry.NMC532, Chemistry.NMC622, Chemistry.NMC811})
LI_ION = frozenset({*NMC_GRADES, Chemistry.NCA, Chemistry.LCO, Chemistry.LMO, Chemistry.LFP})
# The classes a spectrum can be classified as: every chemistry but the family and UNKNOWN.
CLASSES: tuple[str, ...] = tuple(
    c.value for c in Chemistry if c not in (Chemistry.NMC, Chemistry.UNKNOWN)
)
