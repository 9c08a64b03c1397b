"""Ladder search on fake scorers (pure logic; the real search runs in test_api)."""
import math

import numpy as np
import pytest

from ratecontrol.search import search_ladder


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
