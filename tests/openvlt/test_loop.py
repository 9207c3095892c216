"""The whole loop on a micro recipe: it completes, resumes after kill -9 anywhere, and handles bad input.

The runs go through the real CLI in subprocesses, as a user would run them. OPENVLT_CRASH_AT kills
the process with SIGKILL at a named point (openvlt.faults), like the OOM killer at 3 a.m.
"""
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from unittest.mock import patch

import pytest
import yaml

from openvlt.engines import Request, Sampling
from openvlt.records import read_records, write_records

from ..conftest import OPENVLT, decisive_engine, plugin_file
from .test_records import truncated_jpeg

PLUGINS = Path(__file__).with_name("plugins.py")


def micro_recipe(tmp_path: Path, run_dir: Path, **changes) -> Path:
    """Two iterations of every stage on 32 SFT + 16 RL + 16 eval problems, with a 0.2 M-parameter student.
    The lenient reward lets half of an untrained student's traces through, so every stage has rows to work on
    and some problems need a retry."""
    recipe = {
        "name": "micro", "run_dir": str(run_dir), "seed": 0, "iterations": 2,
        "prepare": {"toyworld": {"n_train": 48, "n_test": 16, "seed": 3},
                    "tiny_student": {"hidden": 32, "intermediate": 64, "vision_hidden": 32, "vocab": 500}},
        "data": {"sft": {"path": "{run_dir}/data/toyworld/train.parquet", "start": 0, "stop": 32},
                 "rl": {"path": "{run_dir}/data/toyworld/train.parquet", "start": 32, "stop": 48},
                 "eval": {"toyworld": "{run_dir}/data/toyworld/test.parquet"}},
        "roles": {"captioner": {"engine": "program", "model": "toyworld-captioner"},
                  "reasoner": {"engine": "program", "model": "toyworld-reasoner"},
                  "student": {"engine": "hf", "model": "{run_dir}/models/student", "options": {"batch_size": 64}},
                  "evaluator": {"engine": "hf", "options": {"batch_size": 64}}},
        "caption": {"chunk_size": 12}, "distill": {"samples": 2, "chunk_size": 12},
        "regenerate": {"samples": 2, "max_tokens": 16, "chunk_size": 12, "retries": 1},
        "select": {"truncate_reflections": True},
        "sft": {"steps": 6, "batch_size": 8, "lr": 3e-3, "warmup_steps": 1},
        "rl_data": {"samples": 2, "min_pass": -0.1, "max_pass": 1.1, "max_tokens": 16},
        "grpo": {"steps": 3, "prompts_per_step": 4, "rollouts": 2, "max_tokens": 16, "lr": 1e-4, "micro_batch_size": 4},
        "evaluate": {"max_tokens": 16},
        "reward": {"workers": 1, "override": f"{PLUGINS}:lenient_half"},
        "backend": {"name": "local", "options": {"checkpoint_every": 2}},
    }
    for key, value in changes.items():
        recipe[key] = value
    path = tmp_path / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def on_reference_student(reference: Path, tmp_path: Path, run_dir: Path, **changes) -> Path:
    """The micro recipe with the reference run's student (nothing prepared), on other data."""
    roles = yaml.safe_load(micro_recipe(tmp_path, run_dir).read_text())["roles"]
    student = {"engine": "hf", "model": str(reference / "models" / "student")}
    return micro_recipe(tmp_path, run_dir, prepare={}, roles={**roles, "student": student}, **changes)


def reference_data(reference: Path, **more_eval: str) -> dict:
    """The micro recipe's data, read from the reference run's toy world (held-out sets: its test split, and `more_eval`)."""
    good = str(reference / "data" / "toyworld" / "train.parquet")
    return {"sft": {"path": good, "start": 0, "stop": 32}, "rl": {"path": good, "start": 32, "stop": 48},
            "eval": {"toyworld": str(reference / "data" / "toyworld" / "test.parquet"), **more_eval}}


def run(recipe: Path, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("OPENVLT_CRASH_AT", None)
    if crash_at:
        env["OPENVLT_CRASH_AT"] = crash_at
    return subprocess.run([OPENVLT, "run", str(recipe), *args], capture_output=True, text=True, env=env, timeout=600)


def stages(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())["stages"]


def stages_once_moved(reference: Path, run_dir: Path) -> dict:
    """A copy's stages as a run started there records them: the paths inside the run directory follow it."""
    return json.loads((run_dir / "manifest.json").read_text().replace(f'"{reference}/', f'"{run_dir}/'))["stages"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The micro recipe run once, uninterrupted."""
    tmp = tmp_path_factory.mktemp("reference")
    done = run(micro_recipe(tmp, tmp / "run"))
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "run"


def test_the_loop_runs_every_stage_and_writes_summary_report_and_lineage(reference):
    manifest = stages(reference)
    expected = ["prepare", "base/evaluate"] + [
        f"iter_{k}/{s}" for k in (1, 2)
        for s in (["caption", "distill"] if k == 1 else ["regenerate"]) + ["select", "sft", "sft/evaluate", "rl_data", "grpo", "grpo/evaluate"]
    ]
    assert list(manifest) == expected
    assert all(s["status"] == "complete" and s["attempts"] == 1 and s["outputs"] for s in manifest.values())
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["eval_set"] == "toyworld" and [it["iter"] for it in summary["iterations"]] == [1, 2]
    assert summary["base"]["accuracy"] == manifest["base/evaluate"]["counts"]["accuracy/toyworld"]
    for it in summary["iterations"]:
        for stage in ("sft", "grpo"):  # the table reports what each evaluation measured
            assert it[stage]["accuracy"] == manifest[f"iter_{it['iter']}/{stage}/evaluate"]["counts"]["accuracy/toyworld"]
        assert it["data"]["select_in"] == 32 and it["data"]["rl_problems_kept"] == 16 and it["data"]["rl_problems_unjudged"] == 0
        assert "select_truncation_rejected" in it["data"]  # with select_truncated, the whole truncation story
    assert "<img" in (reference / "report.html").read_text()
    sft1, sft2 = read_records(reference / "iter_1" / "sft.parquet"), read_records(reference / "iter_2" / "sft.parquet")
    source = set(read_records(reference / "data" / "toyworld" / "train.parquet").column("id"))
    for rows, written_by, samples in ((sft1, "reasoner program:toyworld-reasoner", 2), (sft2, "student iter_1/grpo", 4)):
        assert set(rows.column("id")) <= source and len(set(rows.column("id"))) == len(rows)
        assert set(rows.column("trace_source")) == {written_by}
        assert all(0 <= r["sample_index"] < samples for r in rows)  # iteration 2: 2 samples + 2 on a retry
    assert 0 < manifest["iter_2/regenerate"]["counts"]["retried_1"] < 32
    assert (reference / "iter_2" / "grpo" / "model" / "config.json").exists()


CRASH_CHAIN = [  # every stage boundary ("before:" and "after:" each stage) and points in the middle of stages
    "before:prepare", "after:prepare", "before:base/evaluate", "evaluate:toyworld:chunk:0", "after:base/evaluate",
    "before:iter_1/caption", "caption:chunk:1", "after:iter_1/caption",
    "before:iter_1/distill", "distill:chunk:0", "after:iter_1/distill",
    "before:iter_1/select", "after:iter_1/select", "before:iter_1/sft", "sft:step:3", "after:iter_1/sft",
    "before:iter_1/sft/evaluate", "after:iter_1/sft/evaluate", "before:iter_1/rl_data", "rl_data:chunk:0", "after:iter_1/rl_data",
    "before:iter_1/grpo", "grpo:step:2", "after:iter_1/grpo", "before:iter_1/grpo/evaluate", "after:iter_1/grpo/evaluate",
    "before:iter_2/regenerate", "regenerate:chunk:1", "regenerate:retry1:chunk:0", "after:iter_2/regenerate",
    "before:iter_2/select", "after:iter_2/select", "before:iter_2/sft", "sft:step:5", "after:iter_2/sft",
    "before:iter_2/sft/evaluate", "after:iter_2/sft/evaluate", "before:iter_2/rl_data", "after:iter_2/rl_data",
    "before:iter_2/grpo", "grpo:step:1", "after:iter_2/grpo", "before:iter_2/grpo/evaluate", "after:iter_2/grpo/evaluate",
]

RESUMED_AT = {"sft:step:3": 2, "grpo:step:2": 2, "sft:step:5": 4}


def test_kill_minus_nine_anywhere_then_rerun_finishes_the_same_run(reference, tmp_path):
    """Each run is killed at the next point of the chain; the last rerun finishes. No completed stage is
    redone or rewritten, and the result is the uninterrupted run's, row for row."""
    recipe = micro_recipe(tmp_path, tmp_path / "run")
    run_dir = tmp_path / "run"
    for previous, point in zip([None, *CRASH_CHAIN], CRASH_CHAIN):
        before = stages(run_dir) if (run_dir / "manifest.json").exists() else {}
        done = run(recipe, crash_at=point)
        assert done.returncode == -signal.SIGKILL, (point, done.returncode, done.stderr[-2000:])
        if previous and previous.startswith("after:"):  # killed after its work, before the manifest said so
            assert f"{previous.removeprefix('after:')}: finished by the interrupted attempt" in done.stderr, previous
        if previous in RESUMED_AT:  # killed mid-training: the rerun goes on from the last checkpoint (every 2 steps)
            assert f"resuming from the checkpoint at step {RESUMED_AT[previous]}" in done.stderr, previous
        after = stages(run_dir)
        for key, entry in before.items():
            if entry["status"] == "complete":
                assert after[key] == entry, f"{key} was redone or rewritten after the crash at {point}"
    done = run(recipe)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest, clean = stages(run_dir), stages(reference)
    assert list(manifest) == list(clean) and all(s["status"] == "complete" for s in manifest.values())
    restarted = {k for k, s in manifest.items() if s["attempts"] > 1}
    assert {"iter_1/sft", "iter_1/grpo", "iter_2/regenerate", "iter_2/sft"} <= restarted
    for key in manifest:  # same counts and same output contents as the run that never crashed
        assert manifest[key]["counts"] == clean[key]["counts"], key
        if key != "prepare":
            assert {n: o["hash"] for n, o in manifest[key]["outputs"].items()} == \
                   {n: o["hash"] for n, o in clean[key]["outputs"].items()}, key
    for k in (1, 2):
        ids = read_records(run_dir / f"iter_{k}" / "sft.parquet").column("id")
        assert ids == read_records(reference / f"iter_{k}" / "sft.parquet").column("id") and len(set(ids)) == len(ids)
    assert not list(run_dir.rglob("*.partial"))
    assert not (run_dir / ".scratch").exists() or not any((run_dir / ".scratch").iterdir())


def test_rerunning_a_finished_run_redoes_nothing(reference):
    before = stages(reference)
    done = run(reference.parent / "run.yaml")
    assert done.returncode == 0, done.stderr[-2000:]
    assert stages(reference) == before
    assert "accuracy on held-out set 'toyworld'" in done.stdout
    status = subprocess.run([OPENVLT, "status", str(reference)], capture_output=True, text=True, timeout=120)
    assert "finished 20" in status.stdout.splitlines()[-1] and "summary.json and report.html are up to date" in status.stdout
    assert status.returncode == 0  # (scripts: 1 failed or stopped, 3 running, 4 not finished)


def _bad_data(tmp_path: Path, reference: Path) -> Path:
    """The reference train file with a corrupt image in row 3, an empty answer in row 5 and a truncated
    JPEG (a valid header) in row 7."""
    rows = list(read_records(reference / "data" / "toyworld" / "train.parquet"))[:32]
    rows[3]["images"] = [b"\x89PNG\r\n\x1a\n not really a png"]
    rows[5]["answer"] = ""
    rows[7]["images"] = [truncated_jpeg()]
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({k: [r[k] if k != "extra_info" else json.dumps(r[k]) for r in rows]
                      for k in ("id", "images", "question", "answer", "data_source", "reward", "extra_info")})
    path = tmp_path / "their_data.parquet"
    pq.write_table(table, path)
    return path


def test_bad_input_rows_stop_with_a_clear_error_or_are_quarantined(reference, tmp_path):
    data = _bad_data(tmp_path, reference)
    bad = data.read_bytes()
    write_records(list(read_records(reference / "data" / "toyworld" / "train.parquet"))[:32], data)
    run_dir = tmp_path / "run"
    inputs = {"sft": str(data), "rl": {"path": str(data), "start": 20, "stop": 32},
              "eval": {"toyworld": str(reference / "data" / "toyworld" / "test.parquet")}}
    recipe = on_reference_student(reference, tmp_path, run_dir, data=inputs, iterations=1)
    assert run(recipe, crash_at="before:iter_1/caption").returncode == -signal.SIGKILL
    assert subprocess.run([OPENVLT, "status", str(run_dir)], capture_output=True, timeout=120).returncode == 4  # killed
    base = stages(run_dir)["base/evaluate"]
    assert base["status"] == "complete"
    data.write_bytes(bad)  # the data file gets bad rows before the run resumes
    done = run(recipe)
    assert done.returncode == 1
    assert (f"data.sft: {data}: 3 bad rows: row 3 (id 'toyworld-3-train-000003'): image 1 of 1 cannot be decoded"
            in done.stderr)  # every bad row named at once, with the way to go on without them
    assert "row 5 (id 'toyworld-3-train-000005'): empty 'answer'; row 7 (id" in done.stderr
    assert "or set data.skip_bad_rows: true" in done.stderr and "Traceback" not in done.stderr
    assert stages(run_dir)["base/evaluate"] == base  # work done before the bad row is kept
    status = subprocess.run([OPENVLT, "status", str(run_dir)], capture_output=True, text=True, timeout=120)
    assert status.returncode == 1  # stopped: a fix is needed
    line = next(line for line in status.stdout.splitlines() if line.startswith("stopped before its next stage"))
    assert "iter_1/caption reads" in line and "row 3" in line and "cannot be decoded" in line
    assert status.stdout.splitlines()[-1] == "not finished: fix what stopped it (above), then run the same command again"
    nowhere = subprocess.run([OPENVLT, "status", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120)
    assert nowhere.returncode == 5 and "no manifest.json here" in nowhere.stderr  # not "failed": a script polls a new run

    done = run(recipe, "data.skip_bad_rows=true", "--force")
    assert done.returncode == 0, done.stderr[-3000:]
    assert stages(run_dir)["base/evaluate"] == base  # and not redone
    [path] = (run_dir / "quarantine").glob("their_data-*.jsonl")
    quarantined = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(q["row"], q["id"]) for q in quarantined] == [(3, "toyworld-3-train-000003"), (5, "toyworld-3-train-000005"),
                                                        (7, "toyworld-3-train-000007")]
    assert "empty 'answer'" in quarantined[1]["reason"] and "image file is truncated" in quarantined[2]["reason"]
    assert stages(run_dir)["iter_1/caption"]["counts"]["in"] == 29
    said = [line for line in done.stderr.splitlines() if "are bad, set aside in" in line]  # read by 3 stages, said once
    assert len(said) == 1 and f"data.sft: 3 of the 32 rows read from {data} are bad, set aside in quarantine/{path.name} " \
        "(the first: row 3, image 1 of 1 cannot be decoded" in said[0]
    assert f"3 bad input row(s) set aside in quarantine/{path.name}" in done.stdout
    assert json.loads((run_dir / "summary.json").read_text())["quarantined_rows"] == {f"quarantine/{path.name}": 3}


def test_a_bad_row_in_training_data_read_after_sft_stops_the_run_before_any_stage(reference, tmp_path):
    """RL problems are first used after SFT (hours in, on a cluster): their slice is checked at the start,
    and so is a later iteration's SFT slice, unless the stage that reads it is complete."""
    data, good = _bad_data(tmp_path, reference), str(reference / "data" / "toyworld" / "train.parquet")
    roles = {**yaml.safe_load(micro_recipe(tmp_path, tmp_path / "x").read_text())["roles"],
             "student": {"engine": "hf", "model": str(reference / "models" / "student")}}
    held = {"toyworld": str(reference / "data" / "toyworld" / "test.parquet")}
    for data_keys, first_bad in (({"sft": {"path": good, "stop": 20}, "rl": {"path": str(data), "stop": 12}}, "3 bad rows: row 3"),
                                 ({"sft": [{"path": good, "stop": 20}, {"path": str(data), "start": 4, "stop": 8}],
                                   "rl": {"path": good, "start": 20}}, "2 bad rows: row 5")):  # the slice's rows only
        run_dir = tmp_path / f"run-{first_bad[-1]}"
        done = run(micro_recipe(tmp_path, run_dir, data={**data_keys, "eval": held}, prepare={}, roles=roles))
        assert done.returncode == 1 and f"{data}: {first_bad} (id " in done.stderr, done.stderr[-3000:]
        assert stages(run_dir) == {}  # nothing ran: not even the base evaluation
    from openvlt.inputs import check_training_data
    from openvlt.recipe import load_recipe
    from openvlt.workspace import Workspace

    recipe = load_recipe(tmp_path / "run-5.yaml")
    with Workspace.open(recipe) as ws:
        ws.manifest["stages"]["iter_2/regenerate"] = {"status": "complete"}  # read already: not again
        check_training_data(ws, recipe)


def test_prompts_too_long_to_train_on_are_found_when_the_run_starts(reference, tmp_path, caplog):
    """A slice none of whose prompts fits its limit stops the run before any stage (not after hours of
    captioning and SFT), naming the key; when some are too long, they are named and the run goes on."""
    from openvlt.inputs import check_training_data
    from openvlt.models import load_processor
    from openvlt.models.batching import prompt_lengths
    from openvlt.recipe import load_recipe
    from openvlt.stages.common import load_problems, student_request
    from openvlt.workspace import Workspace

    train, student = str(reference / "data" / "toyworld" / "train.parquet"), str(reference / "models" / "student")
    roles = {**yaml.safe_load(micro_recipe(tmp_path, tmp_path / "x").read_text())["roles"],
             "student": {"engine": "hf", "model": student}}
    data = {"sft": {"path": train, "stop": 20}, "rl": {"path": train, "start": 20, "stop": 36},
            "eval": {"toyworld": str(reference / "data" / "toyworld" / "test.parquet")}}
    grpo = yaml.safe_load(micro_recipe(tmp_path, tmp_path / "x").read_text())["grpo"]
    run_dir = tmp_path / "run"  # the SFT problems are the RL problems too: one slice, read once, checked for both
    done = run(micro_recipe(tmp_path, run_dir, data={**data, "rl": data["sft"]}, prepare={}, roles=roles,
                            grpo={**grpo, "max_prompt_length": 5}))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert re.search(r"data.rl: every one of the 20 RL problems is longer than grpo.max_prompt_length \(5 tokens; the shortest "
                     r"has \d+\): bound the images' size \(roles.student.options.max_pixels\), or raise grpo.max_prompt_length",
                     done.stderr), done.stderr[-3000:]
    assert stages(run_dir) == {}  # nothing ran: not even the base evaluation
    status = subprocess.run([OPENVLT, "status", str(run_dir)], capture_output=True, text=True, timeout=120)
    assert "iter_1/rl_data reads" in status.stdout and "grpo.max_prompt_length" in status.stdout

    recipe = load_recipe(micro_recipe(tmp_path, tmp_path / "sft", data=data, prepare={}, roles=roles))
    prompts = [student_request(p, recipe.roles.student.prompt, recipe.roles.student.system).prompt
               for p in load_problems(train, 0, 20)]
    lengths = prompt_lengths(load_processor(student), prompts, [p["images"] for p in load_problems(train, 0, 20)])
    limit = sorted(lengths)[10]
    # a later iteration's own limit is checked too
    recipe = load_recipe(micro_recipe(tmp_path, tmp_path / "later", data=data, prepare={}, roles=roles,
                                      per_iteration={2: {"grpo": {"max_prompt_length": 5}}}))
    with Workspace.open(recipe) as ws, pytest.raises(ValueError, match=r"^data.rl: every one of the 16 RL problems is "
                                                                        r"longer than grpo.max_prompt_length \(5 tokens"):
        check_training_data(ws, recipe)
    assert "iter_2/rl_data reads" in json.loads((tmp_path / "later" / "manifest.json").read_text())["stopped"]

    for max_length, expected in ((limit, None), (min(lengths) - 1, "every one")):
        recipe = load_recipe(micro_recipe(tmp_path, tmp_path / f"sft-{max_length}", data=data, prepare={}, roles=roles,
                                          sft={"steps": 6, "max_length": max_length}))
        with Workspace.open(recipe) as ws:
            if expected is None:
                check_training_data(ws, recipe)
                too_long = sum(n > limit for n in lengths)
                assert (f"{too_long} of 20 SFT problems are longer than sft.max_length ({limit} tokens) and will be left out; "
                        f"the longest, 'toyworld-3-train-{lengths.index(max(lengths)):06d}', has {max(lengths)} tokens") in caplog.text
            else:
                with pytest.raises(ValueError, match=rf"^data.sft: every one of the 20 SFT problems is longer than "
                                                     rf"sft.max_length \({max_length} tokens; the shortest has {min(lengths)}\)"):
                    check_training_data(ws, recipe)


def test_a_reward_plugin_that_raises_stops_the_run_at_its_first_use_and_the_same_command_continues_once_fixed(reference, tmp_path):
    """A held-out set none of whose answers could be judged would read as accuracy 0: the base evaluation
    stops, before any captioning or training is spent, and (a failed stage) runs again once the plugin is fixed."""
    run_dir, plugin = tmp_path / "run", tmp_path / "my_reward.py"
    recipe = micro_recipe(tmp_path, run_dir, iterations=1, reward={"workers": 1, "override": f"{plugin}:judge"})
    plugin.write_text(PLUGINS.read_text() + "\njudge = raises\n")
    done = run(recipe)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert ("held-out set 'toyworld': none of its 16 answers could be judged (16 reward errors, 0 timeouts; first: reward "
            f"'{plugin}:judge' on item 0") in done.stderr and "Fix the plugin and run the same command again" in done.stderr
    assert {k: s["status"] for k, s in stages(run_dir).items()} == {"prepare": "complete", "base/evaluate": "failed"}
    plugin.write_text(PLUGINS.read_text() + "\njudge = lenient_half\n")
    done = run(recipe)
    assert done.returncode == 0, done.stderr[-2000:]
    assert stages(run_dir)["base/evaluate"]["attempts"] == 2 and stages(run_dir)["prepare"]["attempts"] == 1


def test_a_verl_reward_function_judges_every_stage_with_each_rows_data_source(tmp_path):
    """A user's verl `compute_score(data_source, solution_str, ground_truth, extra_info)` is a reward as it is:
    select, rl_data, GRPO's rollouts and every evaluation call it with the row's data source (the plugin raises
    on any other, and a stage none of whose answers could be judged stops the run)."""
    run_dir = tmp_path / "run"
    recipe = micro_recipe(tmp_path, run_dir, iterations=1,
                          reward={"workers": 1, "override": f"{PLUGINS}:verl_form_lenient_half"})
    done = run(recipe)
    assert done.returncode == 0, done.stderr[-2000:]
    judged = {key: stage["counts"]["reward_errors"] for key, stage in stages(run_dir).items() if "reward_errors" in stage["counts"]}
    assert judged == dict.fromkeys(["base/evaluate", "iter_1/select", "iter_1/sft/evaluate", "iter_1/rl_data", "iter_1/grpo",
                                    "iter_1/grpo/evaluate"], 0)
    assert 0 < stages(run_dir)["iter_1/select"]["counts"]["correct_traces"] < stages(run_dir)["iter_1/select"]["counts"]["traces"]
    rewards = [json.loads(line)["reward"] for line in (run_dir / "iter_1/grpo/model/metrics.jsonl").read_text().splitlines()]
    assert 0 < min(rewards) and max(rewards) < 1  # lenient_half's verdicts, on every step


def test_a_reward_module_in_the_working_directory_is_found_as_rewards_score_finds_it(tmp_path):
    """`reward.override: my_rewards:judge` next to my_rewards.py (the rewards README's "in the current folder"):
    the recipe check gets past the reward and stops at the next problem, a missing held-out file."""
    here = tmp_path / "here"
    here.mkdir()
    (here / "my_rewards_here.py").write_text(PLUGINS.read_text() + "\njudge = lenient_half\n")
    recipe = micro_recipe(tmp_path, tmp_path / "run", reward={"workers": 1, "override": "my_rewards_here:judge"},
                          data={"sft": "{run_dir}/data/toyworld/train.parquet", "rl": "{run_dir}/data/toyworld/train.parquet",
                                "eval": {"toyworld": str(tmp_path / "nowhere.parquet")}})
    done = subprocess.run([OPENVLT, "run", str(recipe)], capture_output=True, text=True, timeout=300, cwd=here,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 1 and "cannot import" not in done.stderr
    assert f"missing input(s):\n  data.eval.toyworld: {tmp_path / 'nowhere.parquet'}" in done.stderr, done.stderr[-2000:]


def test_a_training_reward_that_judges_nothing_stops_grpo_clearly_and_keeps_the_finished_work(reference, tmp_path):
    shutil.copytree(reference, tmp_path / "run")
    recipe, before = micro_recipe(tmp_path, tmp_path / "run"), stages_once_moved(reference, tmp_path / "run")
    done = run(recipe, f"grpo.reward=0.5*{{reward}}+0.5*{PLUGINS}:raises", "--force", "--redo", "iter_2/grpo")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "GRPO step 1: none of its 8 rollouts could be judged (8 reward errors, 0 timeouts; first: reward " in done.stderr
    after, redone = stages(tmp_path / "run"), ("iter_2/grpo", "iter_2/grpo/evaluate")
    assert [after[k]["status"] for k in redone] == ["failed", "redo"]
    assert all(after[k]["outputs"] == before[k]["outputs"] for k in redone)  # the old outputs stay until new ones are made
    assert all(after[k] == before[k] for k in before if k not in redone)  # and the rest of the finished work as it was
    status = subprocess.run([OPENVLT, "status", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    line = next(line for line in status.stdout.splitlines() if line.startswith("iter_2/grpo "))
    assert "failed" in line and "none of its 8 rollouts could be judged" in line and status.returncode == 1

    done = run(recipe, "--force", "--redo", "iter_2/grpo")  # the reward fixed
    assert done.returncode == 0, done.stderr[-3000:]
    assert stages(tmp_path / "run")["iter_2/grpo"]["status"] == "complete"


def test_redo_reruns_the_named_stage_and_the_ones_after_it_with_the_new_values(reference, tmp_path):
    shutil.copytree(reference, tmp_path / "run")
    recipe = micro_recipe(tmp_path, tmp_path / "run")
    before, frozen = stages(tmp_path / "run"), (tmp_path / "run" / "recipe.yaml").read_text()
    typo = run(recipe, "grpo.lr=0.01", "--force", "--redo", "iter_2/grop")  # (--force: the copy's run_dir differs)
    assert typo.returncode == 1 and "did you mean 'iter_2/grpo'?" in typo.stderr
    assert stages(tmp_path / "run") == before and (tmp_path / "run" / "recipe.yaml").read_text() == frozen

    before = stages_once_moved(reference, tmp_path / "run")
    done = run(recipe, "grpo.lr=0.01", "--force", "--redo", "iter_2/grpo")
    assert done.returncode == 0, done.stderr[-3000:]
    after = stages(tmp_path / "run")
    redone = ["iter_2/grpo", "iter_2/grpo/evaluate"]
    assert list(after) == list(before)
    assert all(after[k] == before[k] for k in before if k not in redone)
    assert [after[k]["attempts"] for k in redone] == [before[k]["attempts"] + 1 for k in redone]
    assert after["iter_2/grpo"]["outputs"]["model"]["hash"] != before["iter_2/grpo"]["outputs"]["model"]["hash"]
    assert all(after[k]["status"] == "complete" for k in after)


def test_the_students_image_size_bounds_reach_training_and_every_model_it_saves(reference, tmp_path):
    """roles.student.options.max_pixels through the loop: the model folders SFT and GRPO save keep it (so
    the stages that load them, and plain transformers, read images at that size); the stages before stay."""
    from transformers import AutoProcessor

    shutil.copytree(reference, tmp_path / "run")
    recipe = micro_recipe(tmp_path, tmp_path / "run")
    done = run(recipe, "roles.student.options.max_pixels=3136", "--force", "--redo", "iter_2/sft")
    assert done.returncode == 0, done.stderr[-3000:]
    after = stages(tmp_path / "run")
    assert after["iter_2/sft"]["counts"]["too_long"] == 0 and after["iter_2/grpo"]["counts"]["too_long"] == 0
    for stage in ("iter_2/sft", "iter_2/grpo"):
        model = tmp_path / "run" / stage / "model"
        assert AutoProcessor.from_pretrained(model, trust_remote_code=True).image_processor.size.longest_edge == 3136
    base = AutoProcessor.from_pretrained(tmp_path / "run" / "iter_1" / "sft" / "model", trust_remote_code=True)
    assert base.image_processor.size.longest_edge != 3136  # the stages before the redo kept theirs
    assert after["iter_2/grpo/evaluate"]["attempts"] == 2


def test_a_held_out_set_added_after_its_evaluations_ran_shows_as_missing_and_redo_adds_it_training_nothing(reference, tmp_path):
    shutil.copytree(reference, tmp_path / "run")
    test = str(reference / "data" / "toyworld" / "test.parquet")
    data = {**yaml.safe_load(micro_recipe(tmp_path, tmp_path / "run").read_text())["data"], "eval": {"new": test, "toyworld": test}}
    recipe = micro_recipe(tmp_path, tmp_path / "run", data=data)
    done = run(recipe, "--force")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "base/eval.json has no accuracy on 'new' (evaluated on: toyworld): `--redo base/evaluate` adds it (`--redo " \
           "'*/evaluate'` to every evaluation; nothing is trained again)" in done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["eval_set"] == "new" and summary["base"]["accuracy"] is None
    assert summary["iterations"][1]["grpo"]["all_sets"] == {"toyworld": stages(reference)["iter_2/grpo/evaluate"]["counts"]["accuracy/toyworld"]}

    before = stages(tmp_path / "run")
    done = run(recipe, "--redo", "*/evaluate")
    assert done.returncode == 0, done.stderr[-3000:]
    after = stages(tmp_path / "run")
    evaluations = [k for k in before if k.endswith("/evaluate")]
    assert len(evaluations) == 5 and all(after[k]["attempts"] == before[k]["attempts"] + 1 for k in evaluations)
    assert all(after[k] == before[k] for k in before if k not in evaluations)  # no stage but the evaluations ran
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    accuracy = stages(reference)["iter_2/grpo/evaluate"]["counts"]["accuracy/toyworld"]
    assert summary["iterations"][1]["grpo"]["all_sets"] == {"new": accuracy, "toyworld": accuracy}  # the same file


def test_a_hub_data_folder_runs_by_split_name_patterns(reference, tmp_path):
    """A Hugging Face data folder (every split's shards side by side): each data key names one split's
    shards by a name pattern; the run reads, quarantines and fingerprints the matched shards as one set,
    resumes with nothing redone, and names the pattern when a shard is added."""
    import pyarrow.parquet as pq

    table, data = pq.read_table(_bad_data(tmp_path, reference)), tmp_path / "hub" / "data"
    data.mkdir(parents=True)
    for k, (start, stop) in enumerate(((0, 12), (12, 32))):
        pq.write_table(table.slice(start, stop - start).drop_columns(["data_source"]), data / f"train-0000{k}-of-00002.parquet")
    shutil.copy(reference / "data" / "toyworld" / "test.parquet", data / "test-00000-of-00001.parquet")
    inputs = {"sft": {"path": str(data / "train-*.parquet"), "stop": 20},
              "rl": {"path": str(data / "train-*.parquet"), "start": 20}, "eval": {"toyworld": str(data / "test-*")},
              "skip_bad_rows": True}
    recipe = on_reference_student(reference, tmp_path, tmp_path / "run", data=inputs, iterations=1)
    done = run(recipe)
    assert done.returncode == 0, done.stderr[-3000:]
    [quarantine] = (tmp_path / "run" / "quarantine").glob("train-*.jsonl")
    assert [json.loads(line)["row"] for line in quarantine.read_text().splitlines()] == [3, 5, 7]  # rows of the set
    caption = read_records(tmp_path / "run" / "iter_1" / "captions.parquet")
    assert len(caption) == 17 and {p["data_source"] for p in caption} == {"train"}
    assert stages(tmp_path / "run")["base/evaluate"]["counts"]["in"] == 16
    before = stages(tmp_path / "run")
    done = run(recipe)
    assert done.returncode == 0 and stages(tmp_path / "run") == before, done.stderr[-3000:]  # nothing redone
    pq.write_table(table.slice(0, 1), data / "train-00002-of-00002.parquet")
    done = run(recipe)
    assert done.returncode == 1 and f"iter_1/caption is complete, but its input problems ({data / 'train-*.parquet'}) " \
                                    "changed since it ran" in done.stderr


def test_a_held_out_set_with_no_usable_row_is_named(reference, tmp_path):
    import pyarrow.parquet as pq

    train, bad = _bad_data(tmp_path, reference), tmp_path / "held.parquet"
    pq.write_table(pq.read_table(train).slice(3, 1), bad)  # only the corrupt-image row
    data = {"sft": str(train), "rl": str(train), "eval": {"held": str(bad)}, "skip_bad_rows": True}
    recipe = on_reference_student(reference, tmp_path, tmp_path / "run", data=data)
    done = run(recipe)
    assert done.returncode == 1 and f"data.eval.held: {bad} has no usable problems (" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("crash_at", ["rl_data:chunk:0", "after:iter_1/rl_data"])
def test_widening_rl_datas_band_after_an_interrupted_attempt_samples_nothing_again(reference, tmp_path, crash_at):
    """rl_data's band and max_problems only choose among its judged samples: changed with --force (as its
    "kept none" error advises), the interrupted attempt's samples are kept, and the choice is made anew,
    even when that attempt had finished and was killed before it was recorded."""
    recipe = on_reference_student(reference, tmp_path, tmp_path / "run", iterations=1, data=reference_data(reference))
    assert run(recipe, crash_at=crash_at).returncode == -signal.SIGKILL
    done = run(recipe, "rl_data.max_pass=0.9", "--force")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "iter_1/rl_data: keeping the interrupted attempt's saved work (only keys that choose among it changed)" in done.stderr
    assert "rl pass rates: 1 of 1 chunks were finished by an interrupted attempt and reused; 0 generated now" in done.stderr
    kept = read_records(tmp_path / "run" / "iter_1" / "rl.parquet")
    assert len(kept) == stages(tmp_path / "run")["iter_1/rl_data"]["counts"]["out"] > 0
    assert all(row["pass_rate"] < 0.9 for row in kept)
    assert any(row["pass_rate"] >= 0.9 for row in read_records(reference / "iter_1" / "rl.parquet"))  # (the old band's)


def test_every_checkpoint_is_judged_by_the_top_level_reward_whatever_an_iteration_trains_with(reference, tmp_path):
    """An iteration may judge its own data with another reward (here: every answer right); its checkpoints'
    held-out accuracy is still judged by the recipe's top-level one, as the base model's was, so the
    summary compares like with like."""
    import importlib.util

    from openvlt.recipe import Evaluate

    spec = importlib.util.spec_from_file_location("plugins_under_test", PLUGINS)
    plugins = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugins)
    recipe = on_reference_student(reference, tmp_path, tmp_path / "run", iterations=1, data=reference_data(reference),
                                  reward={"workers": 1, "override": f"{PLUGINS}:raises_on_unclear"},  # the <answer>, exactly
                                  per_iteration={1: {"reward": {"override": f"{PLUGINS}:lenient"},
                                                     "evaluate": {"samples_kept": 5}}})  # (what eval.json keeps: may differ)
    done = run(recipe)
    assert done.returncode == 0, done.stderr[-3000:]
    select = stages(tmp_path / "run")["iter_1/select"]["counts"]
    assert select["correct_traces"] == select["traces"]  # the iteration's own reward judged its data
    for where in ("base", "iter_1/sft", "iter_1/grpo"):
        judged = json.loads((tmp_path / "run" / where / "eval.json").read_text())["sets"]["toyworld"]
        samples = judged["samples"]
        assert len(samples) == (min(Evaluate().samples_kept, judged["n"]) if where == "base" else 5) and judged["n"] > 5
        assert [s["score"] for s in samples] == [plugins.raises_on_unclear(s["response"], s["answer"], extra_info={})
                                                 for s in samples]
        if where != "base":  # (the untrained student writes blanks)
            assert any(s["response"].strip() and s["score"] == 0.0 for s in samples)  # (lenient would have taken it)


def test_a_held_out_set_shrunk_by_bad_rows_says_so_and_every_set_is_in_the_table(reference, tmp_path):
    """An accuracy over 29 of a file's 32 problems is not the file's accuracy: the run says so once, each
    eval.json records the rows set aside beside `n`, and the final table shows every held-out set."""
    data = {**reference_data(reference, yours=str(_bad_data(tmp_path, reference))), "skip_bad_rows": True}
    recipe = on_reference_student(reference, tmp_path, tmp_path / "run", data=data, iterations=1)
    done = run(recipe)
    assert done.returncode == 0, done.stderr[-3000:]
    said = [line for line in done.stderr.splitlines() if "are bad, set aside in" in line]
    assert len(said) == 1 and "data.eval.yours: 3 of the 32 rows read from" in said[0]
    assert said[0].endswith("; its accuracy is over the other 29")
    for where in ("base", "iter_1/sft", "iter_1/grpo"):
        sets = json.loads((tmp_path / "run" / where / "eval.json").read_text())["sets"]
        assert (sets["yours"]["n"], sets["yours"]["set_aside"], sets["toyworld"]["set_aside"]) == (29, 3, 0)
        assert stages(tmp_path / "run")[f"{where}/evaluate"]["counts"]["set_aside/yours"] == 3
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    yours = [summary["base"]["all_sets"]["yours"]] + [summary["iterations"][0][s]["all_sets"]["yours"] for s in ("sft", "grpo")]
    lines = done.stdout.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("other sets")))
    assert lines[header].split() == ["other", "sets", "base", "SFT", "1", "GRPO", "1"]
    assert lines[header + 1].split() == ["yours", *(f"{a:.3f}" for a in yours)]


def test_bad_rows_of_two_data_files_with_the_same_name_are_quarantined_apart(reference, tmp_path):
    from types import SimpleNamespace

    from openvlt.inputs import read_problems
    from openvlt.recipe import DataRef

    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        shutil.copy(_bad_data(tmp_path, reference), tmp_path / d / "test.parquet")
    ws = SimpleNamespace(root=tmp_path / "run")
    r = SimpleNamespace(data=SimpleNamespace(skip_bad_rows=True), reward=SimpleNamespace(override=None, memory_mb=2048),
                        evaluate=SimpleNamespace(max_problems=None))
    for d in ("a", "b"):
        assert len(read_problems(ws, r, DataRef(str(tmp_path / d / "test.parquet")), "data.eval.held")) == 29
    files = sorted((tmp_path / "run" / "quarantine").glob("test-*.jsonl"))
    assert len(files) == 2
    assert {json.loads(f.read_text().splitlines()[0])["file"] for f in files} == {str(tmp_path / d / "test.parquet") for d in "ab"}


def test_rows_set_aside_are_counted_up_to_the_problems_evaluate_max_problems_keeps(reference, tmp_path):
    """Rows 3, 5 and 7 are bad: the first 3 usable rows (0-2) have none before them, the first 4 (0-2, 4)
    row 3, the first 5 (.., 6) rows 3 and 5; in a slice [4, 32), rows 5 and 7 lie before the 2nd and 3rd usable."""
    from types import SimpleNamespace

    from openvlt.inputs import bad_rows_before, read_problems
    from openvlt.recipe import DataRef

    data = _bad_data(tmp_path, reference)
    ws = SimpleNamespace(root=tmp_path / "run")
    r = SimpleNamespace(data=SimpleNamespace(skip_bad_rows=True), reward=SimpleNamespace(override=None, memory_mb=2048),
                        evaluate=SimpleNamespace(max_problems=4))
    whole, later = DataRef(str(data)), DataRef(str(data), 4, 32)
    assert len(read_problems(ws, r, whole, "data.eval.held")) == 29 and len(read_problems(ws, r, later, "data.eval.later")) == 26
    assert [bad_rows_before(ws, r, whole, first) for first in (None, 3, 4, 5, 7, 29)] == [3, 0, 1, 2, 3, 3]
    assert [bad_rows_before(ws, r, later, first) for first in (None, 1, 2, 3)] == [2, 0, 1, 2]  # rows 4 | 5, 6 | 7, 8


def test_a_data_slice_with_no_usable_problem_or_an_unknown_reward_stops_the_run_naming_the_file(
        tmp_path, toyworld_dir, tiny_student):
    """Found when the data is read, not as an SFT stage with nothing to learn from, or as an evaluation
    that scores 0.000 because every answer went to a plugin that does not exist; the quarantine file of a
    data file that has been fixed goes away."""
    from openvlt.inputs import read_problems
    from openvlt.recipe import DataRef, load_recipe
    from openvlt.records import write_records
    from openvlt.stages.common import load_problems
    from openvlt.workspace import Workspace

    from .test_recipe import write

    rows = load_problems(toyworld_dir / "train.parquet", 0, 4)
    write_records([{**rows[0], "answer": ""}], tmp_path / "all_bad.parquet", skip_bad_rows=True,
                  quarantine_path=tmp_path / "ignored.jsonl")  # every row bad: an empty file
    write_records([*rows[:2], {**rows[2], "reward": "mathh"}], tmp_path / "typo.parquet")
    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run")))
    with Workspace.open(recipe) as ws:
        with pytest.raises(ValueError, match=r"data.sft: .*all_bad.parquet has no usable problems"):
            read_problems(ws, recipe, DataRef(str(tmp_path / "all_bad.parquet")), "data.sft")
        with pytest.raises(ValueError, match=rf"data.eval.mine: .*typo.parquet, problem '{rows[2]['id']}' \(the first whose "
                                             r"reward is 'mathh'\): unknown reward 'mathh'; did you mean 'math'\?"):
            read_problems(ws, recipe, DataRef(str(tmp_path / "typo.parquet")), "data.eval.mine")
        import rewards.registry

        waits = plugin_file(tmp_path / "waits.py", "import time\ntime.sleep(600)")  # an error in time, not a hung run
        write_records([*rows[:1], {**rows[1], "reward": waits}], tmp_path / "waits.parquet")
        with patch.object(rewards.registry, "LOAD_LIMIT_S", 1.0), pytest.raises(
                ValueError, match=rf"data.rl: .*waits.parquet, problem '{rows[1]['id']}' \(the first whose reward is .*\): loading reward "
                                  r"'.*waits.py:score' took more than 1 s"):
            read_problems(ws, recipe, DataRef(str(tmp_path / "waits.parquet")), "data.rl")
        overridden = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run"),
                                       reward={"override": "math"}), check_paths=False)
        assert len(read_problems(ws, overridden, DataRef(str(tmp_path / "typo.parquet")), "data.eval.mine")) == 3

    lenient = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run"),
                                data={"sft": "DATA/train.parquet", "rl": "DATA/train.parquet",
                                      "eval": {"held": "DATA/test.parquet"}, "skip_bad_rows": True}), check_paths=False)
    shutil.copy(tmp_path / "typo.parquet", tmp_path / "fixed_later.parquet")
    write_records([*rows[:3], {**rows[3], "images": [truncated_jpeg()]}], tmp_path / "fixed_later.parquet")
    with Workspace.open(lenient, force=True) as ws:
        assert len(read_problems(ws, lenient, DataRef(str(tmp_path / "fixed_later.parquet")), "data.sft")) == 3
        whole = hashlib.sha256(str((tmp_path / "fixed_later.parquet").resolve()).encode()).hexdigest()[:8]
        assert [p.name for p in (ws.root / "quarantine").glob("fixed_later-*.jsonl")] == [f"fixed_later-{whole}.jsonl"]
        with pytest.raises(ValueError, match=r"data.rl: .*fixed_later.parquet: rows \[3, 4\) select no problems .*"
                                             r"\(1 bad rows set aside in .*quarantine"):
            read_problems(ws, lenient, DataRef(str(tmp_path / "fixed_later.parquet"), 3, 4), "data.rl")
        assert len(list((ws.root / "quarantine").glob("fixed_later-*.jsonl"))) == 2  # one per slice read
        write_records(rows, tmp_path / "fixed_later.parquet")  # fixed in place
        assert len(read_problems(ws, lenient, DataRef(str(tmp_path / "fixed_later.parquet")), "data.sft")) == 4
        assert len(list((ws.root / "quarantine").glob("fixed_later-*.jsonl"))) == 1  # [3, 4) not read since
        whole = hashlib.sha256(str((tmp_path / "fixed_later.parquet").resolve()).encode()).hexdigest()[:8]
        assert not (ws.root / "quarantine" / f"fixed_later-{whole}.jsonl").exists()  # the name runs before slices gave it
        assert len(read_problems(ws, lenient, DataRef(str(tmp_path / "fixed_later.parquet"), 3, 4), "data.rl")) == 1
        assert not list((ws.root / "quarantine").glob("fixed_later-*.jsonl"))


def test_a_rows_relative_reward_file_is_the_one_next_to_the_data_file_wherever_the_run_starts(
        tmp_path, toyworld_dir, tiny_student, monkeypatch):
    """As image paths are: a rerun from another folder reads the same plugin (before, `mine.py:score` was
    looked for in the working directory, so a resume started elsewhere stopped)."""
    from openvlt.inputs import read_problems
    from openvlt.recipe import DataRef, load_recipe
    from openvlt.records import write_records
    from openvlt.stages.common import load_problems
    from openvlt.workspace import Workspace

    from .test_recipe import write

    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    data.mkdir(), elsewhere.mkdir()
    plugin_file(data / "mine.py", "")
    plugin_file(elsewhere / "theirs.py", "")  # not next to the data: the working directory's, as before
    rows = load_problems(toyworld_dir / "train.parquet", 0, 3)
    write_records([{**rows[0], "reward": "mine.py:score"}, {**rows[1], "reward": "0.5*math+0.5*mine.py:score"},
                   {**rows[2], "reward": "theirs.py:score"}], data / "mixed.parquet")
    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run")))
    monkeypatch.chdir(elsewhere)
    with Workspace.open(recipe) as ws:
        problems = read_problems(ws, recipe, DataRef(str(data / "mixed.parquet")), "data.sft")
    assert [p["reward"] for p in problems] == [f"{data}/mine.py:score", f"0.5*math+0.5*{data}/mine.py:score",
                                               f"{elsewhere}/theirs.py:score"]
    monkeypatch.chdir(tmp_path)  # theirs.py is not found from here: named
    with Workspace.open(recipe) as ws, pytest.raises(ValueError, match=r"data.sft: .*mixed.parquet, problem .*theirs.py"):
        read_problems(ws, recipe, DataRef(str(data / "mixed.parquet")), "data.sft")


def test_a_text_only_language_model_can_be_the_reasoner_but_not_the_captioner(tmp_path, tiny_reasoner):
    """OpenVLThinker's reasoner was a text-only LLM: bound with the hf engine it answers from each problem's
    caption and question; the captioner reads the images, so a text-only model there is refused, naming the key."""
    from openvlt.recipe import DEFAULT_DISTILL_PROMPT
    from openvlt.stages.common import fill, text_of

    reasoner = decisive_engine(tiny_reasoner)  # greedy answers that depend on the prompt
    reasoner.model.save_pretrained(tmp_path / "reasoner")
    reasoner.processor.tokenizer.save_pretrained(tmp_path / "reasoner")
    base = yaml.safe_load(micro_recipe(tmp_path, tmp_path / "x").read_text())["roles"]
    text_reasoner = {**base, "reasoner": {"engine": "hf", "model": str(tmp_path / "reasoner"), "options": {"batch_size": 64}}}
    recipe = micro_recipe(tmp_path, tmp_path / "run", iterations=1, roles=text_reasoner,
                          distill={"samples": 1, "temperature": 0.0, "max_tokens": 12, "chunk_size": 12})
    done = run(recipe)
    assert done.returncode == 0, done.stderr[-3000:]
    traced = read_records(tmp_path / "run" / "iter_1" / "traces.parquet")
    assert set(traced.column("trace_source")) == {f"reasoner hf:{tmp_path / 'reasoner'}"}
    asked = [Request(fill(DEFAULT_DISTILL_PROMPT, caption=p["caption"], question=text_of(p["question"]))) for p in traced]
    greedy = reasoner.generate(asked, Sampling(n=1, temperature=0, max_tokens=12))
    assert traced.column("traces") == greedy and len({t[0] for t in greedy}) > len(asked) // 2
    assert stages(tmp_path / "run")["iter_1/sft"]["status"] == "complete"
    config = tmp_path / "reasoner" / "config.json"  # the reasoner's folder replaced in place by a new revision:
    config.write_text(config.read_text().replace("{", '{"revision": 2,', 1))  # its traces are not silently kept
    done = run(recipe)
    assert done.returncode != 0 and (f"iter_1/distill is complete, but its input model ({tmp_path / 'reasoner'}) "
                                     "changed since it ran") in done.stderr

    text_captioner = {**base, "captioner": {"engine": "hf", "model": str(tiny_reasoner)}}
    refused = micro_recipe(tmp_path, tmp_path / "refused", iterations=1, roles=text_captioner)
    done = run(refused)
    why = f"roles.captioner.model: {tiny_reasoner} is a text-only model, but the captioner reads the problems' images"
    assert done.returncode != 0 and why in done.stderr
    assert not (tmp_path / "refused" / "manifest.json").exists()  # refused with the recipe, before anything ran
    from openvlt.loop import _engine
    from openvlt.recipe import load_recipe

    with pytest.raises(ValueError, match=why.replace(".", r"\.")):  # and by the stage, for a model that came later
        _engine(load_recipe(refused, check_paths=False), "captioner")


def test_training_data_that_holds_held_out_problems_is_warned_about(tmp_path, toyworld_dir, tiny_student, caplog):
    """The same question with the same images, or another question about a held-out image: the set's
    accuracy would partly measure memory. A warning, not a refusal; the toy world's own split has none."""
    from openvlt.inputs import read_problems
    from openvlt.recipe import DataRef, load_recipe
    from openvlt.records import write_records
    from openvlt.stages.common import load_problems
    from openvlt.workspace import Workspace

    from .test_recipe import write

    train, held = load_problems(toyworld_dir / "train.parquet", 0, 5), load_problems(toyworld_dir / "test.parquet", 0, 3)
    copies = [{**held[0], "id": "copy0", "question": "  " + held[0]["question"]}, {**held[1], "id": "copy1"}]
    asked_again = {**held[2], "id": "again", "question": "<image> How many shapes are there in total?", "answer": "1"}
    write_records([*train, *copies, asked_again], tmp_path / "leaky.parquet")
    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run")))
    with Workspace.open(recipe) as ws:
        assert len(read_problems(ws, recipe, DataRef(str(toyworld_dir / "train.parquet")), "data.sft")) == 120
        assert "held-out" not in caplog.text
        assert len(read_problems(ws, recipe, DataRef(str(tmp_path / "leaky.parquet")), "data.rl")) == 8
    assert (f"data.rl: 2 of its 8 problems are in held-out set 'held' too (the same question and images; the first: 'copy0', "
            f"there {held[0]['id']!r}); 1 of its problems ask about an image of held-out set 'held': that set's accuracy will "
            "overstate what the model learned") in caplog.text


def test_a_captioner_is_not_loaded_for_problems_without_images(tmp_path, toyworld_dir, tiny_student, monkeypatch):
    """Text-only SFT problems have nothing to describe: the caption stage loads no captioner model."""
    from openvlt import loop
    from openvlt.recipe import load_recipe
    from openvlt.records import write_records
    from openvlt.stages.common import load_problems
    from openvlt.workspace import Workspace

    from .test_recipe import write

    text_only = [{**p, "question": f"What is {i} + 3?", "images": [], "answer": str(i + 3)}
                 for i, p in enumerate(load_problems(toyworld_dir / "train.parquet", 0, 4))]
    write_records(text_only, tmp_path / "text.parquet")
    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run"),
                               data={"sft": str(tmp_path / "text.parquet"), "rl": str(tmp_path / "text.parquet"),
                                     "eval": {"held": str(toyworld_dir / "test.parquet")}},
                               roles={"student": {"model": "MODEL"}, "captioner": {"engine": "hf", "model": "MODEL"}}))
    built = []
    real_engine = loop._engine
    monkeypatch.setattr(loop, "_engine", lambda r, role, *a: built.append(role) or real_engine(r, role, *a))
    with Workspace.open(recipe) as ws:
        loop.caption(ws, recipe, 1)
    assert built == [] and [p["caption"] for p in load_problems(tmp_path / "run" / "iter_1" / "captions.parquet")] == [""] * 4


def test_select_records_the_students_tokenizer_as_an_input_when_it_counts_tokens(tmp_path, toyworld_dir, tiny_student, monkeypatch):
    """select counts trace tokens with the student's tokenizer when select.max_tokens is set: the student
    folder is then one of its inputs (a --redo of prepare, which builds it, redoes select)."""
    from openvlt import loop
    from openvlt.recipe import load_recipe
    from openvlt.workspace import Workspace

    from .test_recipe import write

    recorded = {}
    monkeypatch.setattr(Workspace, "stage", lambda self, key, fn, outputs, inputs=None: recorded.setdefault(key, inputs) and {})
    for max_tokens in (None, 200):
        recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / f"run{max_tokens}"),
                                   select={"max_tokens": max_tokens}))
        with Workspace.open(recipe) as ws:
            loop.select(ws, recipe, 1)
        assert recorded.pop("iter_1/select").get("tokenizer") == (None if max_tokens is None else recipe.roles.student.model)


@pytest.mark.parametrize("named_by", ["reward.override", "a module spec", "the data's reward column",
                                      "a module spec in the data's reward column"])
def test_a_reward_plugin_edited_in_place_makes_the_stages_that_judged_with_it_incomplete(tmp_path, named_by, monkeypatch):
    """Verdicts come from the plugin's code: a plugin file edited after select or an evaluation ran is
    an input that changed, like a data file fixed in place, whether the recipe names it (by its file, or as a
    module on the path) or the data's rows do (by a path relative to the data file, as verl's data files name
    their scorer, or as a module on the path)."""
    from data_tools.toyworld.dataset import build_toyworld

    data, run_dir = tmp_path / "data", tmp_path / "run"
    plugin = data / "my_reward.py"
    data.mkdir()
    monkeypatch.setenv("PYTHONPATH", str(data))  # (`run` passes our environment on)
    if named_by in ("reward.override", "a module spec"):
        spec = f"{plugin}:lenient_half" if named_by == "reward.override" else "my_reward:lenient_half"
        recipe = micro_recipe(tmp_path, run_dir, iterations=1, reward={"workers": 1, "override": spec})
    else:
        spec = "my_reward.py:lenient_half" if named_by == "the data's reward column" else "my_reward:lenient_half"
        build_toyworld(data, n_train=48, n_test=16, seed=3)
        for split in ("train", "test"):
            rows = list(read_records(data / f"{split}.parquet"))
            write_records([{**row, "reward": spec} for row in rows], data / f"{split}.parquet")
        recipe = micro_recipe(
            tmp_path, run_dir, iterations=1, reward={"workers": 1},
            prepare={"tiny_student": {"hidden": 32, "intermediate": 64, "vision_hidden": 32, "vocab": 500}},
            data={"sft": {"path": str(data / "train.parquet"), "start": 0, "stop": 32},
                  "rl": {"path": str(data / "train.parquet"), "start": 32, "stop": 48},
                  "eval": {"toyworld": str(data / "test.parquet")}})
    shutil.copy(PLUGINS, plugin)
    done = run(recipe)
    assert done.returncode == 0, done.stderr[-2000:]
    judged = [key for key, stage in stages(run_dir).items() if f"reward {plugin}" in stage.get("inputs", {})]
    assert judged == ["base/evaluate", "iter_1/select", "iter_1/sft/evaluate", "iter_1/rl_data", "iter_1/grpo",
                      "iter_1/grpo/evaluate"]
    plugin.write_text(plugin.read_text() + "\n# edited: every verdict may differ now\n")
    done = run(recipe)
    assert done.returncode == 1
    assert f"base/evaluate is complete, but its input reward {plugin} changed since it ran; so did an input of " \
           "iter_1/select. Rerun with --redo base/evaluate --redo iter_1/select to run them" in done.stderr
    before = stages(run_dir)
    done = run(recipe, "--redo", "base/evaluate", "--redo", "iter_1/select")  # as the message says: one command
    assert done.returncode == 0, done.stderr[-2000:]
    after = stages(run_dir)
    assert [k for k in after if after[k]["attempts"] > before[k]["attempts"]] == sorted(judged + ["iter_1/sft"], key=list(after).index)
