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
import shutil
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator


def temporary_path(path: Path, pid: int | str | None = None) -> Path:
    """Where `path` is written before it is renamed into place; `pid="*"` gives the pattern of every
    process's leftovers."""
    return path.with_name(f".{path.name}.tmp-{os.getpid() if pid is None else pid}")


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` so that a reader (or a crash) sees the old file or the new one, never half."""
    with writing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")  # report.html says utf-8, whatever the locale


@contextmanager
def writing(path: Path, what: str = "") -> Iterator[Path]:
    """The temporary path to write `path`'s new content to, renamed over `path` when the block ends.

    A write that fails leaves no temporary file behind (on a full disk, the space it took is given
    back, so the manifest can still record the failure) and its error names `path`: ENOSPC raised by
    a write says "No space left on device" and no file. With `what` (e.g. "the model"), any error is
    reported as a failed write of that, for writers that wrap OSError in their own errors
    (`torch.save`, safetensors)."""
    tmp = temporary_path(path)
    try:
        yield tmp
    except BaseException as exc:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and str(path) not in str(exc):
            raise OSError(exc.errno, f"writing {path}: {exc.strerror or exc}{_free_space(path)}") from exc
        if what and isinstance(exc, Exception) and not isinstance(exc, OSError):
            raise failed_write(what, path, exc) from exc
        raise
    replace(tmp, path)


def failed_write(what: str, path: Path, exc: BaseException) -> OSError:
    """The error for a write that `exc` stopped, naming what and where (torch and safetensors wrap a full
    disk in errors of their own, which name no file)."""
    return OSError(f"writing {what} to {path} failed: {exc}{_free_space(path)}")


def _free_space(path: Path) -> str:
    """" (N MB free there)", when the disk `path` is on is nearly full: the likely cause of a failed write."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return ""
    return f" ({free / 2**20:.1f} MB free there)" if free < 512 * 2**20 else ""


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
