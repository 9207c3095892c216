"""verl adapter: openvlt rewards as verl's ``custom_reward_function``.

In a verl (0.9.1) config, or as hydra overrides::

    reward.custom_reward_function.path=pkg://rewards.adapters.verl   # or this file's path
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.reward=0.9*math+0.1*format   # optional default
    +reward.custom_reward_function.reward_kwargs.timeout=10                    # optional

verl calls ``compute_score(data_source=, solution_str=, ground_truth=, extra_info=, **reward_kwargs)``
once per response: from the thread pools of its reward-loop workers (Ray actors, several processes)
and, in the legacy ``NaiveRewardManager``, from the driver. verl passes a row's ``extra_info`` but
no other column, so the reward is, in order: ``extra_info["reward"]`` (openvlt's problem records
keep it in a top-level ``reward`` column: copy it into ``extra_info`` when you write verl's
parquet), the ``reward`` kwarg, or ``data_source`` when that names a plugin. Every call goes through
this process's shared worker pool, so the hard per-item limit holds in verl's threads, where
``signal.alarm`` (math-verify's timeout, verl's ``compute_score_timeout``) cannot work.

verl needs a float: a failed item scores 0.0 and is flagged by ``reward_failed = 1.0``; it is logged
(the first few failures in each process, then a running count), and ``on_error="raise"`` stops
training instead. verl reads every item's dict with the keys of the first, across its reward
workers, so the keys never depend on the item: ``score``, ``reward_failed`` and, by default, a
composition's parts (``math``, ``format``). A plugin's own components are returned when you name
them, ``components=[accuracy,format]`` (each at 0.0 where an item lacks it); ``components=false``
returns ``score`` and ``reward_failed`` only (for a batch mixing compositions).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from rewards.adapters import FAILED, composition_parts, flat_scores, item
from rewards.batch import ScoreResult, shared_scorer
from rewards.registry import RewardError, get_reward

logger = logging.getLogger(__name__)

LOGGED_FAILURES = 5  # failures logged in full in each process; after them, every COUNT_EVERY-th as a count
COUNT_EVERY = 100


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None = None,
                  *, reward: str | None = None, timeout: float = 10.0, workers: int = 1, memory_mb: int = 2048,
                  components: bool | str | Sequence[str] = True, on_error: str = "zero",
                  **_verl_fields: Any) -> dict[str, float]:
    """Score one verl response with the openvlt reward its row names.

    >>> compute_score("toyworld", "<think>1 + 2 = 3</think> <answer>3</answer>", "3",
    ...               {"reward": "math"}, workers=0)
    {'score': 1.0, 'reward_failed': 0.0}
    """
    extra = dict(extra_info or {})
    own = extra.pop("reward", None)
    spec = own or reward or _reward_of(data_source)
    if reward and not own:
        _note_source_judged_by_kwarg(data_source, reward)
    result = shared_scorer(workers, memory_mb=memory_mb).score(
        [item(solution_str, ground_truth, extra, spec, label=_row_label(data_source, extra), data_source=data_source)],
        spec,
        timeout=timeout, log_failures=False,
    )[0]
    _count(result)
    names = _component_names(components, spec)
    if result.ok:
        _note_missing(spec, set(names) - set(result.components or ()))
    return flat_scores(result, names, on_error=on_error)


def _reward_of(data_source: str) -> str:
    try:
        get_reward(data_source)
    except RewardError:
        raise RewardError(
            f"no reward for data source {data_source!r}: put the plugin name in extra_info['reward'] "
            "or in custom_reward_function.reward_kwargs.reward"
        ) from None
    return data_source


def _component_names(components: bool | str | Sequence[str], spec: str) -> tuple[str, ...]:
    """The components every item returns: none, a composition's parts, or the names the user gave."""
    if isinstance(components, bool):
        return composition_parts(spec) if components else ()
    names = tuple(name.strip() for name in (components.split(",") if isinstance(components, str) else components))
    clash = {"score", FAILED} & set(names)
    if clash or not all(names):
        raise RewardError(f"components={list(names)}: name the plugin's components (not 'score' or "
                          f"'{FAILED}', which are always returned, and no empty name)")
    return names


def _row_label(data_source: str, extra: Mapping[str, Any]) -> str:
    """How a failure names its row: the data source and the row's id (openvlt) or index (verl's examples)."""
    for key in ("id", "index"):
        if extra.get(key) is not None:
            return f"{data_source} {key} {extra[key]}"
    return str(data_source)


_lock = threading.Lock()
_scored, _failed = [0], [0]  # in this process
_noted: set[tuple[str, str]] = set()  # (data source or component, reward) already warned about


def _count(result: ScoreResult) -> None:
    """Log the first failures in full, then a running count: training metrics do not show them."""
    with _lock:
        _scored[0] += 1
        if result.ok:
            return
        _failed[0] += 1
        failed, scored = _failed[0], _scored[0]
    if failed <= LOGGED_FAILURES:
        logger.warning("scored 0.0 (%s=1): %s", FAILED, result.error)
    elif failed % COUNT_EVERY == 0:
        logger.warning("%d of %d items failed in this process so far, each scored 0.0 (%s=1); the latest: %s",
                       failed, scored, FAILED, result.error)


def _note_source_judged_by_kwarg(data_source: str, reward: str) -> None:
    """Say once when a data source that names a plugin of its own is judged by reward_kwargs.reward."""
    if data_source == reward or not _first_time(data_source, reward):
        return
    try:
        get_reward(data_source)
    except RewardError:
        return
    logger.warning("rows of data source %r are judged with reward_kwargs.reward %r, not with the plugin %r "
                   "(a row's extra_info['reward'] chooses per row)", data_source, reward, data_source)


def _note_missing(reward: str, names: set[str]) -> None:
    """Say once per name when a judged item lacks a component the user named (a typo reads 0.0 forever)."""
    for name in sorted(names):
        if _first_time(name, reward):
            logger.warning("reward %r returned no component %r (components= names it): it reads 0.0 where it is "
                           "missing", reward, name)


def _first_time(name: str, reward: str) -> bool:
    with _lock:
        if (name, reward) in _noted:
            return False
        _noted.add((name, reward))
        return True
