"""A stop signal cleans up like Ctrl-C (issue 23, class 8): SIGTERM to `encode` or
`batch` (one worker or two) leaves no `ratecontrol-<host>-<pid>-*` folder in TMPDIR and
no temp file in the output folder, exits 143 (128 + SIGTERM; Ctrl-C is 130) with one
line, and leaves the inputs as they were.

Real CLI subprocesses on real recordings (../shared/audio) and generated tones, the
exact scorer (slow enough to be stopped mid-search), TMPDIR and the probe cache in
this test's own folders. A stopped encode exits once the probes in flight finish (the
search's threads are joined on the way out), so these take a while on a busy machine.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ratecontrol import fsutil

ROOT = Path(__file__).resolve().parents[2]


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _env(tmp_path: Path) -> tuple[dict, Path]:
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    env = dict(os.environ, TMPDIR=str(tmpdir), RATECONTROL_CACHE_DIR=str(tmp_path / "cache"))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env, tmpdir


def _litter(*folders: Path) -> list[str]:
    """Our temp entries (run folders in TMPDIR, .rc-tmp.* next to outputs), anywhere below."""
    out = []
    for f in folders:
        if not f.exists():
            continue
        for p in f.rglob("*"):
            if p.name.startswith(fsutil.RUN_DIR_PREFIX) or fsutil.is_temp_name(p.name) or p.name.endswith(".part"):
                out.append(str(p))
    return out


def _wait_for(proc: subprocess.Popen, ready, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if ready():
            return
        time.sleep(0.05)
    raise AssertionError("the run never reached the point to stop it at")


def _stop(proc: subprocess.Popen, sig: int, group: bool = False) -> tuple[int, str]:
    try:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, err


def _run_dirs_with_files(tmpdir: Path) -> bool:
    return any(d.name.startswith(fsutil.RUN_DIR_PREFIX) and any(d.iterdir()) for d in tmpdir.iterdir())


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow),
                                 pytest.param(signal.SIGHUP, marks=pytest.mark.slow)], ids=lambda s: s.name)
def test_a_stopped_encode_leaves_no_temp_folder_and_exits_128_plus_the_signal(tmp_path, shared_audio, sig):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(shared_audio / "sms-tools" / "piano.wav", src / "piano.wav")
    out = tmp_path / "out"
    out.mkdir()
    before = _digests(src)
    env, tmpdir = _env(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "ratecontrol", "encode", str(src / "piano.wav"), "--target-mos",
                             "4.3", "--scorer", "visqol", "--codec", "opus", "-o", str(out / "piano.opus")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    _wait_for(proc, lambda: _run_dirs_with_files(tmpdir))  # probe encodes under way
    rc, err = _stop(proc, sig)
    assert rc == 128 + sig, err
    assert f"interrupted by {signal.Signals(sig).name}" in err and "Traceback" not in err
    assert not _litter(tmpdir, out), _litter(tmpdir, out)
    assert not (out / "piano.opus").exists()
    assert _digests(src) == before


def _tones(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        t = np.arange(int(1.5 * 44100)) / 44100
        x = 0.3 * np.sin(2 * np.pi * (250 + 70 * i) * t)
        sf.write(folder / f"t{i}.wav", np.stack([x, 0.5 * x]).T, 44100)


@pytest.mark.parametrize("jobs,group", [(1, False), (2, False), (2, True)], ids=["j1", "j2", "j2-group"])
def test_a_stopped_batch_leaves_no_temp_folder_in_tmpdir_or_out_dir(tmp_path, jobs, group):
    """group: SIGTERM to the whole process group (systemd's KillMode=control-group, `kill
    -- -PGID`): the workers and their ffmpeg get it too, at the same moment."""
    src, out = tmp_path / "in", tmp_path / "out"
    _tones(src, 4)
    before = _digests(src)
    env, tmpdir = _env(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "ratecontrol", "batch", str(src), str(out), "--target-mos", "3.6",
                             "--codec", "opus", "--scorer", "visqol", "-j", str(jobs), "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)

    def working() -> bool:  # every worker has its temp folders in OUT_DIR and TMPDIR
        n_out = len([p for p in out.iterdir() if fsutil.is_temp_name(p.name)]) if out.is_dir() else 0
        n_tmp = len([d for d in tmpdir.iterdir() if d.name.startswith(fsutil.RUN_DIR_PREFIX) and any(d.iterdir())])
        return n_out >= jobs and n_tmp >= jobs

    _wait_for(proc, working)
    rc, err = _stop(proc, signal.SIGTERM, group=group)
    assert rc == 143, err
    assert "interrupted by SIGTERM" in err and "rerun the same command to resume" in err and "Traceback" not in err
    time.sleep(0.5)  # nothing left running may write afterwards
    assert not _litter(tmpdir, out), _litter(tmpdir, out)
    assert _digests(src) == before


def _group_that_signals_itself(sig: int, seen: list):
    import click

    @click.group()
    def g():
        pass

    @g.command()
    def work():
        try:
            os.kill(os.getpid(), sig)
            time.sleep(5)  # the handler raises before this ends
            seen.append("finished")
        finally:
            seen.append("finally ran")

    return g


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_run_group_turns_a_stop_signal_into_ctrl_c_s_way_out(sig, capsys):
    """In-process: the finally blocks run, exit 128 + signum, one line; the old handler
    is back afterwards."""
    from ratecontrol.cli import run_group

    seen: list = []
    old = signal.getsignal(sig)
    with pytest.raises(SystemExit) as exc:
        run_group(_group_that_signals_itself(sig, seen), ["work"])
    assert exc.value.code == 128 + sig
    assert seen == ["finally ran"]
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"interrupted by {signal.Signals(sig).name}"
    assert signal.getsignal(sig) == old


def test_run_group_leaves_an_ignored_stop_signal_ignored(capsys):
    """nohup-style SIG_IGN (or a handler of the caller's own) is not replaced."""
    from ratecontrol.cli import run_group

    seen: list = []
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        run_group(_group_that_signals_itself(signal.SIGHUP, seen), ["work"])
    finally:
        signal.signal(signal.SIGHUP, old)
    assert seen == ["finished", "finally ran"]
