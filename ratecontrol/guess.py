"""The knob search's first guess (issue 24, round 2): where the crossing of a target is
likely to lie for a preset, from cheap features of the reference.

Pure numpy on the reference's scoring windows (the prober already has them); no encode,
no scorer. Off by default (``FIRST_GUESS_FROM_PRIOR``): measured once on the held-out
Wesnoth searches with round 2's other search constants it did not pay (bits +7.6 % over
the continuous oracle against +5.2 %, probes mean 4.25 against 4.33; docs/performance.md,
"Round 2 (probes and bits)"), and the prior's error (sd 0.25-0.28 in ln kbps, ~30 %) is
about the spread of the crossings themselves.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import math

import numpy as np

from ratecontrol.windows import window_complexity

__all__ = ["FIRST_GUESS_FROM_PRIOR", "FIRST_GUESS_OFFSET_X", "FEATURE_WINDOWS", "PRIORS", "Prior", "ReferenceFeatures", "prior_x",
           "reference_features"]

#: the features look at no more than this many windows (evenly spread): an hour of input
#: sampled at 20 % has 1,440 stereo windows; 64 keep the features' cost to a few ms
FEATURE_WINDOWS = 64


@dataclass(frozen=True)
class ReferenceFeatures:
    """Medians over the reference's non-silent windows (``windows.window_complexity``)."""

    rms_dbfs: float
    flux_db: float
    bandwidth_hz: float
    complexity: float

    def as_dict(self) -> dict:
        return asdict(self)


def reference_features(ref_w: np.ndarray) -> ReferenceFeatures:
    """Level, spectral flux, 99 % bandwidth and their product (the complexity score) of
    ``ref_w`` float [W, N] (1-s windows at the model rate), as medians over the windows
    louder than the silence threshold (all windows when none is)."""
    ref_w = np.asarray(ref_w)
    if len(ref_w) > FEATURE_WINDOWS:
        ref_w = ref_w[np.linspace(0, len(ref_w) - 1, FEATURE_WINDOWS).round().astype(int)]
    c = window_complexity(ref_w)
    live = c.score > 0
    if not live.any():
        live = np.ones_like(live)
    return ReferenceFeatures(rms_dbfs=float(np.median(c.rms_dbfs[live])), flux_db=float(np.median(c.flux_db[live])),
                             bandwidth_hz=float(np.median(c.bandwidth_hz[live])),
                             complexity=float(np.median(c.score[live])))


@dataclass(frozen=True)
class Prior:
    """ln(stereo nominal kbps) where a preset's learned p10 crosses ``level`` MOS:
    ``a + b (level - 4.3) + c (ln feature - centre)``."""

    a: float
    b: float
    c: float = 0.0
    feature: str | None = None
    centre: float = 0.0

    def x(self, level: float, features: ReferenceFeatures | None) -> float:
        x = self.a + self.b * (level - 4.3)
        if self.feature and features is not None:
            v = getattr(features, self.feature)
            if v > 0:
                x += self.c * (math.log(v) - self.centre)
        return x


#: per preset, fitted by ``bench/bench_knob.py fit`` (least squares over the learned p10
#: rung curves of ``bench_knob.py curves``: 14 Wesnoth tracks, the 3 tuning tracks and 11
#: others, never the 3 held out; levels 4.03 / 4.33 / 4.53; 2026-12-07). Residual sd of ln
#: kbps at the crossing: Opus 0.294 with no feature, 0.254 with complexity (flux 0.258,
#: bandwidth 0.285); AAC 0.280 / 0.277 (no feature helps much). In ``bench_knob.py
#: simulate`` (leave-one-track-out) the complexity prior took the median from 4 to 3
#: probes per search against the fixed rung (mean 3.73 -> 3.47). Other presets have no
#: prior yet (the caller falls back to a rung below the ladder's middle)
PRIORS: dict[str, Prior] = {
    "opus": Prior(a=4.4019, b=1.5969, c=0.5738, feature="complexity", centre=1.3903),
    "aac": Prior(a=4.8971, b=1.0529, c=0.1310, feature="complexity", centre=1.3623),
}

#: the knob search's first probe comes from PRIORS (True) or, by default, from the rung
#: rule of probing/searching.py (a rung below the ladder's middle); see the module docstring
FIRST_GUESS_FROM_PRIOR = False

#: the first probe sits this far (ln kbps) from the prior's predicted crossing: a little
#: below, so the search more often comes at the crossing from underneath, where the dip
#: rule has a lower probe that scored lower and costs nothing (``simulate``: 0 / -0.1 /
#: -0.15 within 0.1 probe of each other; -0.1 kept for the dip rule's sake)
FIRST_GUESS_OFFSET_X = -0.1


def prior_x(preset: str, level: float, features: ReferenceFeatures | None = None) -> float | None:
    """ln(stereo nominal kbps) of the first probe for ``preset`` at bar ``level`` (target
    + margin), or None when the preset has no prior (the caller's fallback)."""
    p = PRIORS.get(preset)
    return None if p is None else p.x(level, features) + FIRST_GUESS_OFFSET_X
