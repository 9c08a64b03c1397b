"""MelCnn: the generic baseline nsimnet is compared with (docs/model.md)."""
from __future__ import annotations

from typing import Mapping

import torch
import torchaudio
from torch import Tensor, nn

from ratecontrol.contract import MODEL_SAMPLE_RATE_HZ as SAMPLE_RATE_HZ
from ratecontrol.scoring._bounded import bounded_mos

__all__ = ["MelCnn"]


class MelCnn(nn.Module):
    """Generic baseline: level-matched log-mel of both signals + difference -> small CNN."""

    arch = "melcnn"

    def __init__(
        self,
        n_fft: int = 2048,
        hop_length: int = 512,
        n_mels: int = 64,
        channels: tuple[int, ...] | list[int] = (16, 32, 64),
        hidden: int = 64,
        design: bool = True,
    ):
        super().__init__()
        self.config = dict(n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, channels=list(channels), hidden=hidden)
        self.mel = torchaudio.transforms.MelSpectrogram(
            SAMPLE_RATE_HZ, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, f_min=20.0, f_max=SAMPLE_RATE_HZ / 2, power=2.0
        )
        layers: list[nn.Module] = []
        c_in = 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.GELU(), nn.Conv2d(c, c, 3, padding=1), nn.GELU(), nn.MaxPool2d(2)]
            c_in = c
        self.cnn = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(2 * c_in, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def reference_features(self, ref: Tensor) -> dict[str, Tensor]:
        return {"logmel": 10 * torch.log10(self.mel(ref.float()) + 1e-10), "ms": ref.float().pow(2).mean(-1)}

    def forward_from_reference(self, ref_feats: Mapping[str, Tensor], deg: Tensor) -> Tensor:
        with torch.autocast(device_type=deg.device.type, enabled=False):
            x = self._pair_image(ref_feats, deg)
        h = self.cnn(x)
        h = torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1)
        return bounded_mos(self.head(h).squeeze(-1).float())

    def _pair_image(self, ref_feats: Mapping[str, Tensor], deg: Tensor) -> Tensor:
        deg_ms = deg.float().pow(2).mean(-1)
        level = 10 * torch.log10((ref_feats["ms"] + 1e-20) / (deg_ms + 1e-20))
        r = ref_feats["logmel"]
        d = 10 * torch.log10(self.mel(deg.float()) + 1e-10) + level[:, None, None]
        top = torch.maximum(r.amax((1, 2), keepdim=True), d.amax((1, 2), keepdim=True))
        r, d = (r - top).clamp_min(-90.0) / 30.0, (d - top).clamp_min(-90.0) / 30.0
        return torch.stack([r, d, d - r], dim=1)

    def forward(self, ref: Tensor, deg: Tensor) -> Tensor:
        return self.forward_from_reference(self.reference_features(ref), deg)
