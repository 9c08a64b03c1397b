"""fsutil: one temp-name pattern; stale = the owning process is gone (issue 15 item 5)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

from ratecontrol import fsutil


def test_temp_names_fit_and_map_back(tmp_path):
    long = "a" * 250 + ".opus"
    t = fsutil.temp_sibling(tmp_path / long)
    assert len(t.name.encode()) <= 255 and t.name.endswith(".opus") and fsutil.is_temp_name(t.name)
    assert fsutil.final_name(fsutil.temp_sibling(tmp_path / "song.opus")) == "song.opus"


def test_a_killed_processes_run_folder_and_temps_are_removed_a_live_ones_kept(tmp_path):
    code = ("import sys, time; sys.path.insert(0, %r)\n"
            "from ratecontrol import fsutil\n"
            "d = fsutil.run_temp_dir(); t = fsutil.temp_sibling(%r)\n"
            "print(d, t, flush=True); time.sleep(60)\n") % (os.getcwd(), str(tmp_path / "x.opus"))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    run_dir, temp = p.stdout.readline().split()
    assert fsutil.clean_stale_run_dirs() == 0 or os.path.isdir(run_dir)  # alive: kept
    assert fsutil.clean_stale_temps(tmp_path) == 0 and os.path.exists(temp)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert os.path.isdir(run_dir) and os.path.exists(temp), "a SIGKILL leaves them"
    fsutil.clean_stale_run_dirs()
    fsutil.clean_stale_temps(tmp_path)
    assert not os.path.exists(run_dir) and not os.path.exists(temp)
    assert fsutil.run_temp_dir().is_dir()  # ours is untouched
