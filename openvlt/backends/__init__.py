"""Training backends: `sft` and `grpo`, each ending in a plain Hugging Face model folder.

    local   one process, CPU or one GPU (openvlt.backends.local); GRPO math from verl's core_algos
    verl    verl's SFT trainer and main_ppo on GPU clusters (not available in this build yet)

A backend is a module with two functions (see `Backend`); the loop never needs more.
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Protocol, Sequence


class Backend(Protocol):
    def sft(self, examples: Sequence[dict[str, Any]], init_model: str | Path, out_dir: str | Path, config: Any) -> Path: ...

    def grpo(
        self, problems: Sequence[dict[str, Any]], init_model: str | Path, reward: Callable, out_dir: str | Path, config: Any
    ) -> Path: ...


def get_backend(name: str) -> ModuleType:
    if name == "local":
        from openvlt.backends import local

        return local
    raise ValueError(f"unknown training backend {name!r} (known: local)")
