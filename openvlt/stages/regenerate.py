"""Regenerate: the previous iteration's GRPO model answers the next SFT problems from the images.

OpenVLThinker, iterations 2+: the improved model writes its own next curriculum (k traces per
problem), which verify + select then filters exactly as it filters the reasoner's traces.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from openvlt.engines import Engine, Sampling
from openvlt.records import write_records
from openvlt.stages.common import generate_in_chunks, student_request


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
) -> dict[str, Any]:
    """Write the problems plus `traces` (k per problem) and `trace_source`; return counts."""
    requests = [student_request(p, prompt, system) for p in problems]
    traces = generate_in_chunks(student, requests, sampling, scratch, chunk_size, "regenerate", "regenerate")
    rows = [{**p, "traces": list(t), "trace_source": source} for p, t in zip(problems, traces)]
    write_records(rows, out_path)
    return {"in": len(problems), "out": len(rows), "traces": sum(len(t) for t in traces)}
