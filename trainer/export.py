"""Export a training checkpoint as the library checkpoint ``ratecontrol`` loads.

``python -m trainer export runs/nsimnet/best.pt --out ratecontrol/weights/default.pt
[--metrics eval/metrics.json] [--note "..."]``

The result is a dict {format_version, arch, kwargs, state_dict, frontend, training_data,
metrics, exported}: tensors and primitive types only, so ``torch.load(weights_only=True)``
reads it; the optimizer state of the training checkpoint is dropped. An nsimnet export
to ``X.pt`` also writes ``X.npz`` beside it (``export_numpy``).

``python -m trainer export-numpy [ratecontrol/weights/default.pt] [--out X.npz]`` writes
the numpy runtime's file (``ratecontrol.scoring.numpy_model``) from a library
checkpoint alone: plain arrays (``np.load(allow_pickle=False)``), the band matrix as the
library uses it (tiny weights flushed), the fixed window and pre-filter response as
torch computes them, the source checkpoint's digest; then it checks that both runtimes
score the same windows alike (< 1e-3 MOS).
"""
from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass

import torch

from ratecontrol.errors import ModelError

__all__ = ["export_checkpoint", "export_numpy", "ExportResult"]


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
    if model.arch == "nsimnet" and out_path.endswith(".pt"):
        export_numpy(out_path, out_path[:-3] + ".npz")
    return ExportResult(out_path, os.path.getsize(out_path), model.arch, sum(p.numel() for p in model.parameters()))


#: the largest per-window difference export_numpy accepts between the two runtimes
NUMPY_EXPORT_TOLERANCE_MOS = 1e-3


def export_numpy(checkpoint: str, out_path: str | None = None) -> ExportResult:
    """Write the numpy runtime's arrays for the library checkpoint ``checkpoint`` (default
    out: the same name with ``.npz``), atomically, and check them against torch."""
    import numpy as np

    from ratecontrol import fsutil
    from ratecontrol.contract import MODEL_MOS_MAX, MODEL_SAMPLE_RATE_HZ, MOS_MIN, WINDOW_SAMPLES
    from ratecontrol.scoring.model import CODE_REVISION, SubsonicHighpass, load_checkpoint
    from ratecontrol.scoring.numpy_model import NUMPY_FORMAT_VERSION, load_numpy_model

    checkpoint = os.fspath(checkpoint)
    out_path = os.fspath(out_path) if out_path else os.path.splitext(checkpoint)[0] + ".npz"
    model, ckpt = load_checkpoint(checkpoint)  # band matrix flushed as the library uses it
    if model.arch != "nsimnet":
        raise ModelError(f"the numpy runtime runs nsimnet models; {checkpoint} is {model.arch!r}")
    cfg = model.config
    pre = model.prefilter if isinstance(model.prefilter, SubsonicHighpass) else SubsonicHighpass()
    arrays = {
        "format_version": np.array(NUMPY_FORMAT_VERSION), "code_revision": np.array(CODE_REVISION),
        "arch": np.array(model.arch), "source_digest": np.array(fsutil.file_digest(checkpoint)[:12]),
        "source_name": np.array(os.path.basename(checkpoint)),
        **{k: np.array(cfg[k]) for k in ("n_fft", "hop_length", "n_bands", "first_frame", "n_frames", "abs_floor_db",
                                          "rel_floor_db", "search", "search_below", "subsonic_prefilter")},
        "features": np.array(list(cfg["features"]), dtype=str),
        "prefilter_pad": np.array(pre.pad), "prefilter_gain": pre.gain.numpy().astype(np.float32),
        "mos_min": np.array(MOS_MIN), "mos_max": np.array(MODEL_MOS_MAX),
        "window": model.frontend.window.numpy().astype(np.float32),
        "band_matrix": model.frontend.band_matrix.numpy().astype(np.float32),
        "gauss": model.gauss.numpy().reshape(3, 3).astype(np.float32),
    }
    for name, t in model.state_dict().items():
        if name.startswith("head."):
            arrays[name] = t.numpy().astype(np.float32)
    with fsutil.atomic_output(out_path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    # prove the numpy runtime loads it and scores like torch
    npm, _ = load_numpy_model(out_path)
    rng = np.random.default_rng(0)
    t = np.arange(WINDOW_SAMPLES) / MODEL_SAMPLE_RATE_HZ
    ref = np.stack([0.3 * np.sin(2 * np.pi * (110 * (k + 1)) * t) + 0.05 * rng.standard_normal(t.size)
                    for k in range(6)]).astype(np.float32)
    deg = (ref + np.array([0, 0.001, 0.01, 0.05, 0.2, 0.5])[:, None] * rng.standard_normal(ref.shape)).astype(np.float32)
    with torch.inference_mode():
        tr = torch.from_numpy(ref)
        want = model.forward_from_reference(model.reference_features(tr), torch.from_numpy(deg)).numpy()
    got = npm.forward_from_reference(npm.reference_features(ref), deg)
    worst = float(np.abs(got.astype(np.float64) - want).max())
    if not worst < NUMPY_EXPORT_TOLERANCE_MOS:
        os.unlink(out_path)
        raise ModelError(f"the numpy runtime scores {checkpoint} {worst:.2e} MOS off torch; not written")
    return ExportResult(out_path, os.path.getsize(out_path), model.arch, sum(p.numel() for p in model.parameters()))
