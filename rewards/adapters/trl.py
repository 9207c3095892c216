"""TRL adapter: openvlt rewards as ``GRPOTrainer`` reward functions.

    from rewards.adapters.trl import trl_reward
    trainer = GRPOTrainer(..., reward_funcs=[trl_reward("math"), trl_reward("format")])

TRL calls ``reward_func(prompts=..., completions=..., completion_ids=..., **columns)`` where
``columns`` holds every other dataset column as a list (plus ``trainer_state``). Completions are
strings, or conversations (a list of messages whose last one holds the answer; its ``content`` may
be a string or a list of ``{"type": "text", "text": ...}`` parts). The ground truth comes from the
``answer`` column (``answer_column`` to change it), ``extra_info`` and a per-row ``reward`` column
are used when present.

A failed item is ``None``: TRL treats that as "no reward from this function" (NaN, left out of
the sum) and it is logged; it is never scored 0.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from rewards.adapters import item
from rewards.batch import DEFAULT_TIMEOUT, shared_scorer
from rewards.registry import get_reward

logger = logging.getLogger(__name__)


def trl_reward(reward: str = "math", *, answer_column: str = "answer", workers: int | None = None,
               timeout: float = DEFAULT_TIMEOUT) -> Callable[..., list[float | None]]:
    """A TRL reward function scoring completions with the openvlt reward ``reward``.

    >>> fn = trl_reward("math", workers=0)
    >>> fn(prompts=["1+2?"], completions=["<answer>3</answer>"], completion_ids=[[1]], answer=["3"])
    [1.0]
    """
    get_reward(reward)  # fail at construction, not at the first training step

    def reward_func(prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Any = None,
                    **columns: Any) -> list[float | None]:
        if answer_column not in columns:
            raise KeyError(f"reward {reward!r} needs a {answer_column!r} column; dataset columns: {sorted(columns)}")
        rewards = columns.get("reward") or [None] * len(completions)
        extras = columns.get("extra_info") or [None] * len(completions)
        sources = columns.get("data_source") or [None] * len(completions)  # (for a verl-form reward)
        items = [item(_text(c), truth, extra, row_reward, data_source=source)
                 for c, truth, extra, row_reward, source in zip(completions, columns[answer_column], extras, rewards, sources)]
        results = shared_scorer(workers).score(items, reward, timeout=timeout)
        return [r.score if r.ok else None for r in results]

    reward_func.__name__ = reward_func.__qualname__ = f"openvlt_{reward}".replace("*", "x").replace("+", "_")
    return reward_func


def _text(completion: Any) -> str:
    """The text of a completion: a string, or the last message of a conversation."""
    if isinstance(completion, str):
        return completion
    content = completion[-1]["content"] if completion else ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))
