"""Bounded checks that text must pass before it reaches math-verify (and through it, sympy).

math-verify runs sympy on what it extracts, and sympy will happily try to build ``5^{5^{5^{5}}}``,
a ten-thousand-deep parenthesis nest or ``100000!``; Python's big-integer arithmetic holds the
GIL, so even math-verify's own ``signal.alarm`` cannot stop it. A text that fails these checks is
not sent to math-verify at all (the ``math`` reward then compares it as a string only, so it is
wrong unless the ground truth is literally the same text). The per-item hard time limit of the
batch scorer stays the last line of defence.
"""
from __future__ import annotations

import math
import re

MAX_CHARS = 400  # a final answer longer than this is not a short math answer
MAX_NESTING = 24  # brackets and braces
MAX_TOWER = 2  # a^{b^{c}} is allowed, a^{b^{c^{d}}} is not
MAX_LITERAL_EXPONENT = 1000
MAX_STACKED_EXPONENT = 10_000  # powers of powers, (a^{b})^{c}: (999^{999})^{999} has 3 million digits, and sin() of
                               # it or a ratio of two took sympy a minute
MAX_FACTORIAL = 500

_NUMBER_RE = re.compile(r"^[+-]?\d+(?:\.\d+)?$")
_LITERAL_RE = re.compile(r"\d+(?:\.\d+)?")
_FACTORIAL_RE = re.compile(r"(\d+)\s*!")
_GROUP_FACTORIAL_RE = re.compile(r"[)}]\s*!")
_FACTORIAL_LIKE_RE = re.compile(r"\\(?:[dt]?binom|choose|Gamma|operatorname\{\s*(?:gamma|binomial|factorial)\s*\})|"
                                r"\b(?:binomial|factorial|gamma)\s*\(", re.I)
_LITERAL_POWER_RE = re.compile(r"(\d+(?:\.\d+)?)\^\{?(\d+(?:\.\d+)?)\}?")
_CLOSERS = {"{": "}", "(": ")", "[": "]"}
_OPENERS = {v: k for k, v in _CLOSERS.items()}
_TOKEN_RE = re.compile(r"[+-]?(?:\d+(?:\.\d+)?|\\[A-Za-z]+|[A-Za-z])")


def unsafe_reason(text: str) -> str | None:
    """Why ``text`` must not be parsed by sympy, or ``None`` when it is safe.

    >>> unsafe_reason("\\\\frac{1}{2^{98}}") is None
    True
    >>> unsafe_reason("5^{5^{5^{5}}}")
    'power tower of height 3'
    """
    if len(text) > MAX_CHARS:
        return f"longer than {MAX_CHARS} characters"
    depth = deepest = 0
    for ch in text:
        if ch in "{([":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "})]":
            depth -= 1
    if deepest > MAX_NESTING:
        return f"nested {deepest} deep"
    s = text.replace("**", "^")
    height = _tower_height(s)
    if height > MAX_TOWER:
        return f"power tower of height {height}"
    for exponent in _exponents(s):
        if (reason := _exponent_reason(exponent)) is not None:
            return reason
    if (stacked := _stacked_exponent(s)) > MAX_STACKED_EXPONENT:  # ((10^{999})^{999})^{999} is 10^(999^3)
        return f"powers of powers with exponents multiplying to {stacked:.3g}"
    for match in _FACTORIAL_RE.finditer(s):
        if int(match.group(1)) > MAX_FACTORIAL:
            return f"factorial of {match.group(1)}"
    if _GROUP_FACTORIAL_RE.search(s) and ("^" in s or s.count("!") > 1):
        return "factorial of a computed value"
    for match in _GROUP_FACTORIAL_RE.finditer(s):  # (99999999)!, {10^3}!: the group's numbers bound its value
        group = s[_match(s, match.start()) : match.start() + 1]
        if math.prod(max(1.0, abs(float(n))) for n in _LITERAL_RE.findall(group)) > MAX_FACTORIAL:
            return f"factorial of {group}"
    if _FACTORIAL_LIKE_RE.search(s) and any(abs(float(n)) > MAX_FACTORIAL for n in _LITERAL_RE.findall(s)):
        return "a binomial or gamma of a large number"  # \binom{10^9}{5*10^8}, \Gamma(10^9)
    return None


def _stacked_exponent(s: str) -> float:
    """The largest product of literal exponents along a chain of bracketed bases, (a^{b})^{c} -> b*c
    (x^{10}+x^{9} stays 10: exponents side by side do not multiply)."""
    best, i = 1.0, 0
    while (i := s.find("^", i)) >= 0:
        start = _skip_spaces(s, i + 1)
        text = s[start:_operand_end(s, start)].strip().strip("{}() ")
        exponent = abs(float(text)) if _NUMBER_RE.match(text) else 1.0
        j = i - 1
        while j >= 0 and s[j] == " ":
            j -= 1
        inner = _stacked_exponent(s[_match(s, j) + 1 : j]) if j >= 0 and s[j] in _OPENERS else 1.0
        best, i = max(best, exponent * inner), i + 1
    return best


def _tower_height(s: str, cap: int = 2 * MAX_TOWER + 2) -> int:
    """How many powers are stacked, counted up to `cap` (a run of 400 carets is no reason to recurse 400 deep)."""
    if cap == 0:
        return 0
    return max((1 + _tower_height(e, cap - 1) for e in _exponents(s)), default=0)


def _exponents(s: str) -> list[str]:
    """The exponent after every ``^`` in ``s``: a bracketed group, or a token with its ``^`` chain."""
    found, i = [], 0
    while (i := s.find("^", i)) >= 0:
        start = end = _skip_spaces(s, i + 1)
        while True:
            end = _operand_end(s, end)
            after = _skip_spaces(s, end)
            if after >= len(s) or s[after] != "^":
                break
            end = _skip_spaces(s, after + 1)  # "9^9^9": the exponent of the first caret is "9^9"
        single_group = s[start:start + 1] in _CLOSERS and _match(s, start) + 1 == end
        found.append(s[start + 1 : end - 1] if single_group else s[start:end])
        i = max(end, i + 1)
    return found


def _skip_spaces(s: str, j: int) -> int:
    while j < len(s) and s[j] == " ":
        j += 1
    return j


def _operand_end(s: str, j: int) -> int:
    if j < len(s) and s[j] in _CLOSERS:
        return _match(s, j) + 1
    match = _TOKEN_RE.match(s, j)
    return match.end() if match else min(j + 1, len(s))


def _match(s: str, at: int) -> int:
    """Where the bracket at `at` is matched: forward from an opener, backward from a closer (or the end)."""
    forward = s[at] in _CLOSERS
    want, depth = (_CLOSERS if forward else _OPENERS)[s[at]], 0
    for k in range(at, len(s)) if forward else range(at, -1, -1):
        if s[k] == s[at]:
            depth += 1
        elif s[k] == want:
            depth -= 1
            if depth == 0:
                return k
    return len(s) - 1 if forward else 0


def _exponent_reason(exponent: str) -> str | None:
    e = exponent.strip().strip("{}() ")
    # a literal, or arithmetic in the exponent: 10^{99999999+1}, 2^{1 99999999} (digits a space apart are one number to
    # math-verify), 10^{999*999*999}; the product of its numbers bounds what it can evaluate to
    literals = [abs(float(n)) for n in _LITERAL_RE.findall(e.replace(" ", ""))]
    if any(n > MAX_LITERAL_EXPONENT for n in literals) or math.prod(max(1.0, n) for n in literals) > MAX_LITERAL_EXPONENT ** 2:
        return f"exponent {exponent.strip()} too large"
    inner = e.replace(" ", "").replace("{", "").replace("}", "").split("^")
    if len(inner) == 2 and all(_NUMBER_RE.match(p) for p in inner):
        base, power = float(inner[0]), float(inner[1])
        if base > 1 and power * math.log10(base) > math.log10(MAX_LITERAL_EXPONENT):
            return f"exponent {exponent.strip()} too large"
    # powers inside the exponent, multiplied or added (10^{10^{3}\cdot 10^{3}}): the product of their values bounds it
    powers = [(float(b), float(p)) for b, p in _LITERAL_POWER_RE.findall(e.replace(" ", ""))]
    if len(powers) > 1 and sum(p * math.log10(max(b, 2.0)) for b, p in powers) > math.log10(MAX_LITERAL_EXPONENT):
        return f"exponent {exponent.strip()} too large"
    return None
