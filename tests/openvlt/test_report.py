"""summary.json, the final table and report.html from a run directory's files."""
import json

from openvlt.recipe import load_recipe
from openvlt.report import format_summary, write_report, write_summary
from openvlt.workspace import quarantine_file

from .test_recipe import write


def _eval(path, accuracy, errors=0, timeouts=0):
    path.mkdir(parents=True, exist_ok=True)
    samples = [{"id": "p1", "question": "q", "answer": "1", "response": "<answer>2</answer>", "score": 0.0, "error": None}]
    (path / "eval.json").write_text(json.dumps({"model": "m", "sets": {"held": {
        "n": 10, "accuracy": accuracy, "reward_errors": errors, "reward_timeouts": timeouts, "by_kind": {}, "samples": samples}}}))


def test_answers_the_reward_could_not_judge_are_in_the_summary_and_the_table(tmp_path, toyworld_dir, tiny_student):
    """A misspelt or broken plugin used to show only as accuracy 0.000."""
    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run"), iterations=1))
    run = tmp_path / "run"
    _eval(run / "base", 0.0, errors=10)
    _eval(run / "iter_1" / "sft", 0.5)
    _eval(run / "iter_1" / "grpo", 0.4, errors=1, timeouts=2)
    (run / "manifest.json").write_text(json.dumps({"stages": {}}))
    summary = write_summary(run, recipe)
    assert summary["base"] == {"accuracy": 0.0, "all_sets": {"held": 0.0}, "unjudged_answers": 10}
    assert summary["iterations"][0]["grpo"]["unjudged_answers"] == 3
    table = format_summary(summary)
    assert "answers the reward could not judge (errors, timeouts; counted wrong): base 10, GRPO 1 3" in table
    page = write_report(run, recipe).read_text()
    assert "<td>p1</td>" in page  # the kept answers, with their problem ids


def test_the_summary_counts_what_belongs_to_it(tmp_path, toyworld_dir, tiny_student):
    """Unjudged answers of another held-out set are not reported under the headline set's accuracy; stages
    of iterations the recipe no longer asks for are not in its stage time; a quarantined row whose text holds
    U+2028 (a line end to `str.splitlines`) is one row; the rows set aside from a data file the recipe no longer
    reads are not counted."""
    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run"), iterations=1))
    run = tmp_path / "run"
    _eval(run / "base", 0.0)
    evaluation = json.loads((run / "base" / "eval.json").read_text())
    evaluation["sets"]["other"] = {**evaluation["sets"]["held"], "reward_errors": 40}
    (run / "base" / "eval.json").write_text(json.dumps(evaluation))
    (run / "manifest.json").write_text(json.dumps({"stages": {
        "base/evaluate": {"seconds": 2.0}, "iter_1/sft": {"seconds": 3.0}, "iter_2/sft": {"seconds": 100.0}}}))
    (run / "quarantine").mkdir()
    rows = [{"row": 1, "record": {"question": "a\u2028b\u2029c\x85d"}}, {"row": 2, "record": {"question": "e"}}]
    quarantine = quarantine_file(run, recipe.data.sft[0])
    quarantine.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (run / "quarantine" / "other-1234.jsonl").write_text(quarantine.read_text())  # a data file a --force run replaced
    summary = write_summary(run, recipe)
    assert summary["base"]["unjudged_answers"] == 0 and summary["base"]["all_sets"] == {"held": 0.0, "other": 0.0}
    assert summary["seconds"] == 5.0 and summary["quarantined_rows"] == {f"quarantine/{quarantine.name}": 2}
    own = tmp_path / "iteration_1_rl.parquet"  # an iteration may read files of its own
    own.write_bytes((toyworld_dir / "train.parquet").read_bytes())
    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(run), iterations=1,
                               per_iteration={1: {"data": {"rl": {"path": str(own), "start": 0, "stop": 4}}}}))
    quarantine_file(run, recipe.for_iteration(1).data.rl[0]).write_text(json.dumps(rows[1]) + "\n")
    assert sorted(write_summary(run, recipe)["quarantined_rows"].values()) == [1, 2]
    assert "could not judge" not in format_summary(summary)


def test_examples_left_out_as_too_long_are_in_the_summary_and_the_table(tmp_path, toyworld_dir, tiny_student):
    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run"), iterations=2))
    run = tmp_path / "run"
    (run).mkdir()
    # RL problems too long for GRPO are left out by rl_data when it runs (then GRPO finds none), else by GRPO
    stages = {"iter_1/sft": {"counts": {"in": 10, "too_long": 0}}, "iter_1/grpo": {"counts": {"in": 5, "too_long": 0}},
              "iter_1/rl_data": {"counts": {"in": 5, "out": 5}},  # rl_data.enabled: false copies them all
              "iter_2/sft": {"counts": {"in": 10, "too_long": 3}}, "iter_2/grpo": {"counts": {"in": 3, "too_long": 0}},
              "iter_2/rl_data": {"counts": {"in": 5, "too_long": 2, "out": 3}}}
    (run / "manifest.json").write_text(json.dumps({"stages": stages}))
    summary = write_summary(run, recipe)
    assert [(it["data"]["sft_too_long"], it["data"]["grpo_too_long"]) for it in summary["iterations"]] == [(0, 0), (3, 2)]
    table = format_summary(summary)
    assert "iter 2: left out as too long: 3 SFT example(s) (sft.max_length), 2 RL problem(s) (grpo.max_prompt_length)" in table
    assert "iter 1: left out" not in table
    stages["iter_1/grpo"]["counts"]["too_long"] = 1
    (run / "manifest.json").write_text(json.dumps({"stages": stages}))
    assert [it["data"]["grpo_too_long"] for it in write_summary(run, recipe)["iterations"]] == [1, 2]


def test_an_iteration_not_yet_run_shows_dashes_not_none():
    summary = {"eval_set": "toyworld", "base": {"accuracy": 0.25}, "seconds": 12.0,
               "iterations": [{"iter": 1, "sft": {"accuracy": None}, "grpo": {}, "data": {"rl_problems_kept": None, "select_out": None}}]}
    line = format_summary(summary).splitlines()[3]
    assert line.split() == ["iter", "1", "-", "-", "-", "-", "-"]
