"""The ``math`` reward: is the final answer equal to the ground truth?

Built for the answers of VLM math benchmarks (MathVista, MathVerse, MathVision, Geometry3K,
CLEVR-style counting). Cheapest check first, so most items never reach sympy:

1. extraction (:mod:`rewards.extract`): no final answer, or a hedged one, is wrong;
2. multiple choice when ``extra_info["choices"]`` is given (:mod:`rewards.choices`);
3. vetoes that need no parsing (see ``_value_match``): a relation, figure or kind of quantity the truth
   does not have;
4. identical spelling after normalisation (case-insensitive, so short text answers match);
5. decorated numbers read exactly (:mod:`rewards.numbers`): thousands separators, unicode minus,
   scientific notation, fractions, units, degrees, currency, percent, ``extra_info["precision"]``;
   integers compare exactly; a count may name what it counts (``5 apples`` for ``5``, not for ``5 pears``);
6. everything else (radicals, π, sets, intervals, equations) through math-verify, but only on text
   that passed the bounded checks of :mod:`rewards.safety`, and a "yes" from math-verify is vetoed
   when a high-precision numeric evaluation disagrees (math-verify accepts ``\\frac{1}{2^{99}}`` for
   ``\\frac{1}{2^{98}}``).

Differences from math-verify used alone, deliberately:
1. hedging is wrong: ``3 or 4``, ``3, 4`` (unless the truth is a list), two final answers that differ
   (two that are one value, ``\\boxed{3}`` then ``\\boxed{3.0}``, are one answer);
2. an answer only inside ``<think>`` is missing; so is a response without ``<answer>``/``\\boxed``;
3. integers and exact decimals never pass on float rounding (``2.9999999`` is not ``3``);
4. a relation, an arrow or a divides sign the truth lacks is another answer (``x < 4``, ``\\ne 4``,
   ``3 \\to 4`` for ``4``; ``x > 2`` is the interval ``(2, \\infty)``, which math-verify takes from a truth
   only), and a derivation (``2x = 6 \\Rightarrow x = 3``) is judged by its conclusion;
5. an equation gives its right-hand side only when its left side names the value (``x = 3``,
   ``f(2) = 3``, ``a + b = 7``, worked arithmetic that holds), not ``2x = 3`` or ``x + 1 = 3`` for 3;
6. a figure named by its points must be the truth's figure (``m\\angle BAC`` is not ``m\\angle ABC``;
   ``\\angle CBA`` is), and money or degrees are not a quantity of another unit (``5 cents`` for ``\\$5``);
7. a number with a unit of another quantity is another answer (``5 N·m`` for ``5 m``; in another unit of the
   same quantity it is converted exactly: ``500 cm`` is ``5 m``, ``1.5 h`` is ``90 min``), and letters are not a number
   (``2ab`` for ``2``); words that are not math (``not 5, it is 6``) are compared as text only.

``extra_info`` keys read here: ``choices``, ``answer_type`` (integer / float / text / list),
``precision``, ``unit``.
"""
from __future__ import annotations

import dataclasses
import functools
import re
import signal
import threading
import time
import unicodedata
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from rewards.choices import NO_OPTION, letter_of, option_indices
from rewards.extract import extract_answer, top_level_parts
from rewards.numbers import (
    CURRENCY_MARK_RE,
    Quantity,
    canonical_unit,
    convert,
    degree_scale,
    dimension,
    normalize,
    normalize_text,
    read_number,
    read_quantity,
    round_half_up,
    split_counted,
    split_unit,
    terminates,
    unit_key,
)
from rewards.registry import register
from rewards.safety import unsafe_reason

MAX_ANSWER_CHARS = 2000  # a final answer longer than this is no answer (long ones cost seconds to compare)
MAX_FINAL_ANSWERS = 4  # more final answers written differently than this are a hedge, whatever their values
MATH_VERIFY_SECONDS = 3  # math-verify's own alarm, where one can be used (main thread, no other alarm)
_ANSWER_PHRASE_RE = re.compile(r"^(?:so\s+)?(?:the\s+)?(?:final\s+|correct\s+)?answer\s*(?:is\s*:?|:|=)\s*", re.I)
_MARKDOWN_BOLD_RE = re.compile(r"^(\*\*|__)(.+)\1$", re.S)  # chat models bold the answer: **C**
_LETTER_RE = re.compile(r"^\(?[A-Z]\)?\.?$")
_WORDS_RE = re.compile(r"^[a-z][a-z '\-]*[a-z]$")
_MATH_WORDS = {"pi", "infinity", "inf", "undefined", "none"}
_COMMAND_RE = re.compile(r"\\[A-Za-z]+")
_WORD_RE = re.compile(r"[A-Za-z]{3,}")
_POINT_NAME_RE = re.compile(r"^[A-Z]{3,4}$")  # a geometry answer names its angle or polygon: m\angle ABC = 30
_MATH_NAMES = {"sin", "cos", "tan", "cot", "sec", "csc", "log", "exp", "lim", "max", "min", "det", "gcd", "lcm",
               "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "sqrt", "inf", "infty", "mod", "deg"}
# Inequalities, negations and "or" (≤ ≥ ≠ arrive as \le \ge \ne from `normalize`): "\ne 4" or "< 4" is no 4. One
# spelling each, and either direction (0 < a is a > 0); not \mid (P(A \mid B) = 0.3), \to (a limit) nor \cup.
# Those count outside brackets only (`_TOP_LEVEL_RELATION_RE`): "3 \to 4" or "3 \mid 4" is no 4.
_RELATION_RE = re.compile(r"[<>≪≫≮≯⩽⩾¬∨∧]|\\(?:neq?|not|neg|lnot|n?[lg][et]q?|leqslant|geqslant|ll|gg|lor|land|vee|"
                          r"wedge|nless|ngtr)(?![A-Za-z])")
_TOP_LEVEL_RELATION_RE = re.compile(r"[→⇒↦⟶⟹⇔↔∣∤]|\\(?:to|(?:long)?(?:right|Right)arrow|implies|mapsto|iff|"
                                    r"(?:left|Left)rightarrow|n?mid)(?![A-Za-z])")
_FIGURE_COMMANDS = r"\\(angle|measuredangle|triangle|overline|widehat|overarc|arc|square|parallelogram|quadrilateral|polygon)(?![A-Za-z])"
_FIGURE_COMMAND_RE = re.compile(_FIGURE_COMMANDS)
_GEOMETRY_NAME_RE = re.compile(_FIGURE_COMMANDS + r" ?\{? ?([A-Z](?: ?[A-Z]){1,5})(?![A-Za-z'_]) ?\}?")  # (a prime: another point)
_IMPLIES_RE = re.compile(r"\\(?:Rightarrow|Longrightarrow|implies)(?![A-Za-z])|[⇒⟹]")
_CORRESPONDENCE_RE = re.compile(r"\\(?:sim|cong|simeq)(?![A-Za-z])|[∼≅≃~]")
_FIGURE_SIGNS = {"∠": "angle", "∡": "measuredangle", "△": "triangle", "▱": "parallelogram", "□": "square"}
_FIGURE_SIGN_RE = re.compile("|".join(_FIGURE_SIGNS))
# "x > 2", "3 \\ge x", "-1 \\le x < 3": a bound on one letter, cut at its relations
_INEQUALITY_SPLIT_RE = re.compile(r"(<|>|\\(?:leq?|geq?|lt|gt|leqslant|geqslant))(?![A-Za-z])")
_SAME_BOUND = {"\\lt": "<", "\\gt": ">", "\\leq": "\\le", "\\geq": "\\ge", "\\leqslant": "\\le", "\\geqslant": "\\ge"}
_FLIP = {"<": ">", ">": "<", "\\le": "\\ge", "\\ge": "\\le"}
_LETTERS = frozenset("abcdfghjklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")  # (e and i are numbers)
# a bound: a number, maybe worked out ("\\frac{\\sqrt{2}}{2}", "2\\pi"), and no other relation ("2 \\approx 3")
_PLAIN_BOUND_RE = re.compile(r"^(?:[\d.\s+\-*/^(){}]|\\(?:frac|sqrt|pi|cdot|times)(?![A-Za-z]))+$")
_INTERVAL_RE = re.compile(r"^[(\[][^,()\[\]]+,[^,()\[\]]+[)\]]$")
_SAME_RELATION = {
    **dict.fromkeys(("<", ">", "\\lt", "\\gt"), "<"), **dict.fromkeys(("\\le", "\\leq", "\\ge", "\\geq", "⩽", "⩾",
                                                                      "\\leqslant", "\\geqslant"), "\\le"),
    **dict.fromkeys(("≪", "≫", "\\ll", "\\gg"), "\\ll"), **dict.fromkeys(("\\nless", "\\ngtr", "≮", "≯"), "\\nless"),
    **dict.fromkeys(("\\nleq", "\\ngeq", "\\nle", "\\nge"), "\\nleq"), "\\neq": "\\ne", "\\lnot": "\\neg", "¬": "\\neg",
    **dict.fromkeys(("∨", "\\vee", "\\lor"), "\\lor"), **dict.fromkeys(("∧", "\\wedge", "\\land"), "\\land"),
    **dict.fromkeys(("→", "⇒", "↦", "⟶", "⟹", "\\to", "\\rightarrow", "\\Rightarrow", "\\longrightarrow",
                     "\\Longrightarrow", "\\implies", "\\mapsto"), "\\to"),
    **dict.fromkeys(("⇔", "↔", "\\iff", "\\leftrightarrow", "\\Leftrightarrow"), "\\iff"), "∣": "\\mid", "∤": "\\nmid",
}
# Words of other scripts that negate, bound or hedge a value (Qwen-based VLMs often answer in Chinese): a list, as
# a unit or a count's word in those scripts is no prose ("3厘米", "3个").
_FOREIGN_HEDGE_RE = re.compile(r"[不没非无或约未]|至[少多]|[大小]于|超过|可能|也许|大概|"
                               r"(?<![^\W\d_])(?:не|нет|или|около|примерно|больше|меньше)(?![^\W\d_])", re.I)
_PERCENT_UNITS = ("%", "percent", "percentage")
_DEGREE_UNITS = ("°", "^\\circ", "circ", "deg", "degree", "degrees")
_ANGLE_BRACKETS_RE = re.compile(r"^<([^<>]*)>$")  # a vector written <1, 2>


@register("math")
def math_reward(response: str, ground_truth: str, *, extra_info: Mapping[str, Any]) -> float:
    """1.0 when the final answer equals the ground truth, else 0.0 (numbers, LaTeX, choices, text).

    >>> math_reward("<think>1 + 2 = 3</think> <answer>3</answer>", "3", extra_info={})
    1.0
    >>> math_reward("<answer>C</answer>", "C", extra_info={"choices": ["2", "4", "3", "5"]})
    1.0
    >>> math_reward("<answer>\\\\frac{1}{2^{99}}</answer>", "\\\\frac{1}{2^{98}}", extra_info={})
    0.0
    """
    found = extract_answer(response)
    if found.answer is None or len(found.answers) > MAX_FINAL_ANSWERS or any(
        len(a) > MAX_ANSWER_CHARS for a in (found.answer, *found.answers)
    ):
        return 0.0
    truth = ground_truth_answer(ground_truth)
    if not answers_match(found.answer, truth, extra_info):
        return 0.0
    # several final answers written differently are one answer when each is plainly the last one's value
    # ("\\boxed{3} ... \\boxed{3.0}", "3" then "**3 cubes**"), told without sympy and not within the truth's
    # precision ("\\boxed{1.6} ... \\boxed{2.4}" for 2), and each is right ("5 pears" then "5" for "5 apples")
    earlier = [a for a in found.answers if a != " ".join(found.answer.split())]
    if not earlier:
        return 1.0
    if _choices_given(extra_info):  # each plainly names the last one's option ("\\boxed{C} ... \\boxed{3}")
        options = _option_texts(extra_info["choices"])
        named = option_indices(_unwrapped(found.answer), options, _one_value)
        return 1.0 if len(named - {NO_OPTION}) == len(named) == 1 and all(
            option_indices(_unwrapped(a), options, _one_value) == named for a in earlier) else 0.0
    return 1.0 if all(_one_value(a, found.answer) and answers_match(a, truth, extra_info) for a in earlier) else 0.0


def _one_value(first: str, second: str) -> bool:
    """Whether two final answers are plainly one value: the same text, or numbers read exactly (a count's
    thing the same where both name one), with the same unit and percent sign. Cheap: no sympy."""
    first, second = _unwrapped(first), _unwrapped(second)
    if normalize_text(first) == normalize_text(second):
        return True
    numbers = _uncounted(first, second)
    if numbers is None:
        return False
    a, b = read_quantity(numbers[0]), read_quantity(numbers[1])
    return a is not None and b is not None and (a.value, a.unit, a.percent, a.scale) == (b.value, b.unit, b.percent, b.scale)


def _uncounted(first: str, second: str) -> tuple[str, str] | None:
    """Two answers with what a count counts taken off ("5 apples" -> "5"; a side that is no count stays as
    written), or None when both count, different things ("5 apples", "5 pears")."""
    counts = split_counted(first), split_counted(second)
    if all(counts) and counts[0][1] != counts[1][1]:
        return None
    return (counts[0][0] if counts[0] else first), (counts[1][0] if counts[1] else second)


def ground_truth_answer(ground_truth: str) -> str:
    """The answer inside a ground truth written like a response (``\\boxed{3}``), else the text."""
    found = extract_answer(ground_truth)
    return found.answer if found.answer is not None else ground_truth.strip()


def answers_match(answer: str, truth: str, extra_info: Mapping[str, Any]) -> bool:
    """Whether an extracted ``answer`` equals ``truth`` under the rules of ``extra_info``."""
    answer = _unwrapped(answer)
    if not normalize(truth):
        raise ValueError(f"the ground truth {truth!r} is empty")
    if _choices_given(extra_info):
        return _choice_match(answer, truth, _option_texts(extra_info["choices"]))
    answer_type = str(_given(extra_info, "answer_type") or "").lower()
    precision = _given(extra_info, "precision")
    precision = int(float(precision)) if precision is not None else None
    unit = normalize(str(_given(extra_info, "unit") or "")) or None  # "cm²" is "cm^2"
    if answer_type == "list":
        got, want = _list_items(answer), _list_items(truth)
        return len(got) == len(want) and all(
            _value_match(a, t, precision=precision, unit=unit, integer=False) for a, t in zip(got, want)
        )
    if answer_type == "text":
        return not _hedged(answer, truth) and normalize_text(answer) == normalize_text(truth)
    return _value_match(answer, truth, precision=precision, unit=unit, integer=answer_type == "integer")


def _choices_given(extra_info: Mapping[str, Any]) -> bool:
    choices = extra_info.get("choices")
    return choices is not None and len(choices) > 0


def _unwrapped(answer: str) -> str:
    """The answer without a chat model's wrapping: "The answer is", markdown bold."""
    return _ANSWER_PHRASE_RE.sub("", _MARKDOWN_BOLD_RE.sub(r"\2", answer.strip()))


def _given(extra_info: Mapping[str, Any], key: str) -> Any:
    """extra_info[key], or None where it is empty: a column pandas filled with NaN for rows without it
    (MathVista's precision) is not a precision of "nan"."""
    value = extra_info.get(key)
    return None if str(value).strip().lower() in ("", "nan", "none") else value


def _value_match(answer: str, truth: str, *, precision: int | None, unit: str | None, integer: bool) -> bool:
    """Whether the extracted `answer` is the value `truth`, in this order: the vetoes (a derivation read as
    its conclusion; hedges and relations; figures; kinds of quantity), the same text, the same read
    number, a letter, a text answer, a count naming what it counts, a number with a unit (each part
    compared again), and last math-verify on the rest. A step that cannot decide passes to the next."""
    if _IMPLIES_RE.search(answer) and not _IMPLIES_RE.search(truth):  # a derivation: "2x = 6 \\Rightarrow x = 3"
        answer = _IMPLIES_RE.split(answer)[-1].strip() or answer        # gives what it concludes
    if _is_interval(truth) and (interval := _as_interval(answer)):
        answer = interval  # "x > 2" for "(2, \\infty)" (math-verify reads an inequality as a truth only)
    if _hedged(answer, truth) or _relations(answer) - _relations(truth):
        return False  # several answers, or a relation the truth has not ("\\ne 4", "x < 4" for 4)
    alike = _figures_alike(answer, truth)
    if alike is None:
        return False  # another figure: math-verify reads "m\\angle BAC" as m*A*B*C, the angle at B's product too
    answer, truth = alike
    if _kinds_clash(answer, truth):
        return False  # a quantity of another kind: "5 cents" for "\\$5", "4\\sqrt{2}°" for "4\\sqrt{2} cm"
    if precision is None and normalize_text(answer) == normalize_text(truth):
        if normalize(answer) == normalize(truth) or split_unit(truth) is None:
            return True  # the same text; but a unit's case may be its meaning: "5 Nm" is not "5 nm"
    want, got = read_quantity(truth, unit=unit), read_quantity(answer, unit=unit)
    if want is not None and got is not None:
        verdict = _compare_quantities(got, want, precision=precision, integer=integer, unit=unit)
        if verdict is not None:
            return verdict
    truth_text = normalize_text(truth)
    if _LETTER_RE.match(normalize(truth)):
        return letter_of(answer) == letter_of(truth)
    if _WORDS_RE.match(truth_text) and truth_text not in _MATH_WORDS:
        return False  # a text answer matches by text only (step 4), never through sympy
    numbers = _uncounted(answer, truth) if unit is None else (answer, truth)
    if numbers != (answer, truth) and (numbers is None or all(read_number(normalize(n)) for n in numbers)):
        # "5 apples" for "5": what is counted may be named or left out, but not be another thing; the other
        # side a plain number or a count, as a word the unit table does not know may be a unit ("5 furlongs")
        return numbers is not None and _value_match(*numbers, precision=precision, unit=None, integer=integer)
    want_split = split_unit(truth) or ((truth, unit_key(unit)) if unit else None)
    got_split = split_unit(answer)
    if want_split and got_split:  # both a number with a unit: compare each
        if got_split[1] != want_split[1]:
            return False  # another unit ("5 N·m" for "5 m"): math-verify drops the unit words it knows, and reads both as 5
        return _value_match(got_split[0], want_split[0], precision=precision, unit=None, integer=integer)
    one = want_split or got_split  # a known unit on one side only may be left out ("12\pi" for "12\pi cm^2")
    if one and one[1].startswith("?") and one[1] not in ("?e", "?i") and unit is None and not re.search(
        "[A-Za-z]", _COMMAND_RE.sub(" ", normalize(truth if got_split else answer))  # no letters but commands
    ):
        return False  # variables against a number: "2ab" is not 2 (math-verify reads "ab" as a unit and drops it)
    if one and not one[1].startswith("?"):
        answer, truth = (answer, one[0]) if want_split else (one[0], truth)
        return _value_match(answer, truth, precision=precision, unit=None, integer=integer)
    exact = integer or (want is not None and want.value.denominator == 1 and want.decimal_literal)
    return _symbolic_match(answer, truth, precision=precision, exact=exact)


def _compare_quantities(got: Quantity, want: Quantity, *, precision: int | None, integer: bool,
                        unit: str | None) -> bool | None:
    """Exact verdict on two read numbers, or ``None`` when only rounding rules could decide."""
    decoration = (unit or "").strip().lstrip("\\").lower()  # an expected unit "%" or "°": the truth carries it ("5" is 5%)
    if decoration in _PERCENT_UNITS:
        want, unit = dataclasses.replace(want, percent=True), None
    elif decoration in _DEGREE_UNITS:
        want, unit = dataclasses.replace(want, degrees=True), None
    expected_scale = want.scale or (degree_scale(unit) if unit else None)  # an expected unit "°C" or "Celsius" is one
    expected_unit = want.unit or ((canonical_unit(unit) or unit.lower()) if unit and not expected_scale else None)
    converted = None
    if got.unit and expected_unit and got.unit != expected_unit:  # (as read_quantity keeps it)
        converted = convert(got.value, got.unit, expected_unit)  # "500 cm" for "5 m"
        if converted is None:
            return False  # another quantity: "5 N·m" for "5 m"
        got = dataclasses.replace(got, value=converted, unit=expected_unit)
    if got.scale and expected_scale and got.scale != expected_scale or got.scale and expected_unit or got.unit and expected_scale:
        return False  # a scale may be left out, not changed, nor be another unit ("5 K" is not "5°C")
    if got.percent != want.percent and (got.unit or expected_unit or got.scale or expected_scale):
        return False  # nor may a percentage stand for a quantity of a unit ("5%" for "5 cm", "5 cm" for "5%")
    if got.degrees != want.degrees and (got.unit or expected_unit or got.percent or want.percent):
        return False  # nor an angle in degrees for another unit or a percentage ("30 rad" for "30°", "5°" for "5 cm")
    candidates = [got.value]
    if got.percent != want.percent:  # "50%" is 0.5; a truth of "50" may leave its "%" out
        candidates.append(got.value / 100 if got.percent else got.value * 100)
    for value in candidates:
        if precision is not None:
            if round_half_up(value, precision) == round_half_up(want.value, precision):
                return True
        elif value == want.value:
            return True
    if precision is not None or integer or converted is not None:  # (a conversion is exact or no answer)
        return False
    if got.decimal_literal != want.decimal_literal and not (terminates(got.value) and terminates(want.value)):
        return None  # 0.333333 against 1/3: math-verify's float rules decide
    return False


def _choice_match(answer: str, truth: str, choices: list[str]) -> bool:
    def same(a: str, b: str) -> bool:  # b: an option's text, which no answer matches when it is unreadable (a padded "")
        try:
            return bool(b.strip()) and _value_match(a, b, precision=None, unit=None, integer=False)
        except ValueError:
            return False

    wanted = option_indices(truth, choices, same) - {NO_OPTION}  # a ground truth is trusted, not read as a hedge
    if len(wanted) != 1:
        raise ValueError(f"ground truth {truth!r} names {len(wanted)} of the choices {choices}, not one")
    return option_indices(answer, choices, same) == wanted


def _hedged(answer: str, truth: str) -> bool:
    """Several different answers where the truth is one ("3 or 4", "3, 4" for "3")."""
    if re.search(r"(?i)\bor\b", answer) and not re.search(r"(?i)\bor\b", truth):
        return True
    parts = top_level_parts(normalize(answer))
    if len(parts) < 2 or len(top_level_parts(normalize(truth))) > 1 or normalize(truth)[:1] in "([{\\":
        return False
    return len({normalize_text(p) for p in parts}) > 1


def _kinds_clash(answer: str, truth: str) -> bool:
    """One side an amount of money or an angle in degrees, the other a quantity of a unit that is none (math-verify
    drops both marks, and a known unit on one side only may be left out)."""
    kinds = [_kind(text) for text in (answer, truth)]
    return None not in kinds and kinds[0] != kinds[1]


def _kind(text: str) -> str | None:
    """"money", "degrees", what a unit measures (else its key), or None for a plain value (or a unit the table does
    not know)."""
    plain = normalize(text)
    if CURRENCY_MARK_RE.search(plain):
        return "money"
    if any(mark in plain for mark in ("°", "^\\circ")):
        return "degrees"
    split = split_unit(text)
    return dimension(split[1]) or split[1] if split and not split[1].startswith("?") else None  # "cm" and "m" alike


def _figures_alike(answer: str, truth: str) -> tuple[str, str] | None:
    """Where the truth names a figure (``\\angle ABC``, ``∠ABC``, ``\\overline{AB}``, ``\\triangle ABC``):
    both with each figure's points spelled one way, if the answer names the same figures (in any order),
    else None. An answer naming none is the value of a truth that names one and gives it
    ("30" for "m\\angle ABC = 30"). A truth naming none: both as they are."""
    signed = _FIGURE_SIGN_RE.sub(_figure_command, truth)  # "∠ABC" as "\\angle ABC"
    if not _GEOMETRY_NAME_RE.search(signed):
        return answer, truth
    answer, truth = _FIGURE_SIGN_RE.sub(_figure_command, answer), signed
    if not _FIGURE_COMMAND_RE.search(answer) and "=" in truth:
        return answer, truth.rsplit("=", 1)[1]
    if sorted(_figures(answer)) != sorted(_figures(truth)):
        return None
    return tuple(_GEOMETRY_NAME_RE.sub(lambda m: f"\\{m[1]} {_canonical_name(m[1], m[2], t)}", t) for t in (answer, truth))


def _figures(text: str) -> list[tuple[str, str]]:
    """The figures ``text`` names (``\\angle ABC``, ``\\overline{AB}``, ``\\triangle ABC``), each name as
    `_canonical_name` spells it."""
    return [(command, _canonical_name(command, name, text)) for command, name in _GEOMETRY_NAME_RE.findall(text)]


def _figure_command(sign: re.Match) -> str:
    return f"\\{_FIGURE_SIGNS[sign[0]]} "


def _canonical_name(command: str, name: str, text: str) -> str:
    """One spelling of the points naming one figure: an angle or a segment read either way (its vertex
    stays in the middle), a triangle's corners in any order (not in a similarity or congruence, whose
    order pairs the corners: ``text`` says), a polygon's from any corner in either direction."""
    name = "".join(name.split())  # "\\angle A B C"
    if command == "triangle":
        return name if _CORRESPONDENCE_RE.search(text) else "".join(sorted(name))
    if command in ("angle", "measuredangle", "overline", "widehat", "overarc", "arc"):
        return min(name, name[::-1])
    turns = [name[i:] + name[:i] for i in range(len(name))]
    return min(turns + [t[::-1] for t in turns])


def _relations(text: str) -> set[str]:
    """The relation, negation and bound symbols in ``text``, one spelling each (math-verify would read
    "\\ne 4" as 4)."""
    s = normalize(text)
    s = _ANGLE_BRACKETS_RE.sub(r"\1", s)
    found = _RELATION_RE.findall(s) + _TOP_LEVEL_RELATION_RE.findall(_outside_brackets(s))
    return {_SAME_RELATION.get(f, f) for f in found}


def _is_interval(text: str) -> bool:
    """An interval that is no point: it has an infinite end or a square bracket ("(2, 5)" may be a point)."""
    s = normalize(text)
    return bool(_INTERVAL_RE.match(s)) and ("\\infty" in s or "[" in s or "]" in s)


def _as_interval(text: str) -> str | None:
    """A bound on one letter as the interval it gives ("x > 2" is "(2, \\infty)", "-1 \\le x < 3" is
    "[-1, 3)"), else None. The bounds are numbers, maybe worked out (\\frac, \\sqrt, \\pi)."""
    s = normalize(text)
    parts = [_SAME_BOUND.get(p.strip(), p.strip()) for p in _INEQUALITY_SPLIT_RE.split(s)] if len(s) <= 200 else []
    if len(parts) == 3 and parts[2] in _LETTERS:  # "2 < x" is "x > 2"
        parts = [parts[2], _FLIP[parts[1]], parts[0]]
    ops = parts[1::2]
    if len(parts) == 3 and parts[0] in _LETTERS:  # "x > 2", "x \le 3"
        bounds = [parts[2], None] if ops[0] in (">", "\\ge") else [None, parts[2]]
        closed = [ops[0] == "\\ge", ops[0] == "\\le"]
    elif len(parts) == 5 and parts[2] in _LETTERS and len({op in ("<", "\\le") for op in ops}) == 1:
        bounds, closed = [parts[0], parts[4]], [op in ("\\le", "\\ge") for op in ops]
        if ops[0] in (">", "\\ge"):  # "3 > x \ge -1"
            bounds, closed = bounds[::-1], closed[::-1]
    else:
        return None
    if any(b is not None and not _PLAIN_BOUND_RE.match(b) for b in bounds):
        return None  # "x > y" is no interval
    start = "(-\\infty" if bounds[0] is None else ("[" if closed[0] else "(") + bounds[0]
    end = "\\infty)" if bounds[1] is None else bounds[1] + ("]" if closed[1] else ")")
    return f"{start}, {end}"


def _outside_brackets(text: str) -> str:
    """``text`` without what brackets and braces hold (a limit's subscript, a conditional probability)."""
    kept, depth = [], 0
    for ch in text:
        depth += ch in "([{"
        if depth == 0:
            kept.append(ch)
        depth = max(0, depth - (ch in ")]}"))
    return "".join(kept)


def _list_items(text: str) -> list[str]:
    s = normalize(text)
    if len(s) > 1 and s[0] in "[(" and s[-1] in "])":
        s = s[1:-1]
    return top_level_parts(s)


def _option_texts(choices: object) -> list[str]:
    if isinstance(choices, Mapping):  # {"A": "2", "B": "4"}
        return [str(choices[k]) for k in sorted(choices)]
    if isinstance(choices, str) or not isinstance(choices, Sequence) and not hasattr(choices, "tolist"):
        raise ValueError(f"extra_info['choices'] must be a list of option texts, got {type(choices).__name__}")
    return [str(c) for c in (choices.tolist() if hasattr(choices, "tolist") else choices)]


# ---- the sympy path (math-verify, bounded, cross-checked) ----------------------------------------


def _symbolic_match(answer: str, truth: str, *, precision: int | None, exact: bool) -> bool:
    got, want = _sympy_text(answer), _sympy_text(truth)
    if unsafe_reason(got) is not None or _prose(got) or _prose(want):
        return False  # prose is compared as text only, and that was done
    if (reason := unsafe_reason(want)) is not None:
        raise ValueError(f"ground truth {truth[:80]!r} is not checkable: {reason}")
    gold, pred = _parse(want), _parse(got)
    if not gold:
        raise ValueError(f"ground truth {truth[:80]!r} is not readable by math-verify")
    if not pred:
        return False
    if not _names_its_value(pred[0], gold[0]):
        return False  # "2x = 3" is not 3 (x is 1.5), nor "x + 1 = 3" (math-verify takes any right-hand side)
    if precision is not None:  # an equation's value is its right-hand side, as math-verify takes it ("x = 1.5")
        g, p = _constant_value(gold[0]), _constant_value(_right_hand_side(pred[0], gold[0]))
        return g is not None and p is not None and round_half_up(g, precision) == round_half_up(p, precision)
    if not _verify(gold, pred):
        return False
    from rewards.crosscheck import values_disagree

    return not values_disagree(gold[0], pred[0], exact=exact)


def _prose(text: str) -> bool:
    """Words that are not math (math-verify would pull "5" out of "not 5, it is 6"): words of three letters
    or more but function names and point names (fullwidth and math-alphabet letters read as the letters they
    are: "ｎｏｔ", "𝐧𝐨𝐭"; "𝑥" and "ℝ" are one letter), and in other scripts the words that negate, bound or
    hedge a value ("不是 5", "至少 5", "не 5"; a unit word, "5 厘米", "5 см", is no prose)."""
    plain = unicodedata.normalize("NFKC", text)
    words = _WORD_RE.findall(_COMMAND_RE.sub(" ", plain))
    return any(word.lower() not in _MATH_NAMES and not _POINT_NAME_RE.match(word) for word in words) or bool(
        _FOREIGN_HEDGE_RE.search(plain))


def _names_its_value(expr: object, truth: object) -> bool:
    """Whether an equation given for a value that is none stands for its right-hand side: its left names the
    value ("x = 3", "f(2) = 3", "m\\angle ABC = 30", "a + b = 7", "\\frac{1}{2}bh = 12") or works it out
    ("9 \\times 2 = 18", "\\binom{5}{2} = 10"), but is not an expression in one unknown other than the unknown
    itself ("2x = 3", "x + 1 = 3", "x^2 = 9", "\\frac{x}{2} = 3" do not give 3: they give x)."""
    from sympy import Eq
    from sympy.core.function import AppliedUndef

    if not isinstance(expr, Eq) or isinstance(truth, Eq):
        return True
    try:
        lhs = expr.lhs.doit()  # (math-verify keeps "5 \\times 3" as an unevaluated product)
        unknowns = lhs.free_symbols
        if not unknowns:  # worked arithmetic, or a function's value or limit
            return bool(lhs.atoms(AppliedUndef)) or _about_equal(lhs, expr.rhs)
        return len(unknowns) > 1 or lhs.is_Symbol
    except Exception:  # (sympy on odd input) no reading: as math-verify takes it
        return True


def _about_equal(a: object, b: object) -> bool:
    """Equal within 1 % (worked arithmetic rounds: "2 \\times 3.14 \\times 5 = 31.4")."""
    try:
        x, y = complex(a.evalf(15)), complex(b.evalf(15))
    except (TypeError, ValueError, AttributeError):
        return True  # not a number on one side (a set, a matrix): as math-verify takes it
    return abs(x - y) <= 0.01 * max(abs(y), 1e-12)


def _right_hand_side(expr: object, truth: object) -> object:
    from sympy import Eq

    return expr.rhs if isinstance(expr, Eq) and not isinstance(truth, Eq) else expr


def _sympy_text(text: str) -> str:
    s = normalize(text)
    if s.startswith("{") and s.endswith("}") and "," in s:  # {1, 2} written without backslashes
        s = "\\{" + s[1:-1] + "\\}"
    return s


def _alarm_seconds() -> int | None:
    """math-verify's signal.alarm works only in the main thread, and would clobber a caller's alarm."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        return None
    return MATH_VERIFY_SECONDS


@functools.lru_cache(maxsize=4096)
def _parse_cached(text: str, seconds: int | None) -> tuple:
    from math_verify import parse

    started = time.monotonic()
    parsed = parse(f"${text}$", parsing_timeout=seconds)
    if not parsed and seconds and time.monotonic() - started >= seconds * 0.95:
        raise TimeoutError(f"math-verify gave up parsing {text[:60]!r} after {seconds} s")
    return tuple(parsed)


def _parse(text: str) -> list:
    return list(_parse_cached(text, _alarm_seconds()))


def _verify(gold: list, pred: list) -> bool:
    from math_verify import verify

    seconds = _alarm_seconds()
    started = time.monotonic()
    ok = verify(gold, pred, timeout_seconds=seconds)
    if not ok and seconds and time.monotonic() - started >= seconds * 0.95:
        raise TimeoutError(f"math-verify gave up comparing after {seconds} s")
    return ok


def _constant_value(expr: object) -> Fraction | None:
    from rewards.crosscheck import real_value

    return real_value(expr)
