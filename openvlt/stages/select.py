"""Verify + select: judge every trace with the problem's reward plugin, keep one good trace per problem.

OpenVLThinker, step 3. Problems without a correct trace are dropped and counted; the default
policy keeps the shortest correct trace. Optional reflection truncation cuts the reasoning at the
first "Wait," / "But wait" / ... while keeping the final answer (in OpenVLThinker's ablation this
lifted MathVista from 48.4 to 62.5); a cut is kept only if the judge still accepts it. A length
cap drops traces that are too long as SFT will see them, that is after their cut. The policy
chooses among the correct traces as the teacher wrote them. Every yield is counted: traces in,
correct, problems kept, dropped and why.

Every row says where its trace comes from: `selected_in` (the iteration label, e.g. "iter_1"),
`trace_source` (which teacher or model wrote it), `sample_index` (which of that iteration's traces
for the problem), that iteration's `verdicts` and `n_correct`, and the caption the reasoner read.

With `previous` (iterations 2+, `select.keep_previous`), a problem none of whose new traces is
accepted (none correct, none short enough, or none judged) keeps the row selected for it in the
previous iteration, lineage and all (its trace as that iteration cut it, or not), so the curriculum
does not shrink to the problems the model already solves, if this iteration would accept it too (its
reward judges it again, keeping it unless it says wrong, and its length cap applies; else
`previous_rejected`). Only a row for the same problem is kept: same id, question, answer and images
(two data files may both number their problems p0, p1, ...); a row whose id now names another problem
is counted as `previous_other_problem`.

A problem whose traces could not be judged at all (every one an error or a timeout of the reward
plugin) is not "wrong": it is quarantined to a side file with the reason, and counted.
"""
from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from openvlt.records import write_records
from openvlt.recipe import POLICIES, REFLECTION_MARKERS, RewardSettings
from openvlt.stages.common import count_failures, score_responses
from openvlt.files import atomic_write
from rewards.batch import nothing_judged

log = logging.getLogger(__name__)

# what a kept row brings from the iteration that selected it (verdicts there, not the failed ones here)
_LINEAGE = ("selected_in", "trace_source", "response", "sample_index", "verdicts", "n_correct", "caption", "caption_source")


def select_traces(
    traced: Sequence[dict[str, Any]],
    out_path: str | Path,
    *,
    policy: str = "shortest",
    truncate_reflections: bool = False,
    reflection_markers: Sequence[str] = REFLECTION_MARKERS,
    max_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    judge: RewardSettings = RewardSettings(),
    seed: int = 0,
    quarantine_path: str | Path | None = None,
    previous: Sequence[dict[str, Any]] | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """Write one SFT row per problem that has an acceptable trace; return the yields."""
    if policy not in POLICIES:
        raise ValueError(f"select.policy must be one of {POLICIES}, got {policy!r}")
    count_tokens = count_tokens or (lambda text: len(text.split()))
    verdicts = score_responses(traced, [p["traces"] for p in traced], judge)
    where = f"select ({label})" if label else "select"
    if not any(r.ok for rs in verdicts for r in rs) and any(verdicts):
        raise ValueError(nothing_judged(where, "traces", [r for rs in verdicts for r in rs]))

    cuts, cut_verdicts = _cut_reflections(traced, verdicts, reflection_markers, judge) if truncate_reflections else ({}, [])
    earlier = {row["id"]: row for row in previous or []}
    rows, quarantined = [], []
    yields = {"no_correct": 0, "too_long": 0, "truncated": 0, "truncation_rejected": 0}
    correct = [[j for j, r in enumerate(results) if judge.is_correct(r)] for results in verdicts]
    written = [{j: cuts.get((i, j)) or problem["traces"][j] for j in correct[i]}  # the trace SFT trains on: cut if accepted
               for i, problem in enumerate(traced)]
    fitting = [[j for j in correct[i] if max_tokens is None or count_tokens(written[i][j]) <= max_tokens]
               for i in range(len(traced))]
    fallback, rejudged, other_problem, rejected = _previous_rows(traced, fitting, earlier, judge, max_tokens, count_tokens)
    if previous is not None:
        yields |= {"kept_previous": 0, "previous_other_problem": other_problem, "previous_rejected": rejected}
    too_long: list[Any] = []
    for i, (problem, results) in enumerate(zip(traced, verdicts)):
        record = {**{k: v for k, v in problem.items() if k != "traces"}, "verdicts": [r.score if r.ok else None for r in results]}
        if fitting[i]:
            chosen = _choose(fitting[i], problem["traces"], policy, random.Random(f"{seed}/{problem['id']}"))
            rows.append({**record, "response": written[i][chosen], "sample_index": chosen, "n_correct": len(correct[i]),
                         "selected_in": label})
            if (i, chosen) in cuts:
                yields["truncated" if cuts[i, chosen] else "truncation_rejected"] += 1
            continue
        kept = fallback.get(i)
        if kept is not None:  # wrong, too long or unjudged this time: the verified trace of last time stays
            yields["kept_previous"] += 1
            rows.append({**record, **{key: kept.get(key) for key in _LINEAGE}})
        elif results and all(not r.ok for r in results):
            quarantined.append({"id": problem["id"], "reason": f"reward {results[0].reward!r} could not judge any trace: "
                                f"{results[0].status}: {results[0].error}"})
        elif correct[i]:
            yields["too_long"] += 1
            too_long.append(problem["id"])
        else:
            yields["no_correct"] += 1
    if too_long:
        log.warning("%s: %d problem(s) whose correct traces are all over select.max_tokens (%d) were dropped, e.g. %s",
                    where, len(too_long), max_tokens, ", ".join(map(str, too_long[:5])))
    if yields.get("previous_other_problem"):
        log.warning("select: %d problem(s) share an id with another problem of the previous iteration (other question, "
                    "answer or images); their earlier traces were not kept", yields["previous_other_problem"])
    write_records(rows, out_path)
    target = Path(quarantine_path or Path(out_path).with_name(Path(out_path).stem + ".quarantine.jsonl"))
    if quarantined:
        atomic_write(target, "".join(json.dumps(q) + "\n" for q in quarantined))
    else:  # a --redo that judged everything: the last attempt's list is no longer true
        target.unlink(missing_ok=True)
    if not rows:  # stop here, not in SFT: a failed select is what the same command runs again once the cause is fixed
        raise ValueError(f"{where}: none of the {len(traced)} problems has an acceptable trace "
                         f"({yields['no_correct']} with no correct trace, {yields['too_long']} whose correct traces are all over "
                         f"select.max_tokens, {len(quarantined)} unjudged" + (f", listed in {target}" if quarantined else "")
                         + "); fix the cause and run the same command again")

    traces = sum(len(r) for r in verdicts)
    correct_traces = sum(judge.is_correct(r) for rs in verdicts for r in rs)
    return {
        "in": len(traced), "out": len(rows), "traces": traces, "correct_traces": correct_traces,
        "trace_yield": correct_traces / max(traces, 1), "problem_yield": len(rows) / max(len(traced), 1),
        **yields, "quarantined": len(quarantined), **count_failures([*verdicts, *cut_verdicts, rejudged]),
    }


def _previous_rows(traced: Sequence[dict[str, Any]], fitting: list[list[int]], earlier: dict[Any, dict[str, Any]],
                   judge: RewardSettings, max_tokens: int | None, count_tokens: Callable[[str], int],
                   ) -> tuple[dict[int, dict[str, Any]], list, int, int]:
    """The previous iteration's row for each problem with no acceptable new trace, where there is one for the
    same problem that this iteration would accept too: not judged wrong by this iteration's reward (a stricter
    `correct_at`, another plugin; a reward that fails on it leaves the earlier verdict standing, as it does
    for a problem none of whose new traces is judged) and within its length cap. Also returned: the verdicts,
    the rows whose id now names another problem, and those this iteration would not accept."""
    candidates, other_problem = {}, 0
    for i, problem in enumerate(traced):
        kept = None if fitting[i] else earlier.get(problem["id"])
        if kept is not None and not _same_problem(problem, kept):  # the id reused by another data file
            other_problem += 1
        elif kept is not None:
            candidates[i] = kept
    if not candidates:
        return {}, [], other_problem, 0
    results = score_responses([traced[i] for i in candidates], [[kept["response"]] for kept in candidates.values()], judge)
    accepted = {i: kept for (i, kept), (result,) in zip(candidates.items(), results)
                if (judge.is_correct(result) or not result.ok)
                and (max_tokens is None or count_tokens(kept["response"]) <= max_tokens)}
    return accepted, [r for rs in results for r in rs], other_problem, len(candidates) - len(accepted)


def truncate_at_reflection(trace: str, markers: Sequence[str]) -> str | None:
    """The trace cut at the first reflection marker inside its reasoning, final answer kept;
    None if there is nothing to cut.

    The final answer is what follows `</think>`, else the `<answer>` block, else the last line
    holding a `\\boxed{}` (from the `\\[` or `$$` that opens it, if it is displayed over several lines).
    A marker counts where a sentence starts (after `.`, `!`, `?` or a line break): "Wait " inside a quote or
    "But Wait," is not a reflection. Markers that open the reasoning (`<think>Hmm, Wait, ...`) are how
    R1-style reasoners start, not reflections: cutting there would leave no reasoning at all.

    >>> truncate_at_reflection("<think>2 + 2 = 4. Wait, check: 4.</think> <answer>4</answer>", ["Wait,"])
    '<think>2 + 2 = 4.</think> <answer>4</answer>'
    """
    end, answer_at, boxed = trace.find("</think>"), trace.rfind("<answer>"), trace.rfind("\\boxed")
    if end != -1:
        reasoning_end, final = end, trace[end:]
    elif answer_at != -1:
        reasoning_end, final = answer_at, " " + trace[answer_at:]
    elif boxed != -1:
        reasoning_end = _display_opener(trace, trace.rfind("\n", 0, boxed) + 1)  # the answer's line
        final = "\n" + trace[reasoning_end:]
    else:
        return None  # no final answer to keep
    opened = trace.find("<think>", 0, reasoning_end)
    start = _after_opening_markers(trace, 0 if opened == -1 else opened + len("<think>"), markers)
    cuts = []
    for marker in markers:
        at = trace.find(marker, start, reasoning_end)
        while at != -1 and not (trace[start:at].strip() and _starts_sentence(trace, at)):
            at = trace.find(marker, at + 1, reasoning_end)
        if at != -1:
            cuts.append(at)
    if not cuts:
        return None
    return trace[: min(cuts)].rstrip() + final


def _display_opener(trace: str, line: int) -> int:
    """Where the final answer starts when its `\\boxed` line, at `line`, sits in display math opened on an
    earlier line (`\\[` ... `\\]`, `$$` ... `$$`): at the opener, so the kept answer has both delimiters."""
    before = trace[:line]
    openers = [m.start() for m in _DISPLAY_OPEN_RE.finditer(before)]  # (not a line break's spacing, \\[2pt])
    if len(openers) > len(_DISPLAY_CLOSE_RE.findall(before)):
        return openers[-1]
    if before.count("$$") % 2:
        return before.rfind("$$")
    return line


_DISPLAY_OPEN_RE, _DISPLAY_CLOSE_RE = re.compile(r"(?<!\\)\\\["), re.compile(r"(?<!\\)\\\]")


def _after_opening_markers(trace: str, start: int, markers: Sequence[str]) -> int:
    """Past the markers (and spaces) the reasoning opens with, however many."""
    while True:
        at = len(trace) - len(trace[start:].lstrip())
        marker = next((m for m in markers if m.strip() and trace.startswith(m, at)), None)
        if marker is None:
            return start
        start = at + len(marker)


def _starts_sentence(trace: str, at: int) -> bool:
    """After a line break, or after a space that follows `.`, `!` or `?` (a closing quote or bracket between)."""
    before = trace[:at]
    stripped = before.rstrip(" \t")
    return before.endswith("\n") or stripped != before and (
        stripped.endswith("\n") or stripped.rstrip("\"')]").endswith((".", "!", "?")))


def _same_problem(problem: dict[str, Any], earlier: dict[str, Any]) -> bool:
    return all(problem.get(key) == earlier.get(key) for key in ("question", "answer", "images"))


def _choose(candidates: list[int], traces: Sequence[str], policy: str, rng: random.Random) -> int:
    if policy == "shortest":
        return min(candidates, key=lambda j: (len(traces[j]), j))
    if policy == "longest":
        return max(candidates, key=lambda j: (len(traces[j]), -j))
    if policy == "random":
        return rng.choice(candidates)
    return candidates[0]


def _cut_reflections(traced, verdicts, markers, judge) -> tuple[dict[tuple[int, int], str | None], list]:
    """Every correct trace that has a reflection to cut, cut and judged again: {(problem, trace): the cut
    if it is still judged correct, else None}, and the verdicts. A cut can leave a retracted slip standing
    ("2 + 2 = 5. Wait, ..."): the answer is kept, so only the judge can tell."""
    cut = {(i, j): truncate_at_reflection(trace, markers)
           for i, (problem, results) in enumerate(zip(traced, verdicts))
           for j, (trace, result) in enumerate(zip(problem["traces"], results)) if judge.is_correct(result)}
    cut = {key: text for key, text in cut.items() if text is not None}
    if not cut:
        return {}, []
    cut_verdicts = score_responses([traced[i] for i, _ in cut], [[text] for text in cut.values()], judge)
    return {key: text if judge.is_correct(result) else None for (key, text), (result,) in zip(cut.items(), cut_verdicts)}, cut_verdicts
