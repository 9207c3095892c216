"""The user's data as the loop reads it: slices of record files, checked when the run starts.

Every training slice is read and checked before any stage runs (`check_training_data`): bad rows, reward
names no plugin answers to, prompts too long for a stage's limit, and held-out problems trained on. The
stages then read their slices with `read_problems`, which quarantines bad rows under data.skip_bad_rows
and says so once per process. Held-out sets report the rows they set aside (`bad_rows_before`) and the
cut evaluate.max_problems makes (`eval_cutoff`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from openvlt.files import jsonl_rows
from openvlt.recipe import DataRef, Recipe, model_is_here
from openvlt.records import RecordError, record_files
from openvlt.stages.common import NoProblems, load_problems
from openvlt.workspace import Workspace, quarantine_file

log = logging.getLogger(__name__)


def check_training_data(ws: Workspace, r: Recipe) -> None:
    """Every training slice is read and checked when the run starts, unless the stages that read it are
    complete: the RL problems, and later iterations' SFT problems, are first read after an SFT stage, and
    a bad row (or an unknown reward) there would stop the run hours in. So are its prompts' lengths, for
    every limit a stage will hold them to: a slice none of whose prompts fits stops the run, and those too
    long are named."""
    readers: dict[tuple, dict[tuple, tuple[Recipe, str, str, DataRef]]] = {}  # slice -> length check -> who reads it
    for k in range(1, r.iterations + 1):
        rk = r.for_iteration(k)
        for which, reader in (("sft", f"iter_{k}/caption" if k == 1 else f"iter_{k}/regenerate"), ("rl", f"iter_{k}/rl_data")):
            ref = rk.data_for_iteration(which, k)
            if not ws.complete(reader):
                checks = readers.setdefault((ref.path, ref.start, ref.stop), {})
                checks.setdefault((which, repr(_prompt_limit(rk, which)), repr(rk.pixel_bounds()), rk.roles.student.prompt,
                                   rk.roles.student.system), (rk, which, reader, ref))
    for checks in readers.values():
        rk, which, reader, ref = next(iter(checks.values()))
        log.info("checking %s rows [%d, %s) (%s reads them)", ref.path, ref.start, "end" if ref.stop is None else ref.stop, reader)
        try:
            problems = read_problems(ws, rk, ref, f"data.{which}")
            for rk, which, reader, _ in checks.values():
                _check_prompt_lengths(rk, which, problems)
        except Exception as exc:
            ws.record_stop(f"checking the data {reader} reads: {type(exc).__name__}: {exc}")
            raise


def _prompt_limit(r: Recipe, which: str) -> dict[str, Any]:
    """problems_within_length's limit for the SFT or the RL problems."""
    from openvlt.stages.common import grpo_prompt_limit

    return grpo_prompt_limit(r.grpo) if which == "rl" else {"given": r.sft.max_length, "key": "sft.max_length", "what": "SFT problems"}


def _check_prompt_lengths(r: Recipe, which: str, problems: list[dict[str, Any]]) -> None:
    """An SFT problem whose prompt alone is longer than sft.max_length, or an RL problem's longer than
    GRPO's limit, will be left out: say so now, not after hours of captioning and SFT. Lengths are the
    base student's (every checkpoint keeps its processor); a hub model not downloaded yet is not checked."""
    from openvlt.stages.common import problems_within_length

    student = r.roles.student
    if student.engine != "hf" or not model_is_here(student.model):
        return
    try:
        problems_within_length(problems, student.model, r.pixel_bounds(), prompt=student.prompt, system=student.system,
                               ahead=True, **_prompt_limit(r, which))
    except ValueError as exc:
        raise ValueError(f"data.{which}: {exc}") from None


# Per process: a held-out set's problems (read once per file state), the slices already checked
# against them, and the quarantine files already announced (data is read at every stage that uses it).
_HELD_OUT: dict[tuple, dict[tuple, str]] = {}
_CHECKED: set[tuple] = set()
_ANNOUNCED: set[Path] = set()


def read_problems(ws: Workspace, r: Recipe, ref: DataRef, key: str) -> list[dict[str, Any]]:
    """A slice of a user data file (recipe key `key`); training data that holds held-out problems is
    warned about."""
    problems = _read_slice(ws, r, ref, key)
    for name, held in r.data.eval.items() if not key.startswith("data.eval.") else ():
        if (key, ref.path, ref.start, ref.stop, name) not in _CHECKED:  # once per process
            _CHECKED.add((key, ref.path, ref.start, ref.stop, name))
            _warn_about_held_out_problems(problems, key, name, _held_out_problems(ws, r, held, name))
    return problems


def _read_slice(ws: Workspace, r: Recipe, ref: DataRef, key: str) -> list[dict[str, Any]]:
    """Bad rows stop the run, or are quarantined with data.skip_bad_rows (`_quarantine_file`, rewritten
    at every read, so a fixed file leaves none). Only the slice is read and checked. A reward
    name no plugin answers to, or a slice with no usable problem, stops the run here, naming the file."""
    quarantine = _quarantine_file(ws, r, ref)
    if quarantine is not None:
        quarantine.unlink(missing_ok=True)
    try:
        problems = load_problems(ref.path, ref.start, ref.stop, quarantine_path=quarantine, decode_images=True,
                                 announce=False, reward=r.reward.override)
        if not problems:  # (an empty file read whole; an empty slice raises)
            raise NoProblems(f"{ref.path} has no usable problems")
    except NoProblems as exc:
        bad_rows_note = f" ({jsonl_rows(quarantine)} bad rows set aside in {quarantine})" if (
            quarantine is not None and quarantine.exists()) else ""
        raise ValueError(f"{key}: {exc}{bad_rows_note}") from None
    except RecordError as exc:
        hint = "" if exc.row is None else (" (fix the rows, or set data.skip_bad_rows: true to set bad rows aside "
                                           "in <run_dir>/quarantine/ and go on)")
        raise ValueError(f"{key}: {exc}{hint}") from None
    if quarantine is not None and quarantine.exists() and quarantine not in _ANNOUNCED:  # read at every stage: said once
        _ANNOUNCED.add(quarantine)
        n_bad, first = jsonl_rows(quarantine), json.loads(quarantine.read_text(encoding="utf-8").partition("\n")[0])
        over = ""
        if key.startswith("data.eval."):
            cut = eval_cutoff(r, len(problems))
            over = (f"; its accuracy is over the other {len(problems)}" if cut is None else
                    f"; its accuracy is over the first {cut} of the other {len(problems)} (evaluate.max_problems)")
        log.warning("%s: %d of the %d rows read from %s are bad, set aside in %s (the first: row %d, %s)%s", key,
                    n_bad, n_bad + len(problems), ref.path, os.path.relpath(quarantine, ws.root), first["row"],
                    first["reason"], over)
    if r.reward.override is None:
        _check_reward_names(problems, ref.path, key, r.reward.memory_mb)
    return problems


def _quarantine_file(ws: Workspace, r: Recipe, ref: DataRef) -> Path | None:
    """Where data.skip_bad_rows sets a slice's bad rows aside (`quarantine_file`); None when it is off."""
    return quarantine_file(ws.root, ref) if r.data.skip_bad_rows else None


def eval_cutoff(r: Recipe, usable: int) -> int | None:
    """How many of a held-out set's `usable` problems evaluate takes, where evaluate.max_problems cuts
    the set (None: all of them)."""
    return r.evaluate.max_problems if r.evaluate.max_problems and usable > r.evaluate.max_problems else None


def bad_rows_before(ws: Workspace, r: Recipe, ref: DataRef, first: int | None = None) -> int:
    """How many of a slice's rows its last read set aside as bad; with `first`, how many of them lie
    before its `first`-th usable row (evaluate.max_problems evaluates the first usable ones)."""
    quarantine = _quarantine_file(ws, r, ref)
    if quarantine is None or not quarantine.exists():
        return 0
    bad = sorted(json.loads(line)["row"] for line in quarantine.read_text(encoding="utf-8").splitlines() if line.strip())
    return len(bad) if first is None else sum((row - ref.start) - k < first for k, row in enumerate(bad))


def _held_out_problems(ws: Workspace, r: Recipe, ref: DataRef, name: str) -> dict[tuple, str]:
    """A held-out set's problems as (question, image hashes) -> id, read once per process and file state."""
    files = [Path(f) for f in record_files(Path(ref.path))]
    key = (ref.start, ref.stop, *((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    if key not in _HELD_OUT:
        _HELD_OUT[key] = {_problem_key(p): p["id"] for p in _read_slice(ws, r, ref, f"data.eval.{name}")}
    return _HELD_OUT[key]


def _problem_key(p: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    return " ".join(p["question"].split()), tuple(hashlib.sha256(image).hexdigest() for image in p["images"])


def _warn_about_held_out_problems(problems: list[dict[str, Any]], key: str, name: str, held_out: dict[tuple, str]) -> None:
    """A held-out problem trained on makes the set's accuracy partly a memory test. Warned, not refused
    (a debugging run may mean it): the same question with the same images, or another question about one
    of the set's images."""
    pictures = {picture for _, images in held_out for picture in images}
    copies, shared = [], 0
    for p in problems:
        problem = _problem_key(p)
        if problem in held_out:
            copies.append((p["id"], held_out[problem]))
        elif not pictures.isdisjoint(problem[1]):
            shared += 1
    if not (copies or shared):
        return
    parts = [f"{len(copies)} of its {len(problems)} problems are in held-out set {name!r} too (the same question and "
             f"images; the first: {copies[0][0]!r}, there {copies[0][1]!r})"] if copies else []
    parts += [f"{shared} of its problems ask about an image of held-out set {name!r}"] if shared else []
    log.warning("%s: %s: that set's accuracy will overstate what the model learned; take them out of one of the files",
                key, "; ".join(parts))


def _check_reward_names(problems: list[dict[str, Any]], path: str, key: str, memory_mb: int | None = None) -> None:
    """Every row's `reward` names a plugin: a typo would otherwise score every answer as an error."""
    from rewards import RewardError, check_reward

    first = {}
    for p in problems:
        first.setdefault(p["reward"], p["id"])
    for name, problem_id in first.items():
        try:
            check_reward(name, memory_mb)
        except RewardError as exc:
            raise ValueError(f"{key}: {path}, problem {problem_id!r} (the first whose reward is {name!r}): {exc} "
                             "(fix the file's reward column, or set reward.override)") from exc
