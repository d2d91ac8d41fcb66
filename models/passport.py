"""Battery passports: read the public data models and our own, validate, normalise chemistry.

Accepted models (examples in tests/data/, sources and quirks in the READMEs there):
Catena-X BatteryPass 6.x, 4.0.0 and 3.0.x, BatteryPass consortium 1.0 and 1.2 aspects (camelCase
keys), IDTA batterypass aspects and IDTA 02035 submodels (PascalCase keys) as value-only JSON or as
a full AAS JSON environment, and `plant-passport/1`, a small format of our own for suppliers who
send less (docs/passport.md). Every value the plant uses
is recorded in `Passport.fields_used` under the JSON path it came from, so an operator can see
why a cell was sorted the way it was.
"""

from __future__ import annotations

import codecs
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Iterator
from datetime import date
from enum import StrEnum
from fractions import Fraction
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.chemistry import Chemistry

PLANT_FORMAT = "plant-passport/1"
AAS_ID_KEY = "globalAssetId"  # where `aas_values` puts an AAS shell's asset id

# Ni:Mn:Co mole fractions of the NMC grades (docs/reference/xrf-and-process.md §2.1);
# a stated ratio further than NMC_RATIO_TOLERANCE from all of them is reported as family `NMC`.
NMC_RATIOS: dict[str, tuple[float, float, float]] = {
    "NMC111": (1 / 3, 1 / 3, 1 / 3),
    "NMC532": (0.5, 0.3, 0.2),
    "NMC622": (0.6, 0.2, 0.2),
    "NMC811": (0.8, 0.1, 0.1),
}
NMC_RATIO_TOLERANCE = 0.05
NMC_FAMILY_ONLY = "family only, no Ni:Mn:Co ratio given"

# Grams per unit; keys are lower-case, with and without the SAMM `unit:` prefix.
MASS_UNITS_G: dict[str, float] = {
    "g": 1.0,
    "gram": 1.0,
    "grams": 1.0,
    "kg": 1000.0,
    "kilogram": 1000.0,
    "kilograms": 1000.0,
    "mg": 0.001,
    "milligram": 0.001,
    "t": 1e6,
    "tonne": 1e6,
    "tonnemetricton": 1e6,
    "tonusorshorttonukorus": 907_184.74,
    "lb": 453.592_37,
    "pound": 453.592_37,
    "oz": 28.349_523_125,
    "ounceavoirdupois": 28.349_523_125,
}
CAPACITY_UNITS_AH: dict[str, float] = {
    "ah": 1.0,
    "amperehour": 1.0,
    "mah": 0.001,
    "milliamperehour": 0.001,
}
ENERGY_UNITS_KWH: dict[str, float] = {
    "wh": 0.001,
    "watthour": 0.001,
    "kwh": 1.0,
    "kilowatthour": 1.0,
    "mwh": 1000.0,
    "megawatthour": 1000.0,
}

UNIT_HINTS: dict[str, str] = {
    "mass": "expected g, kg, mg, t, lb, oz or unit:gram, unit:kilogram ...",
    "capacity": "expected Ah, mAh, Wh, kWh or MWh",
}

# Plausible mass (g) per cylindrical cell format named in a passport's id or product name, and
# for anything else (a 0.5 g button cell up to a 3 t truck pack): outside -> `implausible`.
FORMAT_MASS_G: dict[str, tuple[float, float]] = {
    "14500": (15.0, 35.0),
    "18650": (30.0, 70.0),
    "21700": (55.0, 90.0),
    "26650": (70.0, 120.0),
    "32700": (120.0, 230.0),
    "4680": (250.0, 450.0),
}
ANY_MASS_G = (0.5, 3_000_000.0)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}", re.IGNORECASE)
_FORMAT = re.compile(r"(?<!\d)(" + "|".join(FORMAT_MASS_G) + r")(?!\d)")
# Catena-X metadata.status values a passport may route on; draft, expired, invalid may not.
ROUTABLE_STATUS = frozenset({"approved", "released", "active"})

_DAMAGE = re.compile(
    r"damag|defect|swoll|swell|bulg|leak|deform|dent|punctur|crush|crash|accident|"
    r"thermal (?:event|runaway)|fire|burn|short[- ]circuit|overheat",
    re.IGNORECASE,
)


class PassportModel(StrEnum):
    """Which data model a passport file follows."""

    catenax_6 = "catenax-batterypass-6"
    catenax_4 = "catenax-batterypass-4"
    catenax_3 = "catenax-batterypass-3"
    batterypass_1_2 = "batterypass-1.2"
    batterypass_1_0 = "batterypass-1.0"
    idta = "idta-batterypass"
    idta_aas = "idta-02035-aas"
    plant = "plant-passport-1"


class PassportError(ValueError):
    """A passport file cannot be used; the message names the file, the field and the fault."""


class Passport(BaseModel):
    """What the plant takes from one passport file, whatever model it follows."""

    model_config = ConfigDict(frozen=True)

    source: str
    passport_id: str | None  # None only for BatteryPass/IDTA aspects, which carry no id
    model: PassportModel
    manufacturer: str | None = None
    product: str | None = None
    chemistry: Chemistry
    chemistry_reason: str
    chemistry_text: str  # what the file said, "" when it said nothing
    mass_g: float | None = None
    soh_pct: float | None = None
    capacity_ah: float | None = None
    energy_kwh: float | None = None
    damaged: bool = False
    status: str | None = None  # Catena-X metadata.status: draft, approved, ...
    expires_on: date | None = None
    implausible: str | None = None  # why a stated value cannot be right (then no evidence)
    # models.credentials.Verdict of the signed credential carrying it, and why (plant/trust.py)
    authenticity: str = "unsigned"
    authenticity_reason: str = ""
    fields_used: dict[str, str] = Field(default_factory=dict)


# -- chemistry normalisation -------------------------------------------------------------------

_SUBSCRIPTS = str.maketrans("₀₁₂₃₄₅₆₇₈₉", "0123456789")
_FORMULA = re.compile(
    r"(?<![A-Za-z])Li(?:\d*\.?\d+)?(?:[A-Z][a-z]?(?:\d*\.?\d+(?:/\d+)?|[xyz])?)+(?![a-z])"
)
_ELEMENT = re.compile(r"([A-Z][a-z]?)(\d*\.?\d+(?:/\d+)?|[xyz])?")
_NUM = r"(\d+(?:\.\d+)?)"
_ACRONYM_NMC = re.compile(
    r"(?<![A-Za-z0-9])(NCMA|NMCA|NMC|NCM)"
    r"(?:[\s\-_/(]*(\d)(\d)(\d)(?!\d)"
    rf"|[\s\-_/(]*{_NUM}\s*[:/.\-]\s*{_NUM}\s*[:/.\-]\s*{_NUM})?"
    r"(?![A-Za-z])",
    re.IGNORECASE,
)
_SEP = r"(?:[\s,/\-]+(?:and\s+)?)"


def _permutations(words: tuple[str, str, str]) -> str:
    a, b, c = words
    orders = ((a, b, c), (a, c, b), (b, a, c), (b, c, a), (c, a, b), (c, b, a))
    return "|".join(_SEP.join(o) for o in orders)


_ALU = "alumin(?:i)?um"
# (pattern, class), searched case-insensitively on the text as written.
_NAMED: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.IGNORECASE), cls)
    for p, cls in (
        (r"(?<![A-Za-z])LM?FP(?![A-Za-z])", "LFP"),
        (r"(?:iron|ferro)[\s\-]*phosphate", "LFP"),
        (r"(?<![A-Za-z])NCA(?![A-Za-z])", "NCA"),
        (_permutations(("nickel", "cobalt", _ALU)), "NCA"),
        (_permutations(("nickel", "manganese", "cobalt")), "NMC"),
        (r"(?<![A-Za-z])LMO(?![A-Za-z])", "LMO"),
        (r"lithium[\s\-]+manganese[\s\-]+oxide|manganese[\s\-]+spinel|lithium manganate", "LMO"),
        (r"(?<![A-Za-z])LCO(?![A-Za-z])", "LCO"),
        (r"lithium[\s\-]+cobalt(?:ate|[\s\-]+(?:di)?oxide)", "LCO"),
        (r"(?<![A-Za-z])Ni[\s\-/]?MH(?![A-Za-z])", "NiMH"),
        (r"nickel[\s\-]+metal[\s\-]+hydride", "NiMH"),
        (r"(?<![A-Za-z])Ni[\s\-/]?(?:Cd|Cad)(?![A-Za-z])", "NiCd"),
        (r"nickel[\s\-]+cadmium", "NiCd"),
        (
            r"alkaline|zinc[\s\-]+(?:manganese|carbon)|(?<![A-Za-z])Zn[\s\-/]?MnO?2?(?![a-z])",
            "ZnMn",
        ),
    )
)


def _family(cls: str) -> str:
    return "NMC" if cls.startswith("NMC") else cls


def _nearest_nmc(ni: float, mn: float, co: float) -> tuple[str, str]:
    """Nearest NMC grade to a Ni:Mn:Co ratio, or the family when none is close enough."""
    total = ni + mn + co
    if not math.isfinite(total):
        return "NMC", "Ni:Mn:Co amounts too large to be a ratio"
    if total <= 0:
        return "NMC", "Ni:Mn:Co ratio is zero"
    frac = (ni / total, mn / total, co / total)
    shown = ":".join(f"{f:.2f}" for f in frac)
    grade, dist = min(
        ((g, max(abs(a - b) for a, b in zip(frac, r, strict=True))) for g, r in NMC_RATIOS.items()),
        key=lambda item: item[1],
    )
    if dist <= NMC_RATIO_TOLERANCE:
        return grade, f"Ni:Mn:Co {shown}"
    return "NMC", f"Ni:Mn:Co {shown} is none of 111/532/622/811"


def composition_class(amounts: dict[str, float | None]) -> tuple[str, str] | None:
    """Chemistry class of a cathode given as element -> moles (None: amount not stated)."""
    present = {el for el, n in amounts.items() if n is None or n > 0}
    metals = present & {"Ni", "Mn", "Co", "Fe"}
    if {"Fe", "P"} <= present:
        return "LFP", "iron phosphate"
    if {"Ni", "Mn", "Co"} <= present:
        ni, mn, co = (amounts[el] for el in ("Ni", "Mn", "Co"))
        if ni is None or mn is None or co is None:
            return "NMC", "Ni, Mn and Co without a ratio"
        return _nearest_nmc(ni, mn, co)
    if {"Ni", "Co", "Al"} <= present:
        return "NCA", "Ni, Co and Al"
    if metals == {"Mn"}:
        return "LMO", "manganese oxide"
    if metals == {"Co"}:
        return "LCO", "cobalt oxide"
    return None


def _amount(text: str | None) -> float | None:
    if text is None or text in ("x", "y", "z"):
        return None
    num, _, den = text.partition("/")
    if den and not float(den):
        return None
    try:
        return float(Fraction(num) / Fraction(den or "1"))
    except (OverflowError, ValueError):  # more digits than a float (or int parser) holds
        return math.inf


def _formula_mentions(text: str) -> Iterator[tuple[str, str]]:
    for m in _FORMULA.finditer(re.sub(r"[()\[\]]", "", text)):
        pairs = _ELEMENT.findall(re.sub(r"^Li(?:\d*\.?\d+)?", "", m.group(0)))
        stated = any(n for el, n in pairs if el != "O")  # "LiNiMnCoO2": no ratio
        amounts: dict[str, float | None] = {}
        for el, n in pairs:
            value = _amount(n or "1") if stated else None
            prev = amounts.get(el, 0.0)
            amounts[el] = None if value is None or prev is None else prev + value
        found = composition_class(amounts)
        if found:
            yield found


def _acronym_mentions(text: str) -> Iterator[tuple[str, str]]:
    for m in _ACRONYM_NMC.finditer(text):
        word = m.group(1).upper()
        digits = m.group(2, 3, 4) if m.group(2) else m.group(5, 6, 7)
        if word in ("NCMA", "NMCA") or digits[0] is None:
            yield "NMC", NMC_FAMILY_ONLY
            continue
        a, b, c = (float(d) for d in digits)
        ni, mn, co = (a, b, c) if word == "NMC" else (a, c, b)  # NCM order is Ni:Co:Mn
        grade, why = _nearest_nmc(ni, mn, co)
        yield grade, why


def _mentions(text: str) -> list[tuple[str, str]]:
    """Every chemistry a piece of free text names, with a detail for the reason ("" if none)."""
    text = unicodedata.normalize("NFKC", text.translate(_SUBSCRIPTS))
    found = list(_formula_mentions(text)) + list(_acronym_mentions(text))
    for pattern, cls in _NAMED:
        if pattern.search(text):
            found.append((cls, NMC_FAMILY_ONLY if cls == "NMC" else ""))
    return found


def _quote(label: str, text: str) -> str:
    short = text if len(text) <= 80 else text[:77] + "..."
    return f"{label} '{short}'" if label else f"'{short}'"


def _resolve(labelled: list[tuple[str, str]], extra: list[tuple[str, str]]) -> tuple[str, str]:
    """One class from everything a passport says, or UNKNOWN with the reason; never a guess.

    `labelled` is (field, free text); `extra` is (class, full reason) from structured data.
    """
    mentions: list[tuple[str, str]] = list(extra)
    for label, text in labelled:
        for cls, detail in _mentions(text):
            why = f"{_quote(label, text)} = {cls}" + (f" ({detail})" if detail else "")
            mentions.append((cls, why))
    stated = [(label, t.strip()) for label, t in labelled if t and t.strip()]
    if not mentions:
        if not stated:
            return "UNKNOWN", "passport states no chemistry"
        quoted = ", ".join(_quote(label, t) for label, t in stated)
        return "UNKNOWN", f"passport states no recognisable chemistry: {quoted}"
    families = list(dict.fromkeys(_family(c) for c, _ in mentions))
    where = "; ".join(dict.fromkeys(w.split(" = ")[0] for _, w in mentions))
    if len(families) > 1:
        return "UNKNOWN", f"passport names several chemistries: {', '.join(families)} ({where})"
    grades = list(dict.fromkeys(c for c, _ in mentions if c != "NMC"))
    if families == ["NMC"] and len(grades) > 1:
        return "UNKNOWN", f"passport names several NMC grades: {', '.join(grades)} ({where})"
    cls = grades[0] if grades else families[0]
    return cls, next(w for c, w in mentions if c == cls)


def chemistry_from_text(texts: list[str]) -> tuple[str, str]:
    """(chemistry class, reason) from the free text a passport gives about its cathode."""
    return _resolve([("", t) for t in texts], [])


# -- reading JSON ------------------------------------------------------------------------------


def decode_text(raw: bytes, *, source: str) -> str:
    """Bytes -> text: UTF-8 (with or without BOM), UTF-16/32 with BOM, UTF-16 without BOM."""
    boms = (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    )
    codec = next((name for bom, name in boms if raw.startswith(bom)), "utf-8")
    if codec == "utf-8" and len(raw) >= 2 and (raw[0] == 0) != (raw[1] == 0):
        codec = "utf-16-le" if raw[1] == 0 else "utf-16-be"  # UTF-16 without a BOM
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise PassportError(
            f"{source}: not {codec.upper()} text (byte {exc.start}: {exc.reason})"
        ) from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def load_document(raw: bytes, *, source: str) -> dict[str, Any]:
    """Decode and parse a passport file into its JSON object; errors name line and column."""
    text = decode_text(raw, source=source)
    if not text.strip():
        raise PassportError(f"{source}: empty file, not a passport")
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise PassportError(
            f"{source}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except ValueError as exc:
        raise PassportError(f"{source}: malformed JSON: {exc}") from None
    except RecursionError:
        raise PassportError(f"{source}: malformed JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise PassportError(
            f"{source}: not a battery passport: the file holds a JSON {type(doc).__name__}, "
            "not an object"
        )
    return doc


_EITHER = ("left", "right")


class _Reader:
    """Walks one document by JSON path, tolerant of key case, strict about values."""

    def __init__(self, doc: dict[str, Any], source: str) -> None:
        self.doc = doc
        self.source = source
        self.used: dict[str, str] = {}

    def fail(self, path: str, what: str) -> PassportError:
        return PassportError(f"{self.source}: {path}: {what}")

    @staticmethod
    def key(obj: dict[str, Any], name: str) -> str | None:
        """The key as the file spells it: models carry case typos (`cellinternalResistance`)."""
        if name in obj:
            return name
        lower = name.lower()
        return next((k for k in obj if k.lower() == lower), None)

    def node(self, path: str) -> tuple[Any, str]:
        """Value at a dotted path (None when absent) and the path as spelled in the file.

        A SAMM Either (`{"left": value}` or `{"right": value}`, Catena-X 4.0.0) stands for its
        value: the path `metadata.passportIdentifier` reads `metadata.passportIdentifier.left`.
        """
        obj: Any = self.doc
        spelled: list[str] = []
        for part in path.split("."):
            if not isinstance(obj, dict):
                return None, ".".join([*spelled, part])
            k = self.key(obj, part)
            if k is None:
                return None, ".".join([*spelled, part])
            spelled.append(k)
            obj = obj[k]
            while isinstance(obj, dict) and len(obj) == 1 and next(iter(obj)) in _EITHER:
                side = next(iter(obj))
                spelled.append(side)
                obj = obj[side]
        return obj, ".".join(spelled)

    def items(self, path: str, leaf: str) -> Iterator[tuple[Any, str]]:
        """`leaf` of every object in the list at `path` (one level of nesting)."""
        seq, spelled = self.node(path)
        if not isinstance(seq, list):
            return
        for i, item in enumerate(seq):
            if isinstance(item, dict):
                k = self.key(item, leaf)
                if k is not None:
                    yield item[k], f"{spelled}[{i}].{k}"

    def text(self, path: str) -> tuple[str | None, str]:
        value, spelled = self.node(path)
        return self.text_value(value, spelled), spelled

    def text_value(self, value: Any, spelled: str) -> str | None:
        if value is None:
            return None
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            text = str(value).strip()
            if text:
                self.used[spelled] = text
            return text or None
        raise self.fail(spelled, f"expected text, found {type(value).__name__}")

    def number(self, path: str) -> tuple[float | None, str]:
        value, spelled = self.node(path)
        return self.number_value(value, spelled), spelled

    def number_value(self, value: Any, spelled: str) -> float | None:
        """A number, also when written as a string ("120"); null -> None."""
        if value is None:
            return None
        if isinstance(value, bool):
            raise self.fail(spelled, f"expected a number, found {json.dumps(value)}")
        if isinstance(value, str):
            s = value.strip()
            if not s:
                return None
            try:
                num = float(s.replace(",", ".") if s.count(",") == 1 and "." not in s else s)
            except ValueError:
                raise self.fail(spelled, f"'{value}' is not a number") from None
        elif isinstance(value, int | float):
            try:
                num = float(value)
            except OverflowError:
                raise self.fail(spelled, "number too large (beyond 1.8e308)") from None
        else:
            raise self.fail(spelled, f"expected a number, found {type(value).__name__}")
        if not math.isfinite(num):
            raise self.fail(spelled, f"{value} is not a finite number")
        self.used[spelled] = str(value)
        return num

    def unit_number(
        self, path: str, units: dict[str, float], kind: str
    ) -> tuple[float | None, str]:
        """`{value, unit}` (Catena-X 6.x) -> value in the table's base unit."""
        obj, spelled = self.node(path)
        if obj is None:
            return None, spelled
        if not isinstance(obj, dict):
            raise self.fail(spelled, f"expected {{value, unit}}, found {json.dumps(obj)}")
        vk, uk = self.key(obj, "value"), self.key(obj, "unit")
        value = self.number_value(obj[vk], f"{spelled}.{vk}") if vk else None
        if value is None:
            return None, spelled
        if uk is None or not isinstance(obj[uk], str) or not obj[uk].strip():
            raise self.fail(f"{spelled}.unit", f"missing: the {kind} {value} has no unit")
        return value * self.factor(obj[uk], units, kind, f"{spelled}.{uk}"), spelled

    def factor(self, unit: str, units: dict[str, float], kind: str, spelled: str) -> float:
        """Conversion factor of a unit; a unit of the wrong kind (mass in Ah) is an error."""
        name = unit.strip()
        key = name.lower().removeprefix("unit:")
        if key not in units:
            raise self.fail(spelled, f"'{name}' is not a {kind} unit ({UNIT_HINTS[kind]})")
        self.used[spelled] = name
        return units[key]


def _check_finite(r: _Reader, value: float | None, path: str, what: str) -> None:
    """A value that overflows when converted to the plant's unit is refused, not kept as inf."""
    if value is not None and not math.isfinite(value):
        raise r.fail(path, f"{what} is too large a number")


def _check_mass(r: _Reader, grams: float | None, path: str) -> float | None:
    _check_finite(r, grams, path, "mass")
    if grams is not None and grams <= 0:
        raise r.fail(path, f"mass {grams:g} g is impossible (must be above zero)")
    return grams


def _check_soh(r: _Reader, soh: float | None, path: str) -> float | None:
    if soh is not None and not 0 <= soh <= 100:
        raise r.fail(path, f"state of health {soh:g} % is outside 0..100 %")
    return soh


def _check_positive(r: _Reader, value: float | None, path: str, what: str) -> float | None:
    _check_finite(r, value, path, what)
    if value is not None and value < 0:
        raise r.fail(path, f"{what} {value:g} is negative")
    return value


def _damage(r: _Reader, found: Iterable[tuple[str | None, str]]) -> bool:
    """True when any status or event text reports damage; the field is kept in fields_used."""
    damaged = False
    for text, spelled in found:
        if text and _DAMAGE.search(text):
            r.used[spelled] = text
            damaged = True
    return damaged


def _chemistry_fields(
    r: _Reader, single: list[str], listed: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """(path, text) of every chemistry-bearing field: named fields, then material names."""
    out: list[tuple[str, str]] = []
    for path in single:
        text, spelled = r.text(path)
        if text:
            out.append((spelled, text))
    for path, leaf in listed:
        for value, spelled in r.items(path, leaf):
            text = r.text_value(value, spelled)
            if text:
                out.append((spelled, text))
    return out


def _finish(
    r: _Reader,
    model: PassportModel,
    *,
    passport_id: str | None,
    texts: list[tuple[str, str]],
    extra: list[tuple[str, str]] | None = None,
    **values: Any,
) -> Passport:
    chemistry, reason = _resolve(texts, extra or [])
    # A UUID's hex digits may spell "4680" by chance: only other ids can name a cell format.
    named_id = None if passport_id is None or _UUID.search(passport_id) else passport_id
    values.setdefault(
        "implausible", mass_implausible(values.get("mass_g"), values.get("product"), named_id)
    )
    return Passport(
        source=r.source,
        passport_id=passport_id,
        model=model,
        chemistry=chemistry,  # type: ignore[arg-type]  # _resolve returns a class name
        chemistry_reason=reason,
        chemistry_text=" | ".join(t for _, t in texts),
        fields_used=dict(r.used),
        **values,
    )


def mass_implausible(mass_g: float | None, *names: str | None) -> str | None:
    """Why a stated mass cannot be the battery's (range per cell format named), or None."""
    if mass_g is None:
        return None
    fmt = next((m.group(1) for n in names if n and (m := _FORMAT.search(n))), None)
    low, high = FORMAT_MASS_G[fmt] if fmt else ANY_MASS_G
    if low <= mass_g <= high:
        return None
    what = f"an {fmt} cell" if fmt and fmt[0] == "1" else f"a {fmt} cell" if fmt else "a battery"
    return f"mass {mass_g:,.10g} g is implausible for {what} ({low:g}..{high:,.10g} g): wrong unit?"


def routing_problem(passport: Passport, today: date) -> str | None:
    """Why this passport may not be routing evidence (the spectrum must decide), or None."""
    if passport.status is not None and passport.status not in ROUTABLE_STATUS:
        return f"passport {passport.passport_id} has status {passport.status}, not approved"
    if passport.expires_on is not None and passport.expires_on < today:
        return f"passport {passport.passport_id} expired on {passport.expires_on.isoformat()}"
    if passport.implausible:
        return f"passport {passport.passport_id}: {passport.implausible}"
    return None


def _required_id(r: _Reader, path: str) -> str:
    pid, spelled = r.text(path)
    if not pid:
        raise r.fail(spelled, "missing: the passport id is required")
    return pid


def _lifecycle(r: _Reader, status_path: str, expiry_path: str) -> dict[str, Any]:
    """`status` and `expires_on` of a passport (Catena-X `metadata.status`/`expirationDate`)."""
    status, _ = r.text(status_path)
    expiry, epath = r.text(expiry_path)
    expires_on = None
    if expiry is not None:
        try:
            expires_on = date.fromisoformat(expiry[:10])
        except ValueError:
            raise r.fail(epath, f"'{expiry}' is not a date (expected YYYY-MM-DD)") from None
    return {"status": status.lower() if status else None, "expires_on": expires_on}


def _catenax_6(r: _Reader, model: PassportModel = PassportModel.catenax_6) -> Passport:
    """Catena-X battery_pass 6.x, and 4.0.0 (the same paths with Either wrappers, except two)."""
    v4 = model is PassportModel.catenax_4
    pid = _required_id(r, "metadata.passportIdentifier")
    manufacturer, _ = r.text("operation.manufacturer.manufacturer")
    product, _ = r.text(
        "identification.typeId" if v4 else "identification.identification.type.nameAtManufacturer"
    )
    texts = _chemistry_fields(r, ["identification.chemistry"], []) + _catenax_6_material_names(r)
    mass, mpath = r.unit_number(
        "physicalDimension.weight" if v4 else "characteristics.physicalDimension.weight",
        MASS_UNITS_G,
        "mass",
    )
    # State of health as remaining capacity share: 100 % minus the capacity fade (Catena-X 6.x
    # has no state-of-health property; capacity fade is "% in reference to the initial value").
    fade, fpath = r.number("performance.dynamic.capacity.fade.value")
    soh = None if fade is None else 100.0 - fade
    capacity, cpath = r.number("performance.rated.capacity.value")  # Ah in the 6.x model
    energy, epath = r.number("performance.rated.energy.value")  # kWh in the 6.x model
    status, spath = r.node("sustainability.status")
    events = [(v, p) for v, p in r.items("performance.dynamic.negativeEvents", "header")]
    return _finish(
        r,
        model,
        passport_id=pid,
        texts=texts,
        manufacturer=manufacturer,
        product=product,
        **_lifecycle(r, "metadata.status", "metadata.expirationDate"),
        mass_g=_check_mass(r, mass, mpath),
        soh_pct=_check_soh(r, soh, fpath),
        capacity_ah=_check_positive(r, capacity, cpath, "capacity (Ah)"),
        energy_kwh=_check_positive(r, energy, epath, "energy (kWh)"),
        damaged=_damage(r, [(status if isinstance(status, str) else None, spath), *events]),
    )


def _catenax_6_material_names(r: _Reader) -> list[tuple[str, str]]:
    """Names in `materials.composition[].id[]` and `materials.active.other[]` (lists of lists)."""
    out: list[tuple[str, str]] = []
    for outer, inner in (("materials.composition", "id"),
                         ("materials.active.other", "materialIdentification")):  # fmt: skip
        for ids, spelled in r.items(outer, inner):
            if not isinstance(ids, list):
                continue
            for j, ident in enumerate(ids):
                if isinstance(ident, dict) and (k := r.key(ident, "name")):
                    text = r.text_value(ident[k], f"{spelled}[{j}].{k}")
                    if text:
                        out.append((f"{spelled}[{j}].{k}", text))
    return out


def _catenax_3(r: _Reader) -> Passport:
    pid = _required_id(r, "batteryIdentification.batteryIDDMCCode")
    manufacturer, _ = r.text("manufacturer.name")
    product, _ = r.text("batteryIdentification.batteryModel")
    texts = _chemistry_fields(
        r,
        ["batteryIdentification.batteryType"],
        [("cellChemistry.cathodeActiveMaterials", "materialName")],
    )
    weight, wpath = r.number("physicalDimensions.weight")  # kg: 3.0.1 KilogramCharacteristic
    soh, spath = r.number("stateOfBattery.stateOfHealth")  # %: StateOfHealthCharacteristic
    capacity, cpath = r.number("electrochemicalProperties.ratedCapacity")  # Ah
    energy_wh, epath = r.number(
        "electrochemicalProperties.batteryEnergy.maximumAllowedBatteryEnergy"
    )  # Wh in the 3.0.1 model
    return _finish(
        r,
        PassportModel.catenax_3,
        passport_id=pid,
        texts=texts,
        manufacturer=manufacturer,
        product=product,
        mass_g=_check_mass(r, None if weight is None else weight * 1000.0, wpath),
        soh_pct=_check_soh(r, soh, spath),
        capacity_ah=_check_positive(r, capacity, cpath, "capacity (Ah)"),
        energy_kwh=_check_positive(
            r, None if energy_wh is None else energy_wh / 1000.0, epath, "energy (Wh)"
        ),
        damaged=_damage(r, [r.text("stateOfBattery.statusBattery")]),
    )


_GPI_KEYS = (
    "productIdentifier",
    "batteryCategory",
    "manufacturerInformation",
    "batteryMass",
    "batteryWeight",
)
# Where each model keeps the passport id, in the order tried: BatteryPass 1.2 (and IDTA),
# BatteryPass 1.0, the joined IDTA 02035 environment (`globalAssetId`, see `aas_values`).
_ID_PATHS = (
    "batteryPassportIdentifier",
    "productPassportIdentifier",
    AAS_ID_KEY,
    "URIOfTheProduct",  # IDTA 02035-1 battery nameplate, value-only
)
# Battery mass in kg: 1.2 `batteryMass`, 1.0 `batteryWeight`, IDTA 02035-4 TechnicalData.
_MASS_KG_PATHS = ("batteryMass", "batteryWeight", "generalInformation.batteryMass")


def _first(r: _Reader, paths: Iterable[str], read: str) -> tuple[Any, str]:
    """The first of `paths` the document has, read as text or number; (None, first path)."""
    first = ""
    for path in paths:
        value, spelled = r.text(path) if read == "text" else r.number(path)
        first = first or spelled
        if value is not None:
            return value, spelled
    return None, first


def _batterypass(r: _Reader, model: PassportModel) -> Passport:
    """BatteryPass 1.0/1.2 aspects and their IDTA PascalCase twins (keys matched ignoring case)."""
    pid, ipath = _first(r, _ID_PATHS, "text")
    if pid is None and any(r.key(r.doc, k) for k in _GPI_KEYS):
        raise r.fail(ipath, "missing: the passport id is required")
    manufacturer, _ = _first(
        r, ("manufacturerInformation.identifier", "manufacturerIdentification"), "text"
    )
    texts = _chemistry_fields(
        r,
        [
            f"{group}.{name}"
            for group in ("batteryChemistry", "productChemistry")
            for name in ("shortName", "clearName")
        ],
        [("batteryMaterials", "batteryMaterialName")],
    )
    # kg: "Mass of the entire battery in kilograms" (1.2), `batteryWeight` in kg (1.0)
    mass_kg, mpath = _first(r, _MASS_KG_PATHS, "number")
    status = r.text("batteryStatus")
    events = list(r.items("batteryCondition.negativeEvents", "negativeEvent"))
    return _finish(
        r,
        model,
        passport_id=pid,
        texts=texts,
        manufacturer=manufacturer,
        mass_g=_check_mass(r, None if mass_kg is None else mass_kg * 1000.0, mpath),
        damaged=_damage(r, [status, *((v if isinstance(v, str) else None, p) for v, p in events)]),
    )


class _Quantity(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: float | None
    unit: str


class PlantPassport(BaseModel):
    """`plant-passport/1`: what a supplier who sends little must and may say (docs/passport.md)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["plant-passport/1"]
    passport_id: str = Field(min_length=1)
    manufacturer: str | None = None
    model: str | None = None
    chemistry: str | None = None
    cathode: dict[str, float | None] | str | None = None  # {"Ni": 0.8, ...} or a formula
    mass: _Quantity | None = None
    state_of_health_pct: float | None = None
    capacity: _Quantity | None = None
    damaged: bool = False


def _plant(r: _Reader) -> Passport:
    try:
        p = PlantPassport.model_validate(r.doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise r.fail(path, first["msg"]) from None
    for name in ("passport_id", "manufacturer", "model", "chemistry"):
        if getattr(p, name):
            r.used[name] = str(getattr(p, name))
    texts = [("chemistry", p.chemistry)] if p.chemistry else []
    extra: list[tuple[str, str]] = []
    if isinstance(p.cathode, str):
        texts.append(("cathode", p.cathode))
        r.used["cathode"] = p.cathode
    elif p.cathode:
        r.used["cathode"] = json.dumps(p.cathode)
        found = composition_class(p.cathode)
        shown = ", ".join(f"{k} {v}" for k, v in p.cathode.items())
        if found is None:
            texts.append(("cathode", shown))
        else:
            extra.append((found[0], f"cathode {shown} = {found[0]} ({found[1]})"))
    mass = None
    if p.mass and p.mass.value is not None:
        r.used["mass.value"] = f"{p.mass.value:g}"
        mass = p.mass.value * r.factor(p.mass.unit, MASS_UNITS_G, "mass", "mass.unit")
    capacity_ah = energy_kwh = None
    if p.capacity and p.capacity.value is not None:
        r.used["capacity.value"] = f"{p.capacity.value:g}"
        unit = p.capacity.unit
        if unit.strip().lower().removeprefix("unit:") in ENERGY_UNITS_KWH:
            energy_kwh = p.capacity.value * r.factor(
                unit, ENERGY_UNITS_KWH, "capacity", "capacity.unit"
            )
        else:
            capacity_ah = p.capacity.value * r.factor(
                unit, CAPACITY_UNITS_AH, "capacity", "capacity.unit"
            )
    if p.state_of_health_pct is not None:
        r.used["state_of_health_pct"] = f"{p.state_of_health_pct:g}"
    if p.damaged:
        r.used["damaged"] = "true"
    return _finish(
        r,
        PassportModel.plant,
        passport_id=p.passport_id.strip(),
        texts=texts,
        extra=extra,
        manufacturer=p.manufacturer,
        product=p.model,
        mass_g=_check_mass(r, mass, "mass.value"),
        soh_pct=_check_soh(r, p.state_of_health_pct, "state_of_health_pct"),
        capacity_ah=_check_positive(r, capacity_ah, "capacity.value", "capacity"),
        energy_kwh=_check_positive(r, energy_kwh, "capacity.value", "energy"),
        damaged=p.damaged,
    )


# -- IDTA 02035 as an AAS JSON environment -----------------------------------------------------

_AAS_BATTERY = re.compile(r"batterypass|digitalbatterypassport", re.IGNORECASE)


def _aas_value(element: dict[str, Any]) -> Any:
    """Value-only form (IDTA-01001 Part 2) of one submodel element."""
    kind, value = element.get("modelType"), element.get("value")
    if kind == "SubmodelElementCollection":
        return _aas_elements(value)
    if kind == "SubmodelElementList":
        return [_aas_value(e) for e in value or [] if isinstance(e, dict)]
    if kind == "MultiLanguageProperty":
        texts = {t.get("language"): t.get("text") for t in value or [] if isinstance(t, dict)}
        return texts.get("en", next(iter(texts.values()), None))
    if kind == "Range":
        return {"min": element.get("min"), "max": element.get("max")}
    return value if isinstance(value, str | int | float) else None


def _aas_elements(elements: Any) -> dict[str, Any]:
    return {
        e["idShort"]: _aas_value(e)
        for e in elements or []
        if isinstance(e, dict) and isinstance(e.get("idShort"), str)
    }


def aas_values(env: dict[str, Any], *, source: str) -> dict[str, Any]:
    """An AAS JSON environment's battery-passport submodels as one value-only document.

    The submodels' elements are joined by idShort; the shell's `assetInformation.globalAssetId`
    (the asset the passport describes) becomes the passport id under `AAS_ID_KEY`.
    """
    submodels = [s for s in env.get("submodels") or [] if isinstance(s, dict)]
    battery = [
        s
        for s in submodels
        if _AAS_BATTERY.search(json.dumps(s.get("semanticId")) + str(s.get("id")))
    ]
    if not battery:
        names = ", ".join(str(s.get("idShort")) for s in submodels) or "none"
        raise PassportError(
            f"{source}: not a battery passport: an AAS environment without an IDTA 02035 "
            f"battery passport submodel (submodels: {names})"
        )
    doc: dict[str, Any] = {}
    for sm in battery:
        doc.update(_aas_elements(sm.get("submodelElements")))
    for shell in env.get("assetAdministrationShells") or []:
        asset = shell.get("assetInformation") if isinstance(shell, dict) else None
        if isinstance(asset, dict) and isinstance(asset.get("globalAssetId"), str):
            doc[AAS_ID_KEY] = asset["globalAssetId"]
            break
    return doc


_CATENAX_3_KEYS = (
    "batteryIdentification",
    "cellChemistry",
    "stateOfBattery",
    "electrochemicalProperties",
    "physicalDimensions",
)
_BATTERYPASS_KEYS = (
    "batteryPassportIdentifier",
    "batteryChemistry",
    "batteryMaterials",
    "hazardousSubstances",
    "batteryCondition",
    "batteryTechicalProperties",  # sic: the 1.2.1 performance model spells it so
    "batteryTechnicalProperties",
    "productChemistry",  # 1.0
    "productPassportIdentifier",  # 1.0
    "uniqueFacilityIdentifier",  # IDTA 02035-1 battery nameplate
    *_GPI_KEYS,
)
_CATENAX_SPEC = re.compile(r"urn:(?:samm:)?io\.catenax\.([\w.]+):(\d[\w.\-]*)")


def detect_model(doc: dict[str, Any], *, source: str) -> PassportModel:
    """Which data model a passport document follows; PassportError when it is none of them."""
    fmt = doc.get("format")
    if isinstance(fmt, str) and fmt.startswith("plant-passport"):
        return PassportModel.plant
    if isinstance(doc.get("submodels"), list):
        return PassportModel.idta_aas
    metadata = doc.get("metadata")
    spec = doc.get("specVersion") or (metadata or {}).get("specVersion")
    m = _CATENAX_SPEC.match(spec) if isinstance(spec, str) else None
    if m and m.group(1) != "battery.battery_pass":
        raise PassportError(
            f"{source}: not a battery passport: specVersion {spec} is a Catena-X "
            f"{m.group(1)} document, not io.catenax.battery.battery_pass"
        )
    if m:
        version = m.group(2)
        for prefix, model in (("6.", PassportModel.catenax_6), ("4.", PassportModel.catenax_4),
                              ("3.0.", PassportModel.catenax_3)):  # fmt: skip
            if version.startswith(prefix):
                return model
        raise PassportError(
            f"{source}: specVersion: Catena-X battery_pass {version} is not supported "
            "(accepted: 6.x, 4.0.0 and 3.0.x)"
        )
    if isinstance(metadata, dict) and isinstance(doc.get("identification"), dict):
        ident = doc["identification"]
        if _Reader.key(ident, "chemistry") is None:
            raise PassportError(
                f"{source}: not a battery passport: a Catena-X passport without "
                "identification.chemistry or a battery_pass specVersion (a generic product "
                "passport?)"
            )
        # 4.0.0 keeps physicalDimension at the top; 6.x under characteristics.
        return PassportModel.catenax_4 if "physicalDimension" in doc else PassportModel.catenax_6
    if sum(_Reader.key(doc, k) is not None for k in _CATENAX_3_KEYS) >= 2:
        return PassportModel.catenax_3
    hits = [k for k in (_Reader.key(doc, name) for name in _BATTERYPASS_KEYS) if k]
    if hits:
        if hits[0][0].isupper():
            return PassportModel.idta
        v1_0 = {"productChemistry", "productPassportIdentifier", "batteryWeight"}
        return PassportModel.batterypass_1_0 if v1_0 & set(hits) else PassportModel.batterypass_1_2
    keys = ", ".join(list(doc)[:8]) or "none"
    raise PassportError(
        f"{source}: not a battery passport: no keys of Catena-X BatteryPass 6.x/3.0.x, "
        f"BatteryPass 1.2, IDTA batterypass or {PLANT_FORMAT} (top-level keys: {keys})"
    )


def passport_from_document(doc: dict[str, Any], *, source: str) -> Passport:
    """Validate an already-parsed passport document of any accepted model."""
    model = detect_model(doc, source=source)
    if model is PassportModel.idta_aas:
        doc = aas_values(doc, source=source)
    r = _Reader(doc, source)
    if model in (PassportModel.catenax_6, PassportModel.catenax_4):
        return _catenax_6(r, model)
    if model is PassportModel.catenax_3:
        return _catenax_3(r)
    if model is PassportModel.plant:
        return _plant(r)
    return _batterypass(r, model)


def parse_passport(raw: bytes, *, source: str) -> Passport:
    """Parse and validate one passport file's bytes; PassportError names source and field."""
    return passport_from_document(load_document(raw, source=source), source=source)
