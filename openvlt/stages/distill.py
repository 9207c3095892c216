"""Distill: a text-only reasoner answers from caption + question, k traces per problem.

OpenVLThinker, step 2: the reasoner never sees the image, only the caption, so its traces describe
the scene in words before reasoning: the dense visual supervision the student learns from.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from openvlt.engines import IMAGE_PLACEHOLDER, Engine, Request, Sampling
from openvlt.recipe import check_prompt
from openvlt.records import write_records
from openvlt.stages.common import fill, generate_in_chunks, text_of


def distill_traces(
    captioned: Sequence[dict[str, Any]],
    reasoner: Engine,
    out_path: str | Path,
    *,
    prompt: str,
    sampling: Sampling,
    scratch: Path,
    chunk_size: int = 256,
    system: str | None = None,
    source: str = "reasoner",
) -> dict[str, Any]:
    """Write the captioned problems plus `traces` (k per problem) and `trace_source`; return counts."""
    check_prompt("reasoner", prompt)
    # a caption is model output: an "<image>" in it would ask the text-only reasoner for an image it does not get
    requests = [Request(fill(prompt, caption=p["caption"].replace(IMAGE_PLACEHOLDER, "image") if p["images"] else "(no image)",
                             question=text_of(p["question"])), (), system) for p in captioned]
    traces = generate_in_chunks(reasoner, requests, sampling, scratch, chunk_size, "distill", "distill", [p["id"] for p in captioned])
    rows = [{**p, "traces": list(t), "trace_source": source} for p, t in zip(captioned, traces)]
    write_records(rows, out_path)
    return {"in": len(captioned), "out": len(rows), "traces": sum(len(t) for t in traces)}
