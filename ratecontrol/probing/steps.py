"""Where the check goes next (verify.finish_encode): after a written file missed the bar,
a step up (``step_up``); after a sampled search's file passed well above it, a step down
(``step_down``); once a miss and a pass well above bracket the crossing, a write between
the two checks (``step_down_after_up``). Moved out of prober.py (one job per module):
they read a prober's probes and knob, and decide nothing about how a probe is made."""
from __future__ import annotations

import math

from ratecontrol.knob_search import step_down_between, step_down_x
from ratecontrol.search import SLOPE_PRIOR_MOS_PER_X
from ratecontrol.probing.prober import Prober

__all__ = ["CHECK_AIM_MOS", "CHECK_STEP_X", "STEP_DOWN_WRITES", "slope_near", "step_down", "step_down_after_up",
           "step_up"]


#: a check miss steps the knob up by at least this much (ln kbps: 6 %), and by enough
#: that the curve's slope predicts the miss made up plus CHECK_AIM_MOS. The check misses
#: when the sampled probes read a little high (docs/performance.md: sampled vs whole
#: track within ~0.02-0.05 MOS p10), so a step of a few percent, not a rung (~20 %), is
#: what it takes. Not 3 %: near the crossing the whole track's p10 rises slower than the
#: probes' (its worst windows are not all in the sample): of 7 Wesnoth tracks that missed
#: (docs/performance.md, "Check step-ups"), 3 % steps needed a second write on 3
#: (battle 66k 4.324 -> 68k 4.329 -> 71k; casualties 117k 4.318 -> 121k 4.318 -> 125k),
#: and each write is a whole-track encode + check (~2x a plain encode). A step that
#: missed again doubles the next one's floor (main_menu: 61k 4.263, 65k 4.262, 73k 4.280,
#: 80k 4.282, 87k, 92k 4.362: five writes at a fixed floor, three when it doubles)
CHECK_STEP_X = math.log(1.06)
CHECK_AIM_MOS = 0.01


#: at most this many lower writes after the written file passed (verify._step_down):
#: the first from the sample's moved curve or between a step up's two checks, a second
#: between the two whole-track checks that then bracket the crossing. Measured cases:
#: elvish-theme (Opus 4.3) 128k 4.555, the moved sample curve's 117k 4.285 failed, and
#: its whole-track p10 passes from 118k (now 120k, 4.336, ships); main_menu 104k ->
#: 96k -> 91k. A third write was not tried: each is a whole encode and check (~1.7
#: plain encodes of CPU), and curves that dip make them fail (Vorbis battle-epic: q3.65
#: 3.838 -> step up q9 4.664 -> q6.9 4.224, q7.7 4.070; docs/performance.md, session 15).
STEP_DOWN_WRITES = 2


def step_up(prober: Prober, i: int, miss_mos: float, knob: bool, steps_taken: int = 0) -> int | None:
    """The setting to write after the written file at setting ``i`` missed the bar by
    ``miss_mos``: on a ladder the next rung; on the knob a step sized from the miss by
    the curve's slope, at least ``CHECK_STEP_X``, doubled for each step already taken
    in vain (``steps_taken``: the whole track's curve is flat there, so the probes'
    slope misleads) (None: already at the top)."""
    if not knob or prober.axis is None:
        return i + 1 if i + 1 < len(prober.ladder) else None
    x = prober.knob_x(i)
    if x >= prober.axis.hi_x - 1e-9:
        return None
    floor_x = CHECK_STEP_X * 2 ** max(0, steps_taken)
    step = max(floor_x, (max(miss_mos, 0.0) + CHECK_AIM_MOS) / slope_near(prober, i))
    return prober.setting(prober.axis.value_of(min(x + step, prober.axis.hi_x)))


def step_down(prober: Prober, i: int, checked: float, bar: float) -> int | None:
    """The setting to write and check next after the written file at knob setting
    ``i`` of a *sampled* source passed with ``checked`` (None: keep it):
    knob_search.step_down_x over ``prober``'s probes."""
    x = prober.knob_x(i)
    if x is None or not prober.source.sampled:
        return None
    probes = [(xj, p.pooled_mos) for j, p in prober.probes.items() if (xj := prober.knob_x(j)) is not None]
    to = step_down_x(probes, x, checked, bar)
    if to is None:
        return None
    j = prober.setting(prober.axis.value_of(max(to, prober.axis.lo_x)))
    return j if prober.knob_x(j) < x - 1e-9 else None


def step_down_after_up(prober: Prober, miss_i: int, miss_mos: float, i: int, checked: float,
                       bar: float) -> int | None:
    """The setting to write and check next when knob setting ``miss_i`` scored
    ``miss_mos`` < ``bar`` (a step up's first write, or a step down that failed) and
    setting ``i`` above it passed with ``checked`` (None: keep ``i``):
    knob_search.step_down_between the two checks, strictly between the two settings
    once snapped to the knob."""
    xm, x = prober.knob_x(miss_i), prober.knob_x(i)
    if xm is None or x is None:
        return None
    to = step_down_between((xm, miss_mos), (x, checked), bar)
    if to is None:
        return None
    j = prober.setting(prober.axis.value_of(to))
    return j if xm + 1e-9 < prober.knob_x(j) < x - 1e-9 else None


def slope_near(prober: Prober, i: int) -> float:
    """MOS per ln kbps around setting ``i`` from the probes on each side (the prior
    when they do not rise)."""
    pts = sorted((math.log(p.bitrate_kbps), p.pooled_mos) for p in prober.probes.values()
                 if not math.isnan(p.pooled_mos) and p.bitrate_kbps > 0)
    x0 = math.log(prober.rungs[i].nominal_kbps)
    lower = [q for q in pts if q[0] < x0 - 1e-9]
    upper = [q for q in pts if q[0] >= x0 - 1e-9]
    if lower and upper and upper[0][1] > lower[-1][1]:
        sl = (upper[0][1] - lower[-1][1]) / (upper[0][0] - lower[-1][0])
        return min(max(sl, SLOPE_PRIOR_MOS_PER_X / 3), 3 * SLOPE_PRIOR_MOS_PER_X)
    return SLOPE_PRIOR_MOS_PER_X
