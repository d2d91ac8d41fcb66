"""Classifier with physics rules, fusion with passports, and the model registry's trust checks."""

from __future__ import annotations

import json
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from drivers.sim import xrfphysics as X
from drivers.sim.cells import CellFormat, CellTruth
from drivers.spectra import Spectrum
from models.classifier import (
    AMBIGUOUS,
    CAN_OCCLUDED,
    LOW_COUNTS,
    Classifier,
    Rules,
    SpectrumResult,
    train,
)
from models.features import INDEX, N_FEATURES, extract_batch
from models.fusion import MISMATCH, fuse
from models.passport import Passport, parse_passport
from models.registry import (
    DEFAULT_DIR,
    Registry,
    RegistryError,
    load_classifier,
    save_model,
)
from plant.domain import Route
from plant.routing import RoutingRules, decide

PROFILE = X.PROFILES["bench_sdd_2048"]  # a training instrument: 50 kV, reaches 41 keV


def cell(chem: str, fmt: CellFormat, seq: int = 0) -> CellTruth:
    return CellTruth.bare(chem, fmt, seq)


def measure(chem: str, fmt: CellFormat, live: float = 2.0, seed: int = 0) -> Spectrum:
    """A simulated measurement in an ordinary presentation (no casing in the beam spot)."""
    pres = X.Presentation(0.0, 1.0, (), 0.0)
    return X.render_cell(cell(chem, fmt), pres, PROFILE, live, np.random.default_rng(seed))


@pytest.fixture(scope="module")
def model() -> Classifier:
    return Registry(Path("/nonexistent-registry")).active_model().classifier


def test_default_model_is_committed_and_loads(model: Classifier) -> None:
    meta = json.loads((DEFAULT_DIR / "default.json").read_text())
    assert meta["feature_version"] and meta["sha256"] and meta["training_data_fingerprint"]
    assert {"scikit-learn", "skops", "numpy"} <= set(meta["libraries"])
    assert "CAN" in model.classes


@pytest.mark.parametrize(
    ("chem", "fmt"),
    [("NMC811", CellFormat.opened), ("LFP", CellFormat.pouch), ("LCO", CellFormat.opened),
     ("LMO", CellFormat.pouch), ("NCA", CellFormat.pouch), ("NiCd", CellFormat.opened)],
)  # fmt: skip
def test_visible_cathodes_are_read(model: Classifier, chem: str, fmt: CellFormat) -> None:
    r = model.predict(measure(chem, fmt))
    assert r.reason in ("ok", "nmc_family")
    assert r.chemistry == chem or (r.chemistry == "NMC" and chem.startswith("NMC"))
    assert r.confidence >= 0.9


@pytest.mark.parametrize("chem", ["NMC811", "LFP", "NCA", "LMO"])
def test_li_ion_in_a_steel_can_is_can_occluded(model: Classifier, chem: str) -> None:
    r = model.predict(measure(chem, CellFormat.steel_can))
    assert r.chemistry == "UNKNOWN"
    assert r.reason == CAN_OCCLUDED
    assert "steel can" in r.detail


def test_nicd_is_recognised_through_the_can_by_its_cd_k_lines(model: Classifier) -> None:
    r = model.predict(measure("NiCd", CellFormat.steel_can, live=30.0))
    assert (r.chemistry, r.reason) == ("NiCd", "ok")


def test_too_few_counts_is_low_counts(model: Classifier) -> None:
    r = model.predict(measure("NMC622", CellFormat.opened, live=0.002))
    assert (r.chemistry, r.reason) == ("UNKNOWN", LOW_COUNTS)
    assert "measure longer" in r.detail


def test_batch_and_single_agree(model: Classifier) -> None:
    spectra = [measure("NMC532", CellFormat.opened, seed=s) for s in range(3)]
    spectra.append(measure("LFP", CellFormat.steel_can))
    batch = model.predict_batch(spectra)
    assert [b.chemistry for b in batch] == [model.predict(s).chemistry for s in spectra]
    assert model.predict_batch([]) == []


def test_reject_option_says_ambiguous_rather_than_guess() -> None:
    class Split:
        classes_ = np.array(["LFP", "NMC811"])

        def predict_proba(self, x: np.ndarray) -> np.ndarray:
            return np.tile([0.5, 0.5], (x.shape[0], 1))

    features = np.zeros((1, N_FEATURES))
    features[0, INDEX["snr_Fe"]] = np.log1p(20.0)  # a real line: the model is asked
    r = Classifier(Split()).predict_features(features, np.array([1e5]))[0]
    assert (r.chemistry, r.reason) == ("UNKNOWN", AMBIGUOUS)


# ----------------------------------------------------------------------------- fusion


def passport(chem_text: str) -> Passport:
    doc = {"format": "plant-passport/1", "passport_id": "P-1", "chemistry": chem_text}
    return parse_passport(json.dumps(doc).encode(), source="test-passport.json")


def spectrum_says(chem: str, conf: float = 0.97, reason: str = "ok") -> SpectrumResult:
    return SpectrumResult(chem, conf, reason, {}, f"{chem} {conf:.2f}")


def test_agreement_raises_confidence_and_reads_well() -> None:
    f = fuse(passport("NCM"), spectrum_says("NMC811", 0.8))
    assert (f.chemistry, f.source, f.reason_code) == ("NMC811", "fused", "agree")
    assert f.confidence > 0.95
    assert f.reason == "NMC811 from spectrum 0.80, passport agrees (NMC)"


def test_conflict_quarantines_with_its_reason(model: Classifier) -> None:
    seen = model.predict(measure("NMC811", CellFormat.opened))
    f = fuse(passport("lithium iron phosphate"), seen)
    d = decide(f, RoutingRules())
    assert d.route is Route.quarantine
    assert d.reason.startswith(f"{MISMATCH}: passport says LFP, spectrum says NMC")
    nca = fuse(passport("NCA"), spectrum_says("NMC811"))
    assert nca.reason_code == MISMATCH  # both hydromet, still a sign of mislabelling


def test_can_occluded_spectrum_lets_the_passport_decide() -> None:
    f = fuse(passport("LFP"), spectrum_says("UNKNOWN", 0.99, CAN_OCCLUDED))
    assert (f.chemistry, f.source) == ("LFP", "passport")
    assert "steel can" in f.reason
    assert decide(f, RoutingRules()).route is Route.black_mass


def test_either_alone_decides_and_neither_quarantines() -> None:
    assert fuse(None, spectrum_says("LMO")).chemistry == "LMO"
    alone = fuse(passport("NMC"), None, spectrum_error="XRF head 2 timed out")
    assert alone.chemistry == "NMC" and "timed out" in alone.reason
    none = fuse(None, None, passport_error="bad JSON")
    assert none.chemistry == "UNKNOWN" and decide(none, RoutingRules()).route is Route.quarantine
    undecided = fuse(passport("NMC and LFP"), spectrum_says("NMC622"))
    assert undecided.chemistry == "NMC622" and "no single chemistry" in undecided.reason


# ----------------------------------------------------------------------------- registry


@pytest.fixture(scope="module")
def tiny_estimator() -> object:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, N_FEATURES))
    y = np.repeat(["LFP", "NMC811", "CAN"], 30)
    x[y == "LFP", 0] += 4
    x[y == "NMC811", 1] += 4
    return train(x, list(y))


def _save(estimator: object, d: Path, name: str) -> None:
    save_model(
        estimator,
        d / name / "model.skops",
        d / name / "model.json",
        name=name,
        rules=Rules(),
        data_fingerprint="f" * 64,
        metrics={},
    )


def test_activate_and_rollback(tmp_path: Path, tiny_estimator: object) -> None:
    reg = Registry(tmp_path)
    assert reg.active_name() == "default"
    _save(tiny_estimator, tmp_path, "tiny-1")
    _save(tiny_estimator, tmp_path, "tiny-2")
    assert [m.name for m in reg.list_models()] == ["default", "tiny-1", "tiny-2"]
    reg.activate("tiny-1")
    reg.activate("tiny-2")
    assert reg.active_model().info.name == "tiny-2"
    assert reg.rollback().name == "tiny-1"
    assert reg.rollback().name == "default"
    with pytest.raises(RegistryError, match="nothing to roll back"):
        reg.rollback()
    with pytest.raises(RegistryError, match="no model named 'nope'"):
        reg.activate("nope")


def test_a_pickle_is_refused(tmp_path: Path, tiny_estimator: object) -> None:
    _save(tiny_estimator, tmp_path, "evil")
    path = tmp_path / "evil" / "model.skops"
    path.write_bytes(pickle.dumps(tiny_estimator))
    meta = json.loads((tmp_path / "evil" / "model.json").read_text())
    with pytest.raises(RegistryError, match="pickle, refused"):
        load_classifier(path, meta)
    with pytest.raises(RegistryError, match="pickle"):
        Registry(tmp_path).activate("evil")


def test_a_tampered_skops_file_is_refused(tmp_path: Path, tiny_estimator: object) -> None:
    _save(tiny_estimator, tmp_path, "m")
    path = tmp_path / "m" / "model.skops"
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("extra.npy", b"not ours")
    with pytest.raises(RegistryError, match="sha256 differs"):
        load_classifier(path, meta)


def test_a_skops_file_with_foreign_types_is_refused(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    path = tmp_path / "foreign.skops"
    sio.dump(FunctionTransformer(func=shutil.rmtree), path)
    meta = {"sha256": __import__("hashlib").sha256(path.read_bytes()).hexdigest()}
    meta["feature_version"] = json.loads((DEFAULT_DIR / "default.json").read_text())[
        "feature_version"
    ]
    with pytest.raises(RegistryError, match="does not trust"):
        load_classifier(path, meta)
    not_zip = tmp_path / "plain.skops"
    not_zip.write_text("hello")
    with pytest.raises(RegistryError, match="not a skops model file"):
        load_classifier(not_zip, meta)


def test_direct_calibration_equals_scikit_learn(model: Classifier) -> None:
    spectra = [measure(c, CellFormat.opened, seed=i) for i, c in enumerate(("NMC622", "LFP"))]
    x = extract_batch(spectra)
    np.testing.assert_allclose(model.predict_proba(x), model.estimator.predict_proba(x))


def test_small_and_large_batches_give_sklearn_probabilities(model: Classifier) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(100, N_FEATURES))
    for rows in (1, 64, 65, 100):  # the array path and scikit-learn's own tree walk
        np.testing.assert_allclose(
            model.predict_proba(x[:rows]), model.estimator.predict_proba(x[:rows]), atol=1e-12
        )


def _with_k_lines(s: Spectrum, lines: tuple[tuple[float, float], ...], area: float) -> Spectrum:
    """The spectrum with extra detector-wide peaks (keV, relative area), `area` counts in all."""
    e = s.energies()
    sigma = 0.11
    extra = sum(
        w * area * np.exp(-0.5 * ((e - c) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
        for c, w in lines
    )
    s.counts = s.counts + np.random.default_rng(2).poisson(extra * s.kev_per_channel)
    return s


LA_K = ((33.44, 1.0), (33.03, 0.55), (37.8, 0.3))
CD_K = ((23.17, 1.0), (22.98, 0.53), (26.1, 0.3))


def test_nicd_with_la_k_lines_too_stays_nicd(model: Classifier) -> None:
    # A NiCd cell's Cd Kβ piles up with Ni Kα at La Kα: with both kinds of lines the model,
    # not the first line rule, decides (both chemistries are rejected).
    r = model.predict(_with_k_lines(measure("NiCd", CellFormat.opened, 3.0, 1), LA_K, 1000))
    assert (r.chemistry, r.reason) == ("NiCd", "ok")
    assert "Cd K and La/Ce K lines seen" in r.detail


def test_cd_and_la_k_lines_in_a_cathode_spectrum_are_ambiguous(model: Classifier) -> None:
    s = _with_k_lines(measure("NMC622", CellFormat.opened, 3.0, 1), LA_K + CD_K, 1000)
    r = model.predict(s)
    assert (r.chemistry, r.reason) == ("UNKNOWN", AMBIGUOUS)
