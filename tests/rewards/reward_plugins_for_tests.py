"""Plugins the reward tests register: they misbehave on purpose (hang, crash, eat memory, lie)."""
from __future__ import annotations

import os
import time

from rewards import register


@register("test_echo")
def echo(response: str, ground_truth: str, *, extra_info: dict) -> dict:
    """Scores 1.0 when response == ground truth; reports its process id as a component."""
    return {"score": float(response == ground_truth), "pid": float(os.getpid())}


@register("test_misbehave")
def misbehave(response: str, ground_truth: str, *, extra_info: dict) -> float:
    """Does what the response says: hang, sleep, crash, allocate, raise, or score 1.0."""
    if response == "hang":
        while True:  # pure-Python busy loop: signal.alarm-free code that never returns
            pass
    if response == "sleep":
        time.sleep(600)
    if response == "crash":
        os._exit(7)
    if response == "bigint":  # C-level big-integer arithmetic that holds the GIL
        return float(5 ** 5 ** 5 ** 5 % 7)
    if response == "memory":  # 1 GiB: fits this machine, not a worker capped below it
        blob = bytearray(2**30)
        return float(len(blob))
    if response == "raise":
        raise ValueError("the plugin failed on purpose")
    return 1.0


@register("test_bad_return")
def bad_return(response: str, ground_truth: str, *, extra_info: dict) -> object:
    """Returns what the response names instead of a score (or a component)."""
    return {"string": "1.0", "nan": float("nan"), "inf": float("inf"), "dict": {"accuracy": 1.0},
            "none": None, "dict_nan": {"score": float("nan")}, "part_nan": {"score": 1.0, "acc": float("nan")},
            "string_score": {"score": "1.0"}}[response]


@register("test_parts")
def parts(response: str, ground_truth: str, *, extra_info: dict) -> dict:
    """Components that depend on the item: a length penalty only on long responses; raises on "raise"."""
    if response == "raise":
        raise KeyError("choices")
    out = {"score": float(response == ground_truth), "acc": float(response == ground_truth)}
    if len(response) > 10:
        out["length_penalty"] = -0.1
    return out


def score_in_child(n: int) -> list[float]:
    """Score n toy items through the shared pool of whatever process runs this (a pool worker, Ray)."""
    from rewards import score_batch

    items = [{"response": f"<think>count</think> <answer>{i % 3}</answer>", "ground_truth": "1"} for i in range(n)]
    results = score_batch(items, "math", workers=1, timeout=5.0)
    assert results.summary.ok == n, results.summary
    return results.scores()
