"""Throughput of the reward batch scorer, and what one runaway item costs a batch.

    .venv/bin/python bench/reward_throughput.py [--items 20000] [--timeout 2] [--runaway-batch 4000]

Prints items/s for: the ``math`` plugin called in this process, one item after another (the
single-core rate), raw math-verify (``verify(parse(truth), parse(response))``, for scale: the plugin
settles most items before it), our scorer with 1 worker, and with every core; then the ratio against
the target ``all-core >= 0.8 x cores x single-core rate``; then the delay one runaway item adds to a
batch of --runaway-batch items, against the target ``delay <= its timeout`` (the runaway sits halfway,
so a batch that takes less than twice the timeout to score leaves little to overlap the wait with,
and the kill and restart show). Not a test: numbers depend on the machine.

The items mix what openvlt scores: toy-world counting traces (right and wrong), multiple choice,
LaTeX answers (fractions, radicals, pi, sets, intervals, equations, with their numbers drawn from
1 to 400, so that at the default size about one LaTeX pair in five repeats and the plugin's parse
cache does not stand in for the work), short text, and garbage from an untrained model.
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
    latex = [  # (answer, truth) for numbers a, b
        lambda a, b: (f"\\frac{{{a}}}{{{a + b}}}", f"\\frac{{{2 * a}}}{{{2 * (a + b)}}}"),
        lambda a, b: (f"{a}\\sqrt{{{b}}}", f"\\sqrt{{{a * a * b}}}"),
        lambda a, b: (f"\\frac{{\\pi}}{{{a}}}", f"\\frac{{\\pi}}{{{a}}}"),
        lambda a, b: (f"\\{{{a}, {a + b}\\}}", f"\\{{{a + b}, {a}\\}}"),
        lambda a, b: (f"({a}, {a + b}]", f"({a}, {a + b}]"),
        lambda a, b: (f"y = {a}x + {b}", f"{a}x - y + {b} = 0"),
        lambda a, b: (f"\\frac{{1}}{{2^{{{a + 60}}}}}", f"\\frac{{1}}{{2^{{{a + 59}}}}}"),
        lambda a, b: (f"x^2 + {2 * a}x + {a * a}", f"(x+{a})^2"),
    ]
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
            answer, truth = rng.choice(latex)(rng.randint(1, 400), rng.randint(1, 400))
            items.append({"response": f"<think>Simplify.</think> The result is \\boxed{{{answer}}}.", "ground_truth": truth})
        elif kind < 0.85:  # short text
            items.append({"response": f"<think>Look.</think> <answer>{rng.choice(words)}</answer>",
                          "ground_truth": rng.choice(words)})
        else:  # garbage from an untrained model
            tokens = ["<", "think", ">", "ans", "wer", "3", "{", "}", "\\", "box", "ed", " ", "the", "##", "!!"]
            items.append({"response": "".join(rng.choice(tokens) for _ in range(rng.randint(20, 400))),
                          "ground_truth": str(rng.randint(0, 9))})
    return items


def in_process_rate(items: list[dict]) -> float:
    """The `math` plugin called here, one item after another, after the scorer's warm-up (50 items)."""
    from rewards import get_reward

    math = get_reward("math")
    for item in items[:50]:
        math(item["response"], item["ground_truth"], extra_info=item.get("extra_info", {}))
    started = time.perf_counter()
    for item in items:
        math(item["response"], item["ground_truth"], extra_info=item.get("extra_info", {}))
    return len(items) / (time.perf_counter() - started)


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
    parser.add_argument("--runaway-batch", type=int, default=4000, help="items in the runaway test's batch")
    args = parser.parse_args()
    cores = default_workers()
    items = mixed_items(max(args.items, args.runaway_batch))

    single = in_process_rate(items[: args.items])
    raw = raw_math_verify_rate(items[: args.items])
    one_warm, one_cold = scorer_rate(items[: args.items], 1, timeout=10.0)
    all_warm, all_cold = scorer_rate(items[: args.items], cores, timeout=10.0)
    print(f"items: {args.items} mixed, cores: {cores}")
    print(f"math plugin, sequential, 1 process:     {single:8.0f} items/s")
    print(f"raw math-verify, sequential, 1 process: {raw:8.0f} items/s (for scale)")
    print(f"scorer, 1 worker:                       {one_warm:8.0f} items/s warm ({one_cold:.0f} incl. worker start)")
    print(f"scorer, {cores} workers:                      {all_warm:8.0f} items/s warm ({all_cold:.0f} incl. worker start)")
    print(f"all-core / (cores x single-core) = {all_warm / (cores * single):.2f}  (target >= 0.80: "
          f"{'met' if all_warm >= 0.8 * cores * single else 'NOT met'})")
    print(f"1 worker / single-core = {one_warm / single:.2f};  all-core / 1 worker = {all_warm / one_warm:.2f}")

    batch = items[: args.runaway_batch]
    clean, dirty, status = runaway_delay(batch, cores, args.timeout)
    delay = dirty - clean
    print(f"runaway item: batch of {len(batch)} took {clean:.2f} s clean, {dirty:.2f} s with one runaway "
          f"(status {status!r}); delay {delay:.2f} s vs timeout {args.timeout:.1f} s "
          f"({'met' if delay <= args.timeout else 'NOT met'})")


if __name__ == "__main__":
    main()
