"""The one in-process resampler (torchaudio), shared by scoring and the search.

ffmpeg resamples what it decodes; everything resampled in Python (windows to 48 kHz
for ViSQOL, probe decodes to the model's 44.1 kHz) goes through here, so reference
and degraded signals always pass through the same filter.
"""
from __future__ import annotations

import functools

import numpy as np

__all__ = ["resample"]


@functools.lru_cache(maxsize=8)
def _transform(from_hz: int, to_hz: int, dtype_name: str):
    import torch
    import torchaudio

    # Kaiser-windowed sinc, 64 zero crossings, rolloff 0.9475, beta 14.77: the
    # "kaiser_best" setting of torchaudio's resampling tutorial (librosa's equivalent).
    # Passband flat to ~0.95 x Nyquist, so ViSQOL's top bands are not dulled by us.
    return torchaudio.transforms.Resample(
        from_hz,
        to_hz,
        resampling_method="sinc_interp_kaiser",
        lowpass_filter_width=64,
        rolloff=0.9475,
        beta=14.769656459379492,
        dtype=getattr(torch, dtype_name),
    )


def resample(audio: np.ndarray, from_hz: int, to_hz: int, dtype=np.float32) -> np.ndarray:
    """Resample along the last axis; returns ``dtype`` (a copy even when rates match)."""
    import torch

    x = np.ascontiguousarray(np.asarray(audio, dtype=dtype))
    if from_hz == to_hz:
        return x.copy()
    tf = _transform(int(from_hz), int(to_hz), np.dtype(dtype).name)
    with torch.no_grad():
        return tf(torch.from_numpy(x)).numpy()
