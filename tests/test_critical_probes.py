"""Critical-segment probes (issue 25 lever 1).

A sampled search's later probes encode only the segments whose windows can make the
pooled 10th percentile (those whose score at a lower setting, less a slack, lies near
the pool expected at the new setting) plus a guard sample; a window not encoded counts
at that lower bound, which must lie above the pool's edge, else its segment is encoded
too. On real music the probe decides as the full-sample probe at the same setting does.
"""
from __future__ import annotations

import numpy as np
import pytest

from ratecontrol import media
from ratecontrol.cache import ProbeCache
from ratecontrol.options import Options
from ratecontrol.presets import load_preset
from ratecontrol.probing.prober import Prober, _pool_edge
from ratecontrol.probing.searching import run_search
from ratecontrol.probing.session import open_session

MUSIC = ["flac-test-files/17 - all fixed orders.flac", "flac-test-files/01 - blocksize 4096.flac",
         "sms-tools/cello-phrase.wav", "flac-test-files/10 - blocksize 2304.flac"]
RATE = 48_000
BAR = 4.33  # target 4.3 + the learned scorer's margin


def test_pool_edge_is_the_largest_score_the_pool_reads():
    s = np.arange(1.0, 21.0)  # 1 .. 20
    assert _pool_edge(s, "p10") == np.percentile(s, 10, method="lower") == 2.0
    assert _pool_edge(s, "min") == 1.0
    assert _pool_edge(s, "worst10") == 2.0  # the mean of the 2 lowest reads 1 and 2
    assert _pool_edge(s, "mean") is None  # every window moves the mean: probes stay whole


@pytest.fixture(scope="module")
def long_music(shared_audio):
    """2 minutes of real stereo music at 48 kHz: probed on 8 segments of 3 s."""
    parts = [media.decode(shared_audio / m, sample_rate_hz=RATE, channels=2) for m in MUSIC]
    x = np.concatenate(parts * 8, axis=1)
    assert x.shape[1] >= 120 * RATE
    return np.ascontiguousarray(x[:, : 120 * RATE])


def _probers(x, codec="opus"):
    ses = open_session(x, load_preset(codec), Options(cache=False), RATE)
    src = ses.source()
    crit = Prober(src, load_preset(codec), ses.scorer, ses.pool, ProbeCache(enabled=False))
    full = Prober(src, load_preset(codec), ses.scorer, ses.pool, ProbeCache(enabled=False))
    crit.critical, full.critical = True, False
    return crit, full


@pytest.mark.slow
def test_a_critical_segment_probe_decides_as_the_full_sample_probe(long_music):
    crit, full = _probers(long_music)
    assert crit.source.sampled and len(crit.source.pieces) >= 8
    lo, hi = crit.setting(64.0), crit.setting(128.0)
    first = crit.probe(lo, BAR)
    assert lo not in crit.partial  # nothing below it: every segment
    got = crit.probe(hi, BAR)
    assert hi in crit.partial and crit.partial[hi][0] < crit.partial[hi][1]  # fewer segments encoded
    want = full.probe(full.setting(128.0), BAR)
    assert first.pooled_mos < got.pooled_mos
    assert got.passed == want.passed
    # libopus settles within its 1 s of context: the segments' scores are the full sample's
    assert abs(got.pooled_mos - want.pooled_mos) < 1e-3
    # every window left out counts above the pool's edge (it cannot be the p10 window)
    got_mask, _ = crit._measured[hi]
    w = np.asarray(got.window_mos)
    assert (w[~got_mask] > got.pooled_mos).all()


@pytest.mark.slow
def test_a_search_with_critical_segment_probes_chooses_the_full_sample_searchs_setting(long_music):
    crit, full = _probers(long_music)
    a = run_search(crit, 4.3, Options(best_effort=True))
    b = run_search(full, 4.3, Options(best_effort=True))
    assert crit.partial  # the rule was used
    assert a.chosen.bitrate_kbps == b.chosen.bitrate_kbps
    assert [p.bitrate_kbps for p in a.probes] == [p.bitrate_kbps for p in b.probes]
    assert any("guard sample" in n for n in a.notes)


def test_probes_stay_whole_for_a_mean_pool(long_music):
    ses = open_session(long_music, load_preset("opus"), Options(cache=False, pool="mean"), RATE)
    pr = Prober(ses.source(), load_preset("opus"), ses.scorer, "mean", ProbeCache(enabled=False))
    pr.critical = True
    pr._measured[pr.setting(64.0)] = (np.ones(len(pr.source.index), bool), np.full(len(pr.source.index), 4.7))
    assert pr._plan(pr.setting(128.0)) is None


def test_probes_stay_whole_for_an_encoder_that_carries_state_across_segments(long_music):
    # ffmpeg's aac: a segment's score depends on the segments encoded before it, so a
    # probe of some segments is not the full sample's (docs/performance.md)
    crit, _ = _probers(long_music, "aac")
    n = len(crit.source.index)
    crit._measured[crit.setting(96.0)] = (np.ones(n, bool), np.full(n, 4.7))
    assert crit._plan(crit.setting(160.0)) is None


def _fake_encodes(crit, tail_piece, guard_piece, guard_mos):
    """Replace the encodes (pure logic below): the tail piece's windows score 3.0, the
    guard piece's ``guard_mos``, every other 4.5; records which pieces each round asks."""
    wp, asked = crit.source.window_piece, []

    def fake(i, pieces):
        asked.append(sorted(pieces))
        w = wp[np.isin(wp, sorted(pieces))]
        s = np.where(w == tail_piece, 3.0, np.where(w == guard_piece, guard_mos, 4.5))
        return {"window_mos": s.tolist(), "encoded_bytes": 100, "encoded_s": 1.0}

    crit._measure_pieces = fake
    return wp, asked


def test_windows_left_out_count_at_their_bound_above_the_pools_edge(long_music):
    crit, _ = _probers(long_music)
    wp, asked = _fake_encodes(crit, 0, 3, 4.5)
    bound = lambda pooled: np.where(wp == 5, 2.5, 4.4)  # noqa: E731 - piece 5's bound is in the tail
    scores, got, _, _ = crit._measure_critical(crit.setting(128.0), bound, {0, 3}, {3})
    # piece 5 could be the p10 window: encoded in a second round; the others are not
    assert asked == [[0, 3], [5]]
    assert set(wp[got].tolist()) == {0, 3, 5}
    assert (scores[~got] == 4.4).all()
    assert np.percentile(scores, 10, method="lower") == 3.0  # the pool reads measured windows only


def test_a_guard_window_in_the_pools_tail_makes_the_probe_encode_every_segment(long_music):
    crit, _ = _probers(long_music)
    wp, asked = _fake_encodes(crit, 0, 3, 2.0)  # the guard falls below the tail
    scores, got, _, _ = crit._measure_critical(crit.setting(128.0), lambda pooled: np.full(len(wp), 4.4), {0, 3}, {3})
    assert got.all()
    assert asked == [[0, 3], sorted(set(range(len(crit.source.pieces))) - {0, 3})]
