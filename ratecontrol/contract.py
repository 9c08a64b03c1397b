"""The audio and score contract every module shares: one definition each.

Scale (ViSQOL v3 audio mode, MOS-LQO): the scale is defined on [1, 5]; an identical
copy scores 4.732 under visqol-python 3.8 after the subsonic clean-up
(scoring/visqol.py), so no encode can score above ``MOS_CEILING``.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

from ratecontrol.errors import UsageError

__all__ = [
    "check_target_mos",
    "MOS_MIN",
    "MOS_MAX",
    "MOS_IDENTITY",
    "MOS_CEILING",
    "MODEL_MOS_MAX",
]

#: the MOS-LQO scale's own bounds
MOS_MIN, MOS_MAX = 1.0, 5.0
#: what an identical copy scores (visqol-python 3.8, 48 kHz, subsonic clean-up)
MOS_IDENTITY = 4.732
#: the highest target worth searching for: identity, rounded up (a target above it is
#: refused at once instead of being searched to the top rung and failing)
MOS_CEILING = 4.75
#: the learned model's output bound: a little above identity so its sigmoid is not
#: pinned at the top (scoring/model.py)
MODEL_MOS_MAX = 4.75


def check_target_mos(target_mos: Any) -> float:
    """A target MOS as a float, or one UsageError saying what is wrong with it."""
    if isinstance(target_mos, bool) or not isinstance(target_mos, numbers.Real):
        raise UsageError(f"target MOS must be a number, got {target_mos!r}")
    t = float(target_mos)
    if not math.isfinite(t) or not (MOS_MIN <= t <= MOS_MAX):
        raise UsageError(f"target MOS {target_mos!r} is outside the MOS scale [{MOS_MIN:g}, {MOS_MAX:g}]")
    if t > MOS_CEILING:
        raise UsageError(f"target MOS {t:g} is above what any encode can score: an identical copy scores "
                         f"~{MOS_IDENTITY:g} on the ViSQOL v3 audio scale; choose a target up to {MOS_CEILING:g}")
    return t
