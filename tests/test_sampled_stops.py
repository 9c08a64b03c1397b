"""Where a sampled knob search stops (probing.searching.SAMPLED_TOLERANCE_MOS /
SAMPLED_STOP_X): within the sample's own error of the bar, not within 0.03 MOS.

The sample reads the track's p10 to about +-0.065 MOS (20 real tracks,
docs/performance.md "Where a sampled search stops"); the full-track check is what
decides the written setting's score. Whole-track probes keep knob_search's stops.
"""
from __future__ import annotations

import math

import numpy as np

from ratecontrol.knob_search import GAIN_X, KNOB_BRACKET_X, search_knob
from ratecontrol.options import Options
from ratecontrol.presets import load_preset
from ratecontrol.probing import searching
from ratecontrol.probing.session import open_session

RATE = 48_000


def _curve(x: float) -> float:
    """A curve that steps where it crosses 4.33 (at 110 kbps), as real ones do: 0.3 MOS
    per ln kbps plus a 0.12 MOS step over ~8 % of the bits."""
    return 4.33 + 0.3 * (x - math.log(110.0)) + 0.06 * math.tanh((x - math.log(110.0)) / 0.04)


def test_looser_stops_end_a_search_sooner_and_still_choose_a_pass():
    lo, hi = math.log(6.0), math.log(510.0)
    tight = search_knob(_curve, 4.3, lo, hi, first_x=math.log(64.0), margin=0.03)
    loose = search_knob(_curve, 4.3, lo, hi, first_x=math.log(64.0), margin=0.03,
                        tolerance=searching.SAMPLED_TOLERANCE_MOS, bracket_x=searching.SAMPLED_STOP_X,
                        gain_x=searching.SAMPLED_STOP_X)
    assert len(loose.probes) < len(tight.probes)
    for out in (tight, loose):
        assert _curve(out.chosen) >= 4.33
    # what the looser stop may cost: at most its own bracket in bits above the tight choice
    assert loose.chosen - tight.chosen <= searching.SAMPLED_STOP_X


def test_gain_x_is_a_stop_of_its_own():
    """A bracket wider than bracket_x whose predicted crossing lies within gain_x below
    the lowest pass ends the search; with a smaller gain_x it goes on."""
    known = {math.log(90.0): 4.25, math.log(120.0): 4.3 + 0.03 + 0.05}
    kw = dict(margin=0.03, known=known, tolerance=0.01, bracket_x=math.log(1.01))
    calls = []

    def f(x):
        calls.append(x)
        return _curve(x)

    search_knob(f, 4.3, math.log(6.0), math.log(510.0), gain_x=math.log(1.3), **kw)
    assert calls == []  # the interpolated crossing is within 30 % below 120k: stop
    search_knob(f, 4.3, math.log(6.0), math.log(510.0), gain_x=GAIN_X, **kw)
    assert calls  # within 3 %: not yet


def test_only_a_sampled_search_takes_the_sampled_stops(synth, monkeypatch):
    seen = []
    real = searching.search_knob

    def spy(*a, **k):
        seen.append({n: k.get(n) for n in ("tolerance", "bracket_x", "gain_x")})
        return real(*a, **k)

    monkeypatch.setattr(searching, "search_knob", spy)
    for seconds, sampled in ((90.0, True), (12.0, False)):
        x = np.ascontiguousarray(synth.music(RATE, channels=2, duration_s=seconds), dtype=np.float32)
        ses = open_session(x, load_preset("opus"), Options(cache=False), RATE)
        pr = ses.prober(load_preset("opus"))
        assert pr.source.sampled is sampled
        searching.run_search(pr, 3.5, Options(cache=False, best_effort=True))
        want = ({"tolerance": searching.SAMPLED_TOLERANCE_MOS, "bracket_x": searching.SAMPLED_STOP_X,
                 "gain_x": searching.SAMPLED_STOP_X} if sampled else {"tolerance": None, "bracket_x": None, "gain_x": None})
        assert seen[-1] == want
        ses.close()
    assert KNOB_BRACKET_X < searching.SAMPLED_STOP_X
