"""The `local` training backend: SFT and GRPO in one process, on the CPU or one GPU.

Both functions take a Hugging Face folder in and write one out (weights, processor files and a
`metrics.jsonl` training curve), so the loop never knows which backend ran. SFT is next-token
cross-entropy on the response tokens only. GRPO follows verl's `main_ppo` with
`adv_estimator=grpo` and `use_kl_loss=True`: n rollouts per prompt, group-normalised outcome
advantages, the clipped policy loss and a KL loss to the frozen reference model, computed with
verl's own `core_algos` functions, so the math is verl's.

Deliberate simplifications against verl (numbered, as the style guide asks):
1. Rollouts come from transformers `generate` in the same process, not from vLLM workers.
2. No critic, no sequence packing, no FSDP: one model on one device, micro-batches for memory
   (SFT's `grad_accum`, GRPO's `micro_batch_size`). Micro-batches are cut in length order, like
   verl's dynamic batch size, so they pad little; the update is the same however a batch is cut.
3. Rollouts whose reward errored or timed out are left out of the advantage groups and the loss
   (verl would score them 0); they are counted in the metrics. A rollout left alone in its group
   gets advantage 0 (verl gives a group of one its raw reward, its rule for n = 1).

Backend options (recipe `backend.options`, verbatim): device ("cpu"), dtype ("float32"), autocast
("none"; "bfloat16" for mixed precision), threads (torch threads), checkpoint_every (steps; 0 = never),
cache_mb (SFT encodings kept in memory), generate_batch (sequences per generate call).

A stage that is killed resumes from its last checkpoint: `out_dir` keeps `_checkpoint/` (model,
optimiser and scheduler state, step) until the final model is written. Batches are a pure
function of (seed, step), so a resumed run sees exactly the batches it would have seen.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import random
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from openvlt.backends import SAVED, SCHEDULES, GRPOConfig, LocalOptions, SFTConfig, backend_options
from openvlt.models import copy_processor_files, load_model, load_processor
from openvlt.models.batching import collate, encode_examples, encode_rollouts
from openvlt.faults import crashpoint
from openvlt.files import atomic_write, failed_write, flush_to_disk, writing
from rewards.batch import nothing_judged

log = logging.getLogger(__name__)


def sft(
    examples: Sequence[dict[str, Any]],
    init_model: str | Path,
    out_dir: str | Path,
    config: SFTConfig,
    *,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    pixel_bounds: dict[str, int] | None = None,
    callback: Callable[[int, Any, Any], None] | None = None,
) -> Path:
    """Fine-tune `init_model` on examples `{"prompt", "images", "response", "system" (optional)}`; save to `out_dir`.

    `pixel_bounds` (`max_pixels` / `min_pixels`) size the images; the saved folder keeps them.
    `callback(step, model, processor)` runs after every optimiser step (benchmarks evaluate there).
    """
    if not examples:
        raise ValueError("SFT needs at least one example")
    if config.batch_size % config.grad_accum:
        raise ValueError(f"sft.batch_size {config.batch_size} is not divisible by sft.grad_accum {config.grad_accum}")
    opts = _options(options)
    out = Path(out_dir)
    (out / SAVED).unlink(missing_ok=True)  # trained again (a benchmark's folder): not saved until it is
    model, processor = load_model(init_model, opts.dtype, opts.device), load_processor(init_model, **(pixel_bounds or {}))
    model.train()
    optimizer, scheduler = _optimizer(model, config.lr, config.weight_decay, config.warmup_steps, config.steps, config.schedule)
    start = _resume(out, model, optimizer, scheduler)
    metrics = _Metrics(out / "metrics.jsonl", start)
    update = _GuardedUpdate(model, optimizer, config.max_grad_norm, "sft")
    cache = _EncodedExamples(examples, processor, opts.cache_mb)
    micro = config.batch_size // config.grad_accum
    started = time.time()
    bar = tqdm(range(start + 1, config.steps + 1), desc="sft", unit="step", initial=start, total=config.steps)
    for step in bar:
        encoded = [cache.get(i) for i in _batch_indices(len(examples), config.batch_size, step, seed)]
        encoded.sort(key=lambda e: e["input_ids"].shape[1])  # micro-batches of like lengths: less padding, same update
        n_tokens = sum(int((e["labels"][:, 1:] != -100).sum()) for e in encoded)
        total_loss = 0.0
        for m in range(config.grad_accum):
            batch = _to(collate(encoded[m * micro : (m + 1) * micro], processor.tokenizer.pad_token_id), opts.device)
            labels = batch.pop("labels")
            loss_sum = _trace_loss_sum(model, batch, labels, opts)
            (loss_sum / max(n_tokens, 1)).backward()  # token mean over the optimiser batch, however split
            total_loss += loss_sum.item()
        lr = scheduler.get_last_lr()[0]  # the rate this step trains at
        grad_norm = update()
        _advance(scheduler)
        row = {"step": step, "loss": total_loss / max(n_tokens, 1), "lr": lr, "grad_norm": grad_norm}
        metrics.write(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.1e}")
        _checkpoint(out, step, config.steps, opts.checkpoint_every, model, optimizer, scheduler)
        crashpoint(f"sft:step:{step}")
        if callback is not None:
            callback(step, model, processor)
    log.info("sft: %d steps on %d examples in %.0f s, final loss %.3f", config.steps - start, len(examples),
             time.time() - started, metrics.last.get("loss", float("nan")))
    return _save(model, init_model, out, pixel_bounds)


def grpo(
    problems: Sequence[dict[str, Any]],
    init_model: str | Path,
    out_dir: str | Path,
    config: GRPOConfig,
    *,
    score: Callable[[list[dict[str, Any]]], list[Any]],
    correct: Callable[[dict[str, Any], Any], bool | None] | None = None,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    pixel_bounds: dict[str, int] | None = None,
) -> Path:
    """GRPO from `init_model` on problems `{"prompt", "images", "answer", "extra_info", "reward"}`, each
    optionally with "system", "data_source" (passed to the reward) and "id" (named in its errors).

    `score(items)` judges rollouts `{"response", "ground_truth", "extra_info", "reward", "id"}` and
    returns, in order, objects with `.score` (float) and `.ok` (False for errors and timeouts).
    `correct(problem, result)` says whether a judged rollout's answer is right (None: cannot tell) for
    the `accuracy` column; without it, a rollout is right at score 1. Failed rollouts are left out of
    the loss; a step in which every rollout failed stops the stage with a ValueError naming the first error.
    """
    from openvlt.engines import Request, Sampling
    from openvlt.engines.hf import HFEngine

    if not problems:
        raise ValueError("GRPO needs at least one problem")
    if not config.temperature > 0:  # log-probabilities are divided by it, as verl's actor does
        raise ValueError(f"GRPO samples its rollouts: temperature must be > 0, got {config.temperature}")
    opts = _options(options)
    out = Path(out_dir)
    (out / SAVED).unlink(missing_ok=True)  # trained again (a benchmark's folder): not saved until it is
    policy, processor = load_model(init_model, opts.dtype, opts.device), load_processor(init_model, **(pixel_bounds or {}))
    reference = load_model(init_model, opts.dtype, opts.device).eval().requires_grad_(False)
    if config.freeze_vision:
        log.info("grpo: vision tower frozen (%d parameters)", freeze_vision_tower(policy))
    engine = HFEngine.from_loaded(policy, processor, batch_size=opts.generate_batch)
    optimizer, scheduler = _optimizer(policy, config.lr, config.weight_decay, config.warmup_steps, config.steps, config.schedule)
    start = _resume(out, policy, optimizer, scheduler)
    metrics = _Metrics(out / "metrics.jsonl", start)
    update = _GuardedUpdate(policy, optimizer, config.max_grad_norm, "grpo")
    actor = grpo_actor_config(config)
    bar = tqdm(range(start + 1, config.steps + 1), desc="grpo", unit="step", initial=start, total=config.steps)
    for step in bar:
        indices = _batch_indices(len(problems), config.prompts_per_step, step, seed)
        chosen = [problems[i] for i in indices]
        requests = [Request(p["prompt"], tuple(p["images"]), p.get("system")) for p in chosen]
        sampling = Sampling(n=config.rollouts, temperature=config.temperature, top_p=config.top_p,
                            max_tokens=config.max_tokens, seed=seed * 100_003 + step)
        texts, token_ids = engine.generate_ids(requests, sampling)
        items = [{"response": t, "ground_truth": p["answer"], "extra_info": p["extra_info"], "reward": p["reward"],
                  "data_source": p.get("data_source"), "id": f"problem {p.get('id', i)}, step {step} rollout {j}"}
                 for i, p, ts in zip(indices, chosen, texts) for j, t in enumerate(ts)]
        results = score(items)
        if not any(r.ok for r in results):
            # it would update on nothing and hand the next iteration its SFT model under a GRPO model's name
            raise ValueError(nothing_judged(f"GRPO step {step}", "rollouts", results, also="; a changed recipe value, such as "
                                            "reward.timeout or grpo.reward, needs --force and starts the stage over"))
        rewards = torch.tensor([r.score if r.ok else 0.0 for r in results], dtype=torch.float32)
        valid = torch.tensor([r.ok for r in results])
        group = np.repeat(np.arange(len(chosen)), config.rollouts)

        batch, resp_pos, resp_mask = encode_rollouts(
            processor, [p["prompt"] for p in chosen], [p["images"] for p in chosen],
            [ids for row in token_ids for ids in row], config.rollouts, [p.get("system") for p in chosen],
        )
        resp_mask = resp_mask * valid[:, None]  # errored rollouts: out of the loss
        advantages = grpo_advantages(rewards, valid, resp_mask, group, config.norm_adv_by_std)
        with torch.no_grad(), _autocast(opts):
            ref_logp = _logprobs_in_chunks(reference, batch, resp_pos, config.micro_batch_size, opts.device, config.temperature)
            reuse_current = config.ppo_epochs == 1 and config.mini_batches == 1
            old_logp = None if reuse_current else _logprobs_in_chunks(
                policy, batch, resp_pos, config.micro_batch_size, opts.device, config.temperature)

        stats, updates = _update_policy(policy, update, batch, resp_pos, resp_mask, advantages, ref_logp, old_logp,
                                        len(chosen), config, actor, opts)
        lr = scheduler.get_last_lr()[0]  # the rate this step trained at
        _advance(scheduler)

        row = _step_metrics(step, results, chosen, token_ids, stats, updates, lr, config.rollouts, correct)
        metrics.write(row)
        bar.set_postfix({name: "-" if row[name] is None else f"{row[name]:.{digits}f}" for name, digits in (("reward", 3), ("kl", 4))})
        _checkpoint(out, step, config.steps, opts.checkpoint_every, policy, optimizer, scheduler)
        crashpoint(f"grpo:step:{step}")
    return _save(policy, init_model, out, pixel_bounds)


def _update_policy(policy: Any, update: "_GuardedUpdate", batch: dict[str, torch.Tensor], resp_pos: torch.Tensor,
                   resp_mask: torch.Tensor, advantages: torch.Tensor, ref_logp: torch.Tensor, old_logp: torch.Tensor | None,
                   prompts: int, config: GRPOConfig, actor: Any, opts: LocalOptions) -> tuple[dict[str, list[float]], int]:
    """verl's actor update on one step's rollouts: `ppo_epochs` passes over its mini-batches (whole prompt
    groups), each an optimiser step made of micro-batches; return the loss parts of every micro-batch and
    how many optimiser steps were taken (a mini-batch with no judged token is skipped). `old_logp` None:
    one update per batch, whose old policy is the current one."""
    stats: dict[str, list[float]] = {"pg_loss": [], "kl": [], "clipfrac": []}
    updates = 0
    policy.train()
    for _ in range(config.ppo_epochs):
        for mb in _mini_batches(prompts, config.rollouts, config.mini_batches):
            n_tokens = int(resp_mask[mb].sum())
            if n_tokens == 0:
                continue
            # what verl's agg_loss divides by, so every loss_agg_mode means the whole mini-batch, however
            # it is cut into micro-batches (seq-mean-token-sum-norm by the response budget, as verl pads to it)
            actor.global_batch_info.update(batch_num_tokens=n_tokens, global_batch_size=int((resp_mask[mb].sum(1) > 0).sum()),
                                           loss_scale_factor=config.max_tokens, dp_size=1)
            for micro in _by_length(mb, batch).split(config.micro_batch_size):
                sub = _to(_rows(batch, micro), opts.device)
                with _autocast(opts):
                    logp = _response_logprobs(policy, sub, resp_pos[micro].to(opts.device), config.temperature)
                mask = resp_mask[micro].to(opts.device).float()
                old = logp.detach() if old_logp is None else old_logp[micro].to(opts.device)
                loss, pg_loss, kl_loss, clipfrac = grpo_loss(
                    logp, old, ref_logp[micro].to(opts.device), advantages[micro].to(opts.device), mask, config, actor
                )
                loss.backward()
                stats["pg_loss"].append(pg_loss)  # micro shares of the mini-batch token mean: they add up
                stats["kl"].append(kl_loss)
                stats["clipfrac"].append(clipfrac)
            update()
            updates += 1
    return stats, updates


def _step_metrics(step: int, results: list[Any], chosen: list[dict[str, Any]], token_ids: list[list[list[int]]],
                  stats: dict[str, list[float]], updates: int, lr: float, rollouts: int,
                  correct: Callable[[dict[str, Any], Any], bool | None] | None) -> dict[str, Any]:
    """One GRPO step's row of metrics.jsonl."""
    ok = [r for r in results if r.ok]
    return {
        "step": step,
        "reward": sum(r.score for r in ok) / len(ok),  # over the judged rollouts: a failed one is no reward, not 0
        "accuracy": _accuracy([(chosen[k // rollouts], r) for k, r in enumerate(results) if r.ok], correct),
        "reward_parts": _part_means(ok),
        "kl": sum(stats["kl"]) / updates if updates else None,  # no update, no loss
        "pg_loss": sum(stats["pg_loss"]) / updates if updates else None,
        "clipfrac": sum(stats["clipfrac"]) / max(len(stats["clipfrac"]), 1),
        "response_tokens": float(torch.tensor([len(ids) for row in token_ids for ids in row], dtype=torch.float32).mean()),
        "reward_errors": sum(not r.ok for r in results),
        "lr": lr,
    }


def _mini_batches(prompts: int, rollouts: int, count: int) -> list[torch.Tensor]:
    """The rollout rows of each mini-batch: whole prompt groups, in order, as verl cuts a step's batch
    (ppo_mini_batch_size prompts x rollout.n, actor.shuffle off), and the same cut every epoch."""
    rows = torch.arange(prompts * rollouts).view(prompts, rollouts)
    return [part.flatten() for part in rows.tensor_split(count)]


def freeze_vision_tower(model: Any) -> int:
    """Stop updates to the vision tower (Qwen2-VL's `visual` module); return the parameters frozen.

    RL rewards say little about perception, and on the toy world GRPO's updates there cost more than
    they gave (grid misreadings 5 -> 33 of 500 after 12 steps; 21 with the tower frozen)."""
    towers = [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] == "visual"]
    if not towers:
        raise ValueError("grpo.freeze_vision: the model has no vision tower (no module named 'visual')")
    frozen = 0
    for tower in towers:
        for p in tower.parameters():
            frozen += p.numel() if p.requires_grad else 0
            p.requires_grad_(False)
    return frozen


def grpo_advantages(
    rewards: torch.Tensor, valid: torch.Tensor, resp_mask: torch.Tensor, group: np.ndarray, norm_by_std: bool
) -> torch.Tensor:
    """(B, R) advantages: verl's GRPO outcome advantage over the rollouts that were judged;
    rollouts whose reward failed get 0 and do not count in their group's mean and std. A rollout
    left alone in its group has nothing to be compared with, so it gets 0 too (verl would give a
    group of one its raw reward, which is meant for n = 1 rollouts, not for a group cut down by errors)."""
    from verl.trainer.ppo import core_algos

    advantages = torch.zeros(resp_mask.shape, dtype=torch.float32)
    judged = valid.numpy().astype(bool)
    _, where, sizes = np.unique(group[judged], return_inverse=True, return_counts=True)
    compared = np.zeros_like(judged)
    compared[judged] = sizes[where] > 1
    rows = torch.from_numpy(compared.nonzero()[0])
    if len(rows) == 0:
        return advantages
    token_rewards = torch.zeros(resp_mask.shape, dtype=torch.float32)
    last = (resp_mask.sum(1) - 1).clamp(min=0).long()
    token_rewards[torch.arange(len(rewards)), last] = rewards  # outcome reward on the last response token
    adv, _ = core_algos.compute_grpo_outcome_advantage(
        token_rewards[rows], resp_mask[rows].float(), group[rows.numpy()], norm_adv_by_std_in_grpo=norm_by_std
    )
    advantages[rows] = adv
    return advantages


def grpo_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
    config: GRPOConfig, actor: Any,
) -> tuple[torch.Tensor, float, float, float]:
    """verl's clipped policy loss plus kl_coef x verl's KL loss to the reference, aggregated by
    `actor.global_batch_info` (token-mean over the whole mini-batch, however it is split)."""
    from verl.trainer.ppo import core_algos

    pg_loss, pg_metrics = core_algos.compute_policy_loss_vanilla(old_logp, logp, advantages, mask, config.loss_agg_mode, actor)
    kl = core_algos.kl_penalty(logp, ref_logp, config.kl_penalty)
    kl_loss = core_algos.agg_loss(kl, mask, config.loss_agg_mode, **actor.global_batch_info)
    return pg_loss + config.kl_coef * kl_loss, pg_loss.item(), kl_loss.item(), pg_metrics["actor/pg_clipfrac"]


def grpo_actor_config(config: GRPOConfig) -> Any:
    """The verl ActorConfig that verl's loss functions read (clip ratios, batch sizes)."""
    from verl.workers.config import ActorConfig

    return ActorConfig(
        strategy="fsdp", clip_ratio=config.clip_ratio_low, clip_ratio_low=config.clip_ratio_low,
        clip_ratio_high=config.clip_ratio_high, ppo_mini_batch_size=config.prompts_per_step // config.mini_batches,
        ppo_micro_batch_size_per_gpu=config.micro_batch_size, rollout_n=config.rollouts,
    )


# ----------------------------------------------------------------------------- helpers
def _options(options: dict[str, Any] | None) -> LocalOptions:
    try:
        opts = LocalOptions(**(options or {}))
    except TypeError as exc:
        raise ValueError(f"backend.options: {exc} (local backend options: {', '.join(backend_options('local'))})") from exc
    if opts.threads:
        torch.set_num_threads(opts.threads)
    return opts


def _batch_indices(n: int, size: int, step: int, seed: int) -> list[int]:
    """Rows for optimiser step `step` (1-based): consecutive slices of per-epoch permutations.

    A pure function of (n, size, step, seed), so a run resumed at any step sees the same batches.
    (Batches are deliberately not grouped by length: measured on the toy world, length-grouped
    batches ran 40 % faster but reached 0.37 held-out accuracy where shuffled ones reached 0.86.)
    """
    return [_permutation(n, seed, p // n)[p % n] for p in range((step - 1) * size, step * size)]


@functools.lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(f"{seed}/{epoch}").shuffle(order)
    return tuple(order)


class _GuardedUpdate:
    """Clip, then step, unless the gradient norm is not finite (an overflow, a NaN loss): that update is
    skipped, as verl's actor does, instead of writing NaN into every weight and every later checkpoint.
    `limit` in a row stop the stage, naming the way out; the checkpoint before them is intact."""

    def __init__(self, model: Any, optimizer: Any, max_norm: float, stage: str, limit: int = 5):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer, self.max_norm, self.stage, self.limit = optimizer, max_norm, stage, limit
        self.in_a_row = 0

    def __call__(self) -> float:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.max_norm))
        if math.isfinite(grad_norm):
            self.optimizer.step()
            self.in_a_row = 0
        else:
            self.in_a_row += 1
            log.warning("%s: the gradient norm is %s: update skipped", self.stage, grad_norm)
            if self.in_a_row >= self.limit:
                raise FloatingPointError(
                    f"{self.stage}: the gradient norm was not finite in {self.in_a_row} updates in a row: the loss "
                    f"diverged; lower {self.stage}.lr, or run without backend.options.autocast")
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm


def _advance(scheduler: Any) -> None:
    """The schedule follows the steps, updated or not (torch warns when no update was made yet)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`")
        scheduler.step()


def _optimizer(model: Any, lr: float, weight_decay: float, warmup: int, total: int, schedule: str):
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {schedule!r} ({', '.join(SCHEDULES)})")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "cosine":
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
        return max(0.1, 1 - 0.9 * progress) if schedule == "linear" else 1.0

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _accuracy(judged: list[tuple[dict[str, Any], Any]], correct: Callable[[dict[str, Any], Any], bool | None] | None) -> float | None:
    """Share of judged rollouts `(problem, result)` whose answer is right, over those `correct` can tell
    (None if none: nothing judged is no accuracy, not 0)."""
    verdicts = [r.score >= 1.0 if correct is None else correct(p, r) for p, r in judged]
    told = [v for v in verdicts if v is not None]
    return sum(told) / len(told) if told else None


def _part_means(results: list[Any]) -> dict[str, float]:
    """Mean of each named part the rewards report, as verl logs a reward's extra info: a composition's
    terms as it names them (`toyworld`, `toyworld.answer`), a single plugin's total and dict keys under
    its name, the same names. Each part is averaged over the rollouts that report it: with problems
    judged by different plugins, `math` is the math problems' mean reward and `ocr` the OCR problems'."""
    from rewards.compose import split_terms

    parts: dict[str, list[float]] = {}
    for r in results:
        named = dict(r.components or {})
        if split_terms(r.reward) == [(1.0, r.reward)]:  # one plugin, not a composition
            named = {r.reward: r.score, **{f"{r.reward}.{key}": value for key, value in named.items()}}
        for name, value in named.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                parts.setdefault(name, []).append(float(value))
    return {name: sum(values) / len(values) for name, values in parts.items()}


def _checkpoint(out: Path, step: int, total: int, every: int, model, optimizer, scheduler) -> None:
    if not every or step % every or step == total:
        return
    target = out / "_checkpoint"
    target.mkdir(parents=True, exist_ok=True)
    state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    flush_to_disk(out / "metrics.jsonl")  # the rows a resume from this checkpoint keeps survive a power loss too
    with writing(target / "state.pt", "a training checkpoint") as tmp:  # a kill never leaves a half-written one
        torch.save(state, tmp)


def _resume(out: Path, model, optimizer, scheduler) -> int:
    path = out / "_checkpoint" / "state.pt"
    if not path.exists():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    log.info("resuming from the checkpoint at step %d in %s", state["step"], out)
    return int(state["step"])


def _save(model: Any, init_model: str | Path, out: Path, pixel_bounds: dict[str, int] | None) -> Path:
    """Weights plus the init model's tokenizer/processor files: a complete Hugging Face folder. It is
    marked saved before the checkpoint goes, so a kill between the two never trains from step 0 again."""
    try:
        model.save_pretrained(out)
    except Exception as exc:
        for partial in out.glob("model*.safetensors*"):  # the space they took, for the manifest's record
            partial.unlink(missing_ok=True)
        raise failed_write("the model", out, exc) from exc
    _as_umask_allows(out.glob("*.safetensors*"))  # safetensors writes 0600: teammates could not open the checkpoint
    copy_processor_files(init_model, out, pixel_bounds)
    flush_to_disk(out)  # the weights before the mark: a power loss never leaves it on a torn model
    atomic_write(out / SAVED, "")
    shutil.rmtree(out / "_checkpoint", ignore_errors=True)
    return out


def _as_umask_allows(files: Iterable[Path]) -> None:
    """Give files the permissions any other file this process writes gets (Linux reports the umask)."""
    try:
        umask = int(next(line for line in Path("/proc/self/status").read_text().splitlines()
                         if line.startswith("Umask:")).split()[1], 8)
    except (OSError, StopIteration, ValueError):
        return
    for file in files:
        os.chmod(file, 0o666 & ~umask)


def saved(out_dir: str | Path) -> bool:
    """Whether `out_dir` holds a model `sft` or `grpo` saved whole; its checkpoint, if a kill left it, goes."""
    out = Path(out_dir)
    if not (out / SAVED).exists():
        return False
    shutil.rmtree(out / "_checkpoint", ignore_errors=True)
    return True


class _Metrics:
    """Per-step training metrics as JSON lines; on resume, rows after the checkpoint are dropped."""

    def __init__(self, path: Path, resume_step: int):
        self.path, self.last = path, {}
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = path.read_text().splitlines() if path.exists() else []
        kept = [row for row in map(_json_or_none, lines) if isinstance(row, dict) and row.get("step", math.inf) <= resume_step]
        atomic_write(path, "".join(json.dumps(r) + "\n" for r in kept))  # a kill now loses no kept row

    def write(self, row: dict[str, Any]) -> None:
        self.last = row
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def _json_or_none(line: str) -> dict[str, Any] | None:
    """A metrics row, or None for a blank line or one torn by a crash mid-write (it is rewritten anyway)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


class _EncodedExamples:
    """Examples encoded once (tokens, labels, pixels) and kept while they fit in `cache_mb`."""

    def __init__(self, examples: Sequence[dict[str, Any]], processor: Any, cache_mb: int):
        self.examples, self.processor = examples, processor
        self.budget = cache_mb * 2**20
        self.cache: dict[int, dict[str, torch.Tensor]] = {}

    def get(self, index: int) -> dict[str, torch.Tensor]:
        if index in self.cache:
            return self.cache[index]
        e = self.examples[index]
        encoded = encode_examples(self.processor, [e["prompt"]], [e["images"]], [e["response"]], [e.get("system")])
        size = sum(t.numel() * t.element_size() for t in encoded.values())
        if size <= self.budget:
            self.cache[index] = encoded
            self.budget -= size
        return encoded


def _autocast(opts: LocalOptions) -> contextlib.AbstractContextManager:
    """Mixed precision for the training passes (`autocast: bfloat16`): matrix products in bfloat16, weights,
    gradients and optimiser state in `dtype`. Measured on 2 CPU cores with AVX512-BF16: SFT steps of the
    embedded default about 25 % slower (bench/micro_batches.py) and its held-out accuracy lower (README), so
    the default stays float32; on a GPU with a larger model it is the usual choice."""
    if opts.autocast == "none":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(opts.device).type, dtype=getattr(torch, opts.autocast))


def _to(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _by_length(rows: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """`rows` ordered by sequence length, so consecutive micro-batches pad little (as verl's
    dynamic batch size does). The update is the same: the loss is a token mean over the mini-batch."""
    lengths = batch["attention_mask"][rows].sum(1)
    return rows[torch.argsort(lengths, stable=True)]


def _rows(batch: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rows of a right-padded rollout batch, cut to their longest row, with their images' patches
    (`pixel_values` holds each prompt's once: `row_patches` and `row_grids` give each row's span)."""
    width = int(batch["attention_mask"][rows].sum(1).max())
    sub = {k: batch[k][rows, :width] for k in ("input_ids", "attention_mask", "mm_token_type_ids") if k in batch}
    if "pixel_values" in batch and bool((batch["row_patches"][rows].diff(dim=1) > 0).any()):  # (text-only rows: none)
        for key, spans in (("pixel_values", batch["row_patches"]), ("image_grid_thw", batch["row_grids"])):
            sub[key] = torch.cat([batch[key][start:end] for start, end in spans[rows].tolist()])
    return sub


def _next_token_logits(model: Any, batch: dict[str, torch.Tensor], first: int) -> torch.Tensor:
    """Logits at positions `first`..T-2 (0 <= first <= T-2; position t predicts token t+1), as (B, T-1-first, V).

    The language-model head runs on those positions only (transformers' `logits_to_keep`): the
    prompt's positions, images included, predict nothing that is trained, and at a real vocabulary
    (151k for Qwen2.5-VL) their float32 logits would be most of a step's memory."""
    return model(**batch, logits_to_keep=batch["input_ids"].shape[1] - first).logits[:, :-1]


def _trace_loss_sum(model: Any, batch: dict[str, torch.Tensor], labels: torch.Tensor, opts: LocalOptions) -> torch.Tensor:
    """Cross-entropy summed over the labelled tokens (the trace and its end of turn; the prompt is -100)."""
    first = int((labels[:, 1:] != -100).int().argmax(1).min())  # the earliest position that predicts a trace token
    with _autocast(opts):
        logits = _next_token_logits(model, batch, first)  # (B, T-1-first, V)
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels[:, first + 1 :].reshape(-1), ignore_index=-100, reduction="sum")


def _response_logprobs(model: Any, batch: dict[str, torch.Tensor], resp_pos: torch.Tensor, temperature: float) -> torch.Tensor:
    """log p(response token j | prefix) for each row, as a (B, R) tensor aligned with `resp_pos`.

    The logits are divided by the rollout temperature first, as verl's actor and reference do, so
    the ratio and the KL are those of the distribution the rollouts were sampled from. verl's
    `logprobs_from_logits` takes the log-softmax a row at a time (flash-attn's kernel where installed)."""
    from verl.utils.torch_functional import logprobs_from_logits  # verl imports in 1.5 s: only when training

    first = max(0, min(int(resp_pos.min()), batch["input_ids"].shape[1] - 2))  # no row's response starts earlier
    logits = _next_token_logits(model, batch, first).float() / temperature  # (B, T-1-first, V)
    logp = logprobs_from_logits(logits, batch["input_ids"][:, first + 1 :])  # (B, T-1-first)
    return logp.gather(1, (resp_pos - first).clamp(max=logp.shape[1] - 1))  # beyond a row's end: padding, masked out


def _logprobs_in_chunks(
    model: Any, batch: dict[str, torch.Tensor], resp_pos: torch.Tensor, size: int, device: str, temperature: float
) -> torch.Tensor:
    out = torch.empty(resp_pos.shape, dtype=torch.float32)
    for r in _by_length(torch.arange(len(resp_pos)), batch).split(size):
        out[r] = _response_logprobs(model, _to(_rows(batch, r), device), resp_pos[r].to(device), temperature).cpu()
    return out
