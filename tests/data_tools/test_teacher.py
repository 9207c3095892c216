"""The program teacher: a captioner that reads pixels and a text-only reasoner that errs on purpose."""
import re

import pytest

from data_tools.toyworld.captioner import parse_caption, read_grid
from data_tools.toyworld.dataset import build_toyworld, scene_code
from data_tools.toyworld.teacher import build_program
from openvlt.engines import EngineSpec, Request, Sampling, build_engine
from openvlt.records import read_records


@pytest.fixture(scope="module")
def problems(tmp_path_factory):
    out = tmp_path_factory.mktemp("tw")
    build_toyworld(out, n_train=500, n_test=100, seed=11, grid=3)
    build_toyworld(out / "g4", n_train=100, n_test=10, seed=12, grid=4)
    return list(read_records(out / "train.parquet")) + list(read_records(out / "g4" / "train.parquet"))


def final_answer(text: str) -> str | None:
    found = re.findall(r"<answer>(.*?)</answer>", text)
    return found[-1].strip() if found else None


def test_captioner_recovers_the_scene_from_pixels(problems):
    exact = sum(scene_code(read_grid(p["images"][0])) == p["extra_info"]["scene"] for p in problems)
    assert exact / len(problems) >= 0.99


def test_captioner_engine_writes_captions_that_describe_every_cell(problems):
    captioner = build_engine(EngineSpec("program", "toyworld-captioner"))
    requests = [Request("Describe this image in detail. <image>", (p["images"][0],)) for p in problems[:50]]
    captions = captioner.generate(requests, Sampling(n=2, seed=3))
    assert len(captions) == 50 and all(len(c) == 2 for c in captions)
    for p, (first, second) in zip(problems, captions):
        assert scene_code(parse_caption(first)) == p["extra_info"]["scene"] == scene_code(parse_caption(second))
    assert captioner.generate(requests[:5], Sampling(n=2, seed=3)) == captions[:5]  # deterministic
    assert any(a != b for a, b in captions)  # wording varies between samples
    with pytest.raises(ValueError, match="needs an image"):
        captioner.generate([Request("no image here")], Sampling())


def test_lossy_captioner_misses_shapes_at_its_rate_and_more_often_in_crowded_scenes(problems):
    grid3 = [p for p in problems if p["extra_info"]["grid"] == 3]
    requests = [Request("<image>", (p["images"][0],)) for p in grid3]
    captioner = build_program("toyworld-captioner", miss_rate=0.1)
    captions = [c[0] for c in captioner.generate(requests, Sampling(seed=5))]
    truth = [read_grid(p["images"][0]) for p in grid3]
    seen = [parse_caption(c) for c in captions]
    shapes = sum(len(t.items()) for t in truth)
    missed = sum(len(t.items()) - len(s.items()) for t, s in zip(truth, seen))
    assert abs(missed / shapes - 0.1) < 0.02, missed / shapes
    for t, s in zip(truth, seen):  # a miss turns a shape into an empty cell; nothing is invented
        assert all(cs in (ct, None) for rt, rs in zip(t.cells, s.cells) for ct, cs in zip(rt, rs))
    wrong = [(len(t.items()), scene_code(s) != scene_code(t)) for t, s in zip(truth, seen)]
    sparse = [w for n, w in wrong if n <= 4]
    crowded = [w for n, w in wrong if n >= 7]
    assert sum(crowded) / len(crowded) > sum(sparse) / len(sparse) + 0.15
    assert [c[0] for c in captioner.generate(requests[:20], Sampling(seed=5))] == captions[:20]  # deterministic
    lossless = build_program("toyworld-captioner").generate(requests[:50], Sampling(seed=5))  # the default misses nothing
    assert [scene_code(parse_caption(c[0])) for c in lossless] == [scene_code(t) for t in truth[:50]]
    with pytest.raises(ValueError, match="miss_rate"):
        build_program("toyworld-captioner", miss_rate=2)


def distill(problems, error_rate: float | None, n: int):
    """Traces of the reasoner at `error_rate` (None: its default) from lossless captions."""
    options = {} if error_rate is None else {"error_rate": error_rate}
    captioner, reasoner = build_program("toyworld-captioner"), build_program("toyworld-reasoner", **options)
    captions = captioner.generate([Request("<image>", (p["images"][0],)) for p in problems], Sampling())
    requests = [Request(f"Image description: {c[0]}\nQuestion: {p['question'].replace('<image>', '')}")
                for p, c in zip(problems, captions)]
    return reasoner.generate(requests, Sampling(n=n, seed=1))


@pytest.mark.parametrize("error_rate", [0.0, 0.3, 0.6])
def test_reasoner_wrong_answer_rate_matches_its_setting(problems, error_rate):
    traces = distill(problems, error_rate, n=4)
    answers = [(final_answer(t), p["answer"]) for p, ts in zip(problems, traces) for t in ts]
    wrong = sum(got != want for got, want in answers) / len(answers)
    assert abs(wrong - error_rate) < 0.035, wrong


def test_default_reasoner_errs_at_least_a_quarter_of_the_time(problems):
    """The embedded default's teacher must leave verify + select something to reject."""
    traces = distill(problems[:200], None, n=4)
    answers = [(final_answer(t), p["answer"]) for p, ts in zip(problems, traces) for t in ts]
    assert sum(got != want for got, want in answers) / len(answers) >= 0.25


def test_traces_are_describe_first_think_answer_with_varied_wording(problems):
    traces = distill(problems[:100], 0.3, n=4)
    for p, ts in zip(problems, traces):
        for t in ts:
            assert re.fullmatch(r"<think>.+</think> <answer>[^<]+</answer>", t, re.S), t
            size = p["extra_info"]["grid"]
            assert all(f"Row {r}:" in t for r in range(1, size + 1))  # the scene is described first
            if choices := p["extra_info"].get("choices"):  # options quoted as the question writes them
                quoted = re.search(r"Options: (.*?)\. (?:So|None)", t)[1]
                assert [q.rsplit(" ", 1)[0] for q in quoted.split(", ")] == re.findall(r"\([A-D]\) \S+", p["question"])
    assert sum(len(set(ts)) > 1 for ts in traces) > 80
    assert any("Wait," in t for ts in traces for t in ts)  # reflections exist for truncation to cut


def test_reasoner_sees_only_text_and_copes_with_prompts_it_cannot_use():
    reasoner = build_program("toyworld-reasoner")
    out = reasoner.generate([Request("What is the capital of France?")], Sampling(n=1))
    assert final_answer(out[0][0]) is not None  # still answers in the format, like an LLM would
    with pytest.raises(ValueError, match="error_rate"):
        build_program("toyworld-reasoner", error_rate=1.5)
    with pytest.raises(ValueError, match="unknown program model"):
        build_program("mathvista-teacher")
