"""Delay estimation, alignment, and the residual delay of every preset's round trip."""
from __future__ import annotations

import numpy as np
import pytest

from ratecontrol import media
from ratecontrol.align import align, estimate_delay
from ratecontrol.errors import UsageError
from ratecontrol.presets import list_presets


def _shift(x: np.ndarray, delay: int) -> np.ndarray:
    """``x`` delayed by ``delay`` samples (negative: advanced), same length, zero fill."""
    y = np.zeros_like(x)
    n = x.shape[-1]
    if delay >= 0:
        y[..., delay:] = x[..., : n - delay]
    else:
        y[..., : n + delay] = x[..., -delay:]
    return y


@pytest.mark.parametrize("sr", [44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("delay", [0, 1, 7, 312, 1105, -1, -64, -2047])
def test_estimate_delay_recovers_known_shift(synth, sr, channels, delay):
    x = synth.transients(sr, channels, duration_s=0.5)
    deg = _shift(x, delay)
    # a little independent noise so the match is not bit-exact
    deg = deg + 0.01 * synth.noise(sr, channels, 0.5, amplitude=1.0)
    assert estimate_delay(x, deg, max_lag_samples=2048) == delay
    out = align(x, deg, delay)
    assert out.shape == x.shape
    # samples of x that survive the shift: [0, N - d) for d >= 0, [-d, N) for d < 0
    lo, hi = (0, x.shape[-1] - delay) if delay >= 0 else (-delay, x.shape[-1])
    assert np.max(np.abs(out[..., lo:hi] - x[..., lo:hi])) < 0.06


def test_estimate_delay_on_noise_bursts_of_different_length(synth):
    x = synth.noise(44100, 2, 0.3)
    deg = np.concatenate([np.zeros((2, 500), np.float32), x], axis=1)  # longer, late
    assert estimate_delay(x, deg, 1000) == 500
    assert estimate_delay(deg, x, 1000) == -500


@pytest.mark.parametrize("delay", [-300, 0, 250])
def test_estimate_delay_on_long_signals_uses_a_segment(synth, monkeypatch, delay):
    import ratecontrol.align as al

    x = synth.transients(8000, 1, duration_s=10.0)
    deg = _shift(x, delay)
    full = estimate_delay(x, deg, 400)
    monkeypatch.setattr(al, "MAX_SEGMENT_SAMPLES", 8000)  # 1 s of the 10-s signal
    assert estimate_delay(x, deg, 400) == full == delay


def test_estimate_delay_respects_max_lag(synth):
    x = synth.transients(48000, 1, 0.5)
    deg = _shift(x, 900)
    assert estimate_delay(x, deg, 2000) == 900
    assert abs(estimate_delay(x, deg, 100)) <= 100


def test_estimate_delay_silence_and_bad_args():
    z = np.zeros((2, 1000), np.float32)
    assert estimate_delay(z, z, 100) == 0
    with pytest.raises(UsageError):
        estimate_delay(z, z, -1)
    with pytest.raises(UsageError):
        estimate_delay(np.zeros((1, 2, 3)), z, 10)


def test_align_pads_and_cuts():
    ref = np.arange(10, dtype=np.float32)
    deg = np.arange(12, dtype=np.float32) + 100
    # 3 samples dropped from the front, 9 left, 1 zero of padding to reach len(ref)
    assert np.array_equal(align(ref, deg, 3), np.r_[np.arange(103, 112), 0].astype(np.float32))
    out = align(ref, deg[:5], -2)
    assert np.array_equal(out, np.r_[0, 0, 100, 101, 102, 103, 104, 0, 0, 0].astype(np.float32))
    st = np.stack([deg, -deg])
    assert align(np.zeros((2, 10)), st, 1).shape == (2, 10)


def _available_presets():
    return [p for p in list_presets() if media.encoder_available(p)]


@pytest.mark.parametrize("preset", _available_presets(), ids=lambda p: p.name)
@pytest.mark.parametrize("sr", [44100, 48000])
def test_roundtrip_residual_delay_is_zero(synth, preset, sr):
    """Measured on this ffmpeg (9.0.2): 0 samples for every preset, rung, rate, layout.

    ffmpeg removes the priming itself: Opus pre-skip (312 samples at 48 kHz), the LAME
    tag's encoder delay (576 + 529 samples) and padding, the MP4 edit list over AAC's
    1024-sample priming, Vorbis granule positions. Nothing is left for the presets'
    decoder_delay_samples to correct.
    """
    x = synth.transients(sr, 2, duration_s=1.0)
    for rung in (preset.rungs[0], preset.rungs[len(preset.rungs) // 2]):
        y = media.roundtrip(x, sr, preset, rung)
        assert y.shape == x.shape
        d = estimate_delay(x, y, max_lag_samples=3000)
        assert abs(d) <= 1, f"{preset.name} {rung.label} @ {sr} Hz: residual delay {d}"


@pytest.mark.parametrize("preset", _available_presets(), ids=lambda p: p.name)
def test_roundtrip_residual_delay_mono_lowest_rung(synth, preset):
    x = synth.transients(44100, 1, duration_s=1.0)
    rung = preset.rungs_for(1)[0]
    y = media.roundtrip(x, 44100, preset, rung)
    assert y.shape == x.shape
    assert abs(estimate_delay(x, y, 3000)) <= 1, f"{preset.name} mono {rung.label}"
