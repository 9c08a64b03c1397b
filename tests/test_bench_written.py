"""bench/bench_written.py's report: written bits against the whole track's curve (issue 24)."""
from __future__ import annotations

import math

import pytest

from conftest import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("bench_written")


def _curve(points):
    return [{"file": "t.flac", "kbps": k, "p10": p, "actual_kbps": k * 1.02} for k, p in points]


def _run(kbps):
    return {"file": "t.flac", "bar": 4.33, "kbps": kbps, "actual_kbps": kbps * 1.02, "duration_s": 100.0}


def test_the_oracle_is_the_lowest_pass_going_down_and_the_crossing_below_it(bench):
    # 80k fails, 84k .. 100k pass, 76k passes again under the failure (a dip): the
    # oracle stops at the first failure going down from the written setting
    curve = _curve([(76, 4.35), (80, 4.30), (84, 4.34), (88, 4.36), (92, 4.37), (96, 4.40), (100, 4.42)])
    per, tot = bench._gap([_run(100.0)], curve)
    assert per[0]["lowest_pass"] == 84
    want = math.exp(math.log(80) + (4.33 - 4.30) / (4.34 - 4.30) * (math.log(84) - math.log(80)))
    assert per[0]["crossing"] == pytest.approx(want, abs=0.05)
    assert tot["over_lowest_pass_pct"] == pytest.approx(100 * (100 / 84 - 1), abs=0.01)
    assert tot["over_crossing_pct"] == pytest.approx(100 * (100 / want - 1), abs=0.05)


def test_a_file_written_below_the_grid_first_failure_is_its_own_oracle(bench):
    curve = _curve([(86, 4.31), (90, 4.36)])
    per, tot = bench._gap([_run(88.0)], curve)  # 88k passed its own check; 86k on the grid fails
    assert per[0]["lowest_pass"] == 88 and tot["over_crossing_pct"] == 0


def test_the_exact_crossing_is_the_learned_curve_moved_by_the_tracks_own_error(bench):
    # the learned check read the written 100k 0.02 above exact ViSQOL: the learned curve
    # moved down by 0.02 crosses the *target* (4.30, not the bar) between 80k and 84k
    curve = _curve([(80, 4.30), (84, 4.33), (88, 4.35), (100, 4.40)])
    row = dict(_run(100.0), target=4.30, learned=4.40, exact=4.38)
    summary, per = bench._exact_report([row], curve)
    want = math.exp(math.log(80) + (4.30 - 4.28) / (4.31 - 4.28) * (math.log(84) - math.log(80)))
    assert per[0]["crossing"] == pytest.approx(want, abs=0.05)
    assert summary["meets"] == 1 and summary["worst_shortfall"] == 0
    assert summary["learned_minus_exact_mean"] == pytest.approx(0.02)
    assert summary["over_exact_crossing_pct"] == pytest.approx(100 * (100 / want - 1), abs=0.05)
    short = dict(row, exact=4.29)
    summary, _ = bench._exact_report([short], curve)
    assert summary["meets"] == 0 and summary["worst_shortfall"] == pytest.approx(-0.01)
