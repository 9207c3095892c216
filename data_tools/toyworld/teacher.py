"""The toy world's program teacher, behind openvlt's generation-engine interface.

    captioner = build_program("toyworld-captioner")
    reasoner = build_program("toyworld-reasoner", error_rate=0.3)
    texts = reasoner.generate([Request("...caption... Question: ...")], Sampling(n=4))

The loop treats these exactly like a vLLM or transformers model: requests in, n texts per request
out. Outputs are deterministic given (request, sampling.seed, sample index), so a stage that is
re-run after a crash writes the same rows again.
"""
from __future__ import annotations

import hashlib
import random
from typing import Sequence

from data_tools.toyworld.captioner import caption_image
from data_tools.toyworld.reasoner import write_trace
from openvlt.engines import Request, RequestError, Sampling


class ToyWorldCaptioner:
    """Describes the first image of each request from its pixels, missing each shape with `miss_rate`."""

    def __init__(self, miss_rate: float = 0.0):
        if not 0 <= miss_rate <= 1:
            raise ValueError(f"miss_rate must be in [0, 1], got {miss_rate}")
        self.miss_rate = miss_rate

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> list[list[str]]:
        out = []
        for i, request in enumerate(requests):
            if not request.images:
                raise RequestError(i, "the toy-world captioner needs an image in every request")
            try:
                out.append([caption_image(request.images[0], _rng(request, sampling, k), self.miss_rate)
                            for k in range(sampling.n)])
            except ValueError as exc:  # not a toy-world grid: the stage names the problem
                raise RequestError(i, str(exc)) from exc
        return out


class ToyWorldReasoner:
    """Answers from caption + question text only, with mistakes at `error_rate`."""

    def __init__(self, error_rate: float = 0.3, reflect_rate: float = 0.1):
        if not 0 <= error_rate <= 1 or not 0 <= reflect_rate <= 1:
            raise ValueError(f"error_rate and reflect_rate must be in [0, 1], got {error_rate}, {reflect_rate}")
        self.error_rate, self.reflect_rate = error_rate, reflect_rate

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> list[list[str]]:
        return [
            [write_trace(r.prompt, _rng(r, sampling, k), self.error_rate, self.reflect_rate).text for k in range(sampling.n)]
            for r in requests
        ]


PROGRAMS = {"toyworld-captioner": ToyWorldCaptioner, "toyworld-reasoner": ToyWorldReasoner}


def program_class(name: str) -> type[ToyWorldCaptioner] | type[ToyWorldReasoner]:
    if name not in PROGRAMS:
        raise ValueError(f"unknown program model {name!r} (known: {', '.join(PROGRAMS)})")
    return PROGRAMS[name]


def build_program(name: str, **options) -> ToyWorldCaptioner | ToyWorldReasoner:
    return program_class(name)(**options)


def _rng(request: Request, sampling: Sampling, k: int) -> random.Random:
    digest = hashlib.sha256(request.prompt.encode())
    for image in request.images:
        digest.update(image)
    return random.Random(f"{digest.hexdigest()}/{sampling.seed}/{k}")
