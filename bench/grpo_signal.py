"""Does GRPO's policy gradient point anywhere at this model? A check to run before paying for GRPO.

    .venv/bin/python bench/grpo_signal.py [--run runs/tiny-cpu] [--iter 1] [--rollouts 16] [--seed 0] [--control]

Samples `--rollouts` answers to each of an iteration's RL problems (RUN/iter_K/rl.parquet) from its SFT
model, judges them with the reward GRPO trains on (each problem's own plugin, or the recipe's
`grpo.reward` around it), and splits every problem's answers into two
halves. The prompt, sampling, step size, reward settings and frozen vision tower are the run's own (its
recipe.yaml, as iteration K ran GRPO). Each half of each problem gives one GRPO gradient: verl's group
advantages and clipped policy loss at the first update (ratio 1, no KL), the gradient GRPO's first step
follows. The two halves estimate the same expected gradient independently, so:

- cos(A, B), the cosine between the two halves' mean gradients, is near 1 when the expected gradient
  stands out of the sampling noise, and near 0 when it does not;
- signal / noise = <mean A, mean B> (an unbiased estimate of |E g|^2) over the variance of one
  problem's gradient; times the prompts in a GRPO step it is the signal-to-noise ratio of one step.

`--control` swaps the reward for "shorter than the median answer to the same problem", whose gradient
surely has a direction (the end-of-answer token), to show what a detectable signal looks like here.
"""
from __future__ import annotations

import argparse
import logging
import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from openvlt.backends import GRPOConfig
from openvlt.backends.local import _response_logprobs, _rows, freeze_vision_tower, grpo_actor_config, grpo_advantages, grpo_loss
from openvlt.engines import Request, Sampling
from openvlt.engines.hf import HFEngine
from openvlt.models.batching import encode_rollouts
from openvlt.recipe import RewardSettings, load_recipe
from openvlt.stages.common import load_problems, score_responses, student_request
from openvlt.stages.grpo import training_reward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/tiny-cpu", help="a run directory of `openvlt run`")
    parser.add_argument("--iter", type=int, default=1, help="whose SFT model and RL problems")
    parser.add_argument("--rollouts", type=int, default=16, help="answers per problem, split into two halves")
    parser.add_argument("--control", action="store_true", help="reward: shorter than the problem's median answer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.rollouts < 4 or args.rollouts % 2:
        parser.error("--rollouts must be even and at least 4 (two halves of at least 2)")
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(args.seed)
    recipe = load_recipe(Path(args.run) / "recipe.yaml", check_paths=False).for_iteration(args.iter)
    config = dataclasses.replace(recipe.grpo, rollouts=args.rollouts // 2, kl_coef=0.0)  # one half-group, no KL
    run = Path(args.run) / f"iter_{args.iter}"
    problems = load_problems(run / "rl.parquet")
    engine = HFEngine(str(run / "sft" / "model"), batch_size=128)
    requests = [student_request(p, recipe.roles.student.prompt, recipe.roles.student.system) for p in problems]

    started = time.monotonic()
    sampling = Sampling(n=args.rollouts, temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens,
                        seed=args.seed)
    texts, token_ids = engine.generate_ids(requests, sampling)
    rewards = np.array(_control_rewards(token_ids) if args.control else _rewards(problems, texts, recipe.reward, recipe.grpo))
    mixed = int((rewards.min(1) < rewards.max(1)).sum())
    print(f"{run / 'sft' / 'model'}: {len(problems)} problems x {args.rollouts} answers at temperature {config.temperature}, "
          f"mean reward {rewards.mean():.3f}, {mixed} problems with unequal rewards ({time.monotonic() - started:.0f} s)")

    started = time.monotonic()
    model = engine.model
    if config.freeze_vision:
        freeze_vision_tower(model)
    params = [p for p in model.parameters() if p.requires_grad]
    half, step = config.rollouts, config.prompts_per_step
    sums = {name: torch.zeros(sum(p.numel() for p in params)) for name in "AB"}
    squares = {"A": 0.0, "B": 0.0}
    steps_a = [torch.zeros_like(sums["A"]) for _ in range(max(1, len(problems) // step))]
    model.train()
    for i, request in enumerate(requests):
        for name, rows in (("A", slice(0, half)), ("B", slice(half, args.rollouts))):
            g = _gradient(model, params, engine.processor, request, token_ids[i][rows], rewards[i, rows], config)
            sums[name] += g
            squares[name] += float(g @ g)
            if name == "A" and i // step < len(steps_a):
                steps_a[i // step] += g
    n = len(problems)
    mean_a, mean_b = sums["A"] / n, sums["B"] / n
    signal = float(mean_a @ mean_b)
    noise = statistics.mean(squares[k] / n - float(m @ m) for k, m in (("A", mean_a), ("B", mean_b)))
    step_cos = [_cos(s, mean_b) for s in steps_a]
    print(f"GRPO gradients of {2 * n} half-groups of {half}, {len(sums['A']):,} parameters "
          f"(vision tower {'frozen' if config.freeze_vision else 'trained'}), {time.monotonic() - started:.0f} s")
    print(f"cos(mean A, mean B)              {_cos(mean_a, mean_b):+.3f}   (1: the expected gradient stands out; 0: noise)")
    print(f"signal / noise, one problem      {signal / noise:+.5f}")
    print(f"signal / noise, one step of {step:<3d}  {step * signal / noise:+.4f}")
    print(f"cos(one step of {step} from A, mean B) {np.mean(step_cos):+.3f} +- {np.std(step_cos):.3f} over {len(step_cos)} steps")


def _rewards(problems: list[dict[str, Any]], texts: list[list[str]], judge: RewardSettings,
             config: GRPOConfig) -> list[list[float]]:
    """The reward GRPO scores its rollouts with (`training_reward`); an unjudged answer stops the bench."""
    trained_on = [{**p, "reward": training_reward(judge.reward_of(p), config)} for p in problems]
    judged = score_responses(trained_on, texts, dataclasses.replace(judge, override=None))
    failed = [r for rs in judged for r in rs if not r.ok]
    if failed:
        raise SystemExit(f"{len(failed)} answers could not be judged, e.g. {failed[0]}")
    return [[r.score for r in rs] for rs in judged]


def _control_rewards(token_ids: list[list[list[int]]]) -> list[list[float]]:
    """1 for an answer shorter (in tokens) than the median answer to the same problem."""
    medians = [np.median([len(ids) for ids in row]) for row in token_ids]
    return [[float(len(ids) < median) for ids in row] for row, median in zip(token_ids, medians)]


def _gradient(model: Any, params: list[torch.nn.Parameter], processor: Any, request: Request, token_ids: list[list[int]],
              rewards: np.ndarray, config: GRPOConfig) -> torch.Tensor:
    """The flattened gradient of GRPO's first-update loss on one problem's rollouts (0 if rewards are equal)."""
    size = len(token_ids)
    if rewards.min() == rewards.max():  # no advantage: GRPO's loss has no gradient here
        return torch.zeros(sum(p.numel() for p in params))
    batch, resp_pos, mask = encode_rollouts(processor, [request.prompt], [request.images], token_ids, size, [request.system])
    advantages = grpo_advantages(torch.tensor(rewards, dtype=torch.float32), torch.ones(size, dtype=torch.bool), mask,
                                 np.zeros(size, dtype=int), config.norm_adv_by_std)
    actor = grpo_actor_config(config)
    actor.global_batch_info.update(batch_num_tokens=int(mask.sum()), global_batch_size=size,
                                   loss_scale_factor=config.max_tokens, dp_size=1)
    logp = _response_logprobs(model, _rows(batch, torch.arange(size)), resp_pos, config.temperature)
    loss, *_ = grpo_loss(logp, logp.detach(), logp.detach(), advantages, mask.float(), config, actor)
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm() + 1e-30))


if __name__ == "__main__":
    main()
