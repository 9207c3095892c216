"""Length-ordered micro-batches: how much faster SFT steps get, and that the update stays the same.

    .venv/bin/python bench/micro_batches.py [--run runs/tiny-cpu] [--steps 30] [--splits 1 2 4 8]
                                            [--examples 320] [--device cuda] [--autocast none bfloat16]
                                            [--rounds 1]

Needs a run of the embedded default (its student and iteration 1's SFT set). Trains the local SFT
backend on the first --examples traces from the base student once per micro-batch split (`sft.grad_accum`)
and autocast setting, in the order given, --rounds times over (interleaved: a machine whose speed drifts
slows every setting alike). Each run makes one pass over the examples first, untimed (it encodes them,
which a run does once), then --steps timed steps. Split 1 pads the whole 32-example batch to its longest
example; more splits are cut in length order and pad less. Prints, per run, seconds per step, the speed-up
over the first run of split 1 with the first autocast setting (the baseline; the first run when split 1
is not asked for), the largest weight difference from the baseline's weights (float rounding only: the
loss is a token mean over the whole batch; bfloat16 differs more) and, on a GPU, the peak memory PyTorch
allocated. On a CPU more splits are faster; on a GPU, where a model this small costs kernel launches
rather than arithmetic, fewer are.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from openvlt.backends import SFTConfig
from openvlt.backends.local import sft
from openvlt.stages.common import load_problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/tiny-cpu", help="a run directory of recipes/tiny-cpu.yaml")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--splits", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--examples", type=int, default=320, help="traces used (the untimed first pass encodes them)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--autocast", nargs="+", default=["none"], help="backend.options.autocast values: none, bfloat16")
    parser.add_argument("--rounds", type=int, default=1, help="times every (split, autocast) pair is run, interleaved")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    run = Path(args.run)
    rows = load_problems(run / "iter_1" / "sft.parquet")
    examples = [{"prompt": r["question"], "images": r["images"], "response": r["response"]} for r in rows[: args.examples]]
    warm_up = -(-len(examples) // 32)  # steps of the first pass
    student = run / "models" / "student"

    gpu = args.device.startswith("cuda")
    results = []  # (split, autocast, seconds per step, peak MiB or None, weights), every run kept
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for split in args.splits:
                for autocast in args.autocast:
                    config = SFTConfig(steps=warm_up + args.steps, batch_size=32, grad_accum=split, lr=1e-3)
                    seconds = []
                    callback = lambda step, model, processor: seconds.append(time.perf_counter())  # noqa: E731
                    if gpu:
                        torch.cuda.reset_peak_memory_stats()
                    out = sft(examples, student, Path(tmp) / f"split{split}-{autocast}", config, callback=callback,
                              options={"checkpoint_every": 0, "device": args.device, "autocast": autocast})
                    per_step = (seconds[-1] - seconds[warm_up - 1]) / args.steps
                    peak = torch.cuda.max_memory_allocated() / 2**20 if gpu else None
                    results.append((split, autocast, per_step, peak, load_file(out / "model.safetensors")))

    base = next((r for r in results if r[0] == 1 and r[1] == args.autocast[0]), results[0])
    print(f"SFT on {len(examples)} examples of {run}, batch 32, {args.steps} steps timed after {warm_up}, "
          f"{args.device}; baseline: split {base[0]}, autocast {base[1]}")
    print("split  autocast  s/step  speed-up  max |weight difference|  peak MiB")
    for split, autocast, per_step, peak, weights in results:
        diff = max(float((weights[k] - base[4][k]).abs().max()) for k in weights)
        shown = "-" if peak is None else f"{peak:.0f}"
        print(f"{split:5d}  {autocast:8s}  {per_step:6.3f}  {base[2] / per_step:7.2f}x  {diff:22.1e}  {shown:>8s}")


if __name__ == "__main__":
    main()
