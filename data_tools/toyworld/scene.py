"""Scenes of the toy world: a grid of cells, each empty or holding one coloured shape.

A scene is pure data (`Scene`); `render_scene` turns it into a PNG the way a camera would, with
jitter in position, size and colour so that reading it back takes real pixel work. Cells are
28 px, the size of one merged Qwen2.5-VL image token (14 px patches, 2x2 merge), so a 3x3 grid is
9 image tokens and a 4x4 grid 16.
"""
from __future__ import annotations

import io
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

CELL_PX = 28
COLOURS = {  # name -> nominal RGB; rendering jitters around these
    "red": (215, 45, 40),
    "green": (40, 160, 60),
    "blue": (45, 85, 215),
    "yellow": (225, 185, 25),
}
SHAPES = ("circle", "square", "triangle")
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles"}
BACKGROUND = (255, 255, 255)
GRID_LINE = (215, 215, 215)

Item = tuple[str, str]  # (colour, shape)


@dataclass(frozen=True)
class Scene:
    """A `size` x `size` grid; `cells[r][c]` is `(colour, shape)` or None for an empty cell."""

    size: int
    cells: tuple[tuple[Item | None, ...], ...]

    def items(self) -> list[Item]:
        return [cell for row in self.cells for cell in row if cell is not None]

    def count(self, colour: str | None = None, shape: str | None = None) -> int:
        """Number of shapes matching the colour and/or shape (None matches anything)."""
        return sum(self.row_counts(colour, shape))

    def row_counts(self, colour: str | None = None, shape: str | None = None) -> list[int]:
        return [sum(matches(cell, colour, shape) for cell in row) for row in self.cells]


def matches(cell: Item | None, colour: str | None = None, shape: str | None = None) -> bool:
    """Does the cell hold a shape of this colour and/or shape (None matches anything)?"""
    return cell is not None and colour in (None, cell[0]) and shape in (None, cell[1])


def sample_scene(rng: random.Random, size: int, favour: tuple[str | None, ...] = ()) -> Scene:
    """A random scene whose density and colour/shape mix vary from scene to scene.

    Varying the mix (instead of sampling every cell uniformly), and sometimes boosting the
    colours/shapes named in `favour`, makes extreme counts such as "8 blue squares" reachable,
    which the answer balancing in `questions.py` relies on.
    """
    density = rng.choice([0.3, 0.5, 0.7, 0.85, 1.0])
    colour_w = [(rng.random() ** 2 + 0.02) * (rng.choice((1, 4, 30)) if c in favour else 1) for c in COLOURS]
    shape_w = [(rng.random() ** 2 + 0.02) * (rng.choice((1, 4, 30)) if s in favour else 1) for s in SHAPES]
    rows = []
    for _ in range(size):
        row = []
        for _ in range(size):
            if rng.random() < density:
                row.append((rng.choices(list(COLOURS), colour_w)[0], rng.choices(SHAPES, shape_w)[0]))
            else:
                row.append(None)
        rows.append(tuple(row))
    return Scene(size, tuple(rows))


def render_scene(scene: Scene, rng: random.Random) -> bytes:
    """PNG bytes of the scene: light grid lines, each shape jittered in size, position and colour."""
    px = scene.size * CELL_PX
    image = Image.new("RGB", (px, px), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for k in range(1, scene.size):
        draw.line([(k * CELL_PX, 0), (k * CELL_PX, px - 1)], fill=GRID_LINE)
        draw.line([(0, k * CELL_PX), (px - 1, k * CELL_PX)], fill=GRID_LINE)
    for r, row in enumerate(scene.cells):
        for c, cell in enumerate(row):
            if cell is not None:
                _draw_shape(draw, cell, c * CELL_PX, r * CELL_PX, rng)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _draw_shape(draw: ImageDraw.ImageDraw, item: Item, x0: int, y0: int, rng: random.Random) -> None:
    colour, shape = item
    side = rng.randint(16, 22)  # shape's bounding box, inside a 28 px cell
    left = x0 + rng.randint(3, CELL_PX - 3 - side)
    top = y0 + rng.randint(3, CELL_PX - 3 - side)
    box = (left, top, left + side - 1, top + side - 1)
    fill = tuple(max(0, min(255, v + rng.randint(-18, 18))) for v in COLOURS[colour])
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:  # triangle, apex up
        draw.polygon([(left + side / 2, top), (left, top + side - 1), (left + side - 1, top + side - 1)], fill=fill)
