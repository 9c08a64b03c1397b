"""Cutting tracks into the 1-s windows every scorer sees.

The learned model's convention (and the public balanced dataset's): mono windows of
exactly 1 s at 44.1 kHz, one set per channel. The exact ViSQOL scorer scores the *same*
windows (it resamples each one to 48 kHz itself), so learned and exact scores are
comparable window by window.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "MODEL_SAMPLE_RATE_HZ",
    "WINDOW_SAMPLES",
    "SILENCE_PEAK",
    "WindowIndex",
    "window_starts",
    "cut_windows",
    "is_digital_silence",
    "WindowComplexity",
    "window_complexity",
    "SILENCE_RMS_DBFS",
    "to_model_rate",
]

from ratecontrol.contract import MODEL_SAMPLE_RATE_HZ, WINDOW_SAMPLES  # noqa: E402  (1 s at 44.1 kHz)

#: Peak below which a window counts as digital silence: half an LSB of 16-bit PCM
#: (2**-16). Anything a 16-bit source actually contains is at least 1 LSB = 2**-15.
SILENCE_PEAK = 2.0**-16


@dataclass(frozen=True)
class WindowIndex:
    """Where each window of a windowed track comes from."""

    channel: np.ndarray  # int [W]
    start_sample: np.ndarray  # int [W], at MODEL_SAMPLE_RATE_HZ
    n_samples: int  # length of the track the windows were cut from

    def __len__(self) -> int:
        return int(self.channel.shape[0])

    def start_s(self) -> np.ndarray:
        return self.start_sample / MODEL_SAMPLE_RATE_HZ


def window_starts(n_samples: int, hop_s: float = 1.0, window: int = WINDOW_SAMPLES) -> np.ndarray:
    """Start samples of the windows covering ``n_samples``.

    Windows start every ``hop_s``; when the hop grid does not end exactly at the end of
    the track, one last window is aligned to the track's end so the tail is scored too
    (instead of a zero-padded partial window, which would score the padding). A track
    shorter than one window gets a single window at 0 (the caller pads it).
    """
    if hop_s <= 0:
        raise ValueError(f"hop_s must be > 0, got {hop_s}")
    hop = max(1, int(round(hop_s * MODEL_SAMPLE_RATE_HZ)))
    if n_samples <= window:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, n_samples - window + 1, hop, dtype=np.int64)
    if starts[-1] != n_samples - window:
        starts = np.append(starts, n_samples - window)
    return starts


def cut_windows(
    audio: np.ndarray,
    starts: np.ndarray | None = None,
    hop_s: float = 1.0,
    channels: list[int] | None = None,
) -> tuple[np.ndarray, WindowIndex]:
    """Cut ``audio`` (float32 [C, N] at 44.1 kHz) into windows ``[W, 44100]``.

    Windows are ordered channel-major (all windows of channel 0, then channel 1, ...).
    ``starts`` fixes the window grid (e.g. sampled segments); otherwise a regular grid
    with ``hop_s`` is used. Tracks shorter than 1 s are zero-padded at the end.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None, :]
    n_ch, n = audio.shape
    if n < WINDOW_SAMPLES:
        audio = np.pad(audio, ((0, 0), (0, WINDOW_SAMPLES - n)))
    if starts is None:
        starts = window_starts(n, hop_s)
    starts = np.asarray(starts, dtype=np.int64)
    chans = list(range(n_ch)) if channels is None else list(channels)
    # sliding_window_view is a view; fancy indexing with starts copies only what we keep
    view = np.lib.stride_tricks.sliding_window_view(audio, WINDOW_SAMPLES, axis=1)
    windows = np.concatenate([view[c, starts] for c in chans], axis=0)
    index = WindowIndex(
        channel=np.repeat(np.asarray(chans, dtype=np.int64), len(starts)),
        start_sample=np.tile(starts, len(chans)),
        n_samples=n,
    )
    return np.ascontiguousarray(windows), index


def is_digital_silence(windows: np.ndarray) -> np.ndarray:
    """bool [W]: True where a window's peak is below half a 16-bit LSB."""
    return np.max(np.abs(windows), axis=-1) < SILENCE_PEAK


#: windows quieter than this (RMS) count as near-silent for the complexity measure
SILENCE_RMS_DBFS = -45.0


@dataclass(frozen=True)
class WindowComplexity:
    """Cheap per-window content measures (arrays of shape [W])."""

    rms_dbfs: np.ndarray
    #: mean positive frame-to-frame change of the log spectrum, dB per bin (onsets,
    #: note changes and noise bursts raise it; sustained tones keep it near 0)
    flux_db: np.ndarray
    #: frequency below which 99 % of the window's energy lies
    bandwidth_hz: np.ndarray
    #: flux_db * log2(1 + bandwidth_kHz); 0 for near-silent windows (rms < -45 dBFS)
    score: np.ndarray


def window_complexity(windows: np.ndarray, sample_rate_hz: int = MODEL_SAMPLE_RATE_HZ,
                      silence_rms_dbfs: float = SILENCE_RMS_DBFS) -> WindowComplexity:
    """Spectral flux x bandwidth of each window of ``windows`` float [W, N] (pure numpy).

    Used to pick the "more complex" clips of a source: codecs spend bits on transients and
    high-frequency detail, so busy, wide-band windows spread ViSQOL scores across settings,
    while quiet, dull ones score near-identity for almost everything.
    """
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim == 1:
        w = w[None, :]
    n_fft, hop = 2048, 1024
    rms = np.sqrt(np.mean(w ** 2, axis=1))
    rms_dbfs = 20 * np.log10(rms + 1e-12)
    if w.shape[1] < n_fft:
        w = np.pad(w, ((0, 0), (0, n_fft - w.shape[1])))
    frames = np.lib.stride_tricks.sliding_window_view(w, n_fft, axis=1)[:, ::hop]
    spec = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=-1)) ** 2  # [W, T, F]
    db = 10 * np.log10(spec + 1e-20)
    db = np.maximum(db, db.max(axis=(1, 2), keepdims=True) - 80.0)  # 80 dB floor
    if db.shape[1] > 1:
        flux = np.maximum(np.diff(db, axis=1), 0).mean(axis=(1, 2))
    else:
        flux = np.zeros(w.shape[0])
    power = spec.sum(axis=1)
    cum = np.cumsum(power, axis=1)
    idx = np.array([np.searchsorted(c, 0.99 * c[-1]) for c in cum])
    bandwidth = idx * sample_rate_hz / n_fft
    score = flux * np.log2(1 + bandwidth / 1000.0)
    score = np.where(rms_dbfs < silence_rms_dbfs, 0.0, score)
    return WindowComplexity(rms_dbfs=rms_dbfs, flux_db=flux, bandwidth_hz=bandwidth,
                            score=score)


def to_model_rate(audio: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """float32 ``audio`` (time on the last axis) at MODEL_SAMPLE_RATE_HZ, through the
    library's one resampler: public so that trainer/ (which may not import the private
    ``ratecontrol._resample``) feeds the model windows resampled as the library's are."""
    from ratecontrol._resample import resample

    return resample(audio, int(sample_rate_hz), MODEL_SAMPLE_RATE_HZ, dtype=np.float32)
