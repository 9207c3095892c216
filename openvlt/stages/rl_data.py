"""RL data selection: estimate each RL problem's pass rate under the current model, keep a band.

Like OpenVLThinker's medium/hard sets and DAPO's dynamic sampling: problems the model always solves
or never solves give GRPO no signal (every rollout in the group gets the same reward, so every
advantage is zero). Keep min_pass < pass rate < max_pass. Problems whose prompt is too long for GRPO
are left out first, so that no sample, and no place in `max_problems`, goes to a problem GRPO would drop.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from openvlt.backends import GRPOConfig
from openvlt.engines import Engine, Sampling
from openvlt.records import write_records
from openvlt.recipe import RewardSettings
from openvlt.stages.common import (
    count_failures, generated_chunks, grpo_prompt_limit, mean_or_none, problems_within_length, score_responses, student_request,
)


def select_rl_problems(
    problems: Sequence[dict[str, Any]],
    student: Engine,
    out_path: str | Path,
    *,
    prompt: str,
    sampling: Sampling,
    scratch: Path,
    min_pass: float = 0.0,
    max_pass: float = 1.0,
    max_problems: int | None = None,
    judge: RewardSettings = RewardSettings(),
    chunk_size: int = 256,
    system: str | None = None,
    model: str | Path | None = None,
    grpo: GRPOConfig | None = None,
    pixel_bounds: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Write the kept problems plus a `pass_rate` column to `out_path`; return counts. With the
    student's `model` folder and the `grpo` settings, problems longer than GRPO's prompt limit are left
    out before sampling and counted as `too_long`. Problems are sampled a chunk at a time, in order,
    until `max_problems` are kept (`sampled` counts those sampled): the same problems as sampling all."""
    asked, too_long = len(problems), 0
    if model is not None and grpo is not None:
        problems, too_long = problems_within_length(problems, model, pixel_bounds, prompt=prompt, system=system,
                                                    **grpo_prompt_limit(grpo))
    requests = [student_request(p, prompt, system) for p in problems]
    kept, rates, verdicts = [], [], []
    chunks = generated_chunks(student, requests, sampling, scratch, chunk_size, "rl_data", "rl pass rates", [p["id"] for p in problems])
    for samples in chunks:  # judged chunk by chunk: sampling stops once max_problems are kept
        chunk = problems[len(rates) : len(rates) + len(samples)]
        chunk_verdicts = score_responses(chunk, samples, judge)
        # the pass rate among the samples the reward could judge: an error or a timeout is no evidence of a
        # wrong answer; a problem with no judged sample has no rate and is left out (counted as `unjudged`)
        chunk_rates = [mean_or_none([judge.is_correct(r) for r in rs if r.ok]) for rs in chunk_verdicts]
        kept += [{**p, "pass_rate": rate} for p, rate in zip(chunk, chunk_rates) if rate is not None and min_pass < rate < max_pass]
        verdicts += chunk_verdicts
        rates += chunk_rates
        if max_problems is not None and len(kept) >= max_problems:
            chunks.close()
            break
    kept = kept[:max_problems]
    judged = [r for r in rates if r is not None]
    if not kept:
        histogram = {f"{v:.2f}": judged.count(v) for v in sorted(set(judged))}
        raise ValueError(f"rl_data kept none of {len(problems)} problems with {min_pass} < pass rate < {max_pass} "
                         f"(pass rates: {histogram}, unjudged: {len(rates) - len(judged)}); widen "
                         "rl_data.min_pass/max_pass or set rl_data.enabled=false")
    write_records(kept, out_path)
    return {"in": asked, "too_long": too_long, "sampled": len(rates), "out": len(kept),
            "mean_pass_rate": sum(judged) / max(len(judged), 1), "all_pass": sum(r >= 1 for r in judged),
            "none_pass": sum(r <= 0 for r in judged), "unjudged": len(rates) - len(judged), **count_failures(verdicts)}
