"""Routing rules from config/routing.toml: mapping, thresholds, overrides, strict loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.fusion import FusedResult
from plant.config import ConfigError
from plant.domain import Chemistry, DecisionSource, Route
from plant.routing import DEFAULT_ROUTES, RoutingRules, decide, load_rules

CONFIG = Path(__file__).resolve().parents[1] / "config"


def fused(chem: str, conf: float = 0.99, source: str = "spectrum") -> FusedResult:
    return FusedResult(chem, conf, source, "spectrum_only", f"{chem} from spectrum {conf:.2f}")


@pytest.fixture
def rules() -> RoutingRules:
    return load_rules(CONFIG)


def test_shipped_file_is_the_design_table(rules: RoutingRules) -> None:
    assert rules.routes == DEFAULT_ROUTES
    assert rules.routes[Chemistry.NMC] is Route.hydromet
    assert rules.routes[Chemistry.LFP] is Route.black_mass
    assert rules.routes[Chemistry.NiCd] is Route.reject


@pytest.mark.parametrize(
    ("chem", "route"),
    [("NMC811", "hydromet"), ("NCA", "hydromet"), ("LFP", "black_mass"), ("LMO", "black_mass"),
     ("NiCd", "reject"), ("NiMH", "reject"), ("ZnMn", "reject"), ("UNKNOWN", "quarantine")],
)  # fmt: skip
def test_confident_cells_go_where_their_chemistry_belongs(
    rules: RoutingRules, chem: str, route: str
) -> None:
    d = decide(fused(chem), rules, model_version="m@1")
    assert d.route.value == route
    assert d.model_version == "m@1"
    assert d.source is DecisionSource.spectrum


def test_below_the_route_threshold_goes_to_quarantine_with_the_numbers(
    rules: RoutingRules,
) -> None:
    d = decide(fused("LFP", 0.85), rules)
    assert d.route is Route.quarantine
    assert d.reason.startswith("low_confidence:")
    assert "0.85" in d.reason and "0.90" in d.reason and "black_mass" in d.reason
    assert decide(fused("NiCd", 0.85), rules).route is Route.reject  # reject needs only 0.80


def test_overrides_damaged_reuse_and_full_buffer(rules: RoutingRules) -> None:
    assert decide(fused("NMC622"), rules, damaged=True).reason.startswith("damaged:")
    reuse = decide(fused("NMC622"), rules, soh_pct=92.0)
    assert reuse.route is Route.quarantine and reuse.reason.startswith("second_life:")
    assert decide(fused("NMC622"), rules, soh_pct=50.0).route is Route.hydromet
    full = decide(fused("LFP"), rules, buffers_full=frozenset({"black_mass"}))
    assert full.route is Route.quarantine and full.reason.startswith("buffer_full:")
    assert decide(fused("NMC622"), rules, buffers_full=frozenset({"black_mass"})).route is (
        Route.hydromet
    )
    no_reuse = rules.model_copy(
        update={"overrides": rules.overrides.model_copy(update={"reuse_inspection": False})}
    )
    assert decide(fused("NMC622"), no_reuse, soh_pct=99.0).route is Route.hydromet


def test_unknown_keeps_the_reason_code() -> None:
    f = FusedResult("UNKNOWN", 0.0, "fused", "passport_spectrum_mismatch", "passport says LFP")
    d = decide(f, RoutingRules())
    assert d.route is Route.quarantine
    assert d.reason == "passport_spectrum_mismatch: passport says LFP"


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "routing.toml").write_text(text)
    return tmp_path


def test_a_degraded_mapping_is_possible(tmp_path: Path) -> None:
    text = (CONFIG / "routing.toml").read_text().replace('LFP = "black_mass"', 'LFP = "hydromet"')
    rules = load_rules(_write(tmp_path, text))
    assert decide(fused("LFP"), rules).route is Route.hydromet


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('NCA = "hydromet"', 'NCA = "hydromet"\nNMC999 = "hydromet"'), "routes.NMC999"),
        (('NCA = "hydromet"\n', ""), "missing: NCA"),
        (('LFP = "black_mass"', 'LFP = "landfill"'), "routes.LFP"),
        (("hydromet_min_confidence = 0.90", "hydromet_min_confidence = 1.5"), "hydromet_min"),
        (("reuse_inspection = true", "reuse_inspection = true\nfoo = 1"), "overrides.foo"),
        (("[thresholds]", "[thresholds\n"), "not valid TOML"),
    ],
)
def test_config_errors_name_the_file_and_key(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    text = (CONFIG / "routing.toml").read_text()
    assert edit[0] in text
    d = _write(tmp_path, text.replace(edit[0], edit[1], 1))
    with pytest.raises(ConfigError) as exc:
        load_rules(d)
    assert message in str(exc.value)
    assert "routing.toml" in str(exc.value)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_rules(tmp_path)


def test_a_threshold_of_one_closes_its_route_even_to_a_certain_cell(rules: RoutingRules) -> None:
    """An engineer who sets 1.0 means "nothing goes there": a confidence of exactly 1.0 from a
    calibrated model does not pass it."""
    closed = rules.model_copy(
        update={"thresholds": rules.thresholds.model_copy(update={"hydromet_min_confidence": 1.0})}
    )
    d = decide(fused("NMC811", 1.0), closed)
    assert d.route == Route.quarantine and "admits no cell" in d.reason
    assert decide(fused("NMC811", 1.0), rules).route == Route.hydromet
