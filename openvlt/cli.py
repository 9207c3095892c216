"""The `openvlt` command line.

    openvlt run RECIPE.yaml [key.sub=value ...]     run (or resume) the SFT+GRPO loop (--redo STAGE: run one again)
    openvlt status RUN_DIR                          what is done, what failed, what a rerun will do
    openvlt data toyworld --n N --seed S --out DIR  write toy-world problem records
    openvlt data convert SRC --out FILE             problem records from a verl / EasyR1 / HF data set
    openvlt model tiny --out DIR                    build the tiny offline student
    openvlt rewards score|list ...                  score responses with a reward plugin

Each subcommand's module is imported only when it is used, so `openvlt --help` stays fast and
a command never pulls in a heavy stack it does not need.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="openvlt run", description="Run, or resume, the iterative SFT + GRPO loop of a recipe.",
        epilog="Re-running the same command resumes: complete stages are skipped, an interrupted one continues from its last checkpoint or finished chunks.",
    )
    parser.add_argument("recipe", help="recipe YAML file (e.g. recipes/tiny-cpu.yaml)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides (e.g. sft.steps=200 iterations=3)")
    parser.add_argument("--run-dir", help="run directory (default: the recipe's run_dir, or runs/<name>)")
    parser.add_argument("--force", action="store_true", help="resume even though the recipe changed since the run started "
                        "(completed stages are kept; see --redo)")
    parser.add_argument("--redo", metavar="STAGE", action="append", help="run STAGE again, and every stage made from its "
                        "outputs, replacing their outputs (stage names as `openvlt status` lists them, e.g. iter_2/grpo; a "
                        "pattern such as '*/evaluate' names several; --redo may be given more than once)")
    args = parser.parse_intermixed_args(argv)  # options may come before or after the overrides
    _quiet_library_progress_bars()
    from openvlt.loop import run
    from openvlt.recipe import load_recipe
    from openvlt.report import format_summary
    from rewards.registry import import_from_working_directory

    import_from_working_directory()  # `reward.override: my_rewards:exact` next to my_rewards.py, as `rewards score` finds it
    overrides = list(args.overrides) + ([f"run_dir={args.run_dir}"] if args.run_dir else [])
    summary = run(load_recipe(args.recipe, overrides), force=args.force, redo=args.redo)
    print(format_summary(summary))
    return 0


def _quiet_library_progress_bars() -> None:
    """The stages' own bars say where a run is; the libraries' bars for each parquet cast, weight
    load and shard write (dozens per run, a line each) would bury them."""
    import datasets
    import huggingface_hub.utils
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.enable_progress_bars()  # (switched off with transformers'): a download shows its progress


def _status(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="openvlt status", description="Show a run's stages: complete, failed (why), interrupted, running.",
        epilog="exit status: 0 finished, 1 a stage failed or the run stopped (fix what it names, then rerun), "
               "2 a usage error, 3 running now, 4 not finished (the same command continues it), 5 no run there (yet)")
    parser.add_argument("run_dir", help="the run directory (e.g. runs/tiny-cpu)")
    args = parser.parse_args(argv)
    from pathlib import Path

    from openvlt.workspace import STATUS_EXIT_CODES, format_status, run_state

    state = run_state(Path(args.run_dir))
    if state == "no run":
        print(f"openvlt status: {args.run_dir}: no manifest.json here (not a run directory, or a run that is still "
              "checking its recipe)", file=sys.stderr)
    else:
        print(format_status(Path(args.run_dir)))
    return STATUS_EXIT_CODES[state]


def _data(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="openvlt data", description="Build problem-record data sets.")
    sub = parser.add_subparsers(dest="what", required=True)
    toy = sub.add_parser("toyworld", help="the synthetic toy world (counting and arithmetic over coloured shapes)")
    toy.add_argument("--n", type=int, required=True, help="number of training problems")
    toy.add_argument("--n-test", type=int, default=300, help="number of held-out test problems (default 300)")
    toy.add_argument("--seed", type=int, default=0)
    toy.add_argument("--out", required=True, help="output folder (train.parquet, test.parquet, stats.json)")
    toy.add_argument("--grid", type=int, default=3, help="grid size: 3 (9 image tokens) or more")
    toy.add_argument("--levels", default="1,2,3", help="difficulty levels to include, e.g. 1,2")
    toy.add_argument("--mc-fraction", type=float, default=0.2, help="fraction asked as multiple choice")
    toy.add_argument("--reward", default="toyworld", help="reward plugin named in every record (default: toyworld, "
                     "the answer plus every claim about the grid)")
    convert = sub.add_parser("convert", help="problem records from a verl, EasyR1 or Hugging Face data set",
                             description="Write a data set in another trainer's layout as problem records: verl's "
                             "(prompt, reward_model.ground_truth, extra_info.question), EasyR1's (problem, answer, "
                             "images), a save_to_disk folder, JSON lines, JSON or CSV, a parquet file, folder or "
                             "shard pattern (data/train-*.parquet). The output names where each column came from.")
    convert.add_argument("src", help="the data set to convert")
    convert.add_argument("--out", required=True, help="the problem-record parquet file to write")
    convert.add_argument("--split", help="the split of a save_to_disk DatasetDict folder")
    convert.add_argument("--reward", help="reward plugin for every row (default: the reward column, else math)")
    for key, where in (("question", "question, extra_info.question, problem, prompt"),
                       ("answer", "answer, reward_model.ground_truth, extra_info.answer"), ("id", "id, else the file name and row number")):
        convert.add_argument(f"--{key}", metavar="KEY", help=f"column (or struct field, a.b) holding the {key} (default: "
                             f"the first of {where})")
    convert.add_argument("--skip-bad-rows", action="store_true", help="quarantine rows that break the record contract "
                         "next to the output instead of stopping")
    args = parser.parse_args(argv)
    if args.what == "convert":
        return _convert(args)
    from data_tools.toyworld.dataset import build_toyworld

    stats = build_toyworld(
        args.out, args.n, args.n_test, seed=args.seed, grid=args.grid,
        levels=tuple(int(v) for v in args.levels.split(",")), mc_fraction=args.mc_fraction, reward=args.reward,
    )
    test = stats["test"]
    print(
        f"wrote {stats['train']['n']} train + {test['n']} test problems to {args.out}; two-step "
        f"{test['two_step_fraction']:.0%}, multiple choice {test['multiple_choice_fraction']:.0%}; best constant "
        f"answer {test['best_constant']['answer']!r} scores {test['best_constant']['accuracy']:.3f} on test"
    )
    return 0


def _convert(args: argparse.Namespace) -> int:
    _quiet_library_progress_bars()
    from data_tools.convert import convert_records

    done = convert_records(args.src, args.out, split=args.split, reward=args.reward, question_key=args.question,
                           answer_key=args.answer, id_key=args.id, skip_bad_rows=args.skip_bad_rows)
    set_aside = f" ({done['in'] - done['out']} bad rows quarantined next to it)" if done["out"] < done["in"] else ""
    if not done["out"]:
        print(f"openvlt data convert: none of the {done['in']} rows is a usable problem{set_aside}", file=sys.stderr)
        return 1
    print(f"wrote {done['out']} of {done['in']} problem records to {args.out}{set_aside}: question from {done['question']}, "
          f"answer from {done['answer']}, id from {done['id']}"
          + (f"; <image> put in front of {done['placeholders_added']} questions" if done["placeholders_added"] else "")
          + (f"; left out the columns {', '.join(done['left_out'])} (not plain values)" if done["left_out"] else ""))
    return 0


def _model(argv: list[str]) -> int:
    from dataclasses import fields

    from data_tools.tiny_model import TinySize, build_tiny_student

    parser = argparse.ArgumentParser(prog="openvlt model", description="Build models offline.")
    sub = parser.add_subparsers(dest="what", required=True)
    tiny = sub.add_parser("tiny", help="a tiny random-init Qwen2.5-VL student with a locally trained tokenizer")
    tiny.add_argument("--out", required=True, help="output folder (a Hugging Face model folder)")
    tiny.add_argument("--seed", type=int, default=0)
    for f in fields(TinySize):
        tiny.add_argument(f"--{f.name.replace('_', '-')}", type=int, default=f.default, help=f"(default {f.default})")
    args = parser.parse_args(argv)
    size = TinySize(**{f.name: getattr(args, f.name) for f in fields(TinySize)})
    path = build_tiny_student(args.out, size, seed=args.seed)
    print(f"wrote the tiny student to {path}")
    return 0


def _rewards(argv: list[str]) -> int:
    from rewards.cli import main as rewards_main

    return rewards_main(argv)


COMMANDS = {
    "run": ("run or resume a recipe (openvlt run recipes/tiny-cpu.yaml)", _run),
    "status": ("show where a run stands (openvlt status runs/tiny-cpu)", _status),
    "data": ("build problem-record data sets (openvlt data toyworld|convert ...)", _data),
    "model": ("build models offline (openvlt model tiny ...)", _model),
    "rewards": ("score responses with a reward plugin; list plugins", _rewards),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = "openvlt COMMAND [ARGS]\n\ncommands:\n" + "\n".join(
        f"  {name:<10} {help_}" for name, (help_, _) in COMMANDS.items()
    )
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0
    if argv[0] not in COMMANDS:
        print(f"openvlt: unknown command {argv[0]!r}\n\n{usage}", file=sys.stderr)
        return 2
    consoles = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Console(sys.stdout), _Console(sys.stderr)  # before the log handler and any bar take them
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return COMMANDS[argv[0]][1](argv[1:])
    except KeyboardInterrupt:
        if os.environ.get("OPENVLT_DEBUG"):
            raise
        again = " (the same command continues where it stopped)" if argv[0] == "run" else ""
        print(f"\nopenvlt {argv[0]}: interrupted{again}", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:  # bad input: a clear message, not a traceback
        if os.environ.get("OPENVLT_DEBUG"):
            raise
        print(f"openvlt {argv[0]}: error: {exc}\n(set OPENVLT_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    finally:
        sys.stdout, sys.stderr = consoles


class _Console:
    """stdout or stderr that a run outlives: a log file on a full disk, or a pipe closed early
    (`openvlt status DIR | head -1`), stops the output, not the stage that was writing a progress bar.
    Once a write fails, the stream's descriptor goes to /dev/null, so nothing fails at exit either."""

    def __init__(self, stream):
        self._stream, self._gone = stream, False

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                return self._stream.write(text)
            except OSError:
                self._let_go()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except OSError:
                self._let_go()

    def _let_go(self) -> None:
        self._gone = True
        try:
            fd, null = self._stream.fileno(), os.open(os.devnull, os.O_WRONLY)
        except (OSError, ValueError, AttributeError):  # no descriptor (a test's capture), or no /dev/null
            return
        try:
            os.dup2(null, fd)
        except OSError:
            pass
        finally:
            os.close(null)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


if __name__ == "__main__":
    sys.exit(main())
