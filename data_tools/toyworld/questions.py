"""Questions about toy-world scenes, with answers balanced so that guessing a constant fails.

Every question counts things in the image; harder ones combine two counts:

| kind          | level | steps | example                                                   |
|---------------|-------|-------|-----------------------------------------------------------|
| count_colour  | 1     | 1     | How many red shapes are there?                            |
| count_shape   | 1     | 1     | How many circles are there?                               |
| count_both    | 2     | 1     | How many blue squares are there?                          |
| more_than     | 2     | 2     | How many more red shapes than circles are there?          |
| sum           | 3     | 2     | What is the number of red shapes plus the number of ...?  |
| difference    | 3     | 2     | What is the number of circles minus the number of ...?    |

Any question can also be asked as multiple choice (four numeric options, answer a letter).
Answers are drawn uniformly from 0..MAX_ANSWER first and scenes are sampled until they fit, so
the answer distribution is flat by construction (see `stats.json` of a built data set).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

from data_tools.toyworld.scene import COLOURS, PLURAL, SHAPES, Scene, sample_scene

MAX_ANSWER = 8
LETTERS = "ABCD"
KINDS = {  # kind -> (level, steps)
    "count_colour": (1, 1),
    "count_shape": (1, 1),
    "count_both": (2, 1),
    "more_than": (2, 2),
    "sum": (3, 2),
    "difference": (3, 2),
}
Target = tuple[str | None, str | None]  # (colour, shape); None = any


@dataclass(frozen=True)
class Question:
    kind: str
    targets: tuple[Target, ...]  # one target for counts, two for comparisons and arithmetic
    choices: tuple[str, ...] = ()  # non-empty for multiple choice

    @property
    def level(self) -> int:
        return KINDS[self.kind][0]

    def value(self, scene: Scene) -> int | None:
        """The numeric answer on `scene`, or None when the question does not fit it (negative)."""
        counts = [scene.count(*t) for t in self.targets]
        if self.kind in ("more_than", "difference"):
            return counts[0] - counts[1] if counts[0] >= counts[1] else None
        return sum(counts)

    def text(self) -> str:
        a = describe(self.targets[0])
        b = describe(self.targets[1]) if len(self.targets) > 1 else ""
        base = {
            "more_than": f"How many more {a} than {b} are there?",
            "sum": f"What is the number of {a} plus the number of {b}?",
            "difference": f"What is the number of {a} minus the number of {b}?",
        }.get(self.kind, f"How many {a} are there?")
        if self.choices:
            options = " ".join(f"({letter}) {c}" for letter, c in zip(LETTERS, self.choices))
            base += f" Choices: {options}"
        return base


def describe(target: Target) -> str:
    """`("red", "circle")` -> "red circles"; `("red", None)` -> "red shapes"; `(None, "circle")` -> "circles"."""
    colour, shape = target
    noun = PLURAL[shape] if shape else "shapes"
    return f"{colour} {noun}" if colour else noun


_TARGET_RE = r"(?:(" + "|".join(COLOURS) + r") )?(" + "|".join(PLURAL.values()) + r"|shapes)"
_QUESTION_RES = {
    "more_than": re.compile(rf"How many more {_TARGET_RE} than {_TARGET_RE} are there\?"),
    "sum": re.compile(rf"What is the number of {_TARGET_RE} plus the number of {_TARGET_RE}\?"),
    "difference": re.compile(rf"What is the number of {_TARGET_RE} minus the number of {_TARGET_RE}\?"),
    "count": re.compile(rf"How many {_TARGET_RE} are there\?"),
}
_CHOICES_RE = re.compile(r"Choices:((?: \([A-D]\) [^()]+?)+)\s*(?:$|<image>|\n)")


def parse_question(text: str) -> Question | None:
    """Read a question back from text (what the program reasoner does); None if none is found."""
    singular = {v: k for k, v in PLURAL.items()}
    for kind, pattern in _QUESTION_RES.items():
        m = pattern.search(text)
        if not m:
            continue
        groups = m.groups()
        targets = tuple(
            (groups[i], singular.get(groups[i + 1])) for i in range(0, len(groups), 2)
        )
        if kind == "count":
            colour, shape = targets[0]
            kind = "count_both" if colour and shape else "count_colour" if colour else "count_shape"
        choices = ()
        c = _CHOICES_RE.search(text)
        if c:
            choices = tuple(v.strip() for v in re.findall(r"\([A-D]\) ([^()]+)", c.group(1)))
        return Question(kind, targets, choices)
    return None


def sample_problem(
    rng: random.Random, size: int, kinds: dict[str, float], mc_fraction: float
) -> tuple[Scene, Question, str]:
    """A (scene, question, answer) triple with the answer drawn uniformly first.

    Raises RuntimeError if no scene fits after many tries (cannot happen for the built-in kinds
    on grids of 3x3 and larger; kept as a guard for custom kinds).
    """
    kind = rng.choices(list(kinds), list(kinds.values()))[0]
    want = rng.randint(0, min(MAX_ANSWER, size * size))
    for _ in range(20000):
        question = Question(kind, _sample_targets(rng, kind))
        scene = sample_scene(rng, size, favour=tuple(v for t in question.targets for v in t))
        if question.value(scene) == want:
            break
    else:
        raise RuntimeError(f"no {size}x{size} scene found for a {kind} question with answer {want}")
    if rng.random() >= mc_fraction:
        return scene, question, str(want)
    choices, letter = _choices(rng, want)
    return scene, Question(kind, question.targets, choices), letter


def _sample_targets(rng: random.Random, kind: str) -> tuple[Target, ...]:
    def one() -> Target:
        style = rng.choice(["colour", "shape", "both"]) if kind in ("more_than", "sum", "difference") else None
        style = style or {"count_colour": "colour", "count_shape": "shape", "count_both": "both"}[kind]
        colour = rng.choice(list(COLOURS)) if style in ("colour", "both") else None
        shape = rng.choice(SHAPES) if style in ("shape", "both") else None
        return colour, shape

    if KINDS[kind][1] == 1:
        return (one(),)
    first = one()
    second = one()
    while second == first:
        second = one()
    return first, second


def _choices(rng: random.Random, want: int) -> tuple[tuple[str, ...], str]:
    """Four distinct numeric options around the answer, the correct one at a uniform letter."""
    pool = [v for v in range(max(0, want - 4), want + 5) if v != want]
    options = rng.sample(pool, 3)
    slot = rng.randrange(4)
    options.insert(slot, want)
    return tuple(str(v) for v in options), LETTERS[slot]
