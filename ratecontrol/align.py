"""Sample-accurate alignment of a degraded signal to its reference.

``estimate_delay`` cross-correlates mono mixes with ``scipy.signal.correlate``
(FFT method: O(N log N), a 10-s 44.1 kHz pair takes a few ms) and returns the integer lag
with the largest correlation inside ``[-max_lag, +max_lag]``. ``align`` applies it.
Sign convention: a positive delay means ``deg`` lags ``ref`` (the same event happens
``delay`` samples later in ``deg``).
"""
from __future__ import annotations

import numpy as np
from scipy import signal

from .errors import UsageError

__all__ = ["estimate_delay", "align"]


def _mono(x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        return a
    if a.ndim == 2:
        return a.mean(axis=0)
    raise UsageError(f"expected audio shaped [N] or [channels, N], got {a.shape}")


def estimate_delay(ref, deg, max_lag_samples: int) -> int:
    """Lag (in samples) of ``deg`` relative to ``ref``; positive = ``deg`` is late.

    ref, deg: [N] or [C, N] arrays (channels are averaged; lengths may differ).
    max_lag_samples: search window, |delay| <= max_lag_samples.
    Returns 0 when either signal is silent (no information to align on).
    """
    r, d = _mono(ref), _mono(deg)
    if max_lag_samples < 0:
        raise UsageError(f"max_lag_samples must be >= 0, got {max_lag_samples}")
    if r.size == 0 or d.size == 0 or not np.any(r) or not np.any(d):
        return 0
    # full cross-correlation c[k] = sum_n d[n + k] * r[n]; lags from -(len(r)-1)
    c = signal.correlate(d, r, mode="full", method="fft")
    lags = signal.correlation_lags(d.size, r.size, mode="full")
    keep = np.abs(lags) <= max_lag_samples
    if not np.any(keep):
        return 0
    c, lags = c[keep], lags[keep]
    return int(lags[int(np.argmax(c))])


def align(ref, deg, delay: int) -> np.ndarray:
    """``deg`` shifted by ``-delay`` and cut / zero-padded to ``ref``'s length.

    Keeps ``deg``'s channel layout ([N] or [C, N]) and dtype.
    """
    d = np.asarray(deg)
    n = np.asarray(ref).shape[-1]
    delay = int(delay)
    if delay > 0:
        d = d[..., delay:]
    elif delay < 0:
        pad = np.zeros(d.shape[:-1] + (-delay,), dtype=d.dtype)
        d = np.concatenate([pad, d], axis=-1)
    if d.shape[-1] >= n:
        return np.ascontiguousarray(d[..., :n])
    pad = np.zeros(d.shape[:-1] + (n - d.shape[-1],), dtype=d.dtype)
    return np.concatenate([d, pad], axis=-1)
