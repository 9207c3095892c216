"""The run directory: frozen recipe, manifest, and the rule that makes every run resumable.

    runs/<name>/recipe.yaml     the resolved recipe, frozen at the first start
    runs/<name>/manifest.json   stage -> status, attempts, inputs, outputs (+ hashes), counts, timings

A stage writes its outputs under temporary names (`.<name>.partial`) and into a scratch folder,
then renames them into place; the manifest, written atomically, is updated last (a stage whose work
finished but whose manifest entry did not is recorded, not run again). So after a kill -9 anywhere,
re-running the same command skips every complete stage, and an interrupted stage starts again from
whatever it left in its partial outputs and scratch folder (generation stages keep finished chunks,
training stages keep checkpoints), as long as that work was made from the same recipe and the same
inputs (else it is discarded, never mixed with new work). A completed stage's outputs are never
rewritten, unless the user asks for it: `openvlt run RECIPE --redo STAGE` marks STAGE (or every
stage a pattern such as `*/evaluate` matches) and every stage made from its outputs as "redo"; each is
run again and its outputs replaced only when its new run completes.
"""
from __future__ import annotations

import datetime as dt
import difflib
import fcntl
import fnmatch
import glob
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from openvlt.faults import crashpoint
from openvlt.files import atomic_write, replace, temporary_path
from openvlt.recipe import DataRef, Recipe, RecipeError, changes_since, dump_recipe, data_name, is_shard_set, pattern_matches, rebase_paths

log = logging.getLogger(__name__)

_HASH_LIMIT = 64 * 2**20  # files larger than this are fingerprinted by size and spread blocks, not whole
_SAMPLED_BLOCKS, _BLOCK = 17, 2**20  # 17 MiB read of a weight shard: another model's shard of the same size differs there


class RunDirectoryBusy(OSError):
    """Another live process is running in this run directory."""


@dataclass
class StageContext:
    """What a stage's body gets: where to write its outputs, and a folder for its own restartable work."""

    out: dict[str, Path]  # partial output paths, renamed to the final ones when the stage returns
    scratch: Path         # a folder kept across restarts of this stage, deleted once it completes


class Workspace:
    def __init__(self, root: Path):
        self.root = root
        self.manifest_path = root / "manifest.json"
        self.work_digest: str | None = None  # set by `open`: what the stages compute (Recipe.work_digest)
        self.recipe: Recipe | None = None  # set by `open`
        self.locked = False  # set by `open`, which holds the run directory's lock until `close`
        self.force = False  # set by `open`: keep complete stages whose inputs changed (with a warning)
        self.manifest: dict[str, Any] = read_manifest(self.manifest_path) if self.manifest_path.exists() else {"stages": {}}
        self.image_hashes_path = root / ".image_hashes.json"  # `data_fingerprint`'s cache: path -> [size, mtime, hash]
        try:
            self.image_hashes: dict[str, list] = json.loads(self.image_hashes_path.read_text())
        except (OSError, ValueError):  # none yet, or unreadable: only a cache
            self.image_hashes = {}
        if not isinstance(self.image_hashes, dict):
            self.image_hashes = {}
        self.image_hashes_at_open = dict(self.image_hashes)  # what the run had read: names the images that changed

    @classmethod
    def open(cls, recipe: Recipe, force: bool = False, redo: str | Sequence[str] | None = None) -> "Workspace":
        """Create the run directory, or reopen it for a resume (refusing a changed recipe unless forced);
        `redo` names a stage (or a pattern of stages, or several) to run again, with every stage made from
        their outputs."""
        root = Path(recipe.run_dir)
        root.mkdir(parents=True, exist_ok=True)
        _lock(root)
        try:
            return cls._open(root, recipe, force, redo)
        except BaseException:
            _unlock(root)
            raise

    @classmethod
    def _open(cls, root: Path, recipe: Recipe, force: bool, redo: str | Sequence[str] | None) -> "Workspace":
        _remove_stale_temporaries(root, ["manifest.json", "recipe.yaml", ".image_hashes.json", "summary.json", "report.html"])
        ws = cls(root)
        frozen = root / "recipe.yaml"
        try:
            old = (yaml.safe_load(frozen.read_text(encoding="utf-8")) or {}) if frozen.exists() else None
            if old is not None and not isinstance(old, dict):
                raise yaml.YAMLError(f"a {type(old).__name__}, not a mapping of keys")
        except yaml.YAMLError as exc:
            raise RecipeError(f"{frozen}, the recipe this run was started with, is not a recipe ({exc}): restore it "
                              "(a recipe.*.yaml beside it is an earlier one), or start a new run directory") from None
        if old is not None and isinstance(old.get("run_dir"), str) and old["run_dir"] != recipe.run_dir:
            ws._move_recorded_paths(old["run_dir"], recipe.run_dir)  # (saved with the rest below)
        requests = [redo] if isinstance(redo, str) else list(redo or [])
        marked = ws._stages_from(requests) if requests else []  # a wrong stage name fails before anything is written
        changes = changes_since(_moved(old, recipe.run_dir), recipe) if old is not None else []
        completed = any(stage.get("status") == "complete" for stage in ws.manifest["stages"].values())
        work = recipe.work_digest()
        made_with = ws.manifest.get("work", ws.manifest.get("recipe"))  # (runs before "work" was recorded: the digest)
        if old is None and completed and made_with not in (work, recipe.digest()):  # nothing else to compare
            lost = (f"{frozen}, the recipe this run was started with, is missing, and the manifest says its completed "
                    "stages were made with other values than this recipe's")
            if not force:
                raise RecipeError(f"{lost}: restore it (a recipe.*.yaml beside it is an earlier one), use the original "
                                  "recipe, a new run directory, or --force to continue with these values (completed "
                                  "stages are kept as they are)")
            log.warning("--force: %s; keeping them", lost)
        if changes:
            if not force and completed:
                raise RecipeError(
                    f"{frozen} was frozen with different values; refusing to resume with a changed recipe:\n  "
                    + "\n  ".join(changes[:20])
                    + "\nUse the original recipe, a new run directory, or --force to continue with the new values "
                    "(completed stages are kept as they are; --redo STAGE runs one again, with the stages made from it)."
                )
            stamp = second = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            n = 1
            while (root / f"recipe.{stamp}.yaml").exists():  # changed twice within a second: keep both
                stamp, n = f"{second}.{n}", n + 1
            shutil.copy2(frozen, root / f"recipe.{stamp}.yaml")
            log.warning("%s: recipe changed (%s); the old one is kept as recipe.%s.yaml",
                        "--force" if completed else "no stage had completed", "; ".join(changes[:5]), stamp)
        if old is None or changes or old.get("run_dir") != recipe.run_dir:  # new, forced, or moved (it names where it is)
            atomic_write(frozen, dump_recipe(recipe))
        ws.manifest.setdefault("run", recipe.name)
        for stage in ws.manifest["stages"].values():  # left "running" by a killed process: this one holds the lock now,
            if stage.get("status") == "running":      # and runs it again only after the data check (status: not "running now")
                stage["status"] = "interrupted"
        ws.manifest.pop("finished", None)  # until this run goes through to the end again
        ws.manifest.pop("stopped", None)  # the last start's data check: made again
        ws.manifest["recipe"], ws.manifest["work"] = recipe.digest(), work
        ws.work_digest, ws.recipe, ws.locked, ws.force = work, recipe, True, force
        if marked:
            ws._mark_for_redo(" ".join(requests), marked)
        ws._save()
        return ws

    def _stages_from(self, patterns: Sequence[str]) -> list[str]:
        """The stages `patterns` name (stages, or shell patterns such as `*/evaluate`) and every stage made
        from their outputs, directly or not, in the order they first ran. Dependence is read from what the
        manifest records: a stage depends on one whose output it took as an input (a file, or one inside
        an output folder). Re-evaluating, or adding a held-out set, trains nothing again."""
        keys = list(self.manifest["stages"])
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(k, pattern) for k in keys):
                close = difflib.get_close_matches(pattern, keys, n=1, cutoff=0.5)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(f"--redo {pattern!r}: {self.manifest_path} has no such stage; {hint}"
                                 f"stages: {', '.join(keys) or 'none has run yet'}")
        named = [k for k in keys if any(fnmatch.fnmatchcase(k, pattern) for pattern in patterns)]
        stages, marked = self.manifest["stages"], set(named)
        made = [Path(o["path"]).resolve() for k in named for o in stages[k].get("outputs", {}).values()]
        grew = True
        while grew:  # until no stage is added (a stage listed before the one it reads: a prepare block added later)
            grew = False
            for k in keys:
                if k not in marked and any(_inside(i["path"], made) for i in stages[k].get("inputs", {}).values()):
                    marked.add(k)
                    made += [Path(o["path"]).resolve() for o in stages[k].get("outputs", {}).values()]
                    grew = True
        return [k for k in keys if k in marked]

    def _move_recorded_paths(self, old: str, new: str) -> None:
        """The run directory was copied or moved (or first named by a relative path): the paths the
        manifest recorded inside it follow it, as the frozen recipe's do, so that stages recorded before
        and after the move still name each other's outputs (--redo) and a stage's inputs are found."""
        for stage in self.manifest["stages"].values():
            for entry in (*stage.get("inputs", {}).values(), *stage.get("outputs", {}).values()):
                entry["path"] = rebase_paths(entry["path"], old, new)
            if "inputs" in stage:  # and a name that holds its file ("reward {run_dir}/p.py")
                stage["inputs"] = {_moved_name(name, old, new): entry for name, entry in stage["inputs"].items()}

    def _mark_for_redo(self, request: str, keys: list[str]) -> None:
        """Mark `keys` (what --redo `request` names) to be run again. The same --redo repeated after a crash (same request, same recipe)
        continues the unfinished redo, however far it got, instead of starting it over; with other
        values, or once the run has finished (`finish`), it is a new redo."""
        stages, last = self.manifest["stages"], self.manifest.get("redo", {})
        if (last.get("stage") == request and last.get("recipe") == self.work_digest and "finished" not in last
                and not any(stages[k].get("status") == "complete" and self._changed_inputs(k) for k in keys)):
            log.info("--redo %s: continuing the unfinished redo", request)
            return
        for k in keys:  # saved work of an interrupted or just-finished attempt is not reused by a redo
            shutil.rmtree(self._scratch(k), ignore_errors=True)
            stages[k]["status"] = "redo"
        self.manifest["redo"] = {"stage": request, "recipe": self.work_digest, "stages": keys, "requested": _now()}
        log.info("--redo %s: %s will run again: %s", request, _plural(len(keys), "stage"), ", ".join(keys))

    def finish(self) -> None:
        """Record that the run went through to the end (`openvlt status` says so); a --redo given from
        now on is a new one."""
        self.manifest["finished"] = _now()
        if "redo" in self.manifest:
            self.manifest["redo"].setdefault("finished", self.manifest["finished"])
        self._save()

    def close(self) -> None:
        """Let other processes use the run directory (a process that dies lets go of it too)."""
        if self.locked:
            self.locked = False
            _unlock(self.root)

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def record_stop(self, why: str) -> None:
        """A run stopped between stages (its data checked when it started): `openvlt status` says why."""
        self.manifest["stopped"] = why[:2000]
        self._save()

    def complete(self, key: str) -> bool:
        return self.manifest["stages"].get(key, {}).get("status") == "complete"

    def counts(self, key: str) -> dict[str, Any]:
        return self.manifest["stages"].get(key, {}).get("counts", {})

    def stage(
        self,
        key: str,
        fn: Callable[[StageContext], dict[str, Any]],
        outputs: dict[str, str | Path],
        inputs: dict[str, str | Path | DataRef] | None = None,
        choice_keys: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Run `fn` as stage `key` unless it is complete; return its counts. `inputs` are files or folders,
        or slices of data files (whose hash covers the image files the slice names). `choice_keys`: recipe keys
        that only choose among what the stage's saved work holds (rl_data's band among its samples): an
        interrupted attempt's work is kept when only they changed (--force), not sampled again."""
        finals = {name: Path(p) for name, p in outputs.items()}
        if self.complete(key):
            self._check_inputs_unchanged(key, inputs or {})
            log.info("%s: complete, skipped", key)
            shutil.rmtree(self._scratch(key), ignore_errors=True)  # left by a kill just after the stage completed
            return self.counts(key)
        entry = self.manifest["stages"].setdefault(key, {})
        entry.update(status="running", attempts=entry.get("attempts", 0) + 1, started=_now(),
                     inputs={n: self._input_entry(value) for n, value in (inputs or {}).items()})
        entry.pop("seconds", None)  # an earlier attempt's; this one's is recorded when it ends, if it ends
        self._save()
        crashpoint(f"before:{key}")
        scratch, started = self._scratch(key), time.time()
        try:  # what goes wrong from here on (the stage, a full disk when its outputs are moved) is recorded for `openvlt status`
            counts, started = self._run_in_place(key, fn, entry, scratch, finals, started, choice_keys)
        except BaseException as exc:  # the rerun runs the stage again
            entry.update(seconds=round(time.time() - started, 2))
            if isinstance(exc, KeyboardInterrupt):  # Ctrl-C: nothing wrong with the stage
                entry.update(status="interrupted")
            else:
                entry.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
            try:
                self._save()
            except OSError as unsaved:  # a full disk: the stage's own error is the one to see
                log.error("%s: could not record in manifest.json that it %s (%s)", key, entry["status"], unsaved)
            raise
        crashpoint(f"after:{key}")
        seconds = time.time() - started
        entry.pop("error", None)
        entry.update(status="complete", finished=_now(), seconds=round(seconds, 2), counts=counts,
                     outputs={n: {"path": str(p), "hash": fingerprint(p)} for n, p in finals.items()})
        self._save()
        shutil.rmtree(scratch, ignore_errors=True)
        log.info("%s: %s (%.1f s)", key, _summary(counts), seconds)
        return counts

    def _check_outputs_replaceable(self, key: str, finals: dict[str, Path]) -> None:
        """A stage replaces its outputs whole. Those the run names itself lie in the run directory, but a
        prepare block's `out` is the user's: a folder there that this stage did not make (a data set, the
        run directory's parent) is refused before anything is removed."""
        if (self._scratch(key) / "result.json").exists():  # this work, finished by an attempt that was moving it in place
            return
        root, recorded = self.root.resolve(), self.manifest["stages"].get(key, {}).get("outputs", {})
        others = [Path(o["path"]).resolve() for k, stage in self.manifest["stages"].items() if k != key
                  for o in stage.get("outputs", {}).values()]
        for name, final in finals.items():
            where = final.resolve()
            if root.is_relative_to(where):
                raise ValueError(f"{key}: its output {name!r}, {final}, holds the run directory {root}, which writing "
                                 "it would replace: name a folder inside the run directory or beside it")
            inside = [o for o in others if o.is_relative_to(where)]
            if inside:
                raise ValueError(f"{key}: its output {name!r}, {final}, holds {inside[0]}, another stage's output, "
                                 "which writing it would replace: name another folder")
            made_here = recorded.get(name, {}).get("path") == str(final)
            if final.exists() and not made_here and not where.is_relative_to(root):
                raise ValueError(f"{key}: its output {name!r}, {final}, exists and this run did not make it; writing it "
                                 "would replace what it holds: name a folder that does not exist yet (or remove this "
                                 "one; to use what it holds, drop its prepare block and name the files it holds)")

    def _run_in_place(self, key: str, fn: Callable[[StageContext], dict[str, Any]], entry: dict[str, Any], scratch: Path,
                      finals: dict[str, Path], started: float, choice_keys: Sequence[str] = ()) -> tuple[dict[str, Any], float]:
        """Run `fn` on partial outputs (or take what an interrupted attempt finished) and move them into
        place; return its counts and when it started."""
        partial = {n: p.with_name(f".{p.name}.partial") for n, p in finals.items()}
        for final, p in zip(finals.values(), partial.values()):  # half-written files of a killed attempt
            _remove_stale_temporaries(final.parent, [final.name, p.name])
        made_from = {"recipe": self.work_digest, "inputs": {n: i["hash"] for n, i in entry["inputs"].items()}}
        if choice_keys and self.recipe is not None:  # the work is what the recipe less its choice keys makes; the choice
            made_from |= {"recipe": self.recipe.work_digest(choice_keys), "choice": self.work_digest}  # made from it, the whole
        _keep_only_work_made_from(made_from, key, scratch, list(partial.values()),
                                  by_size=lambda n: _by_size(Path(entry["inputs"][n]["path"]), entry["inputs"][n]["hash"]))
        self._check_outputs_replaceable(key, finals)  # (after: saved work made otherwise is gone, and no reason to skip it)
        for p in partial.values():
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.is_dir():  # a kept partial folder (a model, a data set): what a kill left half-written inside it
                for stale in p.rglob(temporary_path(Path("*"), "*").name):
                    _remove(stale)
        result = scratch / "result.json"  # written once fn has finished: a kill after it never runs fn again
        if result.exists():
            done = json.loads(result.read_text())
            counts, started = done["counts"], started - done["seconds"]  # report the time that attempt took
            log.info("%s: finished by the interrupted attempt; recording its outputs", key)
        else:
            counts = fn(StageContext(partial, scratch)) or {}
            _check_file_sets_kept(key, entry["inputs"])
            missing = [name for name, p in partial.items() if not p.exists()]
            if missing:
                raise RuntimeError(f"stage {key} did not write its output {missing[0]!r}")
            atomic_write(result, json.dumps({"counts": counts, "seconds": time.time() - started}))
        for name, final in finals.items():
            if partial[name].exists():  # else the interrupted attempt had renamed it already
                _remove(final)  # the previous run's output (--redo)
                replace(partial[name], final)
            elif not final.exists():
                raise RuntimeError(f"stage {key}: output {name!r} is missing; remove {scratch} and rerun")
        return counts, started

    def _check_inputs_unchanged(self, key: str, inputs: dict[str, str | Path | DataRef]) -> None:
        """A complete stage whose input files changed since it ran (a data file fixed in place, a model
        folder replaced) is not silently skipped: its outputs were made from the old content."""
        changed = self._changed_inputs(key, inputs)
        if not changed:
            return
        what = f"{key} is complete, but its input {', '.join(changed)} changed since it ran"
        if not self.force:
            redo = self._stages_to_redo(key)
            others = [k for k in redo if k != key]
            why = (f"{what}" + (f"; so did an input of {', '.join(others)}" if others else "") + ". Rerun with "
                   + " ".join(f"--redo {k}" for k in redo) + f" to run {'them' if others else 'it'} (and the stages made "
                   f"from {'them' if others else 'it'}) on the new content, or --force to keep the completed work as it is")
            self.record_stop(why)  # `openvlt status` says why the run stopped, not "the same command continues it"
            raise ValueError(why)
        log.warning("--force: %s; keeping its outputs", what)

    def _stages_to_redo(self, key: str) -> list[str]:
        """`key` and the other complete stages whose inputs changed (a reward plugin fixed in place is an
        input of every stage that judged with it), less those a --redo of one before them reruns anyway:
        one command then runs everything the change touched."""
        chosen, covered = [], set()
        for k, stage in self.manifest["stages"].items():
            if k not in covered and (k == key or stage.get("status") == "complete" and self._changed_inputs(k)):
                chosen.append(k)
                covered.update(self._stages_from([k]))
        return chosen

    def _changed_inputs(self, key: str, inputs: dict[str, str | Path | DataRef] | None = None) -> list[str]:
        """`key`'s inputs (as given, else as recorded) whose content differs from what it ran on
        (files over 64 MiB are compared by size and spread blocks: see `fingerprint`).

        Two kinds of older records are read as they were meant: a data slice hashed before its images
        were (the file alone), and a large file recorded by its size alone, whose sampled hash is
        recorded from now on, so that a later same-size swap is seen (the first one cannot be)."""
        recorded = self.manifest["stages"].get(key, {}).get("inputs", {})
        given = inputs if inputs is not None else {name: _recorded_input(entry) for name, entry in recorded.items()}
        changed, sampled_now = [], False
        for name, value in given.items():
            if name not in recorded:
                continue
            old = recorded[name]["hash"]
            now = self._input_entry(value, images="+" in (old or ""))["hash"]
            path = value.path if isinstance(value, DataRef) else value
            if _same_content(old, now):
                continue
            if _same_content(old, _by_size(Path(path), now)):
                recorded[name]["hash"] = sampled_now = now
                continue
            if isinstance(value, DataRef) and old and now and old.split("+")[0] == now.split("+")[0]:
                changed.append(f"{name} ({path}: {self._changed_images(value)})")
            else:
                changed.append(name if str(path) in name else f"{name} ({path})")  # ("reward /x/p.py" names its file)
        if inputs is not None:
            changed += _changed_file_sets(recorded, given)
        if sampled_now:
            self._save()
        return changed

    def _changed_images(self, ref: DataRef) -> str:
        """Which of the image files `ref` names changed since this run last read them (their hash differs
        from the one the cache held when the run directory was opened), or went missing; an image that was
        never readable (a row quarantined all along) is not one of them."""
        changed, missing = [], []
        for image, file in _named_images(ref):
            seen = self.image_hashes_at_open.get(os.path.abspath(file))
            if seen is None:
                continue
            if not file.is_file():
                missing.append(image)
            elif (self.image_hashes.get(os.path.abspath(file)) or seen)[2] != seen[2]:  # (touched alone: not changed)
                changed.append(image)
        parts = ([f"{_plural(len(changed), 'image file')} it names changed, e.g. {changed[0]}"] if changed else []) + (
            [f"{_plural(len(missing), 'image file')} it names went missing, e.g. {missing[0]}"] if missing else [])
        return "; ".join(parts) or "an image file it names changed"

    def _input_entry(self, value: str | Path | DataRef, images: bool = True) -> dict[str, Any]:
        """What the manifest records of an input: its path and hash (a data slice: its rows too). An input
        that cannot be read (permissions) stops the run: `openvlt status` says so, not "the same command
        continues it", which would fail the same way."""
        try:
            return self._read_input_entry(value, images)
        except OSError as exc:
            try:
                self.record_stop(f"reading an input: {exc}")
            except OSError as unsaved:  # (a full disk): the read error is the one to see
                log.error("could not record in manifest.json why the run stopped (%s)", unsaved)
            raise

    def _read_input_entry(self, value: str | Path | DataRef, images: bool) -> dict[str, Any]:
        if not isinstance(value, DataRef):
            return {"path": str(value), "hash": fingerprint(Path(value))}
        before = dict(self.image_hashes)
        digest = data_fingerprint(Path(value.path), value.start, value.stop, self.image_hashes if images else None)
        if self.image_hashes != before:
            atomic_write(self.image_hashes_path, json.dumps(self.image_hashes))
        return {"path": value.path, "rows": [value.start, value.stop], "hash": digest}

    def _scratch(self, key: str) -> Path:
        return self.root / ".scratch" / key.replace("/", "__")

    def _save(self) -> None:
        atomic_write(self.manifest_path, json.dumps(self.manifest, indent=2) + "\n")


def _keep_only_work_made_from(made_from: dict[str, Any], key: str, scratch: Path, partials: list[Path],
                              by_size: Callable[[str], str | None] = lambda name: None) -> None:
    """An interrupted attempt's saved work (chunks, checkpoints, partial outputs) is reused only when it
    was made from the same recipe and inputs: after `--force` with new values, or a `--redo` that
    changed this stage's inputs, the stage starts over instead of mixing old rows into new ones."""
    stamp = scratch / "made_from.json"
    saved = json.loads(stamp.read_text()) if stamp.exists() else {}
    if "choice" in made_from and "choice" not in saved and saved.get("recipe") == made_from["choice"]:
        saved |= {"recipe": made_from["recipe"], "choice": made_from["choice"]}  # stamped before the stage had choice keys
    differences = _work_differences(saved, made_from, by_size) if stamp.exists() else []
    if stamp.exists() and not differences:
        if saved.get("choice") != made_from.get("choice"):  # the same work, chosen among otherwise: what the choice made goes
            log.info("%s: keeping the interrupted attempt's saved work (only keys that choose among it changed)", key)
            for p in (scratch / "result.json", *partials):
                _remove(p)
            atomic_write(stamp, json.dumps(made_from))
        return
    left = [p for p in (scratch, *partials) if p.exists() and (p != scratch or any(scratch.iterdir()))]
    if left:
        why = f"was made from {' and '.join(differences)}" if stamp.exists() else "does not record what it was made from"
        log.warning("%s: the interrupted attempt's saved work (%s) %s; starting the stage over",
                    key, ", ".join(str(p) for p in left), why)
    for p in (scratch, *partials):
        _remove(p)
    scratch.mkdir(parents=True)
    atomic_write(stamp, json.dumps(made_from))


def _moved(frozen: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """The frozen recipe as if it had been written in `run_dir`: a run directory copied or moved
    (from a cluster to a laptop) resumes; its recipe's paths inside the directory move with it."""
    old = frozen.get("run_dir")
    if not isinstance(old, str) or old == run_dir:
        return frozen
    log.info("the run directory was %s when it started; paths inside it now start with %s", old, run_dir)
    return rebase_paths(frozen, old, run_dir)


def format_seconds(seconds: float | None) -> str:
    """A stage's time as the status table and the report show it; "-" where none was recorded (an attempt
    killed with -9 leaves no end time)."""
    return "-" if seconds is None else f"{seconds:.1f}"


STATUS_EXIT_CODES = {"finished": 0, "failed": 1, "running": 3, "unfinished": 4, "no run": 5}  # `openvlt status`'s
# (2 is a usage error, as argparse exits)


def run_state(run_dir: Path) -> str:
    """Where a run stands, in one word, for scripts: "finished"; "running" (a process holds it);
    "failed" (a stage failed, or the run stopped before its next stage: a fix is needed before the same
    command gets further); "unfinished" (interrupted, or stages not started: the same command continues);
    "no run" (no manifest: not a run directory, or a run still checking its recipe before it writes one)."""
    if not (run_dir / "manifest.json").exists():
        return "no run"
    return _state(read_manifest(run_dir / "manifest.json"), _holder(run_dir))


def read_manifest(path: Path) -> dict[str, Any]:
    """A run's manifest.json, or a ValueError naming the file when it is none (cut short, edited by hand)."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        why = None if isinstance(manifest, dict) and isinstance(manifest.get("stages"), dict) else "no 'stages' mapping"
        if why is None and not all(isinstance(stage, dict) for stage in manifest["stages"].values()):
            why = "a stage that is not a mapping"
    except (ValueError, UnicodeDecodeError) as exc:
        why = f"not JSON: {exc}"
    if why is not None:
        raise ValueError(f"{path} is not a run manifest ({why}): restore it, or start a new run directory (the outputs "
                         "in this one are as they were, but which stages completed cannot be told without it)")
    return manifest


def _state(manifest: dict[str, Any], holder: str | None) -> str:
    if holder:
        return "running"
    if "finished" in manifest:
        return "finished"
    failed = any(s.get("status") == "failed" for s in manifest["stages"].values())
    return "failed" if failed or "stopped" in manifest else "unfinished"


def format_status(run_dir: Path) -> str:
    """The manifest as a table: what is done, what failed (and why), what a rerun will do."""
    manifest = read_manifest(run_dir / "manifest.json")
    holder = _holder(run_dir)
    lines = [f"run {manifest.get('run')} in {run_dir} (recipe {manifest.get('recipe')})"]
    if holder:
        lines.append(f"in progress: {holder}")
    lines.append(f"{'stage':<24}{'status':<12}{'tries':>6}{'seconds':>9}  counts")
    for key, s in manifest["stages"].items():
        status, seconds = s.get("status", ""), s.get("seconds")
        if status == "running" and not holder:  # its process is gone (killed): when, nobody recorded
            status = "interrupted"
        elif status == "running" and "started" in s:  # the time so far
            seconds = (dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(s["started"])).total_seconds()
        detail = {"running": "running now", "interrupted": "interrupted; a rerun continues it",
                  "redo": "marked by --redo; a rerun runs it again"}.get(status, s.get("error") or _summary(s.get("counts", {})))
        lines.append(f"{key:<24}{status:<12}{s.get('attempts', 0):>6}{format_seconds(seconds):>9}  {detail}")
    if "stopped" in manifest and not holder:
        lines.append(f"stopped before its next stage: {manifest['stopped']}")
    state = _state(manifest, holder)
    if state == "finished":
        lines.append(f"finished {manifest['finished']}: summary.json and report.html are up to date")
    elif state == "failed":
        lines.append("not finished: fix what stopped it (above), then run the same command again")
    elif state == "unfinished":
        lines.append("not finished: the same command continues it (stages not listed have not started)")
    return "\n".join(lines)


def fingerprint(path: Path, *, sampled: bool = True) -> str | None:
    """Content hash of a file or folder, or of the files a data path's name pattern matches
    (`data/train-*.parquet`); None if there is none. A file over 64 MiB (a weight shard) is hashed by its size
    and 17 blocks spread over it, not read whole at every check: a model downloaded again into the same folder,
    whose shards have the same sizes, differs there. `sampled=False`: by size alone, as openvlt recorded such
    files before it sampled them (`_by_size`)."""
    base, files = _files_of(path)
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(base) if f != base else f.name).encode())
        _add_content(digest, f, sampled)
    return digest.hexdigest()[:16]


def _files_of(path: Path) -> tuple[Path, list[Path]]:
    """The files a fingerprint reads, and the folder their names are given relative to."""
    if path.exists():
        return path, [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return path.parent, pattern_matches(path) if is_shard_set(path) else []


def _by_size(path: Path, now: str | None) -> str | None:
    """`now`, an input's fingerprint, as openvlt recorded it before it sampled files over 64 MiB (by their size
    alone), so runs recorded then resume; None for an input holding no such file (the two are the same)."""
    try:
        large = now is not None and any(f.stat().st_size > _HASH_LIMIT for f in _files_of(path)[1])
    except OSError:
        return None
    if not large:
        return None
    _, plus, images = now.partition("+")  # type: ignore[union-attr]
    return f"{fingerprint(path, sampled=False)}{plus}{images}"


def data_fingerprint(path: Path, start: int = 0, stop: int | None = None, known: dict[str, list] | None = None) -> str | None:
    """The fingerprint of a data file, and, when rows [start, stop) name image files instead of holding
    their bytes, "+<their hash>": the images are what the stages read, so replacing one changes the data
    as far as a run is concerned. `known` caches image hashes by path, size and modification time (a resume
    does not read a whole image set again; a copied one is read once more); None: the file alone."""
    head = fingerprint(path)
    images = _named_images(DataRef(str(path), start, stop)) if known is not None and head is not None else []
    if not images:
        return head
    cached = [(name, file, _cached(file, known)) for name, file in images]
    misses = sum(digest is None for _, _, digest in cached)
    if misses:
        log.info("hashing %d image files %s names (then cached in .image_hashes.json)", misses, path)
    named = hashlib.sha256()
    for name, file, digest in cached:
        named.update(f"{name}\0{digest or _hash_image(file, known)}\0".encode())
    return f"{head}+{named.hexdigest()[:16]}"


def _add_content(digest: Any, file: Path, sampled: bool = True) -> None:
    size = file.stat().st_size
    if size <= _HASH_LIMIT:
        digest.update(file.read_bytes())
        return
    digest.update(str(size).encode())
    if sampled:
        with open(file, "rb") as f:
            for block in range(_SAMPLED_BLOCKS):  # (the first and the last among them)
                f.seek(block * (size - _BLOCK) // (_SAMPLED_BLOCKS - 1))
                digest.update(f.read(_BLOCK))


def _cached(file: Path, known: dict[str, list]) -> str | None:
    """The cached hash of an image whose size and modification time are those recorded with it."""
    try:
        stat = file.stat()
    except OSError:
        return "unreadable"  # (missing): reading the data file names it
    size, mtime, digest = known.get(os.path.abspath(file), (None, None, None))
    return digest if (size, mtime) == (stat.st_size, stat.st_mtime_ns) else None


def _hash_image(file: Path, known: dict[str, list]) -> str:
    try:
        stat, digest = file.stat(), hashlib.sha256()
        _add_content(digest, file)
    except OSError:
        return "unreadable"  # (a folder, no permission): reading the data file names it
    known[os.path.abspath(file)] = [stat.st_size, stat.st_mtime_ns, digest.hexdigest()[:16]]
    return known[os.path.abspath(file)][2]


def _same_content(recorded: str | None, now: str | None) -> bool:
    """A hash recorded before data files' images were fingerprinted has no "+" part: the file alone
    is compared, so runs started then resume (their completed stages without an image check)."""
    return recorded == now or (recorded is not None and "+" not in recorded and now is not None
                               and now.split("+")[0] == recorded)


def _work_differences(stamp: dict[str, Any], made_from: dict[str, Any],
                      by_size: Callable[[str], str | None] = lambda name: None) -> list[str]:
    """How saved work stamped `stamp` was made otherwise than `made_from` says this attempt would make
    it ([]: the same recipe and inputs), in words for the message that throws it away. `by_size(name)`: the
    input's fingerprint as it was taken before files over 64 MiB were sampled (asked only on a difference)."""
    old, new = stamp.get("inputs", {}), made_from["inputs"]
    added = {name for name in new.keys() - old.keys() if new[name] is None}  # recorded since, with nothing to compare
    differences = ["other recipe values"] if stamp.get("recipe") != made_from["recipe"] else []
    changed = [name for name in old if name in new and not _same_content(old[name], new[name])
               and not _same_content(old[name], by_size(name))]  # (saved before files over 64 MiB were sampled)
    changed += [name for name in (old.keys() ^ new.keys()) - added]
    if changed:
        differences.append(f"{'another' if len(changed) == 1 else 'other'} {', '.join(sorted(changed))} "
                           "(an input changed, added or dropped)")
    return differences


def _named_images(data: DataRef) -> list[tuple[str, Path]]:
    from openvlt.records import image_files  # (here: `openvlt status` needs no pyarrow)

    return image_files(data.path, data.start, data.stop)


def _inside(path: str, outputs: list[Path]) -> bool:
    """Whether `path` is one of `outputs` or lies inside one (a data file in prepare's data folder)."""
    return any(Path(path).resolve().is_relative_to(o) for o in outputs)


def _file_sets(inputs: dict[str, Any]) -> dict[str, list[str]]:
    """Inputs named "<kind> <their file>" (loop's "reward /x/p.py"), as kind -> sorted files."""
    sets: dict[str, list[str]] = {}
    for name, value in inputs.items():
        kind, _, file = name.partition(" ")
        if file and file == str(value["path"] if isinstance(value, dict) else value):
            sets.setdefault(kind, []).append(file)
    return {kind: sorted(files) for kind, files in sets.items()}


def _changed_file_sets(recorded: dict[str, dict[str, Any]], given: dict[str, Any]) -> list[str]:
    """Sets of files a stage read, named "<kind> <file>" (the plugin files it judged with), that are now
    other files with other code: the recipe or the data names another plugin, or a relative plugin path is
    read from another folder. The same code elsewhere (a project moved) is the same input, and so are the
    recorded files, unchanged, with more found beside them (an older openvlt found no module spec's or
    entry point's file; data or a recipe naming another plugin is a changed input of its own)."""
    changed, now = [], _file_sets(given)
    for kind, files in _file_sets(recorded).items():
        then_code = sorted(recorded[f"{kind} {file}"]["hash"] or "" for file in files)
        found_since = set(files) < set(now.get(kind, [])) and all(
            fingerprint(Path(f)) == recorded[f"{kind} {f}"]["hash"] for f in files)
        if found_since:
            continue
        if now.get(kind, []) != files and then_code != sorted(fingerprint(Path(f)) or "" for f in now.get(kind, [])):
            changed.append(f"{kind} ({', '.join(files)}; now {', '.join(now.get(kind, [])) or 'none'}, other code: "
                           "the recipe or the data names another plugin, or a relative plugin path is read from "
                           "the folder the command runs in)")
    return changed


def _check_file_sets_kept(key: str, inputs: dict[str, dict[str, Any]]) -> None:
    """Plugin files are read while a stage runs (each reward worker loads its own copy, and again when
    the file changes): one edited meanwhile judged only part of the stage, so it is not recorded complete."""
    for kind, files in _file_sets(inputs).items():
        edited = [file for file in files if fingerprint(Path(file)) != inputs[f"{kind} {file}"]["hash"]]
        if edited:
            raise RuntimeError(f"{key}: its {kind} {edited[0]} changed while the stage ran, so its verdicts may come "
                               "from both versions; run the same command again to run the stage on the new one")


def _moved_name(name: str, old: str, new: str) -> str:
    kind, space, file = name.partition(" ")
    return f"{kind} {rebase_paths(file, old, new)}" if space else name


def _recorded_input(entry: dict[str, Any]) -> str | DataRef:
    return DataRef(entry["path"], *entry["rows"]) if "rows" in entry else entry["path"]


def _plural(n: int, thing: str) -> str:
    return f"{n} {thing}" + ("" if n == 1 else "s")


def _summary(counts: dict[str, Any]) -> str:
    head = f"{counts['in']} in" + (f" -> {counts['out']} out" if "out" in counts else "") if "in" in counts else ""
    rest = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in counts.items()
                     if k not in ("in", "out") and not isinstance(v, (dict, list)))
    return "; ".join(s for s in (head, rest) if s) or "done"


_LOCKS: dict[Path, list] = {}  # run directory -> [this process's open .lock (None: unlockable), holders]


def _lock(root: Path) -> None:
    """One process at a time in a run directory: two would overwrite each other's manifest and
    checkpoints. An exclusive flock on `<run_dir>/.lock`, which the kernel drops when the process
    dies (so a kill -9 never leaves a stale lock). Counted within one process: the last `_unlock`
    lets go. On a file system without flock the run goes on unlocked, with a warning."""
    key = root.resolve()
    if key in _LOCKS:
        _LOCKS[key][1] += 1
        return
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    for _ in range(5):  # `openvlt status` holds a shared lock for an instant
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            time.sleep(0.1)
        except OSError as exc:  # e.g. ENOLCK / ENOSYS on NFS without lockd, Lustre without -o flock
            log.warning("%s: this file system cannot lock files (%s); nothing stops a second run in this directory", root, exc)
            os.close(fd)
            _LOCKS[key] = [None, 1]
            return
    else:
        holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunDirectoryBusy(f"{root} is in use by another openvlt run: {holder}. Let it finish or stop it, "
                               "then run the same command again (`openvlt status` shows where it is)")
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {_now()}".encode())
    _LOCKS[key] = [fd, 1]


def _unlock(root: Path) -> None:
    key = root.resolve()
    if key not in _LOCKS:
        return
    _LOCKS[key][1] -= 1
    if _LOCKS[key][1] == 0:
        fd = _LOCKS.pop(key)[0]
        if fd is not None:
            os.close(fd)  # releases the flock


def _holder(root: Path) -> str | None:
    """Who holds the run directory's lock now (as `_lock` wrote it), or None when nobody does."""
    try:
        fd = os.open(root / ".lock", os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return os.read(fd, 4096).decode(errors="replace").strip() or "a live process"
    except OSError:  # a file system without locks: nobody can be seen holding it
        return None
    finally:
        os.close(fd)  # also drops the shared lock, if it was taken


def _remove_stale_temporaries(folder: Path, names: list[str]) -> None:
    """Delete the temporary files (`openvlt.files.temporary_path`) that a process killed inside `atomic_write`
    or `write_records` left (safe: the run directory's lock means no other process is writing them)."""
    for name in names:
        for stale in folder.glob(glob.escape(temporary_path(folder / name, "").name) + "*"):
            _remove(stale)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def quarantine_file(root: Path, ref: DataRef) -> Path:
    """Where data.skip_bad_rows sets a slice's bad rows aside: one file per data file and slice, named
    after the file plus a hash of its path and slice (two test.parquet stay apart)."""
    named = str(Path(ref.path).resolve())  # a whole file keeps the name runs gave it before slices had their own
    if (ref.start, ref.stop) != (0, None):
        named += f"[{ref.start}:{ref.stop}]"
    return root / "quarantine" / f"{data_name(Path(ref.path))}-{hashlib.sha256(named.encode()).hexdigest()[:8]}.jsonl"
