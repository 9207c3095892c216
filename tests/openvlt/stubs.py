"""Test doubles that implement openvlt's engine interface with answers the test controls."""
import re
from typing import Callable, Sequence

from openvlt.engines import Request, Sampling


class ScriptedEngine:
    """Answers each request with `answer_for(prompt, sample_index)` wrapped as a think/answer trace."""

    def __init__(self, answer_for: Callable[[str, int], str]):
        self.answer_for = answer_for
        self.calls = 0

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> list[list[str]]:
        self.calls += 1
        return [[f"<think>scripted</think> <answer>{self.answer_for(r.prompt, k)}</answer>" for k in range(sampling.n)]
                for r in requests]


def question_of(prompt: str) -> str:
    return re.sub(r"\s+", " ", prompt.replace("<image>", "")).strip()
