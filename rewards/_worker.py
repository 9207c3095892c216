"""The worker process of the batch scorer: score chunks of items, report progress, never outlive us.

Started by :mod:`rewards.pool` as ``python -c "...main(sys.argv[1:])" SOCKET_FD PROGRESS_FD
MEMORY_MB OWNER_PID``: a plain subprocess, so it never re-imports the caller's main module and can
be started from anywhere, daemonic processes included. Start-up, imports included, takes ~0.3 s.

Protocol over the socket (``multiprocessing.connection`` framing):
1. the parent sends its ``sys.path``; the worker answers ``"ready"`` once its imports are done;
2. the parent sends a list of jobs ``(spec, hints, response, ground_truth, extra_info, index, data_source)``;
   the worker answers a list of ``(status, score, components, error, seconds)`` in the same order
   (cut short after an item's MemoryError, when the worker then exits and the rest go to a fresh one);
3. ``None`` (or a closed socket) ends the worker.

While it works, the shared page ``PROGRESS_FD`` holds two doubles: the position of the running
job in its chunk and the ``time.monotonic()`` at which it started (0.0 between jobs; negated while
the job's plugin is being loaded, which the parent bounds by its own, longer limit: a plugin that
loads a tokenizer at import must not time out every item). The parent reads them to enforce a
per-item deadline and to know which item was running when it kills, without a message per item.
"""
from __future__ import annotations

import ctypes
import logging
import math
import mmap
import os
import re
import resource
import signal
import struct
import sys
import threading
import time
from multiprocessing import connection

from rewards.registry import RewardError, call_reward, get_reward, load_module

_PR_SET_PDEATHSIG = 1
PROGRESS = struct.Struct("dd")  # (position, start)


def main(argv: list[str]) -> None:
    """Worker entry point: warm up, then score chunks until told to stop or the socket closes."""
    sock_fd, progress_fd, memory_mb, owner_pid = (int(a) for a in argv)
    conn = connection.Connection(sock_fd)
    progress = mmap.mmap(progress_fd, PROGRESS.size)
    die_with_owner(owner_pid)
    warm_up()
    cap_memory(memory_mb)
    try:
        sys.path[:] = conn.recv()
        conn.send("ready")
    except (EOFError, OSError):
        return
    while True:
        try:
            jobs = conn.recv()
        except (EOFError, OSError):
            return
        if jobs is None:
            return
        results = []
        for position, job in enumerate(jobs):
            PROGRESS.pack_into(progress, 0, position, 0.0)  # never pair a new position with an old start
            if (job[0], job[1]) not in _loaded:
                PROGRESS.pack_into(progress, 0, position, -time.monotonic())
                failed = _load(job[0], job[1], job[5])
                if failed is not None:
                    results.append(failed)
                    continue
            PROGRESS.pack_into(progress, 0, position, time.monotonic())
            results.append(score_job(*job))
            if retires_after(results):
                break  # memory a plugin holds on to (a growing cache) would fail every later item
        PROGRESS.pack_into(progress, 0, 0, 0.0)
        conn.send(results)  # fewer than sent after a MemoryError: the pool gives the rest to a fresh worker
        if retires_after(results):
            return


def retires_after(results: list[tuple]) -> bool:
    """Whether a worker exits after sending these results: its last item ran out of memory."""
    return bool(results) and results[-1][0] == "error" and "MemoryError" in (results[-1][3] or "")


def warm_up() -> None:
    """Load the math stack and math-verify's grammar now, not inside the first item's time limit."""
    from math_verify import parse, verify

    get_reward("math")  # registers the built-ins
    verify(parse("$\\frac{x^2}{2}$", parsing_timeout=None), parse("$x^2/2$", parsing_timeout=None),
           timeout_seconds=None)


def score_job(spec: str, hints: tuple[str, ...], response: str, ground_truth: str, extra_info: dict,
              index: int, data_source: str = "") -> tuple:
    """One item -> ``(status, score, components, error, seconds)``; a failure is never a score."""
    started = time.perf_counter()
    try:  # (`hints` were imported by `_load`, before the item's clock started)
        score, components = call_reward(spec, response, ground_truth, extra_info, index=index, data_source=data_source)
        return "ok", score, components, None, time.perf_counter() - started
    except RewardError as exc:
        error = str(exc)
    except Exception as exc:
        error = f"reward {spec!r} on item {index}: {type(exc).__name__}: {exc}"
    return "error", math.nan, None, memory_named(error), time.perf_counter() - started


def memory_named(error: str) -> str:
    """A MemoryError's own text is empty: say which limit it met, and where to raise it."""
    if not _MEMORY_ERROR_RE.search(error) or not _memory_mb:  # (not CUDA's OutOfMemoryError)
        return error
    return (f"{error} (over the reward workers' memory limit, {_memory_mb} MiB beyond a worker's start: raise it with "
            "reward.memory_mb, or --memory-mb for `openvlt rewards score`)")


_memory_mb = 0  # the worker's limit (cap_memory sets it); 0: none, as in-process scoring has
_MEMORY_ERROR_RE = re.compile(r"(?<![A-Za-z])MemoryError")


def _load(spec: str, hints: tuple[str, ...], index: int) -> tuple | None:
    """Import and resolve a plugin before its first item's clock starts; an error result if it cannot be."""
    started = time.perf_counter()
    if (spec, hints) not in _load_failures:
        try:
            _import_hints(hints)
            get_reward(spec)
            _loaded.add((spec, hints))
            return None
        except Exception as exc:  # tried once per worker: a slow import that fails is not paid per item
            _load_failures[(spec, hints)] = str(exc) if isinstance(exc, RewardError) else f"{type(exc).__name__}: {exc}"
    error = memory_named(f"reward {spec!r} on item {index}: loading it failed: {_load_failures[(spec, hints)]}")
    return "error", math.nan, None, error, time.perf_counter() - started


_loaded: set[tuple[str, tuple[str, ...]]] = set()
_load_failures: dict[tuple[str, tuple[str, ...]], str] = {}


def _import_hints(hints: tuple[str, ...]) -> None:
    """Import the modules (or a script's file) that register the plugins a spec names, once."""
    for module in hints:
        if module not in _imported:
            load_module(module)
            _imported.add(module)


_imported: set[str] = set(sys.modules)


def die_with_owner(owner_pid: int) -> None:
    """Ignore Ctrl-C (the owner shuts us down) and never outlive the owner."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its timeout warnings; we report our own
    if sys.platform.startswith("linux"):
        try:  # SIGKILL when the thread that started us (the pool's dispatcher) ends
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
        if os.getppid() != owner_pid:  # the owner died before prctl took effect
            os._exit(0)
    threading.Thread(target=_watch_owner, args=(owner_pid,), daemon=True).start()


def cap_memory(memory_mb: int) -> None:
    """Allow ``memory_mb`` more address space than the warmed-up worker has (Linux)."""
    global _memory_mb
    _memory_mb = memory_mb
    if memory_mb and os.path.exists("/proc/self/statm"):  # elsewhere RLIMIT_AS is unreliable
        with open("/proc/self/statm") as statm:
            current = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = current + memory_mb * 2**20
        if hard == resource.RLIM_INFINITY or limit <= hard:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _watch_owner(owner_pid: int) -> None:
    while os.getppid() == owner_pid:
        time.sleep(1.0)
    os._exit(0)

