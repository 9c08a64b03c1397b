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


def test_silent_degraded_window_scores_the_floor(synth):
    """ViSQOL's level matching divides by a silent degraded window's zero level: NaN and
    numpy's RuntimeWarning before. Now the floor against sound, identity against
    silence (as the learned scorer: low, and at the top), with one clear note."""
    import warnings

    from ratecontrol.contract import MOS_IDENTITY, MOS_MIN
    from ratecontrol.errors import RatecontrolWarning

    x = synth.music(SR)[0]
    ref = np.stack([x, np.zeros(SR, np.float32), x])
    deg = np.stack([np.zeros(SR, np.float32), np.zeros(SR, np.float32), x])
    sc = get_scorer("visqol")
    for mos_of in (visqol_mos, lambda r, d: sc.score(sc.prepare(r), d)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mos = mos_of(ref, deg)
        assert mos[0] == MOS_MIN and mos[1] == MOS_IDENTITY and mos[2] > 4.6
        kinds = [w.category for w in caught]
        assert RatecontrolWarning in kinds and RuntimeWarning not in kinds, kinds


def test_cli_score_against_silence_is_a_number_with_a_note(tmp_path, synth):
    import os
    import subprocess
    import sys

    import soundfile as sf

    ref, silent = tmp_path / "ref.wav", tmp_path / "silent.wav"
    sf.write(str(ref), synth.music(SR, duration_s=2.0)[0], SR)
    sf.write(str(silent), np.zeros(2 * SR, np.float32), SR)
    r = subprocess.run([sys.executable, "-m", "ratecontrol", "score", "--scorer", "visqol", str(ref), str(silent)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "default"})
    assert r.returncode == 0, r.stderr
    assert "n/a" not in r.stdout and "1.000" in r.stdout, r.stdout
    assert "warning: exact ViSQOL has no score" in r.stderr and "RuntimeWarning" not in r.stderr, r.stderr
