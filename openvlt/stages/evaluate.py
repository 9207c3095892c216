"""Evaluate: accuracy of a checkpoint on the held-out sets, with a sample of its outputs kept.

Run for the base student and after every SFT and GRPO stage. Each problem is judged by its own
reward plugin; an answer the plugin could not judge (error, timeout) counts as wrong and is
reported separately, so a broken plugin shows up as errors, not as a model that got worse; a set on
which no answer could be judged stops the stage (its accuracy would be no measurement at all).
"""
from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

from openvlt.engines import Engine, Sampling
from openvlt.recipe import RewardSettings
from openvlt.stages.common import count_failures, generate_in_chunks, score_responses, student_request
from openvlt.files import atomic_write
from rewards.batch import nothing_judged


def evaluate_model(
    eval_sets: dict[str, list[dict[str, Any]]],
    model_label: str,
    engine: Engine,
    out_path: str | Path,
    *,
    prompt: str,
    sampling: Sampling,
    scratch: Path,
    samples_kept: int = 16,
    judge: RewardSettings = RewardSettings(),
    chunk_size: int = 256,
    system: str | None = None,
    set_aside: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Write `{"model", "sets": {name: {accuracy, n, ...}}}` JSON to `out_path`; return accuracies.

    `set_aside`: per set, the bad input rows left out (data.skip_bad_rows), recorded beside `n` so that
    an accuracy over fewer problems than the file holds says so."""
    set_aside = set_aside or {}
    report: dict[str, Any] = {"model": model_label, "sets": {}}
    for name, problems in eval_sets.items():
        if not problems:  # an accuracy of nothing is no number; the loop's slices are never empty, a caller's may be
            raise ValueError(f"held-out set {name!r} has no problems to evaluate")
        requests = [student_request(p, prompt, system) for p in problems]
        answers = generate_in_chunks(engine, requests, sampling, scratch / name, chunk_size, f"evaluate:{name}", f"eval {name}",
                                     [p["id"] for p in problems])
        verdicts = score_responses(problems, answers, judge)
        if not any(v[0].ok for v in verdicts):
            raise ValueError(nothing_judged(f"held-out set {name!r}", "answers", [v[0] for v in verdicts]))
        right = [judge.is_correct(v[0]) for v in verdicts]
        by_kind: dict[str, list[bool]] = collections.defaultdict(list)
        for p, ok in zip(problems, right):
            by_kind[str(p["extra_info"].get("kind", p["data_source"]))].append(ok)
        report["sets"][name] = {
            "n": len(problems),
            "set_aside": set_aside.get(name, 0),
            "accuracy": sum(right) / len(right),
            **count_failures(verdicts),
            "by_kind": {k: sum(v) / len(v) for k, v in sorted(by_kind.items())},
            "samples": [
                {"id": problems[i]["id"], "question": problems[i]["question"], "answer": problems[i]["answer"],
                 "response": answers[i][0], "score": verdicts[i][0].score if verdicts[i][0].ok else None,
                 "error": verdicts[i][0].error}
                for i in _sample_rows(right, samples_kept)
            ],
        }
    atomic_write(Path(out_path), json.dumps(report, indent=2) + "\n")
    return {"in": sum(s["n"] for s in report["sets"].values())} | {
        f"accuracy/{name}": s["accuracy"] for name, s in report["sets"].items()} | {
        f"set_aside/{name}": s["set_aside"] for name, s in report["sets"].items() if s["set_aside"]} | {
        "reward_errors": sum(s["reward_errors"] for s in report["sets"].values()),
        "reward_timeouts": sum(s["reward_timeouts"] for s in report["sets"].values()),
    }


def _sample_rows(right: list[bool], kept: int) -> list[int]:
    """Rows whose outputs are kept for the report: the first wrong answers and the first right ones,
    half each where there are enough (what a model gets wrong is what a reader wants to see)."""
    wrong = [i for i, ok in enumerate(right) if not ok]
    correct = [i for i, ok in enumerate(right) if ok]
    n_wrong = min(len(wrong), max(kept - len(correct), kept // 2))
    return sorted(wrong[:n_wrong] + correct[: kept - n_wrong])
