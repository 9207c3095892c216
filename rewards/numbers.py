"""Exact, cheap reading of the answers most VLM benchmarks have: numbers with decorations.

``"1,234.5 cm"``, ``"\\$5"``, ``"30^\\circ"``, ``"50\\%"``, ``"−3"``, ``"1.5e3"``, ``"1.5 \\times 10^{3}"``,
``"\\dfrac{14}{2}"`` and ``"7/2"`` are read here with regular expressions into exact
:class:`fractions.Fraction` values, so most items never reach sympy. Nothing is evaluated: a string
either matches the number grammar or is handed on (to math-verify, after the bounded checks in
:mod:`rewards.safety`).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction

MAX_EXPONENT = 400  # 1e400 is still exact and cheap; 1e100000 is not a benchmark answer

_UNICODE = str.maketrans({
    "\u2212": "-", "\u2013": "-", "\u00d7": "\\times ", "\u22c5": "\\cdot ", "\u00b7": "\\cdot ",
    "\u00f7": "/", "\u03c0": "\\pi ", "\u221a": "\\sqrt", "\u00b0": "^\\circ", "\u00a0": " ",
    "\u2009": " ", "\u202f": " ", "\u2002": " ", "\u2003": " ", "\u00b2": "^2", "\u00b3": "^3",
    "\uff05": "%", "\uff0c": ",", "\u3001": ",", "\uff1b": ";", "\uff1a": ":", "\uff08": "(", "\uff09": ")", "\uff0e": ".",
    "\u2103": "^\\circ C", "\u2109": "^\\circ F", "\u221e": "\\infty ", "\u2264": "\\le ", "\u2265": "\\ge ", "\u2260": "\\ne ",
    "\u2044": "/", **{chr(0xFF10 + d): str(d) for d in range(10)},
    **{c: "\\frac{%d}{%d}" % Fraction(unicodedata.numeric(c)).limit_denominator(10).as_integer_ratio()
       for c in "\u00bd\u2153\u2154\u00bc\u00be\u2155\u2156\u2157\u2158\u2159\u215a\u2150\u215b\u215c\u215d\u215e\u2151\u2152"},
})  # "1½" is "1\frac{1}{2}", which reads as the mixed number it is
_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}")
_THIN_GROUP_RE = re.compile(r"(?<=\d)\\[,;:!]\s*(?=\d{3}(?!\d))")
# "1 3/4" is 1¾, which math-verify would read as (1 + 3)/4: written as "1\frac{3}{4}", it reads it right
# (a proper fraction only: "1 000/4" is 1000/4)
_MIXED_SLASH_RE = re.compile(r"(?<![\d.,/])(\d+)[ ~](\d+)/(\d+)(?![\d./])")
# "1 000 000" (SI grouping, any space): whole groups of three, not next to another number, so "10 100 1000"
# and "1000 10 100" stay lists; the run is matched whole and left as it is when a number follows it, which
# keeps the work linear
_SPACE_GROUPS_RE = re.compile(r"(?<![\d.])(?<!\d )\d{1,3}(?: \d{3})+(?!\d)")
_SPACING_RE = re.compile(r"\\(?:displaystyle|left|right|quad|qquad)(?![A-Za-z])|\\[!,;: ]")  # 5\,\text{m}: any letter may follow
_DECIMAL = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+"
_SCI_RE = re.compile(
    rf"^([+-]?)({_DECIMAL})(?:[eE]([+-]?\d+)|\s*(?:\\times|\\cdot|\*|x)\s*10\s*\^\s*\{{?\s*([+-]?\d+)\s*\}}?)?$"
)
_FRAC_RE = re.compile(rf"^([+-]?)\\frac\s*\{{\s*([+-]?)({_DECIMAL})\s*\}}\s*\{{\s*({_DECIMAL})\s*\}}$")
_SLASH_RE = re.compile(rf"^([+-]?)({_DECIMAL})\s*/\s*({_DECIMAL})$")
# a mixed number: "2\frac{1}{2}"; "1½" and "1 3/4" are written so by `normalize`
_MIXED_RE = re.compile(r"^([+-]?)(\d+)\s*\\frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}$")

_CURRENCY_PREFIX_RE = re.compile(r"^(?:\\\$|\$|US\$|USD|EUR|GBP|\u20ac|\u00a3|\u00a5|\\euro)\s*")
_CURRENCY_SUFFIX_RE = re.compile(r"\s*(?:dollars?|usd|euros?|eur|yuan|yen|pounds sterling)$", re.I)
# A currency mark anywhere in an answer ("4\sqrt{2} dollars" is money, though no number to read): "pounds" is
# left out, as it is a weight too
CURRENCY_MARK_RE = re.compile(r"[$€£¥]|\b(?:USD|EUR|GBP|dollars?|euros?|yuan|yen)\b", re.I)
_PERCENT_RE = re.compile(r"\s*(?:\\%|%|\s+percent|\s*per\s*cent)$", re.I)
_SCALE_WORD_RE = re.compile(r"\s*(?:\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree|degrees?\s*|deg\s*)?\s*(celsius|fahrenheit)$", re.I)
_DEGREE_RE = re.compile(r"\s*(?:\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree|\s+degrees?|\s*deg)(?:\s*([CF]))?$")

# Units a number may carry; a unit is only dropped when it is one of these (or extra_info["unit"]),
# so "3x" is never read as "3 units of x".
_UNIT_ALIASES = {
    "mm": "mm", "millimeter": "mm", "millimetre": "mm", "cm": "cm", "centimeter": "cm",
    "centimetre": "cm", "dm": "dm", "decimeter": "dm", "decimetre": "dm", "m": "m", "meter": "m", "metre": "m", "km": "km",
    "kilometer": "km", "kilometre": "km", "in": "in", "inch": "in", "inches": "in", "ft": "ft",
    "foot": "ft", "feet": "ft", "yd": "yd", "yard": "yd", "mi": "mi", "mile": "mi", "nm": "nm",
    "mg": "mg", "g": "g", "gram": "g", "kg": "kg", "kilogram": "kg", "lb": "lb", "lbs": "lb",
    "pound": "lb", "oz": "oz", "ounce": "oz", "ton": "t", "tonne": "t",
    "ms": "ms", "s": "s", "sec": "s", "second": "s", "min": "min", "minute": "min", "h": "h",
    "hr": "h", "hour": "h", "day": "day", "week": "week", "month": "month", "year": "year",
    "yr": "year", "ml": "ml", "milliliter": "ml", "millilitre": "ml", "l": "l", "liter": "l",
    "litre": "l", "gal": "gal", "gallon": "gal", "mph": "mph", "kph": "km/h", "px": "px",
    "pixel": "px", "unit": "unit", "cent": "cent", "point": "point", "object": "object",
    "item": "item", "people": "people", "person": "people", "persons": "people", "volt": "v",
    "watt": "w", "joule": "j", "newton": "n", "hz": "hz", "kpa": "kpa", "rad": "rad", "radian": "rad",
    "kelvin": "k", "pascal": "pa",
}
# symbols whose case is their meaning, looked up as written: lower-cased, "Nm" would be nanometres
_CASED_UNITS = {"N": "n", "J": "j", "W": "w", "V": "v", "K": "k", "Pa": "pa", "Nm": "n*m"}
# mega- before a symbol written in its own case ("MW", "MPa", "Mm"): lower-cased it would be milli- ("mW")
_MEGA_RE = re.compile(r"M(m|g|[lL]|W|Hz|V|A|J|Pa|N|s|eV|\u03a9|B|b)")
# "(number)(space)(unit)"; a one-letter unit needs the space, so "2s" stays an expression in s
_TRAILING_WORD_RE = re.compile(r"[^\W\d_]+$")
_UNIT_RE = re.compile(r"^(.*?[\d}.])(\s*)((?:square|sq\.?|cubic)?\s*[A-Za-z][A-Za-z\s/.]*(?:\^\s*\{?[23]\}?)?)$")


@dataclass(frozen=True)
class Quantity:
    """A number as written: its exact value and decorations (unit, ``%``, degrees, currency)."""

    value: Fraction
    decimal_literal: bool  # an integer or terminating decimal as written (not a fraction)
    unit: str | None = None
    percent: bool = False
    scale: str | None = None  # a temperature's, after a degree sign: "C" or "F" ("5°C" is not "5°F")
    degrees: bool = False  # a degree sign or word ("30°" is no "30 rad")


def normalize(text: str) -> str:
    """LaTeX and unicode spelling differences removed; still the same answer.

    >>> normalize("$\\\\dfrac{1}{2}$ \\\\text{ cm}.")
    '\\\\frac{1}{2} cm'
    """
    s = text.translate(_UNICODE).strip()
    s = s.replace("\\(", "").replace("\\)", "").replace("\\[", "").replace("\\]", "")
    s = s.replace("\\$", "\0").replace("$", "").replace("\0", "\\$")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",")
    s = _THIN_GROUP_RE.sub("", s)  # 1\,000
    for _ in range(3):  # \text{\textbf{x}} unwraps in two rounds
        s = _TEXT_CMD_RE.sub(r"\1", s)
    s = _SPACING_RE.sub(" ", s)
    s = " ".join(s.split())
    s = _MIXED_SLASH_RE.sub(_mixed_number, s)  # 1 3/4, 1\,3/4
    s = _SPACE_GROUPS_RE.sub(_join_groups, s)  # 1 000, 1\ 000
    end = len(s)  # a sentence's full stops, not a factorial ("5!" is 120) nor an ellipsis; by index, so that
    while end and (s[end - 1] == "." or _plain_bang(s, end)) and s[end - 2 : end - 1] != ".":  # 1 MB of ". " is
        end -= 1                                                                               # linear work
        while end and s[end - 1].isspace():
            end -= 1
    s = s[:end]
    if len(s) > 1 and s[0] == "{" and s[-1] == "}" and s.count("{") == 1 and "," not in s:
        s = s[1:-1].strip()
    return s


def _join_groups(match: re.Match) -> str:
    run = match.group()
    return run if re.match(r" \d", match.string[match.end():match.end() + 2]) else run.replace(" ", "")


def _mixed_number(match: re.Match) -> str:
    whole, num, den = match.groups()
    num_digits, den_digits = num.lstrip("0"), den.lstrip("0")  # compared as text: int() of 5000 digits raises
    proper = num_digits and (len(num_digits), num_digits) < (len(den_digits), den_digits)
    return f"{whole}\\frac{{{num}}}{{{den}}}" if proper else match.group()


def normalize_text(text: str) -> str:
    """Case- and punctuation-insensitive form for short text answers ("Red." == "red")."""
    s = normalize(text).lower().strip(" \"'`")
    end = len(s)
    while end and (s[end - 1] in ".?;:" or _plain_bang(s, end)):
        end -= 1
    return " ".join(s[:end].split())


def _plain_bang(s: str, end: int) -> bool:
    """Whether s[:end] ends with a "!" that is punctuation, not a factorial ("5!", "(n+1)!", "n!")."""
    if s[end - 1] != "!" or end < 2:
        return s[end - 1 : end] == "!"
    lone_letter = s[end - 2].islower() and (end < 3 or not s[end - 3].isalpha())  # "n!"; "C!" is option C
    return not (s[end - 2].isdigit() or s[end - 2] in ")}" or lone_letter)


def read_quantity(text: str, *, unit: str | None = None) -> Quantity | None:
    """Read a decorated number, or ``None`` when ``text`` is not one.

    >>> read_quantity("1,234.5 cm")
    Quantity(value=Fraction(2469, 2), decimal_literal=True, unit='cm', percent=False, scale=None, degrees=False)
    >>> read_quantity("3x") is None
    True
    """
    if len(text) > 200:
        return None
    s = normalize(text)
    s = _CURRENCY_PREFIX_RE.sub("", s)
    s = _CURRENCY_SUFFIX_RE.sub("", s)
    percent = bool(_PERCENT_RE.search(s))
    s = _PERCENT_RE.sub("", s)
    scale = _scale(s)
    s = _SCALE_WORD_RE.sub("", s)
    degrees = bool(_DEGREE_RE.search(s))
    s = _DEGREE_RE.sub("", s)
    found_unit = None
    head = s[: -len(unit)] if unit else ""
    if unit and s.lower().endswith(unit.lower()) and head.strip():
        if head[-1].isalpha() and unit[0].isalpha():  # "5 cm", "5 µm" for the unit "m": the unit is the whole word
            lead = _TRAILING_WORD_RE.search(head)[0]
            word = lead + s[len(head):]
            found_unit, s = canonical_unit(word) or word.lower(), head[: -len(lead)].strip()
        else:
            written = s[len(head):]  # as written: "5 Nm" is newton metres even where the unit is "nm"
            found_unit, s = canonical_unit(written) or written.lower(), head.strip()
    else:
        match = _UNIT_RE.match(s)
        if match and (match.group(2) or len(match.group(3).strip()) > 1) and (canon := canonical_unit(match.group(3))):
            found_unit, s = canon, match.group(1).strip()
    parsed = read_number(s)
    if parsed is None:
        return None
    return Quantity(parsed[0], parsed[1], found_unit, percent, scale, degrees)


def degree_scale(text: str) -> str | None:
    """The temperature scale after a degree sign at the end of ``text`` (``"5^\\circ C"``: ``"C"``), else None."""
    return _scale(normalize(text))


def _scale(s: str) -> str | None:
    if word := _SCALE_WORD_RE.search(s):  # "5 degrees Celsius", or an expected unit "Fahrenheit"
        return word.group(1)[0].upper()
    match = _DEGREE_RE.search(s)
    return match.group(1) if match else None


def read_number(text: str) -> tuple[Fraction, bool] | None:
    """An undecorated number: ``(value, is_decimal_literal)``, or ``None``.

    >>> read_number("\\\\frac{14}{2}")
    (Fraction(7, 1), False)
    >>> read_number("-1.5e3")
    (Fraction(-1500, 1), True)
    >>> read_number("-2\\\\frac{1}{2}"), read_number("2\\\\frac{3}{2}")
    ((Fraction(-5, 2), False), None)
    """
    s = text.strip()
    if len(s) > 200:
        return None
    if match := _SCI_RE.match(s):
        sign, mantissa, exp1, exp2 = match.groups()
        exponent = int(exp1 or exp2 or 0)
        if abs(exponent) > MAX_EXPONENT:
            return None
        value = Fraction(Decimal(mantissa.replace(",", "").rstrip(".") or "0")) * Fraction(10) ** exponent
        return (-value if sign == "-" else value), True
    if match := _FRAC_RE.match(s):
        sign, inner_sign, num, den = match.groups()
        negative = (sign == "-") != (inner_sign == "-")
    elif match := _SLASH_RE.match(s):
        sign, num, den = match.groups()
        negative = sign == "-"
    elif match := _MIXED_RE.match(s):
        sign, whole, num, den = match.groups()
        if not 0 < int(num) < int(den):
            return None  # "2\frac{3}{2}" is no mixed number (nor is it 2 x 3/2 here: math-verify decides)
        value = int(whole) + Fraction(int(num), int(den))
        return (-value if sign == "-" else value), False
    else:
        return None
    denominator = Fraction(Decimal(den.replace(",", "")))
    if denominator == 0:
        return None
    value = Fraction(Decimal(num.replace(",", ""))) / denominator
    return (-value if negative else value), False


# Exact sizes of the units that convert (canonical spelling -> (base unit, its power, size)), so that "5 m"
# is "500 cm", "1.5 h" is "90 min" and "1 l" is "1000 cm^3". Not here: units whose size depends on the
# country (ton, gallon) or the calendar (month, year), and money.
_SIZES = {
    "nm": ("m", 1, Fraction(1, 10**9)), "mm": ("m", 1, Fraction(1, 1000)), "cm": ("m", 1, Fraction(1, 100)),
    "dm": ("m", 1, Fraction(1, 10)), "m": ("m", 1, Fraction(1)), "km": ("m", 1, Fraction(1000)),
    "in": ("m", 1, Fraction(254, 10**4)), "ft": ("m", 1, Fraction(3048, 10**4)), "yd": ("m", 1, Fraction(9144, 10**4)),
    "mi": ("m", 1, Fraction(1609344, 1000)), "ml": ("m", 3, Fraction(1, 10**6)), "l": ("m", 3, Fraction(1, 1000)),
    "mg": ("g", 1, Fraction(1, 1000)), "g": ("g", 1, Fraction(1)), "kg": ("g", 1, Fraction(1000)),
    "lb": ("g", 1, Fraction(45359237, 10**5)), "oz": ("g", 1, Fraction(45359237, 16 * 10**5)),
    "ms": ("s", 1, Fraction(1, 1000)), "s": ("s", 1, Fraction(1)), "min": ("s", 1, Fraction(60)),
    "h": ("s", 1, Fraction(3600)), "day": ("s", 1, Fraction(86400)), "week": ("s", 1, Fraction(604800)),
}


def convert(value: Fraction, unit: str, to: str) -> Fraction | None:
    """``value`` in ``unit`` expressed in ``to``, or ``None`` when they measure different things or either
    has no exact size. Units as :func:`canonical_unit` or :func:`unit_key` spell them.

    >>> convert(Fraction(5), "m", "cm"), convert(Fraction(36), "km/h", "m*s^-1"), convert(Fraction(5), "m", "s")
    (Fraction(500, 1), Fraction(10, 1), None)
    """
    a, b = _size(unit), _size(to)
    return value * a[1] / b[1] if a and b and a[0] == b[0] else None


def dimension(unit: str) -> str | None:
    """What a unit measures, the same for every unit :func:`convert` converts between (``"cm^2"`` and
    ``"m^2"`` give ``"m^2"``), or ``None`` for a unit with no exact size."""
    size = _size(unit)
    return size[0] if size else None


def _size(unit: str) -> tuple[str, Fraction] | None:
    """(dimension, size in base units) of a unit: units with powers up to 3, joined by ``*`` (as
    :func:`unit_key` writes them), or two such joined by ``/`` (as :func:`canonical_unit` does)."""
    over, _, under = unit.partition("/")
    powers: dict[str, int] = {}
    size = Fraction(1)
    for part, sign in ((over, 1), (under, -1)):
        for factor in filter(None, part.split("*")):
            base, _, power = factor.partition("^")
            if base not in _SIZES or power not in ("", "2", "3", "-1", "-2", "-3"):
                return None  # (a power of a million would take seconds to raise a size to)
            dim, base_power, base_size = _SIZES[base]
            n = sign * int(power or 1)
            powers[dim] = powers.get(dim, 0) + n * base_power
            size *= base_size**n
    return "*".join(d if p == 1 else f"{d}^{p}" for d, p in sorted(powers.items()) if p), size


def canonical_unit(text: str) -> str | None:
    """A known unit in canonical spelling (``"square centimeters"`` -> ``"cm^2"``), else ``None``."""
    if text.strip() in _CASED_UNITS:
        return _CASED_UNITS[text.strip()]
    if mega := _MEGA_RE.fullmatch(text.strip()):
        return "M" + (canonical_unit(mega.group(1)) or mega.group(1).lower())  # never equal to a lower-cased unit
    s = " ".join(text.lower().replace("^{", "^").replace("}", "").split()).rstrip(".")
    before = after = ""  # a power word is the first unit's ("cubic m/s"), a written power the last one's ("m/s^2")
    for prefix, p in (("square ", "^2"), ("sq. ", "^2"), ("sq ", "^2"), ("cubic ", "^3")):
        if s.startswith(prefix):
            s, before = s[len(prefix) :], p
    for suffix in ("^2", "^3"):
        if s.endswith(suffix):
            s, after = s[: -len(suffix)].strip(), suffix
    pieces = s.split("/")
    canon = [_unit_word(piece.strip()) for piece in pieces]
    if not all(canon) or len(pieces) > 2:
        return None
    if len(canon) == 2:
        return f"{canon[0]}{before}/{canon[1]}{after}"
    return canon[0] + (after or before)  # type: ignore[operator]


def _unit_word(word: str) -> str | None:
    if " " in word:
        return "unit" if word in ("square units", "units") else None
    if word in _UNIT_ALIASES:
        return _UNIT_ALIASES[word]
    if word.endswith("s") and word[:-1] in _UNIT_ALIASES and len(word) > 3:
        return _UNIT_ALIASES[word[:-1]]
    return None


_UNIT_WORD = r"[A-Za-z]+(?:\^\{?-?\d+\}?)?"
# a number (no letters but LaTeX commands: \frac, \sqrt, \pi), maybe after "x =", then its unit: words with
# powers, joined by spaces, \cdot, * or /. Each part matches one way only (a separator is never empty), so
# a text that is no number with a unit fails in linear time, not by trying every split of "m m m ... =".
_TRAILING_UNIT_RE = re.compile(r"^((?:[A-Za-z]\w*\s*=\s*)?(?:[^A-Za-z\\]|\\[A-Za-z]+|\\[^A-Za-z])*?(?:[\d}.]|\\[A-Za-z]+\s))\s*"
                               rf"({_UNIT_WORD}(?:(?:\s*(?:\\cdot|[*/])\s*|\s+){_UNIT_WORD})*)$")
_UNIT_TOKEN_RE = re.compile(r"/|([A-Za-z]+)(?:\^\{?(-?\d+)\}?)?")
_POWER_WORDS = {"square": 2, "sq": 2, "cubic": 3}
_NO_BRACES = str.maketrans("", "", "{}")


def split_unit(text: str) -> tuple[str, str] | None:
    """``(number, unit)`` for a number followed by a unit (its :func:`unit_key`), else ``None``: ``m/s``,
    ``m s^{-1}`` and ``meters per second`` are one unit, ``N·m`` and ``nm`` (nanometres) two. Letters in
    the number itself make the text an expression, not a number with a unit (``2x^2 - 3x``).

    >>> split_unit("x = 5 \\\\text{ meters}"), split_unit("12\\\\pi m s^-1"), split_unit("2x^2 - 3x")
    (('x = 5', 'm'), ('12\\\\pi', 'm*s^-1'), None)
    """
    if len(text) > 200:
        return None
    match = _TRAILING_UNIT_RE.match(normalize(text))
    if match is None:
        return None
    return match.group(1).strip(), unit_key(match.group(2))


def unit_key(unit: str) -> str:
    """A unit's canonical form: the powers of its base units, sorted (``"km/h"``, ``"km h^-1"`` and
    ``"kph"`` give ``"h^-1*km"``). A unit with a word the unit table does not know is kept as written,
    lower-cased, after a ``?`` (``"?apples"``): it may be variables (``2ab``, ``2 a b``), so it is only
    ever compared as text.
    """
    text = normalize(unit).replace("\\cdot", " ")
    powers: dict[str, int] = {}
    sign, pending = 1, 1
    for token in _UNIT_TOKEN_RE.finditer(text):
        word, power = token.group(1), int(token.group(2) or 1)
        if word is None or word.lower() == "per":
            sign = -1  # every word after "/" divides: J/kg K is J/(kg K), as physics writes it
            continue
        if word.lower() in _POWER_WORDS:
            pending = _POWER_WORDS[word.lower()]
            continue
        known = canonical_unit(word)
        if known is None:
            return "?" + "".join(canonical_unit(t.group(1) or "") or t.group(0).lower().translate(_NO_BRACES)
                                 for t in _UNIT_TOKEN_RE.finditer(text))
        head, _, per = known.partition("/")
        for base, exponent in [*((b, 1) for b in head.split("*")), *([(per, -1)] if per else [])]:
            powers[base] = powers.get(base, 0) + sign * pending * power * exponent
        pending = 1
    return "*".join(base if p == 1 else f"{base}^{p}" for base, p in sorted(powers.items()) if p)


# Words after a number that change its value, doubt it, bound it or make it part of something else:
# "5 million", "3 pi", "2 and", "101 binary", "5 below zero", "3 maybe", "5 minimum", "5 yes", and the number
# words ("2 seven"); besides these, no word ending in "th" (ordinals: "3 twelfths"), "ly" ("5 likely") or
# "illion" ("5 zillion") is a thing counted
_NOT_COUNTED = frozenset("""
    hundred thousand dozen gross score lakh lac crore grand googol myriad mln bln bil mil mio mrd thou kilo mega giga tera
    half halve third quarter twice double triple quadruple fold permille bps
    percent percentage pct per square cubic squared cubed root squareroot sqr cbrt power exponent reciprocal inverse inv
    opposite floor ceil ceiling sinh cosh tanh abc def xyz
    factorial choose mod modulo recurring repeating neg and plus minus over divided approx about around circa ish odd
    more less fewer greater higher lower smaller lesser larger bigger under upto atleast minimum maximum least most tops
    few too short extra missing removed almost
    not isnt negated none never wrong incorrect false invalid impossible unknown unsure uncertain doubtful maybe perhaps
    may might
    guess estimate estimated wait hmm nope nah
    either neither nor else otherwise except excluding instead alternatively unless yes true correct right
    negative positive below above base binary decimal octal hex bce pi inf infinity infty undefined
    sin cos tan cot sec csc log exp sqrt lim max min det gcd lcm deg
    zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen
    seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety
""".split())
_NOT_COUNTED_ENDINGS = ("th", "ly", "illion")
_VOWEL_RE = re.compile(r"[aeiouy]")
_COUNTED_RE = re.compile(r"^(.*[\d}])\s+([A-Za-z]{3,})(?:\s+([A-Za-z]{3,}))?$")  # ("2\frac{1}{2} cups")


def split_counted(text: str) -> tuple[str, str] | None:
    """``(number, thing)`` for a count followed by the thing counted, one or two plain words
    (``"5 apples"``, ``"3 red cubes"``), else ``None``: a word that is a unit, a number or changes the
    value (``"5 million"``, ``"3 pi"``, ``"3 halves"``) makes no count, nor does a word cased like a unit
    symbol (``"5 mPa"``) or short capitals (``"2 ABC"``, points). The thing is lower-cased and singular (``"1 apple"`` and ``"2 apples"`` count apples).
    A word the unit table does not know may still be a unit (``"5 decimeters"``), so a count only ever
    stands for a plain number, or for another count of the same thing (:mod:`rewards.math_answer`).

    >>> split_counted("3 red cubes"), split_counted("5 million"), split_counted("5 cm")
    (('3', 'red cube'), None, None)
    """
    if len(text) > 200 or (match := _COUNTED_RE.match(normalize(text))) is None:
        return None
    number, thing = match.group(1), []
    if read_number(number) is None:
        return None
    for word in filter(None, match.groups()[1:]):
        lower = word.lower()
        singular = lower[:-1] if lower.endswith("s") else lower
        if {lower, singular} & _NOT_COUNTED or singular.endswith(_NOT_COUNTED_ENDINGS) or canonical_unit(word) or (
            not _VOWEL_RE.search(lower)  # "xyz", "sqrt": no word
        ) or not (
            word.islower() or word.istitle() or word.isupper() and len(word) > 4  # "ABC" names points, "mPa" a unit
        ):
            return None
        thing.append(singular)
    return number, " ".join(thing)


def round_half_up(value: Fraction, places: int) -> Fraction:
    """``value`` rounded to ``places`` decimals, halves away from zero (MathVista's precision)."""
    digits = len(str(abs(value.numerator) // value.denominator)) + abs(places) + 10
    with localcontext(prec=digits):
        exact = Decimal(value.numerator) / Decimal(value.denominator)
        return Fraction(exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def terminates(value: Fraction) -> bool:
    """Whether ``value`` has a finite decimal expansion (its denominator is 2^a 5^b)."""
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1
