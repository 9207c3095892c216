"""Regenerate: the previous iteration's GRPO model answers the next SFT problems from the images.

OpenVLThinker, iterations 2+: the improved model writes its own next curriculum (k traces per
problem), which verify + select then filters exactly as it filters the reasoner's traces.

With `retries`, problems none of whose traces the reward accepts are sampled again (k more, fresh
seeds), up to `retries` rounds: rejection sampling, as in STaR / ReST-EM. Without it or
`select.keep_previous`, the model's curriculum keeps only what it already solves easily (the problems
it drops are mostly the two-step ones). The embedded default keeps last iteration's trace for those
(`select.keep_previous`) and leaves retries off: on the toy world two rounds took 506 unsolved problems
to 469, for 59 s, since what the model cannot solve it rarely solves on a second try.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

from openvlt.engines import Engine, Sampling
from openvlt.recipe import RewardSettings
from openvlt.records import write_records
from openvlt.stages.common import count_failures, generate_in_chunks, score_responses, student_request
from openvlt.files import atomic_write


def regenerate_traces(
    problems: Sequence[dict[str, Any]],
    student: Engine,
    out_path: str | Path,
    *,
    prompt: str,
    sampling: Sampling,
    scratch: Path,
    chunk_size: int = 256,
    system: str | None = None,
    source: str = "student",
    retries: int = 0,
    judge: RewardSettings = RewardSettings(),
) -> dict[str, Any]:
    """Write the problems plus `traces` (k per problem, more for retried ones) and `trace_source`; return counts."""
    requests = [student_request(p, prompt, system) for p in problems]
    traces = [list(t) for t in generate_in_chunks(student, requests, sampling, scratch, chunk_size, "regenerate", "regenerate",
                                                   [p["id"] for p in problems])]
    counts: dict[str, Any] = {}
    unsolved = list(range(len(problems)))
    for round_ in range(1, retries + 1):
        verdicts = score_responses([problems[i] for i in unsolved], [traces[i][-sampling.n:] for i in unsolved], judge)
        for key, n in count_failures(verdicts).items():
            counts[key] = counts.get(key, 0) + n
        unsolved = _asked_before(scratch / f"retry-{round_}.json",
                                 [i for i, v in zip(unsolved, verdicts) if not any(judge.is_correct(r) for r in v)])
        counts[f"retried_{round_}"] = len(unsolved)
        if not unsolved:
            break
        retry_sampling = dataclasses.replace(sampling, seed=sampling.seed + 1_000_003 * round_)
        more = generate_in_chunks(student, [requests[i] for i in unsolved], retry_sampling, scratch / f"retry-{round_}",
                                  chunk_size, f"regenerate:retry{round_}", f"regenerate retry {round_}",
                                  [problems[i]["id"] for i in unsolved])
        for i, t in zip(unsolved, more):
            traces[i].extend(t)
    rows = [{**p, "traces": t, "trace_source": source} for p, t in zip(problems, traces)]
    write_records(rows, out_path)
    return {"in": len(problems), "out": len(rows), "traces": sum(len(t) for t in traces), **counts}


def _asked_before(path: Path, unsolved: list[int]) -> list[int]:
    """The problems a retry round asks, fixed by its first attempt: verdicts can differ on a rerun (a
    reward that timed out under load), and the round's saved chunks belong to the problems first asked."""
    if path.exists():
        return json.loads(path.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(unsolved))
    return unsolved
