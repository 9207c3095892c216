"""Writing files so that a reader, or a crash, sees the old file or the new one, never half of it.

Everything openvlt writes into a run directory goes through `temporary_path`: the new content is
written under a hidden temporary name next to the target, then renamed over it. A process killed
mid-write leaves only that temporary file, which the run directory removes at its next start.
"""
from __future__ import annotations

import os
from pathlib import Path


def temporary_path(path: Path, pid: int | str | None = None) -> Path:
    """Where `path` is written before it is renamed into place; `pid="*"` gives the pattern of every
    process's leftovers."""
    return path.with_name(f".{path.name}.tmp-{os.getpid() if pid is None else pid}")


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` so that a reader (or a crash) sees the old file or the new one, never half."""
    tmp = temporary_path(path)
    tmp.write_text(text)
    os.replace(tmp, path)
