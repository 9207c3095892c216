"""Reward worker processes with a hard per-item wall-clock limit, fed by one dispatcher thread.

Why processes, and why this shape:
1. A runaway item (a sympy blow-up, a regex that backtracks, a plugin that loops) can only be
   stopped for sure by killing the process that runs it: ``signal.alarm`` works only in a main
   thread and not inside C code holding the GIL, and a thread cannot be killed at all.
2. One dispatcher thread owns every worker, so callers may submit from any thread, a Ray actor or
   an event loop (through futures), and the limit never depends on which thread they are in.
3. Items go to a worker in chunks (up to :data:`MAX_CHUNK`) so that a pipe round trip is paid per
   chunk, not per item; the worker marks in shared memory which item it is on and since when, so
   the deadline is per item and a kill names the right item. The other items of a killed chunk
   are scored again by the next worker.
4. Workers are plain subprocesses (see :mod:`rewards._worker`), created once per pool, not per
   call (~0.3 s each, imports included; a killed worker is replaced as fast). Unlike
   ``multiprocessing`` start methods they never re-run the caller's main module and they can be
   started from daemonic processes.
5. Workers never outlive the owner: the pool closes them at exit, each worker watches for its
   owner's death, and on Linux the kernel kills them when the dispatcher thread that started
   them ends (``PR_SET_PDEATHSIG``), which is why only that thread starts workers.
"""
from __future__ import annotations

import atexit
import logging
import math
import mmap
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing import connection

from rewards import registry
from rewards._worker import PROGRESS, retires_after

logger = logging.getLogger(__name__)

MAX_CHUNK = 64
START_GRACE_S = 60.0  # a worker not ready by then (imports hung?) is killed
POLL_S = 0.05  # how soon to look again at a worker that has a chunk but has not started an item, or is loading
MAX_START_FAILURES = 3
_WORKER_MAIN = "import sys; from rewards._worker import main; main(sys.argv[1:])"

@dataclass
class Job:
    """One item on its way through the pool."""

    payload: tuple  # (spec, hints, response, ground_truth, extra_info, index, data_source), see rewards._worker
    timeout: float
    reward: str = ""  # the reward as the caller named it (payload[0] has file paths made absolute)
    label: str = ""  # the caller's id for the item (named in messages next to the index)
    future: Future = field(default_factory=Future)

    def finish(self, raw: tuple) -> None:
        """Deliver ``(status, score, components, error, seconds)``, as a worker reports it."""
        if not self.future.done():
            self.future.set_result(raw)

    def fail(self, status: str, why: str, seconds: float = 0.0) -> None:
        self.finish((status, math.nan, None, f"{self.describe()}{why}", seconds))

    def describe(self) -> str:
        return f"reward {self.reward or self.payload[0]!r} on item {self.payload[5]}"


@dataclass(eq=False)
class _Worker:
    process: subprocess.Popen
    conn: connection.Connection
    progress: mmap.mmap  # two doubles the worker writes: position in its chunk, start of that item
    jobs: list[Job] = field(default_factory=list)
    ready: bool = False  # it has imported everything and said so; only ready workers get items
    started_at: float = field(default_factory=time.monotonic)

    def kill(self) -> None:
        """SIGKILL the worker and every process it started (a plugin's subprocess that a timeout cuts off
        would live on, holding the caller's stderr): each worker leads its own process group."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):  # the group is gone already
            self.process.kill()

    def running(self) -> tuple[int, float]:
        """(position, start) of the item being scored, read consistently; start 0.0 when none."""
        for _ in range(5):
            _, start = PROGRESS.unpack_from(self.progress)
            position, again = PROGRESS.unpack_from(self.progress)
            if start == again:
                return int(position), start
        return 0, 0.0


class WorkerPool:
    """``size`` worker processes and the thread that feeds them. Thread-safe; reusable across calls."""

    def __init__(self, size: int, *, memory_mb: int | None = 2048) -> None:
        if size < 1:
            raise ValueError(f"a worker pool needs at least one worker, got {size}")
        self.size, self.memory_mb = size, memory_mb
        self._owner = os.getpid()
        self._lock = threading.Lock()
        self._queue: deque[Job] = deque()
        self._workers: list[_Worker] = []
        self._thread: threading.Thread | None = None
        self._closing = False
        self._broken: str | None = None
        self._start_failures = 0
        self._unloadable: dict[str, str] = {}  # plugin spec -> why a worker could not load it (crash, hang)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        _live_pools.add(self)

    def submit(self, jobs: list[Job]) -> None:
        """Queue ``jobs``; each job's future receives its raw result (never an exception)."""
        if os.getpid() != self._owner:
            raise RuntimeError("this reward worker pool belongs to another process (it was forked); make a new one")
        with self._lock:
            refused = self._broken or ("the reward scorer is closed" if self._closing else None)
            if refused is None:
                self._start()
                self._queue.extend(jobs)
        if refused is not None:
            for job in jobs:
                job.fail("error", f": {refused}")
            return
        self._wake()

    def close(self) -> None:
        """Stop the workers; items not scored yet come back as errors. Idempotent."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            thread = self._thread
        self._wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        if thread is None:
            self._shutdown()

    @property
    def usable(self) -> bool:
        """Not closed, and owned by this process (a forked copy is not)."""
        return not self._closing and os.getpid() == self._owner

    # ---- the dispatcher thread ---------------------------------------------------------------

    def _start(self) -> None:
        """Start the dispatcher thread (which starts the workers, see the module docstring)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="openvlt-reward-dispatcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._closing:
                        break
                    self._assign()
                watched = list(self._workers)  # idle ones too: one that dies idle is dropped, and the next items start another
                waitables = [self._wake_r, *(w.conn for w in watched)]
                ready = set(connection.wait(waitables, timeout=self._seconds_to_deadline(watched)))
                if self._wake_r in ready:
                    _drain(self._wake_r)
                for w in watched:
                    if w.conn in ready:  # "ready", a chunk's results, or EOF because the worker died
                        self._collect(w)
                self._enforce_deadlines()
        except BaseException as exc:  # keep no caller waiting forever on a dead dispatcher
            logger.exception("reward dispatcher failed")
            self._broken = f"the reward dispatcher failed: {type(exc).__name__}: {exc}"
        finally:
            self._shutdown()

    def _assign(self) -> None:
        if self._broken:
            while self._queue:
                self._queue.popleft().fail("error", f": {self._broken}")
            return
        if self._unloadable and any(job.payload[0] in self._unloadable for job in self._queue):
            for job in [job for job in self._queue if job.payload[0] in self._unloadable]:  # not tried again per item
                self._queue.remove(job)
                job.fail("error", f": {self._unloadable[job.payload[0]]}")
        while self._queue and len(self._workers) < self.size:
            try:
                self._workers.append(self._spawn())
            except Exception as exc:
                self._broken = f"cannot start a reward worker: {type(exc).__name__}: {exc}"
                return self._assign()
        for worker in self._workers:
            if not self._queue:
                return
            if worker.ready and not worker.jobs:
                n = max(1, min(MAX_CHUNK, -(-len(self._queue) // (2 * self.size))))
                self._send(worker, [self._queue.popleft() for _ in range(min(n, len(self._queue)))])

    def _send(self, worker: _Worker, jobs: list[Job]) -> None:
        try:
            worker.conn.send([job.payload for job in jobs])
        except OSError:  # the worker is gone; its replacement (started on the next turn) takes the chunk
            self._queue.extendleft(reversed(jobs))
            self._retire(worker)
            self._wake()
            return
        except Exception:
            for job in reversed(jobs):  # nothing was written: find the items that cannot travel
                try:
                    pickle.dumps(job.payload)
                    self._queue.appendleft(job)
                except Exception as exc:
                    job.fail("error", f": item cannot be sent to a worker: {exc}")
            return
        worker.jobs = jobs

    def _collect(self, worker: _Worker) -> None:
        try:
            results = worker.conn.recv()
        except (EOFError, OSError):
            return self._died(worker)
        if results == "ready":
            worker.ready = True
            return
        jobs, worker.jobs = worker.jobs, []
        self._start_failures = 0
        for job, raw in zip(jobs, results):
            job.finish(raw)
        if retires_after(results):  # it ran out of memory and exits: the rest of its chunk go to its replacement
            self._retire(worker)
            with self._lock:
                self._queue.extendleft(reversed(jobs[len(results):]))

    def _died(self, worker: _Worker) -> None:
        try:
            code = worker.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            code = None
        position, start = worker.running()
        idle = worker.ready and not worker.jobs  # killed from outside (OOM killer, an operator): just dropped
        why = f" crashed its worker process{' while loading the plugin' if start < 0 else ''} (exit code {code})"
        if start < 0 and position < len(worker.jobs):  # a plugin whose import kills the process: fail its items
            self._unloadable[worker.jobs[position].payload[0]] = f"loading it{why}"
        self._take_back(worker, position if start != 0 else None, "error", why, abs(start))
        if idle:
            if code != 0:
                logger.warning("a reward worker died while idle (exit code %s); the next items start another", code)
        elif start == 0:
            self._start_failures += 1
            if self._start_failures >= MAX_START_FAILURES:
                self._broken = f"reward worker processes keep dying before scoring anything (exit code {code})"

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for worker in [w for w in self._workers if not w.ready and now - w.started_at > START_GRACE_S]:
            worker.kill()
            self._died(worker)
        for worker in [w for w in self._workers if w.jobs]:
            position, start = worker.running()
            if start < 0 and position < len(worker.jobs) and now + start > registry.LOAD_LIMIT_S:
                worker.kill()
                why = f" took more than {registry.LOAD_LIMIT_S:g} s to load (worker killed)"
                self._unloadable[worker.jobs[position].payload[0]] = why.strip()
                self._take_back(worker, position, "timeout", why, -start)
            elif start > 0 and position < len(worker.jobs) and now - start > worker.jobs[position].timeout:
                limit = worker.jobs[position].timeout
                worker.kill()
                self._take_back(worker, position, "timeout", f" timed out after {limit:g} s (worker killed)", start)

    def _take_back(self, worker: _Worker, culprit: int | None, status: str, why: str, start: float) -> None:
        """Retire ``worker``; its running item gets ``status``; its other items are queued again."""
        jobs, seconds = worker.jobs, time.monotonic() - start  # until the kill, not until the process is reaped
        worker.jobs = []
        self._retire(worker)
        if culprit is not None and culprit < len(jobs):
            jobs.pop(culprit).fail(status, why, seconds)
        with self._lock:
            self._queue.extendleft(reversed(jobs))

    def _spawn(self) -> _Worker:
        """Start one worker process (only ever called by the dispatcher thread)."""
        parent_sock, child_sock = socket.socketpair()
        with tempfile.TemporaryFile() as page:
            page.truncate(PROGRESS.size)
            progress = mmap.mmap(page.fileno(), PROGRESS.size)
            fds = (child_sock.fileno(), page.fileno())
            try:
                process = subprocess.Popen(
                    [sys.executable, "-c", _WORKER_MAIN, *map(str, fds), str(self.memory_mb or 0), str(self._owner)],
                    pass_fds=fds, stdin=subprocess.DEVNULL, stdout=_worker_stdout(), env=registry.child_env(),
                    start_new_session=True,
                )
            finally:
                child_sock.close()
        conn = connection.Connection(parent_sock.detach())
        conn.send(list(sys.path))
        return _Worker(process, conn, progress)

    def _retire(self, worker: _Worker) -> None:
        worker.kill()  # exited or not: what its plugin started goes with it
        try:
            worker.process.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            logger.warning("reward worker %d did not exit after SIGKILL", worker.process.pid)
        worker.conn.close()
        worker.progress.close()
        if worker in self._workers:
            self._workers.remove(worker)

    def _seconds_to_deadline(self, watched: list[_Worker]) -> float | None:
        now, deadlines = time.monotonic(), []
        for worker in watched:
            position, start = worker.running()
            if not worker.ready:
                deadlines.append(worker.started_at + START_GRACE_S)
            elif not worker.jobs:  # idle: only its death (EOF on its connection) wakes us
                continue
            elif start < 0:  # loading a plugin: no message says when its item starts, so look again soon
                deadlines.append(min(-start + registry.LOAD_LIMIT_S, now + POLL_S))
            elif start > 0 and position < len(worker.jobs):
                deadlines.append(start + worker.jobs[position].timeout)
            else:
                deadlines.append(now + POLL_S)
        return max(0.0, min(deadlines) - now) + 0.001 if deadlines else None

    def _shutdown(self) -> None:
        with self._lock:
            self._closing = True
            pending = list(self._queue)
            self._queue.clear()
        for worker in list(self._workers):
            pending.extend(worker.jobs)
            worker.jobs = []
            try:
                worker.conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + 1.0
        for worker in list(self._workers):
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            self._retire(worker)
        for job in pending:
            job.fail("error", f": {self._broken or 'the reward scorer was closed first'}")
        wake_fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
        for fd in wake_fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # already awake (pipe full) or shut down


def _worker_stdout() -> int:
    """Workers print to our stderr (never into a CLI's JSON on stdout), or nowhere."""
    try:
        return sys.__stderr__.fileno()  # type: ignore[union-attr]
    except (AttributeError, OSError, ValueError):
        return subprocess.DEVNULL


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, OSError):
        pass


_live_pools: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    try:
        for pool in list(_live_pools):
            pool.close()
    except KeyboardInterrupt:  # Ctrl-C again while a busy worker is given its second to stop: no traceback; the
        pass                   # workers die with this process (`die_with_owner`)
