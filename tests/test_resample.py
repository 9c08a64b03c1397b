"""The one in-process resampler: torchaudio's kaiser_best filter, in numpy, applied as
block-wise matrix products: torchaudio's own output (its kernel computed the same way),
fast, with flat memory, and without importing torch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ratecontrol._resample import _kernel, resample


def _transform(from_hz: int, to_hz: int, dtype_name: str):
    """torchaudio's resampler with the filter ratecontrol._resample applies."""
    import torchaudio

    return torchaudio.transforms.Resample(from_hz, to_hz, resampling_method="sinc_interp_kaiser",
                                          lowpass_filter_width=64, rolloff=0.9475, beta=14.769656459379492,
                                          dtype=getattr(torch, dtype_name))


@pytest.mark.parametrize("rates", [(48_000, 44_100), (44_100, 48_000), (96_000, 44_100), (22_050, 44_100),
                                   (44_100, 32_000)])
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_equals_torchaudio(rng, rates, channels):
    f, t = rates
    x = (0.3 * rng.standard_normal((channels, int(f * 2.3)))).astype(np.float32)
    want = _transform(f, t, "float32")(torch.from_numpy(x)).numpy()
    got = resample(x, f, t)
    assert got.shape == want.shape == (channels, -(-t * x.shape[1] // f))
    assert np.abs(got - want).max() < 2e-6
    tf = _transform(f, t, "float64")
    k, width, _, _ = _kernel(f, t, "float64")
    assert width == tf.width and np.abs(k - tf.kernel[:, 0, :].numpy()).max() < 1e-7
    x64 = x.astype(np.float64)
    assert np.abs(resample(x64, f, t, dtype=np.float64) - tf(torch.from_numpy(x64)).numpy()).max() < 1e-7


def test_resampling_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from ratecontrol._resample import resample\n"
            "x = np.zeros((2, 48000), np.float32); x[:, 100] = 1\n"
            "assert resample(x, 48000, 44100).shape == (2, 44100)\n"
            "assert resample(x, 22050, 44100).shape == (2, 96000)\n"
            "print(','.join(m for m in ('torch', 'torchaudio') if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""


def test_block_boundaries_are_seamless(rng, monkeypatch):
    import ratecontrol._resample as r

    x = (0.3 * rng.standard_normal((2, 48_000 * 3))).astype(np.float32)
    whole = resample(x, 48_000, 44_100)
    monkeypatch.setattr(r, "_FRAMES_PER_BLOCK", 37)  # many, odd-sized blocks
    assert np.abs(resample(x, 48_000, 44_100) - whole).max() < 1e-6
    assert resample(x[0], 48_000, 44_100).shape == (whole.shape[1],)


def test_odd_rates_are_refused_here_and_taken_through_ffmpeg_by_the_pipeline(rng):
    """35467 -> 44100 Hz would need a 6 GB torchaudio kernel (issue 15: sample_rate_hz=1
    tried to allocate 27.6 GB); an array at such a rate goes through ffmpeg instead."""
    from ratecontrol.errors import UsageError
    from ratecontrol.probing.track import NO_RATE, load_track, output_rate

    x = (0.1 * rng.standard_normal((2, 35_467))).astype(np.float32)
    with pytest.raises(UsageError, match="GB"):
        resample(x, 35_467, 44_100)
    t = load_track(x, lambda r: output_rate(NO_RATE, r), 35_467)
    assert t.rate_hz == 44_100 and abs(t.src.shape[1] - 44_100) <= 2


def test_blockwise_products_equal_the_filter_over_one_padded_copy():
    """Issue 25: the resampler pads and multiplies one block at a time into reused
    buffers (no whole padded copy, no product per kernel group per block). Its output
    is the filter applied to one padded copy of the whole input (to float rounding: the
    sums are grouped differently): across block boundaries, on both product paths
    (48 -> 44.1 kHz and 22.05 -> 44.1 kHz), for a strided [C, N] view as input. (Against
    the one-copy code before it, on 10 rate pairs x 7 shapes: equal bit for bit.)"""
    from ratecontrol import _resample

    rng = np.random.default_rng(5)
    for from_hz, to_hz in ((48_000, 44_100), (22_050, 44_100), (96_000, 44_100)):
        kernel, width, orig, new = _resample._kernel(from_hz, to_hz, "float32")
        n = 2 * _resample._FRAMES_PER_BLOCK * orig + 777  # three blocks, the last one short
        x = rng.standard_normal((n, 2)).astype(np.float32).T  # interleaved decode, as probes read it
        got = _resample.resample(x, from_hz, to_hz)
        # the same sums over one padded copy of the whole input
        taps = kernel.shape[1]
        padded = np.zeros((2, n + 2 * width + 2 * orig + taps), np.float32)
        padded[:, width:width + n] = x
        out_len = -(-new * n // orig)
        frames = np.stack([padded[:, f * orig: f * orig + taps] for f in range(-(-out_len // new))], axis=1)
        want = (frames @ np.ascontiguousarray(kernel.T)).reshape(2, -1)[:, :out_len]
        assert got.shape == want.shape and got.flags.c_contiguous
        np.testing.assert_allclose(got, want, atol=1e-5)
