import numpy as np
import pytest

from ratecontrol.errors import UsageError
from ratecontrol.scoring.pooling import pool, validate_pool
from ratecontrol.windows import WINDOW_SAMPLES, cut_windows, is_digital_silence, window_starts


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("seconds,hop", [(0.3, 1.0), (1.0, 1.0), (3.0, 1.0), (3.5, 1.0), (4.0, 0.5)])
def test_windows_cover_track(channels, seconds, hop, rng):
    n = int(seconds * 44100)
    audio = rng.standard_normal((channels, n)).astype(np.float32)
    w, idx = cut_windows(audio, hop_s=hop)
    assert w.shape[1] == WINDOW_SAMPLES and w.dtype == np.float32
    per_ch = len(window_starts(n, hop))
    assert w.shape[0] == per_ch * channels == len(idx)
    if n >= WINDOW_SAMPLES:
        # the last window ends exactly at the end of the track: the tail is scored
        assert idx.start_sample.max() + WINDOW_SAMPLES == n
        c, s = idx.channel[-1], idx.start_sample[-1]
        np.testing.assert_array_equal(w[-1], audio[c, s : s + WINDOW_SAMPLES])
    else:
        np.testing.assert_array_equal(w[0, :n], audio[0])
        assert not w[0, n:].any()  # short tracks are zero-padded


def test_silence_detection():
    w = np.zeros((3, WINDOW_SAMPLES), np.float32)
    w[1, 100] = 2.0**-15  # one 16-bit LSB is not silence
    w[2] = 1e-6  # dither below half an LSB is
    assert list(is_digital_silence(w)) == [True, False, True]


def test_pooling_methods():
    s = np.array([4.5, 4.4, 3.0, 4.6, 4.5, 4.4, 4.45, 4.5, 4.55, 4.6])
    assert pool(s, "mean") == pytest.approx(s.mean())
    assert pool(s, "min") == 3.0
    assert pool(s, "p10") == 3.0  # "lower": the score of a real window
    assert pool(s, "p50") in s
    assert pool(s, "worst20") == pytest.approx((3.0 + 4.4) / 2)
    assert pool(s, "p10") <= pool(s, "mean")
    assert np.isnan(pool(np.array([]), "mean"))


@pytest.mark.parametrize("bad", ["median", "p0", "p101", "worst", "worst-5", ""])
def test_bad_pooling_rejected(bad):
    with pytest.raises(UsageError):
        validate_pool(bad)
