"""Memory of writing and reading a stage's record file: the peak above the rows, per byte of their images.

    .venv/bin/python bench/record_memory.py [--rows 3000] [--side 300]

Every stage writes its rows (problems with their images, captions, traces) with `openvlt.records.write_records`.
This builds `--rows` rows, each with its own `--side` x `--side` PNG of noise (incompressible, as photos nearly
are), then measures, in a fresh process each, the peak resident memory above what the rows take, and the
time, of `write_records` (a row group at a time) and of the same rows written as one whole `datasets` table
(how it wrote them before: every image copied into the table, then written). Prints both and their ratio,
then the peak of `read_records` on the file written (above the process's start), per byte of its images.
"""
from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rows(n: int, side: int) -> list[dict]:
    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")
    png = buffer.getvalue()
    return [{"id": f"p{i}", "images": [png + i.to_bytes(8, "big")], "question": "<image> How many?", "answer": "1",
             "data_source": "bench", "reward": "math", "extra_info": {}, "caption": "a caption " * 20} for i in range(n)]


def _measure(way: str, n: int, side: int, out: str) -> dict:
    if way == "read_records":
        from openvlt.records import read_records

        base, started = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, time.perf_counter()
        rows = read_records(out)
        seconds, peak = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        images = sum(len(image) for row in rows for image in row["images"])  # (bytes: undecoded)
        return {"images_mb": images / 2**20, "extra_mb": max(0, peak - base) / 2**20, "seconds": seconds}
    import datasets  # imported before the baseline: the import's memory and time are not the write's

    from openvlt.records import _features, _to_storage, write_records

    rows = _rows(n, side)
    images = sum(len(r["images"][0]) for r in rows)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    if way == "write_records":
        write_records(rows, out)
    else:
        stored = [_to_storage(r) for r in rows]
        datasets.Dataset.from_list(stored, features=_features(stored, Path(out), list(range(len(stored))))).to_parquet(out)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"images_mb": images / 2**20, "extra_mb": max(0, peak - base) / 2**20, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--side", type=int, default=300)
    parser.add_argument("--way", choices=["write_records", "whole_table", "read_records"], help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)  # (a child's)
    args = parser.parse_args()
    if args.way:
        print(json.dumps(_measure(args.way, args.rows, args.side, args.file)))
        return
    results, folder = {}, tempfile.mkdtemp()
    for way in ("write_records", "whole_table", "read_records"):
        done = subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--side", str(args.side), "--way", way,
                               "--file", str(Path(folder) / ("whole.parquet" if way == "whole_table" else "out.parquet"))],
                              capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
        results[way] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[way]
        above = "the process's start" if way == "read_records" else "the rows"
        print(f"{way:14s} {args.rows} rows, {r['images_mb']:.0f} MiB of images: peak {r['extra_mb']:.0f} MiB above {above} "
              f"({r['extra_mb'] / r['images_mb']:.2f} x their images), {r['seconds']:.1f} s")
    shutil.rmtree(folder)
    ratio = results["whole_table"]["extra_mb"] / max(results["write_records"]["extra_mb"], 1.0)
    print(f"whole table / write_records: {ratio:.1f} x the memory, "
          f"{results['whole_table']['seconds'] / results['write_records']['seconds']:.1f} x the time")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
