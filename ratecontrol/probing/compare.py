"""``api.score``: two recordings (files or arrays) brought to the model's rate the way
a search's check reads them, aligned, and scored window by window."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ratecontrol import media
from ratecontrol._resample import resample
from ratecontrol.align import align, estimate_delay
from ratecontrol.errors import RatecontrolWarning, UsageError
from ratecontrol.options import Options, check_flag
from ratecontrol.probing.session import resolve_scorer
from ratecontrol.probing.track import NO_RATE, as_array, check_long_enough, check_rate, output_rate, require_finite
from ratecontrol.results import ScoreResult
from ratecontrol.scoring.pooling import pool as pool_scores
from ratecontrol.windows import MODEL_SAMPLE_RATE_HZ, cut_windows, is_digital_silence

__all__ = ["score", "load_pair", "MAX_ALIGN_LAG_S", "RELATED_MIN_CORRELATION"]

#: the largest codec/file delay ``score`` searches for when aligning two files (0.5 s)
MAX_ALIGN_LAG_S = 0.5

#: below this correlation of the aligned mono mixes, two signals are not one recording
#: and its encode: a codec at its lowest rung keeps > 0.7 on music, unrelated music
#: gives < 0.1 (tests/test_api.py)
RELATED_MIN_CORRELATION = 0.3


def score(reference, degraded, *, scorer: Any = None, pool: str = "p10", sample_rate_hz: int | None = None,
          hop_s: float = 1.0, align_signals: bool = True, jobs: int | None = None,
          allow_partial: bool = False) -> ScoreResult:
    """``api.score`` (see there)."""
    opts = Options(scorer=scorer, pool=pool, hop_s=hop_s, jobs=jobs, allow_partial=allow_partial)
    align_signals = check_flag("align_signals", align_signals)
    pool = opts.pool
    for x in (reference, degraded):  # before the scorer loads
        if not isinstance(x, np.ndarray):
            check_long_enough(media.inspect(x).duration_s, str(x))
    sc = resolve_scorer(opts.scorer, n_jobs=opts.jobs)
    ref, deg, layout = load_pair(reference, degraded, sample_rate_hz, allow_partial)
    if ref.shape[0] != deg.shape[0]:
        # mono vs stereo: compare mono mixes rather than refuse
        ref, deg = ref.mean(axis=0, keepdims=True), deg.mean(axis=0, keepdims=True)
    delay = 0
    if align_signals:
        delay = estimate_delay(ref, deg, int(MAX_ALIGN_LAG_S * MODEL_SAMPLE_RATE_HZ))
        deg = align(ref, deg, delay)
    else:
        deg = _fit_length(deg, ref.shape[1])
    _warn_if_unrelated(ref, deg, reference, degraded)
    # surround: every channel but the LFE, as encode's probes and check (docs/scoring.md)
    lfe = media.lfe_indices(layout) if ref.shape[0] == deg.shape[0] else ()
    chans = [c for c in range(ref.shape[0]) if c not in lfe]
    ref_w, index = cut_windows(ref, hop_s=hop_s, channels=chans)
    deg_w, _ = cut_windows(deg, starts=index.start_sample[: len(index) // len(chans)], channels=chans)
    both_silent = is_digital_silence(ref_w) & is_digital_silence(deg_w)
    scores = np.full(len(ref_w), np.nan)
    if (~both_silent).any():
        scores[~both_silent] = sc.score(sc.prepare(ref_w[~both_silent]), deg_w[~both_silent])
    keep = ~both_silent
    return ScoreResult(
        scorer=sc.name,
        pool=pool,
        pooled_mos=pool_scores(scores[keep], pool),
        window_mos=tuple(float(s) for s in scores[keep]),
        window_start_s=tuple(float(s) for s in index.start_s()[keep]),
        window_channel=tuple(int(c) for c in index.channel[keep]),
        delay_samples=int(delay),
    )


def load_pair(reference, degraded, sample_rate_hz: int | None,
              allow_partial: bool = False) -> tuple[np.ndarray, np.ndarray, str]:
    """Both signals at the model's 44.1 kHz, brought there the way a search's check is.

    Files are decoded by ffmpeg at one common rate, the degraded file's own when it
    is 44.1 or 48 kHz (the rate it was encoded at: an Opus file is 48 kHz), and both
    are then resampled by the one in-process resampler, as probes and the output check
    are: so ``score(INPUT, OUTPUT)`` reads the shipped file exactly as ``encode``
    scored it (tests/test_oneencode.py).

    Surround (two files of the same 3+ channel count): the degraded file is read in its
    own layout and the reference converted to it by channel name, as ``encode`` decoded
    the input for the encoder; the third value is that layout ("" otherwise)."""
    out = []
    files = [x for x in (reference, degraded) if not isinstance(x, np.ndarray)]
    common = None
    layout = ""
    if files:
        infos = {id(x): media.inspect(x) for x in files}
        anchor = degraded if not isinstance(degraded, np.ndarray) else reference
        common = output_rate(NO_RATE, infos[id(anchor)].sample_rate_hz)
        if len(files) == 2 and infos[id(reference)].channels == infos[id(degraded)].channels > 2:
            layout = infos[id(degraded)].channel_layout
    for x, what in ((reference, "reference"), (degraded, "degraded")):
        if isinstance(x, np.ndarray):
            if sample_rate_hz is None:
                raise UsageError(f"pass sample_rate_hz together with the {what} array")
            a = as_array(x, what)
            check_long_enough(a.shape[1] / check_rate(sample_rate_hz), f"the {what} array")
            out.append(resample(a, check_rate(sample_rate_hz), MODEL_SAMPLE_RATE_HZ))
        else:
            a = media.decode(x, sample_rate_hz=common,
                             channels=None if layout else min(infos[id(x)].channels, 2),
                             allow_partial=allow_partial,
                             layout=layout if layout and x is reference else None)
            check_long_enough(a.shape[1] / common, str(x))  # what decoded
            out.append(resample(require_finite(a, str(x)), common, MODEL_SAMPLE_RATE_HZ))
    return out[0], out[1], layout


def _warn_if_unrelated(ref: np.ndarray, deg: np.ndarray, ref_name, deg_name) -> None:
    """A RatecontrolWarning when the aligned mono mixes barely correlate; it points at
    the caller of ``api.score`` (this function, ``score``, ``api.score``, the caller)."""
    a, b = ref.mean(axis=0).astype(np.float64), deg.mean(axis=0).astype(np.float64)
    n = min(a.size, b.size)
    a, b = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    if den == 0:
        return
    r = float((a * b).sum() / den)
    if r < RELATED_MIN_CORRELATION:
        what = (f"{deg_name} and {ref_name}" if not isinstance(ref_name, np.ndarray) else "the two signals")
        warnings.warn(RatecontrolWarning(
            f"{what} do not look like the same audio (correlation {r:.2f} after alignment): the score compares "
            "unrelated signals"), stacklevel=4)


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    if x.shape[1] >= n:
        return x[:, :n]
    return np.pad(x, ((0, 0), (0, n - x.shape[1])))
