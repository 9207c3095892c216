"""Adapters that let other trainers call openvlt rewards the way they call their own.

- :mod:`rewards.adapters.verl`: verl's ``custom_reward_function`` (``compute_score``)
- :mod:`rewards.adapters.trl`: TRL ``GRPOTrainer`` reward functions (``trl_reward``)
- :mod:`rewards.adapters.easyr1`: EasyR1 batch reward function (``compute_score``)

All of them score through the shared worker pool (:func:`rewards.batch.shared_scorer`), so every
item has the hard time limit whatever thread, actor or event loop the trainer calls from.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from rewards.batch import ScoreResult
from rewards.registry import RewardError

logger = logging.getLogger(__name__)

FAILED = "reward_failed"  # component set to 1.0 when an item errored or timed out


def as_text(value: Any) -> str:
    """A ground truth from a trainer's dataset as text (numbers allowed; lists/arrays: first item)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    return value if isinstance(value, str) else str(value)


def flat_scores(result: ScoreResult, *, components: bool, on_error: str, reward: str | None = None) -> dict[str, float]:
    """A trainer-facing dict: ``score``, the plugin's components and ``reward_failed`` (0.0 / 1.0).

    A failed item scores 0.0 here because these trainers need a number, but it is logged and
    flagged in ``reward_failed`` (a metric the trainer logs), never silently zero; with
    ``on_error="raise"`` it stops training instead. It has the same keys as a judged item of the
    same ``reward`` (its components at 0.0): verl reads every item's dict with the keys of the
    first, so one timed-out rollout must not drop a key.
    """
    if not result.ok:
        if on_error == "raise":
            raise RuntimeError(result.error)
        logger.warning("scored 0.0 for a failed item: %s", result.error)
    out = {"score": result.score if result.ok else 0.0}
    if components and result.ok:
        remember_components(reward, result)
        out.update(result.components or {})
    elif components:
        out.update(dict.fromkeys(_component_names(reward), 0.0))
    out[FAILED] = 0.0 if result.ok else 1.0
    return out


_components_of: dict[str, tuple[str, ...]] = {}  # reward spec -> the component names its judged items had


def remember_components(reward: str | None, result: ScoreResult) -> None:
    """Note the component names a judged item of ``reward`` has (see :func:`flat_scores`)."""
    if reward is not None and result.ok:
        _components_of[reward] = tuple(result.components or ())


def _component_names(reward: str | None) -> tuple[str, ...]:
    """What a judged item of ``reward`` has: as seen, or for a composition not yet seen, its parts."""
    if reward is None:
        return ()
    if reward in _components_of:
        return _components_of[reward]
    from rewards.compose import split_terms

    try:
        terms = split_terms(reward)
    except RewardError:
        return ()
    return tuple(part for _, part in terms) if len(terms) > 1 or terms[0][0] != 1.0 else ()  # "1*math" is math


def item(response: str, ground_truth: Any, extra_info: Mapping[str, Any] | None, reward: str | None = None) -> dict:
    """A :func:`rewards.batch.score_batch` item from a trainer's fields."""
    out = {"response": response, "ground_truth": as_text(ground_truth), "extra_info": dict(extra_info or {})}
    if reward:
        out["reward"] = reward
    return out
