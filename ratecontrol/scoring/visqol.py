"""The exact scorer: ViSQOL v3 audio mode (visqol-python) on the model's 1-s windows.

ViSQOL audio mode is defined at 48 kHz, and its score depends on the rate it is fed (one
clip scored 3.54 at 48 kHz and 3.70 at 44.1 kHz), so every 44.1-kHz window is resampled
to 48 kHz here, as ViSQOL asks. ``visqol_mos`` is the project's ONE labelling path: the
dataset builder labels through it and the ``visqol`` scorer scores through it.
"""
from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass
from importlib.metadata import version as _pkg_version

import numpy as np
from scipy.signal import sosfiltfilt

from ratecontrol._resample import resample
from ratecontrol.scoring.base import register_scorer
# VISQOL_SAMPLE_RATE_HZ is re-exported: the rate this scorer feeds ViSQOL, defined in contract
from ratecontrol.contract import (MODEL_SAMPLE_RATE_HZ, SUBSONIC_CUTOFF_HZ, SUBSONIC_ORDER,
                                  VISQOL_SAMPLE_RATE_HZ)

__all__ = ["VISQOL_SAMPLE_RATE_HZ", "visqol_mos", "resample_to_visqol", "VisqolScorer", "subsonic_sos"]


@functools.lru_cache(maxsize=1)
def subsonic_sos():
    from scipy.signal import butter

    return butter(SUBSONIC_ORDER, SUBSONIC_CUTOFF_HZ, btype="highpass", fs=MODEL_SAMPLE_RATE_HZ, output="sos")


def resample_to_visqol(windows: np.ndarray) -> np.ndarray:
    """float [W, 44100] at 44.1 kHz -> float64 [W, 48000] at 48 kHz, subsonics removed.

    Each window loses its mean and everything below 20 Hz (2nd-order Butterworth run
    forward and backward: zero phase, -0.2 dB at ViSQOL's lowest band edge, 50 Hz) before
    resampling. Why: content below 20 Hz is inaudible, but codecs change it (libopus
    high-passes at 3 Hz, so a drifting DC offset turns into a slow transient) and
    ViSQOL's lowest gammatone band sees the difference through leakage. Measured on
    shared/audio flac-test-files "01", window 4-5 s (DC 0.012 drifting to 0, RMS 0.035):
    Opus at 256 kbps scored 3.55 / 3.45 (L / R) while every other window scored ~4.7 and
    no bitrate could fix it; mean removal alone gave 3.81 / 3.89; with the 20-Hz
    high-pass 4.68 / 4.70. Identity still scores 4.732. Both signals get the same filter,
    and the dataset labels go through this same function.
    """
    w = np.asarray(windows, dtype=np.float64)
    w = w if w.ndim == 2 else w[None, :]
    w = sosfiltfilt(subsonic_sos(), w - w.mean(axis=1, keepdims=True), axis=1)
    return resample(w, MODEL_SAMPLE_RATE_HZ, VISQOL_SAMPLE_RATE_HZ, dtype=np.float64)


@functools.lru_cache(maxsize=1)
def _api():
    from visqol import VisqolApi

    api = VisqolApi()
    api.create(mode="audio")
    return api


#: visqol-python's numba kernels run on numba's "workqueue" threading layer, which
#: aborts the process when two threads launch parallel kernels at once (seen with
#: --codec auto searching presets in threads). Encodes still overlap; ViSQOL calls queue.
#: Creating the API (its SVM model load) goes under the same lock: two probes starting
#: at once (api.PARALLEL_PROBES) created it twice, concurrently, and aborted the process.
_VISQOL_LOCK = threading.Lock()


def _measure48(ref48: np.ndarray, deg48: np.ndarray) -> np.ndarray:
    with _VISQOL_LOCK:
        api = _api()
        return np.array(
            [api.measure_from_arrays(r, d, VISQOL_SAMPLE_RATE_HZ).moslqo for r, d in zip(ref48, deg48)],
            dtype=np.float64,
        )


def visqol_mos(ref_windows: np.ndarray, deg_windows: np.ndarray) -> np.ndarray:
    """ViSQOL v3 audio-mode MOS-LQO per window pair (float [W, 44100] at 44.1 kHz each)."""
    ref48 = resample_to_visqol(ref_windows)
    deg48 = resample_to_visqol(deg_windows)
    if ref48.shape != deg48.shape:
        raise ValueError(f"reference and degraded windows differ in shape: {ref48.shape} vs {deg48.shape}")
    return _measure48(ref48, deg48)


@dataclass(frozen=True)
class _Prepared:
    ref48: np.ndarray


@register_scorer("visqol")
class VisqolScorer:
    """Exact, slow (~0.13 s per window per core). ``n_jobs`` spreads windows over processes."""

    name = "visqol"

    def __init__(self, n_jobs: int | None = None, **_: object):
        self.n_jobs = n_jobs if n_jobs is not None else 1
        self.version = f"visqol-python-{_pkg_version('visqol-python')}-audio-48k"

    def prepare(self, ref_windows: np.ndarray) -> _Prepared:
        return _Prepared(resample_to_visqol(ref_windows))

    def score(self, prepared: _Prepared, deg_windows: np.ndarray) -> np.ndarray:
        deg48 = resample_to_visqol(deg_windows)
        ref48 = prepared.ref48
        if ref48.shape != deg48.shape:
            raise ValueError(f"reference and degraded windows differ in shape: {ref48.shape} vs {deg48.shape}")
        n_jobs = self.n_jobs if self.n_jobs > 0 else (os.cpu_count() or 1)
        if n_jobs == 1 or len(ref48) < 8:
            return _measure48(ref48, deg48)
        from joblib import Parallel, delayed

        chunks = np.array_split(np.arange(len(ref48)), n_jobs * 4)
        parts = Parallel(n_jobs=n_jobs)(delayed(_measure48)(ref48[c], deg48[c]) for c in chunks if len(c))
        return np.concatenate(parts)
