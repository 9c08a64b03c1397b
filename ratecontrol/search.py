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
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

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
) -> LadderOutcome:
    """Find the lowest rung ``i`` in ``[0, n_rungs)`` with ``evaluate(i) >= target``.

    ``first_guess`` is where to probe first (default: the middle rung).
    """
    if n_rungs < 1:
        raise ValueError("the ladder has no rungs")
    scores: dict[int, float] = {}
    order: list[tuple[int, float]] = []

    def probe(i: int) -> float:
        if i not in scores:
            scores[i] = float(evaluate(i))
            order.append((i, scores[i]))
        return scores[i]

    lo, hi = -1, n_rungs  # virtual: rung -1 fails, rung n passes (neither is probed)
    nxt = (n_rungs - 1) // 2 if first_guess is None else min(max(first_guess, 0), n_rungs - 1)
    while hi - lo > 1:
        if _passes(probe(nxt), target):
            hi = nxt
        else:
            lo = nxt
        if hi - lo <= 1:
            break
        nxt = _next_probe(lo, hi, scores, target, n_rungs)
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
