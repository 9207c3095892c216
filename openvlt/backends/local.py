"""The `local` training backend: SFT and GRPO in one process, on the CPU or one GPU.

Both functions take a Hugging Face folder in and write one out, so the loop never knows which
backend ran. SFT is next-token cross-entropy on the response tokens only. GRPO follows verl's
`main_ppo` with `adv_estimator=grpo`: n rollouts per prompt, group-normalised outcome advantages,
the clipped policy loss and a low-variance KL to the frozen reference model, all computed with
verl's own `core_algos` functions so the math is verl's.

Deliberate simplifications against verl (numbered, as the style guide asks):
1. Rollouts come from transformers `generate` in the same process, not from vLLM workers.
2. One optimisation pass per rollout batch by default (`ppo_epochs: 1`), so the importance ratio
   starts at 1; more passes are supported.
3. No critic, no sequence packing, no FSDP: one model, one device, gradient accumulation instead.
"""
from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm import tqdm

from openvlt.models import copy_processor_files, load_model, load_processor
from openvlt.models.batching import collate, encode_examples

log = logging.getLogger(__name__)


@dataclass
class SFTConfig:
    """Knobs of the local SFT trainer (the recipe's `sft:` block)."""

    steps: int = 600            # optimiser steps
    batch_size: int = 32        # examples per optimiser step (split into grad_accum micro-batches)
    grad_accum: int = 1
    lr: float = 2e-3
    warmup_steps: int = 30
    schedule: str = "cosine"    # cosine | linear | constant (after warm-up)
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None  # torch threads (None: torch's default)
    cache_mb: int = 2048        # keep encoded examples (pixels included) in memory up to this size


def sft(
    examples: Sequence[dict[str, Any]],
    init_model: str | Path,
    out_dir: str | Path,
    config: SFTConfig,
    callback: Callable[[int, Any, Any], None] | None = None,
) -> Path:
    """Fine-tune `init_model` on examples `{"prompt", "images", "response"}`; save to `out_dir`.

    `callback(step, model, processor)` runs after every optimiser step (used by benchmarks to
    evaluate along the way).
    """
    if not examples:
        raise ValueError("SFT needs at least one example")
    if config.batch_size % config.grad_accum:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by grad_accum {config.grad_accum}")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    model = load_model(init_model, device=config.device)
    processor = load_processor(init_model)
    model.train()
    optimizer, scheduler = _optimizer(model, config.lr, config.weight_decay, config.warmup_steps, config.steps, config.schedule)
    micro = config.batch_size // config.grad_accum
    cache = _EncodedExamples(examples, processor, config.cache_mb)
    order: list[int] = []
    started = time.time()
    bar = tqdm(range(1, config.steps + 1), desc="sft", unit="step")
    for step in bar:
        total_loss, total_tokens = 0.0, 0
        batch_ids = []
        for _ in range(config.batch_size):
            if not order:
                order = list(range(len(examples)))
                rng.shuffle(order)
            batch_ids.append(order.pop())
        encoded = [cache.get(i) for i in batch_ids]
        n_tokens = sum(int((e["labels"] != -100).sum()) - 1 for e in encoded)  # shifted targets
        for m in range(config.grad_accum):
            batch = collate(encoded[m * micro : (m + 1) * micro], processor.tokenizer.pad_token_id)
            batch = {k: v.to(config.device) for k, v in batch.items()}
            labels = batch.pop("labels")
            logits = model(**batch).logits[:, :-1]  # (B, T-1, V)
            targets = labels[:, 1:]
            loss_sum = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100, reduction="sum"
            )
            # token-level mean over the whole optimiser batch, however it is split
            (loss_sum / max(n_tokens, 1)).backward()
            total_loss += loss_sum.item()
            total_tokens += int((targets != -100).sum())
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{total_loss / max(total_tokens, 1):.3f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")
        if callback is not None:
            callback(step, model, processor)
    log.info("sft: %d steps on %d examples in %.0f s", config.steps, len(examples), time.time() - started)
    return save_model(model, init_model, out_dir)


def save_model(model: Any, init_model: str | Path, out_dir: str | Path) -> Path:
    """Weights plus the init model's tokenizer/processor files: a complete Hugging Face folder."""
    out = Path(out_dir)
    model.save_pretrained(out)
    copy_processor_files(init_model, out)
    return out


def _optimizer(model, lr: float, weight_decay: float, warmup: int, total: int, schedule: str):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if schedule == "cosine":
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        if schedule == "linear":
            return max(0.1, 1 - 0.9 * progress)
        if schedule == "constant":
            return 1.0
        raise ValueError(f"unknown learning-rate schedule {schedule!r} (cosine, linear, constant)")

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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
