"""The ladder search (``search_ladder``: the cheapest rung of a preset's ladder; the
search of the first releases, ``ladder=True`` since issue 24). The knob search is in
``ratecontrol.knob_search``; ``ratecontrol.search`` re-exports both.

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

__all__ = ["DEFAULT_RULE", "LadderOutcome", "NEAR_MISS_MOS", "RULES", "SLOPE_PRIOR_MOS_PER_RUNG", "search_ladder"]


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
