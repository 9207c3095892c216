"""The toy world's reward: the right answer, reached without a false claim on the way.

`math` checks the final answer only, so a trace that misdescribes the grid, miscounts, or misquotes
the options but lands on the right answer passes it. Measured in the embedded default: 28 % of the
traces the iteration-1 student wrote for itself and `math` accepted were such lucky guesses, and
training iteration 2 on them gave a student that learned far less (held-out 0.16 to 0.43, against
0.72 from the teacher's traces for the same problems). This plugin checks every claim a trace
makes against the problem (the scene it was generated from, `extra_info["scene"]`, what the
question counts, `extra_info["targets"]`, and its options):

0. the counting passes are exactly the question's, in order, each introduced by what it counts
   ("Red circles: red circle? Row 1: ..."): the same iteration-1 student also wrote traces that
   skipped a pass whose count was 0, or announced "Red shapes" and then counted the blue ones;
1. each restated cell ("Row 2: red circle yes, empty cell no, ...") is what is there;
2. each cell of a pass has a yes/no mark, right for what that pass counts (the probe before it: "red
   circle?"): a cell left unmarked would let a row's count leave out a cell that matches;
3. each row's count "(2)" equals the row's yes marks, each pass lists every row once, in order, and its
   total ("1 + 0 + 2 = 3") adds up exactly those row counts;
4. the counts are combined as the question asks ("3 - 2 = 1" for "how many more", the two totals in
   order), and nothing else is computed after them;
5. every equation is arithmetically right, unless the trace retracts it right after it with the right
   value ("3 + 4 = 8. Wait, 3 + 4 is 7, not 8.");
6. each option check ("A 5 no, B 3 yes") quotes the real options and says yes exactly for the value.

Claims in other formats are not parsed, so a trace written differently is judged on its answer.
Registered as `toyworld` in the `openvlt.rewards` entry-point group (pyproject.toml), which is how
third-party plugins plug in.

>>> trace = ("<think>Red shapes: red? Row 1: red circle yes, empty cell no, blue square no (1). "
...          "Row 2: empty cell no, empty cell no, red square yes (1). Row 3: empty cell no, empty cell no, "
...          "empty cell no (0). 1 + 1 + 0 = 2.</think> <answer>2</answer>")
>>> scene = "red circle,-,blue square;-,-,red square;-,-,-"
>>> toyworld_reward(trace, "2", extra_info={"scene": scene})
{'score': 1.0, 'answer': 1.0, 'faithful': 1.0}
>>> toyworld_reward(trace.replace("1 + 1 + 0 = 2", "1 + 1 + 0 = 3"), "2", extra_info={"scene": scene})
{'score': 0.0, 'answer': 1.0, 'faithful': 0.0}
"""
from __future__ import annotations

import bisect
import re
from typing import Any, Mapping

from data_tools.toyworld.questions import describe
from data_tools.toyworld.scene import COLOURS, SHAPES, matches
from rewards.math_answer import math_reward

# Numbers are at most 9 digits, so int() of untrusted text stays cheap and never hits Python's digit limit.
# Bounded and anchored at word starts, so that a long garbled trace costs linear time, not quadratic:
# a row lists at most 8 cells of two words each
_ROW_RE = re.compile(r"Row (\d{1,9}): ([^()]{0,400}?)\s*\((\d{1,9})\)")
_PROBE_RE = re.compile(r"(?<![a-z])([a-z]{1,20}(?: [a-z]{1,20})?)\? Row")
# a pass opens the reasoning or a sentence ("<think>\n", no tag at all, a new line): intro: probe? Row
_PASS_RE = re.compile(r"(?:^|<think>|[.!?])\s*([A-Za-z][A-Za-z ,]{0,39}): ([a-z]{1,20}(?: [a-z]{1,20})?)\? Row")
_EQUATION_RE = re.compile(r"(?<![\d-])(\d{1,9}(?: [+-] \d{1,9})+) = (-?\d{1,9})(?!\d)")
_RETRACTION_RE = re.compile(r"Wait, (\d{1,9} [+-] \d{1,9}) is (-?\d{1,9}), not (-?\d{1,9})(?!\d)")
_COMBINE = {"sum": "+", "more_than": "-", "difference": "-"}  # question kinds that combine two counts
# "(A) 3 no" quotes option A as the question writes it; "A 3 no" (the teacher's older wording) is read the same.
_OPTION_RE = re.compile(r"(?:\(([A-D])\)|\b([A-D])) (-?\d{1,9}) (yes|no)\b")


def toyworld_reward(response: str, ground_truth: str, *, extra_info: Mapping[str, Any]) -> dict[str, float]:
    """1.0 when the answer is right and every claim on the way is true, else 0.0."""
    if "scene" not in extra_info:
        raise ValueError("the toyworld reward needs extra_info['scene'] (a toy-world problem record)")
    answer = math_reward(response, ground_truth, extra_info=extra_info)
    reasoning = response.split("</think>")[0]
    scene = [[None if c == "-" else tuple(c.split()) for c in row.split(",")] for row in extra_info["scene"].split(";")]
    faithful = (_passes_hold(reasoning, extra_info.get("targets"))
                and _grid_claims_hold(reasoning, scene, _COMBINE.get(extra_info["kind"]) if "kind" in extra_info else "+-")
                and _equations_hold(reasoning) and _options_hold(reasoning, extra_info.get("choices")))
    return {"score": answer * float(faithful), "answer": answer, "faithful": float(faithful)}


def _passes_hold(reasoning: str, targets: list[str] | None) -> bool:
    """One pass per target, in the question's order, each announced as what it counts."""
    if targets is None:  # records from before targets were kept: only the other claims are checked
        return True
    passes = _PASS_RE.findall(reasoning)
    if [probe for _, probe in passes] != list(targets) or len(_PROBE_RE.findall(reasoning)) != len(passes):
        return False
    return all(describe(_target(probe)) in intro.lower() for intro, probe in passes)  # "Red circles: red circle?"


def _target(probe: str) -> tuple[str | None, str | None]:
    """"red circle" -> ("red", "circle"), "red" -> ("red", None), "circle" -> (None, "circle"); a probe in
    other words -> a target no cell matches."""
    words = probe.split()
    colour = words[0] if words[0] in COLOURS else None
    shape = words[-1] if words[-1] in SHAPES else None
    return (colour, shape) if len(words) == (colour is not None) + (shape is not None) else ("?", "?")


def _grid_claims_hold(reasoning: str, scene: list[list[tuple[str, ...] | None]], combine: str | None) -> bool:
    """Rows and totals, in order: each pass lists rows 1..n and adds up their counts; an equation after
    counting combines the two totals with `combine` ("+" or "-"; "+-": either, for a record that does
    not say its question's kind; None: the question combines nothing)."""
    probes = list(_PROBE_RE.finditer(reasoning))  # once: the probe a row is counted for is the last before it
    probe_ends = [m.end() for m in probes]
    counts_since_total: list[int] = []
    rows_since_total: list[int] = []
    totals: list[int] = []
    combined = False  # two counts must be combined: an answer cannot come from them otherwise
    for item in sorted([*_ROW_RE.finditer(reasoning), *_EQUATION_RE.finditer(reasoning)], key=lambda m: m.start()):
        if item.re is _EQUATION_RE:
            tokens = item[1].split()
            if counts_since_total:  # a pass's total adds up the row counts just listed, of every row
                if "-" in tokens[1::2] or [int(t) for t in tokens[::2]] != counts_since_total:
                    return False
                if rows_since_total != list(range(1, len(scene) + 1)):
                    return False
                totals.append(int(item[2]))
                counts_since_total, rows_since_total = [], []
            elif totals:  # after counting: combines the two counts as the question asks, or is not there
                if combine is None or len(totals) != 2 or tokens[::2] != [str(t) for t in totals] or tokens[1] not in combine:
                    return False
                combined = True
            continue
        r, listed, count = int(item[1]) - 1, item[2], int(item[3])
        cells = [c.split() for c in listed.split(",")]
        if not 0 <= r < len(scene) or len(cells) != len(scene[r]):
            return False
        before = bisect.bisect_right(probe_ends, item.start() + 3)  # "...red? Row" ends where "Row" does
        probe = _target(probes[before - 1][1]) if before else None
        yes = 0
        for words, truth in zip(cells, scene[r]):
            mark = words[-1] if words and words[-1] in ("yes", "no") else None
            said = words[:-1] if mark else words
            if said != (["empty", "cell"] if truth is None else list(truth)):
                return False
            if probe is not None and (mark is None or (mark == "yes") != matches(truth, *probe)):
                return False
            yes += mark == "yes"
        if yes != count:
            return False
        counts_since_total.append(count)
        rows_since_total.append(r + 1)
    return not counts_since_total and (len(totals) != 2 or combined)  # (rows listed and never added up prove nothing)


def _equations_hold(reasoning: str) -> bool:
    """Every equation is right, or is the one a retraction just after it corrects (to the right value)."""
    retractions = list(_RETRACTION_RE.finditer(reasoning))
    if any(_value(m[1]) != int(m[2]) for m in retractions):
        return False  # a "correction" to a wrong value
    equations = list(_EQUATION_RE.finditer(reasoning))
    for i, eq in enumerate(equations):
        if _value(eq[1]) == int(eq[2]):
            continue
        following = [m for m in retractions if m.start() > eq.end()]
        next_equation = equations[i + 1].start() if i + 1 < len(equations) else len(reasoning)
        if not (following and following[0].start() < next_equation and (following[0][1], following[0][3]) == (eq[1], eq[2])):
            return False
    return True


def _value(expr: str) -> int:
    tokens = expr.split()
    value = int(tokens[0])
    for op, term in zip(tokens[1::2], tokens[2::2]):
        value = value + int(term) if op == "+" else value - int(term)
    return value


def _options_hold(reasoning: str, choices: list[str] | None) -> bool:
    found = list(_OPTION_RE.finditer(reasoning))
    if not found:
        return True
    checks = [(quoted or bare, value, said) for quoted, bare, value, said in (m.groups() for m in found)]
    if not choices or [(letter, value) for letter, value, _ in checks] != list(zip("ABCD", choices)):
        return False  # options misquoted (or claimed where the question has none)
    results = _EQUATION_RE.findall(reasoning[: found[0].start()])
    if not results:
        return True
    computed = results[-1][1]  # the value the options are checked against
    return all((said == "yes") == (value == computed) for _, value, said in checks)

