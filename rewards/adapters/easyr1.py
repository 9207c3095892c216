"""EasyR1 adapter: openvlt rewards as an EasyR1 batch reward function.

In an EasyR1 config::

    worker.reward.reward_function=/path/to/rewards/adapters/easyr1.py:compute_score
    worker.reward.reward_function_kwargs={"reward": "0.9*math+0.1*format"}

EasyR1's ``BatchFunctionRewardManager`` calls ``compute_score(reward_inputs, **kwargs)`` with one
dict per response (``response``, ``response_length``, ``ground_truth``; ``extra_info`` and
``reward`` are used when a fork adds them) and logs every key of the returned dicts; ``overall``
is the reward. A failed item scores 0.0 with ``reward_failed = 1.0`` and is logged, with its
reward's components at 0.0 (those a judged item of the same reward had, in this batch or before).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rewards.adapters import composition_parts, flat_scores, item
from rewards.batch import DEFAULT_TIMEOUT, ScoreResult, shared_scorer

REWARD_NAME = "openvlt"
REWARD_TYPE = "batch"


def compute_score(reward_inputs: Sequence[Mapping[str, Any]], reward: str = "math", *,
                  timeout: float = DEFAULT_TIMEOUT, workers: int | None = None,
                  on_error: str = "zero") -> list[dict[str, float]]:
    """Score EasyR1 reward inputs; one ``{"overall": ..., components..., "reward_failed": ...}`` each.

    >>> compute_score([{"response": "<answer>3</answer>", "response_length": 4, "ground_truth": "3"}],
    ...               workers=0)
    [{'overall': 1.0, 'reward_failed': 0.0}]
    """
    items = [item(x["response"], x["ground_truth"], x.get("extra_info"), x.get("reward"), data_source=x.get("data_source"))
             for x in reward_inputs]
    results = shared_scorer(workers).score(items, reward, timeout=timeout)
    specs = [x.get("reward") or reward for x in reward_inputs]
    for spec, result in zip(specs, results):  # a failed item early in the batch gets the keys of a later judged one
        if result.ok:
            _components_of[spec] = tuple(result.components or ())
    out = []
    for spec, result in zip(specs, results):
        scores = flat_scores(result, _names(spec, result), on_error=on_error)
        out.append({"overall": scores.pop("score"), **scores})
    return out


_components_of: dict[str, tuple[str, ...]] = {}  # reward spec -> the component names its judged items had


def _names(spec: str, result: ScoreResult) -> tuple[str, ...]:
    """A judged item's own components; a failed one's: as a judged item of its reward had, or its parts."""
    if result.ok:
        return tuple(result.components or ())
    return _components_of.get(spec, composition_parts(spec))
