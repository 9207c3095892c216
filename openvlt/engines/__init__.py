"""Generation engines: one interface for every model that writes text in openvlt.

    generate(requests, sampling) -> list[list[str]]     # sampling.n completions per request

A request is one user turn: text in which each `<image>` marks where the next image goes (the same
convention as the problem records' `question`), plus the encoded images. Roles in a recipe
(captioner, reasoner, student, evaluator) are each bound to an engine built by `build_engine`:

    program   the toy world's program teacher (data_tools.toyworld.teacher)
    hf        transformers `generate` (CPU and small GPUs)
    vllm      vLLM (GPU clusters; not available in this build yet)

Engines are imported lazily, so importing openvlt never requires torch, vLLM or a model.
"""
from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

IMAGE_PLACEHOLDER = "<image>"


@dataclass(frozen=True)
class Request:
    """One user turn: `prompt` with one `<image>` per entry of `images` (encoded bytes)."""

    prompt: str
    images: tuple[bytes, ...] = ()
    system: str | None = None

    def __post_init__(self) -> None:
        found = self.prompt.count(IMAGE_PLACEHOLDER)
        if found != len(self.images):
            raise ValueError(f"request has {found} {IMAGE_PLACEHOLDER} placeholders but {len(self.images)} images")


@dataclass(frozen=True)
class Sampling:
    """How to sample: `temperature == 0` means greedy decoding (then n > 1 gives n equal copies)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_tokens < 1 or self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"invalid sampling parameters: {self}")


class RequestError(ValueError):
    """An engine cannot answer one request of a batch (bad input, not a failing engine): `index` is
    its place in the batch, so the stage can name the problem."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


class Engine(Protocol):
    def generate(self, requests: Sequence[Request], sampling: Sampling) -> list[list[str]]: ...


@dataclass(frozen=True)
class EngineSpec:
    """What a recipe role names: an engine kind, a model (path or program name) and engine options."""

    engine: str
    model: str
    options: dict[str, Any] = field(default_factory=dict)


ENGINES = ("program", "hf")


def build_engine(spec: EngineSpec) -> Engine:
    cls, args = _constructor(spec.engine, spec.model)
    return cls(*args, **spec.options)


def engine_options(engine: str, model: str) -> dict[str, Any]:
    """The options `build_engine` accepts for this engine (a program's depend on the program), with
    their types, so a recipe is checked before anything runs."""
    cls, args = _constructor(engine, model)
    params = list(inspect.signature(cls).parameters.values())[len(args):]
    hints = typing.get_type_hints(cls.__init__)
    return {p.name: hints.get(p.name, Any) for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_engine_options(engine: str, model: str, options: dict[str, Any]) -> None:
    """Raise ValueError for an option value the engine would refuse, without loading any model."""
    if engine == "program":
        _constructor(engine, model)[0](**options)  # a program teacher is cheap to build
    elif engine == "hf":
        check_hf_options(**options)


def check_hf_options(
    device: str = "cpu", dtype: str = "float32", batch_size: int = 32, threads: int | None = None,
    max_pixels: int | None = None, min_pixels: int | None = None,
) -> None:
    """The `hf` engine's option values (HFEngine checks them too, before it loads the model)."""
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype: must be one of float32, bfloat16, float16, got {dtype!r}")
    for name, value in (("batch_size", batch_size), ("threads", threads), ("max_pixels", max_pixels), ("min_pixels", min_pixels)):
        if value is not None and value < 1:
            raise ValueError(f"{name}: must be >= 1, got {value!r}")
    if max_pixels is not None and min_pixels is not None and min_pixels > max_pixels:
        raise ValueError(f"min_pixels: must be at most max_pixels ({max_pixels}), got {min_pixels}")


def _constructor(engine: str, model: str) -> tuple[Any, tuple[str, ...]]:
    """The engine's class and the arguments it takes before its options."""
    if engine == "program":
        from data_tools.toyworld.teacher import program_class

        return program_class(model), ()
    if engine == "hf":
        from openvlt.engines.hf import HFEngine

        return HFEngine, (model,)
    raise ValueError(f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")
