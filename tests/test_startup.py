"""Start-up off the critical path (issue 13): commands that do not score never pay
for torch, torchaudio or scipy.signal (~1-3 s of imports on a 2-core machine)."""
from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "torchaudio", "scipy.signal", "joblib")


@pytest.mark.parametrize("args", [["--help"], ["presets"], ["doctor"], ["batch", "--help"], ["encode", "--help"]])
def test_light_commands_import_no_heavy_module(args):
    code = ("import sys\n"
            f"sys.argv = ['ratecontrol'] + {args!r}\n"
            "from ratecontrol.cli import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            f"print('heavy=' + ','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "heavy=", f"{args}: {r.stderr.strip().splitlines()[-1]}"


def test_import_ratecontrol_is_light_and_lazy_names_work():
    code = ("import sys, ratecontrol\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
            "assert callable(ratecontrol.encode) and ratecontrol.ProbeCache\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""
