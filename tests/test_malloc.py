"""Issue 25: ratecontrol's own processes (the CLI, the batch workers it starts) reuse
freed blocks instead of faulting fresh pages in for every array (ratecontrol._malloc);
a library caller's process is left as it is."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")

_CHURN = """
import resource, sys, threading
import numpy as np
if sys.argv[1] == "tuned":
    from ratecontrol._malloc import tune_allocator
    assert tune_allocator()
def churn():
    for _ in range(30):
        a = np.ones((2, 2_880_000), dtype=np.float32)  # a minute of 48 kHz stereo, 23 MB
        b = a * 0.5
        del a, b
churn()
t = threading.Thread(target=churn); t.start(); t.join()  # a second thread: its own arena by default
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def test_the_tuned_allocator_reuses_freed_blocks():
    plain, tuned = _faults("plain"), _faults("tuned")
    # 120 blocks of 23 MB are ~700k 4-KB pages (or ~1,400 huge pages) touched afresh
    # untuned; tuned, the first block's pages are reused
    assert tuned < plain / 2, (plain, tuned)


def test_the_cli_tunes_its_process_and_asks_its_workers_to(tmp_path):
    code = ("import os, sys\n"
            "from ratecontrol import _malloc\n"
            "from ratecontrol.cli import main\n"
            "try:\n    main(['presets'])\nexcept SystemExit:\n    pass\n"
            "sys.stderr.write(f\"{os.environ.get(_malloc.ENV)} {_malloc._done}\\n\")\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.stderr.strip().splitlines()[-1] == "1 True", out.stderr


def test_a_library_caller_is_left_alone(monkeypatch):
    from ratecontrol import _malloc

    monkeypatch.delenv(_malloc.ENV, raising=False)
    code = ("import ratecontrol, ratecontrol.batch._worker as w\nfrom ratecontrol import _malloc\n"
            "print(_malloc.tune_if_asked(), _malloc._done)")
    env = {k: v for k, v in os.environ.items() if k != _malloc.ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["False", "False"]
