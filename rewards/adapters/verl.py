"""verl adapter: openvlt rewards as verl's ``custom_reward_function``.

In a verl (0.9.1) config, or as hydra overrides::

    reward.custom_reward_function.path=pkg://rewards.adapters.verl   # or this file's path
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.reward=0.9*math+0.1*format   # optional default
    +reward.custom_reward_function.reward_kwargs.timeout=10                    # optional

verl calls ``compute_score(data_source=, solution_str=, ground_truth=, extra_info=, **reward_kwargs)``
once per response: from the thread pools of its reward-loop workers (Ray actors) and, in the
legacy ``NaiveRewardManager``, from the driver. The reward is, in order: ``extra_info["reward"]``
(what openvlt writes for every row), the ``reward`` kwarg, or ``data_source`` when that names a
plugin. Every call goes through this process's shared worker pool, so the hard per-item limit holds
in verl's threads, where ``signal.alarm`` (math-verify's timeout, verl's ``compute_score_timeout``)
cannot work.

verl needs a float: a failed item scores 0.0, is logged, and is flagged by ``reward_failed = 1.0``
in the returned dict (verl logs every key as a metric); ``on_error="raise"`` stops training instead.
Keys must be the same for every item of a batch: a failed item gets its reward's component names at
0.0 (a composition's parts, or the names a judged item of the same reward had in this process; a
plugin returning its own components that fails before any of its items was judged cannot know them);
with rewards of different component names in one batch, pass ``components=False`` (then only
``score`` and ``reward_failed`` are returned).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rewards.adapters import flat_scores, item
from rewards.batch import shared_scorer
from rewards.registry import RewardError, get_reward


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None = None,
                  *, reward: str | None = None, timeout: float = 10.0, workers: int = 1, memory_mb: int = 2048,
                  components: bool = True, on_error: str = "zero", **_verl_fields: Any) -> dict[str, float]:
    """Score one verl response with the openvlt reward its row names.

    >>> compute_score("toyworld", "<think>1 + 2 = 3</think> <answer>3</answer>", "3",
    ...               {"reward": "math"}, workers=0)
    {'score': 1.0, 'reward_failed': 0.0}
    """
    extra = dict(extra_info or {})
    spec = extra.pop("reward", None) or reward or _reward_of(data_source)
    result = shared_scorer(workers, memory_mb=memory_mb).score(
        [item(solution_str, ground_truth, extra, spec)], spec, timeout=timeout
    )[0]
    return flat_scores(result, components=components, on_error=on_error, reward=spec)


def _reward_of(data_source: str) -> str:
    try:
        get_reward(data_source)
    except RewardError:
        raise RewardError(
            f"no reward for data source {data_source!r}: put the plugin name in extra_info['reward'] "
            "or in custom_reward_function.reward_kwargs.reward"
        ) from None
    return data_source
