"""Batch must never replace what it did not write, one run per OUT_DIR, clear errors for
unreadable inputs, and no worker outliving its driver (issue #15).

Real ffmpeg and real encodes on tiny generated WAVs (1 s tones), the fast learned scorer,
``jobs=1`` (joblib runs the task in this process) unless the test is about processes.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from ratecontrol import fsutil, media
from ratecontrol.batch import LOCK_NAME, MANIFEST_NAME, transcode_folder
from ratecontrol.batch._manifest import clean_stale_temps, OutDirLock
from ratecontrol.batch._plan import walk
from ratecontrol.cli.batch import batch_command
from ratecontrol.errors import OutputError, RatecontrolError

TARGET = 3.6
KW = dict(target_mos=TARGET, codec="opus", scorer="learned", jobs=1, progress=False)


def _wav(path: Path, seconds: float = 1.0, freq: float = 440.0, sr: int = 44100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    x = np.stack([0.3 * np.sin(2 * np.pi * freq * t), 0.2 * np.sin(2 * np.pi * 1.5 * freq * t)]).T
    sf.write(path, x, sr, subtype="PCM_16")
    return path


def _cli(*args: str):
    return CliRunner().invoke(batch_command, [*args, "--target-mos", str(TARGET), "--codec", "opus",
                                              "--scorer", "learned", "-j", "1", "--no-progress"])


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if fsutil.is_temp_name(p.name) or p.name.endswith(".part")]


# ------------------------------------------------------------------ item 1: never replace the user's files


def test_out_dir_inside_in_dir_holding_user_files_is_refused_untouched(tmp_path):
    """`batch in in/music` where in/music is the user's music: it used to replace the user's
    a.opus with the encode of in/a.wav and silently skip in/music/b.wav."""
    src = tmp_path / "in"
    _wav(src / "a.wav")
    music = src / "music"
    _wav(music / "b.wav", freq=330)
    mine = b"OggS the user's own a.opus" * 10
    (music / "a.opus").write_bytes(mine)
    before = sorted(p.name for p in music.iterdir())
    res = _cli(str(src), str(music))
    assert isinstance(res.exception, OutputError), res.output  # the CLI's exit code 4
    assert "a.opus, b.wav" in str(res.exception)
    with pytest.raises(OutputError, match=r"inside the input folder.*2 file\(s\) batch did not write"):
        transcode_folder(src, music, **KW)
    with pytest.raises(OutputError, match="music/|a.opus"):
        transcode_folder(src, music, overwrite=True, **KW)
    assert (music / "a.opus").read_bytes() == mine
    assert sorted(p.name for p in music.iterdir()) == before  # no manifest, no lock, no output


def test_out_dir_inside_in_dir_is_fine_when_it_is_batchs_own(tmp_path):
    """The usual `batch music music/opus`: OUT_DIR is left out of the walk, and a rerun
    (OUT_DIR now full of batch's own files) is allowed and resumes."""
    src = tmp_path / "music"
    _wav(src / "a.wav")
    out = src / "opus"
    rep = transcode_folder(src, out, **KW)
    assert [(r.input, r.status) for r in rep.records] == [("a.wav", "encoded")]
    rep2 = transcode_folder(src, out, **KW)
    assert [(r.input, r.status, r.resumed) for r in rep2.records] == [("a.wav", "encoded", True)]


def test_existing_file_at_an_output_path_is_a_conflict_unless_overwrite(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _wav(src / "a.wav")
    _wav(src / "b.wav", freq=330)
    out.mkdir()
    mine = b"the user's own a.opus, not batch's"
    (out / "a.opus").write_bytes(mine)
    res = _cli(str(src), str(out), "--json-report", str(tmp_path / "r.json"), "--csv-report", str(tmp_path / "r.csv"))
    assert res.exit_code == RatecontrolError.exit_code, res.output
    assert (out / "a.opus").read_bytes() == mine
    assert media.inspect(out / "b.opus").codec == "opus"
    assert "1 conflicts" in res.output and "conflict: a.wav:" in res.output and "--overwrite" in res.output
    js = json.loads((tmp_path / "r.json").read_text())
    assert js["summary"]["conflicts"] == 1 and js["summary"]["failed"] == 0
    assert {r["input"]: r["status"] for r in js["records"]} == {"a.wav": "conflict", "b.wav": "encoded"}
    assert js["records"][0]["output"] is None and str(out / "a.opus") in js["records"][0]["reason"]
    with open(tmp_path / "r.csv", newline="") as fh:
        assert {r["input"]: r["status"] for r in csv.DictReader(fh)} == {"a.wav": "conflict", "b.wav": "encoded"}
    # a rerun changes nothing: still a conflict, b is resumed, the user's file untouched
    rep = transcode_folder(src, out, **KW)
    assert [(r.status, r.resumed) for r in rep.records] == [("conflict", False), ("encoded", True)]
    assert not rep.ok and rep.n_conflicts == 1
    assert (out / "a.opus").read_bytes() == mine
    # --overwrite replaces it and says so
    rep = transcode_folder(src, out, overwrite=True, **KW)
    a = rep.records[0]
    assert (a.status, a.replaced) == ("encoded", True) and rep.ok and rep.n_replaced == 1
    assert any("replaced: a.opus" in x for x in rep.summary_lines())
    assert media.inspect(out / "a.opus").codec == "opus"
    # now it is batch's own: a later run without --overwrite resumes it
    rep = transcode_folder(src, out, **KW)
    assert [(r.status, r.resumed) for r in rep.records] == [("encoded", True), ("encoded", True)]
    assert not _temps(out)


def test_no_resume_still_knows_which_files_batch_wrote(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _wav(src / "a.wav")
    first = transcode_folder(src, out, **KW)
    assert first.ok
    rep = transcode_folder(src, out, resume=False, **KW)
    assert [(r.status, r.resumed, r.replaced) for r in rep.records] == [("encoded", False, False)]
    # an edit by the user after that makes it theirs
    with open(out / "a.opus", "ab") as fh:
        fh.write(b"user retag")
    rep = transcode_folder(src, out, resume=False, **KW)
    assert rep.records[0].status == "conflict"


def test_an_output_path_that_is_an_input_is_never_replaced(tmp_path):
    """out/d is a link to in/e: out/d/a.opus *is* the input in/e/a.opus. Not even
    --overwrite may write there."""
    src, out = tmp_path / "in", tmp_path / "out"
    _wav(src / "d" / "a.wav")
    (src / "e").mkdir()
    theirs = b"not audio, but an input all the same" * 8
    (src / "e" / "a.opus").write_bytes(theirs)
    out.mkdir()
    (out / "d").symlink_to(src / "e", target_is_directory=True)
    rep = transcode_folder(src, out, overwrite=True, **KW)
    by = {r.input: r for r in rep.records}
    assert by["d/a.wav"].status == "conflict" and "is the input file e/a.opus" in by["d/a.wav"].reason
    assert (src / "e" / "a.opus").read_bytes() == theirs
    assert not _temps(src) and not _temps(out)


def test_a_file_in_the_way_of_an_output_folder_is_a_conflict(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _wav(src / "sub" / "a.wav")
    out.mkdir()
    (out / "sub").write_text("a file named like the folder")
    rep = transcode_folder(src, out, **KW)
    r = rep.records[0]
    assert r.status == "conflict" and "in the way" in r.reason and "internal error" not in r.reason
    assert (out / "sub").read_text() == "a file named like the folder"


# ------------------------------------------------------------------ item 6: one run per OUT_DIR


def test_a_locked_out_dir_is_refused_at_once_naming_the_holder(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    (src).mkdir()
    (src / "notes.txt").write_text("x")
    out.mkdir()
    with OutDirLock(out):
        assert f"pid {os.getpid()}" in (out / LOCK_NAME).read_text()
        t0 = time.monotonic()
        with pytest.raises(OutputError, match=rf"in use by another ratecontrol batch run \(pid {os.getpid()} "):
            transcode_folder(src, out, copy_other=True, **KW)
        assert time.monotonic() - t0 < 5
        assert not (out / "notes.txt").exists()
    rep = transcode_folder(src, out, copy_other=True, **KW)  # released: fine now
    assert rep.ok and (out / "notes.txt").read_text() == "x"
    assert not (out / LOCK_NAME).exists()  # removed with the lock


def test_two_runs_on_one_out_dir_second_fails_first_completes(tmp_path):
    """The race of issue #15: the second run's cleanup removed the first run's in-flight
    file. Now the second one fails at once and the first finishes untouched."""
    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(2):
        _wav(src / f"t{i}.wav", seconds=1.5, freq=300 + 90 * i)
    argv = [sys.executable, "-m", "ratecontrol", "batch", str(src), str(out), "--target-mos", str(TARGET),
            "--codec", "opus", "--scorer", "visqol", "-j", "1", "--no-progress"]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = out / LOCK_NAME
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None:
            if lock.exists() and f"pid {first.pid} " in lock.read_text():
                break
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()
        with pytest.raises(OutputError, match=rf"in use by another ratecontrol batch run \(pid {first.pid} "):
            transcode_folder(src, out, **KW)
        assert first.poll() is None, "the first run finished before the second started; make it longer"
        stdout, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr
    assert "2 encoded" in stdout and "0 failed" in stdout
    for i in range(2):
        assert media.inspect(out / f"t{i}.opus").duration_s == pytest.approx(1.5, abs=0.1)
    assert not _temps(out) and not (out / LOCK_NAME).exists()


def test_cleanup_removes_dead_runs_temps_and_never_a_live_ones(tmp_path):
    d = tmp_path / "out" / "sub"
    d.mkdir(parents=True)
    live = fsutil.temp_sibling(d / "a.opus")  # this process: alive
    live_dir = fsutil.temp_sibling(d / "batch")
    live_dir.unlink()
    live_dir.mkdir()
    (live_dir / "a.opus").write_bytes(b"in flight")
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout.strip()
    dead = d / live.name.replace(f".{os.getpid()}.", f".{dead_pid}.")
    dead.write_bytes(b"left by a killed run")
    dead_dir = d / live_dir.name.replace(f".{os.getpid()}.", f".{dead_pid}.")
    dead_dir.mkdir()
    (dead_dir / "x.opus").write_bytes(b"x")
    legacy = d / ".a.opus.x1y2.part"
    legacy.write_bytes(b"x")
    user = d / ".a.opus.keep"
    user.write_bytes(b"the user's")
    assert clean_stale_temps(tmp_path / "out", ["sub/a.opus"]) == 3
    assert live.exists() and (live_dir / "a.opus").exists() and user.exists()
    assert not dead.exists() and not dead_dir.exists() and not legacy.exists()


def test_walk_skips_our_temp_files_and_lock(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"x")
    fsutil.temp_sibling(tmp_path / "b.opus")
    (tmp_path / LOCK_NAME).write_text("pid 1")
    assert walk(tmp_path, None) == ["a.wav"]


# ------------------------------------------------------------------ item 8: unreadable input


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permission bits say")
def test_unreadable_input_is_a_clear_failed_record(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    f = _wav(src / "locked.wav")
    f.chmod(0)
    try:
        rep = transcode_folder(src, out, **KW)
    finally:
        f.chmod(0o644)
    r = rep.records[0]
    assert r.status == "failed" and r.reason.startswith(f"cannot read {f}: permission denied")


def test_unreadable_input_simulated_is_a_clear_failed_record(tmp_path, monkeypatch):
    """Root ignores permission bits, so the OS's refusal is simulated: opening this one
    file raises PermissionError(EACCES), as it does for a user without read access."""
    import builtins
    import errno

    src, out = tmp_path / "in", tmp_path / "out"
    f = _wav(src / "locked.wav")
    _wav(src / "ok.wav", freq=330)
    real_open = builtins.open

    def guarded_open(file, *a, **k):
        if isinstance(file, (str, os.PathLike)) and os.path.abspath(file) == str(f):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", guarded_open)
    rep = transcode_folder(src, out, **KW)
    by = {r.input: r for r in rep.records}
    assert by["locked.wav"].status == "failed"
    assert by["locked.wav"].reason.startswith(f"cannot read {f}: permission denied"), by["locked.wav"].reason
    assert by["ok.wav"].status == "encoded"
    assert any(x.startswith("failed: locked.wav: cannot read") for x in rep.summary_lines())


# ------------------------------------------------------------------ progress bar


def test_library_call_shows_a_bar_only_on_a_terminal_unless_asked(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    (src / "notes.txt").write_text("x")
    kw = {**KW, "copy_other": True}
    kw.pop("progress")
    transcode_folder(src, tmp_path / "o1", **kw)  # stderr is not a terminal under pytest
    assert capsys.readouterr().err == ""
    transcode_folder(src, tmp_path / "o2", progress=True, **kw)
    assert "batch" in capsys.readouterr().err


# ------------------------------------------------------------------ item 10: no worker outlives the driver


def _descendants(pid: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for e in os.scandir("/proc"):
        if e.name.isdigit():
            try:
                ppid = int(Path(f"/proc/{e.name}/stat").read_bytes().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(e.name))
    out, todo = set(), [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state != b"Z"


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds worker processes through /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGKILL, marks=pytest.mark.slow)])
def test_killed_driver_leaves_no_worker_running_and_no_new_output(tmp_path, sig):
    """SIGTERM: the driver kills its workers on the way out. SIGKILL (no way out): each
    worker notices its parent is gone within a fraction of a second and stops."""
    src, out = tmp_path / "in", tmp_path / "out"
    n = 4 if sig == signal.SIGTERM else 6
    for i in range(n):
        _wav(src / f"t{i}.wav", seconds=1.5, freq=250 + 70 * i)
    argv = [sys.executable, "-m", "ratecontrol", "batch", str(src), str(out), "--target-mos", str(TARGET),
            "--codec", "opus", "--scorer", "visqol", "-j", "2", "--no-progress"]
    driver = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 180
        # wait until both workers are encoding (their temp folders exist)
        while time.monotonic() < deadline and driver.poll() is None:
            workers |= _descendants(driver.pid)
            if out.is_dir() and len([p for p in out.iterdir() if fsutil.is_temp_name(p.name)]) >= 2:
                break
            time.sleep(0.05)
        assert driver.poll() is None, driver.communicate()
        workers |= _descendants(driver.pid)
        assert workers
        os.kill(driver.pid, sig)
        _, stderr = driver.communicate(timeout=30)
        t_exit = time.monotonic()
        while time.monotonic() - t_exit < 10 and any(_alive(p) for p in workers):
            time.sleep(0.1)
        assert not [p for p in workers if _alive(p)], "workers outlived the driver"
        assert time.monotonic() - t_exit < 8
        snap = _snapshot(out)
        time.sleep(2.0)
        assert _snapshot(out) == snap, "something still writes after the run was killed"
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        for p in workers:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
    if sig == signal.SIGTERM:
        assert driver.returncode == 128 + signal.SIGTERM, stderr
        assert "interrupted by SIGTERM" in stderr and "Traceback" not in stderr
        assert not _temps(out)  # cleaned on the way out
    # every finished file is whole and in the manifest
    lines = [json.loads(x) for x in (out / MANIFEST_NAME).read_text().splitlines() if x.strip()] \
        if (out / MANIFEST_NAME).exists() else []
    for d in lines:
        if d.get("status") == "encoded" and (out / d["output"]).exists():
            assert (out / d["output"]).stat().st_size == d["output_bytes"]
    if sig == signal.SIGKILL:  # a rerun cleans the dead workers' temps and completes the rest
        rep = transcode_folder(src, out, **{**KW, "scorer": "visqol"})
        assert rep.ok and rep.n_encoded == n and not _temps(out)


# ------------------------------------------------------------------ the publish rule for batch's outputs


def test_finished_files_are_published_under_the_publish_rule(tmp_path, monkeypatch):
    """Batch's outputs go through ``fsutil.publish`` (issue 27): where nothing was, a hard
    link that never clobbers; a file batch may replace is replaced only if it is still
    that file; the temp file's mode is kept (a kept file has its source's)."""
    import errno

    from ratecontrol.batch import _driver
    from ratecontrol.batch._dest import Conflict

    def tmp_file(text: str, mode: int) -> Path:
        p = tmp_path / f".rc-tmp.{text}"
        p.write_text(text)
        p.chmod(mode)
        return p

    dst = tmp_path / "a.opus"
    _driver._move_into_place(tmp_file("new", 0o604), dst)
    assert dst.read_text() == "new" and (dst.stat().st_mode & 0o777) == 0o604
    assert not (tmp_path / ".rc-tmp.new").exists()
    # what batch's own rule allowed (its own file, or overwrite): replaced
    _driver._move_into_place(tmp_file("again", 0o644), dst)
    assert dst.read_text() == "again"
    # a file that appears after the check is never clobbered: a conflict, the temp left
    # for the driver's clean-up of the worker's folder
    monkeypatch.setattr(fsutil, "file_id", lambda p: None)
    tmp = tmp_file("late", 0o644)
    with pytest.raises(Conflict, match="appeared while the file was being encoded.*overwrite=True"):
        _driver._move_into_place(tmp, dst)
    assert dst.read_text() == "again" and tmp.exists()
    monkeypatch.undo()

    # a file system without hard links: check, then rename
    def no_link(*a, **k):
        raise OSError(errno.EPERM, "no hard links")

    monkeypatch.setattr(os, "link", no_link)
    other = tmp_path / "b.opus"
    _driver._move_into_place(tmp_file("renamed", 0o644), other)
    assert other.read_text() == "renamed"
    monkeypatch.setattr(fsutil, "file_id", lambda p: None)
    with pytest.raises(Conflict, match="appeared"):
        _driver._move_into_place(tmp_file("late2", 0o644), other)
    assert other.read_text() == "renamed"
