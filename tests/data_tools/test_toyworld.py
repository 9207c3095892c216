"""The toy world: deterministic, disjoint splits, answers that are right by an independent recount."""
import io
import json
import re
import subprocess

import numpy as np
import pytest
from PIL import Image

from data_tools.toyworld.dataset import build_toyworld
from openvlt.records import read_records

from ..conftest import OPENVLT


# --- an independent reading of the pixels (not the captioner's method) ---------------------------
def recount_cells(png: bytes) -> list[tuple[str, str] | None]:
    """Colour by dominant channel(s), shape by which bounding-box corners are filled."""
    px = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    n = px.shape[0] // 28
    cells = []
    for r in range(n):
        for c in range(n):
            cell = px[r * 28 + 1 : (r + 1) * 28, c * 28 + 1 : (c + 1) * 28]
            ink = (cell.max(-1) - cell.min(-1)) > 60
            if ink.sum() < 30:
                cells.append(None)
                continue
            red, green, blue = cell[ink].mean(0)
            colour = "yellow" if red > 150 and green > 120 else max(
                [("red", red), ("green", green), ("blue", blue)], key=lambda kv: kv[1])[0]
            ys, xs = np.nonzero(ink)
            top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
            corners = [ink[top, left], ink[top, right], ink[bottom, left], ink[bottom, right]]
            shape = "square" if all(corners) else "triangle" if corners[2] and corners[3] else "circle"
            cells.append((colour, shape))
    return cells


def answer_from_cells(question: str, cells) -> int:
    """Interpret the question text on its own terms."""
    def count(phrase: str) -> int:
        words = phrase.split()
        colour = words[0] if len(words) == 2 else None
        noun = words[-1]
        shape = None if noun == "shapes" else noun[:-1]
        return sum(1 for x in cells if x and colour in (None, x[0]) and shape in (None, x[1]))

    target = r"((?:(?:red|green|blue|yellow) )?(?:circles|squares|triangles|shapes))"
    if m := re.search(rf"How many more {target} than {target}", question):
        return count(m[1]) - count(m[2])
    if m := re.search(rf"number of {target} plus the number of {target}", question):
        return count(m[1]) + count(m[2])
    if m := re.search(rf"number of {target} minus the number of {target}", question):
        return count(m[1]) - count(m[2])
    m = re.search(rf"How many {target} are there", question)
    return count(m[1])


def test_answers_match_an_independent_recount_from_pixels(toyworld_dir):
    checked = 0
    for split in ("train", "test"):
        for rec in read_records(toyworld_dir / f"{split}.parquet"):
            value = answer_from_cells(rec["question"], recount_cells(rec["images"][0]))
            choices = rec["extra_info"].get("choices")
            expected = "ABCD"[choices.index(str(value))] if choices else str(value)
            assert rec["answer"] == expected, (rec["id"], rec["question"])
            checked += 1
    assert checked == 160


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    a = build_toyworld(tmp_path / "a", n_train=30, n_test=10, seed=5)
    b = build_toyworld(tmp_path / "b", n_train=30, n_test=10, seed=5)
    c = build_toyworld(tmp_path / "c", n_train=30, n_test=10, seed=6)
    assert a == b and a != c
    for split in ("train", "test"):
        ra, rb = read_records(tmp_path / "a" / f"{split}.parquet"), read_records(tmp_path / "b" / f"{split}.parquet")
        assert [(r["question"], r["answer"], r["images"]) for r in ra] == [(r["question"], r["answer"], r["images"]) for r in rb]
    rc = read_records(tmp_path / "c" / "train.parquet")
    assert [r["images"] for r in rc] != [r["images"] for r in read_records(tmp_path / "a" / "train.parquet")]


def test_splits_share_no_scene_image_or_id(toyworld_dir):
    train = read_records(toyworld_dir / "train.parquet")
    test = read_records(toyworld_dir / "test.parquet")
    scenes = lambda rs: {tuple(recount_cells(r["images"][0])) for r in rs}  # noqa: E731 (from pixels)
    assert not scenes(train) & scenes(test)
    assert not set(train.column("id")) & set(test.column("id"))
    assert not {r["images"][0] for r in train} & {r["images"][0] for r in test}


def test_question_mix_levels_choices_and_answer_range(tmp_path):
    stats = build_toyworld(tmp_path, n_train=600, n_test=300, seed=1)
    test = stats["test"]
    assert test["best_constant"]["accuracy"] <= 0.15
    assert test["two_step_fraction"] >= 0.2
    assert 0.1 <= test["multiple_choice_fraction"] <= 0.3
    assert set(test["levels"]) == {1, 2, 3} or set(test["levels"]) == {"1", "2", "3"}
    assert {"8", "A", "D"} <= set(stats["train"]["answers"])
    records = read_records(tmp_path / "test.parquet")
    for rec in records:
        assert rec["question"].count("<image>") == 1 and rec["question"].index("<image>") > 0  # question first
        if rec["answer"] in "ABCD":
            assert len(rec["extra_info"]["choices"]) == 4 and "Choices: (A)" in rec["question"]
        assert rec["reward"] == "toyworld" and rec["data_source"] == "toyworld"
    assert json.loads((tmp_path / "stats.json").read_text()) == json.loads(json.dumps(stats))


def test_levels_filter_and_bad_arguments(tmp_path):
    stats = build_toyworld(tmp_path, n_train=40, n_test=20, seed=2, levels=(1,))
    assert set(stats["train"]["kinds"]) <= {"count_colour", "count_shape"}
    with pytest.raises(ValueError, match="no question kind"):
        build_toyworld(tmp_path / "x", n_train=5, levels=(7,))
    with pytest.raises(ValueError, match="grid: must be 3 to 8, got 2"):
        build_toyworld(tmp_path / "y", n_train=5, grid=2)
    with pytest.raises(ValueError, match="grid: must be 3 to 8, got 9"):  # over the tiny student's 224 x 224 pixels
        build_toyworld(tmp_path / "y", n_train=5, grid=9)
    with pytest.raises(ValueError, match="kinds: unknown question kind 'count'"):
        build_toyworld(tmp_path / "y", n_train=5, kinds={"count": 1.0})


@pytest.mark.parametrize("grid", [7, 8])
def test_the_largest_grids_are_captioned_and_read_back(tmp_path, grid):
    """Rows past the sixth have ordinals too: a 7 x 7 grid used to build, then stop the run at captioning."""
    import random

    from data_tools.toyworld.captioner import parse_caption, read_grid, write_caption
    from data_tools.toyworld.dataset import scene_code
    from openvlt.records import read_records

    build_toyworld(tmp_path, n_train=10, n_test=2, seed=1, grid=grid)
    rng = random.Random(0)
    for row in read_records(tmp_path / "train.parquet"):
        caption = write_caption(read_grid(row["images"][0]), rng)
        assert scene_code(parse_caption(caption)) == row["extra_info"]["scene"], caption


def test_cli_writes_a_data_set(tmp_path):
    out = tmp_path / "tw"
    done = subprocess.run(
        [OPENVLT, "data", "toyworld", "--n", "40", "--n-test", "20", "--seed", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote 40 train + 20 test problems" in done.stdout and "best constant" in done.stdout
    assert len(read_records(out / "train.parquet")) == 40 and (out / "stats.json").exists()
    bad = subprocess.run([OPENVLT, "data", "toyworld", "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--n" in bad.stderr
