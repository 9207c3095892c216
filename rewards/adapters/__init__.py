"""Adapters that let other trainers call openvlt rewards the way they call their own.

- :mod:`rewards.adapters.verl`: verl's ``custom_reward_function`` (``compute_score``)
- :mod:`rewards.adapters.trl`: TRL ``GRPOTrainer`` reward functions (``trl_reward``)
- :mod:`rewards.adapters.easyr1`: EasyR1 batch reward function (``compute_score``)

All of them score through the shared worker pool (:func:`rewards.batch.shared_scorer`), so every
item has the hard time limit whatever thread, actor or event loop the trainer calls from.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rewards.batch import ScoreResult
from rewards.compose import split_terms
from rewards.registry import RewardError

FAILED = "reward_failed"  # component set to 1.0 when an item errored or timed out


def as_text(value: Any) -> str:
    """A ground truth from a trainer's dataset as text (numbers allowed; lists/arrays: first item)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    return value if isinstance(value, str) else str(value)


def flat_scores(result: ScoreResult, names: Sequence[str], *, on_error: str) -> dict[str, float]:
    """A trainer-facing dict: ``score``, the components ``names`` and ``reward_failed`` (0.0 / 1.0).

    A failed item scores 0.0 here because these trainers need a number, but it is flagged in
    ``reward_failed``, never silently zero; with ``on_error="raise"`` it stops training instead.
    Every name in ``names`` is there, at 0.0 when the item failed or its plugin did not return it:
    verl reads every item's dict with the keys of the first, so the keys must not depend on the item.
    """
    if not result.ok and on_error == "raise":
        raise RuntimeError(result.error)
    judged = (result.components or {}) if result.ok else {}
    return {"score": result.score if result.ok else 0.0,
            **{name: float(judged.get(name, 0.0)) for name in names},
            FAILED: 0.0 if result.ok else 1.0}


def composition_parts(reward: str | None) -> tuple[str, ...]:
    """A composition's parts, the components each of its judged items has ("1*math" is math: none)."""
    if reward is None:
        return ()
    try:
        terms = split_terms(reward)
    except RewardError:
        return ()
    return tuple(part for _, part in terms) if len(terms) > 1 or terms[0][0] != 1.0 else ()


def item(response: str, ground_truth: Any, extra_info: Mapping[str, Any] | None, reward: str | None = None,
         label: str | None = None, data_source: str | None = None) -> dict:
    """A :func:`rewards.batch.score_batch` item from a trainer's fields (``label`` names it in a failure;
    ``data_source`` goes to a verl-form plugin)."""
    out = {"response": response, "ground_truth": as_text(ground_truth), "extra_info": dict(extra_info or {})}
    if data_source:
        out["data_source"] = str(data_source)
    if reward:
        out["reward"] = reward
    if label:
        out["id"] = label
    return out
