"""The run directory: resume rules, saved work of interrupted stages, and --redo."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openvlt.recipe import RecipeError, load_recipe
from openvlt.workspace import RunDirectoryBusy, Workspace, format_status, run_state

from .test_recipe import write


def _chain(tmp_path: Path, key: str) -> dict[str, Path]:
    """The stages of the --redo tests read the output of the stage before them, as the loop's do; d reads a's."""
    before = {"b": "a", "c": "b", "d": "a"}.get(key)
    return {"x": tmp_path / "run" / f"{before}.txt"} if before else {}


def test_redo_runs_a_stage_and_the_ones_made_from_it_again_and_a_repeated_redo_continues(tmp_path, toyworld_dir, tiny_student):
    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run")))
    runs = []

    def run_stages(ws, keys):  # each stage writes its name and the number of stage runs before it
        for key in keys:
            def body(ctx, key=key):
                ctx.out["x"].write_text(f"{key} {len(runs)}")
                runs.append(key)
                return {}
            ws.stage(key, body, outputs={"x": tmp_path / "run" / f"{key}.txt"}, inputs=_chain(tmp_path, key))

    run_stages(Workspace.open(recipe), ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match=r"--redo 'bb': .*manifest.json has no such stage; did you mean 'b'\? stages: a, b, c, d"):
        Workspace.open(recipe, redo="bb")
    ws = Workspace.open(recipe, redo="b")  # c is made from b's output; d, after it, is not
    assert [ws.complete(k) for k in "abcd"] == [True, False, False, True]
    assert "marked by --redo" in format_status(tmp_path / "run").splitlines()[-2]
    assert (tmp_path / "run" / "c.txt").read_text() == "c 2"  # kept until the new run of c completes
    run_stages(ws, ["a", "b"])  # ... and the process dies before c
    ws = Workspace.open(recipe, redo="b")  # the same command again: continues, b is not redone
    run_stages(ws, ["a", "b", "c", "d"])
    assert runs == ["a", "b", "c", "d", "b", "c"]
    assert [(tmp_path / "run" / f"{k}.txt").read_text() for k in "abcd"] == ["a 0", "b 4", "c 5", "d 3"]
    run_stages(Workspace.open(recipe, redo="c"), ["a", "b", "c", "d"])  # a finished redo does not block the next one
    assert runs[-1] == "c" and len(runs) == 7
    ws = Workspace.open(recipe, redo="[cd]")  # a pattern names several stages
    assert [ws.complete(k) for k in "abcd"] == [True, True, False, False]
    run_stages(ws, ["a", "b", "c", "d"])
    assert runs[-2:] == ["c", "d"]
    ws = Workspace.open(recipe, redo="a")  # the first stage: everything is made from it
    assert not any(ws.complete(k) for k in "abcd")


def test_redo_follows_outputs_across_a_moved_run_directory_and_to_stages_listed_before_their_input(tmp_path, toyworld_dir, tiny_student):
    """Stages run on the cluster record its paths, stages run after the copy the laptop's: the manifest's
    paths follow the directory, so --redo still finds every stage made from the one it names."""
    reads = {"grpo": "sft", "eval": "grpo", "regenerate": "grpo", "late": "regenerate"}  # stage -> the stage whose output it reads

    def run_stages(run_dir, keys, tag, **open_args):
        recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(run_dir), grpo={"lr": 1e-5 if tag == "v1" else 2e-5}))
        with Workspace.open(recipe, **open_args) as ws:
            for key in keys:
                ws.stage(key, lambda ctx, key=key: (ctx.out["x"].write_text(f"{key} {tag}"), {})[1],
                         outputs={"x": run_dir / f"{key}.txt"}, inputs={"x": run_dir / f"{reads[key]}.txt"} if key in reads else {})

    cluster, laptop = tmp_path / "cluster" / "run", tmp_path / "laptop" / "run"
    run_stages(cluster, ["sft", "grpo"], "v1")
    shutil.copytree(cluster, laptop)
    run_stages(laptop, ["sft", "grpo", "eval", "regenerate"], "v1")
    run_stages(laptop, ["sft", "grpo", "eval", "regenerate"], "v2", force=True, redo="grpo")  # a new lr: the README's example
    assert [(laptop / f"{k}.txt").read_text() for k in ("sft", "grpo", "eval", "regenerate")] == ["sft v1", "grpo v2", "eval v2", "regenerate v2"]

    (laptop / "late.txt").write_text("late v0")  # a stage listed before the stage whose output it reads
    manifest = json.loads((laptop / "manifest.json").read_text())
    manifest["stages"] = {"late": {"status": "complete", "inputs": {"x": {"path": str(laptop / "regenerate.txt"), "hash": None}},
                                   "outputs": {"x": {"path": str(laptop / "late.txt"), "hash": None}}}, **manifest["stages"]}
    (laptop / "manifest.json").write_text(json.dumps(manifest))
    assert Workspace(laptop)._stages_from(["grpo"]) == ["late", "grpo", "eval", "regenerate"]


def test_a_repeated_redo_continues_past_new_stages_and_new_values_start_a_new_one(tmp_path, toyworld_dir, tiny_student):
    """The same --redo after a crash continues however far the redo got, even into stages that ran
    for the first time after it began; the same stage with new values, or after the run finished,
    is a new redo."""
    path = write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run"))
    runs = []

    def run_stages(ws, keys, value="v1"):
        for key in keys:
            if key is Killed:
                raise Killed
            def body(ctx, key=key):
                ctx.out["x"].write_text(f"{key} {value}")
                runs.append(f"{key} {value}")
                return {}
            ws.stage(key, body, outputs={"x": tmp_path / "run" / f"{key}.txt"}, inputs=_chain(tmp_path, key))

    run_stages(Workspace.open(load_recipe(path)), ["a", "b"])  # ... killed before c ever ran
    with pytest.raises(Killed):
        run_stages(Workspace.open(load_recipe(path), redo="b"), ["a", "b", "c", Killed])
    run_stages(Workspace.open(load_recipe(path), redo="b"), ["a", "b", "c"])  # the same command again
    assert runs == ["a v1", "b v1", "b v1", "c v1"]  # b was not redone a second time

    new = load_recipe(path, ["grpo.lr=0.5"])
    with pytest.raises(Killed):  # b redone with the new value, then killed before c
        run_stages(Workspace.open(new, force=True, redo="b"), ["a", "b", Killed], "v2")
    with pytest.raises(Killed):
        run_stages(Workspace.open(load_recipe(path, ["grpo.lr=0.25"]), force=True, redo="b"), ["a", "b", Killed], "v3")
    assert runs[-2:] == ["b v2", "b v3"]  # other values: b is redone again, not skipped as "continued"

    ws = Workspace.open(load_recipe(path, ["grpo.lr=0.25"]), redo="b")
    run_stages(ws, ["a", "b", "c"], "v3")
    ws.finish()  # the loop calls this when the whole run is through
    assert runs[-1] == "c v3"
    run_stages(Workspace.open(load_recipe(path, ["grpo.lr=0.25"]), redo="b"), ["a", "b", "c"], "v3")
    assert runs[-2:] == ["b v3", "c v3"]  # after the run finished, the same --redo runs b and c again


def test_status_shows_the_time_of_the_attempt_it_reports_and_none_for_one_that_left_no_end(tmp_path, toyworld_dir, tiny_student):
    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run")))

    def line(key):
        return next(line for line in format_status(tmp_path / "run").splitlines() if line.startswith(key + " "))

    def slow(ctx):
        time.sleep(0.3)
        ctx.out["x"].write_text("done")
        return {}

    with Workspace.open(recipe) as ws:
        ws.stage("a", slow, outputs={"x": tmp_path / "run" / "a.txt"})
    assert float(line("a").split()[3]) >= 0.3

    def killed_mid_way(ctx):  # as `kill -9` would leave it: the manifest as it is while the stage runs
        os.replace(tmp_path / "run" / "manifest.json", tmp_path / "while_running.json")
        raise ValueError("never recorded")

    with Workspace.open(recipe, redo="a") as ws, pytest.raises(ValueError):
        ws.stage("a", killed_mid_way, outputs={"x": tmp_path / "run" / "a.txt"})
    os.replace(tmp_path / "while_running.json", tmp_path / "run" / "manifest.json")
    assert line("a").split()[1:4] == ["interrupted", "2", "-"]  # not the first attempt's 0.3 s
    with Workspace.open(recipe):  # the rerun, before it starts the stage again (its data check can take minutes)
        assert format_status(tmp_path / "run").startswith(f"run {recipe.name} in {tmp_path / 'run'}")
        assert line("a").split()[1:3] == ["interrupted", "2"]  # not "running now"

    def fails(ctx):
        time.sleep(0.6)
        raise ValueError("bad row 3")

    with Workspace.open(recipe) as ws, pytest.raises(ValueError):
        ws.stage("a", fails, outputs={"x": tmp_path / "run" / "a.txt"})
    assert line("a").split()[1:3] == ["failed", "3"] and float(line("a").split()[3]) >= 0.6  # its own time
    assert line("a").endswith("ValueError: bad row 3")


def test_one_process_at_a_time_in_a_run_directory(tmp_path, toyworld_dir, tiny_student):
    """A second `openvlt run` on a live run directory is refused with who holds it; `status` says the
    stage is running now, not interrupted; once the holder dies (kill -9), the directory is free."""
    path = write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run"))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom openvlt.recipe import load_recipe\nfrom openvlt.workspace import Workspace\n"
         "ws = Workspace.open(load_recipe(sys.argv[1]))\nws.manifest['stages']['sft'] = {'status': 'running'}\nws._save()\n"
         "print('ready', flush=True)\ntime.sleep(120)", str(path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(RunDirectoryBusy, match=rf"run is in use by another openvlt run: pid {holder.pid} on .*, since "):
            Workspace.open(load_recipe(path))
        status = format_status(tmp_path / "run")
        assert f"in progress: pid {holder.pid}" in status and "running now" in status and "interrupted" not in status
        assert run_state(tmp_path / "run") == "running"
    finally:
        holder.kill()
        holder.wait()
    status = format_status(tmp_path / "run")
    assert "in progress" not in status and "interrupted; a rerun continues it" in status
    assert run_state(tmp_path / "run") == "unfinished"
    assert next(line for line in status.splitlines() if line.startswith("sft ")).split()[1:4] == ["interrupted", "0", "-"]
    with Workspace.open(load_recipe(path)) as outer:  # free again; and one process may open it more than once
        with Workspace.open(load_recipe(path)) as inner:
            assert inner.root == outer.root
        with pytest.raises(ValueError, match="--redo 'nope'"):  # an open that fails ...
            Workspace.open(load_recipe(path), redo="nope")
        assert f"pid {os.getpid()}" in format_status(tmp_path / "run")  # ... or closes leaves the outer one's lock
    assert "in progress" not in format_status(tmp_path / "run")  # the last close: free for other processes


def test_a_file_system_without_locks_runs_unlocked_with_a_warning(tmp_path, toyworld_dir, tiny_student, monkeypatch, caplog):
    import errno
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "flock", no_locks)
    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run")))
    with Workspace.open(recipe) as ws:
        assert ws.manifest["run"] == "unit"
        assert "in progress" not in format_status(tmp_path / "run")
    assert "cannot lock files" in caplog.text and "nothing stops a second run" in caplog.text


def test_half_written_files_of_a_killed_process_are_removed(tmp_path, toyworld_dir, tiny_student):
    """A kill inside `atomic_write` or `write_records` leaves `.NAME.tmp-PID` (a data set's size, for
    captions with their images); the next start removes them, and nothing else."""
    recipe, run = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run"))), tmp_path / "run"
    run.mkdir()
    stale = [run / ".manifest.json.tmp-99", run / ".x.txt.tmp-99", run / "..x.txt.partial.tmp-99"]
    keep = [run / "notes.txt", run / ".y.txt.tmp-99"]  # another stage's file: left for that stage
    for p in stale + keep:
        p.write_text("half")
    ws = Workspace.open(recipe)
    assert not stale[0].exists() and stale[1].exists()  # the manifest's at once, a stage's when that stage starts
    def body(ctx):
        ctx.out["x"].write_text("done")
        return {}
    ws.stage("x", body, outputs={"x": run / "x.txt"})
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)


class Killed(BaseException):
    """Stands in for kill -9 inside one process."""


def test_an_interrupted_stage_reuses_its_saved_work_only_if_made_from_the_same_recipe_and_inputs(
        tmp_path, toyworld_dir, tiny_student, caplog):
    path, run, data = write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run")), tmp_path / "run", tmp_path / "in.txt"
    data.write_text("v1")
    seen = []

    def killed_mid_stage(recipe, force=False):  # each attempt saves a chunk and a partial output, then dies
        def body(ctx):
            seen.append((sorted(p.name for p in ctx.scratch.glob("chunk-*")), ctx.out["x"].exists()))
            (ctx.scratch / f"chunk-{len(seen)}").write_text(data.read_text())
            ctx.out["x"].write_text("half")
            raise Killed
        with pytest.raises(Killed):
            Workspace.open(recipe, force=force).stage("gen", body, outputs={"x": run / "x.txt"}, inputs={"data": data})

    killed_mid_stage(load_recipe(path))
    killed_mid_stage(load_recipe(path))
    assert seen == [([], False), (["chunk-1"], True)]  # same recipe and inputs: the saved work is there
    data.write_text("v2")
    killed_mid_stage(load_recipe(path))
    assert seen[-1] == ([], False) and "saved work" in caplog.text and "was made from another data (an input changed" in caplog.text
    killed_mid_stage(load_recipe(path))
    assert seen[-1] == (["chunk-3"], True)
    killed_mid_stage(load_recipe(path, ["grpo.micro_batch_size=2", "per_iteration.2.sft.grad_accum=2"]), force=True)
    assert seen[-1] == (["chunk-3", "chunk-4"], True)  # memory-only knobs (the fix after an OOM kill): work kept
    caplog.clear()
    killed_mid_stage(load_recipe(path, ["sft.lr=0.5"]), force=True)  # e.g. a new learning rate: no old checkpoint
    assert seen[-1] == ([], False) and "was made from other recipe values; starting the stage over" in caplog.text


def test_a_folder_output_kept_from_a_killed_attempt_loses_the_files_half_written_in_it(tmp_path, toyworld_dir, tiny_student):
    """A model folder's metrics.jsonl, a data set's parquet: a kill inside atomic_write leaves a temporary
    file in the partial folder; the rerun keeps the folder's finished files, not that one."""
    from openvlt.files import temporary_path

    recipe, out = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run"))), tmp_path / "run" / "model"

    def killed_writing(ctx):
        (ctx.out["m"] / "sub").mkdir(parents=True)
        (ctx.out["m"] / "config.json").write_text("{}")
        temporary_path(ctx.out["m"] / "sub" / "metrics.jsonl", 4242).write_text("half")
        raise Killed

    def finishing(ctx):
        (ctx.out["m"] / "sub" / "metrics.jsonl").write_text("rows")
        return {}

    with pytest.raises(Killed):
        Workspace.open(recipe).stage("sft", killed_writing, outputs={"m": out})
    Workspace.open(recipe).stage("sft", finishing, outputs={"m": out})
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["config.json", "sub", "sub/metrics.jsonl"]


def test_a_stage_killed_after_its_work_finished_is_recorded_not_run_again(tmp_path, toyworld_dir, tiny_student, monkeypatch):
    recipe, out = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run"))), tmp_path / "run" / "x.txt"
    calls = []

    def body(ctx):
        calls.append(1)
        time.sleep(0.3)
        ctx.out["x"].write_text("work")
        return {"in": 3, "out": 2}

    def crash_after(name):
        if name == "after:gen":
            raise Killed
    monkeypatch.setattr("openvlt.workspace.crashpoint", crash_after)
    with pytest.raises(Killed):  # killed between renaming the output and recording the stage
        Workspace.open(recipe).stage("gen", body, outputs={"x": out})
    monkeypatch.setattr("openvlt.workspace.crashpoint", lambda name: None)
    ws = Workspace.open(recipe)
    assert ws.stage("gen", body, outputs={"x": out}) == {"in": 3, "out": 2}
    assert calls == [1] and ws.complete("gen") and out.read_text() == "work"
    assert ws.manifest["stages"]["gen"]["seconds"] >= 0.3  # the time the attempt that did the work took
    assert not (tmp_path / "run" / ".scratch" / "gen").exists()
    leftover = tmp_path / "run" / ".scratch" / "gen"  # as if killed before that cleanup ...
    leftover.mkdir(parents=True)
    (leftover / "made_from.json").write_text(json.dumps({"recipe": ws.manifest["recipe"], "inputs": {}}))
    (leftover / "result.json").write_text(json.dumps({"counts": {}, "seconds": 9}))
    assert Workspace.open(recipe, redo="gen").stage("gen", body, outputs={"x": out}) == {"in": 3, "out": 2}
    assert calls == [1, 1]  # ... a --redo still runs it again


def test_a_stage_killed_between_renaming_its_outputs_finishes_them_unless_its_inputs_changed(
        tmp_path, toyworld_dir, tiny_student, monkeypatch):
    recipe, run, data = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run"))), tmp_path / "run", tmp_path / "in.txt"
    data.write_text("v1")
    calls = []

    def body(ctx):  # two outputs, like the prepare stage
        calls.append(data.read_text())
        for name in ("a", "b"):
            ctx.out[name].write_text(f"{name} from {data.read_text()}")
        return {"out": 2}

    def stage(ws):
        return ws.stage("two", body, outputs={"a": run / "a.txt", "b": run / "b.txt"}, inputs={"data": data})

    real_replace = os.replace

    def killed_after_renaming_a(src, dst):
        real_replace(src, dst)
        if Path(dst).name == "a.txt":
            raise Killed
    monkeypatch.setattr(os, "replace", killed_after_renaming_a)
    with pytest.raises(Killed):
        stage(Workspace.open(recipe))
    monkeypatch.setattr(os, "replace", real_replace)
    assert (run / "a.txt").exists() and not (run / "b.txt").exists()
    assert stage(Workspace.open(recipe)) == {"out": 2} and calls == ["v1"]  # b renamed, the work not redone
    assert [(run / f"{n}.txt").read_text() for n in "ab"] == ["a from v1", "b from v1"]

    def killed_before_renaming(src, dst):
        if Path(dst).name == "a.txt":
            raise Killed
        real_replace(src, dst)
    ws = Workspace.open(recipe, redo="two")
    monkeypatch.setattr(os, "replace", killed_before_renaming)
    with pytest.raises(Killed):  # the work is done (result.json written), its outputs not yet in place ...
        stage(ws)
    monkeypatch.setattr(os, "replace", real_replace)
    data.write_text("v2")  # ... and then the input changes: that finished work is not what the stage needs now
    assert stage(Workspace.open(recipe)) == {"out": 2} and calls == ["v1", "v1", "v2"]
    assert [(run / f"{n}.txt").read_text() for n in "ab"] == ["a from v2", "b from v2"]


def test_ctrl_c_in_a_stage_is_recorded_as_interrupted_not_failed_and_the_cli_says_a_rerun_continues(
        tmp_path, toyworld_dir, tiny_student, monkeypatch, capsys):
    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run")))

    def pressed_ctrl_c(ctx):
        raise KeyboardInterrupt

    with Workspace.open(recipe) as ws, pytest.raises(KeyboardInterrupt):
        ws.stage("iter_1/sft", pressed_ctrl_c, outputs={"x": tmp_path / "run" / "x.txt"})
    entry = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]["iter_1/sft"]
    assert entry["status"] == "interrupted" and "error" not in entry
    line = next(line for line in format_status(tmp_path / "run").splitlines() if line.startswith("iter_1/sft"))
    assert line.split()[1] == "interrupted" and line.endswith("interrupted; a rerun continues it")

    import openvlt.cli
    import openvlt.loop

    def run(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(openvlt.loop, "run", run)
    assert openvlt.cli.main(["run", str(tmp_path / "recipe.yaml")]) == 130
    assert "openvlt run: interrupted (the same command continues where it stopped)" in capsys.readouterr().err


def test_a_console_that_cannot_be_written_changes_no_exit_code(tmp_path, toyworld_dir, tiny_student):
    """`openvlt status DIR | head -1` exited 1 ("failed") with a Broken pipe error, and a progress bar
    writing to a log on a full disk (here /dev/full) failed the stage that drew it."""
    import subprocess
    import sys

    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run")))

    def interrupted(ctx):
        raise KeyboardInterrupt

    with Workspace.open(recipe) as ws, pytest.raises(KeyboardInterrupt):
        ws.stage("iter_1/sft", interrupted, outputs={"x": tmp_path / "run" / "x.txt"})
    command = [sys.executable, "-m", "openvlt.cli", "status", str(tmp_path / "run")]
    with open("/dev/full", "w") as full:
        reader = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=full)
        reader.stdout.close()  # the reader has gone before the status is written
        assert reader.wait(timeout=120) == 4  # "interrupted", as with a console
        assert subprocess.run(command, stdout=full, stderr=full, timeout=120).returncode == 4
        code = ("import sys, tqdm\nfrom openvlt.cli import main\nimport openvlt.cli as cli\n"
                "cli.COMMANDS['bars'] = ('', lambda argv: sum(1 for _ in tqdm.tqdm(range(3), mininterval=0)))\n"
                "sys.exit(main(['bars']))")
        assert subprocess.run([sys.executable, "-c", code], stdout=full, stderr=full, timeout=120).returncode == 3


def test_a_stage_that_fails_while_its_outputs_are_moved_into_place_is_recorded_as_failed(tmp_path, toyworld_dir, tiny_student,
                                                                                          monkeypatch):
    """A full disk (or quota) when the finished outputs are renamed into place is a failure `openvlt status`
    names, not "interrupted; a rerun continues it"; the rerun moves the finished outputs without running the stage."""
    import errno

    from openvlt import workspace

    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run")))
    runs = []

    def body(ctx):
        runs.append(1)
        ctx.out["x"].write_text("done")
        return {"in": 1}

    def full_disk(src, dst):
        raise OSError(errno.EDQUOT, f"{src} did not reach the disk: Disk quota exceeded")

    real = workspace.replace
    monkeypatch.setattr(workspace, "replace", full_disk)
    with Workspace.open(recipe) as ws, pytest.raises(OSError, match="Disk quota exceeded"):
        ws.stage("iter_1/sft", body, outputs={"x": tmp_path / "run" / "x.txt"})
    status = format_status(tmp_path / "run")
    assert "iter_1/sft" in status and "failed" in status and "Disk quota exceeded" in status
    monkeypatch.setattr(workspace, "replace", real)
    with Workspace.open(recipe) as ws:
        assert ws.stage("iter_1/sft", body, outputs={"x": tmp_path / "run" / "x.txt"}) == {"in": 1}
    assert runs == [1] and (tmp_path / "run" / "x.txt").read_text() == "done"


def test_a_stage_whose_failure_cannot_be_recorded_still_shows_its_own_error(tmp_path, toyworld_dir, tiny_student, monkeypatch):
    """On a full disk, recording "failed" in the manifest failed too, and its ENOSPC replaced the stage's
    own error; report.html and summary.json left half-written are removed at the next start."""
    import errno

    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run")))
    saves = []

    def full_disk(self):
        saves.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    def body(ctx):
        monkeypatch.setattr(Workspace, "_save", full_disk)  # from now on: the stage has started
        raise RuntimeError("writing the model to x failed: safetensors: No space left on device")

    with Workspace.open(recipe) as ws, pytest.raises(RuntimeError, match="writing the model to x failed"):
        ws.stage("iter_1/sft", body, outputs={"x": tmp_path / "run" / "x.txt"})
    assert saves == [1]
    monkeypatch.undo()
    stale = [tmp_path / "run" / ".report.html.tmp-99", tmp_path / "run" / ".summary.json.tmp-99"]
    for path in stale:
        path.write_text("half")
    with Workspace.open(recipe):
        assert not any(path.exists() for path in stale)


def test_a_complete_stage_whose_input_changed_is_not_silently_skipped(tmp_path, toyworld_dir, tiny_student, caplog):
    """A data file fixed in place after its stages completed: the rerun says which stage and how to redo it."""
    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run")))
    data = tmp_path / "problems.txt"
    data.write_text("v1")
    runs = []

    def stage(ws):
        def body(ctx):
            ctx.out["x"].write_text(data.read_text())
            runs.append(data.read_text())
            return {}
        ws.stage("iter_1/caption", body, outputs={"x": tmp_path / "run" / "x.txt"}, inputs={"problems": data})

    with Workspace.open(recipe) as ws:
        stage(ws)
    with Workspace.open(recipe) as ws:
        stage(ws)  # unchanged: skipped
    data.write_text("v2")
    with Workspace.open(recipe) as ws, pytest.raises(ValueError, match=r"iter_1/caption is complete, but its input problems "
                                                     r"\(.*problems.txt\) changed since it ran\. Rerun with --redo iter_1/caption"):
        stage(ws)
    assert "stopped before its next stage: iter_1/caption is complete, but its input problems" in format_status(tmp_path / "run")
    with Workspace.open(recipe, force=True) as ws:
        stage(ws)
    assert runs == ["v1"] and "--force: iter_1/caption is complete, but its input problems" in caplog.text
    with Workspace.open(recipe, redo="iter_1/caption") as ws:
        stage(ws)
    assert runs == ["v1", "v2"] and (tmp_path / "run" / "x.txt").read_text() == "v2"
    data.write_text("v3")  # edited again before the redo went through to the end: the same --redo runs it again
    with Workspace.open(recipe, redo="iter_1/caption") as ws:
        stage(ws)
    assert runs == ["v1", "v2", "v3"]


def test_a_weight_shard_over_64_mib_replaced_by_one_of_the_same_size_is_a_changed_input(tmp_path, toyworld_dir, tiny_student):
    """Downloading a newer revision of a model into the same folder keeps every shard's size: its content is
    sampled, not its size alone. A stage recorded when such files were compared by size still resumes (and is
    recorded sampled from then on), and so does an interrupted stage's saved work."""
    from openvlt.workspace import _keep_only_work_made_from, fingerprint

    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run")))
    model = tmp_path / "model"
    model.mkdir()
    shard = model / "model-00001-of-00001.safetensors"
    shard.write_bytes(os.urandom(65 * 2**20))
    (model / "config.json").write_text("{}")
    runs = []

    def stage(ws):
        ws.stage("iter_1/sft", lambda ctx: {"n": runs.append(1) or ctx.out["x"].write_text("trained") and 0},
                 outputs={"x": tmp_path / "run" / "x.txt"}, inputs={"model": model})

    with Workspace.open(recipe) as ws:
        stage(ws)
    manifest_path = tmp_path / "run" / "manifest.json"
    recorded = json.loads(manifest_path.read_text())
    shard.write_bytes(os.urandom(65 * 2**20))  # another revision: the same size
    with Workspace.open(recipe) as ws, pytest.raises(ValueError, match=r"iter_1/sft is complete, but its input model "
                                                     r"\(.*model\) changed since it ran\. Rerun with --redo iter_1/sft"):
        stage(ws)
    by_size = fingerprint(model, sampled=False)
    assert recorded["stages"]["iter_1/sft"]["inputs"]["model"]["hash"] not in (None, by_size)
    recorded["stages"]["iter_1/sft"]["inputs"]["model"]["hash"] = by_size  # as an openvlt before this one recorded it
    manifest_path.write_text(json.dumps(recorded))
    with Workspace.open(recipe) as ws:
        stage(ws)  # nothing to tell the content by: skipped, as before
    assert runs == [1]
    upgraded = json.loads(manifest_path.read_text())["stages"]["iter_1/sft"]["inputs"]["model"]["hash"]
    assert upgraded == fingerprint(model)  # ... and recorded as sampled from now on: the next same-size swap is seen
    shard.write_bytes(os.urandom(65 * 2**20))
    with Workspace.open(recipe) as ws, pytest.raises(ValueError, match=r"its input model \(.*model\) changed since it ran"):
        stage(ws)
    assert runs == [1]

    scratch = tmp_path / "scratch"  # an interrupted stage's saved work, stamped with a size-only hash
    scratch.mkdir()
    (scratch / "made_from.json").write_text(json.dumps({"recipe": "r1", "inputs": {"model": fingerprint(model, sampled=False)}}))
    (scratch / "chunk-00000.json").write_text("[]")
    asked = []
    _keep_only_work_made_from({"recipe": "r1", "inputs": {"model": fingerprint(model)}}, "iter_1/caption", scratch, [],
                              by_size=lambda name: asked.append(name) or fingerprint(model, sampled=False))
    assert (scratch / "chunk-00000.json").exists() and asked == ["model"]


def test_an_image_file_a_data_slice_names_is_an_input_too(tmp_path, toyworld_dir, tiny_student):
    """Data files often name their images instead of holding them. An image of the slice replaced in place
    changes what the completed stages read: the rerun says so (one outside the slice does not matter).
    Image hashes are cached by path, size and time, and a stage recorded before images were fingerprinted
    (its hash has no "+" part) still resumes."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    from openvlt.recipe import DataRef
    from openvlt.workspace import data_fingerprint

    from .test_records import png

    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run")))
    (tmp_path / "imgs").mkdir()
    for name in ("a", "b"):
        (tmp_path / "imgs" / f"{name}.png").write_bytes(png((1, 2, 3)))
    data = tmp_path / "data.parquet"
    pq.write_table(pa.table({"id": ["a", "n", "b"], "images": [["imgs/a.png"], ["imgs/never.png"], ["imgs/b.png"]],
                             "question": ["<image> how many?"] * 3, "answer": ["1"] * 3, "data_source": ["x"] * 3,
                             "reward": ["math"] * 3, "extra_info": ["{}"] * 3}), data)  # n: quarantined with skip_bad_rows
    runs = []

    def stage(ws):
        def body(ctx):
            ctx.out["x"].write_text("x")
            runs.append(1)
            return {}
        ws.stage("iter_1/caption", body, outputs={"x": tmp_path / "run" / "x.txt"}, inputs={"problems": DataRef(str(data), 0, 2)})

    with Workspace.open(recipe) as ws:
        stage(ws)
    hashes = tmp_path / "run" / ".image_hashes.json"
    cached = json.loads(hashes.read_text())
    assert list(cached) == [os.path.abspath(tmp_path / "imgs" / "a.png")]  # the slice's image only
    (tmp_path / "imgs" / "b.png").write_bytes(png((9, 9, 9)))  # outside the slice
    with Workspace.open(recipe) as ws:
        stage(ws)  # unchanged: skipped
    hashes.write_text(json.dumps({path: [*entry[:2], "0" * 16] for path, entry in cached.items()}))
    with Workspace.open(recipe) as ws, pytest.raises(ValueError, match="an image file it names"):
        stage(ws)  # the cache is what is compared (same size and time), not a re-read
    hashes.write_text(json.dumps(cached))
    (tmp_path / "imgs" / "a.png").write_bytes(png((9, 9, 9)))
    with Workspace.open(recipe) as ws, pytest.raises(ValueError, match=r"its input problems \(.*data.parquet: 1 image file it "
                                                     r"names changed, e.g. imgs/a.png\) changed since it ran\. Rerun with "
                                                     r"--redo iter_1/caption"):  # (not the one missing all along)
        stage(ws)
    (tmp_path / "imgs" / "a.png").unlink()  # a run directory copied without its images
    with Workspace.open(recipe) as ws, pytest.raises(ValueError, match=r"data.parquet: 1 image file it names went missing, "
                                                                       r"e.g. imgs/a.png\)"):
        stage(ws)
    (tmp_path / "imgs" / "a.png").write_bytes(png((9, 9, 9)))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    recorded = manifest["stages"]["iter_1/caption"]["inputs"]["problems"]
    assert recorded["rows"] == [0, 2] and recorded["hash"].split("+")[0] == data_fingerprint(data).split("+")[0]
    recorded["hash"] = recorded["hash"].split("+")[0]  # as a run started before images were fingerprinted recorded it
    del recorded["rows"]
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(manifest))
    with Workspace.open(recipe) as ws:
        stage(ws)  # the data file alone is compared: the same
    assert runs == [1]


def test_a_run_directory_moved_elsewhere_resumes_without_force(tmp_path, toyworld_dir, tiny_student):
    """Copied from the cluster to a laptop (or to another mount): paths inside it move with it."""
    import shutil

    path = write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "cluster" / "run"),
                 data={"sft": "{run_dir}/train.parquet", "rl": "DATA/train.parquet", "eval": {"held": "DATA/test.parquet"}})
    (tmp_path / "cluster" / "run").mkdir(parents=True)
    shutil.copy(toyworld_dir / "train.parquet", tmp_path / "cluster" / "run" / "train.parquet")
    with Workspace.open(load_recipe(path)) as ws:
        before = ws.work_digest
        ws.stage("gen", lambda ctx: {"bytes": ctx.out["x"].write_text("done")}, outputs={"x": ws.root / "x"})  # work to protect
    shutil.move(tmp_path / "cluster" / "run", tmp_path / "laptop")
    moved = load_recipe(path, [f"run_dir={tmp_path / 'laptop'}"])
    with Workspace.open(moved) as ws:  # no "refusing to resume with a changed recipe"
        assert ws.work_digest == before  # an interrupted stage's saved work is still its own
    frozen = (tmp_path / "laptop" / "recipe.yaml").read_text()
    assert str(tmp_path / "laptop" / "train.parquet") in frozen and "cluster" not in frozen
    with pytest.raises(RecipeError, match="sft.lr"):  # a real change is still refused
        Workspace.open(load_recipe(path, [f"run_dir={tmp_path / 'laptop'}", "sft.lr=0.5"]))


def test_saved_work_stamped_before_images_were_fingerprinted_is_still_reused(tmp_path):
    """An interrupted stage's chunks from before the upgrade: its data file's hash had no "+" part."""
    from openvlt.workspace import _keep_only_work_made_from

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "made_from.json").write_text(json.dumps({"recipe": "r1", "inputs": {"problems": "aaaa"}}))
    (scratch / "chunk-00000.json").write_text("[]")
    _keep_only_work_made_from({"recipe": "r1", "inputs": {"problems": "aaaa+bbbb"}}, "iter_1/caption", scratch, [])
    assert (scratch / "chunk-00000.json").exists()
    # an input recorded since (caption's model): nothing to compare for a program or hub model, a folder's content
    _keep_only_work_made_from({"recipe": "r1", "inputs": {"problems": "aaaa+bbbb", "model": None}}, "iter_1/caption", scratch, [])
    assert (scratch / "chunk-00000.json").exists()
    _keep_only_work_made_from({"recipe": "r1", "inputs": {"problems": "aaaa+bbbb", "model": "dddd"}}, "iter_1/caption", scratch, [])
    assert not (scratch / "chunk-00000.json").exists()
    (scratch / "made_from.json").write_text(json.dumps({"recipe": "r1", "inputs": {"problems": "aaaa"}}))
    (scratch / "chunk-00000.json").write_text("[]")
    _keep_only_work_made_from({"recipe": "r1", "inputs": {"problems": "cccc+bbbb"}}, "iter_1/caption", scratch, [])
    assert not (scratch / "chunk-00000.json").exists()  # the data file itself changed


def test_rl_data_work_stamped_before_the_stage_had_filters_is_still_reused(tmp_path):
    """Stamped with the whole recipe's work digest (no "choice"): with the same recipe, the same work."""
    from openvlt.workspace import _keep_only_work_made_from

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "made_from.json").write_text(json.dumps({"recipe": "whole", "inputs": {"problems": "aaaa"}}))
    (scratch / "chunk-00000.json").write_text("[]")
    _keep_only_work_made_from({"recipe": "less-filters", "choice": "whole", "inputs": {"problems": "aaaa"}},
                              "iter_1/rl_data", scratch, [])
    assert (scratch / "chunk-00000.json").exists()
    (scratch / "made_from.json").write_text(json.dumps({"recipe": "whole", "inputs": {"problems": "aaaa"}}))
    _keep_only_work_made_from({"recipe": "less-filters", "choice": "other", "inputs": {"problems": "aaaa"}},
                              "iter_1/rl_data", scratch, [])  # (made with other values of some key)
    assert not (scratch / "chunk-00000.json").exists()


def test_a_reward_plugin_read_from_another_folder_is_another_input(tmp_path, toyworld_dir, tiny_student):
    """A relative plugin path is read from the folder the command runs in: a resume from another folder
    with a file of the same name judges with other code, so the stages that judged are not silently kept.
    A run directory moved with the plugin inside it still resumes."""
    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run")))
    first, other = tmp_path / "a" / "mine.py", tmp_path / "c" / "mine.py"
    for folder, verdict in ((first, "1.0"), (other, "0.0")):
        folder.parent.mkdir()
        folder.write_text(f"def judge(response, ground_truth, *, extra_info):\n    return {verdict}\n")

    runs = []

    def stage(ws, plugin):
        ws.stage("iter_1/select", lambda ctx: {"bytes": ctx.out["x"].write_text(plugin.read_text()), "run": runs.append(1)},
                 outputs={"x": ws.root / "x"}, inputs={f"reward {plugin}": plugin})

    with Workspace.open(recipe) as ws:
        stage(ws, first)
    with Workspace.open(recipe) as ws:
        stage(ws, first)  # the same file: skipped
        copy = tmp_path / "d" / "mine.py"  # the same code elsewhere (the project copied): the same input
        copy.parent.mkdir()
        shutil.copy(first, copy)
        stage(ws, copy)
        ws.stage("iter_1/select", lambda ctx: runs.append(1), outputs={"x": ws.root / "x"},  # a file more, the recorded
                 inputs={f"reward {first}": first, f"reward {other}": other})  # one unchanged: found by a newer openvlt
        with pytest.raises(ValueError, match=rf"iter_1/select is complete, but its input reward \({first}; now {other}, other code: "
                                             r"the recipe or the data names another plugin, or a relative plugin path is "
                                             r"read from the folder the command runs in\) "
                                             r"changed since it ran\. Rerun with --redo iter_1/select"):
            stage(ws, other)
    assert (tmp_path / "run" / "x").read_text() == first.read_text() and len(runs) == 1

    inside = tmp_path / "run" / "mine.py"
    shutil.copy(first, inside)
    with Workspace.open(recipe, redo="iter_1/select") as ws:
        stage(ws, inside)
    shutil.move(tmp_path / "run", tmp_path / "moved")
    moved = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "moved")))
    with Workspace.open(moved) as ws:
        stage(ws, tmp_path / "moved" / "mine.py")  # the same plugin, moved with the run: skipped
    assert len(runs) == 2
    (tmp_path / "moved" / "mine.py").write_text(other.read_text())  # and still compared there
    with Workspace.open(moved) as ws, pytest.raises(ValueError, match=r"its input reward .*moved/mine.py changed since it ran"):
        stage(ws, tmp_path / "moved" / "mine.py")


def test_a_reward_plugin_edited_while_its_stage_runs_leaves_the_stage_to_run_again(tmp_path, toyworld_dir, tiny_student):
    """Reward workers load a plugin file again when it changes: a stage during which it was edited judged
    with both versions, so it fails and the same command runs it again on the new one."""
    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run")))
    plugin = tmp_path / "mine.py"
    plugin.write_text("# v1\n")
    runs = []

    def body(ctx):
        runs.append(plugin.read_text())
        if len(runs) == 1:
            plugin.write_text("# v2, a fix made while the stage ran\n")
        ctx.out["x"].write_text(runs[-1])
        return {}

    inputs = {f"reward {plugin}": plugin}
    with Workspace.open(recipe) as ws, pytest.raises(RuntimeError, match=rf"iter_1/select: its reward {plugin} changed "
                                                                          r"while the stage ran"):
        ws.stage("iter_1/select", body, outputs={"x": ws.root / "x"}, inputs=inputs)
    assert not (tmp_path / "run" / "x").exists()
    with Workspace.open(recipe) as ws:
        ws.stage("iter_1/select", body, outputs={"x": ws.root / "x"}, inputs=inputs)
    assert (tmp_path / "run" / "x").read_text() == "# v2, a fix made while the stage ran\n" and len(runs) == 2


def test_a_stage_never_replaces_a_folder_it_did_not_make(tmp_path, toyworld_dir, tiny_student):
    """A prepare block's `out` is the user's to name: an existing data folder, the run directory's parent or a
    folder holding another stage's output is refused before anything in it is removed; a folder the stage
    made itself is replaced on --redo, and so is one the run directory holds."""
    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "runs" / "run")))
    precious, sibling = tmp_path / "precious", tmp_path / "runs" / "other_run"
    for folder in (precious, sibling):
        folder.mkdir(parents=True)
        (folder / "notes.txt").write_text("keep me")

    def prepare(ws, out, key="prepare"):
        return ws.stage(key, lambda ctx: {"files": (ctx.out["toyworld"].mkdir(), (ctx.out["toyworld"] / "train.parquet").write_text("rows"))[0]},
                        outputs={"toyworld": out})

    with Workspace.open(recipe) as ws:
        with pytest.raises(ValueError, match=rf"prepare: its output 'toyworld', {precious}, exists and this run did not "
                                             r"make it; writing it would replace what it holds"):
            prepare(ws, precious)
        with pytest.raises(ValueError, match=r"holds the run directory .*runs/run, which writing it would replace"):
            prepare(ws, ws.root / "..")
        with pytest.raises(ValueError, match=r"holds the run directory"):
            prepare(ws, ws.root)
    assert (precious / "notes.txt").read_text() == "keep me" and (sibling / "notes.txt").read_text() == "keep me"
    assert (tmp_path / "runs" / "run" / "manifest.json").exists()
    scratch = tmp_path / "runs" / "run" / ".scratch" / "prepare"  # work an attempt finished with other values: no way past
    (scratch / "result.json").write_text('{"counts": {}, "seconds": 1}')
    (scratch / "made_from.json").write_text('{"recipe": "other values", "inputs": {}}')
    with Workspace.open(recipe) as ws, pytest.raises(ValueError, match=r"exists and this run did not make it"):
        prepare(ws, precious)
    assert (precious / "notes.txt").read_text() == "keep me"

    made = tmp_path / "data" / "toyworld"
    with Workspace.open(recipe) as ws:
        prepare(ws, made)
        ws.stage("iter_1/caption", lambda ctx: {"n": ctx.out["c"].write_text("captions")}, outputs={"c": ws.root / "iter_1" / "c.txt"})
        with pytest.raises(ValueError, match=r"holds .*iter_1/c.txt, another stage's output"):
            prepare(ws, ws.root / "iter_1", key="prepare_more")
    (made / "train.parquet").write_text("edited by hand")
    with Workspace.open(recipe, redo="prepare") as ws:
        prepare(ws, made)  # its own folder: made again
    assert (made / "train.parquet").read_text() == "rows"


def test_a_run_directory_that_lost_its_frozen_recipe_takes_no_other_recipe_over_its_completed_stages(
        tmp_path, toyworld_dir, tiny_student, caplog):
    """Without recipe.yaml there is no frozen recipe to compare with, but the manifest's digest still says
    whether the completed stages were made with this recipe's values."""
    path = write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run"))
    with Workspace.open(load_recipe(path)) as ws:
        ws.stage("iter_1/sft", lambda ctx: {"n": ctx.out["x"].write_text("model")}, outputs={"x": ws.root / "x"})
    (tmp_path / "run" / "recipe.yaml").unlink()
    with pytest.raises(RecipeError, match=r"recipe.yaml, the recipe this run was started with, is missing, and the manifest "
                                          r"says its completed stages were made with other values than this recipe's: restore it"):
        Workspace.open(load_recipe(path, ["sft.lr=0.5"]))
    assert not (tmp_path / "run" / "recipe.yaml").exists()
    with Workspace.open(load_recipe(path)):  # the same values: resumes, and freezes them again
        pass
    assert "lr: " in (tmp_path / "run" / "recipe.yaml").read_text()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())  # the digest of all values changes with
    manifest["recipe"] = "from an older openvlt"  # every key a new version adds; what the stages compute does not
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "run" / "recipe.yaml").unlink()
    with Workspace.open(load_recipe(path, ["reward.memory_mb=4096"])):  # (a memory knob: the same work)
        pass
    (tmp_path / "run" / "recipe.yaml").unlink()
    with Workspace.open(load_recipe(path, ["sft.lr=0.5"]), force=True):
        pass
    assert "--force: " in caplog.text and "0.5" in (tmp_path / "run" / "recipe.yaml").read_text()


def test_an_input_that_cannot_be_read_stops_the_run_and_status_says_why(tmp_path, toyworld_dir, tiny_student, monkeypatch):
    """An unreadable model file (permissions) left status at "not finished: the same command continues
    it", though the same command failed again until the file was fixed."""
    from openvlt import workspace

    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run")))
    model = tmp_path / "model.safetensors"
    model.write_text("weights")

    def body(ctx):
        ctx.out["x"].write_text("done")
        return {}

    with Workspace.open(recipe) as ws:
        ws.stage("iter_1/sft", body, outputs={"x": tmp_path / "run" / "x.txt"}, inputs={"model": model})

    def unreadable(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(workspace, "fingerprint", unreadable)
    for key in ("iter_1/sft", "iter_1/grpo"):  # complete (its inputs compared), or about to run
        with Workspace.open(recipe) as ws, pytest.raises(PermissionError):
            ws.stage(key, body, outputs={"x": tmp_path / "run" / f"{key[-3:]}.txt"}, inputs={"model": model})
        status = format_status(tmp_path / "run")
        assert f"stopped before its next stage: reading an input: [Errno 13] Permission denied: '{model}'" in status
        assert "the same command continues" not in status


@pytest.mark.parametrize("text", ["", "{not json", "[]", "{}", '{"stages": null}', '{"stages": {"prepare": 3}}'])
def test_a_damaged_manifest_is_named_by_status_and_run_without_a_traceback(tmp_path, toyworld_dir, tiny_student, text):
    from ..conftest import OPENVLT

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text(text)
    (run_dir / "x.parquet").write_text("a stage's output")
    status = subprocess.run([OPENVLT, "status", str(run_dir)], capture_output=True, text=True, timeout=120)
    assert status.returncode == 1 and "Traceback" not in status.stderr
    assert f"{run_dir / 'manifest.json'} is not a run manifest (" in status.stderr
    with pytest.raises(ValueError, match=r"manifest.json is not a run manifest \(.*\): restore it, or start a new run directory"):
        Workspace.open(load_recipe(write(tmp_path, toyworld_dir, tiny_student, run_dir=str(run_dir))))
    assert (run_dir / "manifest.json").read_text() == text and (run_dir / "x.parquet").read_text() == "a stage's output"
