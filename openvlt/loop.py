"""The loop: OpenVLThinker's iterative SFT + RL procedure as one resumable job.

    prepare the recipe's built inputs (toy world, tiny student); check every training slice (openvlt.inputs)
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

import logging
import os
from pathlib import Path
from typing import Any, Sequence

from openvlt.engines import EngineSpec, Sampling, build_engine
from openvlt.inputs import bad_rows_before, check_training_data, eval_cutoff, read_problems
from openvlt.recipe import DataRef, Recipe, Role, prepared_paths, text_only_model_error
from openvlt.stages.common import load_problems
from openvlt.workspace import Workspace

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


def caption(ws: Workspace, r: Recipe, k: int) -> None:
    from openvlt.stages.caption import caption_problems

    it, ref = f"iter_{k}", r.data_for_iteration("sft", k)

    def body(ctx):
        problems = read_problems(ws, r, ref, "data.sft")
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
            read_problems(ws, r, ref, "data.sft"), _engine(r, "student", model), ctx.out["traces"],
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
            n = write_records(read_problems(ws, r, ref, "data.rl"), ctx.out["rl"])
            return {"in": n, "out": n}

        ws.stage(f"{it}/rl_data", copy_all, outputs={"rl": out}, inputs={"problems": ref})
        return
    ws.stage(
        f"{it}/rl_data",
        lambda ctx: select_rl_problems(
            read_problems(ws, r, ref, "data.rl"), _engine(r, "student", model), ctx.out["rl"],
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
        sets = {name: read_problems(ws, recipe, ref, f"data.eval.{name}") for name, ref in recipe.data.eval.items()}
        cut = {name: eval_cutoff(recipe, len(rows)) for name, rows in sets.items()}
        sets = {name: rows[: cut[name]] for name, rows in sets.items()}
        label = os.path.relpath(model, ws.root) if Path(model).resolve().is_relative_to(ws.root.resolve()) else model
        return evaluate_model(
            sets, label, _engine(runs_on or recipe, "evaluator", model), ctx.out["eval"],
            set_aside={name: bad_rows_before(ws, recipe, ref, cut[name]) for name, ref in recipe.data.eval.items()},
            prompt=role.prompt or student.prompt, system=role.system or student.system,
            sampling=Sampling(n=1, temperature=recipe.evaluate.temperature, max_tokens=recipe.evaluate.max_tokens,
                              seed=recipe.seed),
            scratch=ctx.scratch, samples_kept=(runs_on or recipe).evaluate.samples_kept, judge=recipe.reward,
        )

    held_out = {f"eval.{name}": ref for name, ref in recipe.data.eval.items()}  # what it is evaluated on is an input too
    inputs = {"model": model, **held_out, **_reward_files(recipe, rows=tuple(held_out.values()))}
    ws.stage(f"{where}/evaluate", body, outputs={"eval": out}, inputs=inputs)


# ----------------------------------------------------------------------------- helpers
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
