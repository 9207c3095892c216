"""The ``iou`` reward: intersection over union of a predicted and a true box ``[x1, y1, x2, y2]``.

Visual-RFT / VLM-R1 style grounding. The box is read from the final answer (see
:mod:`rewards.extract`) as the only four-number list in it; two different boxes are a hedge and
score 0. The reward is the IoU itself (continuous), or 1.0 / 0.0 against
``extra_info["iou_threshold"]`` (thresholded). Coordinates are used as given: pixels or
normalised, both sides must use the same convention.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from rewards.extract import extract_answer
from rewards.registry import register

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_BOX_RE = re.compile(rf"[\[(]\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*[\])]")

Box = tuple[float, float, float, float]


@register("iou")
def iou_reward(response: str, ground_truth: str, *, extra_info: Mapping[str, Any]) -> float:
    """IoU of the answered box with the true box; 0/1 when ``extra_info["iou_threshold"]`` is set.

    >>> iou_reward("<answer>[0, 0, 10, 10]</answer>", "[0, 0, 10, 20]", extra_info={})
    0.5
    >>> iou_reward("<answer>[0, 0, 10, 10]</answer>", "[0, 0, 10, 20]", extra_info={"iou_threshold": 0.5})
    1.0
    """
    truth = read_box(ground_truth)
    if truth is None:
        raise ValueError(f"ground truth {ground_truth[:80]!r} is not a box [x1, y1, x2, y2]")
    found = extract_answer(response)
    box = read_box(found.answer) if found.answer is not None and not found.hedged else None
    value = iou(box, truth) if box is not None else 0.0
    threshold = extra_info.get("iou_threshold")
    if threshold is None:
        return value
    threshold = float(threshold)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"extra_info['iou_threshold'] must be in (0, 1], got {threshold}")
    return 1.0 if value >= threshold else 0.0


def read_box(text: str | Sequence[float]) -> Box | None:
    """The single box in ``text`` (a list of four numbers, or text such as JSON holding one box)."""
    if not isinstance(text, str):
        values = [float(v) for v in text]
        return _valid(tuple(values)) if len(values) == 4 else None  # type: ignore[arg-type]
    boxes = {tuple(float(v) for v in m.groups()) for m in _BOX_RE.finditer(text[:2000])}
    return _valid(boxes.pop()) if len(boxes) == 1 else None  # type: ignore[arg-type]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``[x1, y1, x2, y2]`` boxes (0.0 when they do not overlap)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _valid(box: Box) -> Box | None:
    x1, y1, x2, y2 = box
    return box if x2 > x1 and y2 > y1 and all(abs(v) < 1e9 for v in box) else None

