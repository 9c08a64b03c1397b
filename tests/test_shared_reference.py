"""One reference preparation per track (issue 25 lever 2).

The sampled probes prepare their segments' reference windows; the full-track check
takes those windows' rows (``Scorer.gather``) and prepares only the rest. Its scores
must equal those of a check that prepares the whole track afresh.
"""
from __future__ import annotations

import numpy as np
import pytest

from ratecontrol import media
from ratecontrol.options import Options
from ratecontrol.presets import load_preset
from ratecontrol.probing.session import open_session

MUSIC = ["flac-test-files/17 - all fixed orders.flac", "flac-test-files/01 - blocksize 4096.flac",
         "sms-tools/cello-phrase.wav"]
RATE = 48_000


@pytest.fixture(scope="module")
def long_music(shared_audio):
    """~40 s of real stereo music at 48 kHz (long enough to be probed on segments)."""
    parts = [media.decode(shared_audio / m, sample_rate_hz=RATE, channels=2) for m in MUSIC]
    x = np.concatenate(parts * 4, axis=1)
    return np.ascontiguousarray(x[:, : 40 * RATE])


def _session(x):
    return open_session(x, load_preset("opus"), Options(cache=False), RATE)


def test_check_takes_the_probes_prepared_windows_with_a_fresh_preparations_scores(long_music):
    shared = _session(long_music)
    pr = shared.prober(load_preset("opus"))
    assert pr.source.sampled
    probe = pr.probe(pr.setting(64.0), 4.3)  # prepares the segments' reference
    assert len(probe.window_mos) == len(pr.source.index)
    rung = pr.rungs[pr.setting(64.0)]
    deg = media.roundtrip_info(long_music, RATE, load_preset("opus"), rung).audio

    sizes: list[int] = []
    real = shared.scorer.prepare
    shared.scorer.prepare = lambda w: sizes.append(len(w)) or real(w)
    got = shared.full_track_scores(deg)
    shared.scorer.prepare = real

    fresh = _session(long_music)  # no probe: the check prepares every window itself
    want = fresh.full_track_scores(deg)
    n_live = int(np.isfinite(want).sum())
    n_probe = int((~pr.source.ref_silent).sum())
    # the probes' windows were not prepared again: only the rest of the track's were
    assert n_probe > 0 and sum(sizes) == n_live - n_probe
    assert np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[np.isfinite(got)], want[np.isfinite(want)], atol=1e-4)


def test_probers_of_one_source_share_one_preparation(long_music):
    s = _session(long_music)
    calls: list[int] = []
    real = s.scorer.prepare
    s.scorer.prepare = lambda w: calls.append(len(w)) or real(w)
    a, b = s.prober(load_preset("opus")), s.prober(load_preset("aac"))
    assert a.source is b.source
    a.probe(a.setting(64.0), 4.3)
    b.probe(b.setting(96.0), 4.3)
    assert calls == [int((~a.source.ref_silent).sum())]
