"""bench/bench_cost.py's helpers for the issue 25 round 3 figures: a batch record's
setting label back to the knob value plain ffmpeg needs, and the per-file CPU note."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("bench_cost")


def test_knob_label_back_to_value(bench):
    # a knob setting between rungs (the knob search's usual choice) is its value ...
    assert bench._knob("opus", "143k", 2) == 143.0
    assert bench._knob("aac", "254k", 2) == 254.0
    # ... a ladder rung's label stays a rung (plain_cmd looks it up by label)
    assert bench._knob("opus", "64k", 2) is None


def test_plain_cmd_at_a_knob_setting(bench):
    cmd = bench.plain_cmd(Path("in.flac"), Path("out.opus"), "opus", "143k", 2, bench._knob("opus", "143k", 2))
    assert cmd[cmd.index("-b:a") + 1] == "143k"
    assert cmd[cmd.index("-c:a") + 1] == "libopus"


def test_note_reads_the_bench_fields(bench):
    rec = {"notes": ["output check: 66k scored 4.31 < 4.33; stepped up", "bench_cpu_s=12.345 bench_wall_s=7.5"]}
    assert bench._note(rec, "bench_cpu_s") == pytest.approx(12.345)
    assert bench._note(rec, "bench_wall_s") == pytest.approx(7.5)
    assert bench._note({"notes": []}, "bench_cpu_s") is None
