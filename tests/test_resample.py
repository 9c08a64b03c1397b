"""The one in-process resampler: the block-wise matrix form computes torchaudio's
own output (same kernel), fast and with flat memory."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ratecontrol._resample import _transform, resample


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
