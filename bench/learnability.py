"""Learnability proof: can the tiny student learn the toy world from verified teacher traces?

    .venv/bin/python bench/learnability.py [--minutes 10] [--n-train 2000] [--grid 3] [--out runs/bench-learnability]

Builds the toy world and the tiny student, captions + distills traces with the program teacher,
keeps the shortest correct trace per problem (the `toyworld` reward plugin, as the embedded default), then trains with the local
SFT backend for a wall-clock budget, evaluating greedy accuracy on the held-out split every
`--eval-every` seconds and at the end (evaluation time is not counted against the budget). Prints the curve next
to the best-constant baseline and writes curve.json and curve.png to --out.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from data_tools.tiny_model import TinySize, build_tiny_student
from data_tools.toyworld.dataset import build_toyworld
from openvlt.backends import SFTConfig
from openvlt.backends.local import sft
from openvlt.engines import EngineSpec, Request, Sampling, build_engine
from openvlt.engines.hf import HFEngine
from openvlt.stages.caption import caption_problems
from openvlt.recipe import RewardSettings
from openvlt.stages.common import load_problems, score_responses
from openvlt.stages.distill import distill_traces
from openvlt.stages.select import select_traces


class _Budget(Exception):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget (wall clock, evaluation excluded)")
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-test", type=int, default=300)
    parser.add_argument("--grid", type=int, default=3)
    parser.add_argument("--eval-every", type=float, default=60.0, help="seconds of training between evaluations")
    parser.add_argument("--lr", type=float, default=1e-3, help="the embedded default's SFT rate")
    parser.add_argument("--steps-per-second", type=float, default=3.5,
                        help="sets the cosine schedule's length to the budget (measured: 3.6 on 2 cores)")
    parser.add_argument("--out", default="runs/bench-learnability")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)

    stats = build_toyworld(out / "data", args.n_train, args.n_test, seed=0, grid=args.grid)
    baseline = stats["test"]["best_constant"]["accuracy"]
    student = build_tiny_student(out / "student", TinySize())
    problems = load_problems(out / "data" / "train.parquet")
    caption_problems(problems, build_engine(EngineSpec("program", "toyworld-captioner")), out / "captions.parquet",
                     prompt="<image>", sampling=Sampling(), scratch=out / "scratch" / "caption")
    distill_traces(load_problems(out / "captions.parquet"), build_engine(EngineSpec("program", "toyworld-reasoner")),
                   out / "traces.parquet", prompt="{caption}\n{question}", sampling=Sampling(n=4),
                   scratch=out / "scratch" / "distill")
    kept = select_traces(load_problems(out / "traces.parquet"), out / "sft.parquet")
    examples = [{"prompt": r["question"], "images": r["images"], "response": r["response"]}
                for r in load_problems(out / "sft.parquet")]
    test = load_problems(out / "data" / "test.parquet")
    requests = [Request(p["question"], tuple(p["images"])) for p in test]

    curve: list[dict] = []
    clock = {"train": 0.0, "since": time.time(), "last_eval": -1e9}

    def evaluate(step: int, model, processor) -> None:
        clock["train"] += time.time() - clock["since"]
        last = clock["train"] >= args.minutes * 60 or step == steps  # the budget's end, or the schedule's
        if clock["train"] - clock["last_eval"] >= args.eval_every or last:
            clock["last_eval"] = clock["train"]
            answers = HFEngine.from_loaded(model, processor, batch_size=150).generate(
                requests, Sampling(n=1, temperature=0, max_tokens=240))
            judge = RewardSettings()
            verdicts = score_responses(test, answers, judge)
            accuracy = sum(judge.is_correct(v[0]) for v in verdicts) / len(test)
            curve.append({"step": step, "minutes": round(clock["train"] / 60, 2), "accuracy": accuracy})
            print(f"step {step:5d}  {clock['train'] / 60:5.2f} min  accuracy {accuracy:.3f}  ({accuracy / baseline:.1f}x best constant)",
                  flush=True)
        if clock["train"] >= args.minutes * 60:
            raise _Budget
        clock["since"] = time.time()

    steps = int(args.minutes * 60 * args.steps_per_second)  # a slower machine is stopped by the budget first
    try:
        sft(examples, student, out / "model", SFTConfig(steps=steps, batch_size=32, lr=args.lr, warmup_steps=30,
                                                        schedule="cosine"), callback=evaluate,
            options={"checkpoint_every": 0})
    except _Budget:
        pass
    best = max(c["accuracy"] for c in curve)
    result = {"best_constant": baseline, "sft_examples": kept["out"], "curve": curve, "best_accuracy": best,
              "ratio_to_best_constant": best / baseline, "target_met": best >= 3 * baseline}
    (out / "curve.json").write_text(json.dumps(result, indent=2) + "\n")
    _plot(curve, baseline, out / "curve.png")
    print(f"best constant {baseline:.3f}; best accuracy {best:.3f} = {best / baseline:.1f}x (target 3x: "
          f"{'met' if result['target_met'] else 'NOT met'}); {kept['out']} SFT examples; curve in {out}/curve.json")


def _plot(curve: list[dict], baseline: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([c["minutes"] for c in curve], [c["accuracy"] for c in curve], marker="o", label="tiny student (SFT)")
    ax.axhline(baseline, color="grey", linestyle="--", label="best constant answer")
    ax.axhline(3 * baseline, color="red", linestyle=":", label="3x best constant")
    ax.set(xlabel="training minutes (2 CPU cores)", ylabel="held-out accuracy", ylim=(0, 1))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
