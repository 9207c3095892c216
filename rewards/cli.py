"""``openvlt rewards``: score a JSONL file with a reward plugin, or list the plugins.

    openvlt rewards score INPUT.jsonl --reward NAME [--workers N] [--timeout S] [--memory-mb MB] [--output FILE]
    openvlt rewards list

Each input line is ``{"response": ..., "ground_truth": ..., "extra_info": {...}}`` (``extra_info``, a
per-line ``reward`` and ``data_source`` are optional; a line without ``data_source`` gets the input file's name, as
a record file's rows do). Output: exactly one JSON line per input line, in order,
``{"score": <float, or a dict for rewards with components>, "error": null or text}`` (a line that
is blank, not valid JSON or not UTF-8 gets an error line too; an error names its input line). A
plugin that raises, or calls ``sys.exit()``, fails its own line. A summary goes to stderr. ``INPUT`` may be ``-``.
``extra_info`` may also be a JSON string of an object (as record files store it). Exit status: 0 when every
line was scored; 1 when some line has an error or timed out (the output is still complete: a check of a
plugin can fail a script); 2 for a usage error, before the first line: ``--reward`` cannot be loaded,
``INPUT`` cannot be read, ``--output`` cannot be written, ``--workers``, ``--timeout`` or ``--memory-mb`` out of range.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, redirect_stdout
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from rewards.batch import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT, BatchSummary, default_workers, iter_scores
from rewards.registry import RewardError, import_from_working_directory, list_rewards


def main(argv: list[str]) -> int:
    doc = __doc__.replace("``", "")  # plain text in --help
    parser = argparse.ArgumentParser(prog="openvlt rewards", description=doc.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="score a JSONL file of responses", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    score.add_argument("input", help="JSONL file ('-' for stdin)")
    score.add_argument("--reward", required=True, help="plugin name, file.py:function, or e.g. 0.9*math+0.1*format")
    score.add_argument("--workers", type=int, default=default_workers(),
                       help="worker processes (0: in this process, no hard time limit)")
    score.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="hard limit per item, seconds")
    score.add_argument("--output", help="write results here instead of stdout")
    score.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB,
                       help="address space each worker may take beyond its start, MiB (more for a plugin that loads a model)")
    commands.add_parser("list", help="list the registered reward plugins")
    args = parser.parse_args(argv)
    import_from_working_directory()  # `--reward my_rewards:exact` next to my_rewards.py
    if args.command == "list":
        for name, summary in list_rewards().items():
            print(f"{name:<12} {summary.replace('``', '')}")
        return 0
    return _score(args)


def _score(args: argparse.Namespace) -> int:
    started = time.monotonic()
    summary = BatchSummary()
    if args.workers < 0:
        return _usage_error(f"--workers must be >= 0 (0: in this process), got {args.workers}")
    if not args.timeout > 0:
        return _usage_error(f"--timeout must be > 0 seconds, got {args.timeout}")
    if args.memory_mb < 1:
        return _usage_error(f"--memory-mb must be >= 1, got {args.memory_mb}")
    try:
        source = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")  # bytes: each line decoded on its own
    except OSError as exc:
        return _usage_error(f"cannot read {args.input}: {exc.strerror or exc}")
    own = _results_stream() if args.output is None else None
    try:
        sink = own or (sys.stdout if args.output is None else open(args.output, "w", encoding="utf-8"))
    except OSError as exc:
        source.close()
        return _usage_error(f"cannot write {args.output}: {exc.strerror or exc}")
    with source if source is not sys.stdin.buffer else nullcontext(), sink if sink is not sys.stdout else nullcontext():
        try:  # a plugin that prints (at import, or in-process with --workers 0) prints to stderr, not into the results
            with redirect_stdout(sys.stderr), _stdout_descriptor_to_stderr() if own else nullcontext():
                named = Path(args.input).stem if args.input != "-" else None  # (what a record file's rows get)
                for result in iter_scores(_items(source, named), args.reward, workers=args.workers, timeout=args.timeout,
                                          memory_mb=args.memory_mb):
                    sink.write(json.dumps(result.to_json()) + "\n")
                    summary = summary.add(result)
        except RewardError as exc:
            return _usage_error(str(exc))
        sink.flush()
    summary = replace(summary, seconds=time.monotonic() - started)
    print(f"openvlt rewards: {summary}", file=sys.stderr)
    return 1 if summary.errors or summary.timeouts else 0


def _results_stream() -> IO[str] | None:
    """A stream of its own on stdout's descriptor, for the results (so that descriptor 1 can point
    elsewhere while plugins run); None when stdout has no descriptor of its own (a test's capture)."""
    try:
        if sys.stdout.fileno() != 1:
            return None
        sys.stdout.flush()
        return os.fdopen(os.dup(1), "w", encoding="utf-8")
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return None


@contextmanager
def _stdout_descriptor_to_stderr() -> Iterator[None]:
    """While plugins run, descriptor 1 is stderr's: what a plugin's subprocess (or C code) writes to
    stdout does not land among the results."""
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _usage_error(message: str) -> int:
    print(f"openvlt rewards: {message}", file=sys.stderr)
    return 2


def _items(lines: IO[bytes], data_source: str | None = None) -> Iterator[dict[str, Any] | ValueError]:
    """Parse lines lazily; a broken line becomes a ValueError in its place (its output line is an error). A line
    with no `data_source` gets `data_source` (the input file's name, as a record file's rows do)."""
    for number, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield ValueError(f"line {number} is not UTF-8 text (byte {raw[exc.start]:#04x} at position {exc.start})")
            continue
        if not line.strip():
            yield ValueError(f"line {number} is blank")  # (an output line still, so that lines stay aligned)
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            yield ValueError(f"line {number} is not JSON: {exc}")
            continue
        if not isinstance(item, dict):
            yield ValueError(f"line {number} is not a JSON object")
            continue
        if isinstance(item.get("extra_info"), str):  # as record files store it
            try:
                item["extra_info"] = json.loads(item["extra_info"])
            except ValueError as exc:
                yield ValueError(f"line {number}: extra_info is a string that is not JSON ({exc})")
                continue
        if item.get("data_source") is None and data_source:
            item["data_source"] = data_source
        # an error names the line ("on item 1 (line 2)"; item numbers count from 0), and the line's own id
        yield {**item, "id": f"line {number}" + (f", id {item['id']}" if item.get("id") is not None else "")}
