"""Multiple-choice answers: letters and option texts mapped to option indices.

With ``choices = ["2", "4", "3", "5"]`` the answers ``C``, ``(C)``, ``c``, ``C. 3``, ``C) 3``, ``C 3``,
``The answer is C``, ``Option C`` and ``3`` all mean option 2. An answer that names two different
options (``A or C``, ``A, C``, ``C. 5`` where C is not 5) names both, and so is wrong; so is one in parts
of which one names no option (``Either A or C``, ``possibly A, C``: a hedge, not an answer). An option
whose text holds a comma (``red, blue``) is named by that text, with or without its letter.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from rewards.extract import top_level_parts
from rewards.numbers import normalize, normalize_text

_LETTER = r"\(?\s*([A-Za-z])\s*\)?"
_BARE_RE = re.compile(rf"^{_LETTER}\s*[.:)]?$")
_LETTER_TEXT_RE = re.compile(r"^\(?\s*([A-Za-z])\s*(?:\)|[.:])\s*(.+)$")
_LETTER_SPACE_TEXT_RE = re.compile(r"^([A-Z])\s+(.+)$")  # "C 3": a letter only where the rest is an option's text
_PHRASE_RE = re.compile(
    rf"^(?:the\s+)?(?:correct\s+|final\s+)?(?:answer|option|choice)(?:\s+is)?\s*:?\s*{_LETTER}\s*(?:[.:)]\s*(.*))?$",
    re.I,
)


def option_indices(answer: str, choices: Sequence[str], same: Callable[[str, str], bool]) -> set[int]:
    """Indices of the options ``answer`` names (empty when it names none).

    ``same(a, b)`` decides whether an answer text equals an option text (the ``math`` reward passes
    its own comparison, so ``"3.0"`` names option ``"3"``).

    >>> sorted(option_indices("(C)", ["2", "4", "3", "5"], lambda a, b: a == b))
    [2]
    >>> sorted(option_indices("A or C", ["2", "4", "3", "5"], lambda a, b: a == b))
    [0, 2]
    >>> sorted(option_indices("Either A or C", ["2", "4", "3", "5"], lambda a, b: a == b))  # a part names none
    [-1, 2]
    """
    text = normalize(answer)
    whole = _one_option(text, choices)
    if whole is not None:  # before splitting at commas: "red, blue" may be one option's text
        return {whole}
    parts = top_level_parts(answer)
    if len(parts) > 1:  # each part must name an option: "Either A or C" is no answer, not C
        named = [option_indices(p, choices, same) for p in parts]
        return set().union(*named) | ({NO_OPTION} if not all(named) else set())
    named = _named_letter(text, len(choices))
    if named is not None:
        index, rest = named
        if rest:
            by_text = _by_text(rest, choices, same)
            return {index} | by_text if by_text else {index}
        return {index}
    spaced = _spaced_letter(text, len(choices))
    if spaced and (by_text := _by_text(spaced[1], choices, same)):  # "C 3": a letter only before an option's text
        return {spaced[0]} | by_text
    return _by_text(text, choices, same)


NO_OPTION = -1  # among an answer's option indices: a part of it names no option


def letter_of(text: str, n_options: int = 26) -> int | None:
    """The option index a letter answer names (``"(b)"`` and ``"B. 5"`` -> 1), else ``None``."""
    named = _named_letter(normalize(text), n_options)
    return named[0] if named is not None else None


def _named_letter(text: str, n_options: int) -> tuple[int, str] | None:
    for regex in (_BARE_RE, _PHRASE_RE, _LETTER_TEXT_RE):
        match = regex.match(text)
        if match:
            letter = match.group(1)
            index = ord(letter.upper()) - ord("A")
            rest = match.group(2) if regex.groups > 1 else None
            # a lone lower-case letter must be a bare letter ("b"), not a word's first letter
            if 0 <= index < n_options and (letter.isupper() or regex is not _LETTER_TEXT_RE):
                return index, (rest or "").strip()
    return None


def _spaced_letter(text: str, n_options: int) -> tuple[int, str] | None:
    """("C 3" ->) the option index of an upper-case letter followed by a space, and the text after it."""
    match = _LETTER_SPACE_TEXT_RE.match(text)
    index = ord(match.group(1)) - ord("A") if match else n_options
    return (index, match.group(2)) if index < n_options else None


def _one_option(text: str, choices: Sequence[str]) -> int | None:
    """The option an answer names as a whole: exactly one option's text, alone or after its own letter."""
    named = _named_letter(text, len(choices)) or _spaced_letter(text, len(choices))
    for index, rest in ((None, text), *([named] if named and named[1] else [])):
        matching = [i for i, option in enumerate(choices) if normalize_text(str(option)) == normalize_text(rest)]
        if len(matching) == 1 and index in (None, matching[0]):
            return matching[0]
    return None


def _by_text(text: str, choices: Sequence[str], same: Callable[[str, str], bool]) -> set[int]:
    wanted = normalize_text(text)
    exact = {i for i, option in enumerate(choices) if normalize_text(str(option)) == wanted}
    return exact or {i for i, option in enumerate(choices) if same(text, str(option))}
