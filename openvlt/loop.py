"""The loop: OpenVLThinker's iterative SFT + RL procedure as one resumable job.

    prepare the recipe's built inputs (toy world, tiny student); check every training slice once
    evaluate the base student
    for k = 1 .. K:
        if k == 1: caption the SFT problems, distill n traces each from the text-only reasoner
        else:      regenerate n traces each with the GRPO model of iteration k-1
        verify every trace with the problem's reward; select one correct trace per problem
        SFT the BASE student on the selected traces;                      evaluate
        keep the RL problems the SFT model solves sometimes (by default 0 < pass < 1)
        GRPO from the SFT model on them;                                  evaluate
    write summary.json and report.html

Each step but the data check and the last line is a stage of the workspace (openvlt.workspace; verify
and select are one): skipped when complete, restarted (from its chunks or checkpoints) when interrupted.
Deliberate differences from the paper:
1. Captioning and distillation run once, in iteration 1; later iterations only regenerate.
2. Evaluation decodes greedily (by default: evaluate.temperature 0) on the recipe's held-out sets, after
   every SFT and GRPO stage.
3. Additions, off unless the recipe turns them on: `select.keep_previous` keeps last iteration's
   trace for a problem the model no longer solves; `regenerate.retries` resamples unsolved problems.

Seeds: caption, distill, select, SFT (the same batch order every iteration) and evaluation use the
recipe seed; in iteration k, regenerate and GRPO use seed + k and rl_data seed + 100 k. Chunk c of a
generation adds c, so a resumed stage draws exactly what an uninterrupted one would.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from openvlt.engines import EngineSpec, Sampling, build_engine
from openvlt.files import jsonl_rows
from openvlt.recipe import DataRef, Recipe, Role, model_is_here, prepared_paths, text_only_model_error
from openvlt.records import RecordError, record_files
from openvlt.stages.common import NoProblems, load_problems
from openvlt.workspace import Workspace, quarantine_file

log = logging.getLogger(__name__)


def run(recipe: Recipe, *, force: bool = False, redo: str | Sequence[str] | None = None) -> dict[str, Any]:
    """Run (or resume) the recipe; return the summary also written to <run_dir>/summary.json.
    `redo` names a completed stage (or a pattern: "*/evaluate", or several) to run again, with every stage
    made from its outputs (e.g. "iter_2/grpo": its evaluation, and the next iteration's stages)."""
    from openvlt.report import write_report, write_summary

    with Workspace.open(recipe, force=force, redo=redo) as ws:  # one process at a time in a run directory
        log.info("run directory %s (recipe %s)", ws.root, recipe.digest())
        prepare(ws, recipe)
        check_training_data(ws, recipe)
        base = recipe.roles.student.model
        evaluate(ws, recipe, "base", base)
        previous_grpo = None
        for k in range(1, recipe.iterations + 1):
            r = recipe.for_iteration(k)
            if k == 1:
                caption(ws, r, k)
                distill(ws, r, k)
            else:
                regenerate(ws, r, k, previous_grpo)
            select(ws, r, k)
            sft_model = sft(ws, r, k, base)
            evaluate(ws, recipe, f"iter_{k}/sft", sft_model, runs_on=r)
            rl_data(ws, r, k, sft_model)
            previous_grpo = grpo(ws, r, k, sft_model)
            evaluate(ws, recipe, f"iter_{k}/grpo", previous_grpo, runs_on=r)
        summary = write_summary(ws.root, recipe)
        log.info("wrote %s and %s", ws.root / "summary.json", write_report(ws.root, recipe))
        ws.finish()
    return summary


# ----------------------------------------------------------------------------- one function per box
def prepare(ws: Workspace, r: Recipe) -> None:
    from openvlt.stages.prepare import prepare_inputs

    targets = prepared_paths(r)
    if targets:
        ws.stage("prepare", lambda ctx: prepare_inputs(r.prepare.toyworld, r.prepare.tiny_student, ctx.out), outputs=targets)


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
            problems = _read_problems(ws, rk, ref, f"data.{which}")
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


def caption(ws: Workspace, r: Recipe, k: int) -> None:
    from openvlt.stages.caption import caption_problems

    it, ref = f"iter_{k}", r.data_for_iteration("sft", k)

    def body(ctx):
        problems = _read_problems(ws, r, ref, "data.sft")
        captioner = _engine(r, "captioner") if any(p["images"] for p in problems) else None  # text only: load no model
        return caption_problems(
            problems, captioner, ctx.out["captions"],
            prompt=r.roles.captioner.prompt, system=r.roles.captioner.system, scratch=ctx.scratch, chunk_size=r.caption.chunk_size,
            sampling=Sampling(n=1, temperature=r.caption.temperature, max_tokens=r.caption.max_tokens, seed=r.seed),
            source=_label("captioner", r.roles.captioner),
        )

    ws.stage(f"{it}/caption", body, outputs={"captions": ws.root / it / "captions.parquet"},
             inputs={"problems": ref, "model": r.roles.captioner.model})  # a local folder replaced in place is seen


def distill(ws: Workspace, r: Recipe, k: int) -> None:
    from openvlt.stages.distill import distill_traces

    it = f"iter_{k}"
    captions = ws.root / it / "captions.parquet"
    ws.stage(
        f"{it}/distill",
        lambda ctx: distill_traces(
            load_problems(captions), _engine(r, "reasoner"), ctx.out["traces"], prompt=r.roles.reasoner.prompt,
            sampling=Sampling(n=r.distill.samples, temperature=r.distill.temperature, top_p=r.distill.top_p,
                              max_tokens=r.distill.max_tokens, seed=r.seed),
            scratch=ctx.scratch, chunk_size=r.distill.chunk_size, system=r.roles.reasoner.system,
            source=_label("reasoner", r.roles.reasoner),
        ),
        outputs={"traces": ws.root / it / "traces.parquet"},
        inputs={"captions": captions, "model": r.roles.reasoner.model},
    )


def regenerate(ws: Workspace, r: Recipe, k: int, model: str) -> None:
    from openvlt.stages.regenerate import regenerate_traces

    it, ref = f"iter_{k}", r.data_for_iteration("sft", k)
    ws.stage(
        f"{it}/regenerate",
        lambda ctx: regenerate_traces(
            _read_problems(ws, r, ref, "data.sft"), _engine(r, "student", model), ctx.out["traces"],
            prompt=r.roles.student.prompt, system=r.roles.student.system, scratch=ctx.scratch,
            sampling=Sampling(n=r.regenerate.samples, temperature=r.regenerate.temperature, top_p=r.regenerate.top_p,
                              max_tokens=r.regenerate.max_tokens, seed=r.seed + k),
            chunk_size=r.regenerate.chunk_size, source=f"student iter_{k - 1}/grpo",
            retries=r.regenerate.retries, judge=r.reward,
        ),
        outputs={"traces": ws.root / it / "traces.parquet"},
        inputs={"problems": ref, "model": model},
    )


def select(ws: Workspace, r: Recipe, k: int) -> None:
    from openvlt.stages.select import select_traces

    it = f"iter_{k}"
    traces = ws.root / it / "traces.parquet"
    previous = ws.root / f"iter_{k - 1}" / "sft.parquet" if k > 1 and r.select.keep_previous else None

    def body(ctx):
        count_tokens = None
        if r.select.max_tokens is not None:
            from openvlt.models.batching import response_ids

            tokenizer = _tokenizer(r.roles.student.model)
            count_tokens = lambda text: len(response_ids(tokenizer, text))  # noqa: E731  as SFT will tokenize it
        return select_traces(
            load_problems(traces), ctx.out["sft"], policy=r.select.policy,
            truncate_reflections=r.select.truncate_reflections, reflection_markers=r.select.reflection_markers,
            max_tokens=r.select.max_tokens, count_tokens=count_tokens, judge=r.reward, seed=r.seed,
            quarantine_path=ws.root / it / "sft.quarantine.jsonl", previous=load_problems(previous) if previous else None,
            label=it,
        )

    rows = (traces, previous) if previous else (traces,)
    inputs = {"traces": traces, **({"previous": previous} if previous else {}), **_reward_files(r, rows=rows)}
    if r.select.max_tokens is not None:  # counted with the student's tokenizer
        inputs["tokenizer"] = r.roles.student.model
    ws.stage(f"{it}/select", body, outputs={"sft": ws.root / it / "sft.parquet"}, inputs=inputs)


def sft(ws: Workspace, r: Recipe, k: int, base: str) -> str:
    from openvlt.stages.sft import train_sft

    it = f"iter_{k}"
    data, model = ws.root / it / "sft.parquet", ws.root / it / "sft" / "model"
    ws.stage(
        f"{it}/sft",
        lambda ctx: train_sft(
            load_problems(data), base, ctx.out["model"], config=r.sft, backend=r.backend.name, options=r.backend.options,
            pixel_bounds=r.pixel_bounds(), prompt=r.roles.student.prompt, system=r.roles.student.system, seed=r.seed,
        ),
        outputs={"model": model},
        inputs={"data": data, "base": base},
    )
    return str(model)


def rl_data(ws: Workspace, r: Recipe, k: int, model: str) -> None:
    from openvlt.records import write_records
    from openvlt.stages.rl_data import select_rl_problems

    it, ref = f"iter_{k}", r.data_for_iteration("rl", k)
    out = ws.root / it / "rl.parquet"
    if not r.rl_data.enabled:
        def copy_all(ctx):
            n = write_records(_read_problems(ws, r, ref, "data.rl"), ctx.out["rl"])
            return {"in": n, "out": n}

        ws.stage(f"{it}/rl_data", copy_all, outputs={"rl": out}, inputs={"problems": ref})
        return
    ws.stage(
        f"{it}/rl_data",
        lambda ctx: select_rl_problems(
            _read_problems(ws, r, ref, "data.rl"), _engine(r, "student", model), ctx.out["rl"],
            prompt=r.roles.student.prompt, system=r.roles.student.system, scratch=ctx.scratch,
            sampling=Sampling(n=r.rl_data.samples, temperature=r.rl_data.temperature, max_tokens=r.rl_data.max_tokens,
                              seed=r.seed + 100 * k),
            min_pass=r.rl_data.min_pass, max_pass=r.rl_data.max_pass, max_problems=r.rl_data.max_problems,
            judge=r.reward, model=model, grpo=r.grpo, pixel_bounds=r.pixel_bounds(),
        ),
        outputs={"rl": out},
        inputs={"problems": ref, "model": model, **_reward_files(r, rows=(ref,))},
        choice_keys=("rl_data.min_pass", "rl_data.max_pass", "rl_data.max_problems"),  # widening the band samples nothing again
    )


def grpo(ws: Workspace, r: Recipe, k: int, init: str) -> str:
    from openvlt.stages.grpo import train_grpo

    it = f"iter_{k}"
    data, model = ws.root / it / "rl.parquet", ws.root / it / "grpo" / "model"
    ws.stage(
        f"{it}/grpo",
        lambda ctx: train_grpo(
            load_problems(data), init, ctx.out["model"], config=r.grpo, backend=r.backend.name, options=r.backend.options,
            pixel_bounds=r.pixel_bounds(), prompt=r.roles.student.prompt, system=r.roles.student.system, judge=r.reward, seed=r.seed + k,
        ),
        outputs={"model": model},
        inputs={"data": data, "init": init, **_reward_files(r, r.grpo.reward, rows=(data,))},
    )
    return str(model)


def evaluate(ws: Workspace, recipe: Recipe, where: str, model: str, runs_on: Recipe | None = None) -> None:
    """`model` on the held-out sets, measured as the top-level `recipe` says for every checkpoint: its reward,
    the evaluator's prompt and system (else the student's), its decoding and seed; an iteration may judge its
    own data otherwise, or prompt its student otherwise. `runs_on`, the iteration's recipe, says where and how
    fast the evaluator runs (its engine options) and how many answers eval.json keeps."""
    from openvlt.stages.evaluate import evaluate_model

    out = ws.root / where / "eval.json"
    role, student = recipe.roles.evaluator, recipe.roles.student

    def body(ctx):
        sets = {name: _read_problems(ws, recipe, ref, f"data.eval.{name}") for name, ref in recipe.data.eval.items()}
        cut = {name: _eval_cutoff(recipe, len(rows)) for name, rows in sets.items()}
        sets = {name: rows[: cut[name]] for name, rows in sets.items()}
        label = os.path.relpath(model, ws.root) if Path(model).resolve().is_relative_to(ws.root.resolve()) else model
        return evaluate_model(
            sets, label, _engine(runs_on or recipe, "evaluator", model), ctx.out["eval"],
            set_aside={name: _bad_rows_before(ws, recipe, ref, cut[name]) for name, ref in recipe.data.eval.items()},
            prompt=role.prompt or student.prompt, system=role.system or student.system,
            sampling=Sampling(n=1, temperature=recipe.evaluate.temperature, max_tokens=recipe.evaluate.max_tokens,
                              seed=recipe.seed),
            scratch=ctx.scratch, samples_kept=(runs_on or recipe).evaluate.samples_kept, judge=recipe.reward,
        )

    held_out = {f"eval.{name}": ref for name, ref in recipe.data.eval.items()}  # what it is evaluated on is an input too
    inputs = {"model": model, **held_out, **_reward_files(recipe, rows=tuple(held_out.values()))}
    ws.stage(f"{where}/evaluate", body, outputs={"eval": out}, inputs=inputs)


# ----------------------------------------------------------------------------- helpers
# Per process: a held-out set's problems (read once per file state), the slices already checked
# against them, and the quarantine files already announced (data is read at every stage that uses it).
_HELD_OUT: dict[tuple, dict[tuple, str]] = {}
_CHECKED: set[tuple] = set()
_ANNOUNCED: set[Path] = set()


def _read_problems(ws: Workspace, r: Recipe, ref: DataRef, key: str) -> list[dict[str, Any]]:
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
            cut = _eval_cutoff(r, len(problems))
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


def _eval_cutoff(r: Recipe, usable: int) -> int | None:
    """How many of a held-out set's `usable` problems evaluate takes, where evaluate.max_problems cuts
    the set (None: all of them)."""
    return r.evaluate.max_problems if r.evaluate.max_problems and usable > r.evaluate.max_problems else None


def _bad_rows_before(ws: Workspace, r: Recipe, ref: DataRef, first: int | None = None) -> int:
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


def _reward_files(r: Recipe, *more: str | None, rows: tuple[str | Path | DataRef, ...] = ()) -> dict[str, str]:
    """The plugin files a stage judges with, as its inputs: `reward.override`'s (and `more`, e.g.
    `grpo.reward`), else those the reward column of the record files `rows` names. A plugin edited in place
    changes every verdict, so the stages that judged with it are no longer complete."""
    from openvlt.records import reward_plugin_files
    from rewards.registry import plugin_files

    files = [path for spec in (r.reward.override, *more) if spec for path in plugin_files(spec)]
    if r.reward.override is None:
        for ref in rows:
            ref = ref if isinstance(ref, DataRef) else DataRef(str(ref))
            files += reward_plugin_files(ref.path, ref.start, ref.stop)
    return {f"reward {path}": path for path in files}


def _engine(r: Recipe, role: str, model: str | None = None):
    """The role's engine. Only the reasoner may be a text-only model: the others read the images."""
    spec = getattr(r.roles, role)
    if spec.engine == "hf" and role != "reasoner":
        from openvlt.models import reads_images

        if not reads_images(model or spec.model):  # also checked with the recipe, for models already there
            raise ValueError(text_only_model_error(role, model or spec.model))
    return build_engine(EngineSpec(spec.engine, model or spec.model, r.role_options(role)))


def _label(name: str, role: Role) -> str:
    return f"{name} {role.engine}:{role.model}"


def _tokenizer(model: str):
    from openvlt.models import load_processor

    return load_processor(model).tokenizer
