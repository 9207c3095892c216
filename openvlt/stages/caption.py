"""Caption: the captioner role describes each problem's images in words.

This is how a text-only reasoner gets to "see" (OpenVLThinker, step 1). The default prompt asks
for a description detailed enough that another AI model could understand the image completely.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from openvlt.engines import IMAGE_PLACEHOLDER, Engine, Request, Sampling
from openvlt.recipe import check_prompt
from openvlt.records import write_records
from openvlt.stages.common import fill, generate_in_chunks, text_of


def caption_problems(
    problems: Sequence[dict[str, Any]],
    captioner: Engine | None,
    out_path: str | Path,
    *,
    prompt: str,
    sampling: Sampling,
    scratch: Path,
    chunk_size: int = 256,
    system: str | None = None,
    source: str = "captioner",
) -> dict[str, Any]:
    """Write the problems plus a `caption` column to `out_path`; return counts. A text-only problem has
    nothing to describe: its caption is empty, and the captioner is not asked (None will do when no
    problem has an image, so a large captioner is not loaded for nothing)."""
    check_prompt("captioner", prompt)
    pictured = [p for p in problems if p["images"]]
    if pictured and captioner is None:
        raise ValueError(f"{len(pictured)} problems have images, but no captioner was given")
    requests = [
        Request(fill(prompt, question=text_of(p["question"])).replace(IMAGE_PLACEHOLDER, IMAGE_PLACEHOLDER * len(p["images"])),
                tuple(p["images"]), system)
        for p in pictured
    ]
    # (chunks in a folder of their own: those an older openvlt saved were made over every problem)
    described = iter(generate_in_chunks(captioner, requests, sampling, scratch / "pictured", chunk_size, "caption", "caption",
                                            [p["id"] for p in pictured]))
    rows = [{**p, "caption": next(described)[0], "caption_source": source} if p["images"] else
            {**p, "caption": "", "caption_source": None} for p in problems]
    write_records(rows, out_path)
    empty = sum(not row["caption"].strip() for row in rows if row["images"])
    return {"in": len(problems), "out": len(rows), "empty_captions": empty, "text_only": len(problems) - len(pictured)}
