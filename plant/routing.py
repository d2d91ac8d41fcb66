"""Routing rules: fused chemistry + cell flags -> route, with a reason an operator can read.

Rules come from config/routing.toml (loaded strictly, see `load_rules`). `decide` is pure.
Order: a passport on another cell -> quarantine; a passport that is not `verified` or
`unsigned` (forged, revoked, unknown issuer, expired) -> quarantine, and an unsigned one that
would decide alone unless the policy allows it; the passport's mass far from the load cell's
(`passport_mass_mismatch`) -> quarantine; damaged/swollen -> quarantine; no chemistry ->
quarantine (with why); confidence below the route's threshold -> quarantine; passport state
of health at or above the reuse threshold -> quarantine for second-life inspection; the
route's downstream buffer full -> quarantine (`buffer_full`); otherwise the route the
chemistry maps to. Quarantine reasons start with a reason code (`passport_spectrum_mismatch:
...`) so they can be counted and filtered.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pydantic import Field, field_validator

from models.fusion import FusedResult
from plant.config import Strict, load_file
from plant.domain import Chemistry, Decision, DecisionSource, Route

ROUTING_FILE = "routing.toml"

# docs/architecture.md, "Chemistry classes and routes": the defaults of config/routing.toml.
DEFAULT_ROUTES: dict[Chemistry, Route] = {
    **{
        c: Route.hydromet
        for c in (
            Chemistry.NMC,
            Chemistry.NMC111,
            Chemistry.NMC532,
            Chemistry.NMC622,
            Chemistry.NMC811,
            Chemistry.NCA,
            Chemistry.LCO,
        )
    },
    Chemistry.LFP: Route.black_mass,
    Chemistry.LMO: Route.black_mass,
    Chemistry.NiMH: Route.reject,
    Chemistry.NiCd: Route.reject,
    Chemistry.ZnMn: Route.reject,
    Chemistry.UNKNOWN: Route.quarantine,
}


class Thresholds(Strict):
    """Minimum confidence per route (0..1; 1 closes the route) and the second-life threshold."""

    hydromet_min_confidence: float = Field(0.90, ge=0.0, le=1.0)
    black_mass_min_confidence: float = Field(0.90, ge=0.0, le=1.0)
    reject_min_confidence: float = Field(0.80, ge=0.0, le=1.0)
    reuse_soh_pct: float = Field(80.0, ge=0.0, le=100.0)
    passport_mass_tolerance_pct: float = Field(15.0, gt=0.0, le=100.0)

    def for_route(self, route: Route) -> float:
        """Confidence a cell needs to go to `route` (quarantine needs none)."""
        return {
            Route.hydromet: self.hydromet_min_confidence,
            Route.black_mass: self.black_mass_min_confidence,
            Route.reject: self.reject_min_confidence,
        }.get(route, 0.0)


class Overrides(Strict):
    """Switchable overrides of the chemistry mapping."""

    damaged_to_quarantine: bool = True
    reuse_inspection: bool = True


class AuthenticityPolicy(Strict):
    """What a passport's authenticity (models.credentials.Verdict) lets it do."""

    # An unsigned passport may confirm a spectrum that agrees; alone (a steel can) it decides
    # nothing unless this is true. Anything but `verified` or `unsigned`: quarantine.
    unsigned_decides_alone: bool = True


class RoutingRules(Strict):
    """config/routing.toml."""

    routes: dict[Chemistry, Route] = Field(default_factory=lambda: dict(DEFAULT_ROUTES))
    thresholds: Thresholds = Thresholds()
    overrides: Overrides = Overrides()
    authenticity: AuthenticityPolicy = AuthenticityPolicy()

    @field_validator("routes")
    @classmethod
    def _every_chemistry(cls, routes: dict[Chemistry, Route]) -> dict[Chemistry, Route]:
        missing = [c.value for c in Chemistry if c not in routes]
        if missing:
            raise ValueError(f"every chemistry needs a route; missing: {', '.join(missing)}")
        return routes


def load_rules(config_dir: Path) -> RoutingRules:
    """Load <config_dir>/routing.toml; missing file, unknown key or bad value -> ConfigError."""
    return load_file(config_dir / ROUTING_FILE, RoutingRules)


def decide(
    fused: FusedResult,
    rules: RoutingRules,
    *,
    damaged: bool = False,
    soh_pct: float | None = None,
    buffers_full: frozenset[str] = frozenset(),
    duplicate_of: str | None = None,
    model_version: str | None = None,
    passport_mass_g: float | None = None,
    cell_mass_g: float | None = None,
    authenticity: tuple[str, str] | None = None,
) -> Decision:
    """Route one cell from its fused chemistry and the flags the line knows.

    `passport_mass_g`: the mass of the passport the decision rests on (None when none does);
    `cell_mass_g`: what the load cell weighed (None or 0: no reading); `authenticity`: the
    passport's (verdict, reason) when the cell has a passport.
    """
    chem = Chemistry(fused.chemistry)
    conf = float(fused.confidence)
    source = DecisionSource(fused.source)
    words, code = fused.reason, fused.reason_code

    def made(route: Route, reason: str) -> Decision:
        return Decision(chem, round(conf, 4), source, route, reason, model_version)

    def quarantine(reason_code: str, reason: str) -> Decision:
        return made(Route.quarantine, f"{reason_code}: {reason}")

    if duplicate_of is not None:  # a copied label or passport: neither can be trusted
        return quarantine("duplicate_passport", duplicate_of)
    if authenticity is not None:
        verdict, why = authenticity
        if verdict not in ("verified", "unsigned"):  # forged, revoked, unknown: look at it
            return quarantine(f"passport_{verdict}", f"{why} ({words})")
        if (
            verdict == "unsigned"
            and source is DecisionSource.passport
            and chem is not Chemistry.UNKNOWN
            and not rules.authenticity.unsigned_decides_alone
        ):
            return quarantine(
                "passport_unsigned",
                "an unsigned passport may not decide a cell alone "
                f"([authenticity] unsigned_decides_alone) ({words})",
            )
    tolerance = rules.thresholds.passport_mass_tolerance_pct
    if (
        passport_mass_g is not None
        and cell_mass_g
        and abs(cell_mass_g - passport_mass_g) > passport_mass_g * tolerance / 100.0
    ):
        return quarantine(
            "passport_mass_mismatch",
            f"passport says {passport_mass_g:,.10g} g, the load cell weighed {cell_mass_g:,.10g} g "
            f"(tolerance {tolerance:g} %): wrong passport on this cell? ({words})",
        )
    if damaged and rules.overrides.damaged_to_quarantine:
        return quarantine("damaged", f"damaged or swollen cell, handle by hand ({words})")
    route = rules.routes[chem]
    if chem is Chemistry.UNKNOWN or route is Route.quarantine:
        return quarantine(code, words)
    need = rules.thresholds.for_route(route)
    if need >= 1.0:  # no evidence is certain: a threshold of 1 closes the route
        return quarantine(
            "low_confidence",
            f"{chem.value}: the {route.value} threshold {need:.2f} admits no cell ({words})",
        )
    if conf < need:
        return quarantine(
            "low_confidence",
            f"{chem.value} confidence {conf:.2f} below the {route.value} threshold {need:.2f} "
            f"({words})",
        )
    reuse = rules.thresholds.reuse_soh_pct
    if rules.overrides.reuse_inspection and soh_pct is not None and soh_pct >= reuse:
        return quarantine(
            "second_life",
            f"passport state of health {soh_pct:.0f} % >= {reuse:.0f} %: "
            f"inspect for reuse ({words})",
        )
    if route.value in buffers_full:
        return quarantine("buffer_full", f"{route.value} buffer is full ({words})")
    return made(route, words)


def as_duplicate(decision: Decision, why: str) -> Decision:
    """The decision once the cell's passport turns out to be on another cell already: a copied
    label or passport, so neither can be trusted; quarantine, saying where it was seen."""
    return replace(decision, route=Route.quarantine, reason=f"duplicate_passport: {why}")
