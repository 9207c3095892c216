"""Length-ordered micro-batches: how much faster SFT steps get, and that the update stays the same.

    .venv/bin/python bench/micro_batches.py [--run runs/tiny-cpu] [--steps 30] [--splits 1 2 4 8]

Needs a run of the embedded default (its student and iteration 1's SFT set). Trains the local SFT
backend for --steps steps from the base student once per micro-batch split (`sft.grad_accum`):
split 1 pads the whole 32-example batch to its longest example; more splits are cut in length order
and pad less. Prints seconds per step, the speed-up over split 1, and the largest weight difference
from split 1 (float rounding only: the loss is a token mean over the whole batch).
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file

from openvlt.backends import SFTConfig
from openvlt.backends.local import sft
from openvlt.stages.common import load_problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/tiny-cpu", help="a run directory of recipes/tiny-cpu.yaml")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--splits", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    run = Path(args.run)
    rows = load_problems(run / "iter_1" / "sft.parquet")
    examples = [{"prompt": r["question"], "images": r["images"], "response": r["response"]} for r in rows]
    student = run / "models" / "student"

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for split in args.splits:
            config = SFTConfig(steps=args.steps, batch_size=32, grad_accum=split, lr=1e-3)
            seconds = []
            callback = lambda step, model, processor: seconds.append(time.perf_counter())  # noqa: E731
            out = sft(examples, student, Path(tmp) / f"split{split}", config, options={"checkpoint_every": 0},
                      callback=callback)
            per_step = (seconds[-1] - seconds[0]) / (len(seconds) - 1)  # the first step also encodes: left out
            results[split] = (per_step, load_file(out / "model.safetensors"))

    base_time, base_weights = results[args.splits[0]]
    print(f"SFT on {len(examples)} examples of {run}, batch 32, {args.steps} steps")
    print("split  s/step  speed-up  max |weight difference|")
    for split, (per_step, weights) in results.items():
        diff = max(float((weights[k] - base_weights[k]).abs().max()) for k in weights)
        print(f"{split:5d}  {per_step:6.3f}  {base_time / per_step:7.2f}x  {diff:.1e}")


if __name__ == "__main__":
    main()
