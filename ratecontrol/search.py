"""Search a codec ladder for the cheapest rung whose pooled score meets the target.

Pure logic: ``search_ladder`` knows nothing about audio; it calls ``evaluate(i)`` for a
rung index and gets a pooled score back. The invariant is the one bisection keeps:
every rung at or below ``lo`` that was probed failed, ``hi`` is a probed rung that passed,
and the answer lies in ``(lo, hi]``. The search ends when ``hi == lo + 1``, so the rung it
returns passed its own probe *and* the rung just below it was measured and failed (or it
is the bottom rung). That is also the guard against non-monotone scores: a rung is only
ever returned on its own passing probe.

Between two measured ends the next probe is placed by linear interpolation of the score
in rung index (ladders are roughly geometric in kbps, and MOS is roughly linear in
log-kbps over the useful range), clamped strictly inside the bracket and nudged towards
the middle so a bad interpolation still shrinks the bracket by at least a third. With a
13-rung ladder bisection alone needs ceil(log2(14)) = 4 probes; interpolation usually
needs 2-3.

``parallel=k`` probes up to k rungs per round at once (the caller's ``evaluate_many``
runs them side by side, e.g. one ffmpeg per core). While an end of the bracket is
virtual and it is wide, the k points split it evenly; once both ends are measured, the
interpolated rung goes with its neighbour below, so a good interpolation ends the search
in one round (that rung passes, the one below fails). A round's results keep the same
invariant: ``hi`` becomes the lowest passing point, ``lo`` the highest failing point
below it (a failing point above a passing one, i.e. a non-monotone curve, is ignored).
Wall time then follows rounds, not probes.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

__all__ = ["LadderOutcome", "search_ladder"]


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


def search_ladder(
    n_rungs: int,
    evaluate: Callable[[int], float],
    target: float,
    first_guess: int | None = None,
    parallel: int = 1,
    evaluate_many: Callable[[Sequence[int]], Sequence[float]] | None = None,
) -> LadderOutcome:
    """Find the lowest rung ``i`` in ``[0, n_rungs)`` with ``evaluate(i) >= target``.

    ``first_guess`` is where to probe first (default: the middle rung). ``parallel``:
    rungs probed per round; ``evaluate_many(indices)`` evaluates a round's rungs
    (default: ``evaluate`` in a thread per rung).
    """
    if n_rungs < 1:
        raise ValueError("the ladder has no rungs")
    if parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel}")
    # one loop for every k: with k = 1 a round is the single bisection/interpolation point
    return _search_rounds(n_rungs, evaluate, evaluate_many, target, first_guess, parallel)


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


def _search_rounds(n_rungs, evaluate, evaluate_many, target, first_guess, k) -> LadderOutcome:
    scores: dict[int, float] = {}
    order: list[tuple[int, float]] = []
    if evaluate_many is None and k > 1:
        def evaluate_many(idx):
            with ThreadPoolExecutor(len(idx)) as ex:
                return list(ex.map(evaluate, idx))
    lo, hi = -1, n_rungs
    guess = None if first_guess is None else min(max(first_guess, 0), n_rungs - 1)
    while hi - lo > 1:
        pts = _round_points(lo, hi, scores, target, n_rungs, k, guess)
        guess = None
        got = [float(s) for s in (evaluate_many(pts) if len(pts) > 1 else [evaluate(pts[0])])]
        for i, sc in zip(pts, got):
            scores[i] = sc
            order.append((i, sc))
        passing = [i for i in pts if _passes(scores[i], target)]
        if passing:
            hi = min(hi, min(passing))
        # the highest failing rung below hi; failures above a pass (non-monotone) are moot
        lo = max([lo] + [i for i in pts if not _passes(scores[i], target) and i < hi])
    chosen = hi if hi < n_rungs else None
    return LadderOutcome(chosen=chosen, probes=tuple(order))


def _next_probe(lo: int, hi: int, scores: dict[int, float], target: float, n_rungs: int) -> int:
    mid = (lo + hi) // 2
    if lo < 0 or hi >= n_rungs:
        # one end is virtual: no second score to interpolate with. Step half-way toward it.
        if hi >= n_rungs:
            return max(lo + 1, (lo + n_rungs) // 2 if n_rungs - lo > 2 else n_rungs - 1)
        return mid
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
