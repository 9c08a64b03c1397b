"""The knob search (issue 24): the lowest setting of a codec's continuous knob whose
pooled score meets the target, to within a tolerance (``search_knob``; the default
search). Pure logic like the ladder search (``ratecontrol.ladder_search``), whose dip
rule it carries over; ``ratecontrol.search`` re-exports both.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

from ratecontrol.ladder_search import DEFAULT_RULE, NEAR_MISS_MOS, RULES, _passes

__all__ = ["KNOB_NEAR_MISS_MOS", "KNOB_SLOPE_PRIOR_MOS_PER_X", "KNOB_TOLERANCE_MOS", "KnobOutcome", "RECHECK_X",
           "SLOPE_PRIOR_MOS_PER_X", "search_knob", "step_down_between", "step_down_x"]

# ---------------------------------------------------------------- the continuous knob (issue 24)
#
# The ladder's rungs are 14-25 % apart (Opus 64k -> 80k -> 96k ...), so the cheapest
# passing rung overpays by whatever lies between the true crossing and the next rung:
# 14.2 % more bits than the exact p10 crossing on 60 held-out searches (issue 24). Every
# encoder ratecontrol ships takes a continuous setting (libopus and native AAC any
# bitrate, LAME and libvorbis a float quality), so ``search_knob`` looks for the crossing
# itself. It is pure like ``search_ladder``: it works in a coordinate ``x`` that rises
# with the bits (the caller uses ln of the nominal kbps, so every tolerance below is a
# share of the bits whatever the knob's unit) and calls ``evaluate(x)`` for a pooled score.
#
# The next probe is where a monotone interpolation (scipy's PchipInterpolator, as Av1an's
# last stage) of the probed scores against x crosses ``bar + AIM_SHARE * tolerance``
# (bar = target + margin), clamped inside the bracket; while only failures (or only
# passes) are known it extrapolates by the secant slope (else the prior). It stops when a
# passing probe lies within ``tolerance`` of the bar, the bracket (lowest pass, highest
# failure below it) is narrower than ``bracket_x``, or the interpolation puts the bar's
# crossing within ``GAIN_X`` below the lowest pass. The dip rule of the ladder carries over
# with a rung's width as the step, once the bracket is done: a failure within
# ``near_miss`` of the bar with more than ``recheck_x`` of untested knob below it, and no
# lower probe scoring no higher (the curve kept falling), gets a probe ``recheck_x`` lower;
# a recheck that scores no higher settles the stretch below, one that passes opens a new
# bracket under it (tests/test_knob.py has a dip only the recheck finds). A fine search
# nearly always ends on a near miss, so the "lower probe scoring lower" clause is what keeps
# the rule from costing a probe per search; the caller's first probe sits below the
# typical crossing (probing/searching.py, FIRST_GUESS_RUNGS_BELOW_MIDDLE) so the search
# usually comes at the crossing from underneath. (Round 2 of issue 24 measured a first
# guess from a per-preset prior on the reference's complexity, ratecontrol/guess.py; it is
# off by default: docs/performance.md, "Round 2".)
# The choice is the passing probe of least ``cost`` (default: x; the caller passes the
# measured bits, so a setting that spends fewer actual bits wins, libopus surround).

#: stop once a passing probe is within this much of the bar (MOS). MOS rises 0.6-1.7 per
#: unit of ln kbps near the targets (0.11 MOS per ~20 % rung on the ladders, the oracle
#: bench; 1.7 on the Wesnoth curves, bench_knob.py), so 0.03 MOS is 2-5 % of the bits at
#: most. Chosen on simulated noisy curves (jitter 0.012 MOS, 30 % with a 0.02-0.1 step;
#: 400 searches, first probe 80k, margin 0.03): tolerance 0.02 / 0.03 / 0.04 took median
#: 4 / 3 / 3 probes (mean 3.58 / 3.43 / 3.15) for +2.8 / +3.1 / +3.6 % bits over the
#: crossing of the bar (with GAIN_X and KNOB_BRACKET_X at 3 %)
KNOB_TOLERANCE_MOS = 0.03
#: ... or once the bracket is this narrow in ln kbps (3 %). Round 2 of issue 24 measured
#: 7 % (with GAIN_X 4 %, the complexity prior, KNOB_SLOPE_PRIOR 1.0, UP_AIM_SHARE 1.0,
#: MIN_STEP 2 %, KNOB_NEAR_MISS 0.04) once on the held-out Wesnoth searches: bits +7.6 %
#: over the continuous oracle against +5.2 % with these values, probes median 4 / mean
#: 4.25 against 5 / 4.33; so these values stay (docs/performance.md, "Round 2")
KNOB_BRACKET_X = math.log(1.03)
#: ... or once the interpolation puts the bar's crossing this close below the lowest pass
#: (the next probe could save no more than that): 3 % took the simulated searches from
#: 3.76 to 3.58 probes at tolerance 0.02, +0.2 % bits
GAIN_X = math.log(1.03)
#: the probe aims this far into the tolerance band, so a small prediction error still passes
AIM_SHARE = 0.5
#: ... and this far when stepping up from failures only (no pass yet). Round 2 tried 1.0
#: (the top of the band: ``bench_knob.py simulate`` 0.3 / 0.7 / 1.0 / 1.5 took 3.70 /
#: 3.59 / 3.51 / 3.62 probes per search); not kept, see KNOB_BRACKET_X
UP_AIM_SHARE = 0.5
#: MOS per unit of ln kbps for extrapolating with one end open: SLOPE_PRIOR_MOS_PER_RUNG
#: (0.15) over the mean rung step of the Opus/AAC ladders (ln(256/16) / 12 = 0.23)
SLOPE_PRIOR_MOS_PER_X = 0.65
#: the knob search's slope prior (MOS per ln kbps; the default of ``slope_prior``).
#: Measured in round 2 on the learned rung curves of ``bench_knob.py curves`` (14
#: non-held-out Wesnoth tracks): the segment where p10 crosses 4.03 / 4.33 / 4.53 rises a
#: median 0.82 (Opus) and 1.38 (AAC) per ln kbps, quartiles 0.58-1.14 / 0.76-1.74. 1.0 was
#: part of the round-2 set that lost on the held-out tracks (KNOB_BRACKET_X), so the
#: first release's 0.65 stays
KNOB_SLOPE_PRIOR_MOS_PER_X = SLOPE_PRIOR_MOS_PER_X
#: the dip rule's step below a near miss: one ladder rung (~22 %, Opus/AAC)
RECHECK_X = math.log(1.22)
#: an extrapolation up never steps further than this (ln kbps: x1.6, about two rungs):
#: curves flatten towards the top, and a linear step from one low score overshoots (80k
#: -> 256k on a Wesnoth track). bench_knob.py replay, 8 searches (2 tracks x Opus/AAC x
#: 4.0/4.3): no cap 5.00 probes per search, +2.7 % bits over the oracle; x2 4.50, +3.7 %;
#: x1.6 4.38, +3.6 %
MAX_STEP_X = math.log(1.6)
#: ... and never less than this (ln kbps): from a near miss the slope asks for a step of
#: a few percent, which the curve's wiggles (+-0.02 MOS) often undo, and creeping up costs
#: a probe per step (round 2's 2 %, with steps aimed at the top of the band, was not kept)
MIN_STEP_X = math.log(1.1)
#: the dip rule's near-miss threshold on the knob (MOS below the bar): the ladder's 0.08.
#: Round 2 tried 0.04 (on the oracle bench the failures above a dip missed by 0.009-0.163,
#: median 0.04; ``simulate``: 0.07-0.12 probes per search fewer at the same bits), but on
#: the held-out run the search still paid rechecks that found nothing (legends_of_the_north
#: Opus 4.0: 25k and 20k after a near miss at 30k) and the set lost (KNOB_BRACKET_X)
KNOB_NEAR_MISS_MOS = NEAR_MISS_MOS
#: never more than this many probes (a bisection of the widest ladder to 2 % needs 8)
MAX_KNOB_PROBES = 10


@dataclass(frozen=True)
class KnobOutcome:
    """Result of a knob search: ``chosen`` is the chosen probe's x, None when the top failed."""

    chosen: float | None
    #: (x, pooled score) in the order they were probed
    probes: tuple[tuple[float, float], ...] = field(default_factory=tuple)

    @property
    def reached(self) -> bool:
        return self.chosen is not None


def search_knob(
    evaluate: Callable[[float], float],
    target: float,
    lo_x: float,
    hi_x: float,
    *,
    first_x: float | None = None,
    margin: float = 0.0,
    snap: Callable[[float], float] | None = None,
    cost: Callable[[float], float] | None = None,
    tolerance: float = KNOB_TOLERANCE_MOS,
    bracket_x: float = KNOB_BRACKET_X,
    gain_x: float = GAIN_X,
    near_miss: float = KNOB_NEAR_MISS_MOS,
    recheck_x: float = RECHECK_X,
    rule: str = DEFAULT_RULE,
    slope_prior: float = KNOB_SLOPE_PRIOR_MOS_PER_X,
    max_probes: int = MAX_KNOB_PROBES,
    known: dict[float, float] | None = None,
    parallel: int = 1,
    evaluate_many: Callable[[Sequence[float]], Sequence[float]] | None = None,
) -> KnobOutcome:
    """Find the cheapest ``x`` in ``[lo_x, hi_x]`` with ``evaluate(x) >= target + margin``,
    to within ``tolerance`` MOS above the bar or ``bracket_x`` in x, or until the curve puts
    the bar's crossing within ``gain_x`` below the lowest pass.

    ``snap(x)``: the nearest x the knob can take (its resolution); every probe is
    snapped. ``first_x``: the first probe (default: the middle). ``cost(x)``: what the
    choice minimises among passing probes (default x). ``known``: scores measured before
    (another target on the same curve), used as probes without calling ``evaluate`` (they
    may be chosen; ``probes`` lists only the new ones). ``parallel`` 2: each round
    probes the next point and a companion a little above it (where the curve's slope puts
    the top of the tolerance band), so a round that just misses usually ends the search;
    ``evaluate_many`` runs a round (default: a thread per point). ``rule``: ``"recheck"`` (default)
    or ``"monotone"`` (no dip rechecks). Returns the probes in order and the chosen x
    (None when ``hi_x`` was probed and failed: the target is unreachable).
    """
    if not hi_x >= lo_x:
        raise ValueError(f"the knob's range is empty: [{lo_x}, {hi_x}]")
    if rule not in RULES:
        raise ValueError(f"unknown search rule {rule!r}; use one of {RULES}")
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0 MOS, got {margin}")
    bar = float(target) + float(margin)
    snap = snap or (lambda x: x)
    cost = cost or (lambda x: x)
    lo_x, hi_x = snap(lo_x), snap(hi_x)
    scores: dict[float, float] = {snap(x): float(s) for x, s in (known or {}).items()}
    order: list[tuple[float, float]] = []
    rechecked: set[float] = set()
    x = snap(min(max((lo_x + hi_x) / 2 if first_x is None else first_x, lo_x), hi_x))
    if scores:
        x = _next_knob(scores, bar, lo_x, hi_x, snap, tolerance, bracket_x, near_miss, recheck_x,
                       rule, rechecked, slope_prior, gain_x)
    if parallel > 1 and evaluate_many is None:
        def evaluate_many(xs):
            with ThreadPoolExecutor(len(xs)) as ex:
                return list(ex.map(evaluate, xs))
    # the budget counts once a setting has passed: until then the search must still find
    # a pass or probe the top before it may say "unreachable" (a hard ceiling of twice it)
    while x is not None and len(order) < 2 * max_probes and (
            len(order) < max_probes or not any(_passes(s, bar) for s in scores.values())):
        pts = [x]
        if parallel > 1:
            c = _companion(x, scores, bar, lo_x, hi_x, snap, tolerance, bracket_x, slope_prior)
            if c is not None and c != x:
                pts.append(c)
        got = [float(s) for s in (evaluate_many(pts) if len(pts) > 1 else [evaluate(x)])]
        for xi, s in zip(pts, got):
            scores[xi] = s
            order.append((xi, s))
        x = _next_knob(scores, bar, lo_x, hi_x, snap, tolerance, bracket_x, near_miss, recheck_x,
                       rule, rechecked, slope_prior, gain_x)
    passing = [x for x, s in scores.items() if _passes(s, bar)]
    chosen = min(passing, key=lambda x: (cost(x), x)) if passing else None
    return KnobOutcome(chosen=chosen, probes=tuple(order))


def _companion(x, scores, bar, lo_x, hi_x, snap, tolerance, bracket_x, slope_prior) -> float | None:
    """The second point of a round. While an end of the bracket is open, a wide step
    towards it (``COMPANION_X`` beyond ``x``; below it in the first round, where no side
    is known), so the round is likely to close the bracket; once both ends are measured,
    above ``x`` by the tolerance band's width on the curve's slope, so a round whose
    first point just misses usually ends the search. None if there is no room."""
    passes = [p for p, s in scores.items() if _passes(s, bar)]
    fails = [p for p, s in scores.items() if not _passes(s, bar)]
    if not passes:
        c = x + COMPANION_X if fails else x - COMPANION_X
    elif not [p for p in fails if p < min(passes)]:
        c = x - COMPANION_X
    else:
        pts = sorted((p, s) for p, s in scores.items() if not math.isnan(s))
        near = sorted(sorted(pts, key=lambda p: abs(p[0] - x))[:2])
        c = x + max(tolerance / _knob_slope(near, slope_prior), bracket_x)
    c = snap(min(max(c, lo_x), hi_x))
    if c in scores or c == x or (passes and c >= min(passes)):
        return None
    return c


#: the companion's step while an end of the bracket is open (ln kbps: 40 %, two rungs)
COMPANION_X = math.log(1.4)


def _knob_slope(pts: list[tuple[float, float]], prior: float) -> float:
    """MOS per x from the two probes nearest the open end (``pts`` sorted by x), if they
    rise; never flatter than a third of the prior (a flat stretch would send the next
    probe to the end of the range) nor steeper than three times it."""
    if len(pts) >= 2:
        (x1, s1), (x2, s2) = pts[0], pts[1]
        if s2 > s1 and x2 > x1:
            return min(max((s2 - s1) / (x2 - x1), prior / 3), 3 * prior)
    return prior


def _knob_covered(f: float, scores: dict[float, float], bar: float, near_miss: float, lo_x: float,
                  recheck_x: float, rechecked: set[float], rule: str) -> bool:
    """Does the failure at ``f`` speak for the untested stretch below it (as ``_covers``
    for a rung)? Yes at the bottom of the range, for nan, for a clear miss, when a probe
    lies within ``recheck_x`` below it, or when it is the recheck of a near miss above it
    and scores no higher."""
    s = scores[f]
    if rule == "monotone" or f <= lo_x or math.isnan(s) or bar - s > near_miss:
        return True
    below = [x for x in scores if x < f]
    if below and f - max(below) <= recheck_x * 1.01:
        return True
    if rule == "recheck" and any(not math.isnan(scores[g]) and scores[g] <= s for g in below):
        # a lower probe scores no higher: the curve kept falling below the near miss, as
        # a recheck that scores no higher says on a ladder. Without it every search would
        # pay a recheck: a fine search nearly always ends on a near miss (issue 24)
        return True
    if rule == "recheck" and f in rechecked:
        up = [x for x in scores if x > f]
        if up:
            u = min(up)
            return not math.isnan(scores[u]) and s <= scores[u] < bar
    return False


def _crossing(scores: dict[float, float], lo: float, hi: float, level: float) -> float | None:
    """Where a PCHIP through the probed scores crosses ``level`` inside ``(lo, hi)``."""
    from scipy.interpolate import PchipInterpolator

    pts = sorted((x, s) for x, s in scores.items() if not math.isnan(s))
    xs = [p[0] for p in pts]
    if lo not in xs or hi not in xs:
        return None
    if len(pts) == 2:
        (x1, s1), (x2, s2) = pts
        return x1 + (level - s1) / (s2 - s1) * (x2 - x1) if s2 != s1 else None
    f = PchipInterpolator(xs, [p[1] for p in pts], extrapolate=False)
    roots = [float(r) for r in f.solve(level, extrapolate=False) if lo < r < hi]
    return roots[0] if roots else None


def _next_knob(scores, bar, lo_x, hi_x, snap, tolerance, bracket_x, near_miss, recheck_x, rule,
               rechecked, slope_prior, gain_x=GAIN_X) -> float | None:
    x = _next_bracket(scores, bar, lo_x, hi_x, snap, tolerance, bracket_x, slope_prior, gain_x)
    if x is not None or not any(_passes(s, bar) for s in scores.values()):
        return x
    # the bracket is done: now the dip rule. A near miss below the lowest pass with more
    # than a rung of untested knob below it is rechecked a rung lower (after the bracket,
    # not before: probes that narrowed it often settle the stretch for free)
    hi = min(x for x, s in scores.items() if _passes(s, bar))
    for f in sorted((x for x in scores if x < hi), reverse=True):
        if not _knob_covered(f, scores, bar, near_miss, lo_x, recheck_x, rechecked, rule):
            x = snap(max(f - recheck_x, lo_x))
            if x not in scores:
                rechecked.add(x)
                return x
    return None


def _next_bracket(scores, bar, lo_x, hi_x, snap, tolerance, bracket_x, slope_prior, gain_x=GAIN_X) -> float | None:
    passes = sorted(x for x, s in scores.items() if _passes(s, bar))
    hi = passes[0] if passes else None
    below = [x for x in scores if hi is None or x < hi]
    lo = max(below) if below else None
    aim = bar + AIM_SHARE * tolerance

    def fresh(x):
        x = snap(min(max(x, lo_x), hi_x))
        return None if x in scores else x

    if hi is None:  # only failures: up from the highest, by the slope
        if lo >= hi_x:
            return None  # the top of the range fails: unreachable
        s_lo = scores[lo]
        if math.isnan(s_lo):
            return fresh((lo + hi_x) / 2)
        sl = _knob_slope(sorted((x, s) for x, s in scores.items() if x <= lo and not math.isnan(s))[-2:], slope_prior)
        step = min(max((bar + UP_AIM_SHARE * tolerance - s_lo) / sl, MIN_STEP_X), MAX_STEP_X)
        return fresh(lo + step) or fresh(hi_x)
    s_hi = scores[hi]
    if s_hi - bar <= tolerance or hi <= lo_x:
        return None  # close enough above the bar, or the bottom of the range passes
    if lo is None:  # only passes: down from the lowest, by the slope
        sl = _knob_slope(sorted((x, s) for x, s in scores.items() if x >= hi and not math.isnan(s))[:2], slope_prior)
        step = max((s_hi - aim) / sl, MIN_STEP_X)  # no cap down: curves steepen there
        return fresh(hi - step) or fresh(lo_x)
    if hi - lo <= bracket_x:
        return None
    at_bar = _crossing(scores, lo, hi, bar)
    if at_bar is not None and hi - at_bar <= gain_x:
        return None  # the curve predicts the bar within gain_x below the pass: too little to win
    x = _crossing(scores, lo, hi, aim)
    span = hi - lo
    if x is None:
        x = lo + span / 2
    # strictly inside the bracket, out of its outer tenths: a poor interpolation still
    # cuts the bracket by a tenth or more, and the two ends are never probed again
    x = min(max(x, lo + 0.1 * span), hi - 0.1 * span)
    nxt = fresh(x)
    if nxt is None or not lo < nxt < hi:
        return None  # the bracket is within the knob's resolution
    return nxt


# ---------------------------------------------------------------- the check's step down
#
# A sampled search decides on 20 % of the track, and the sample's p10 reads the whole
# track's to about +-0.065 MOS (docs/performance.md, "Where a sampled search stops").
# Near the bar the whole track's curve is often flat (20 Wesnoth tracks, Opus 4.3,
# full-track p10 on a 4 % grid: frantic-old 4.331 at 81k .. 4.358 at 103k), so that
# error is worth 10-30 % of the bits: the files written on those 20 tracks took 8.4 %
# more bits than the settings where their whole-track p10 crosses the bar
# (docs/performance.md, "The written file against the whole track's curve"). When the
# check passes, its offset from the sample at the same setting says how far the sample
# read low; the sample's own curve, shifted by it, predicts where the whole track
# crosses (``step_down_x``), and the caller writes and checks that setting too.

#: the step down aims this far above the bar (MOS), so a small prediction error still passes
STEP_DOWN_AIM_MOS = 0.02
#: ... and is taken only when it saves at least this much (ln kbps: 5 %): a second write
#: and check costs about two plain encodes, ...
STEP_DOWN_MIN_X = math.log(1.05)
#: ... and never goes further than this below the written setting (ln kbps: 30 %)
STEP_DOWN_MAX_X = math.log(1.3)


def step_down_x(probes: Sequence[tuple[float, float]], x: float, checked: float, bar: float, *,
                aim: float = STEP_DOWN_AIM_MOS, min_x: float = STEP_DOWN_MIN_X, max_x: float = STEP_DOWN_MAX_X,
                slope_prior: float = KNOB_SLOPE_PRIOR_MOS_PER_X) -> float | None:
    """Where to write next after the file written at ``x`` passed its check with
    ``checked`` >= ``bar`` (None: stay). ``probes``: the search's (x, pooled score) on
    its sample, ``x`` among them. The probes' curve is moved by ``checked`` minus the
    sample's score at ``x``; the step goes down to where that curve (PCHIP through the
    probes) crosses ``bar + aim``, no lower than the highest probe below ``x`` that
    still fails when moved, by ``slope_prior`` below the lowest probe when every one
    passes moved; at most ``max_x``, and only when at least ``min_x``."""
    pts = sorted({float(a): float(b) for a, b in probes if not math.isnan(b)}.items())
    xs = [p[0] for p in pts]
    level = bar + aim
    if not checked >= level or x not in xs:
        return None  # a miss, or a pass within the aim of the bar: nothing to win
    offset = checked - pts[xs.index(x)][1]
    moved = [(a, b + offset) for a, b in pts]
    lowest, fail = x, None
    for a, b in reversed([p for p in moved if p[0] <= x]):
        if b >= level:
            lowest = a
        else:
            fail = (a, b)
            break
    lowest_mos = dict(moved)[lowest]
    if fail is None:
        to = lowest - max(lowest_mos - level, 0.0) / slope_prior
    else:
        to = _crossing(dict(moved), fail[0], lowest, level)
        if to is None:
            to = lowest
    to = max(to, x - max_x)
    return to if x - to >= min_x else None


def step_down_between(miss: tuple[float, float], passed: tuple[float, float], bar: float, *,
                      aim: float = STEP_DOWN_AIM_MOS, min_x: float = STEP_DOWN_MIN_X) -> float | None:
    """Where to write next once two checks bracket the crossing: the file at ``miss`` =
    (x, score) missed the bar (a step up's first write, or a step down that failed), the
    one at ``passed`` above it passed (None: keep it). Both scores are whole-track checks,
    not the sample's, so the crossing of ``bar + aim`` is interpolated linearly in x
    between them; the step is taken only when it saves at least ``min_x``. Why: a step up
    that missed again doubles (probing.steps.step_up: 6, 12.4, 26 %), and the last one can
    land far above the bar (main_menu, Opus 4.3: 82k scored 4.273, 104k 4.390; its
    whole-track p10 crosses 4.33 near 86k)."""
    (xm, sm), (xp, sp) = miss, passed
    level = bar + aim
    if not (xm < xp and sm < bar and sp >= level):
        return None
    to = xm + (level - sm) / (sp - sm) * (xp - xm)
    return to if xp - to >= min_x else None
