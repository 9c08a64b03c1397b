"""Pooling per-window MOS into one track score.

Default: ``p10`` (the 10th percentile). Why: bitrate decisions are made where the
mean hides trouble — a track whose mean is 4.4 can have 5% of windows (a cymbal crash,
a solo voice entry) at 3.6 that a listener hears. The minimum is too jumpy: one odd
window (ViSQOL's own variance on 1-s windows is ~0.05-0.1 MOS) would decide the whole
track. The 10th percentile says "90% of the track is at least this good", which is
conservative yet stable. Users pick another with ``--pool``.
"""
from __future__ import annotations

import re

import numpy as np

from ratecontrol.errors import UsageError

__all__ = ["DEFAULT_POOL", "pool", "validate_pool", "POOL_HELP"]

DEFAULT_POOL = "p10"
POOL_HELP = "mean | min | pN (N-th percentile, e.g. p10) | worstN (mean of the worst N%, e.g. worst5)"

_PCT = re.compile(r"^p(\d+(?:\.\d+)?)$")
_WORST = re.compile(r"^worst(\d+(?:\.\d+)?)$")


def validate_pool(method: str) -> str:
    """Return the method if valid, else raise UsageError."""
    m = method.strip().lower()
    if m in ("mean", "min"):
        return m
    for rx in (_PCT, _WORST):
        hit = rx.match(m)
        if hit and 0 < float(hit.group(1)) <= 100:
            return m
    raise UsageError(f"unknown pooling {method!r}; use {POOL_HELP}")


def pool(scores: np.ndarray, method: str = DEFAULT_POOL) -> float:
    """Pool per-window MOS into one number. Empty input gives nan."""
    m = validate_pool(method)
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return float("nan")
    if m == "mean":
        return float(s.mean())
    if m == "min":
        return float(s.min())
    hit = _PCT.match(m)
    if hit:
        # "lower" interpolation: the score of a real window, not a blend of two
        return float(np.percentile(s, float(hit.group(1)), method="lower"))
    frac = float(_WORST.match(m).group(1)) / 100.0
    k = max(1, int(np.ceil(frac * s.size)))
    return float(np.sort(s)[:k].mean())
