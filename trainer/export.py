"""Export a training checkpoint as the library checkpoint ``ratecontrol`` loads.

``python -m trainer export runs/nsimnet/best.pt --out ratecontrol/weights/default.pt
[--metrics eval/metrics.json] [--note "..."]``

The result is a dict {format_version, arch, kwargs, state_dict, frontend, training_data,
metrics, exported}: tensors and primitive types only, so ``torch.load(weights_only=True)``
reads it; the optimizer state of the training checkpoint is dropped.
"""
from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass

import torch

from ratecontrol.errors import ModelError

__all__ = ["export_checkpoint", "ExportResult"]


@dataclass(frozen=True)
class ExportResult:
    path: str
    size_bytes: int
    arch: str
    n_parameters: int


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read metrics file {path}: {exc}") from exc


def export_checkpoint(checkpoint: str, out_path: str, *, metrics: dict | str | None = None, note: str | None = None,
                      extra_metrics: dict[str, dict | str] | None = None) -> ExportResult:
    """Write the library checkpoint for ``checkpoint`` to ``out_path`` (atomically).

    ``metrics``: a dict or a metrics.json written by ``trainer evaluate`` (stored under
    ``metrics["evaluation"]`` next to the validation metrics saved during training);
    ``extra_metrics``: name -> dict or .json path, stored as ``metrics[name]`` (e.g. the
    real-music check of bench/bench_model.py)."""
    from ratecontrol.scoring.model import SAMPLE_RATE_HZ, WINDOW_SAMPLES, checkpoint_dict, load_checkpoint, save_checkpoint

    model, ckpt = load_checkpoint(checkpoint)
    merged = dict(ckpt.get("metrics", {}))
    if isinstance(metrics, str):
        metrics = _read_json(metrics)
    for name, value in (extra_metrics or {}).items():
        merged[name] = _read_json(value) if isinstance(value, str) else dict(value)
    if metrics:
        merged["evaluation"] = {k: v for k, v in metrics.items() if k != "bins"} | {"bins": metrics.get("bins", [])}
    frontend = {"sample_rate_hz": SAMPLE_RATE_HZ, "window_samples": WINDOW_SAMPLES, "channels": "mono, one window per channel",
                **{k: v for k, v in model.config.items() if k not in ("hidden", "channels")}}
    train_state = ckpt.get("train_state", {})
    exported = {"from": os.path.basename(checkpoint), "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "torch": torch.__version__, "epoch": train_state.get("epoch", ckpt.get("metrics", {}).get("epoch"))}
    if note:
        exported["note"] = note
    out = checkpoint_dict(model, frontend=frontend, training_data=ckpt.get("training_data", {}), metrics=merged,
                          extra={"exported": exported, "train_config": train_state.get("config", {})})
    save_checkpoint(out, out_path)
    # prove it loads the way the library loads it
    load_checkpoint(out_path)
    return ExportResult(out_path, os.path.getsize(out_path), model.arch, sum(p.numel() for p in model.parameters()))
