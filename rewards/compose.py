"""Weighted compositions of rewards, declared by name and weight.

In a string (a record's ``reward`` column, a recipe, ``--reward``)::

    0.9*math+0.1*format        weights are plain decimals; a term without a weight has weight 1
    math+0.5*iou               parts are any reward names or specs (no '+' or '*' inside a part)

In Python: ``compose({"math": 0.9, "format": 0.1})``. Both return the weighted sum as ``score``
and each part's score under its name, so a trainer can log them:

>>> from rewards.compose import compose
>>> reward = compose({"math": 0.9, "format": 0.1})
>>> reward("<think>1 + 2 = 3</think> <answer>3</answer>", "3", extra_info={})
{'score': 1.0, 'math': 1.0, 'format': 1.0}

The weight string is parsed with a regular expression and ``float``: nothing is evaluated.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from rewards.registry import Reward, RewardError, call_reward, get_reward

_WEIGHT_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*$")


def compose(weights: Mapping[str, float], *, name: str | None = None) -> Reward:
    """A reward returning ``sum(weight * part)`` and every part's score (nested parts as ``part.key``)."""
    if not weights:
        raise ValueError("compose() needs at least one part")
    parts = []
    for part, weight in weights.items():
        if not isinstance(part, str) or not part.strip():
            raise ValueError(f"compose() takes reward names, got {part!r}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight of {part!r} must be a finite number >= 0, got {weight!r}")
        get_reward(part)  # fail now, not on the first item, when a part does not exist
        parts.append((part.strip(), float(weight)))
    label = name or join_terms([(w, p) for p, w in parts])

    def composed(response: str, ground_truth: str, *, extra_info: dict[str, Any], data_source: str = "") -> dict[str, float]:
        out: dict[str, float] = {"score": 0.0}
        weighted = []
        for part, weight in parts:
            score, components = call_reward(part, response, ground_truth, extra_info, data_source=data_source)
            weighted.append((weight, score))
            out[part] = score
            for key, value in (components or {}).items():
                out[f"{part}.{key}"] = value
        out["score"] = weighted_sum(weighted)
        return out

    composed.__name__ = composed.__qualname__ = label
    composed.__doc__ = f"Weighted composition {label}."
    composed.wants_data_source = True  # type: ignore[attr-defined]  # for its verl-form parts
    return composed


def weighted_sum(terms: list[tuple[float, float]]) -> float:
    """sum(weight * score), correctly rounded: a perfect answer under 0.7*a+0.2*b+0.1*c scores 1.0, as
    `reward.correct_at: 1.0` needs, not the 0.9999999999999999 that adding left to right gives."""
    return math.fsum(weight * score for weight, score in terms)


def parse_composition(spec: str) -> list[tuple[float, str]]:
    """``"0.9*math+0.1*format"`` -> ``[(0.9, "math"), (0.1, "format")]``; a single name -> ``[(1.0, name)]``."""
    from rewards.registry import canonical_spec

    terms = split_terms(spec)
    names = [canonical_spec(part) for _, part in terms]  # (`p.py:f` and `./p.py:f` are one part)
    if len(set(names)) != len(names):
        raise RewardError(f"reward composition {spec!r} names a part twice")
    return terms


def split_terms(spec: str) -> list[tuple[float, str]]:
    """Split a composition string into ``(weight, part)`` terms, without checking that parts exist."""
    terms = []
    for term in spec.split("+"):
        weight_text, star, part = term.rpartition("*")
        part = part.strip()
        if not part or (star and not _WEIGHT_RE.match(weight_text)):
            minus = " (weights are numbers >= 0: there is no '-')" if "-" in weight_text or part.startswith("-") else ""
            raise RewardError(
                f"cannot read reward composition {spec!r}: write terms like '0.9*math+0.1*format'{minus}"
            )
        weight = float(weight_text) if star else 1.0
        if not math.isfinite(weight):
            raise RewardError(f"reward composition {spec!r}: weight {weight_text.strip()} is not a finite number")
        terms.append((weight, part))
    return terms


def join_terms(terms: list[tuple[float, str]]) -> str:
    """The inverse of :func:`split_terms` (weights of 1 are left out)."""
    return "+".join(part if weight == 1.0 else f"{weight!r}*{part}" for weight, part in terms)
