"""The exact scorer on synthetic signals: identity near the top, monotone in damage."""
import numpy as np
import pytest

from ratecontrol.scoring import get_scorer
from ratecontrol.scoring.visqol import visqol_mos
from ratecontrol import media
from ratecontrol.presets import load_preset

SR = 44_100


def test_identity_scores_at_the_top(rng, synth):
    w = np.stack([synth.music(SR)[0], 0.3 * rng.standard_normal(SR).astype(np.float32)])
    np.testing.assert_allclose(visqol_mos(w, w), 4.732, atol=0.01)


def test_subsonic_drift_is_ignored(rng, synth):
    """A codec that strips a drifting DC offset must not be punished for it."""
    x = synth.music(SR)[0]
    drift = np.linspace(0.02, 0.0, SR, dtype=np.float32)
    from scipy.signal import butter, sosfilt

    stripped = sosfilt(butter(1, 3, btype="highpass", fs=SR, output="sos"), x + drift).astype(np.float32)
    mos = visqol_mos((x + drift)[None], stripped[None])
    assert mos[0] > 4.5


def test_score_falls_with_noise_level(rng, synth):
    x = synth.music(SR)[0]
    levels = [1e-4, 3e-3, 3e-2]
    degs = np.stack([x + lv * rng.standard_normal(SR).astype(np.float32) for lv in levels])
    mos = visqol_mos(np.stack([x] * 3), degs)
    assert mos[0] > mos[1] > mos[2]


def test_opus_mos_rises_with_bitrate(rng, synth):
    x = synth.music(SR, channels=2, duration_s=3.0)
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
