"""Build the toy-world data set: train and held-out test problem records, deterministic by seed.

    openvlt data toyworld --n 2000 --seed 0 --out data/toyworld

writes `train.parquet`, `test.parquet` and `stats.json` (counts per kind and level, the answer
histogram, and the best-constant baseline on the test split). The splits never share a scene:
train scenes that also occur in the test split are redrawn.
"""
from __future__ import annotations

import collections
import json
import logging
import random
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from data_tools.toyworld.questions import KINDS, sample_problem
from data_tools.toyworld.scene import CELL_PX, Scene, render_scene
from openvlt.records import write_records

log = logging.getLogger(__name__)

# Two-step kinds (more_than, sum, difference) make up 35 % of problems by default.
MAX_GRID = 8  # the tiny student's processor takes images up to 224 x 224 pixels: 8 cells of 28
DEFAULT_KINDS = {"count_colour": 0.2, "count_shape": 0.2, "count_both": 0.25, "more_than": 0.1, "sum": 0.1, "difference": 0.15}


def toyworld_problem(grid: int = 3, kinds: dict[str, float] | None = None, levels: Sequence[int] = (1, 2, 3)) -> str | None:
    """Why `build_toyworld` could not build with these arguments ("<argument>: why"), else None."""
    unknown = [k for k in (kinds or {}) if k not in KINDS]
    if unknown:
        return f"kinds: unknown question kind {unknown[0]!r}; the kinds are {', '.join(KINDS)}"
    if not any(KINDS[k][0] in levels and w > 0 for k, w in (kinds or DEFAULT_KINDS).items()):
        return f"kinds: no question kind with a weight above 0 has a level in {list(levels)}"
    if not 3 <= grid <= MAX_GRID:
        return (f"grid: must be 3 to {MAX_GRID}, got {grid} (answers go up to 8, and a larger grid's image is over the tiny "
                f"student's {MAX_GRID * CELL_PX} x {MAX_GRID * CELL_PX} pixels, one image token a cell)")
    return None


def build_toyworld(
    out_dir: str | Path,
    n_train: int,
    n_test: int = 300,
    seed: int = 0,
    grid: int = 3,
    kinds: dict[str, float] | None = None,
    levels: tuple[int, ...] = (1, 2, 3),
    mc_fraction: float = 0.2,
    reward: str = "toyworld",
) -> dict[str, Any]:
    """Write train/test record files to `out_dir` and return the statistics written to stats.json."""
    problem = toyworld_problem(grid, kinds, levels)
    if problem:
        raise ValueError(problem)
    kinds = {k: w for k, w in (kinds or DEFAULT_KINDS).items() if KINDS[k][0] in levels and w > 0}
    out = Path(out_dir)
    test = _problems("test", n_test, seed, grid, kinds, mc_fraction, reward, exclude=set())
    test_scenes = {row.pop("_scene") for row in test}
    train = _problems("train", n_train, seed, grid, kinds, mc_fraction, reward, exclude=test_scenes)
    for row in train:
        row.pop("_scene")
    write_records(train, out / "train.parquet")
    write_records(test, out / "test.parquet")
    stats = {"seed": seed, "grid": grid, "train": _stats(train), "test": _stats(test)}
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    log.info(
        "toy world: %d train + %d test problems; best constant answer on test %r scores %.3f",
        len(train), len(test), stats["test"]["best_constant"]["answer"], stats["test"]["best_constant"]["accuracy"],
    )
    return stats


def scene_code(scene: Scene) -> str:
    """Compact text form kept in extra_info for analysis, e.g. 'red circle,-,blue square;...'."""
    return ";".join(",".join(f"{c[0]} {c[1]}" if c else "-" for c in row) for row in scene.cells)


def _problems(split, n, seed, grid, kinds, mc_fraction, reward, exclude) -> list[dict[str, Any]]:
    rows = []
    for i in tqdm(range(n), desc=f"toy world {split}", unit="problem", disable=n < 500):
        rng = random.Random(f"toyworld/{seed}/{split}/{i}")  # per-problem stream: rows are independent
        while True:
            scene, question, answer = sample_problem(rng, grid, kinds, mc_fraction)
            if scene not in exclude:
                break
        extra = {
            "kind": question.kind,
            "level": question.level,
            "steps": KINDS[question.kind][1],
            "grid": grid,
            "scene": scene_code(scene),
            "targets": [" ".join(w for w in t if w) for t in question.targets],  # what each counting pass counts
            "answer_type": "choice" if question.choices else "integer",
        }
        if question.choices:
            extra["choices"] = list(question.choices)
        rows.append({
            "id": f"toyworld-{seed}-{split}-{i:06d}",
            "images": [render_scene(scene, rng)],
            "question": f"{question.text()}\n<image>",  # question before the image (see STACK.md)
            "answer": answer,
            "data_source": "toyworld",
            "reward": reward,
            "extra_info": extra,
            "_scene": scene,
        })
    return rows


def _stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    answers = collections.Counter(r["answer"] for r in rows)
    top, top_n = answers.most_common(1)[0] if rows else ("", 0)
    steps = collections.Counter(r["extra_info"]["steps"] for r in rows)
    return {
        "n": len(rows),
        "kinds": dict(collections.Counter(r["extra_info"]["kind"] for r in rows)),
        "levels": dict(collections.Counter(r["extra_info"]["level"] for r in rows)),
        "two_step_fraction": steps.get(2, 0) / max(1, len(rows)),
        "multiple_choice_fraction": sum("choices" in r["extra_info"] for r in rows) / max(1, len(rows)),
        "answers": dict(sorted(answers.items())),
        "best_constant": {"answer": top, "accuracy": top_n / max(1, len(rows))},
    }
