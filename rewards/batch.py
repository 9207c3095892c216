"""Score many items with a reward plugin: input order kept, hard per-item time limit, no silent zeros.

    from rewards import score_batch
    results = score_batch(items, reward="math", workers=2, timeout=5.0)
    results.summary           # items, ok, errors, timeouts, seconds, items/s, mean score
    results.scores(fill=0.0)  # floats; a failed item is NaN unless you choose a fill value
    for r in results: r.index, r.status, r.score, r.components, r.error

An item is a dict ``{"response", "ground_truth", "extra_info" (optional), "reward" (optional),
"id" (optional)}``; its ``reward`` (or ``extra_info["reward"]``) overrides the batch's, so rows of
several data sets can share a batch, and its ``id`` (say, the problem's) is named next to its index
in a failure's message. A reader may put an exception in place of an item it could not read: that
item's result is an error with the exception's message, and the order is kept.

A failed item has ``status`` "error" or "timeout", ``score`` NaN and an ``error`` naming the plugin
and the item (index and ``id``): it is counted, never turned into 0.

The work runs in a :class:`RewardScorer`, a reusable pool of worker processes (see
:mod:`rewards.pool`). :func:`score_batch` and :func:`iter_scores` share one per (workers,
memory) setting, so worker start-up is paid once per process, not per call. ``workers=0`` scores
in the calling process with no hard time limit (math-verify's own alarm still applies in a main
thread): for debugging and for places that cannot have child processes.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from rewards.pool import Job, WorkerPool
from rewards.registry import RewardError, canonical_spec, check_reward, get_reward, import_hints

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
DEFAULT_MEMORY_MB = 2048
SUBMIT_BLOCK = 512  # items handed to the pool at once
STREAM_WINDOW = 4096  # items in flight while streaming
_LOGGED_FAILURES = 5


@dataclass(frozen=True)
class ScoreResult:
    """The verdict on one item. ``score`` is NaN unless ``status == "ok"``."""

    index: int
    status: str  # "ok" | "error" | "timeout"
    score: float
    components: Mapping[str, float] | None = None
    error: str | None = None
    reward: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        """``{"score": float | {score, components…} | None, "error": str | None}`` (the CLI's line)."""
        if not self.ok:
            return {"score": None, "error": self.error}
        score = self.score if self.components is None else {"score": self.score, **self.components}
        return {"score": score, "error": None}


def nothing_judged(where: str, what: str, results: Sequence[ScoreResult], also: str = "") -> str:
    """Why a stage stops when its reward judged none of its `results` (a plugin that raises or hangs on
    everything): what it would go on to write (an accuracy of 0, an empty SFT set, a GRPO model trained on
    nothing) would look like the model's doing. `also`: more of what the way on depends on."""
    timeouts = sum(r.status == "timeout" for r in results)
    return (f"{where}: none of its {len(results)} {what} could be judged ({len(results) - timeouts} reward errors, "
            f"{timeouts} timeouts; first: {results[0].error}). Fix the plugin and run the same command again (it names "
            f"the completed stages that judged with the old plugin, to run again with --redo or keep with --force{also})")


@dataclass(frozen=True)
class BatchSummary:
    """Counts over a batch; errors and timeouts are never included in ``mean_score``."""

    items: int = 0
    ok: int = 0
    errors: int = 0
    timeouts: int = 0
    seconds: float = 0.0
    score_sum: float = 0.0

    @property
    def mean_score(self) -> float:
        return self.score_sum / self.ok if self.ok else math.nan

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else math.nan

    def add(self, result: ScoreResult) -> BatchSummary:
        return BatchSummary(
            self.items + 1, self.ok + result.ok, self.errors + (result.status == "error"),
            self.timeouts + (result.status == "timeout"), self.seconds,
            self.score_sum + (result.score if result.ok else 0.0),
        )

    def __str__(self) -> str:
        return (f"items={self.items} ok={self.ok} errors={self.errors} timeouts={self.timeouts} "
                f"mean_score={self.mean_score:.4f} seconds={self.seconds:.2f} items/s={self.items_per_s:.1f}")


class BatchResults(Sequence[ScoreResult]):
    """The results of :func:`score_batch`, in input order, with their :class:`BatchSummary`."""

    def __init__(self, results: list[ScoreResult], summary: BatchSummary) -> None:
        self._results, self.summary = results, summary

    def __getitem__(self, index):  # type: ignore[override]
        return self._results[index]

    def __len__(self) -> int:
        return len(self._results)

    def __repr__(self) -> str:
        return f"BatchResults({self.summary})"

    def scores(self, *, fill: float | None = None) -> list[float]:
        """Every item's score; a failed item is NaN, or ``fill`` when you pass one explicitly."""
        return [r.score if r.ok or fill is None else fill for r in self._results]

    @property
    def failures(self) -> list[ScoreResult]:
        return [r for r in self._results if not r.ok]


class RewardScorer:
    """A reusable pool of reward worker processes. Thread-safe; use as a context manager.

    >>> with RewardScorer(workers=1) as scorer:
    ...     scorer.score([{"response": "<answer>3</answer>", "ground_truth": "3"}]).summary.ok
    1
    """

    def __init__(self, workers: int | None = None, *, memory_mb: int | None = DEFAULT_MEMORY_MB) -> None:
        self.workers = default_workers() if workers is None else int(workers)
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.memory_mb = memory_mb
        self._pool: WorkerPool | None = None
        self._pool_lock = threading.Lock()

    def score(self, items: Iterable[Mapping[str, Any]], reward: str = "math", *,
              timeout: float = DEFAULT_TIMEOUT, log_failures: bool = True) -> BatchResults:
        """Score every item; results in input order with a :class:`BatchSummary`."""
        started = time.monotonic()
        summary, results = BatchSummary(), []
        for result in self.iter_scores(items, reward, timeout=timeout, window=sys.maxsize,
                                       log_failures=log_failures):
            results.append(result)
            summary = summary.add(result)
        return BatchResults(results, replace(summary, seconds=time.monotonic() - started))

    def iter_scores(self, items: Iterable[Mapping[str, Any]], reward: str = "math", *,
                    timeout: float = DEFAULT_TIMEOUT, window: int = STREAM_WINDOW,
                    log_failures: bool = True) -> Iterator[ScoreResult]:
        """Yield results in input order while reading ``items`` lazily (at most ``window`` in flight).
        The first few failures are logged unless ``log_failures`` is off (for a caller that logs its own)."""
        if not (isinstance(timeout, (int, float)) and 0 < timeout < math.inf):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        specs = _Specs(reward, in_process=self.workers == 0, memory_mb=self.memory_mb)
        results = self._stream(items, specs, float(timeout), max(1, window))
        return _logged(results) if log_failures else results

    def _stream(self, items: Iterable[Mapping[str, Any]], specs: _Specs, timeout: float,
                window: int) -> Iterator[ScoreResult]:
        pending: deque[Job | ScoreResult] = deque()
        block: list[Job] = []
        for index, item in enumerate(items):
            entry = specs.job(index, item, timeout)
            pending.append(entry)
            if isinstance(entry, Job):
                block.append(entry)
            if len(block) >= SUBMIT_BLOCK or len(pending) >= window:
                self._submit(block)
                block = []
            while len(pending) >= window:
                yield self._result(pending.popleft())
        self._submit(block)
        while pending:
            yield self._result(pending.popleft())

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def __enter__(self) -> RewardScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _submit(self, jobs: list[Job]) -> None:
        if jobs and self.workers > 0:
            self._live_pool().submit(jobs)

    def _live_pool(self) -> WorkerPool:
        with self._pool_lock:
            if self._pool is None or not self._pool.usable:
                self._pool = WorkerPool(self.workers, memory_mb=self.memory_mb)
            return self._pool

    def _result(self, entry: Job | ScoreResult) -> ScoreResult:
        if isinstance(entry, ScoreResult):
            return entry
        if self.workers == 0:
            from rewards._worker import score_job

            entry.finish(score_job(*entry.payload))
        status, score, components, error, seconds = entry.future.result()
        return ScoreResult(entry.payload[5], status, score, components, _with_id(error, entry.payload[5], entry.label),
                           entry.reward, seconds)


def score_batch(items: Iterable[Mapping[str, Any]], reward: str = "math", *, workers: int | None = None,
                timeout: float = DEFAULT_TIMEOUT, memory_mb: int | None = DEFAULT_MEMORY_MB) -> BatchResults:
    """Score ``items`` with ``reward`` in the shared worker pool; see the module docstring."""
    return shared_scorer(workers, memory_mb=memory_mb).score(items, reward, timeout=timeout)


def iter_scores(items: Iterable[Mapping[str, Any]], reward: str = "math", *, workers: int | None = None,
                timeout: float = DEFAULT_TIMEOUT, memory_mb: int | None = DEFAULT_MEMORY_MB,
                window: int = STREAM_WINDOW) -> Iterator[ScoreResult]:
    """Like :func:`score_batch` for inputs too large for memory: results stream out in input order."""
    return shared_scorer(workers, memory_mb=memory_mb).iter_scores(items, reward, timeout=timeout, window=window)


def shared_scorer(workers: int | None = None, *, memory_mb: int | None = DEFAULT_MEMORY_MB) -> RewardScorer:
    """The process-wide :class:`RewardScorer` for these settings (created on first use, closed at exit)."""
    key = (os.getpid(), default_workers() if workers is None else int(workers), memory_mb)
    with _shared_lock:
        scorer = _shared.get(key)
        if scorer is None:
            scorer = _shared[key] = RewardScorer(key[1], memory_mb=memory_mb)
        return scorer


def default_workers() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


_shared: dict[tuple[int, int, int | None], RewardScorer] = {}
_shared_lock = threading.Lock()


class _Specs:
    """Turns items into jobs: validates each distinct reward spec once (`check_reward`: a plugin's own
    code is loaded in a bounded child process, not here, unless the scoring is in-process anyway)."""

    def __init__(self, default: str, in_process: bool = False, memory_mb: int | None = None) -> None:
        self.default, self.in_process = default, in_process  # in this process: nothing to import elsewhere
        self.memory_mb = memory_mb  # the workers': the load check applies it too
        self._known: dict[str, tuple[str, tuple[str, ...]] | RewardError] = {}
        resolved = self._resolve(default)
        if isinstance(resolved, RewardError):
            raise resolved

    def job(self, index: int, item: Mapping[str, Any], timeout: float) -> Job | ScoreResult:
        spec = _reward_of(item, self.default)
        problem = _item_problem(item)
        if problem is None and not isinstance(spec, str):
            problem = f"'reward' must be a string, got {spec!r}"
        resolved = self._resolve(spec) if problem is None else None
        if isinstance(resolved, RewardError):
            problem = str(resolved)
        label = _item_id(item)
        if problem is not None or resolved is None:
            return ScoreResult(index, "error", math.nan, error=_with_id(f"reward {spec!r} on item {index}: {problem}", index, label),
                               reward=str(spec))
        wire_spec, hints = resolved
        truth = item["ground_truth"]
        payload = (wire_spec, hints, item["response"], truth if isinstance(truth, str) else str(truth),
                   dict(item.get("extra_info") or {}), index, item.get("data_source") or "")
        return Job(payload, timeout, reward=spec, label=label)

    def _resolve(self, spec: str) -> tuple[str, tuple[str, ...]] | RewardError:
        if spec not in self._known:
            try:
                if self.in_process:
                    get_reward(spec)
                else:  # the plugin's code runs in the workers (and in a bounded check), never here
                    check_reward(spec, self.memory_mb)
                self._known[spec] = (canonical_spec(spec), () if self.in_process else import_hints(spec))
            except RewardError as exc:
                self._known[spec] = exc
        return self._known[spec]


def _reward_of(item: object, default: str) -> object:
    """The item's own reward (``reward``, else ``extra_info["reward"]``), else the batch's."""
    if not isinstance(item, Mapping):
        return default
    extra = item.get("extra_info")
    return item.get("reward") or (extra.get("reward") if isinstance(extra, Mapping) else None) or default


def _item_id(item: object) -> str:
    """The caller's name for an item (its ``id``), or "" when it has none."""
    value = item.get("id") if isinstance(item, Mapping) else None
    return "" if value is None else str(value)


def _with_id(error: str | None, index: int, label: str) -> str | None:
    """``... on item 8: ...`` -> ``... on item 8 (LABEL): ...``: a failure names the caller's item, not
    only its place in this batch (workers, which build most messages, see the index alone)."""
    if not error or not label:
        return error
    return error.replace(f"on item {index}", f"on item {index} ({label})", 1)


def _item_problem(item: object) -> str | None:
    if isinstance(item, Exception):  # a reader's stand-in for an item it could not read
        return str(item)
    if not isinstance(item, Mapping):
        return f"an item is a dict with 'response' and 'ground_truth', got {type(item).__name__}"
    if not isinstance(item.get("response"), str):
        return f"'response' must be a string, got {type(item.get('response')).__name__}"
    truth = item.get("ground_truth")
    if not isinstance(truth, (str, int, float)) or isinstance(truth, bool):
        return f"'ground_truth' must be a string (or a number), got {type(truth).__name__}"
    if item.get("extra_info") is not None and not isinstance(item["extra_info"], Mapping):
        return f"'extra_info' must be a dict, got {type(item['extra_info']).__name__}"
    if item.get("data_source") is not None and not isinstance(item["data_source"], str):
        return f"'data_source' must be a string, got {type(item['data_source']).__name__}"
    return None


def _logged(results: Iterator[ScoreResult]) -> Iterator[ScoreResult]:
    """Pass results through, logging the first few failures and how many there were."""
    failures = 0
    for result in results:
        if not result.ok:
            failures += 1
            if failures <= _LOGGED_FAILURES:
                logger.warning("%s", result.error)
        yield result
    if failures > _LOGGED_FAILURES:
        logger.warning("%d items failed in this batch (first %d logged above)", failures, _LOGGED_FAILURES)
