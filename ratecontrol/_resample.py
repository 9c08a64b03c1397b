"""The one in-process resampler (torchaudio's filter, in numpy), shared by scoring and the search.

ffmpeg resamples what it decodes; everything resampled in Python (windows to 48 kHz
for ViSQOL, probe decodes to the model's 44.1 kHz) goes through here, so reference
and degraded signals always pass through the same filter.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ratecontrol._threads import BLAS_THREADS, scoped

__all__ = ["resample", "python_can_resample"]

#: the largest reduced input rate (from_hz / gcd) resampled here: torchaudio's kernel
#: is [to/gcd, ~from/gcd] floats, 1.3 MB at 48 -> 44.1 kHz (160/147) but 6.3 GB at
#: 35467 -> 44100 Hz; such rates go through ffmpeg's resampler instead (as files do)
MAX_REDUCED_RATE = 4096

# torchaudio.transforms.Resample(resampling_method="sinc_interp_kaiser", lowpass_filter_width=64,
# rolloff=0.9475, beta=14.769656459379492): the filter every resample here applies
_ZEROS = 64
_ROLLOFF = 0.9475
_BETA = 14.769656459379492


def python_can_resample(from_hz: int, to_hz: int) -> bool:
    g = math.gcd(int(from_hz), int(to_hz))
    return int(from_hz) == int(to_hz) or (int(from_hz) // g <= MAX_REDUCED_RATE
                                          and int(to_hz) // g <= MAX_REDUCED_RATE)


@functools.lru_cache(maxsize=8)
def _kernel(from_hz: int, to_hz: int, dtype_name: str) -> tuple[np.ndarray, int, int, int]:
    """(kernel [new, taps], width, orig, new): torchaudio's ``_get_sinc_resample_kernel``
    for ``sinc_interp_kaiser`` written out in numpy, in the same dtype and order of
    operations, so that no torch import is needed (tests/test_resample.py compares it
    with torchaudio's own kernel and output).

    Kaiser-windowed sinc, 64 zero crossings, rolloff 0.9475, beta 14.77: the
    "kaiser_best" setting of torchaudio's resampling tutorial (librosa's equivalent).
    Passband flat to ~0.95 x Nyquist, so ViSQOL's top bands are not dulled by us."""
    dt = np.dtype(dtype_name)
    g = math.gcd(int(from_hz), int(to_hz))
    orig, new = int(from_hz) // g, int(to_hz) // g
    base = min(orig, new) * _ROLLOFF
    width = math.ceil(_ZEROS * orig / base)
    idx = np.arange(-width, width + orig, dtype=dt)[None, :] / dt.type(orig)
    t = np.arange(0, -new, -1, dtype=dt)[:, None] / dt.type(new) + idx
    t = t * dt.type(base)
    t = np.clip(t, -_ZEROS, _ZEROS).astype(dt)
    arg = (dt.type(_BETA) * np.sqrt(1 - (t / dt.type(_ZEROS)) ** 2)).astype(dt)
    window = (np.i0(arg.astype(np.float64)).astype(dt) / dt.type(np.i0(np.float64(dt.type(_BETA)))))
    t = t * dt.type(math.pi)
    with np.errstate(invalid="ignore", divide="ignore"):
        kernels = np.where(t == 0, dt.type(1.0), np.sin(t) / t).astype(dt)
    kernels = kernels * (window * dt.type(base / orig))
    return np.ascontiguousarray(kernels, dtype=dt), width, orig, new


#: frames (output blocks of ``to/gcd`` samples) per matrix product: ~2.5 MB of input
#: rows at 48 -> 44.1 kHz, so memory stays flat on an hour-long track
_FRAMES_PER_BLOCK = 8192


def resample(audio: np.ndarray, from_hz: int, to_hz: int, dtype=np.float32) -> np.ndarray:
    """Resample along the last axis; returns ``dtype`` (a copy even when rates match).

    The filter is torchaudio's (``_kernel``); it is applied as matrix products of the
    input's frames with the polyphase kernel, the same sums torchaudio's strided conv1d
    computes (equal to its output within 2e-6, tests/test_resample.py), a block of
    frames at a time. numpy only (session 8): a CPU encode never imports torch here.
    torchaudio's conv1d took 2.3-4.8 s for 4 minutes of 48 kHz stereo on this 2-core
    machine and grew faster than the length; the products take ~0.3 s.

    Memory: the output, plus one block's padded input and products, reused from block
    to block (issue 25: the whole padded copy, a product per kernel group per block and
    the final cut made ~150 MB of short-lived arrays per minute of stereo, each faulted
    in and zeroed afresh; docs/performance.md "Cost, round 4")."""
    if from_hz == to_hz:
        return np.array(audio, dtype=dtype, order="C", copy=True)
    if not python_can_resample(from_hz, to_hz):
        from ratecontrol.errors import UsageError

        raise UsageError(f"resampling {from_hz} -> {to_hz} Hz needs a filter of "
                         f"~{4 * (to_hz // math.gcd(from_hz, to_hz)) ** 2 / 1e9:.1f} GB here; "
                         "decode such audio with ratecontrol.media.decode(sample_rate_hz=...) (ffmpeg resamples it)")
    x = np.asarray(audio, dtype=dtype)
    kernel, width, orig, new = _kernel(int(from_hz), int(to_hz), np.dtype(dtype).name)
    shape = x.shape
    n = shape[-1]
    rows = x.reshape(-1, n)  # a view where it can be (a [C, N] slice stays one)
    taps = kernel.shape[1]
    out_len = -(-new * n // orig)
    # torchaudio pads (width, width + orig); the extra zeros up to a whole number of
    # frames change no sum (they meet zero kernel columns or frames past out_len)
    chunks = -(-taps // orig)  # kernel columns in groups of one frame stride
    n_frames = (n + 2 * width + orig - taps) // orig + 1
    out = np.empty((rows.shape[0], out_len), dtype=x.dtype)
    # one BLAS thread for the products (BLAS_THREADS): OpenBLAS's second worker spun
    # between them while ffmpeg used the other core (docs/performance.md "Cost, round 4")
    with scoped("blas", BLAS_THREADS):
        _products(rows, out, kernel, width, taps, orig, new, chunks, n_frames)
    return out.reshape(*shape[:-1], out_len)


def _padded_block(rows: np.ndarray, buf: np.ndarray, s0: int, s1: int, width: int) -> np.ndarray:
    """Samples ``s0:s1`` of the rows padded with ``width`` zeros in front (and zeros past
    their end), written into ``buf``; returns that view of it."""
    n = rows.shape[1]
    view = buf[:, : s1 - s0]
    a0 = min(max(s0, width), s1)  # where the rows start inside s0:s1 ...
    a1 = max(min(s1, width + n), a0)  # ... and end (a0 == a1: all padding)
    view[:, : a0 - s0] = 0
    view[:, a0 - s0 : a1 - s0] = rows[:, a0 - width : a1 - width]
    view[:, a1 - s0 :] = 0
    return view


def _products(rows: np.ndarray, out: np.ndarray, kernel: np.ndarray, width: int, taps: int, orig: int, new: int,
              chunks: int, n_frames: int) -> None:
    """``out`` = the rows, padded, filtered by the polyphase ``kernel`` (cut to out's length)."""
    r, out_len = out.shape
    block = min(_FRAMES_PER_BLOCK, n_frames)
    if orig >= 16:
        # out[f] = sum_c P[f + c] @ K_c: P is the padded signal as [frames, orig] (a
        # reshape, no copy) and K_c the kernel's c-th group of orig columns
        kp = np.zeros((new, chunks * orig), dtype=rows.dtype)
        kp[:, :taps] = kernel
        kc = [np.ascontiguousarray(kp[:, c * orig : (c + 1) * orig].T) for c in range(chunks)]
        buf = np.empty((r, (block + chunks) * orig), dtype=rows.dtype)
        acc_buf = np.empty((r, block, new), dtype=rows.dtype)
        tmp_buf = np.empty((r, block, new), dtype=rows.dtype)
        for f0 in range(0, n_frames, block):
            f1 = min(n_frames, f0 + block)
            nb = f1 - f0
            frames = _padded_block(rows, buf, f0 * orig, (f1 + chunks) * orig, width).reshape(r, -1, orig)
            acc, tmp = acc_buf[:, :nb], tmp_buf[:, :nb]
            np.matmul(frames[:, 0:nb], kc[0], out=acc)
            for c in range(1, chunks):
                np.matmul(frames[:, c : c + nb], kc[c], out=tmp)
                acc += tmp
            lo, hi = f0 * new, min(f1 * new, out_len)
            if hi > lo:
                out[:, lo:hi] = acc.reshape(r, -1)[:, : hi - lo]
    else:  # e.g. 22.05 -> 44.1 kHz: few samples per frame, so copy whole frames
        from numpy.lib.stride_tricks import sliding_window_view

        kt = np.ascontiguousarray(kernel.T)
        span = (block - 1) * orig + taps
        buf = np.empty((r, span), dtype=rows.dtype)
        for f0 in range(0, n_frames, block):
            f1 = min(n_frames, f0 + block)
            piece = _padded_block(rows, buf, f0 * orig, (f1 - 1) * orig + taps, width)
            prod = np.ascontiguousarray(sliding_window_view(piece, taps, axis=-1)[:, ::orig]) @ kt
            lo, hi = f0 * new, min(f1 * new, out_len)
            if hi > lo:
                out[:, lo:hi] = prod.reshape(r, -1)[:, : hi - lo]
