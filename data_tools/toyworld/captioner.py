"""The program captioner: reads a toy-world image's PIXELS and describes the scene in words.

It never sees the generator's metadata: `read_grid` segments each 28 px cell by colour
saturation, names the colour by the nearest palette entry and the shape by how much of its
bounding box it fills (square ~1.0, circle ~0.79, triangle ~0.5). `parse_caption` is the inverse
on text, used by the text-only program reasoner.

`overlook` makes the captioner lossy the way a real VLM captioner is: each shape is left out of the
description with probability `miss_rate`, so crowded scenes are the ones most often misdescribed. A
text-only reasoner working from such a caption cannot get those problems right, which is what
OpenVLThinker's later iterations recover by letting the student read the image itself.
"""
from __future__ import annotations

import io
import random
import re

import numpy as np
from PIL import Image

from data_tools.toyworld.scene import CELL_PX, COLOURS, SHAPES, Item, Scene

_MIN_PIXELS = 30  # fewer saturated pixels than this in a cell: empty
_ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"]  # grids up to 8 x 8


def read_grid(image: bytes | Image.Image) -> Scene:
    """Recover the scene from the rendered pixels."""
    if isinstance(image, (bytes, bytearray)):
        image = Image.open(io.BytesIO(image))
    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)  # (H, W, 3)
    height, width, _ = pixels.shape
    if height != width or height % CELL_PX:
        raise ValueError(f"not a toy-world image: {width}x{height} px is not a square grid of {CELL_PX} px cells")
    size = height // CELL_PX
    palette = np.array(list(COLOURS.values()), dtype=np.float32)  # (C, 3)
    rows = []
    for r in range(size):
        row = []
        for c in range(size):
            cell = pixels[r * CELL_PX + 1 : (r + 1) * CELL_PX, c * CELL_PX + 1 : (c + 1) * CELL_PX]
            row.append(_read_cell(cell, palette))
        rows.append(tuple(row))
    return Scene(size, tuple(rows))


def _read_cell(cell: np.ndarray, palette: np.ndarray) -> Item | None:
    mask = (cell.max(axis=-1) - cell.min(axis=-1)) > 60  # coloured, not white or grey grid line
    if mask.sum() < _MIN_PIXELS:
        return None
    mean = cell[mask].mean(axis=0)
    colour = list(COLOURS)[int(np.argmin(((palette - mean) ** 2).sum(axis=1)))]
    ys, xs = np.nonzero(mask)
    fill = mask.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    shape = "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"
    return colour, shape


def overlook(scene: Scene, rng: random.Random, miss_rate: float) -> Scene:
    """The scene as a lossy captioner sees it: each shape missed (seen as an empty cell) with `miss_rate`."""
    if not miss_rate:
        return scene
    rows = tuple(tuple(None if cell is not None and rng.random() < miss_rate else cell for cell in row) for row in scene.cells)
    return Scene(scene.size, rows)


def write_caption(scene: Scene, rng: random.Random) -> str:
    """A natural-language description of every cell, row by row, in one of a few phrasings."""
    size = scene.size
    opening = rng.choice(
        [f"The image shows a {size} by {size} grid of cells.", f"This picture is a {size}x{size} grid.",
         f"A grid with {size} rows and {size} columns."]
    )
    sentences = [opening]
    for r, row in enumerate(scene.cells):
        things = [f"{_article(cell[0])} {cell[0]} {cell[1]}" if cell else "an empty cell" for cell in row]
        listed = ", ".join(things[:-1]) + " and " + things[-1]
        if rng.random() < 0.5:
            sentences.append(f"Row {r + 1}: {listed}.")
        else:
            sentences.append(f"The {_ORDINALS[r]} row has {listed}.")
    total = len(scene.items())
    sentences.append(f"There {'is' if total == 1 else 'are'} {total} shape{'' if total == 1 else 's'} in total.")
    return " ".join(sentences)


def caption_image(image: bytes | Image.Image, rng: random.Random, miss_rate: float = 0.0) -> str:
    return write_caption(overlook(read_grid(image), rng, miss_rate), rng)


_ROW_RE = re.compile(r"(?:Row (\d+):|The (" + "|".join(_ORDINALS) + r") row has)", re.IGNORECASE)
_ITEM_RE = re.compile(r"(an empty cell|empty)|(?:an? )?(" + "|".join(COLOURS) + r") (" + "|".join(SHAPES) + r")")


def parse_caption(text: str) -> Scene | None:
    """Read the grid back from a caption; None if the text holds no complete square grid."""
    marks = list(_ROW_RE.finditer(text))
    rows: dict[int, tuple[Item | None, ...]] = {}
    for i, mark in enumerate(marks):
        index = int(mark.group(1)) - 1 if mark.group(1) else _ORDINALS.index(mark.group(2).lower())
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        segment = text[mark.end() : end].split(".")[0]
        rows[index] = tuple(None if m.group(1) else (m.group(2), m.group(3)) for m in _ITEM_RE.finditer(segment))
    size = len(rows)
    if size == 0 or sorted(rows) != list(range(size)) or any(len(row) != size for row in rows.values()):
        return None
    return Scene(size, tuple(rows[r] for r in range(size)))


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"
