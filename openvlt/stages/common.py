"""Helpers the stages share: reading problem slices, filling prompt templates, resumable chunked
generation, and scoring with each problem's own reward plugin."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

from tqdm import tqdm

from openvlt.backends import Backend, GRPOConfig
from openvlt.engines import IMAGE_PLACEHOLDER, Engine, Request, RequestError, Sampling
from openvlt.faults import crashpoint
from openvlt.recipe import RewardSettings, check_prompt
from openvlt.records import read_records
from openvlt.files import atomic_write

log = logging.getLogger(__name__)


class NoProblems(ValueError):
    """A slice of a problem file with no usable row in it."""


def load_problems(
    path: str | Path, start: int = 0, stop: int | None = None, *, quarantine_path: str | Path | None = None,
    decode_images: bool = False, announce: bool = True, reward: str | None = None,
) -> list[dict[str, Any]]:
    """Rows [start, stop) of a validated problem-record file, as dicts (images as bytes).

    Bad rows raise `RecordError` naming file and rows; with `quarantine_path`, bad rows go there
    instead (with the reason) and the rest is used. `decode_images` for user data, `announce` to log
    the quarantine, `reward` for a file with no reward column (see read_records).
    """
    records = read_records(path, skip_bad_rows=quarantine_path is not None, quarantine_path=quarantine_path,
                           decode_images=decode_images, start=start, stop=stop, announce=announce, reward=reward)
    if len(records) == 0 and start == 0 and stop is None:
        return []  # an empty stage output (e.g. select kept nothing): the consumer says what that means
    if len(records) == 0:
        raise NoProblems(f"{path}: rows [{start}, {'end' if stop is None else stop}) select no problems "
                         f"(the file has {records.file_rows} rows)")
    if stop is not None and stop > records.file_rows:
        log.warning("%s: rows [%d, %d) asked for, but the file has %d rows: using [%d, %d)",
                    path, start, stop, records.file_rows, start, records.file_rows)
    return list(records)


def training_curve(out_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a trained model folder's metrics.jsonl, one per optimiser step."""
    return [json.loads(line) for line in Path(out_dir, "metrics.jsonl").read_text().splitlines()]


def saved_before(backend: Backend, out_dir: str | Path) -> bool:
    """Whether an attempt killed after its backend saved the model whole (before the workspace recorded
    the stage) left it in `out_dir`: it is taken, not trained again from scratch. (The workspace keeps a
    killed attempt's output only when it was made from the same recipe and inputs.)"""
    if not backend.saved(out_dir):
        return False
    log.info("%s: saved whole by the interrupted attempt; not trained again", out_dir)
    return True


def fill(template: str, **values: str) -> str:
    """`{name}` placeholders replaced literally (no str.format: prompts may hold LaTeX braces), all in
    one pass: a value is model output or data, and a `{question}` inside a caption stays as written."""
    if not values:
        return template
    placeholder = re.compile("|".join(re.escape("{" + name + "}") for name in values))
    return placeholder.sub(lambda m: values[m.group(0)[1:-1]], template)


def text_of(question: str) -> str:
    """The question without its image placeholders, for text-only models. Its lines stay as written (a
    table, options one per line, multi-line math): only a line holding a placeholder is tidied, and dropped
    if nothing else was on it."""
    lines = []
    for line in question.split("\n"):
        if IMAGE_PLACEHOLDER not in line:
            lines.append(line.rstrip())
        elif tidied := " ".join(line.replace(IMAGE_PLACEHOLDER, " ").split()):
            lines.append(tidied)
    return "\n".join(lines).strip()


def student_request(problem: dict[str, Any], template: str, system: str | None = None) -> Request:
    """What the student (or evaluator) is asked: the template around the question, images in place."""
    check_prompt("student", template)
    prompt = fill(template, question=problem["question"])
    if prompt.count(IMAGE_PLACEHOLDER) != len(problem["images"]):
        raise ValueError(f"problem {problem['id']!r}: the student prompt must keep the question's {IMAGE_PLACEHOLDER}s "
                         f"(got {prompt.count(IMAGE_PLACEHOLDER)} placeholders for {len(problem['images'])} images)")
    return Request(prompt, tuple(problem["images"]), system)


def generate_in_chunks(engine: Engine, requests: Sequence[Request], sampling: Sampling, scratch: Path, chunk_size: int,
                       point: str, desc: str, ids: Sequence[Any] | None = None) -> list[list[str]]:
    """Every request's answers, in one list: `generated_chunks`' chunks, joined."""
    chunks = generated_chunks(engine, requests, sampling, scratch, chunk_size, point, desc, ids)
    return [texts for chunk in chunks for texts in chunk]


def generated_chunks(
    engine: Engine,
    requests: Sequence[Request],
    sampling: Sampling,
    scratch: Path,
    chunk_size: int,
    point: str,
    desc: str,
    ids: Sequence[Any] | None = None,
) -> Iterator[list[list[str]]]:
    """`engine.generate` over chunks of requests, a chunk's answers at a time (a caller that has enough
    stops asking, and the chunks after it are never generated). Each finished chunk is saved in
    `scratch`, so a stage killed mid-way regenerates only the chunks it had not finished (none twice,
    none lost). Chunk c samples with seed `sampling.seed + c`, so output does not depend on where a crash
    hit. A saved chunk names its requests: one made for others (by an openvlt that chose the problems
    differently) is generated again rather than pair answers with the wrong problems. An engine's
    ValueError (bad input) names the problem (`ids`, one per request), or the chunk's first and last."""
    scratch.mkdir(parents=True, exist_ok=True)
    reused = generated = 0
    try:
        with tqdm(total=len(requests), desc=desc, unit="problem") as bar:
            for c, start in enumerate(range(0, len(requests), max(1, chunk_size))):
                path, chunk = scratch / f"chunk-{c:05d}.json", list(requests[start : start + chunk_size])
                texts = _saved_chunk(path, chunk, sampling.n)
                reused += texts is not None
                if texts is None:
                    chunk_sampling = dataclasses.replace(sampling, seed=sampling.seed + c)
                    try:
                        texts = engine.generate(chunk, chunk_sampling)
                    except ValueError as exc:
                        raise ValueError(f"{desc}: {exc} ({_which(exc, ids, start, len(chunk))})") from exc
                    if not _answers_each(texts, chunk, sampling.n):  # else a zip downstream drops or shifts rows
                        raise RuntimeError(f"{desc}: the engine {type(engine).__name__} returned {len(texts)} answer lists "
                                           f"for {len(chunk)} requests ({sampling.n} answers each asked)")
                    atomic_write(path, json.dumps({"requests": _digest(chunk), "texts": texts}))
                    crashpoint(f"{point}:chunk:{c}")
                    generated += 1
                bar.update(len(texts))
                yield texts
    finally:
        if reused:
            log.info("%s: %d of %d chunks were finished by an interrupted attempt and reused; %d generated now",
                     desc, reused, reused + generated, generated)


def _which(exc: ValueError, ids: Sequence[Any] | None, start: int, size: int) -> str:
    """The problem an engine's error is about (a RequestError knows its request), or the chunk's range."""
    if isinstance(exc, RequestError) and ids is not None and 0 <= exc.index < size:
        return f"problem {ids[start + exc.index]!r}"
    if ids is not None:
        return f"in the {size} problems from {ids[start]!r} to {ids[start + size - 1]!r}" if size > 1 else f"problem {ids[start]!r}"
    return f"requests {start} to {start + size - 1}"


def _saved_chunk(path: Path, requests: list[Request], n: int) -> list[list[str]] | None:
    """A finished chunk's answers, if it was made for these requests (a plain list, saved before chunks
    named their requests, is taken if it answers as many requests as many times)."""
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    if isinstance(saved, list) and _answers_each(saved, requests, n):
        return saved
    if isinstance(saved, dict) and saved["requests"] == _digest(requests) and _answers_each(saved["texts"], requests, n):
        return saved["texts"]
    log.warning("%s was made for other requests than this stage asks now; generating it again", path)
    return None


def _answers_each(texts: list[list[str]], requests: Sequence[Request], n: int) -> bool:
    return len(texts) == len(requests) and all(len(answers) == n for answers in texts)


def _digest(requests: Sequence[Request]) -> str:
    h = hashlib.sha256()
    for request in requests:
        h.update(json.dumps([request.prompt, request.system, [hashlib.sha256(image).hexdigest() for image in request.images]]).encode())
    return h.hexdigest()


def score_responses(
    problems: Sequence[dict[str, Any]], responses: Sequence[Sequence[str]], judge: RewardSettings
) -> list[list[Any]]:
    """Judge responses[i][j] to problems[i] with the problem's own reward plugin (or the override).

    Returns `ScoreResult`s shaped like `responses`. Errors and timeouts are results with
    `ok == False`, never a silent 0; callers count them.
    """
    from rewards import iter_scores

    items = [
        {"response": r, "ground_truth": p["answer"], "extra_info": p["extra_info"], "reward": judge.reward_of(p),
         "data_source": p.get("data_source"), "id": f"problem {p['id']}, answer {j}"}
        for p, rs in zip(problems, responses) for j, r in enumerate(rs)
    ]
    judged = iter_scores(items, workers=judge.workers, timeout=judge.timeout, memory_mb=judge.memory_mb)  # in order
    results = list(tqdm(judged, total=len(items), desc="judge", unit="trace", leave=False, disable=len(items) < 1000))
    shaped, k = [], 0
    for rs in responses:
        shaped.append(list(results[k : k + len(rs)]))
        k += len(rs)
    return shaped


def keep_within_length(
    items: Sequence[dict[str, Any]], model: str | Path, pixel_bounds: dict[str, int] | None, given: int | None, key: str,
    what: str, reserved: tuple[str, int] | None = None, ahead: bool = False,
) -> tuple[list[dict[str, Any]], int]:
    """The items (`prompt`, `images`, `system`, and `response` for SFT examples) of at most `given`
    tokens in `model`'s tokens, or, when `given` is None, of at most its context less the `reserved`
    (key, tokens) for an answer; and how many were longer. Those are left out with a warning that names
    the longest: cut, they would teach a truncated answer, and kept, they can run the device out of
    memory. None left is an error naming `key`. `ahead`: a check before the stage that leaves them out."""
    limit, setting = _length_limit(model, given, key, reserved)
    if limit is None:
        return list(items), 0
    lengths = _lengths_in_tokens(items, model, pixel_bounds)
    kept = [item for item, n in zip(items, lengths) if n <= limit]
    if len(kept) == len(items):
        return kept, 0
    longest = max(range(len(items)), key=lengths.__getitem__)
    if not kept:
        bound = "bound the images' size (roles.student.options.max_pixels), or " if any(i["images"] for i in items) else ""
        raise ValueError(f"every one of the {len(items)} {what} is longer than {setting} ({limit} tokens; the shortest "
                         f"has {min(lengths)}): {bound}{'raise' if setting == key else 'set'} {key}")
    log.warning("%d of %d %s are longer than %s (%d tokens) and %s left out; the longest, %r, has %d tokens",
                len(items) - len(kept), len(items), what, setting, limit, "will be" if ahead else "are",
                items[longest].get("id"), lengths[longest])
    return kept, len(items) - len(kept)


def problems_within_length(
    problems: Sequence[dict[str, Any]], model: str | Path, pixel_bounds: dict[str, int] | None, *, prompt: str,
    system: str | None, given: int | None, key: str, what: str, reserved: tuple[str, int] | None = None, ahead: bool = False,
) -> tuple[list[dict[str, Any]], int]:
    """The problems whose student prompt, image tokens included, is within the limit (as keep_within_length
    counts it), and how many are not."""
    items = [{"prompt": request.prompt, "images": request.images, "system": system, "id": p["id"], "problem": p}
             for p in problems for request in [student_request(p, prompt, system)]]
    kept, too_long = keep_within_length(items, model, pixel_bounds, given, key, what, reserved, ahead)
    return [item["problem"] for item in kept], too_long


def grpo_prompt_limit(config: GRPOConfig) -> dict[str, Any]:
    """problems_within_length's limit for GRPO's prompts (verl's data.max_prompt_length), which rl_data,
    GRPO and the run-start check share."""
    return {"given": config.max_prompt_length, "key": "grpo.max_prompt_length", "what": "RL problems",
            "reserved": ("grpo.max_tokens", config.max_tokens)}


def _length_limit(model: str | Path, given: int | None, key: str, reserved: tuple[str, int] | None) -> tuple[int | None, str]:
    """The limit and its name in messages (None when neither the recipe nor the model says one)."""
    if given is not None:
        return given, key
    from openvlt.models import context_length

    context = context_length(model)
    if context is None:
        return None, key
    if reserved is None:
        return context, "the student's context"
    name, tokens = reserved
    if context - tokens < 1:
        raise ValueError(f"{name} ({tokens}) leaves no room for a prompt in the student's context ({context} tokens): "
                         f"lower {name}, or set {key}")
    return context - tokens, f"the student's context less {name}"


def _lengths_in_tokens(items: Sequence[dict[str, Any]], model: str | Path, pixel_bounds: dict[str, int] | None) -> list[int]:
    from openvlt.models import load_processor
    from openvlt.models.batching import example_lengths, prompt_lengths

    processor = load_processor(model, **(pixel_bounds or {}))
    if any(i["images"] for i in items) and not hasattr(processor, "_get_num_multimodal_tokens"):
        log.warning("%s: its processor cannot count image tokens without encoding the images: lengths count the text only", model)
    prompts, images, systems = [i["prompt"] for i in items], [i["images"] for i in items], [i.get("system") for i in items]
    if items and "response" in items[0]:
        return example_lengths(processor, prompts, images, [i["response"] for i in items], systems)
    return prompt_lengths(processor, prompts, images, systems)


def mean_or_none(values: Sequence[float]) -> float | None:
    """The mean, or None for no values (nothing judged is no evidence, not a 0)."""
    return sum(values) / len(values) if values else None


def count_failures(results: Sequence[Sequence[Any]]) -> dict[str, int]:
    flat = [r for rs in results for r in rs]
    return {"reward_errors": sum(r.status == "error" for r in flat), "reward_timeouts": sum(r.status == "timeout" for r in flat)}
