"""Chemistry from an XRF spectrum: calibrated scikit-learn pipeline, physics rules, reject option.

Order of decisions for one spectrum (docs/architecture.md, "What the XRF can and cannot see"):
1. Too few counts to read anything -> `UNKNOWN`, reason `low_counts`.
2. The calibrated model gives probabilities over the chemistry classes plus `CAN`, the class of
   spectra that show only an intact Ni-plated steel can. Its features are physics: fitted line
   areas as ratios (models/features.py), never channel patterns.
3. Can rule: if the model's answer is `CAN`, or a Li-ion class while the transition-metal signal
   is the can's signature (Fe and Ni only: no Co, no Mn, no P), the answer is `UNKNOWN`, reason
   `can_occluded` — never LFP from the can's iron, never NMC from its nickel plating. NiCd and
   NiMH are named through the can only when their Cd or La/Ce K lines are significant
   (`heavy_min_snr`); at `heavy_id_snr` those lines name NiCd/NiMH even where the model saw
   only a can (it has few such examples), and a confident other class with them is `ambiguous`.
4. NMC grades: when the best grade is below `grade_confident` the answer is the family `NMC`
   with the probability of all grades together (it routes the same way; docs/architecture.md
   allows it).
5. Reject option: a best class below `reject_below` -> `UNKNOWN`, reason `ambiguous` (a 70/30
   mixture of two chemistries, a cell half under the casing ...).
Before 2-5, a spectrum no battery cell gives is `UNKNOWN`, reason `out_of_domain`, naming why:
strong lines no chemistry explains (Ca, Ti, Cr, Sr, Zr, W, Pt, Au, Pb ... as a major signal), a
fit far worse than any cell's, no tube scatter (electron-excited EDS), or a tube below
`min_tube_kv`. A model trained on cells has never seen such spectra: its answer means nothing.
Per-route confidence thresholds are applied later, by plant/routing.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt
import sklearn
from threadpoolctl import ThreadpoolController

from drivers.spectra import Spectrum
from models.chemistry import CLASSES, LI_ION, NMC_GRADES
from models.features import (
    FEATURE_VERSION,
    INDEX,
    LIGHT,
    TM,
    LineFit,
    extract_with_fit,
    foreign_shares,
)

# The eleven specific classes of docs/architecture.md (the family `NMC` and `UNKNOWN` are answers,
# not labels).
CAN = "CAN"  # training label: a spectrum that shows only an intact steel can
MODEL_CLASSES: tuple[str, ...] = (*CLASSES, CAN)
UNKNOWN = "UNKNOWN"

# Reason codes of a SpectrumResult.
OK = "ok"
NMC_FAMILY = "nmc_family"
CAN_OCCLUDED = "can_occluded"
LOW_COUNTS = "low_counts"
AMBIGUOUS = "ambiguous"
NO_LINES = "no_lines"
OUT_OF_DOMAIN = "out_of_domain"
# A whole spectrum beyond 1e15 counts (years at 1 Mcps) is not a measurement.
MAX_PLAUSIBLE_COUNTS = 1e15

# Every element line the features measure; a cell spectrum shows at least one of them.
_LINE_SNR = [INDEX[f"snr_{el}"] for el in (*TM, *LIGHT, "Cd", "La", "Ce", "REE")]


@dataclass(frozen=True)
class Rules:
    """Physics thresholds and the reject level; stored with each model's metadata."""

    reject_below: float = 0.6
    # Below this, an NMC grade is reported as the family `NMC` with the family's probability.
    grade_confident: float = 0.9
    # Below this many counts in the whole spectrum (0.05-0.2 s dwells) the answer is
    # `low_counts`: on the simulator's validation split, cells of 1,000-2,000 counts were
    # accepted 21 of 23 times and 3 of those wrong (2 misrouted); from 2,000 up, 0 of 1,872.
    min_total_counts: float = 2_000.0
    # Can signature: Co+Mn+Cu+Zn share of the transition-metal signal below this, Fe+Ni above,
    # and Ni (the plating) a real part of Fe+Ni: a Fe-only spectrum is LFP's, not a can's.
    can_max_other_share: float = 0.03
    can_min_fe_ni_share: float = 0.85
    can_ni_of_fe_ni: tuple[float, float] = (0.2, 0.8)
    # Through a can, NiCd/NiMH need their Cd / La+Ce K lines at this significance at least,
    # and at `heavy_id_snr` the lines name the chemistry even when the model hesitates.
    heavy_min_snr: float = 3.0
    heavy_id_snr: float = 5.0
    # Significance (fitted area / sigma) under which P counts as absent.
    can_max_p_snr: float = 3.0
    # The strongest element line must reach this significance: a spectrum with none (flat, a
    # lone spike, a calibration outside the XRF range) is no cell measurement, whatever the
    # model would make of it.
    min_line_snr: float = 3.0
    # Out of domain: a foreign line (models.features.FOREIGN_LINES) at `ood_min_snr` carrying
    # `ood_min_share` of the metal line signal (simulated cells, traces included: < 0.02); a fit
    # residual (per Poisson expectation; cells: median 1, max ~80) above `ood_max_residual`;
    # a metal-to-scatter ratio (log) above `ood_max_tm_to_scatter` (cells: < 5.3; no tube
    # scatter at all: electron excitation); a stated tube voltage below `min_tube_kv`.
    # NiMH's La/Ce L lines (4.6-5.3 keV) at this share of the metal line signal and this
    # significance in a spectrum read as another chemistry -> ambiguous: below the La K edge
    # (38.9 keV, tubes under ~42 kV) they are all NiMH shows besides Ni/Co/Mn, which NMC also
    # has. Simulated non-NiMH cells stay under 0.035.
    ree_l_min_share: float = 0.05
    ree_l_min_snr: float = 8.0
    # A NiMH answer needs its own lines: La/Ce K at `heavy_min_snr`, or La/Ce L at that
    # significance carrying `nimh_min_l_share` of the metal signal (an NMC811 cell with 40 % of
    # the spot on the Ni-plated casing can look like NiMH's Ni/Co/Mn and nothing else).
    nimh_min_l_share: float = 0.01
    # Co lines carrying this share of the metal line signal at this significance in a
    # spectrum read as LMO (no Co; casing, foils and traces bring none) -> ambiguous: a blend
    # with a Co/Ni cathode, which belongs in hydromet. Simulated pure LMO: share < 0.002,
    # < 1 sigma; a 70/30 NMC111/LMO blend read as LMO 0.96: 0.14. Not for LFP: its strong
    # Fe Kβ (7.06 keV) leaves 3-5 % fitted "Co" (Kα 6.93 keV) in some pure LFP cells.
    blend_co_min_share: float = 0.03
    blend_co_min_snr: float = 5.0
    ood_min_share: float = 0.1
    ood_min_snr: float = 5.0
    ood_max_residual: float = 500.0
    ood_max_tm_to_scatter: float = 7.0
    min_tube_kv: float = 30.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rules:
        """Rules as stored in model metadata; keys this version does not know are ignored."""
        known: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v
            for k, v in data.items()
            if k in cls.__dataclass_fields__
        }
        return cls(**known)

    def as_dict(self) -> dict[str, float | list[float]]:
        """JSON-ready form, for model metadata."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class SpectrumResult:
    """What one spectrum says: chemistry (or UNKNOWN), confidence, reason code and words."""

    chemistry: str
    confidence: float
    reason: str
    probabilities: dict[str, float] = field(default_factory=dict)
    detail: str = ""


def training_label(chemistry: str, cell_format: str) -> str:
    """Label a training spectrum by what it can show: a Li-ion or alkaline cell in an intact
    steel can shows only the can (Zn and the cathode metals do not pass 0.25 mm of steel)."""
    if cell_format == "steel_can" and chemistry not in ("NiCd", "NiMH"):
        return CAN
    return chemistry


def can_signature(features: npt.NDArray[np.float64], rules: Rules) -> npt.NDArray[np.bool_]:
    """Rows whose transition-metal signal is only what a Ni-plated steel can gives."""
    frac = {el: features[:, INDEX[f"frac_{el}"]] for el in TM}
    other = frac["Co"] + frac["Mn"] + frac["Cu"] + frac["Zn"]
    fe_ni = frac["Fe"] + frac["Ni"]
    p_absent = features[:, INDEX["snr_P"]] < np.log1p(rules.can_max_p_snr)
    ni_share = frac["Ni"] / np.maximum(fe_ni, 1e-9)
    lo, hi = rules.can_ni_of_fe_ni
    plated = (ni_share >= lo) & (ni_share <= hi)
    return (
        (other < rules.can_max_other_share)
        & (fe_ni > rules.can_min_fe_ni_share)
        & p_absent
        & plated
    )


def _line_name(name: str) -> str:
    return name.replace("_L", " L") if name.endswith("_L") else f"{name} K"


def out_of_domain(
    features: npt.NDArray[np.float64],
    fit: LineFit,
    tube_kv: Sequence[float | None],
    rules: Rules,
) -> list[str]:
    """Per spectrum: why no battery cell gives it (words naming the lines), or ''."""
    share, snr = foreign_shares(fit)
    strong = {
        el: (share[el] >= rules.ood_min_share) & (snr[el] >= rules.ood_min_snr) for el in share
    }
    residual = fit.residual
    flat = features[:, INDEX["tm_to_scatter"]] > rules.ood_max_tm_to_scatter
    out = [""] * features.shape[0]
    flagged = np.flatnonzero(
        np.logical_or.reduce([*strong.values(), residual > rules.ood_max_residual, flat])
        | np.asarray([kv is not None and kv < rules.min_tube_kv for kv in tube_kv], dtype=bool)
    )
    for i in flagged.tolist():
        words = [
            f"{_line_name(el)} {100 * share[el][i]:.0f} % of the line signal"
            for el in sorted(strong, key=lambda e: -share[e][i])
            if strong[el][i]
        ]
        if words:
            words[0] = "lines no battery chemistry explains: " + words[0]
        if residual[i] > rules.ood_max_residual:
            words.append(f"poor fit (residual {residual[i]:.0f}x the noise)")
        if flat[i]:
            words.append("no tube scatter (not an XRF tube spectrum?)")
        kv = tube_kv[i]
        if kv is not None and kv < rules.min_tube_kv:
            words.append(f"excited at {kv:g} kV (models know tubes of 40-50 kV)")
        out[i] = "; ".join(words)
    return out


def rare_earth_l_lines(fit: LineFit, rules: Rules) -> npt.NDArray[np.bool_]:
    """Per spectrum: La + Ce L lines strong enough that only NiMH explains them."""
    metal = sum(np.maximum(fit.area[el], 0.0) for el in TM)
    ree = np.maximum(fit.area["La_L"], 0.0) + np.maximum(fit.area["Ce_L"], 0.0)
    sigma = np.sqrt(fit.sigma["La_L"] ** 2 + fit.sigma["Ce_L"] ** 2)
    snr = (fit.area["La_L"] + fit.area["Ce_L"]) / np.maximum(sigma, 1e-9)
    share = ree / np.maximum(metal + ree, 1.0)
    return np.asarray((share >= rules.ree_l_min_share) & (snr >= rules.ree_l_min_snr))


def _top(probs: dict[str, float], n: int = 2) -> str:
    best = sorted(probs.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k} {v:.2f}" for k, v in best if v >= 0.01)


@cache
def _threads() -> ThreadpoolController:
    """Native thread pools, found once (after scikit-learn loaded its OpenMP)."""
    return ThreadpoolController()


def one_thread() -> AbstractContextManager[Any]:
    """Run scikit-learn's OpenMP on one thread: on a shared 2-core machine, OpenMP threads
    spinning for a one-row prediction cost 100x the prediction itself."""
    return _threads().limit(limits=1, user_api="openmp")


FOREST_MAX_ROWS = 512


class _Forest:
    """The trees of a fitted HistGradientBoostingClassifier as arrays, evaluated for all trees
    at once: scikit-learn walks them one Python call per tree, which is most of the time one
    cell takes. Numeric splits only (our features); tests check equality with sklearn."""

    def __init__(self, model: Any) -> None:
        trees = [tree for iteration in model._predictors for tree in iteration]
        n_nodes = max(len(t.nodes) for t in trees)
        shape = (len(trees), n_nodes)
        self.feature = np.zeros(shape, dtype=np.intp)
        self.threshold = np.zeros(shape)
        self.missing_left = np.zeros(shape, dtype=bool)
        # children[tree, node, 0] left, [..., 1] right (flat indices): one gather per level
        self.children = np.zeros((*shape, 2), dtype=np.intp)
        self.value = np.zeros(shape)
        depth = 0
        for i, t in enumerate(trees):
            nodes = t.nodes
            if np.any(nodes["is_categorical"]):
                raise ValueError("categorical splits are not supported")
            m = len(nodes)
            leaf = nodes["is_leaf"].astype(bool)
            here = np.arange(m)
            self.feature[i, :m] = nodes["feature_idx"]
            self.threshold[i, :m] = nodes["num_threshold"]
            self.missing_left[i, :m] = nodes["missing_go_to_left"].astype(bool)
            base = i * n_nodes  # a leaf stays where it is
            self.children[i, :m, 0] = base + np.where(leaf, here, nodes["left"])
            self.children[i, :m, 1] = base + np.where(leaf, here, nodes["right"])
            self.value[i, :m] = np.where(leaf, nodes["value"], 0.0)
            depth = max(depth, int(nodes["depth"].max()))
        self.depth = depth
        per_iteration = len(model._predictors[0])
        self.one_hot = np.eye(per_iteration)[np.arange(len(trees)) % per_iteration]
        self.baseline = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(1, -1)
        self.rows = np.arange(len(trees))

    def decision(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Raw multi-class scores, as HistGradientBoostingClassifier.decision_function."""
        out = np.empty((x.shape[0], self.baseline.shape[1]))
        feature, threshold = self.feature.ravel(), self.threshold.ravel()
        missing_left, children = self.missing_left.ravel(), self.children.ravel()
        base = self.rows * self.feature.shape[1]  # flat index of each tree's root
        n_features = x.shape[1]
        for start in range(0, x.shape[0], 256):
            xs = np.ascontiguousarray(x[start : start + 256])
            xs_flat = xs.ravel()
            has_nan = bool(np.isnan(xs_flat).any())
            row_base = (np.arange(xs.shape[0]) * n_features)[:, None]
            node = np.broadcast_to(base, (xs.shape[0], base.size)).copy()
            for _ in range(self.depth):
                value = xs_flat[row_base + feature[node]]
                go_right = value > threshold[node]  # NaN: False here, decided below
                if has_nan:
                    go_right = np.where(np.isnan(value), ~missing_left[node], go_right)
                node = children[2 * node + go_right]
            leaves = self.value.ravel()[node]
            out[start : start + xs.shape[0]] = leaves @ self.one_hot + self.baseline
        return out


def _decision_function(inner: Any) -> Any:
    """inner.decision_function, with the trees of a scaler + gradient boosting pipeline
    evaluated as arrays (_Forest)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if isinstance(inner, Pipeline) and isinstance(inner[-1], HistGradientBoostingClassifier):
        try:
            forest = _Forest(inner[-1])
        except (AttributeError, KeyError, ValueError, TypeError):
            return inner.decision_function
        head = inner[:-1]
        if len(head) == 1 and isinstance(head[0], StandardScaler):
            mean = np.zeros(1) if head[0].mean_ is None else head[0].mean_
            scale = np.ones(1) if head[0].scale_ is None else head[0].scale_

            def scaled(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
                return (x - mean) / scale
        else:

            def scaled(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
                return np.asarray(head.transform(x), dtype=np.float64)

        # Up to a few hundred rows (the line's micro-batches, the bench's 256): arrays win;
        # many rows: sklearn's per-tree loop is amortised and its compiled tree walk is faster.
        return lambda x: (
            forest.decision(scaled(x))
            if x.shape[0] <= FOREST_MAX_ROWS
            else inner.decision_function(x)
        )
    return inner.decision_function


def _direct_isotonic(
    estimator: Any,
) -> tuple[Any, list[int], list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]] | None:
    """(inner model, output column per calibrator, isotonic thresholds) of a multi-class
    CalibratedClassifierCV(method="isotonic", ensemble=False); None for anything else."""
    fitted = getattr(estimator, "calibrated_classifiers_", None)
    if getattr(estimator, "method", None) != "isotonic" or not fitted or len(fitted) != 1:
        return None
    one = fitted[0]
    classes = [str(c) for c in one.classes]
    inner = one.estimator
    if len(classes) < 3 or not hasattr(inner, "decision_function"):
        return None
    columns = [classes.index(str(c)) for c in inner.classes_]
    thresholds = []
    for cal in one.calibrators:
        if getattr(cal, "out_of_bounds", None) != "clip" or not hasattr(cal, "X_thresholds_"):
            return None
        thresholds.append((np.asarray(cal.X_thresholds_), np.asarray(cal.y_thresholds_)))
    return _decision_function(inner), columns, thresholds


class Classifier:
    """A trained estimator (scikit-learn, predict_proba over MODEL_CLASSES) plus the rules."""

    def __init__(self, estimator: Any, rules: Rules | None = None) -> None:
        classes = tuple(str(c) for c in estimator.classes_)
        unknown = set(classes) - set(MODEL_CLASSES)
        if unknown:
            raise ValueError(f"model predicts classes the plant does not know: {sorted(unknown)}")
        self.estimator = estimator
        self.rules = rules or Rules()
        self.classes = classes
        self.feature_version = FEATURE_VERSION
        self._isotonic = _direct_isotonic(estimator)

    def predict_proba(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Calibrated probabilities over `self.classes` (rows = spectra).

        One cell at a time must stay far below the line's 20 ms decision budget, and
        scikit-learn's per-call checks cost more than the model itself on one row: inputs are
        our own finite features, so its validation is skipped, and a one-model isotonic
        calibration is applied directly (the same interpolation and normalisation sklearn
        does; tests/test_classifier.py checks they agree)."""
        with (
            one_thread(),
            sklearn.config_context(assume_finite=True, skip_parameter_validation=True),
        ):
            if self._isotonic is None:
                return np.asarray(self.estimator.predict_proba(features))
            decision, columns, thresholds = self._isotonic
            raw = decision(features)
        proba = np.zeros((features.shape[0], len(self.classes)))
        for col, this, (x_thr, y_thr) in zip(columns, raw.T, thresholds, strict=True):
            proba[:, col] = np.interp(this, x_thr, y_thr)
        total = proba.sum(axis=1, keepdims=True)
        uniform = np.full_like(proba, 1.0 / len(self.classes))
        proba = np.divide(proba, total, out=uniform, where=total != 0)
        proba[(proba > 1.0) & (proba <= 1.0 + 1e-5)] = 1.0
        return proba

    def predict(self, spectrum: Spectrum) -> SpectrumResult:
        """Classify one spectrum."""
        return self.predict_batch([spectrum])[0]

    def predict_batch(self, spectra: Sequence[Spectrum]) -> list[SpectrumResult]:
        """Classify a batch of spectra (one feature fit and one model call for all)."""
        if not spectra:
            return []
        features, fit = extract_with_fit(spectra)
        totals = np.asarray([s.total_counts() for s in spectra])
        ood = out_of_domain(features, fit, [s.tube_kv for s in spectra], self.rules)
        return self.predict_features(features, totals, ood, rare_earth_l_lines(fit, self.rules))

    def predict_features(
        self,
        features: npt.NDArray[np.float64],
        totals: npt.NDArray[np.float64],
        ood: Sequence[str] | None = None,
        ree_l: npt.NDArray[np.bool_] | None = None,
    ) -> list[SpectrumResult]:
        """Decide from precomputed features (and total counts) of a batch; `ood` gives, per
        spectrum, why it is out of domain ('' when it is not; see out_of_domain), `ree_l`
        where La/Ce L lines are strong (rare_earth_l_lines)."""
        r = self.rules
        proba = self.predict_proba(features)
        can_like = can_signature(features, r)
        snr = {"NiCd": features[:, INDEX["snr_Cd"]], "NiMH": features[:, INDEX["snr_REE"]]}
        seen_at = np.log1p(r.heavy_min_snr)
        ree_lines = (snr["NiMH"] >= seen_at) | (
            (features[:, INDEX["snr_REE_L"]] >= seen_at)
            & (features[:, INDEX["ree_l_share"]] >= np.log(r.nimh_min_l_share))
        )
        named_at = np.log1p(r.heavy_id_snr)
        co_blend = (features[:, INDEX["frac_Co"]] >= r.blend_co_min_share) & (
            features[:, INDEX["snr_Co"]] >= np.log1p(r.blend_co_min_snr)
        )
        no_lines = ~(features[:, _LINE_SNR].max(axis=1) >= np.log1p(r.min_line_snr))  # NaN: none
        # More counts than any detector delivers (a unit or file error) overflow the fit's
        # precision: such a spectrum shows nothing usable.
        no_lines |= ~np.isfinite(features).all(axis=1) | ~(totals <= MAX_PLAUSIBLE_COUNTS)
        out = []
        for i, row in enumerate(proba.tolist()):
            probs = dict(zip(self.classes, row, strict=True))
            seen = {k: bool(v[i] >= seen_at) for k, v in snr.items()}
            named = [k for k, v in snr.items() if v[i] >= named_at]
            if ood and ood[i] and totals[i] >= r.min_total_counts and not no_lines[i]:
                out.append(SpectrumResult(UNKNOWN, 0.0, OUT_OF_DOMAIN, probs, ood[i]))
                continue
            res = self._decide(
                probs, float(totals[i]), bool(can_like[i]), seen, named, bool(no_lines[i])
            )
            if res.chemistry == "NiMH" and not ree_lines[i]:
                res = SpectrumResult(
                    UNKNOWN,
                    res.confidence,
                    AMBIGUOUS,
                    probs,
                    "read as NiMH but no La/Ce K or L lines: NiMH always shows them",
                )
            if res.chemistry == "LMO" and co_blend[i]:
                res = SpectrumResult(
                    UNKNOWN,
                    res.confidence,
                    AMBIGUOUS,
                    probs,
                    f"Co lines in a spectrum read as {res.chemistry}: a blend with a Co/Ni cathode",
                )
            if ree_l is not None and ree_l[i] and res.chemistry not in ("NiMH", UNKNOWN):
                res = SpectrumResult(
                    UNKNOWN,
                    res.confidence,
                    AMBIGUOUS,
                    probs,
                    f"La/Ce L lines (4.6-5.3 keV) in a spectrum read as {res.chemistry}",
                )
            out.append(res)
        return out

    def _decide(
        self,
        probs: dict[str, float],
        total: float,
        can_like: bool,
        heavy: dict[str, bool],
        named: list[str],
        no_lines: bool = False,
    ) -> SpectrumResult:
        r = self.rules
        if total < r.min_total_counts:
            return SpectrumResult(
                UNKNOWN,
                0.0,
                LOW_COUNTS,
                probs,
                f"only {total:.0f} counts (need {r.min_total_counts:.0f}): measure longer",
            )
        if no_lines:
            return SpectrumResult(
                UNKNOWN,
                0.0,
                NO_LINES,
                probs,
                f"no element line in {total:.3g} counts: not a cell spectrum (check the "
                "detector and its energy calibration)",
            )
        best = max(probs, key=lambda c: probs[c])
        p = probs[best]
        if not named and (best == CAN or can_like):
            # Only a can shows, and Cd or La/Ce K lines pass it: at `heavy_min_snr` they name
            # NiCd / NiMH (no Li-ion cell in a can carries them; reference §2.2).
            named = [k for k, v in heavy.items() if v]
        if named:
            # Cd or La/Ce K lines are there: only NiCd / NiMH carry them. Where the model saw
            # that chemistry or only a can (or hesitated), the lines decide and the can's
            # probability goes to them; against another confident class, or with both kinds
            # of lines, nobody should guess.
            line = "Cd K (23.2 keV)" if named == ["NiCd"] else "La/Ce K (33-35 keV)"
            if len(named) == 1 and (best in (named[0], CAN) or p < r.reject_below):
                chem = named[0]
                conf = probs.get(chem, 0.0) + probs.get(CAN, 0.0)
                return SpectrumResult(chem, conf, OK, probs, f"{chem}: {line} lines seen")
            if len(named) == 2 and best in named and p >= r.reject_below:
                # Cd K and La/Ce K lines together: both chemistries go to reject, and a NiCd
                # cell's strong Cd K lines pile up with its Ni K lines at La K (Cd Kβ + Ni Kα
                # = 33.6 keV); the model, which has seen such spectra, tells them apart.
                return SpectrumResult(
                    best, p, OK, probs, f"{best} {p:.2f}: Cd K and La/Ce K lines seen"
                )
            return SpectrumResult(
                UNKNOWN, p, AMBIGUOUS, probs, f"{line} lines in a spectrum read as {best}"
            )
        through_can = best in LI_ION or (best in heavy and not heavy[best])
        if best == CAN or (can_like and through_can):
            p_can = probs.get(CAN, 0.0)
            return SpectrumResult(
                UNKNOWN,
                max(p_can, p) if best == CAN else p_can,
                CAN_OCCLUDED,
                probs,
                "only the steel can is visible (Fe + Ni, no cathode lines): "
                "chemistry cannot be read through it",
            )
        family = sum(probs.get(c, 0.0) for c in NMC_GRADES)
        if best in NMC_GRADES and p < r.grade_confident and family >= r.reject_below:
            return SpectrumResult(
                "NMC",
                family,
                NMC_FAMILY,
                probs,
                f"NMC family {family:.2f}, grade unclear ({_top(probs, 3)})",
            )
        if p >= r.reject_below:
            return SpectrumResult(best, p, OK, probs, f"{best} {p:.2f}")
        return SpectrumResult(UNKNOWN, p, AMBIGUOUS, probs, f"no confident answer ({_top(probs)})")


def build_estimator(seed: int = 0) -> Any:
    """The untrained pipeline: scaler + gradient boosting, probabilities calibrated by CV."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    boosted = HistGradientBoostingClassifier(
        max_iter=30,
        learning_rate=0.3,
        max_leaf_nodes=15,
        l2_regularization=1.0,
        class_weight="balanced",
        random_state=seed,
    )
    pipeline = Pipeline([("scale", StandardScaler()), ("model", boosted)])
    # ensemble=False: calibrate on out-of-fold predictions, keep one model (3x faster to run).
    return CalibratedClassifierCV(pipeline, method="isotonic", cv=3, ensemble=False)


def train(
    features: npt.NDArray[np.float64],
    labels: Sequence[str],
    *,
    seed: int = 0,
    sample_weight: npt.NDArray[np.float64] | None = None,
) -> Any:
    """Fit the calibrated pipeline on features and training labels (see training_label);
    `sample_weight` weighs rows in the boosted trees (site spectra in `plant models calibrate`)."""
    unknown = sorted(set(labels) - set(MODEL_CLASSES))
    if unknown:
        raise ValueError(f"training labels not among the classes: {unknown}")
    estimator = build_estimator(seed)
    weights = {} if sample_weight is None else {"model__sample_weight": sample_weight}
    with one_thread():  # predictable on a shared machine
        estimator.fit(features, np.asarray(labels), **weights)
    return estimator
