"""Search a codec's knob (``search_knob``, the default since issue 24: the lowest setting
whose pooled score meets the target, to within a tolerance; see the section at the end
of this module) or its ladder (``search_ladder``: the cheapest rung, ``ladder=True``).

Pure logic: ``search_ladder`` knows nothing about audio; it calls ``evaluate(i)`` for a
rung index and gets a pooled score back. ``margin`` raises the bar: the search for
``target`` with margin ``m`` is exactly the search for ``target + m`` (every statement
below about "the target" then reads "target + m"). Its default here is 0; the margin
measured for the learned scorer is 0.03 MOS (the 97th percentile of its error on a
track's p10; docs/performance.md, "Oracle bench and dipping curves"), and the caller
owns the user-facing default.

Invariants, on any curve:

* a rung is only returned on its own passing probe;
* the rung just below the returned one was measured and failed (or it is the bottom rung);
* (``recheck`` rule, the default) every *untested* rung below the returned one lies under
  a failure that speaks for it: the probed rung just above the gap missed the target by
  more than ``near_miss`` (0.08 MOS), or it was probed as the recheck of a near miss just
  above it and scored no higher than that one. On a monotone curve that is the
  bisection invariant (everything at or below ``lo`` fails); on a dipping curve it says
  how much of a dip the search can miss: one whose failing rungs all miss by more than
  0.08 and that is seen from above, never as a local rise.

Monotone machinery: ``hi`` is the lowest passing probe, ``lo`` the highest probed rung
below it, the answer lies in ``(lo, hi]``. Between two measured ends the next probe is
placed by linear interpolation of the score in rung index (ladders are roughly geometric
in kbps, and MOS is roughly linear in log-kbps over the useful range), clamped strictly
inside the bracket and nudged towards the middle so a bad interpolation still shrinks
the bracket by at least a third. While one end is still virtual (only failures, or only
passes, so far) the next probe is extrapolated from the measured end by the curve's
slope (the secant of the two nearest probes, else ``SLOPE_PRIOR_MOS_PER_RUNG``), never
further than the half-way step, which keeps bisection's bound. With a 13-rung ladder
bisection alone needs ceil(log2(14)) = 4 probes; interpolation usually needs 2-3. On the
oracle bench (below, k = 1, margin 0.03) the extrapolation took the mean from 3.92 to
3.67 probes per search (k = 2: 4.56 -> 4.49) with the same choices to within 0.1 %.

Why a recheck (issue 14). Real rate-quality curves are not monotone. Every rung of every
preset was scored with the learned scorer on the 52 real-music tracks of ../shared/audio
(``bench/bench_oracle.py``; 16 FLAC-testbench excerpts, 36 sms-tools recordings): with
p10 pooling 30 of 52 Opus curves dip somewhere by more than 0.02 MOS (median depth 0.08,
deepest 0.74), AAC 27, Vorbis 19, MP3 CBR 15, MP3 VBR 3 (mean pooling: 9 / 13 / 8 / 4 /
2). Dips sit at the codecs' mode switches (down steps by > 0.02: Vorbis q3 -> q4 on 9
curves, Opus 20k -> 24k on 8 mono ones, AAC 16k -> 24k 7, Opus 64k -> 80k 6, AAC 96k ->
112k 6), and the rung before a down step scores a median 4.09: where targets are. The
first releases assumed monotonicity: a failure at rung j was taken as proof for every
untested rung below j, so a search that probed the bottom of a dip went up and paid for
a rung above it (2x the bits on the issue's soprano recording). On the bench (780
searches, targets 4.0 / 4.3 / 4.5, 672 reachable) that search chose above the oracle
(the cheapest passing rung) 12 times with k = 1 and 9 times with k = 2. In 22 of the 672
cases some rung above the oracle fails; the worst such rung misses the target by
0.009-0.163 MOS (median 0.04, 14 of 22 within 0.08): dips are shallow, so a failure that
misses by a lot still speaks for the rungs below it, and one that misses by a hair does
not.

The rule: a failure within ``near_miss`` of the target with an untested rung directly
below it gets that rung probed (the recheck), highest such failure first; a recheck
that passes becomes the new ``hi`` and the bracket below it is searched as usual; one
that fails and scores no higher than the near miss above it (the curve resumed falling)
speaks for the rungs below; one that scores higher (the curve turned down once already)
is a near miss like any other and is rechecked in turn. Under ``parallel=k`` a round's
rechecks go first and the bracket's usual points fill the round. Measured on the bench
(same-rung % vs the oracle, median / mean probes per search; k = 1 | k = 2):

    monotone (old)            98.2 % 4 / 3.66   | 98.7 % 4 / 4.43
    recheck, near_miss 0.06   99.4 % 4 / 3.85   | 99.3 % 4 / 4.52
    recheck, near_miss 0.08   99.4 % 4 / 3.89   | 99.4 % 4 / 4.56   <- default
    recheck, near_miss 0.10   99.6 % 4 / 3.94   | 99.6 % 5 / 4.60
    recheck, near_miss 0.15   99.9 % 4 / 4.07   | 99.9 % 5 / 4.69
    strict, near_miss 0.15    99.9 % 4 / 4.15   | 99.9 % 5 / 4.76   (only a clear miss covers)
    strict, near_miss 0.20   100.0 % 4 / 4.30   | 100.0 % 5 / 4.87

0.08 is the largest threshold that keeps the median probe count at today's 4 for both k
(the cost issue wants fewer probes, not more); it costs +0.23 / +0.13 probes per search
on average and leaves 4 of 672 searches above the oracle (bits +0.2 % over the oracle in
total, was +0.5 %). The strict variant (``rule="recheck-strict"``: a near miss never
speaks for the rungs below, however the recheck came out) buys nothing at equal
threshold and costs more; a hull fitted over the probed points cannot see a dip between
them either, so it was not pursued. ``rule="monotone"`` is the old search.

``parallel=k`` probes up to k rungs per round at once (the caller's ``evaluate_many``
runs them side by side, e.g. one ffmpeg per core). While an end of the bracket is
virtual and it is wide, the k points split it evenly; once both ends are measured, the
interpolated rung goes with its neighbour below, so a good interpolation ends the search
in one round (that rung passes, the one below fails). Wall time then follows rounds,
not probes.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

__all__ = ["DEFAULT_RULE", "KNOB_NEAR_MISS_MOS", "KNOB_SLOPE_PRIOR_MOS_PER_X", "KNOB_TOLERANCE_MOS", "KnobOutcome",
           "LadderOutcome", "NEAR_MISS_MOS", "RECHECK_X", "RULES", "SLOPE_PRIOR_MOS_PER_RUNG", "SLOPE_PRIOR_MOS_PER_X",
           "search_knob", "search_ladder"]


@dataclass(frozen=True)
class LadderOutcome:
    """Result of a ladder search: ``chosen`` is None when even the top rung failed."""

    chosen: int | None
    #: (rung index, pooled score) in the order they were probed
    probes: tuple[tuple[int, float], ...] = field(default_factory=tuple)

    @property
    def reached(self) -> bool:
        return self.chosen is not None


def _passes(score: float, target: float) -> bool:
    # nan (nothing scorable) never passes: a rung must earn its place
    return not math.isnan(score) and score >= target


#: search rules: ``monotone`` is the bisection/interpolation of the first releases
#: (a failure proves every rung below it fails); ``recheck`` (default) trusts a failure
#: to speak for the untested rungs below it only when it misses by more than
#: ``near_miss``, or when it is the recheck of a near miss above it and scores no higher;
#: ``recheck-strict`` only in the first case (see the module docstring)
RULES = ("monotone", "recheck", "recheck-strict")
DEFAULT_RULE = "recheck"
#: a failure within this much of the target does not prove the untested rungs below it fail
NEAR_MISS_MOS = 0.08
#: MOS gained per rung up the ladder, for extrapolating while one end of the bracket is
#: still virtual. Measured on the oracle bench's learned curves (52 real tracks, rungs
#: scoring 3.6-4.6 p10): median 0.07-0.12 per rung by preset (mean 0.11-0.13); 0.15,
#: a little steeper, needed the fewest probes (mean 3.63 per search at k = 1 against
#: 3.70 at 0.10 and 3.97 at 0.05; 3.92 with the old half-way step): overshooting by a
#: rung costs less than creeping up
SLOPE_PRIOR_MOS_PER_RUNG = 0.15


def search_ladder(
    n_rungs: int,
    evaluate: Callable[[int], float],
    target: float,
    first_guess: int | None = None,
    parallel: int = 1,
    evaluate_many: Callable[[Sequence[int]], Sequence[float]] | None = None,
    *,
    margin: float = 0.0,
    rule: str = DEFAULT_RULE,
    near_miss: float = NEAR_MISS_MOS,
) -> LadderOutcome:
    """Find the lowest rung ``i`` in ``[0, n_rungs)`` with ``evaluate(i) >= target + margin``.

    ``first_guess`` is where to probe first (default: the middle rung). ``parallel``:
    rungs probed per round; ``evaluate_many(indices)`` evaluates a round's rungs
    (default: ``evaluate`` in a thread per rung). ``margin`` (MOS, >= 0) raises the bar
    every probe must clear: the search for ``target`` with margin ``m`` is the search
    for ``target + m``. ``rule``: ``"recheck"`` (default) or ``"monotone"``;
    ``near_miss``: the recheck rule's threshold (MOS).
    """
    if n_rungs < 1:
        raise ValueError("the ladder has no rungs")
    if parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel}")
    if rule not in RULES:
        raise ValueError(f"unknown search rule {rule!r}; use one of {RULES}")
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0 MOS, got {margin}")
    # one loop for every k: with k = 1 a round is the single bisection/interpolation point
    return _search_rounds(n_rungs, evaluate, evaluate_many, float(target) + float(margin), first_guess, parallel,
                          rule, float(near_miss))


def _round_points(lo: int, hi: int, scores: dict[int, float], target: float, n_rungs: int,
                  k: int, first_guess: int | None) -> list[int]:
    inside = [i for i in range(lo + 1, hi) if i not in scores]
    if len(inside) <= k:
        return inside
    span = hi - lo
    if k > 1 and first_guess is None and (lo < 0 or hi >= n_rungs) and span - 1 > 2 * k:
        # nothing to interpolate with yet: split the bracket evenly
        pts = sorted({min(max(lo + round(span * j / (k + 1)), lo + 1), hi - 1) for j in range(1, k + 1)})
    else:
        g = first_guess if first_guess is not None else _next_probe(lo, hi, scores, target, n_rungs)
        g = min(max(g, lo + 1), hi - 1)
        pts = [g]
        for c in (g - 1, g + 1, g - 2, g + 2, g - 3, g + 3):
            if len(pts) >= k:
                break
            if lo < c < hi and c not in scores and c not in pts:
                pts.append(c)
    return sorted(p for p in pts if p not in scores)


def _covers(f: int, scores: dict[int, float], target: float, near_miss: float, rechecked: set[int] | None) -> bool:
    """Does the failure at ``f`` speak for the untested rungs below it?

    Yes if it misses the target by more than ``near_miss`` (or is the bottom rung, or
    nothing scorable), or if it was itself probed as the recheck of the near miss just
    above it and scores no higher than that one: the curve resumed falling as the rate
    drops, it did not turn down. ``rechecked`` is None under the strict variant (only
    a clear miss speaks for the rungs below).
    """
    s = scores[f]
    if f == 0 or math.isnan(s) or target - s > near_miss:
        return True
    up = scores.get(f + 1)
    return rechecked is not None and f in rechecked and up is not None and not math.isnan(up) and s <= up < target


def _doubt_points(scores: dict[int, float], hi: int, target: float, near_miss: float,
                  rechecked: set[int] | None) -> list[int]:
    """Under the recheck rule: the rung just below each near-miss failure that does not
    cover the untested rungs under it, highest first."""
    out = []
    for f in sorted((i for i in scores if i < hi and not _passes(scores[i], target)), reverse=True):
        if f - 1 >= 0 and f - 1 not in scores and not _covers(f, scores, target, near_miss, rechecked):
            out.append(f - 1)
    return out


def _search_rounds(n_rungs, evaluate, evaluate_many, target, first_guess, k, rule="monotone",
                   near_miss=NEAR_MISS_MOS) -> LadderOutcome:
    scores: dict[int, float] = {}
    order: list[tuple[int, float]] = []
    if evaluate_many is None and k > 1:
        def evaluate_many(idx):
            with ThreadPoolExecutor(len(idx)) as ex:
                return list(ex.map(evaluate, idx))
    guess = None if first_guess is None else min(max(first_guess, 0), n_rungs - 1)
    rechecked: set[int] = set()  # rungs probed as the recheck of a near miss above them
    while True:
        # hi: the lowest passing rung; lo: the highest failure below it. Failures above
        # a pass (a non-monotone curve) are moot: a rung is returned on its own probe
        hi = min([i for i in scores if _passes(scores[i], target)] + [n_rungs])
        lo = max([-1] + [i for i in scores if i < hi])
        pts = []
        if rule != "monotone":
            pts = _doubt_points(scores, hi, target, near_miss, None if rule == "recheck-strict" else rechecked)[:k]
            rechecked.update(pts)
        if len(pts) < k and hi - lo > 1:
            pts += [p for p in _round_points(lo, hi, scores, target, n_rungs, k - len(pts), guess) if p not in pts]
        if not pts:
            break
        pts = sorted(pts)
        guess = None
        got = [float(s) for s in (evaluate_many(pts) if len(pts) > 1 else [evaluate(pts[0])])]
        for i, sc in zip(pts, got):
            scores[i] = sc
            order.append((i, sc))
    chosen = hi if hi < n_rungs else None
    return LadderOutcome(chosen=chosen, probes=tuple(order))


def _slope(points: list[tuple[int, float]]) -> float:
    """MOS per rung for extrapolating past the measured end of the bracket: the secant
    of the two probes nearest that end when they rise with the rate, else the prior;
    never flatter than a third of the prior (a flat stretch would send the next probe
    to the end of the ladder)."""
    if len(points) >= 2:
        (i1, s1), (i2, s2) = points[0], points[1]
        if s2 > s1:
            return max((s2 - s1) / (i2 - i1), SLOPE_PRIOR_MOS_PER_RUNG / 3)
    return SLOPE_PRIOR_MOS_PER_RUNG


def _next_probe(lo: int, hi: int, scores: dict[int, float], target: float, n_rungs: int) -> int:
    mid = (lo + hi) // 2
    if lo < 0 and hi >= n_rungs:
        return mid
    if lo < 0 or hi >= n_rungs:
        # one end is virtual: extrapolate from the measured end by the curve's slope
        # (issue 13: 3.92 -> 3.63 probes per search on the oracle bench, same choices)
        if hi >= n_rungs:
            s_lo = scores[lo]
            if math.isnan(s_lo):
                return max(lo + 1, (lo + n_rungs) // 2 if n_rungs - lo > 2 else n_rungs - 1)
            fails = sorted(((i, s) for i, s in scores.items() if i <= lo and not math.isnan(s)), reverse=True)
            sl = _slope(sorted(fails[:2]))
            # never further than the old half-way step: that keeps bisection's worst case
            half = max(lo + 1, (lo + n_rungs) // 2 if n_rungs - lo > 2 else n_rungs - 1)
            return min(max(lo + 1, lo + math.ceil((target - s_lo) / sl - 1e-9)), half)
        s_hi = scores[hi]
        if math.isnan(s_hi):
            return mid
        passes = sorted((i, s) for i, s in scores.items() if i >= hi and not math.isnan(s))
        sl = _slope(passes[:2])
        # the lowest rung still expected to pass, no further down than the middle
        return max(min(hi - 1, hi - math.floor((s_hi - target) / sl + 1e-9)), mid)
    s_lo, s_hi = scores[lo], scores[hi]
    if math.isnan(s_lo) or math.isnan(s_hi) or s_hi <= s_lo:
        return mid
    frac = (target - s_lo) / (s_hi - s_lo)
    guess = lo + frac * (hi - lo)
    # the passing rung is the first at or above the crossing point
    i = math.ceil(guess - 1e-9)
    # keep strictly inside the bracket, and not in its outer sixths, so a poor
    # interpolation still cuts the bracket substantially (worst case ~2/3 of it)
    span = hi - lo
    lo_lim = lo + max(1, span // 6)
    hi_lim = hi - max(1, span // 6)
    if lo_lim > hi_lim:
        return mid
    return min(max(i, lo_lim), hi_lim)


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
# the rule from costing a probe per search; the caller's first probe sits a little below
# the predicted crossing (ratecontrol/guess.py: a per-preset prior from cheap features of
# the reference, FIRST_GUESS_OFFSET_X) so the search often comes at it from underneath.
# On the knob a near miss is ``KNOB_NEAR_MISS_MOS`` (0.04), not the ladder's 0.08.
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
#: ... or once the bracket is this narrow in ln kbps (7 %: a probe inside it saves 3.5 %
#: of the bits on average). Round 2 (issue 24), ``bench_knob.py simulate`` (learned rung
#: curves of 14 non-held-out Wesnoth tracks, Opus/AAC, targets 4.0/4.3/4.5, the prior
#: fitted leave-one-track-out): bracket 3 % / 5 % / 7 % / 10 % took 3.52 / 3.49 / 3.41 /
#: 3.33 probes per search for +2.6 / +3.0 / +3.2 / +3.6 % kbps over the bar's crossing
KNOB_BRACKET_X = math.log(1.07)
#: ... or once the interpolation puts the bar's crossing this close below the lowest pass
#: (the next probe could save no more than that). First release 3 % (3.76 -> 3.58 probes
#: on simulated curves, +0.2 % bits). Round 2, ``simulate`` as above at bracket 7 %:
#: 3 % / 5 % / 7 % gave 3.41 / 3.33 / 3.15 probes, +3.2 / +3.3 / +3.9 % kbps; ``replay``
#: on the 3 tuning tracks (12 searches) 5 % 3.67 probes but one search stopped 10 % over
#: (a linear interpolation across a step, defeat2 AAC 4.0); 4 % keeps the smooth-curve
#: test under +3 % (tests/test_knob.py: 2.7 % mean, 3.19 probes)
GAIN_X = math.log(1.04)
#: the probe aims this far into the tolerance band, so a small prediction error still
#: passes (round 2: 0.3 against 0.5 took 0.1 probe and ~0.6 % kbps off in ``simulate``)
AIM_SHARE = 0.3
#: ... and this far when stepping up from failures only (no pass yet): the top of the
#: band, since a step that falls short costs a probe and one that passes brackets the
#: crossing (round 2, ``simulate``: UP_AIM_SHARE 0.3 / 0.7 / 1.0 / 1.5 took 3.70 / 3.59 /
#: 3.51 / 3.62 probes per search)
UP_AIM_SHARE = 1.0
#: MOS per unit of ln kbps for extrapolating with one end open: SLOPE_PRIOR_MOS_PER_RUNG
#: (0.15) over the mean rung step of the Opus/AAC ladders (ln(256/16) / 12 = 0.23)
SLOPE_PRIOR_MOS_PER_X = 0.65
#: the knob search's own slope prior (MOS per ln kbps), for the step from the first probe.
#: Measured (round 2) on the learned rung curves of ``bench_knob.py curves``: the slope
#: of the segment where p10 crosses 4.03 / 4.33 / 4.53 has median 0.82 (Opus) and 1.38
#: (AAC), quartiles 0.58-1.14 / 0.76-1.74. (SLOPE_PRIOR_MOS_PER_X stays 0.65 for the
#: check's step up, Prober.step_up)
KNOB_SLOPE_PRIOR_MOS_PER_X = 1.0
#: the dip rule's step below a near miss: one ladder rung (~22 %, Opus/AAC)
RECHECK_X = math.log(1.22)
#: an extrapolation up never steps further than this (ln kbps: x1.6, about two rungs):
#: curves flatten towards the top, and a linear step from one low score overshoots (80k
#: -> 256k on a Wesnoth track). bench_knob.py replay, 8 searches (2 tracks x Opus/AAC x
#: 4.0/4.3): no cap 5.00 probes per search, +2.7 % bits over the oracle; x2 4.50, +3.7 %;
#: x1.6 4.38, +3.6 %
MAX_STEP_X = math.log(1.6)
#: ... and never less than this (ln kbps). First release 10 %: from a near miss the slope
#: asks for a step of a few percent, which the curve's wiggles often undo. With the step
#: aimed at the top of the band (UP_AIM_SHARE) 2 % does better: round 2 ``simulate`` 2 % /
#: 5 % / 10 % (slope prior 1.0) 3.46 / 3.52 / 3.7 probes, +2.2 / +2.4 / +2.0 % kbps
MIN_STEP_X = math.log(1.02)
#: the dip rule's near-miss threshold on the knob (MOS below the bar); the ladder keeps
#: NEAR_MISS_MOS (0.08). Round 2 (issue 24): on the knob the recheck cost 0.44 probes per
#: search on the held-out Wesnoth searches and found no cheaper setting (5 rechecks, all
#: failed); on the oracle bench the failures above a dip missed by 0.009-0.163 (median
#: 0.04), so 0.04 still rechecks the closer half. ``simulate``: 0.04 against 0.08 took
#: 0.07-0.12 probes per search off at the same bits (tests/test_knob.py has both sides)
KNOB_NEAR_MISS_MOS = 0.04
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
    to within ``tolerance`` MOS above the bar or ``bracket_x`` in x.

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
                       rule, rechecked, slope_prior)
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
                       rule, rechecked, slope_prior)
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
               rechecked, slope_prior) -> float | None:
    x = _next_bracket(scores, bar, lo_x, hi_x, snap, tolerance, bracket_x, slope_prior)
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


def _next_bracket(scores, bar, lo_x, hi_x, snap, tolerance, bracket_x, slope_prior) -> float | None:
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
    if at_bar is not None and hi - at_bar <= GAIN_X:
        return None  # the curve predicts the bar within GAIN_X below the pass: too little to win
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
