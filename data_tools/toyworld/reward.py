"""The toy world's reward: the right answer, reached without a false claim about the image.

`math` checks the final answer only, so a trace that misdescribes the grid but lands on the right
number passes it. Measured in the embedded default: 15 % of the traces the iteration-1 student
wrote for itself (and `math` accepted) were such lucky guesses, and training iteration 2 on them
lowered held-out accuracy from 0.70 to 0.48. This plugin also checks every claim a trace makes
about the image against the scene the problem was generated from (`extra_info["scene"]`):

1. each restated cell ("Row 2: red circle yes, empty cell no, ...") must be what is there;
2. each yes/no mark must be right for what that pass counts (the probe before it: "red circle?");
3. each row's count "(2)" must equal the row's yes marks.

A trace that makes no such claims is judged on its answer alone. Registered as `toyworld` in the
`openvlt.rewards` entry-point group (pyproject.toml), which is how third-party plugins plug in.

>>> trace = ("<think>Red shapes: red? Row 1: red circle yes, empty cell no, blue square no (1). "
...          "Row 2: empty cell no, empty cell no, red square yes (1). Row 3: empty cell no, empty cell no, "
...          "empty cell no (0). 1 + 1 + 0 = 2.</think> <answer>2</answer>")
>>> scene = "red circle,-,blue square;-,-,red square;-,-,-"
>>> toyworld_reward(trace, "2", extra_info={"scene": scene})
{'score': 1.0, 'answer': 1.0, 'faithful': 1.0}
>>> toyworld_reward(trace.replace("blue square no", "blue circle no"), "2", extra_info={"scene": scene})
{'score': 0.0, 'answer': 1.0, 'faithful': 0.0}
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from rewards.math_answer import math_reward

_ROW_RE = re.compile(r"Row (\d+): ([^()]*?)\s*\((\d+)\)")
_PROBE_RE = re.compile(r"([a-z]+(?: [a-z]+)?)\?")


def toyworld_reward(response: str, ground_truth: str, *, extra_info: Mapping[str, Any]) -> dict[str, float]:
    """1.0 when the answer is right and every claim about the grid is true, else 0.0."""
    if "scene" not in extra_info:
        raise ValueError("the toyworld reward needs extra_info['scene'] (a toy-world problem record)")
    answer = math_reward(response, ground_truth, extra_info=extra_info)
    faithful = 1.0 if _claims_hold(response.split("</think>")[0], extra_info["scene"]) else 0.0
    return {"score": answer * faithful, "answer": answer, "faithful": faithful}


def _claims_hold(reasoning: str, scene_code: str) -> bool:
    scene = [[None if c == "-" else tuple(c.split()) for c in row.split(",")] for row in scene_code.split(";")]
    for row_match in _ROW_RE.finditer(reasoning):
        r, listed, count = int(row_match[1]) - 1, row_match[2], int(row_match[3])
        cells = [c.split() for c in listed.split(",")]
        if not 0 <= r < len(scene) or len(cells) != len(scene[r]):
            return False
        probes = _PROBE_RE.findall(reasoning, 0, row_match.start())
        probe = probes[-1].split() if probes else None
        yes = 0
        for words, truth in zip(cells, scene[r]):
            mark = words[-1] if words and words[-1] in ("yes", "no") else None
            said = words[:-1] if mark else words
            if said != (["empty", "cell"] if truth is None else list(truth)):
                return False
            if mark is not None and probe is not None and (mark == "yes") != _matches(truth, probe):
                return False
            yes += mark == "yes"
        if yes != count:
            return False
    return True


def _matches(cell: tuple[str, str] | None, probe: list[str]) -> bool:
    """Does the cell count for a probe like ["red"], ["circle"] or ["red", "circle"]?"""
    return cell is not None and all(word in cell for word in probe)
