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
import warnings
from dataclasses import dataclass
from importlib.metadata import version as _pkg_version

import numpy as np
from scipy.signal import sosfiltfilt

from ratecontrol._resample import resample
from ratecontrol.scoring.base import register_scorer
# VISQOL_SAMPLE_RATE_HZ is re-exported: the rate this scorer feeds ViSQOL, defined in contract
from ratecontrol.contract import (MODEL_SAMPLE_RATE_HZ, MOS_IDENTITY, MOS_MIN, SUBSONIC_CUTOFF_HZ, SUBSONIC_ORDER,
                                  VISQOL_SAMPLE_RATE_HZ)
from ratecontrol.errors import RatecontrolWarning
from ratecontrol.windows import is_digital_silence

__all__ = ["VISQOL_SAMPLE_RATE_HZ", "SILENT_DEGRADED_NOTE", "visqol_mos", "resample_to_visqol", "VisqolScorer", "subsonic_sos"]


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


#: the note for a degraded window that is digital silence against sound (one text, so
#: Python shows it once per run, not once per probe)
SILENT_DEGRADED_NOTE = (
    "exact ViSQOL has no score for a degraded window that is digital silence against a reference "
    f"that is not (its level matching divides by zero): such windows score {MOS_MIN:g}, the scale's floor")


def _silence_rule(ref_silent: np.ndarray, deg_silent: np.ndarray) -> np.ndarray:
    """float [W]: the MOS of the windows ViSQOL cannot score, NaN where it can.

    visqol-python scales the degraded signal to the reference's level, and a degraded
    window of digital silence (``windows.is_digital_silence``) has none: its score was
    NaN (with numpy's RuntimeWarning on stderr), at any length. Everything the
    reference had is gone, so it scores the scale's floor, MOS_MIN, as the learned
    scorer scores it low (2.34) rather than not at all; both windows silent are the
    same signal, MOS_IDENTITY (the learned scorer: 4.727). A silent reference window
    where the codec put sound is scored by ViSQOL as usual (docs/scoring.md)."""
    fixed = np.full(len(deg_silent), np.nan)
    fixed[deg_silent & ~ref_silent] = MOS_MIN
    fixed[deg_silent & ref_silent] = MOS_IDENTITY
    if (deg_silent & ~ref_silent).any():
        warnings.warn(RatecontrolWarning(SILENT_DEGRADED_NOTE), stacklevel=3)
    return fixed


def _measure_where_defined(ref48: np.ndarray, deg48: np.ndarray, fixed: np.ndarray, measure) -> np.ndarray:
    """``fixed`` (_silence_rule) with its NaNs filled by ``measure(ref48, deg48)`` of those windows."""
    out = fixed.copy()
    todo = np.isnan(fixed)
    if todo.any():
        out[todo] = measure(ref48[todo], deg48[todo])
    return out


def visqol_mos(ref_windows: np.ndarray, deg_windows: np.ndarray) -> np.ndarray:
    """ViSQOL v3 audio-mode MOS-LQO per window pair (float [W, 44100] at 44.1 kHz each);
    a silent degraded window by ``_silence_rule``."""
    ref48 = resample_to_visqol(ref_windows)
    deg48 = resample_to_visqol(deg_windows)
    if ref48.shape != deg48.shape:
        raise ValueError(f"reference and degraded windows differ in shape: {ref48.shape} vs {deg48.shape}")
    fixed = _silence_rule(_silent(ref_windows), _silent(deg_windows))
    return _measure_where_defined(ref48, deg48, fixed, _measure48)


def _silent(windows: np.ndarray) -> np.ndarray:
    w = np.asarray(windows)
    return is_digital_silence(w if w.ndim == 2 else w[None, :])


@dataclass(frozen=True)
class _Prepared:
    ref48: np.ndarray
    ref_silent: np.ndarray


@register_scorer("visqol")
class VisqolScorer:
    """Exact, slow (~0.13 s per window per core). ``n_jobs`` spreads windows over processes."""

    name = "visqol"

    def __init__(self, n_jobs: int | None = None, **_: object):
        self.n_jobs = n_jobs if n_jobs is not None else 1
        self.version = f"visqol-python-{_pkg_version('visqol-python')}-audio-48k"

    def prepare(self, ref_windows: np.ndarray) -> _Prepared:
        return _Prepared(resample_to_visqol(ref_windows), _silent(ref_windows))

    def score(self, prepared: _Prepared, deg_windows: np.ndarray) -> np.ndarray:
        deg48 = resample_to_visqol(deg_windows)
        ref48 = prepared.ref48
        if ref48.shape != deg48.shape:
            raise ValueError(f"reference and degraded windows differ in shape: {ref48.shape} vs {deg48.shape}")
        fixed = _silence_rule(prepared.ref_silent, _silent(deg_windows))
        return _measure_where_defined(ref48, deg48, fixed, self._measure)

    def _measure(self, ref48: np.ndarray, deg48: np.ndarray) -> np.ndarray:
        n_jobs = self.n_jobs if self.n_jobs > 0 else (os.cpu_count() or 1)
        if n_jobs == 1 or len(ref48) < 8:
            return _measure48(ref48, deg48)
        from joblib import Parallel, delayed

        chunks = np.array_split(np.arange(len(ref48)), n_jobs * 4)
        parts = Parallel(n_jobs=n_jobs)(delayed(_measure48)(ref48[c], deg48[c]) for c in chunks if len(c))
        return np.concatenate(parts)
