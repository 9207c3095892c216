"""Atomic, durable writes: the content reaches the disk before the rename, the rename before the caller goes on."""
import os

import pytest

from openvlt.files import atomic_write, replace, writing


def _record_fsyncs(monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src, dst):
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", rename)
    return events


def test_atomic_write_syncs_the_content_then_renames_then_syncs_the_folder(tmp_path, monkeypatch):
    target = tmp_path / "manifest.json"
    target.write_text("old")
    events = _record_fsyncs(monkeypatch)
    atomic_write(target, "new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync"]
    assert events[0][1].startswith(str(tmp_path / ".manifest.json.tmp-"))  # the new content, before it is visible
    assert events[2][1] == str(tmp_path)  # the rename itself


def test_replacing_a_folder_syncs_every_file_in_it_first(tmp_path, monkeypatch):
    made = tmp_path / ".scratch" / "model"
    (made / "sub").mkdir(parents=True)
    for name in ("model.safetensors", "config.json", "sub/tokenizer.json"):
        (made / name).write_text(name)
    final = tmp_path / "iter_1" / "model"
    final.parent.mkdir()
    events = _record_fsyncs(monkeypatch)
    replace(made, final)
    synced_before = {path for kind, path in events[: [k for k, _ in events].index("replace")]}
    assert {str(made / n) for n in ("model.safetensors", "config.json", "sub/tokenizer.json")} <= synced_before
    assert events[-1] == ("fsync", str(final.parent)) and (final / "sub" / "tokenizer.json").read_text() == "sub/tokenizer.json"


def test_a_file_that_fails_to_reach_the_disk_is_an_error_and_the_old_file_stays(tmp_path, monkeypatch):
    """A full quota is often reported only by fsync on network file systems: the write fails, loudly, and
    nothing is renamed over the old content. Folders, and file systems that cannot sync, stay best effort."""
    import errno

    target = tmp_path / "manifest.json"
    atomic_write(target, "old")
    real_fsync = os.fsync

    def fsync_failing_with(code, on_folders_only=False):
        def fsync(fd):
            if on_folders_only and not os.path.isdir(os.readlink(f"/proc/self/fd/{fd}")):
                return real_fsync(fd)
            raise OSError(code, os.strerror(code))
        monkeypatch.setattr(os, "fsync", fsync)

    fsync_failing_with(errno.EDQUOT)
    with pytest.raises(OSError, match=r"\.manifest\.json\.tmp-\d+ did not reach the disk: Disk quota exceeded"):
        atomic_write(target, "new")
    assert target.read_text() == "old"
    for code, folders in ((errno.EINVAL, False), (errno.EIO, True)):
        fsync_failing_with(code, on_folders_only=folders)
        atomic_write(target, f"new {code}")
        assert target.read_text() == f"new {code}"


def test_text_is_written_as_utf8_whatever_the_locale(tmp_path):
    """report.html declares utf-8: under LANG=C (a bare container) a trace with `é` or `≤` must neither
    crash the end of the run nor come out garbled."""
    import subprocess
    import sys

    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    code = "import sys; from pathlib import Path; from openvlt.files import atomic_write; atomic_write(Path(sys.argv[1]), '\\xe9 \\u2264 \\U0001f642')"
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r.html")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1000:]
    assert (tmp_path / "r.html").read_bytes() == "é ≤ 🙂".encode()


def test_a_write_that_fails_leaves_no_temporary_file_and_names_its_target(tmp_path, monkeypatch):
    """On a full disk the half-written temporary file kept the space (so the manifest could not record the
    failure either) and the error, raised by write() rather than open(), named no file."""
    import errno
    from pathlib import Path

    target = tmp_path / "report.html"
    target.write_text("old")

    def full(self, text, encoding=None):
        with open(self, "w") as f:
            f.write(text[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match=rf"^\[Errno 28\] writing {tmp_path}/report.html: No space left on device"):
        atomic_write(target, "new content")
    monkeypatch.undo()
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    with pytest.raises(OSError, match=rf"^writing a training checkpoint to {tmp_path}/state.pt failed: "
                                      r"\[enforce fail\] unexpected pos"):
        with writing(tmp_path / "state.pt", "a training checkpoint") as tmp:  # torch.save's own error, naming nothing
            tmp.write_bytes(b"half")
            raise RuntimeError("[enforce fail] unexpected pos 1201216 vs 1201104")
    with pytest.raises(KeyError):  # not a write's failure: passed on as it is
        with writing(tmp_path / "x.json"):
            raise KeyError("a bug")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
