"""Verifiable reward plugins for openvlt and the machinery to run them safely.

One plugin judges everything in openvlt: distilled traces, regenerated traces, evaluation sets and
GRPO rollouts (through :mod:`rewards.adapters.verl`). A plugin is a plain function
``score(response, ground_truth, *, extra_info) -> float | dict``; see ``rewards/README.md``.

>>> from rewards import get_reward
>>> get_reward("math")("<think>1 + 2 = 3</think> <answer>3</answer>", "3", extra_info={})
1.0
"""
from rewards.batch import (
    BatchResults,
    BatchSummary,
    RewardScorer,
    ScoreResult,
    iter_scores,
    score_batch,
    shared_scorer,
)
from rewards.compose import compose
from rewards.extract import Extraction, extract_answer
from rewards.registry import RewardError, call_reward, check_reward, get_reward, list_rewards, register

__all__ = [
    "BatchResults",
    "BatchSummary",
    "Extraction",
    "RewardError",
    "RewardScorer",
    "ScoreResult",
    "call_reward",
    "check_reward",
    "compose",
    "extract_answer",
    "get_reward",
    "iter_scores",
    "list_rewards",
    "register",
    "score_batch",
    "shared_scorer",
]
