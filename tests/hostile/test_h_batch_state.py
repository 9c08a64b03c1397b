"""Batch's state files in OUT_DIR (issue 23, classes 3 and 6): the lock and the manifest
are opened without following links and must be regular files of the current user;
anything else is one clear OutputError line (exit 4), never exit 70, and nothing
outside OUT_DIR is written. A full disk while writing the lock is an OutputError that
leaves no 0-byte lock behind.

Real files, FIFOs and links; a tree without audio (no encode needed) reaches both state
files, as a real run does before its first encode.
"""
from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli

from ratecontrol.batch import LOCK_NAME, MANIFEST_NAME, transcode_folder
from ratecontrol.errors import OutputError

KW = dict(target_mos=3.6, codec="opus", scorer="learned", jobs=1, progress=False)


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "notes.txt").write_text("not audio\n")
    out.mkdir()
    return src, out


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _cli(src: Path, out: Path, capsys):
    return run_cli(["batch", str(src), str(out), "--target-mos", "3.6", "--codec", "opus", "--scorer", "learned",
                    "-j", "1", "--no-progress"], capsys)


STATE = [LOCK_NAME, MANIFEST_NAME]


@pytest.mark.parametrize("name", STATE)
def test_a_symlink_at_a_state_file_is_refused_and_its_target_untouched(tmp_path, capsys, name):
    src, out = _tree(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious, not batch's\n" * 20)
    before = _digest(victim), victim.stat().st_mtime_ns
    (out / name).symlink_to(victim)
    rc, _, err = _cli(src, out, capsys)
    assert rc == 4, err
    assert "symbolic link" in err and name in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert (_digest(victim), victim.stat().st_mtime_ns) == before
    assert (out / name).is_symlink()  # left as it was


@pytest.mark.parametrize("name", STATE)
def test_a_dangling_symlink_at_a_state_file_creates_nothing(tmp_path, name):
    src, out = _tree(tmp_path)
    target = tmp_path / "would-be-created"
    (out / name).symlink_to(target)
    with pytest.raises(OutputError, match="symbolic link"):
        transcode_folder(src, out, **KW)
    assert not target.exists()


@pytest.mark.parametrize("name", STATE)
def test_a_fifo_at_a_state_file_is_one_clear_line(tmp_path, capsys, name):
    src, out = _tree(tmp_path)
    os.mkfifo(out / name)
    rc, _, err = _cli(src, out, capsys)
    assert rc == 4, err
    assert "named pipe" in err and name in err and "internal error" not in err


@pytest.mark.parametrize("name", STATE)
def test_a_folder_at_a_state_file_is_one_clear_line(tmp_path, capsys, name):
    src, out = _tree(tmp_path)
    (out / name).mkdir()
    (out / name / "keep.txt").write_text("x")
    rc, _, err = _cli(src, out, capsys)
    assert rc == 4, err
    assert "folder" in err and name in err and "internal error" not in err
    assert (out / name / "keep.txt").read_text() == "x"


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file of another owner needs root (chown)")
@pytest.mark.parametrize("name", STATE)
def test_a_state_file_of_another_owner_is_refused(tmp_path, capsys, name):
    src, out = _tree(tmp_path)
    p = out / name
    p.write_text("pid 1 on elsewhere\n" if name == LOCK_NAME else "")
    os.chown(p, 65534, 65534)
    before = _digest(p)
    rc, _, err = _cli(src, out, capsys)
    assert rc == 4, err
    assert "owned by uid 65534" in err and name in err
    assert _digest(p) == before and p.stat().st_uid == 65534


def test_regular_state_files_of_the_user_still_work(tmp_path):
    """The check refuses nothing batch itself made: a rerun resumes from its manifest."""
    src, out = _tree(tmp_path)
    transcode_folder(src, out, **KW)
    assert (out / MANIFEST_NAME).is_file() and not (out / LOCK_NAME).exists()
    rep = transcode_folder(src, out, **KW)
    assert rep.ok and rep.n_resumed == 1


# ------------------------------------------------------------------ class 6: a full disk at the lock


def test_a_full_disk_while_writing_the_lock_is_an_output_error_and_leaves_no_lock(tmp_path, monkeypatch):
    """Simulated ENOSPC at the lock's write (the tmpfs test below does it for real where
    mounting is allowed)."""
    from ratecontrol.batch import _manifest

    src, out = _tree(tmp_path)
    real_write = os.write

    def full(fd, data):
        if os.path.realpath(f"/proc/self/fd/{fd}") == str((out / LOCK_NAME).resolve()):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(_manifest.os, "write", full)
    with pytest.raises(OutputError, match="disk is full") as exc:
        transcode_folder(src, out, **KW)
    assert str(out) in str(exc.value)
    assert not (out / LOCK_NAME).exists()


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_really_full_disk_at_the_lock_is_exit_4_with_no_zero_byte_lock(tmp_path, tiny_tmpfs, capsys):
    src = tmp_path / "in"
    src.mkdir()
    (src / "notes.txt").write_text("not audio\n")
    out = tiny_tmpfs / "out"
    out.mkdir()
    filler = tiny_tmpfs / "filler"
    with open(filler, "wb", buffering=0) as fh:  # fill every page the tmpfs has
        with pytest.raises(OSError) as exc:
            while True:
                fh.write(b"\0" * 4096)
    assert exc.value.errno == errno.ENOSPC
    rc, _, err = _cli(src, out, capsys)
    assert rc == 4, err
    assert "disk is full" in err and "internal error" not in err
    assert not (out / LOCK_NAME).exists()


def test_a_full_disk_while_appending_to_the_manifest_is_one_line_and_releases_the_lock(tmp_path, capsys, monkeypatch):
    """A manifest line that cannot be written mid-run (ENOSPC at its fsync) stops the run
    with exit 4, not 70; the lock is released."""
    src, out = _tree(tmp_path)
    real_fsync = os.fsync

    def full(fd):
        if os.path.realpath(f"/proc/self/fd/{fd}") == str((out / MANIFEST_NAME).resolve()):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    rc, _, err = _cli(src, out, capsys)
    assert rc == 4, err
    assert "cannot write the manifest" in err and "disk is full" in err and "internal error" not in err
    assert not (out / LOCK_NAME).exists()
