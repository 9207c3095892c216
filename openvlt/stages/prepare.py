"""Prepare: build what the embedded default needs before iteration 1, offline.

The toy world (problem records) and the tiny student (a Hugging Face folder) are built into the
run directory, so `openvlt run recipes/tiny-cpu.yaml` works on a fresh clone with no downloads.
Real recipes leave the `prepare` block empty and point at their own data and models.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def prepare_inputs(
    toyworld: dict[str, Any] | None, tiny_student: dict[str, Any] | None, out: dict[str, Path]
) -> dict[str, Any]:
    """Build the toy world into `out["toyworld"]` and the tiny student into `out["tiny_student"]`."""
    counts: dict[str, Any] = {}
    if toyworld is not None:
        from data_tools.toyworld.dataset import build_toyworld

        args = {k: v for k, v in toyworld.items() if k != "out"}
        if "levels" in args:
            args["levels"] = tuple(args["levels"])
        stats = build_toyworld(out["toyworld"], **args)
        counts |= {"problems": stats["train"]["n"] + stats["test"]["n"],
                   "best_constant": stats["test"]["best_constant"]["accuracy"]}
    if tiny_student is not None:
        from data_tools.tiny_model import TinySize, build_tiny_student

        size = TinySize(**{k: v for k, v in tiny_student.items() if k not in ("out", "seed")})
        build_tiny_student(out["tiny_student"], size, seed=tiny_student.get("seed", 0))
        counts["student"] = f"hidden {size.hidden} x {size.layers} layers, vision {size.vision_hidden} x {size.vision_depth}"
    return counts
