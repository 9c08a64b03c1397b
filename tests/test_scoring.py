"""The exact scorer on synthetic signals: identity near the top, monotone in damage."""
import numpy as np
import pytest

from ratecontrol.scoring import get_scorer
from ratecontrol.scoring.visqol import visqol_mos
from ratecontrol import media
from ratecontrol.presets import load_preset

SR = 44_100


def _music(rng, seconds=1.0):
    t = np.arange(int(seconds * SR)) / SR
    x = sum(0.1 * np.sin(2 * np.pi * f * t) / k for k, f in enumerate([196, 392, 587, 784, 1175, 2350], 1))
    x = x + 0.03 * rng.standard_normal(t.size) * np.exp(-((t * 4) % 1.0) * 25)
    return x.astype(np.float32)


def test_identity_scores_at_the_top(rng):
    w = np.stack([_music(rng), 0.3 * rng.standard_normal(SR).astype(np.float32)])
    np.testing.assert_allclose(visqol_mos(w, w), 4.732, atol=0.01)


def test_subsonic_drift_is_ignored(rng):
    """A codec that strips a drifting DC offset must not be punished for it."""
    x = _music(rng)
    drift = np.linspace(0.02, 0.0, SR, dtype=np.float32)
    from scipy.signal import butter, sosfilt

    stripped = sosfilt(butter(1, 3, btype="highpass", fs=SR, output="sos"), x + drift).astype(np.float32)
    mos = visqol_mos((x + drift)[None], stripped[None])
    assert mos[0] > 4.5


def test_score_falls_with_noise_level(rng):
    x = _music(rng)
    levels = [1e-4, 3e-3, 3e-2]
    degs = np.stack([x + lv * rng.standard_normal(SR).astype(np.float32) for lv in levels])
    mos = visqol_mos(np.stack([x] * 3), degs)
    assert mos[0] > mos[1] > mos[2]


def test_opus_mos_rises_with_bitrate(rng):
    x = np.stack([_music(rng, 3.0), _music(rng, 3.0)])
    p = load_preset("opus")
    sc = get_scorer("visqol")
    from ratecontrol._resample import resample
    from ratecontrol.windows import cut_windows

    ref_w, idx = cut_windows(x)
    prep = sc.prepare(ref_w)
    means = []
    for label in ["16k", "48k", "128k"]:
        src48 = resample(x, SR, 48_000)
        deg = resample(media.roundtrip(src48, 48_000, p, p.rung(label)), 48_000, SR)
        deg_w, _ = cut_windows(deg, starts=idx.start_sample[:3])
        means.append(sc.score(prep, deg_w).mean())
    assert means[0] < means[1] < means[2]
    assert means[2] > 4.3
