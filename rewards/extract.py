"""Answer extraction shared by the built-in rewards.

The final answer of a response is the content of its last ``<answer>…</answer>``; without one, the
last ``\\boxed{…}``. A ``\\boxed{}`` inside the answer tag is the answer. Text inside
``<think>…</think>`` (or after an unclosed ``<think>``) is reasoning, never an answer.

Hedging is an answer too, and a wrong one: two answer tags or two boxed values written differently
are flagged here, with every one of them kept, so that a reward can tell ``\\boxed{3} ... \\boxed{3.0}``
(one value twice) from ``\\boxed{3} ... \\boxed{4}``; "A or B" and several values in one tag are judged
by the rewards against the ground truth (see :func:`top_level_parts`).

Everything here is linear-time string scanning (``str.find``), so garbage and very long
responses cost microseconds, and no regular expression can backtrack catastrophically.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE_RE = re.compile(r"\\.|[{}]", re.S)
_OR_RE = re.compile(r"(?i)(?:\bor\b|\\lor\b|\\vee\b)")


@dataclass(frozen=True)
class Extraction:
    """The final answer of a response, or ``None``; ``hedged`` when it gave several written differently,
    which ``answers`` then lists (each once, in the order written)."""

    answer: str | None
    hedged: bool = False
    source: str = "none"  # "answer" | "boxed" | "none"
    answers: tuple[str, ...] = ()


def extract_answer(response: str) -> Extraction:
    """Find the final answer of ``response``.

    >>> extract_answer("<think>maybe <answer>2</answer></think> <answer>3</answer>")
    Extraction(answer='3', hedged=False, source='answer', answers=())
    >>> extract_answer("so the total is \\\\boxed{7}.").answer
    '7'
    >>> extract_answer("<answer>3</answer> <answer>4</answer>").answers
    ('3', '4')
    """
    visible = strip_thinking(response)
    tags = tag_contents(visible, ANSWER_OPEN, ANSWER_CLOSE)
    if tags:
        finals = [(boxed_contents(tag) or [tag])[-1] for tag in tags]
        return _final([*finals[:-1], *boxed_contents(tags[-1])[:-1], finals[-1]], "answer")  # the last tag's boxes too
    return _final(boxed_contents(visible), "boxed")


def strip_thinking(text: str) -> str:
    """``text`` without its ``<think>…</think>`` blocks; an unclosed ``<think>`` hides the rest, and a
    ``</think>`` before any ``<think>`` ends reasoning that began in the prompt (R1-style templates open
    the answer with ``<think>``, so verl and TRL pass the response without it)."""
    close, first_open = text.find(THINK_CLOSE), text.find(THINK_OPEN)
    out, pos = [], (close + len(THINK_CLOSE) if close >= 0 and (first_open < 0 or close < first_open) else 0)
    while True:
        start = text.find(THINK_OPEN, pos)
        if start < 0:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos:start])
        end = text.find(THINK_CLOSE, start)
        if end < 0:
            return "".join(out)
        pos = end + len(THINK_CLOSE)


def tag_contents(text: str, open_tag: str, close_tag: str) -> list[str]:
    """Contents of every complete ``open_tag…close_tag`` pair, in order (unclosed tags are ignored)."""
    found, pos = [], 0
    while True:
        start = text.find(open_tag, pos)
        if start < 0:
            return found
        end = text.find(close_tag, start + len(open_tag))
        if end < 0:
            return found
        inner = text[start + len(open_tag) : end]
        nested = inner.rfind(open_tag)  # "<answer>a <answer>b</answer>": the innermost opening wins
        found.append(inner[nested + len(open_tag) :] if nested >= 0 else inner)
        pos = end + len(close_tag)


def boxed_contents(text: str) -> list[str]:
    """Contents of every balanced ``\\boxed{…}`` (and ``\\fbox{…}``) in ``text`` that no other holds, in order;
    a box wholly boxed again is unwrapped (``\\boxed{\\boxed{3}}`` is ``3``). A box inside another is part of
    its answer, read without its command, and its innermost boxes follow it as answers of their own
    (``\\boxed{-\\boxed{3}}`` gives ``-{3}`` then ``3``: a hedge); the outer boxes do not overlap, nor do the
    innermost, so a deep nest costs linear memory, not a copy per box."""
    if "\\boxed" not in text and "\\fbox" not in text:
        return []
    closing, stack = {}, []
    for match in _BRACE_RE.finditer(text):  # one pass, regex-driven: escapes skipped, braces paired
        if match.group() == "{":
            stack.append(match.start())
        elif match.group() == "}" and stack:
            closing[stack.pop()] = match.start()
    spans = [(m.end(), closing[m.end() - 1]) for m in _BOXED_RE.finditer(text) if m.end() - 1 in closing]
    found, i = [], 0
    while i < len(spans):
        start, end = spans[i]
        while (inner := _whole_box(text, start, end, closing)) is not None:
            start, end = inner
        found.append(_BOXED_RE.sub("{", text[start:end]))
        j = i + 1
        while j < len(spans) and spans[j][0] < spans[i][1]:  # the boxes inside it: the innermost ones are answers too,
            inner_start, inner_end = spans[j]               # so that \boxed{5\boxed{0}} is a hedge, not 5{0}
            if start <= inner_start < inner_end <= end and (inner_start, inner_end) != (start, end) and (
                j + 1 == len(spans) or spans[j + 1][0] > inner_end
            ):
                found.append(text[inner_start:inner_end])
            j += 1
        i = j
    return found


def _whole_box(text: str, start: int, end: int, closing: dict[int, int]) -> tuple[int, int] | None:
    """The span inside a box that is all of ``text[start:end]`` (but spaces), else None."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    match = _BOXED_RE.match(text, start)
    return (match.end(), end - 1) if match and closing.get(match.end() - 1) == end - 1 else None


def top_level_parts(answer: str) -> list[str]:
    """Split an answer at top-level ``,`` ``;`` and the word "or" (not inside brackets, not ``1,000``).

    >>> top_level_parts("3 or 4")
    ['3', '4']
    >>> top_level_parts("(1, 2), 1,000")
    ['(1, 2)', '1,000']
    """
    text = _OR_RE.sub(";", answer)
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        elif ch in ",;" and depth == 0 and not _thousands_comma(text, i):
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _thousands_comma(text: str, i: int) -> bool:
    """``1,000`` style: a digit before, exactly three digits after, then no further digit."""
    return (
        text[i] == ","
        and i > 0
        and text[i - 1].isdigit()
        and text[i + 1 : i + 4].isdigit()
        and len(text[i + 1 : i + 4]) == 3
        and not text[i + 4 : i + 5].isdigit()
    )


def _final(candidates: list[str], source: str) -> Extraction:
    if not candidates or not candidates[-1].strip():
        return Extraction(None)
    distinct = tuple(dict.fromkeys(" ".join(c.split()) for c in candidates if c.strip()))
    hedged = len(distinct) > 1
    return Extraction(candidates[-1].strip(), hedged, source, distinct if hedged else ())
