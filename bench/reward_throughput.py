"""Throughput of the reward batch scorer, and what one runaway item costs a batch.

    .venv/bin/python bench/reward_throughput.py [--items 20000] [--timeout 2]

Prints items/s for: raw math-verify (``verify(parse(truth), parse(response))``, sequential, this
process), our scorer with 1 worker, and with every core; then the ratio against the target
``all-core >= 0.8 x cores x raw single-core rate``; then the delay one runaway item adds to a
batch, against the target ``delay <= its timeout``. Not a test: numbers depend on the machine.

The items mix what openvlt scores: toy-world counting traces (right and wrong), multiple choice,
LaTeX answers (fractions, radicals, pi, sets, intervals, equations), short text, and garbage from
an untrained model.
"""
from __future__ import annotations

import argparse
import random
import time

from rewards import RewardScorer
from rewards.batch import default_workers


def stall(response: str, ground_truth: str, *, extra_info: dict) -> float:
    """A runaway plugin: spins until killed (stands for any item that never finishes)."""
    while True:
        pass


def mixed_items(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    latex = [("\\frac{1}{2}", "0.5"), ("2\\sqrt{2}", "\\sqrt{8}"), ("\\frac{\\pi}{3}", "\\frac{\\pi}{3}"),
             ("\\{1, 2\\}", "\\{2, 1\\}"), ("(1, 2]", "(1, 2]"), ("y = 2x + 1", "2x - y + 1 = 0"),
             ("\\frac{1}{2^{99}}", "\\frac{1}{2^{98}}"), ("x^2 + 2x + 1", "(x+1)^2"), ("3\\sqrt{3}", "\\sqrt{27}")]
    words = ["red", "blue", "cube", "sphere", "yes", "no", "cylinder"]
    items = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.35:  # toy world
            truth = rng.randint(0, 9)
            said = truth if rng.random() < 0.6 else rng.randint(0, 9)
            response = (f"<think>Row 1: red circle, empty, blue square. Row 2: empty, red circle, empty. "
                        f"Counting: {said}.</think> <answer>{said}</answer>")
            items.append({"response": response, "ground_truth": str(truth)})
        elif kind < 0.5:  # multiple choice
            letter = rng.choice("ABCD")
            items.append({"response": f"<think>Option {letter} fits.</think> <answer>{letter}</answer>",
                          "ground_truth": rng.choice("ABCD"), "extra_info": {"choices": ["2", "4", "3", "5"]}})
        elif kind < 0.75:  # LaTeX
            answer, truth = rng.choice(latex)
            items.append({"response": f"<think>Simplify.</think> The result is \\boxed{{{answer}}}.", "ground_truth": truth})
        elif kind < 0.85:  # short text
            items.append({"response": f"<think>Look.</think> <answer>{rng.choice(words)}</answer>",
                          "ground_truth": rng.choice(words)})
        else:  # garbage from an untrained model
            tokens = ["<", "think", ">", "ans", "wer", "3", "{", "}", "\\", "box", "ed", " ", "the", "##", "!!"]
            items.append({"response": "".join(rng.choice(tokens) for _ in range(rng.randint(20, 400))),
                          "ground_truth": str(rng.randint(0, 9))})
    return items


def raw_math_verify_rate(items: list[dict]) -> float:
    from math_verify import parse, verify

    started = time.perf_counter()
    for item in items:
        verify(parse(f"${item['ground_truth']}$"), parse(item["response"]))
    return len(items) / (time.perf_counter() - started)


def scorer_rate(items: list[dict], workers: int, timeout: float) -> tuple[float, float]:
    """(warm items/s, cold items/s including starting the workers)."""
    started = time.perf_counter()
    with RewardScorer(workers=workers) as scorer:
        warm_up = scorer.score(items[: 50 * workers], "math", timeout=timeout)
        cold_part = time.perf_counter() - started
        begun = time.perf_counter()
        results = scorer.score(items, "math", timeout=timeout)
        warm = len(items) / (time.perf_counter() - begun)
    assert results.summary.errors == results.summary.timeouts == 0, results.summary
    cold = (len(items) + len(warm_up)) / (cold_part + len(items) / warm)
    return warm, cold


def runaway_delay(items: list[dict], workers: int, timeout: float) -> tuple[float, float, str]:
    """Seconds a batch takes without and with one runaway item in it, and the runaway's status."""
    runaway = {"response": "x", "ground_truth": "x", "reward": f"{__file__}:stall"}
    with RewardScorer(workers=workers) as scorer:
        scorer.score(items[:100], "math", timeout=timeout)  # start the workers
        started = time.perf_counter()
        scorer.score(items, "math", timeout=timeout)
        clean = time.perf_counter() - started
        middle = len(items) // 2
        started = time.perf_counter()
        results = scorer.score(items[:middle] + [runaway] + items[middle:], "math", timeout=timeout)
        dirty = time.perf_counter() - started
    return clean, dirty, results[middle].status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--timeout", type=float, default=2.0, help="per-item limit for the runaway test")
    args = parser.parse_args()
    cores = default_workers()
    items = mixed_items(args.items)

    raw = raw_math_verify_rate(items)
    one_warm, one_cold = scorer_rate(items, 1, timeout=10.0)
    all_warm, all_cold = scorer_rate(items, cores, timeout=10.0)
    target = 0.8 * cores * raw
    print(f"items: {len(items)} mixed, cores: {cores}")
    print(f"raw math-verify, sequential, 1 process: {raw:8.0f} items/s")
    print(f"scorer, 1 worker:                       {one_warm:8.0f} items/s warm ({one_cold:.0f} incl. worker start)")
    print(f"scorer, {cores} workers:                      {all_warm:8.0f} items/s warm ({all_cold:.0f} incl. worker start)")
    print(f"all-core / (cores x raw) = {all_warm / (cores * raw):.2f}  (target >= 0.80: "
          f"{'met' if all_warm >= target else 'NOT met'})")
    print(f"1 worker / raw = {one_warm / raw:.2f};  all-core / 1 worker = {all_warm / one_warm:.2f}")

    batch = items[: min(len(items), 4000)]
    clean, dirty, status = runaway_delay(batch, cores, args.timeout)
    delay = dirty - clean
    print(f"runaway item: batch of {len(batch)} took {clean:.2f} s clean, {dirty:.2f} s with one runaway "
          f"(status {status!r}); delay {delay:.2f} s vs timeout {args.timeout:.1f} s "
          f"({'met' if delay <= args.timeout else 'NOT met'})")


if __name__ == "__main__":
    main()
