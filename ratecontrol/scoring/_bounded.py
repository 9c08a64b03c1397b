"""The models' output scale: a logit to MOS in [MOS_MIN, MODEL_MOS_MAX]."""
from __future__ import annotations

import torch
from torch import Tensor

# the output range [MOS_MIN, MODEL_MOS_MAX]: the scale's bottom, and a top a little above
# ViSQOL's identity score (4.73) so the sigmoid is not pinned there (not the scale's MOS_MAX)
from ratecontrol.contract import MODEL_MOS_MAX, MOS_MIN

__all__ = ["bounded_mos"]


def bounded_mos(logit: Tensor) -> Tensor:
    return MOS_MIN + (MODEL_MOS_MAX - MOS_MIN) * torch.sigmoid(logit)

