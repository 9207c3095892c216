"""GRPO: improve this iteration's SFT model with group-relative policy optimisation.

n rollouts per prompt are judged by the training reward (`training_reward`: the problem's own
plugin, or `grpo.reward` built around it, optionally mixed with the `format` reward), advantages
are normalised within each prompt's group, and the policy takes the clipped policy-gradient step
with a KL loss to the SFT model; the math is verl's core_algos.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from openvlt.backends import OWN_REWARD, GRPOConfig, get_backend
from openvlt.recipe import RewardSettings
from openvlt.stages.common import (
    grpo_prompt_limit, mean_or_none, problems_within_length, saved_before, student_request, training_curve,
)


def train_grpo(
    problems: Sequence[dict[str, Any]],
    init_model: str | Path,
    out_dir: str | Path,
    *,
    config: GRPOConfig,
    backend: str = "local",
    options: dict[str, Any] | None = None,
    pixel_bounds: dict[str, int] | None = None,
    prompt: str = "{question}",
    system: str | None = None,
    judge: RewardSettings = RewardSettings(),
    seed: int = 0,
) -> dict[str, Any]:
    """Write a Hugging Face model folder to `out_dir`; return counts (reward at start and end, ...).
    Problems whose prompt is longer than `grpo.max_prompt_length` (or the student's context less
    `grpo.max_tokens`) are left out and counted, as verl's `filter_overlong_prompts` does (rl_data has
    left them out already when it runs)."""
    from rewards.batch import shared_scorer

    fitting, too_long = problems_within_length(problems, init_model, pixel_bounds, prompt=prompt, system=system,
                                               **grpo_prompt_limit(config))
    rl_problems = []
    for p in fitting:
        request = student_request(p, prompt, system)
        own = judge.reward_of(p)
        rl_problems.append({"prompt": request.prompt, "images": request.images, "system": system, "answer": p["answer"],
                            "extra_info": p["extra_info"], "reward": training_reward(own, config), "own_reward": own,
                            "data_source": p["data_source"], "id": p["id"]})
    scorer = shared_scorer(judge.workers, memory_mb=judge.memory_mb)  # the pool the other stages of this process score with
    trainer = get_backend(backend)
    if not saved_before(trainer, out_dir):
        trainer.grpo(
            rl_problems, init_model, out_dir, config,
            score=lambda items: list(scorer.score(items, timeout=judge.timeout)),
            correct=lambda problem, result: answer_is_right(result, problem["own_reward"], judge), seed=seed,
            options=options, pixel_bounds=pixel_bounds,
        )
    curve = training_curve(out_dir)
    tenth = max(1, len(curve) // 10)
    return {
        "in": len(problems), "too_long": too_long, "steps": len(curve),
        "reward_start": _mean(curve[:tenth], "reward"), "reward_end": _mean(curve[-tenth:], "reward"),
        "kl_end": _mean(curve[-tenth:], "kl"), "reward_errors": sum(r["reward_errors"] for r in curve),
    }


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    """Mean of `key` over the steps that have one (a step that updated nothing has no `kl`)."""
    return mean_or_none([r[key] for r in rows if r.get(key) is not None])


def answer_is_right(result: Any, own: str, judge: RewardSettings) -> bool | None:
    """Whether a rollout judged by its training reward is right by the problem's own reward `own`, as
    evaluation counts it: an error or timeout is wrong, else its score by `own` is at least `reward.correct_at`.
    Under a shaped reward that score is rebuilt from the composition's parts, each logged unweighted under
    its canonical spec; None when the training reward leaves a part of `own` out."""
    from rewards.compose import split_terms, weighted_sum
    from rewards.registry import canonical_spec

    if not result.ok or result.reward == own:
        return judge.is_correct(result)
    parts = result.components or {}
    terms = [(weight, parts.get(canonical_spec(part))) for weight, part in split_terms(own)]
    if any(value is None for _, value in terms):
        return None
    return weighted_sum(terms) >= judge.correct_at  # summed as the composition sums it


def training_reward(own: str, config: GRPOConfig) -> str:
    """The reward GRPO's rollouts are scored with, for a problem judged by `own`.

    `grpo.reward` shapes training only (a length penalty, a bonus): evaluation, selection and rl_data's
    pass rates keep judging correctness with `own`. In it `{reward}` stands for `own`, so one recipe
    serves rows with different plugins. `grpo.format_weight` then mixes in `format`:
    `(1 - w) * reward + w * format`.
    """
    from rewards.compose import join_terms, split_terms

    fw = config.format_weight
    if config.reward is None and not fw:
        return own
    terms: dict[str, float] = {}
    for w, part in split_terms(config.reward or OWN_REWARD):
        for w_own, own_part in split_terms(own) if part == OWN_REWARD else [(1.0, part)]:
            terms[own_part] = terms.get(own_part, 0.0) + (1 - fw) * w * w_own
    if fw:
        terms["format"] = terms.get("format", 0.0) + fw
    return join_terms([(float(f"{w:.15g}"), part) for part, w in terms.items()])  # 0.8 * 0.9 -> 0.72, not 0.7200000000000001
