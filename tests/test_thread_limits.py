"""Issue 25, lever 3: the learned scorer's thread limits are scoped to its own calls.
Inside ``prepare`` and ``score`` the numpy runtime's BLAS runs NUMPY_BLAS_THREADS
threads (torch: ``threads=``); the caller's settings are back when a call returns or
raises, also when several threads score at once; the limit changes scores by float
rounding only."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import scipy.fft  # noqa: F401  (the numpy runtime loads scipy's OpenBLAS: the lists below stay one length)
from threadpoolctl import threadpool_info, threadpool_limits

from conftest import Synth

SR = 44_100


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def _windows() -> tuple[np.ndarray, np.ndarray]:
    rows = []
    for i in range(3):
        s = Synth(200 + i)
        rows += [s.notes(SR)[0], s.music(SR)[0], s.transients(SR)[0], 0.005 * s.notes(SR)[0]]
    ref = np.stack(rows).astype(np.float32)
    rng = np.random.default_rng(3)
    deg = (np.round(ref * 64) / 64 + 0.002 * rng.standard_normal(ref.shape)).astype(np.float32)
    return ref, deg


@pytest.fixture(scope="module")
def numpy_scorer():
    from ratecontrol.scoring.learned import NUMPY_BLAS_THREADS, LearnedScorer

    sc = LearnedScorer(runtime="numpy", batch_size=4)  # several chunks per call
    assert sc.runtime == "numpy" and sc.thread_limit == ("blas", NUMPY_BLAS_THREADS) == ("blas", 1)
    return sc


@pytest.fixture
def spy(numpy_scorer, monkeypatch):
    """The BLAS threads seen by every chunk the model computes (inside the scorer's calls)."""
    seen: list[list[int]] = []
    model = numpy_scorer.model
    fwd, ref_feats = model.forward_from_reference, model.reference_features

    def forward(*a):
        seen.append(_blas_threads())
        return fwd(*a)

    def reference(*a):
        seen.append(_blas_threads())
        return ref_feats(*a)

    monkeypatch.setattr(model, "forward_from_reference", forward)
    monkeypatch.setattr(model, "reference_features", reference)
    return seen


@pytest.mark.parametrize("caller", [None, 2, 3])
def test_blas_is_limited_inside_the_calls_and_the_callers_threads_come_back(numpy_scorer, spy, caller):
    ref, deg = _windows()
    with threadpool_limits(limits=caller, user_api="blas"):  # None: the process's default
        before = _blas_threads()
        scores = numpy_scorer.score(numpy_scorer.prepare(ref), deg)
        assert _blas_threads() == before
    assert len(spy) == 2 * 3  # 12 windows in chunks of 4, prepared then scored
    assert all(seen == [1] * len(seen) for seen in spy)
    assert np.isfinite(scores).all()


def test_the_callers_threads_come_back_when_scoring_raises(numpy_scorer, monkeypatch):
    ref, deg = _windows()
    prepared = numpy_scorer.prepare(ref)
    seen = []

    def broken(*a):
        seen.append(_blas_threads())
        raise RuntimeError("model failed")

    monkeypatch.setattr(numpy_scorer.model, "forward_from_reference", broken)
    with threadpool_limits(limits=2, user_api="blas"):
        with pytest.raises(RuntimeError, match="model failed"):
            numpy_scorer.score(prepared, deg)
        assert set(_blas_threads()) == {2}
    assert seen and set(seen[0]) == {1}


def _score_in_threads(scorer, n_threads: int, caller_limit: int | None) -> list[list[int]]:
    """Score in n threads at once (probing.Prober scores a round's rungs in threads):
    the BLAS threads each one's first chunk sees while all of them are inside score()."""
    ref, deg = _windows()
    prepared = scorer.prepare(ref)
    fwd = scorer.model.forward_from_reference
    all_inside = threading.Barrier(n_threads)
    local = threading.local()
    first, errors = [], []

    def forward(*a):
        if not getattr(local, "seen", False):
            local.seen = True
            all_inside.wait(timeout=60)
            first.append(_blas_threads())
        return fwd(*a)

    def work():
        try:
            scorer.score(prepared, deg)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    scorer.model.forward_from_reference = forward
    try:
        with threadpool_limits(limits=caller_limit, user_api="blas"):
            before = _blas_threads()
            threads = [threading.Thread(target=work) for _ in range(n_threads)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            assert not errors
            assert _blas_threads() == before
    finally:
        del scorer.model.forward_from_reference
    return first


def test_threads_scoring_at_once_are_limited_and_the_callers_threads_come_back(numpy_scorer):
    """One thread at a time holds the limit and restores what it found: a thread that
    leaves while another still scores never leaves the limited value behind."""
    before = _blas_threads()
    first = _score_in_threads(numpy_scorer, 3, None)
    assert first == [[1] * len(before)] * 3
    assert _blas_threads() == before


def test_a_limit_the_caller_holds_in_another_thread_stands(numpy_scorer):
    """threadpoolctl >= 3.8: one Python thread controls OpenBLAS's shared pool while its
    limits last; scoring in other threads leaves the caller's setting alone."""
    first = _score_in_threads(numpy_scorer, 2, 2)
    assert all(set(seen) == {2} for seen in first)


def test_the_limit_changes_scores_by_float_rounding_only(numpy_scorer):
    """OpenBLAS's sgemm rounds differently with 1 and with 2 threads (~5e-7 relative on
    the band matmul), so scores are equal to those of a caller that limits BLAS to one
    thread itself, and within float rounding of unlimited BLAS (bench/bench_model.py
    threads: <= 5.3e-5 MOS per window on real music; the runtimes' tolerance is 1e-3)."""
    ref, deg = _windows()
    limited = numpy_scorer.score(numpy_scorer.prepare(ref), deg)
    kind, n = numpy_scorer.thread_limit
    try:
        numpy_scorer.thread_limit = (kind, None)
        with threadpool_limits(limits=1, user_api="blas"):
            one = numpy_scorer.score(numpy_scorer.prepare(ref), deg)
        with threadpool_limits(limits=2, user_api="blas"):
            two = numpy_scorer.score(numpy_scorer.prepare(ref), deg)
    finally:
        numpy_scorer.thread_limit = (kind, n)
    np.testing.assert_array_equal(limited, one)
    assert np.abs(limited - two).max() < 1e-3


def test_threads_argument_limits_numpy_blas_to_that_many():
    from ratecontrol.scoring.learned import LearnedScorer

    sc = LearnedScorer(runtime="numpy", threads=2)
    assert sc.thread_limit == ("blas", 2)
    ref, deg = _windows()
    seen = []
    fwd = sc.model.forward_from_reference
    sc.model.forward_from_reference = lambda *a: (seen.append(_blas_threads()), fwd(*a))[1]
    with threadpool_limits(limits=1, user_api="blas"):
        sc.score(sc.prepare(ref), deg)
        assert set(_blas_threads()) == {1}
    assert seen and all(set(s) == {2} for s in seen)


def test_torch_threads_are_scoped_to_the_calls():
    torch = pytest.importorskip("torch")
    from ratecontrol.scoring.learned import LearnedScorer

    test_process = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _check_torch_scope(torch, LearnedScorer)
    finally:
        torch.set_num_threads(test_process)


def _check_torch_scope(torch, LearnedScorer):
    sc = LearnedScorer(runtime="torch", device="cpu", threads=1)
    assert torch.get_num_threads() == 2, "constructing the scorer leaves the process's threads alone"
    seen = []
    fwd = sc.model.forward_from_reference

    def forward(*a):
        seen.append(torch.get_num_threads())
        return fwd(*a)

    sc.model.forward_from_reference = forward
    ref, deg = _windows()
    prepared = sc.prepare(ref)
    assert torch.get_num_threads() == 2
    sc.score(prepared, deg)
    assert seen == [1] and torch.get_num_threads() == 2

    def broken(*a):
        raise RuntimeError("model failed")

    sc.model.forward_from_reference = broken
    with pytest.raises(RuntimeError, match="model failed"):
        sc.score(prepared, deg)
    assert torch.get_num_threads() == 2
    # without threads= the torch runtime keeps torch's own threads
    assert LearnedScorer(runtime="torch", device="cpu").thread_limit == ("torch", None)


@pytest.mark.parametrize("caller", [None, 2])
def test_the_resampler_runs_one_blas_thread_and_gives_the_callers_back(monkeypatch, caller):
    """Issue 25: the resampler's polyphase products (48 -> 44.1 kHz for every probe and
    the check) ran OpenBLAS's default pool, whose idle worker spun beside ffmpeg; they
    run BLAS_THREADS (1) now, the caller's setting back afterwards, and the output is
    the one a caller limiting BLAS to one thread itself gets."""
    from ratecontrol import _resample
    from ratecontrol._threads import BLAS_THREADS

    assert BLAS_THREADS == 1
    seen: list[list[int]] = []
    products = _resample._products

    def spy(*a, **k):
        seen.append(_blas_threads())
        return products(*a, **k)

    monkeypatch.setattr(_resample, "_products", spy)
    x = Synth(7).music(48_000, channels=2, duration_s=2.0).astype(np.float32)
    with threadpool_limits(limits=caller, user_api="blas"):
        before = _blas_threads()
        y = _resample.resample(x, 48_000, 44_100)
        assert _blas_threads() == before
    assert seen and all(s == [1] * len(s) for s in seen)
    with threadpool_limits(limits=1, user_api="blas"):
        ref = _resample.resample(x, 48_000, 44_100)
    np.testing.assert_array_equal(y, ref)
