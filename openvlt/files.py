"""Writing files so that a reader, or a crash, sees the old file or the new one, never half of it.

Everything openvlt writes into a run directory goes through `temporary_path`: the new content is
written under a hidden temporary name next to the target, then renamed over it (`replace`). A process
killed mid-write leaves only that temporary file, which the run directory removes at its next start.
The content is flushed to disk before the rename and the rename before the caller goes on, so a node
that loses power (not only a killed process) does not come back to a manifest that says "complete"
about an empty file.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path


def temporary_path(path: Path, pid: int | str | None = None) -> Path:
    """Where `path` is written before it is renamed into place; `pid="*"` gives the pattern of every
    process's leftovers."""
    return path.with_name(f".{path.name}.tmp-{os.getpid() if pid is None else pid}")


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` so that a reader (or a crash) sees the old file or the new one, never half."""
    tmp = temporary_path(path)
    tmp.write_text(text, encoding="utf-8")  # report.html says utf-8, whatever the locale
    replace(tmp, path)


def replace(source: Path, target: Path) -> None:
    """Rename `source` (a file or a folder) over `target`, with both on disk before and after."""
    flush_to_disk(source)
    os.replace(source, target)
    _fsync(Path(target).parent)


def flush_to_disk(path: Path) -> None:
    """fsync a file, or every file and folder under a folder (a model a stage wrote)."""
    path = Path(path)
    if path.is_dir():
        for folder, _, names in os.walk(path):
            for name in names:
                _fsync(Path(folder) / name)
            _fsync(Path(folder))
    else:
        _fsync(path)


_NO_FSYNC = {errno.EINVAL, errno.EBADF, errno.ENOTSUP, errno.EOPNOTSUPP}  # what "cannot sync this" looks like


def _fsync(path: Path) -> None:
    """fsync `path`. A file that fails to reach the disk (EIO; ENOSPC or EDQUOT, which network file
    systems often report only here) is an error, so no stage is recorded complete over it; a folder,
    or a file system that cannot sync, is best effort."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. a folder a platform cannot open, a link to nothing
        return
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in _NO_FSYNC and not path.is_dir():
            raise OSError(error.errno, f"{path} did not reach the disk: {error.strerror}") from error
    finally:
        os.close(fd)


def jsonl_rows(path: Path) -> int:
    """The rows of a JSON-lines file, one a line (a row written with ensure_ascii=False keeps U+2028 and
    the like as they are, which `str.splitlines` would count as line ends)."""
    return Path(path).read_bytes().count(b"\n")
