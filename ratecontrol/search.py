"""Search a codec's knob (``search_knob``, the default since issue 24: the lowest setting
whose pooled score meets the target, to within a tolerance; ``ratecontrol.knob_search``)
or its ladder (``search_ladder``: the cheapest rung, ``ladder=True``;
``ratecontrol.ladder_search``, whose docstring has the dip rule's reasoning and numbers).

Both are pure logic: they call ``evaluate`` for a pooled score and know nothing about
audio. This module keeps the public names importable from one place.
"""
from __future__ import annotations

from ratecontrol.knob_search import (KNOB_NEAR_MISS_MOS, KNOB_SLOPE_PRIOR_MOS_PER_X, KNOB_TOLERANCE_MOS, RECHECK_X,
                                     SLOPE_PRIOR_MOS_PER_X, KnobOutcome, search_knob)
from ratecontrol.ladder_search import (DEFAULT_RULE, NEAR_MISS_MOS, RULES, SLOPE_PRIOR_MOS_PER_RUNG, LadderOutcome,
                                       search_ladder)

__all__ = ["DEFAULT_RULE", "KNOB_NEAR_MISS_MOS", "KNOB_SLOPE_PRIOR_MOS_PER_X", "KNOB_TOLERANCE_MOS", "KnobOutcome",
           "LadderOutcome", "NEAR_MISS_MOS", "RECHECK_X", "RULES", "SLOPE_PRIOR_MOS_PER_RUNG", "SLOPE_PRIOR_MOS_PER_X",
           "search_knob", "search_ladder"]
