"""Ladder search on fake scorers (pure logic; the real search runs in test_api)."""
import math

import numpy as np
import pytest

from ratecontrol.search import NEAR_MISS_MOS, search_ladder


def _run(scores, target, first_guess=None):
    calls = []

    def evaluate(i):
        calls.append(i)
        return scores[i]

    out = search_ladder(len(scores), evaluate, target, first_guess)
    return out, calls


def _check_invariant(scores, target, out):
    probed = dict(out.probes)
    if out.chosen is None:
        assert scores[-1] < target and len(scores) - 1 in probed
        return
    assert probed[out.chosen] >= target, "never return a rung whose own probe failed"
    if out.chosen > 0:
        assert out.chosen - 1 in probed and probed[out.chosen - 1] < target, "the rung below must be measured and fail"


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 20])
def test_monotone_ladders_find_lowest_passing_rung(n, rng):
    for _ in range(200):
        scores = np.sort(rng.uniform(1.0, 4.75, n))
        target = float(rng.uniform(1.0, 4.8))
        out, calls = _run(list(scores), target)
        expected = next((i for i, s in enumerate(scores) if s >= target), None)
        assert out.chosen == expected
        _check_invariant(scores, target, out)
        assert len(calls) == len(set(calls)), "a rung is never probed twice"
        # worst case: bisection bound plus one probe for the interpolation nudges
        assert len(calls) <= math.ceil(math.log2(n + 1)) + 1


def test_interpolation_beats_bisection_on_smooth_curves():
    # MOS linear in log-kbps, like real ladders: interpolation should need fewer probes
    kbps = np.array([16, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160, 192, 256])
    scores = list(2.0 + 0.9 * np.log2(kbps / 16))
    counts = []
    for target in np.linspace(2.1, 5.4, 40):
        out, calls = _run(scores, float(target))
        counts.append(len(calls))
    assert np.mean(counts) < 4.0  # plain bisection needs 4 on 13 rungs


def test_all_pass_picks_bottom_and_top_fail_reports_none():
    out, _ = _run([4.5, 4.6, 4.7], 4.0)
    assert out.chosen == 0
    out, calls = _run([2.0, 2.5, 3.0], 4.0)
    assert out.chosen is None and 2 in calls and not out.reached


def test_non_monotone_never_returns_a_failing_rung(rng):
    for _ in range(300):
        n = int(rng.integers(2, 15))
        scores = list(np.sort(rng.uniform(2, 4.7, n)) + rng.normal(0, 0.3, n))
        target = float(rng.uniform(2, 4.7))
        out, _ = _run(scores, target)
        _check_invariant(scores, target, out)


def test_nan_scores_never_pass():
    out, _ = _run([float("nan"), 4.5], 4.0)
    assert out.chosen == 1


def test_first_guess_is_probed_first():
    _, calls = _run([1, 2, 3, 4, 5], 3.5, first_guess=4)
    assert calls[0] == 4


def _run_rounds(scores, target, k, first_guess=None):
    rounds = []

    def many(idx):
        rounds.append(list(idx))
        return [scores[i] for i in idx]

    def one(i):
        rounds.append([i])
        return scores[i]

    out = search_ladder(len(scores), one, target, first_guess, parallel=k, evaluate_many=many)
    return out, rounds


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 20])
def test_parallel_rounds_find_the_same_rung_in_fewer_rounds(n, k, rng):
    seq_rounds, par_rounds = [], []
    for _ in range(200):
        scores = list(np.sort(rng.uniform(1.0, 4.75, n)))
        target = float(rng.uniform(1.0, 4.8))
        out, rounds = _run_rounds(scores, target, k)
        expected = next((i for i, s in enumerate(scores) if s >= target), None)
        assert out.chosen == expected
        _check_invariant(scores, target, out)
        flat = [i for r in rounds for i in r]
        assert len(flat) == len(set(flat)), "a rung is never probed twice"
        assert all(len(r) <= k for r in rounds)
        seq_out, calls = _run(scores, target)
        assert seq_out.chosen == out.chosen
        seq_rounds.append(len(calls))
        par_rounds.append(len(rounds))
    if n >= 5:
        assert np.mean(par_rounds) < np.mean(seq_rounds)


def test_parallel_on_a_smooth_ladder_usually_ends_in_two_rounds():
    kbps = np.array([16, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160, 192, 256])
    scores = list(2.0 + 0.9 * np.log2(kbps / 16))
    counts = [len(_run_rounds(scores, float(t), 2)[1]) for t in np.linspace(2.1, 5.4, 40)]
    assert np.mean(counts) <= 2.6  # sequential interpolation needs ~3.3 probes (rounds)


def test_parallel_non_monotone_keeps_the_invariant(rng):
    for _ in range(300):
        n = int(rng.integers(2, 15))
        scores = list(np.sort(rng.uniform(2, 4.7, n)) + rng.normal(0, 0.3, n))
        target = float(rng.uniform(2, 4.7))
        out, rounds = _run_rounds(scores, target, 2)
        _check_invariant(scores, target, out)


def test_parallel_default_runs_a_round_in_threads():
    import threading

    seen = set()

    def evaluate(i):
        seen.add(threading.get_ident())
        return float(i)

    out = search_ladder(13, evaluate, 6.5, parallel=2)
    assert out.chosen == 7 and len(seen) >= 1
    with pytest.raises(ValueError):
        search_ladder(3, evaluate, 1.0, parallel=0)


# ---------------------------------------------------------------- dipping curves (issue 14)

# the Opus soprano recording of issue 14 on the 13-rung stereo ladder (16k .. 256k):
# p10 48k 3.46, 64k 4.08, 80k 4.14, 96k 4.02, 112k 3.96, 128k 4.36
SOPRANO = [2.0, 2.5, 2.9, 3.2, 3.46, 4.08, 4.14, 4.02, 3.96, 4.36, 4.5, 4.6, 4.65]


def _run_rule(scores, target, k=1, rule="recheck", first_guess=None, **kw):
    calls = []

    def one(i):
        calls.append(i)
        return scores[i]

    def many(idx):
        calls.extend(idx)
        return [scores[i] for i in idx]

    out = search_ladder(len(scores), one, target, first_guess, parallel=k, evaluate_many=many, rule=rule, **kw)
    return out, calls


def _check_cover(scores, target, out, near_miss):
    """The recheck rule's invariant: every untested rung below the chosen one sits under a
    failure that speaks for it (a miss by more than near_miss, or a rising failing step)."""
    probed = dict(out.probes)
    for i in range(out.chosen if out.chosen is not None else len(scores)):
        if i in probed:
            assert probed[i] < target
            continue
        f = min(j for j in probed if j > i)  # the probed rung just above the gap
        s = probed[f]
        up = probed.get(f + 1)
        assert target - s > near_miss or (up is not None and s <= up < target), (i, f, probed)


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("target", [4.0, 4.03])
def test_dipping_curve_finds_the_cheap_side(k, target):
    out, calls = _run_rule(SOPRANO, target, k)
    assert out.chosen == 5  # 64k, not 128k (2x the bits)
    _check_invariant(SOPRANO, target, out)
    assert len(calls) == len(set(calls))
    mono, _ = _run_rule(SOPRANO, target, 2, rule="monotone")
    assert mono.chosen == 9  # what the monotone search paid: the failure at 112k misled it


def test_dip_below_a_pass_is_rechecked():
    # the pass is found first (5), the rung below it fails by a hair (4), the one below
    # that passes (3): the monotone search stops at 5. 5 passes by 0.6, so the slope
    # extrapolation (0.15 MOS per rung) steps down to the middle rung, 2
    scores = [3.0, 3.2, 3.5, 4.05, 3.98, 4.6, 4.7, 4.8]
    mono, mcalls = _run_rule(scores, 4.0, 1, rule="monotone", first_guess=5)
    out, calls = _run_rule(scores, 4.0, 1, first_guess=5)
    assert mono.chosen == 5 and mcalls == [5, 2, 4]
    assert out.chosen == 3 and calls == [5, 2, 4, 3]
    _check_invariant(scores, 4.0, out)


def test_a_clear_miss_still_proves_the_rungs_below():
    # 112k misses by 0.3: nothing below it is rechecked (the dip is deeper than any measured)
    scores = [2.0, 2.5, 2.9, 3.2, 3.46, 4.08, 4.14, 4.02, 3.7, 4.36, 4.5, 4.6, 4.65]
    out, calls = _run_rule(scores, 4.0, 2)
    assert out.chosen == 9 and not {5, 6, 7} & set(calls)


@pytest.mark.parametrize("k", [1, 2])
def test_recheck_on_noisy_curves_keeps_both_invariants(k, rng):
    for _ in range(400):
        n = int(rng.integers(2, 15))
        scores = list(np.sort(rng.uniform(2, 4.7, n)) + rng.normal(0, 0.1, n))
        target = float(rng.uniform(2, 4.7))
        out, calls = _run_rule(scores, target, k)
        _check_invariant(scores, target, out)
        _check_cover(scores, target, out, NEAR_MISS_MOS)
        assert len(calls) == len(set(calls))
        # never more expensive than the monotone search's choice
        mono, _ = _run_rule(scores, target, k, rule="monotone")
        if mono.chosen is not None:
            assert out.chosen is not None and out.chosen <= mono.chosen


@pytest.mark.parametrize("n", [3, 8, 13])
def test_recheck_on_monotone_ladders_costs_at_most_one_more_probe(n, rng):
    for _ in range(200):
        scores = list(np.sort(rng.uniform(1.0, 4.75, n)))
        target = float(rng.uniform(1.0, 4.8))
        out, calls = _run_rule(scores, target, 1)
        mono, mcalls = _run_rule(scores, target, 1, rule="monotone")
        assert out.chosen == mono.chosen
        assert len(calls) <= len(mcalls) + 1


def test_margin_is_the_search_for_target_plus_margin(rng):
    kbps = np.array([16, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160, 192, 256])
    scores = list(2.0 + 0.9 * np.log2(kbps / 16))
    for target in np.linspace(2.1, 4.9, 15):
        for m in (0.0, 0.05, 0.3):
            a, ca = _run_rule(scores, float(target), 2, margin=m)
            b, cb = _run_rule(scores, float(target) + m, 2)
            assert (a.chosen, ca) == (b.chosen, cb)
    # a margin can only move the choice up, and makes the chosen rung clear target + margin
    out0, _ = _run_rule(SOPRANO, 4.0, 1)
    out1, _ = _run_rule(SOPRANO, 4.0, 1, margin=0.1)
    assert out1.chosen > out0.chosen and dict(out1.probes)[out1.chosen] >= 4.1
    with pytest.raises(ValueError):
        search_ladder(3, lambda i: 4.0, 4.0, margin=-0.1)
    with pytest.raises(ValueError):
        search_ladder(3, lambda i: 4.0, 4.0, rule="hull")


def test_one_sided_bracket_extrapolates_by_the_slope():
    # a straight curve, 0.12 MOS per rung, crossing at rung 8: the middle rung (6) misses
    # by 0.23, so the next probe goes 2 rungs up (0.15 MOS per rung) instead of half-way
    # to the top (9), and the search ends in 3 probes instead of 4
    scores = [3.0 + 0.12 * i for i in range(13)]
    out, calls = _run_rule(scores, 3.95, 1)
    assert out.chosen == 8 and calls == [6, 8, 7]
    # and from a pass far above the target it steps down no further than the middle
    out, calls = _run_rule([4.0 + 0.01 * i for i in range(13)], 3.0, 1, first_guess=12)
    assert out.chosen == 0 and calls[:2] == [12, 5]  # (-1 + 12) // 2
