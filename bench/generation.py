"""The hf engine's generation speed: tokens per second and memory by batch size, on CPU or a GPU.

    .venv/bin/python bench/generation.py [--run runs/tiny-cpu] [--device cuda] [--batch-sizes 150 500]

Needs a run of the embedded default: it loads iteration 1's SFT model (a model that writes whole
traces; the base student writes too little to time) and answers the held-out questions greedily,
as the evaluate stage does, once per batch size. Prints seconds, generated tokens per second, the
speed-up in tokens per second over the first batch size and, on a GPU, the peak memory PyTorch allocated.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from openvlt.engines import Sampling
from openvlt.engines.hf import HFEngine
from openvlt.stages.common import load_problems, student_request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/tiny-cpu", help="a run directory of recipes/tiny-cpu.yaml")
    parser.add_argument("--model", default=None, help="default: RUN/iter_1/sft/model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[150])
    parser.add_argument("--max-tokens", type=int, default=240)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    run = Path(args.run)
    model = args.model or str(run / "iter_1" / "sft" / "model")
    problems = load_problems(run / "data" / "toyworld" / "test.parquet")
    requests = [student_request(p, "{question}") for p in problems]
    sampling = Sampling(temperature=0.0, max_tokens=args.max_tokens)

    gpu = args.device.startswith("cuda")
    print(f"greedy answers to {len(requests)} held-out questions by {model} on {args.device}")
    print("batch  seconds  tokens  tokens/s  speed-up  peak MiB")
    first = None
    for batch_size in args.batch_sizes:
        engine = HFEngine(model, device=args.device, batch_size=batch_size)
        engine.generate_ids(requests[:batch_size], sampling)  # warm-up: kernels, allocator
        if gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        _, ids = engine.generate_ids(requests, sampling)
        seconds = time.perf_counter() - started
        tokens = sum(len(row) for rows in ids for row in rows)
        peak = f"{torch.cuda.max_memory_allocated() / 2**20:.0f}" if gpu else "-"
        first = first or tokens / seconds
        print(f"{batch_size:5d}  {seconds:7.2f}  {tokens:6d}  {tokens / seconds:8.0f}  {tokens / seconds / first:7.2f}x  {peak:>8s}")


if __name__ == "__main__":
    main()
