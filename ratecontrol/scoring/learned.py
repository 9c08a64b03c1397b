"""The learned scorer: the compact model of ``ratecontrol.scoring.model`` on 1-s windows.

Loads the packaged checkpoint (``ratecontrol/weights/default.pt``) or ``model_path``
with ``torch.load(weights_only=True)``; an unknown format version, a missing or corrupt
file raise ModelError. ``device="auto"`` uses CUDA when present (the head then runs
under float16 autocast; the frontend stays float32), else the CPU. Reference features
are computed once in ``prepare`` and kept on the CPU (about 4 KB per window for the
default model, so an hour of stereo is ~30 MB); ``score`` streams windows through the
model in chunks of ``batch_size`` so memory stays flat for long inputs.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import resources

import numpy as np

from ratecontrol.errors import ModelError, UsageError
from ratecontrol.scoring.base import register_scorer

__all__ = ["LearnedScorer", "default_model_path", "DEFAULT_MODEL_NAME"]

DEFAULT_MODEL_NAME = "default.pt"
from ratecontrol.contract import WINDOW_SAMPLES  # noqa: E402


def default_model_path() -> str:
    """Path of the packaged default checkpoint (it may not exist in a source checkout)."""
    return str(resources.files("ratecontrol").joinpath("weights", DEFAULT_MODEL_NAME))


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def _check_windows(windows: np.ndarray, what: str) -> np.ndarray:
    w = np.asarray(windows)
    if w.ndim == 1:
        w = w[None, :]
    if w.ndim != 2 or w.shape[1] != WINDOW_SAMPLES:
        raise UsageError(f"learned scorer needs {what} windows shaped [W, {WINDOW_SAMPLES}] (1 s at 44.1 kHz), got {w.shape}")
    return np.ascontiguousarray(w, dtype=np.float32)


@dataclass(frozen=True)
class _Prepared:
    #: reference features per window, on the CPU (dict of [W, ...] tensors)
    features: dict
    n_windows: int


@register_scorer("learned")
class LearnedScorer:
    """Fast learned approximation of the ViSQOL v3 audio-mode MOS per 1-s window."""

    name = "learned"
    #: prepare() keeps ~4 KB of features per window, not the window (see the module doc)
    compact_prepare = True
    #: learned minus exact ViSQOL on a track's p10, 1,194 (track, rung) pairs of the 52
    #: real recordings in ../shared/audio (bench/bench_oracle.py, docs/performance.md
    #: "Oracle bench"): bias -0.002, RMSE 0.028, 97th percentile +0.031, worst +0.083
    pooled_error_mos = 0.028
    #: the default search margin: with +0.03 the chosen rung met the target by exact
    #: ViSQOL in 99.8 % of 672 searches (51 of 52 tracks in all 15 of their searches;
    #: worst shortfall 0.006) for +2.3 % bits; with 0 it was 94.9 % (worst 0.027)
    default_margin_mos = 0.03

    def __init__(self, model_path: str | None = None, device: str = "auto", batch_size: int | None = None,
                 threads: int | None = None, **_: object):
        import torch

        from ratecontrol.scoring.model import load_checkpoint

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.device = torch.device(device)
        except RuntimeError as exc:
            raise UsageError(f"unknown device {device!r} for the learned scorer; use auto, cpu or cuda") from exc
        if threads:
            torch.set_num_threads(int(threads))
        path = os.fspath(model_path) if model_path else default_model_path()
        if not model_path and not os.path.isfile(path):
            raise ModelError(f"no packaged default model at {path} (a broken install? reinstall ratecontrol); "
                             "pass a model file as LearnedScorer(model_path=...), or use the exact scorer",
                             options={"scorer": "visqol"})
        self.model_path = path
        self.model, ckpt = load_checkpoint(path, map_location=self.device)
        self.arch = ckpt["arch"]
        self.metrics = ckpt.get("metrics", {})
        from ratecontrol.scoring.model import CODE_REVISION

        self.version = f"learned-{self.arch}-v{ckpt['format_version']}-r{CODE_REVISION}-{_file_digest(path)}"
        # CUDA: large batches keep the GPU busy (a 1-s pair is ~0.2 MB of float32 input);
        # CPU: 128 windows keep the STFT working set in cache
        self.batch_size = int(batch_size or (1024 if self.device.type == "cuda" else 128))
        if self.batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {self.batch_size}")

    def _chunks(self, n: int):
        for i in range(0, n, self.batch_size):
            yield slice(i, min(n, i + self.batch_size))

    def prepare(self, ref_windows: np.ndarray) -> _Prepared:
        import torch

        ref = _check_windows(ref_windows, "reference")
        parts: list[dict] = []
        with torch.inference_mode():
            for sl in self._chunks(len(ref)):
                x = torch.from_numpy(ref[sl]).to(self.device, non_blocking=True)
                parts.append({k: v.float().cpu() for k, v in self.model.reference_features(x).items()})
        if parts:
            feats = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        else:
            with torch.inference_mode():
                probe = self.model.reference_features(torch.zeros(1, WINDOW_SAMPLES, device=self.device))
            feats = {k: v[:0].cpu() for k, v in probe.items()}
        return _Prepared(feats, len(ref))

    def score(self, prepared: _Prepared, deg_windows: np.ndarray) -> np.ndarray:
        import torch

        deg = _check_windows(deg_windows, "degraded")
        if len(deg) != prepared.n_windows:
            raise UsageError(f"{len(deg)} degraded windows for {prepared.n_windows} prepared reference windows")
        out = np.empty(len(deg), dtype=np.float64)
        cuda = self.device.type == "cuda"
        with torch.inference_mode(), torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=cuda):
            for sl in self._chunks(len(deg)):
                feats = {k: v[sl].to(self.device, non_blocking=True) for k, v in prepared.features.items()}
                x = torch.from_numpy(deg[sl]).to(self.device, non_blocking=True)
                out[sl] = self.model.forward_from_reference(feats, x).float().cpu().numpy()
        return out
