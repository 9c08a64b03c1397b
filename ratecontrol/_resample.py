"""The one in-process resampler (torchaudio), shared by scoring and the search.

ffmpeg resamples what it decodes; everything resampled in Python (windows to 48 kHz
for ViSQOL, probe decodes to the model's 44.1 kHz) goes through here, so reference
and degraded signals always pass through the same filter.
"""
from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["resample", "python_can_resample"]

#: the largest reduced input rate (from_hz / gcd) resampled here: torchaudio's kernel
#: is [to/gcd, ~from/gcd] floats, 1.3 MB at 48 -> 44.1 kHz (160/147) but 6.3 GB at
#: 35467 -> 44100 Hz; such rates go through ffmpeg's resampler instead (as files do)
MAX_REDUCED_RATE = 4096


def python_can_resample(from_hz: int, to_hz: int) -> bool:
    g = math.gcd(int(from_hz), int(to_hz))
    return int(from_hz) == int(to_hz) or (int(from_hz) // g <= MAX_REDUCED_RATE
                                          and int(to_hz) // g <= MAX_REDUCED_RATE)


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


#: frames (output blocks of ``to/gcd`` samples) per matrix product: ~2.5 MB of input
#: rows at 48 -> 44.1 kHz, so memory stays flat on an hour-long track
_FRAMES_PER_BLOCK = 8192


def resample(audio: np.ndarray, from_hz: int, to_hz: int, dtype=np.float32) -> np.ndarray:
    """Resample along the last axis; returns ``dtype`` (a copy even when rates match).

    The filter is torchaudio's (``_transform``); it is applied as a matrix product of
    the input's frames with the polyphase kernel, the same sums torchaudio's strided
    conv1d computes (equal to its output within 1e-6), a block of frames at a time:
    torchaudio's conv1d took 2.3-4.8 s for 4 minutes of 48 kHz stereo on this 2-core
    machine and grew faster than the length; the product takes ~0.4 s
    (tests/test_resample.py checks both)."""
    x = np.ascontiguousarray(np.asarray(audio, dtype=dtype))
    if from_hz == to_hz:  # before importing torch: 44.1 kHz tracks never need it here
        return x.copy()
    import torch

    if not python_can_resample(from_hz, to_hz):
        from ratecontrol.errors import UsageError

        raise UsageError(f"resampling {from_hz} -> {to_hz} Hz needs a filter of "
                         f"~{4 * (to_hz // math.gcd(from_hz, to_hz)) ** 2 / 1e9:.1f} GB here; "
                         "decode such audio with ratecontrol.media.decode(sample_rate_hz=...) (ffmpeg resamples it)")
    tf = _transform(int(from_hz), int(to_hz), np.dtype(dtype).name)
    orig, new = int(from_hz) // tf.gcd, int(to_hz) // tf.gcd
    if orig < 16:  # e.g. 22.05 -> 44.1 kHz: few taps per frame, conv1d is the faster form
        with torch.no_grad():
            return tf(torch.from_numpy(x)).numpy()
    shape = x.shape
    rows = torch.from_numpy(x.reshape(-1, shape[-1]))
    n = shape[-1]
    kernel = tf.kernel[:, 0, :]  # [new, K]
    taps = kernel.shape[1]
    out_len = -(-new * n // orig)
    out = torch.empty((rows.shape[0], out_len), dtype=rows.dtype)
    with torch.no_grad():
        padded = torch.nn.functional.pad(rows[None], (tf.width, tf.width + orig))[0]
        n_frames = (padded.shape[1] - taps) // orig + 1
        kt = kernel.T.contiguous()
        for f0 in range(0, n_frames, _FRAMES_PER_BLOCK):
            f1 = min(n_frames, f0 + _FRAMES_PER_BLOCK)
            o0 = f0 * new
            if o0 >= out_len:
                break
            seg = padded[:, f0 * orig : (f1 - 1) * orig + taps]
            block = (seg.unfold(-1, taps, orig) @ kt).reshape(rows.shape[0], -1)
            o1 = min(out_len, o0 + block.shape[1])
            out[:, o0:o1] = block[:, : o1 - o0]
    return out.numpy().reshape(*shape[:-1], out_len)
