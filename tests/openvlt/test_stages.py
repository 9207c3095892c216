"""Each stage on a handful of rows: counts, lineage, selection rules, failure accounting."""
import json
import time
from pathlib import Path

import pytest

from openvlt.engines import EngineSpec, Sampling, build_engine
from openvlt.recipe import RewardSettings
from openvlt.records import read_records
from openvlt.stages.caption import caption_problems
from openvlt.stages.common import load_problems
from openvlt.stages.distill import distill_traces
from openvlt.stages.evaluate import evaluate_model
from openvlt.stages.rl_data import select_rl_problems
from openvlt.stages.select import select_traces, truncate_at_reflection
from rewards import get_reward

from .stubs import ScriptedEngine, question_of

PROMPT = "Image description: {caption}\nQuestion: {question}\nThink, then answer."
PLUGINS = Path(__file__).with_name("plugins.py")
SCRIPTED = RewardSettings(workers=1, override="math")  # scripted answers carry no reasoning for `toyworld` to check


@pytest.fixture(scope="module")
def distilled(toyworld_dir, tmp_path_factory):
    """40 toy problems captioned and distilled (4 traces each) by the program teacher."""
    out = tmp_path_factory.mktemp("distilled")
    problems = load_problems(toyworld_dir / "train.parquet", 0, 40)
    captioner = build_engine(EngineSpec("program", "toyworld-captioner"))
    counts = caption_problems(problems, captioner, out / "captions.parquet", prompt="<image> Describe it.",
                              sampling=Sampling(), scratch=out / "s1")
    assert counts == {"in": 40, "out": 40, "empty_captions": 0, "text_only": 0}
    reasoner = build_engine(EngineSpec("program", "toyworld-reasoner", {"error_rate": 0.4}))
    counts = distill_traces(load_problems(out / "captions.parquet"), reasoner, out / "traces.parquet", prompt=PROMPT,
                            sampling=Sampling(n=4, seed=1), scratch=out / "s2", source="reasoner program:toyworld-reasoner")
    assert counts == {"in": 40, "out": 40, "traces": 160}
    return out


def test_the_captioner_gets_its_system_prompt(toyworld_dir, tmp_path):
    seen = []

    class Recording:
        def generate(self, requests, sampling):
            seen.extend(requests)
            return [["a grid"] for _ in requests]

    caption_problems(load_problems(toyworld_dir / "train.parquet", 0, 3), Recording(), tmp_path / "c.parquet",
                     prompt="<image> Describe it.", sampling=Sampling(), scratch=tmp_path / "s", system="You describe images.")
    assert [r.system for r in seen] == ["You describe images."] * 3


def test_a_text_only_problem_is_not_sent_to_the_captioner(toyworld_dir, tmp_path):
    """Nothing to describe: its caption is empty and no captioner is asked (the toy world's refuses)."""
    pictured = load_problems(toyworld_dir / "train.parquet", 0, 2)
    text_only = {**pictured[0], "id": "text", "question": "What is 2 + 3?", "images": [], "answer": "5"}
    seen = []

    class Recording:
        def generate(self, requests, sampling):
            seen.extend(requests)
            return [[f"grid {i}"] for i in range(len(seen) - len(requests), len(seen))]

    counts = caption_problems([pictured[0], text_only, pictured[1]], Recording(), tmp_path / "c.parquet",
                              prompt="<image> Describe it.", sampling=Sampling(), scratch=tmp_path / "s")
    assert len(seen) == 2 and all(len(r.images) == 1 for r in seen)
    rows = load_problems(tmp_path / "c.parquet")
    assert [(r["id"], r["caption"], r["caption_source"]) for r in rows] == [
        (pictured[0]["id"], "grid 0", "captioner"), ("text", "", None), (pictured[1]["id"], "grid 1", "captioner")]
    assert counts == {"in": 3, "out": 3, "empty_captions": 0, "text_only": 1}
    program = build_engine(EngineSpec("program", "toyworld-captioner"))
    caption_problems([text_only], program, tmp_path / "t.parquet", prompt="<image> Describe it.", sampling=Sampling(),
                     scratch=tmp_path / "s2")
    assert load_problems(tmp_path / "t.parquet")[0]["caption"] == ""


def test_an_engine_that_cannot_answer_a_request_names_the_problem(toyworld_dir, tmp_path):
    """A 1x1 image among toy-world problems: the program captioner's error named no row."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    problems = load_problems(toyworld_dir / "train.parquet", 0, 5)
    problems[3] = {**problems[3], "id": "tiny-one", "images": [buffer.getvalue()]}
    program = build_engine(EngineSpec("program", "toyworld-captioner"))
    with pytest.raises(ValueError, match=r"^caption: not a toy-world image: 1x1 px .* \(problem 'tiny-one'\)$"):
        caption_problems(problems, program, tmp_path / "c.parquet", prompt="<image> Describe it.", sampling=Sampling(),
                         scratch=tmp_path / "s", chunk_size=2)
    assert sorted(p.name for p in (tmp_path / "s" / "pictured").iterdir()) == ["chunk-00000.json"]  # kept for the rerun

    class Refusing:  # an engine that cannot tell which request it could not answer
        def generate(self, requests, sampling):
            raise ValueError("prompt too long")

    with pytest.raises(ValueError, match=rf"^caption: prompt too long \(in the 2 problems from {problems[2]['id']!r} to "
                                         r"'tiny-one'\)$"):
        caption_problems(problems, Refusing(), tmp_path / "r.parquet", prompt="<image> Describe it.", sampling=Sampling(),
                         scratch=tmp_path / "s", chunk_size=2)
    assert not (tmp_path / "c.parquet").exists() and not (tmp_path / "r.parquet").exists()


def test_a_caption_that_mentions_an_image_placeholder_does_not_stop_distillation(distilled, tmp_path):
    captioned = [{**p, "caption": "An <image> of a grid."} for p in load_problems(distilled / "captions.parquet")[:3]]
    prompts = []
    reasoner = ScriptedEngine(lambda prompt, k: prompts.append(prompt) or "1")
    assert distill_traces(captioned, reasoner, tmp_path / "t.parquet", prompt=PROMPT, sampling=Sampling(),
                          scratch=tmp_path / "s")["traces"] == 3
    assert all("An image of a grid." in p and "<image>" not in p for p in prompts)


def test_the_reasoner_reads_the_question_with_its_lines_as_written(distilled, tmp_path):
    """A text-only reasoner never sees the image: a table, options one per line or multi-line math reach it
    with their line breaks; only the image placeholders (and a line left empty by them) are gone."""
    question = "Use the table.\n| year | sales |\n|---|---|\n| 2020 | 3 |\n<image>\nChoices:\n(A) 3\n(B)  5 <image>"
    captioned = [{**p, "question": question, "images": p["images"] * 2}
                 for p in load_problems(distilled / "captions.parquet")[:1]]
    prompts = []
    reasoner = ScriptedEngine(lambda prompt, k: prompts.append(prompt) or "1")
    distill_traces(captioned, reasoner, tmp_path / "t.parquet", prompt=PROMPT, sampling=Sampling(), scratch=tmp_path / "s")
    assert "Use the table.\n| year | sales |\n|---|---|\n| 2020 | 3 |\nChoices:\n(A) 3\n(B) 5" in prompts[0]


def test_a_caption_that_spells_a_placeholder_is_inserted_as_written(distilled, tmp_path):
    """Captions are model output: one that reads a sign saying "{question}" must not pull the question in."""
    captioned = [{**p, "caption": "A sign reads {question}."} for p in load_problems(distilled / "captions.parquet")[:2]]
    prompts = []
    reasoner = ScriptedEngine(lambda prompt, k: prompts.append(prompt) or "1")
    distill_traces(captioned, reasoner, tmp_path / "t.parquet", prompt=PROMPT, sampling=Sampling(), scratch=tmp_path / "s")
    assert all("A sign reads {question}." in p for p in prompts) and len(prompts) == 2


def test_caption_and_distill_keep_lineage_and_columns(distilled, toyworld_dir):
    traced = read_records(distilled / "traces.parquet")
    source = read_records(toyworld_dir / "train.parquet")
    assert traced.column("id") == source.column("id")[:40]
    row = traced[0]
    assert row["caption"].startswith(("The image shows", "This picture", "A grid")) and len(row["traces"]) == 4
    assert row["trace_source"] == "reasoner program:toyworld-reasoner" and row["images"] == source[0]["images"]


def _judged(traced: list[dict]) -> list[list[bool]]:
    """Each trace's verdict from the problem's own plugin, called directly."""
    def correct(p, t):
        out = get_reward(p["reward"])(t, p["answer"], extra_info=p["extra_info"])
        return (out["score"] if isinstance(out, dict) else out) == 1.0

    return [[correct(p, t) for t in p["traces"]] for p in traced]


def test_select_keeps_the_shortest_correct_trace_and_counts_yields(distilled, tmp_path):
    traced = load_problems(distilled / "traces.parquet")
    counts = select_traces(traced, tmp_path / "sft.parquet", policy="shortest", judge=RewardSettings(workers=1))
    correct = _judged(traced)
    kept = read_records(tmp_path / "sft.parquet")
    assert counts["in"] == 40 and counts["traces"] == 160
    assert counts["correct_traces"] == sum(map(sum, correct))
    assert counts["out"] == len(kept) == sum(any(c) for c in correct)
    assert counts["no_correct"] == 40 - counts["out"] and counts["reward_errors"] == counts["reward_timeouts"] == 0
    by_id = {p["id"]: (p, c) for p, c in zip(traced, correct)}
    for row in kept:
        problem, ok = by_id[row["id"]]
        assert row["response"] == min((t for t, c in zip(problem["traces"], ok) if c), key=len)
        assert problem["traces"][row["sample_index"]] == row["response"]  # which sample wrote it
        assert row["verdicts"] == [1.0 if c else 0.0 for c in ok] and row["trace_source"].startswith("reasoner")


def test_select_policies_length_cap_and_truncation(distilled, tmp_path):
    traced = load_problems(distilled / "traces.parquet")
    correct = {p["id"]: [t for t, ok in zip(p["traces"], c) if ok] for p, c in zip(traced, _judged(traced))}
    longest = select_traces(traced, tmp_path / "long.parquet", policy="longest", judge=RewardSettings(workers=1))
    assert all(r["response"] == max(correct[r["id"]], key=len) for r in read_records(tmp_path / "long.parquet"))
    assert any(len(set(c)) > 1 for c in correct.values())  # problems where the policy has a choice

    words = sorted(len(t.split()) for c in correct.values() for t in c)
    cap = words[len(words) // 2]  # the median correct trace: some problems fit, some do not
    capped = select_traces(traced, tmp_path / "cap.parquet", max_tokens=cap, judge=RewardSettings(workers=1))
    fitting = {i: [t for t in c if len(t.split()) <= cap] for i, c in correct.items()}
    kept = read_records(tmp_path / "cap.parquet")
    assert capped["out"] == len(kept) == sum(map(bool, fitting.values())) > 0
    assert capped["too_long"] == sum(bool(c) and not fitting[i] for i, c in correct.items()) > 0
    assert all(r["response"] == min(fitting[r["id"]], key=len) for r in kept)
    cut = select_traces(traced, tmp_path / "cut.parquet", policy="longest", truncate_reflections=True,
                        reflection_markers=["Wait,"], judge=RewardSettings(workers=1))
    assert cut["truncated"] > 0
    kept_whole = [r for r in read_records(tmp_path / "cut.parquet") if "Wait," in r["response"]]
    assert len(kept_whole) == cut["truncation_rejected"]  # cut, it would leave a retracted slip standing
    assert all("is" in r["response"].split("Wait,")[1].split(".")[0] for r in kept_whole)  # "Wait, 2 + 0 is 2, not 1"
    assert all(r["response"].endswith("</answer>") for r in read_records(tmp_path / "cut.parquet"))
    with pytest.raises(ValueError, match="select.policy"):
        select_traces(traced, tmp_path / "x.parquet", policy="best")


def test_select_stops_naming_why_when_it_keeps_no_problem_or_judges_no_trace(distilled, tmp_path):
    """An empty SFT set, or one made of nothing the reward could judge, stops select itself (a failed stage:
    the same command runs it again once the cause is fixed), with the counts that say why."""
    traced = load_problems(distilled / "traces.parquet")[:6]
    with pytest.raises(ValueError, match=r"^select \(iter_1\): none of its 24 traces could be judged \(24 reward errors, "
                                         r"0 timeouts; first: .*boom.*\)\. Fix the plugin and run the same command again"):
        select_traces(traced, tmp_path / "a.parquet", judge=RewardSettings(workers=1, override=f"{PLUGINS}:raises"), label="iter_1")
    assert not (tmp_path / "a.parquet").exists()
    wrong = [{**p, "traces": ["<think>a guess</think> <answer>-1</answer>"] * 4} for p in traced]
    with pytest.raises(ValueError, match=r"^select: none of the 6 problems has an acceptable trace \(6 with no correct trace, "
                                         r"0 whose correct traces are all over select.max_tokens, 0 unjudged"):
        select_traces(wrong, tmp_path / "b.parquet", judge=RewardSettings(workers=1))


@pytest.mark.parametrize(
    "trace, cut",
    [
        ("<think>1 + 2 = 3. Wait, check: 3.</think> <answer>3</answer>", "<think>1 + 2 = 3.</think> <answer>3</answer>"),
        ("<think>a. But wait b. Wait, c.</think><answer>x</answer>", "<think>a.</think><answer>x</answer>"),
        ("<think>no reflection</think> <answer>3</answer>", None),
        ("<think>3</think> <answer>Wait, 3</answer>", None),  # only the reasoning is cut
        ("so 4. Wait, yes 4. <answer>4</answer>", "so 4. <answer>4</answer>"),
        # a marker that opens the reasoning is how R1-style reasoners start, not a reflection: cutting
        # there would keep "<think></think>" and teach the student to skip reasoning
        ("<think>\nWait, 2 + 2 is asked. So 4.</think> <answer>4</answer>", None),
        ("<think>Wait, hmm. 2 + 2 = 5. Wait, no: 4.</think> <answer>4</answer>", "<think>Wait, hmm. 2 + 2 = 5.</think> <answer>4</answer>"),
        ("Wait, 2 + 2. Then 4. Wait, yes. <answer>4</answer>", "Wait, 2 + 2. Then 4. <answer>4</answer>"),
        # no tags: the final answer is the last line that boxes it
        ("2 + 2 = 4. Wait, check: 4.\nThe answer is \\boxed{4}.", "2 + 2 = 4.\nThe answer is \\boxed{4}."),
        ("2 + 2 = 4. Wait, so \\boxed{4}.", None),  # the answer's line is the whole trace
        ("2 + 2 = 4. Wait, check: 4.", None),  # no final answer to keep
        # displayed over several lines: the kept answer keeps the delimiter that opens it
        ("2 + 2 = 4. Wait, check: 4.\nSo:\n\\[\n\\boxed{4}\n\\]", "2 + 2 = 4.\n\\[\n\\boxed{4}\n\\]"),
        ("2 + 2 = 4. Wait, check: 4.\n$$\n\\boxed{4}\n$$", "2 + 2 = 4.\n$$\n\\boxed{4}\n$$"),
        ("$$a$$ 2 + 2 = 4. Wait, check.\n\\boxed{4}", "$$a$$ 2 + 2 = 4.\n\\boxed{4}"),
        ("a &= 1 \\\\[2pt] b &= 2.\nSo 3. Wait, check.\n\\boxed{3}", "a &= 1 \\\\[2pt] b &= 2.\nSo 3.\n\\boxed{3}"),  # a line break
        # a marker counts where a sentence starts: not in a quote, not after "But", not glued to a word
        ('<think>A sign reads "Wait Time: 4 min", so 4.</think> <answer>4</answer>', None),
        ("<think>2 + 2 = 4. But Wait, check: 4.</think> <answer>4</answer>", None),
        ("<think>Count: 4. Await, no.</think> <answer>4</answer>", None),
        ("<think>It is 4.\nWait, check: 4.</think> <answer>4</answer>", "<think>It is 4.</think> <answer>4</answer>"),
        ('<think>He said "4." Wait, yes.</think> <answer>4</answer>', '<think>He said "4."</think> <answer>4</answer>'),
        # several markers opening the reasoning are all its opening
        ("<think>Hmm, Wait, the sum. 2 + 2 = 4.</think> <answer>4</answer>", None),
        ("<think>Hmm,\nWait, the sum. 4. Wait, yes.</think> <answer>4</answer>", "<think>Hmm,\nWait, the sum. 4.</think> <answer>4</answer>"),
    ],
)
def test_truncate_at_reflection(trace, cut):
    assert truncate_at_reflection(trace, ["Wait,", "Wait ", "But wait", "Hmm,"]) == cut


def test_the_length_cap_applies_to_the_trace_as_cut(tmp_path, caplog):
    """A long reflection makes a trace too long; cut, it fits, and the cut is what SFT trains on.
    The policy still chooses among the traces as the teacher wrote them; a trace with nothing to cut
    is measured whole, and a problem dropped for it is named."""
    reflection = " ".join(["recheck"] * 40)
    problem = {"id": "p0", "images": [], "question": "What is 2 + 2?", "answer": "4", "data_source": "t", "reward": "math",
               "extra_info": {}, "trace_source": "reasoner"}
    short = "<think>2 + 2 = 4, so the sum is 4.</think> <answer>4</answer>"
    traced = [{**problem, "traces": [f"<think>2 + 2 = 4. Wait, {reflection}.</think> <answer>4</answer>"]},
              {**problem, "id": "p1", "traces": [f"<think>2 + 2 = 4. Wait, {reflection}.</think> <answer>4</answer>", short]},
              {**problem, "id": "p2", "traces": [f"<think>2 + 2 = 4. {reflection}.</think> <answer>4</answer>"]}]
    counts = select_traces(traced, tmp_path / "sft.parquet", truncate_reflections=True, max_tokens=20,
                           judge=RewardSettings(workers=1))
    rows = {r["id"]: r for r in read_records(tmp_path / "sft.parquet")}
    assert rows["p0"]["response"] == "<think>2 + 2 = 4.</think> <answer>4</answer>" and rows["p0"]["sample_index"] == 0
    assert (rows["p1"]["sample_index"], rows["p1"]["response"]) == (1, short)  # the shortest as written, though the cut is shorter
    assert "p2" not in rows
    assert (counts["out"], counts["too_long"], counts["truncated"], counts["truncation_rejected"]) == (2, 1, 1, 0)
    assert "select: 1 problem(s) whose correct traces are all over select.max_tokens (20) were dropped, e.g. p2" in caplog.text


def test_a_raising_plugin_is_counted_and_quarantined_not_zeroed(distilled, tmp_path):
    problems = load_problems(distilled / "traces.parquet")
    solved = next(p for p, ok in zip(problems, _judged(problems)) if any(ok))  # judged by its own plugin
    traced = [{**p, "reward": f"{PLUGINS}:raises"} for p in problems if p is not solved][:5]
    counts = select_traces(traced + [solved], tmp_path / "sft.parquet", judge=RewardSettings(workers=1), quarantine_path=tmp_path / "q.jsonl")
    assert counts["reward_errors"] == 20 and counts["out"] == 1 and counts["quarantined"] == 5 and counts["no_correct"] == 0
    lines = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert [q["id"] for q in lines] == [p["id"] for p in traced]
    assert "raises" in lines[0]["reason"] and "boom" in lines[0]["reason"]
    assert f"on item 0 (problem {traced[0]['id']}, answer 0)" in lines[0]["reason"]  # the log names the problem, too
    assert f"on item 4 (problem {traced[1]['id']}, answer 0)" in lines[1]["reason"]
    assert [r["id"] for r in read_records(tmp_path / "sft.parquet")] == [solved["id"]]


def test_a_hanging_plugin_times_out_and_the_stage_finishes(distilled, tmp_path):
    problems = load_problems(distilled / "traces.parquet")
    solved = next(p for p, ok in zip(problems, _judged(problems)) if any(ok))
    traced = [{**p, "reward": f"{PLUGINS}:hangs"} for p in problems if p is not solved][:2]
    started = time.time()
    counts = select_traces(traced + [solved], tmp_path / "sft.parquet", judge=RewardSettings(workers=2, timeout=1.0))
    assert counts["reward_timeouts"] == 8 and counts["quarantined"] == 2 and counts["out"] == 1
    assert time.time() - started < 60


def test_rl_data_keeps_the_band_and_explains_an_empty_one(toyworld_dir, tmp_path):
    unique = {p["question"]: p for p in load_problems(toyworld_dir / "train.parquet")}  # the script keys on the question
    problems = list(unique.values())[:12]
    answers = {p["question"]: p["answer"] for p in problems}
    # problem i is answered right in (i % 3) of 2 samples: pass rates 0, 0.5, 1
    index = {p["question"]: i for i, p in enumerate(problems)}
    engine = ScriptedEngine(lambda prompt, k: answers[prompt] if k < index[prompt] % 3 else "wrong")
    counts = select_rl_problems(problems, engine, tmp_path / "rl.parquet", prompt="{question}",
                                sampling=Sampling(n=2), scratch=tmp_path / "s", judge=SCRIPTED)
    kept = read_records(tmp_path / "rl.parquet")
    assert [r["id"] for r in kept] == [p["id"] for i, p in enumerate(problems) if i % 3 == 1]
    assert all(r["pass_rate"] == 0.5 for r in kept)
    assert counts["all_pass"] == 4 and counts["none_pass"] == 4 and counts["out"] == 4
    # with max_problems, sampling stops at the chunk that fills it (100k RL problems for 5k kept: 5 % of the
    # generation), and keeps the same problems as sampling all of them would
    counting = ScriptedEngine(engine.answer_for)
    counts = select_rl_problems(problems, counting, tmp_path / "rl_max.parquet", prompt="{question}", sampling=Sampling(n=2),
                                scratch=tmp_path / "s_max", judge=SCRIPTED, max_problems=2, chunk_size=3)
    assert [r["id"] for r in read_records(tmp_path / "rl_max.parquet")] == [r["id"] for r in kept][:2]
    assert counting.calls == 2 and counts["sampled"] == 6 and counts["in"] == 12 and counts["out"] == 2
    with pytest.raises(ValueError, match=r"rl_data kept none of 12 problems .*\(pass rates: \{'0.00': 12\}, unjudged: 0\)"):
        select_rl_problems(problems, ScriptedEngine(lambda p, k: "wrong"), tmp_path / "rl2.parquet", prompt="{question}",
                           sampling=Sampling(n=2), scratch=tmp_path / "s2", judge=SCRIPTED)

    # samples the reward could not judge are no evidence either way: right + unjudged is a pass rate of 1,
    # and a problem with no judged sample has no pass rate at all
    def right_then_unclear(prompt, k):
        return "unclear" if index[prompt] % 3 == 0 or k == 1 else answers[prompt]
    counts = select_rl_problems(problems, ScriptedEngine(right_then_unclear), tmp_path / "rl3.parquet", prompt="{question}",
                                sampling=Sampling(n=3), scratch=tmp_path / "s3", min_pass=0.0, max_pass=1.01,
                                judge=RewardSettings(workers=1, override=f"{PLUGINS}:raises_on_unclear"))
    assert counts["unjudged"] == 4 and counts["all_pass"] == 8 and counts["none_pass"] == 0 and counts["reward_errors"] == 20
    assert counts["mean_pass_rate"] == 1.0 and counts["out"] == 8
    assert all(r["pass_rate"] == 1.0 for r in read_records(tmp_path / "rl3.parquet"))


def test_rl_data_spends_no_sample_on_a_problem_too_long_for_grpo(toyworld_dir, tiny_student, tmp_path, caplog):
    """With the student's folder and the GRPO settings, a problem whose prompt GRPO would leave out is left out
    first: it gets no samples and takes no place in max_problems, which goes to problems GRPO trains on."""
    from openvlt.backends import GRPOConfig
    from openvlt.models import load_processor
    from openvlt.models.batching import prompt_lengths

    unique = list({p["question"]: p for p in load_problems(toyworld_dir / "train.parquet")}.values())[:6]
    problems = [{**p, "question": p["question"] + " Think it over twice." * (12 if k % 2 else 0)} for k, p in enumerate(unique)]
    lengths = prompt_lengths(load_processor(tiny_student), [p["question"] for p in problems], [p["images"] for p in problems])
    limit = max(lengths[0::2])
    assert min(lengths[1::2]) > limit
    answers, asked = {question_of(p["question"]): p["answer"] for p in problems}, []

    def half_right(prompt, k):  # every problem has pass rate 0.5: in the band
        asked.append(question_of(prompt))
        return answers[question_of(prompt)] if k == 0 else "wrong"

    common = dict(prompt="{question}", sampling=Sampling(n=2), judge=SCRIPTED, max_problems=2)
    counts = select_rl_problems(problems, ScriptedEngine(half_right), tmp_path / "rl.parquet", scratch=tmp_path / "s",
                                model=tiny_student, grpo=GRPOConfig(max_prompt_length=limit), **common)
    assert [r["id"] for r in read_records(tmp_path / "rl.parquet")] == [problems[0]["id"], problems[2]["id"]]
    assert counts["in"] == 6 and counts["too_long"] == 3 and counts["out"] == 2
    assert sorted(asked) == sorted(2 * [question_of(p["question"]) for p in problems[0::2]])  # 2 samples each, short ones only
    assert f"3 of 6 RL problems are longer than grpo.max_prompt_length ({limit} tokens) and are left out" in caplog.text
    asked.clear()  # without them, every problem is sampled, and a long one takes a place
    counts = select_rl_problems(problems, ScriptedEngine(half_right), tmp_path / "all.parquet", scratch=tmp_path / "s2", **common)
    assert [r["id"] for r in read_records(tmp_path / "all.parquet")] == [problems[0]["id"], problems[1]["id"]]
    assert len(asked) == 12 and counts["too_long"] == 0
    with pytest.raises(ValueError, match=r"every one of the 3 RL problems is longer than grpo.max_prompt_length"):
        select_rl_problems(problems[1::2], ScriptedEngine(half_right), tmp_path / "none.parquet", scratch=tmp_path / "s3",
                           model=tiny_student, grpo=GRPOConfig(max_prompt_length=limit), **common)
    assert not (tmp_path / "none.parquet").exists()


def test_evaluate_scores_each_set_and_keeps_samples(toyworld_dir, tmp_path):
    problems = list({p["question"]: p for p in load_problems(toyworld_dir / "test.parquet")}.values())
    truth = {p["question"]: p["answer"] for p in problems}
    engine = ScriptedEngine(lambda prompt, k: truth[prompt] if "red" in prompt else "no idea")
    counts = evaluate_model({"held": problems, "again": problems[:10]}, "scripted", engine, tmp_path / "eval.json",
                            prompt="{question}", sampling=Sampling(n=1, temperature=0), scratch=tmp_path / "s",
                            samples_kept=3, judge=SCRIPTED)
    expected = sum("red" in p["question"] for p in problems) / len(problems)
    assert counts["accuracy/held"] == pytest.approx(expected)
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["sets"]["held"]["n"] == len(problems) and len(report["sets"]["held"]["samples"]) == 3
    kinds = {p["extra_info"]["kind"] for p in problems}
    assert report["sets"]["held"]["by_kind"] == pytest.approx({
        kind: sum("red" in p["question"] for p in problems if p["extra_info"]["kind"] == kind)
        / sum(p["extra_info"]["kind"] == kind for p in problems) for kind in kinds})
    assert len(kinds) > 1 and 0 < expected < 1
    assert counts["accuracy/again"] == pytest.approx(sum("red" in p["question"] for p in problems[:10]) / 10)
    with pytest.raises(ValueError, match="held-out set 'empty' has no problems"):
        evaluate_model({"empty": []}, "scripted", engine, tmp_path / "e.json", prompt="{question}",
                       sampling=Sampling(n=1, temperature=0), scratch=tmp_path / "e", judge=SCRIPTED)
    broken = RewardSettings(workers=1, override=f"{PLUGINS}:raises")  # an accuracy of 0 from no verdict at all: refused
    with pytest.raises(ValueError, match=r"^held-out set 'again': none of its 10 answers could be judged \(10 reward errors"):
        evaluate_model({"again": problems[:10]}, "scripted", engine, tmp_path / "b.json", prompt="{question}",
                       sampling=Sampling(n=1, temperature=0), scratch=tmp_path / "b", judge=broken)
    assert not (tmp_path / "b.json").exists()


def test_generation_resumes_from_finished_chunks(toyworld_dir, tmp_path, caplog):
    from openvlt.engines import Request
    from openvlt.stages.common import generate_in_chunks

    class Echo:  # each answer says which request, sample and seed made it
        calls = 0

        def generate(self, requests, sampling):
            self.calls += 1
            return [[f"{r.prompt}|{k}|{sampling.seed}" for k in range(sampling.n)] for r in requests]

    problems = load_problems(toyworld_dir / "train.parquet", 0, 10)
    requests = [Request(f"{p['id']}: {p['question']}", tuple(p["images"])) for p in problems]  # all different
    engine = Echo()
    first = generate_in_chunks(engine, requests, Sampling(n=2, seed=7), tmp_path, 4, "t", "t")
    assert engine.calls == 3
    assert first == [[f"{r.prompt}|{k}|{7 + i // 4}" for k in range(2)] for i, r in enumerate(requests)]  # chunk c: seed + c
    assert "reused" not in caplog.text
    (tmp_path / "chunk-00001.json").unlink()  # as if killed while writing chunk 1
    with caplog.at_level("INFO", logger="openvlt.stages.common"):
        again = generate_in_chunks(engine, requests, Sampling(n=2, seed=7), tmp_path, 4, "t", "caption")
    assert again == first and engine.calls == 4  # only the missing chunk was generated again
    assert "caption: 2 of 3 chunks were finished by an interrupted attempt and reused; 1 generated now" in caplog.text
    # chunks made for other requests (problem 2 left out since, by a newer openvlt) are not paired with these
    fewer = requests[:2] + requests[3:]
    shifted = generate_in_chunks(engine, fewer, Sampling(n=2, seed=7), tmp_path, 4, "t", "t")
    assert shifted == [[f"{r.prompt}|{k}|{7 + i // 4}" for k in range(2)] for i, r in enumerate(fewer)] and engine.calls == 7
    # a chunk saved as a plain list, before chunks named their requests, is taken as it is
    (tmp_path / "chunk-00000.json").write_text(json.dumps(first[:4]))
    assert generate_in_chunks(engine, requests[:4], Sampling(n=2, seed=7), tmp_path, 4, "t", "t") == first[:4]
    assert engine.calls == 7
    # ... if it answers as many requests, as many times: one made for a longer list is generated again
    (tmp_path / "chunk-00000.json").write_text(json.dumps(first[:5]))
    assert generate_in_chunks(engine, requests[:4], Sampling(n=2, seed=7), tmp_path, 4, "t", "t") == first[:4]
    assert engine.calls == 8

    class Dropping(Echo):  # an engine that loses a request would shift every later answer onto another problem
        def generate(self, requests, sampling):
            return super().generate(requests, sampling)[:-1]

    with pytest.raises(RuntimeError, match="t: the engine Dropping returned 3 answer lists for 4 requests"):
        generate_in_chunks(Dropping(), requests, Sampling(n=2, seed=7), tmp_path / "dropping", 4, "t", "t")


def test_regenerate_retries_only_the_unsolved_problems(toyworld_dir, tmp_path):
    from openvlt.stages.regenerate import regenerate_traces

    problems = list({p["question"]: p for p in load_problems(toyworld_dir / "train.parquet")}.values())[:9]
    index, answers = {p["question"]: i for i, p in enumerate(problems)}, {p["question"]: p["answer"] for p in problems}
    asked: dict[str, int] = {}

    def answer(prompt: str, k: int) -> str:  # problem i is answered right from its (i % 3 + 1)-th round on
        if k == 0:
            asked[prompt] = asked.get(prompt, 0) + 1
        return answers[prompt] if asked[prompt] > index[prompt] % 3 else "wrong"

    counts = regenerate_traces(problems, ScriptedEngine(answer), tmp_path / "t.parquet", prompt="{question}",
                               sampling=Sampling(n=2), scratch=tmp_path / "s", retries=1, judge=SCRIPTED)
    rows = read_records(tmp_path / "t.parquet")
    assert [len(r["traces"]) for r in rows] == [2 if i % 3 == 0 else 4 for i in range(9)]
    assert counts["retried_1"] == 6 and counts["traces"] == 30
    assert all(asked[p["question"]] == (1 if i % 3 == 0 else 2) for i, p in enumerate(problems))

    # resumed with one more round: finished rounds come from scratch, only the still-unsolved are asked again
    asked.clear()
    counts = regenerate_traces(problems, ScriptedEngine(answer), tmp_path / "t2.parquet", prompt="{question}",
                               sampling=Sampling(n=2), scratch=tmp_path / "s", retries=2, judge=SCRIPTED)
    assert counts["retried_1"] == 6 and counts["retried_2"] == 3 and counts["traces"] == 36
    assert sorted(asked.values()) == [1, 1, 1] and all(index[q] % 3 == 2 for q in asked)

    # resumed while the reward now fails on every trace (a plugin timing out under load): round 1 still asks
    # the 6 problems its saved chunks answer, so no trace lands on another problem
    asked.clear()
    regenerate_traces(problems, ScriptedEngine(answer), tmp_path / "t3.parquet", prompt="{question}", sampling=Sampling(n=2),
                      scratch=tmp_path / "s", retries=1, judge=RewardSettings(workers=1, override=f"{PLUGINS}:raises"))
    assert not asked
    assert [r["traces"] for r in read_records(tmp_path / "t3.parquet")] == [r["traces"] for r in rows]


def test_select_keeps_the_previous_trace_of_a_problem_the_model_no_longer_solves(distilled, tmp_path):
    previous = load_problems(distilled / "traces.parquet")
    select_traces(previous, tmp_path / "iter1.parquet", judge=RewardSettings(workers=1), label="iter_1")
    earlier = {r["id"]: r for r in read_records(tmp_path / "iter1.parquet")}
    # iteration 2: the model answers the first 20 problems right and the last 20 wrong
    regenerated = [{**{k: v for k, v in p.items() if k not in ("caption", "caption_source")}, "trace_source": "student",
                    "traces": [f"<think>x</think> <answer>{p['answer'] if i < 20 else 'wrong'}</answer>"]}
                   for i, p in enumerate(previous)]
    counts = select_traces(regenerated, tmp_path / "iter2.parquet", previous=list(earlier.values()),
                           judge=RewardSettings(workers=1, override="math"), label="iter_2")
    rows = {r["id"]: r for r in read_records(tmp_path / "iter2.parquet")}
    carried = [p["id"] for p in regenerated[20:] if p["id"] in earlier]
    assert counts["kept_previous"] == len(carried) and counts["no_correct"] == 20 - len(carried)
    assert set(rows) == {p["id"] for p in regenerated[:20]} | set(carried)
    assert carried and earlier[carried[0]]["caption"]
    for i in carried:  # the earlier trace, with the earlier lineage: which iteration, sample, verdicts and caption
        lineage = ("selected_in", "trace_source", "response", "sample_index", "verdicts", "n_correct", "caption", "caption_source")
        assert {k: rows[i][k] for k in lineage} == {k: earlier[i][k] for k in lineage}
        assert rows[i]["selected_in"] == "iter_1" and rows[i]["verdicts"][rows[i]["sample_index"]] == 1.0
    for p in regenerated[:20]:  # written this time: no caption was read
        assert (rows[p["id"]]["trace_source"], rows[p["id"]]["selected_in"], rows[p["id"]]["caption"]) == ("student", "iter_2", None)

    # another data file numbering its problems the same way: an id naming another problem keeps nothing of it
    renamed = [{**p, "question": "Another file's question: " + p["question"]} if i % 2 else
               {**p, "images": []} for i, p in enumerate(regenerated[20:])]
    counts = select_traces(regenerated[:20] + renamed, tmp_path / "other.parquet", previous=list(earlier.values()),
                           judge=RewardSettings(workers=1, override="math"))
    assert counts["kept_previous"] == 0 and counts["previous_other_problem"] == len(carried) > 0
    assert counts["out"] == 20 and counts["no_correct"] == 20

    # right but too long this time, or not judged at all (the plugin fails): the earlier trace stays too
    cap = max(len(r["response"].split()) for r in earlier.values())
    too_long = [{**p, "traces": [f"<think>{' x' * cap}</think> <answer>{p['answer']}</answer>"]} for p in regenerated]
    counts = select_traces(too_long, tmp_path / "long.parquet", previous=list(earlier.values()), max_tokens=cap,
                           judge=RewardSettings(workers=1, override="math"))
    assert 0 < counts["kept_previous"] == len(earlier) and counts["too_long"] == len(regenerated) - len(earlier) > 0
    assert {r["id"]: r["response"] for r in read_records(tmp_path / "long.parquet")} == {i: r["response"] for i, r in earlier.items()}
    # ... unless this iteration would not accept it either: over its cap, or judged wrong by its reward
    lengths = sorted(len(r["response"].split()) for r in earlier.values())
    counts = select_traces(too_long, tmp_path / "capped.parquet", previous=list(earlier.values()), max_tokens=lengths[0],
                           judge=RewardSettings(workers=1, override="math"))
    over = sum(n > lengths[0] for n in lengths)
    assert over > 0 and counts["previous_rejected"] == over and counts["kept_previous"] == len(earlier) - over
    assert all(len(r["response"].split()) <= lengths[0] for r in read_records(tmp_path / "capped.parquet"))
    counts = select_traces(regenerated, tmp_path / "stricter.parquet", previous=list(earlier.values()),
                           judge=RewardSettings(workers=1, override=f"{PLUGINS}:right_and_brief"))
    assert counts["kept_previous"] == 0 and counts["previous_rejected"] == len(carried) and counts["out"] == 20
    unjudged = [{**p, "reward": "math" if i < 20 else f"{PLUGINS}:raises"} for i, p in enumerate(regenerated)]  # fails on the last 20
    counts = select_traces(unjudged, tmp_path / "unjudged.parquet", previous=list(earlier.values()), judge=RewardSettings(workers=1))
    assert counts["kept_previous"] == len(carried) and counts["quarantined"] == 20 - len(carried)
    assert (tmp_path / "unjudged.quarantine.jsonl").exists()
    select_traces(regenerated, tmp_path / "unjudged.parquet", previous=list(earlier.values()),  # a --redo, all judged
                  judge=RewardSettings(workers=1, override="math"))
    assert not (tmp_path / "unjudged.quarantine.jsonl").exists()


def test_sft_leaves_out_examples_longer_than_its_limit_and_counts_them(tiny_student, toyworld_dir, tmp_path, monkeypatch, caplog):
    """sft.max_length, or else the student's context: a longer example is counted and named, not cut
    (a cut trace would teach a truncated answer); none short enough is an error that names the key."""
    import shutil

    from openvlt.backends import SFTConfig, local
    from openvlt.models import load_processor
    from openvlt.models.batching import example_lengths
    from openvlt.stages.sft import train_sft

    rows = load_problems(toyworld_dir / "train.parquet", 0, 6)
    selected = [{**p, "response": f"<think>{' red' * (60 if k % 3 == 0 else 2)}</think> <answer>{p['answer']}</answer>"}
                for k, p in enumerate(rows)]
    lengths = example_lengths(load_processor(tiny_student), [p["question"] for p in rows], [p["images"] for p in rows],
                              [p["response"] for p in selected])
    limit = max(n for k, n in enumerate(lengths) if k % 3)
    assert min(lengths[0], lengths[3]) > limit
    trained = []
    real_sft = local.sft
    monkeypatch.setattr(local, "sft", lambda examples, *a, **kw: trained.append([e["id"] for e in examples]) or real_sft(examples, *a, **kw))
    config = SFTConfig(steps=1, batch_size=2, max_length=limit)
    counts = train_sft(selected, tiny_student, tmp_path / "capped", config=config, options={"checkpoint_every": 0})
    assert counts["in"] == 6 and counts["too_long"] == 2 and trained[-1] == [p["id"] for k, p in enumerate(rows) if k % 3]
    longest = max(range(6), key=lengths.__getitem__)
    assert (f"2 of 6 SFT examples are longer than sft.max_length ({limit} tokens) and are left out; the longest, "
            f"{rows[longest]['id']!r}, has {lengths[longest]} tokens") in caplog.text

    short_context = tmp_path / "short-context"  # no sft.max_length: the student's own context is the limit
    shutil.copytree(tiny_student, short_context)
    config_json = json.loads((short_context / "config.json").read_text())
    config_json["text_config"]["max_position_embeddings"] = limit
    (short_context / "config.json").write_text(json.dumps(config_json))
    counts = train_sft(selected, short_context, tmp_path / "context", config=SFTConfig(steps=1, batch_size=2),
                       options={"checkpoint_every": 0})
    assert counts["too_long"] == 2 and f"2 of 6 SFT examples are longer than the student's context ({limit} tokens)" in caplog.text
    assert train_sft(selected, tiny_student, tmp_path / "uncapped", config=SFTConfig(steps=1, batch_size=2),
                     options={"checkpoint_every": 0})["too_long"] == 0

    with pytest.raises(ValueError, match=r"every one of the 6 SFT examples is longer than sft\.max_length \(20 tokens; "
                                         rf"the shortest has {min(lengths)}\): bound the images' size "
                                         r"\(roles\.student\.options\.max_pixels\), or raise sft\.max_length$"):
        train_sft(selected, tiny_student, tmp_path / "none", config=SFTConfig(steps=1, batch_size=2, max_length=20))
    assert not (tmp_path / "none").exists()


def test_reward_memory_mb_is_each_workers_limit_in_the_stages(tmp_path):
    """`reward.memory_mb` reaches the workers that judge (a plugin holding a model needs more than 2 GB)."""
    from openvlt.stages.common import score_responses

    plugin = tmp_path / "big.py"
    plugin.write_text("def score(response, ground_truth, *, extra_info):\n"
                      "    return float(len(bytearray(int(response) * 2**20)) > 0)\n")
    problems = [{"id": "p0", "answer": "", "extra_info": {}, "reward": "math"}]
    for memory_mb, ok in ((100, False), (1000, True)):
        judge = RewardSettings(workers=1, override=f"{plugin}:score", memory_mb=memory_mb)
        [[result]] = score_responses(problems, [["300"]], judge)
        assert result.ok == ok, result.error
        assert ok or f"memory limit, {memory_mb} MiB beyond a worker's start: raise it with reward.memory_mb" in result.error
