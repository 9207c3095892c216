"""Training backends: `sft` and `grpo`, each ending in a plain Hugging Face model folder.

    local   one process, CPU or one GPU (openvlt.backends.local); GRPO math from verl's core_algos
    verl    verl's SFT trainer and main_ppo on GPU clusters (not available in this build yet)

A backend is a module with three functions (see `Backend`): `sft` and `grpo` take the generic knobs
below (the recipe's `sft:` and `grpo:` blocks) plus the recipe's `backend.options`, passed verbatim, and
write `SAVED` into their folder once it is complete; `saved` says whether a folder is (a stage killed
after its backend saved takes that model, rather than train again from scratch).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional, Protocol, Sequence


SCHEDULES = ("cosine", "linear", "constant")  # the learning rate after warm-up; cosine and linear end at 10 %


@dataclass
class SFTConfig:
    steps: int = 600              # optimiser steps
    batch_size: int = 32          # examples per optimiser step
    grad_accum: int = 1           # micro-batches per optimiser step
    lr: float = 1e-5
    warmup_steps: int = 30
    schedule: str = "cosine"      # cosine | linear | constant (after warm-up; cosine/linear end at 10 %)
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: Optional[int] = None  # tokens (prompt with its images, plus trace); longer examples are left out,
                                  # counted (null: the student's context, max_position_embeddings)


OWN_REWARD = "{reward}"  # in GRPOConfig.reward: the problem's own reward plugin (or the recipe's reward.override)


@dataclass
class GRPOConfig:
    """GRPO as in verl's main_ppo with adv_estimator=grpo, use_kl_loss=True (names follow verl's)."""

    steps: int = 100
    prompts_per_step: int = 16    # verl: data.train_batch_size
    rollouts: int = 8             # verl: actor_rollout_ref.rollout.n
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 1024
    max_prompt_length: Optional[int] = None  # tokens, images included; longer problems are left out, counted (verl:
                                  # data.max_prompt_length; null: the student's context less max_tokens)
    lr: float = 1e-6
    warmup_steps: int = 0
    schedule: str = "constant"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    kl_coef: float = 0.01         # verl: actor.kl_loss_coef
    kl_penalty: str = "low_var_kl"  # verl: actor.kl_loss_type
    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.2
    loss_agg_mode: str = "token-mean"
    norm_adv_by_std: bool = True  # False = Dr.GRPO
    ppo_epochs: int = 1
    mini_batches: int = 1         # optimiser steps per rollout batch (verl: batch / ppo_mini_batch_size)
    micro_batch_size: int = 64    # sequences per forward/backward (memory only; maths unchanged)
    reward: Optional[str] = None  # training reward, e.g. "0.8*{reward}+0.2*len.py:short" ({reward}: the problem's own)
    format_weight: float = 0.0    # reward = (1 - w) * training reward + w * format
    freeze_vision: bool = False   # no updates to the vision tower (EasyR1: actor.model.freeze_vision_tower)


SAVED = ".saved"  # in a backend's output folder: every file of the model was written


class Backend(Protocol):
    def sft(
        self, examples: Sequence[dict[str, Any]], init_model: str | Path, out_dir: str | Path, config: SFTConfig,
        *, seed: int = 0, options: dict[str, Any] | None = None, pixel_bounds: dict[str, int] | None = None,
    ) -> Path: ...

    def grpo(
        self, problems: Sequence[dict[str, Any]], init_model: str | Path, out_dir: str | Path, config: GRPOConfig,
        *, score: Callable[[list[dict[str, Any]]], list[Any]], correct: Callable[[dict[str, Any], Any], bool | None] | None = None,
        seed: int = 0, options: dict[str, Any] | None = None, pixel_bounds: dict[str, int] | None = None,
    ) -> Path: ...

    def saved(self, out_dir: str | Path) -> bool: ...


@dataclass
class LocalOptions:
    """The `local` backend's `backend.options` (kept here so checking a recipe imports no torch)."""

    device: str = "cpu"
    dtype: str = "float32"        # of the weights (and AdamW's state): float32 only, see __post_init__
    autocast: str = "none"        # "bfloat16": SFT and GRPO passes run under torch.autocast, weights stay `dtype`
    threads: int | None = None
    checkpoint_every: int = 100   # steps; 0 = never
    cache_mb: int = 2048          # SFT encodings kept in memory
    generate_batch: int = 128     # sequences per generate call

    def __post_init__(self) -> None:
        why = {"float16": "no loss scaling: the first step turns them into inf/NaN",  # AdamW's eps rounds to 0
               "bfloat16": "an update smaller than a weight's rounding step, 1/256 of it, is lost: 3 GRPO steps at "
                           "lr 1e-6 changed 2 % of the tiny student's weights, against all of them in float32"}
        if self.dtype in why:  # no float32 master weights here; mixed precision is `autocast`, at no cost in memory
            raise ValueError(f"backend.options.dtype: {self.dtype} weights cannot be trained with plain AdamW "
                             f"({why[self.dtype]}); use dtype float32 with autocast bfloat16")
        for name, allowed in (("dtype", ("float32",)), ("autocast", ("none", "bfloat16"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"backend.options.{name}: must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not isinstance(self.device, str):
            raise ValueError(f"backend.options.device: expected a device name such as 'cpu' or 'cuda:0', got {self.device!r}")
        for name, low in (("threads", 1), ("checkpoint_every", 0), ("cache_mb", 0), ("generate_batch", 1)):
            value = getattr(self, name)
            if not (name == "threads" and value is None) and (type(value) is not int or value < low):
                raise ValueError(f"backend.options.{name}: must be an integer >= {low}, got {value!r}")


BACKENDS = {"local": LocalOptions}  # name -> its options


def get_backend(name: str) -> ModuleType:
    _check_known(name)
    from openvlt.backends import local

    return local


def backend_options(name: str) -> list[str]:
    """The names a backend reads from the recipe's `backend.options` (checked before anything runs)."""
    _check_known(name)
    return [f.name for f in fields(BACKENDS[name])]


def _check_known(name: str) -> None:
    if name not in BACKENDS:
        raise ValueError(f"unknown training backend {name!r} (known: {', '.join(BACKENDS)})")
