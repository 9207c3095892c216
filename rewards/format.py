"""The ``format`` reward: ``<think>…</think>`` then a non-empty ``<answer>…</answer>``, nothing else.

Stricter than a ``re.fullmatch(r"<think>.*</think>.*<answer>.*</answer>")`` on purpose, because a
format reward that tolerates junk teaches the policy to emit junk:

1. exactly one ``<think>`` block, first (leading whitespace allowed), with some reasoning in it; its
   ``<think>`` may be missing when the response is the rest of an answer the prompt opened with it
   (R1-style chat templates: verl and TRL pass ``reasoning</think> <answer>…</answer>``);
2. exactly one ``<answer>`` block, after it, separated only by whitespace, not empty;
3. nothing after ``</answer>`` but whitespace; no stray or nested tags anywhere.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rewards.extract import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN
from rewards.registry import register

_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)


@register("format")
def format_reward(response: str, ground_truth: str, *, extra_info: Mapping[str, Any]) -> float:
    """1.0 for ``<think>reasoning</think> <answer>answer</answer>`` and nothing else, else 0.0.

    >>> format_reward("<think>1 + 2 = 3</think> <answer>3</answer>", "3", extra_info={})
    1.0
    >>> format_reward("<think>1 + 2 = 3</think> <answer>3</answer> and 4", "3", extra_info={})
    0.0
    """
    return 1.0 if well_formed(response) else 0.0


def well_formed(response: str) -> bool:
    """Whether ``response`` is exactly one think block followed by one non-empty answer block."""
    text = response.strip()
    if THINK_OPEN not in text:  # the prompt opened the think block (R1-style templates)
        text = THINK_OPEN + text
    if any(text.count(tag) != 1 for tag in _TAGS):
        return False
    positions = [text.find(tag) for tag in _TAGS]
    if positions != sorted(positions) or positions[0] != 0 or not text.endswith(ANSWER_CLOSE):
        return False
    thinking = text[len(THINK_OPEN) : positions[1]]
    between = text[positions[1] + len(THINK_CLOSE) : positions[2]]
    answer = text[positions[2] + len(ANSWER_OPEN) : positions[3]]
    return bool(thinking.strip()) and not between.strip() and bool(answer.strip())
