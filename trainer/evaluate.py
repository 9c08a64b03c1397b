"""Evaluate a checkpoint on labelled shards: Pearson, Spearman, RMSE overall, per 0.05
score bin (score = (MOS - 1) / 4, the dataset's 0..1 scale, i.e. 0.2-MOS bins), and for
labels >= 4.0 MOS, where bitrate decisions are made; plus a PNG scatter.

``python -m trainer evaluate CKPT --data 'shards/shard-{000060..000071}.tar' --out DIR``
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ratecontrol import fsutil
from ratecontrol.contract import mos_to_score, score_to_mos
from ratecontrol.errors import DatasetError

__all__ = ["compute_metrics", "predict", "evaluate_checkpoint", "scatter_png", "format_metrics", "EvalResult"]

#: labels at or above this MOS are where codec decisions happen (targets 4.0 .. 4.5)
HIGH_MOS = 4.0
#: bin width on the dataset's 0..1 score scale (0.2 MOS): the build's own balance bins
from trainer.dataset.config import SCORE_BIN_WIDTH as SCORE_BIN  # noqa: E402


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def _summary(pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
    err = pred - label
    return {
        "n": int(len(label)),
        "pearson": _pearson(pred, label),
        "spearman": _spearman(pred, label),
        "rmse": float(np.sqrt(np.mean(err**2))) if len(err) else float("nan"),
        "mae": float(np.mean(np.abs(err))) if len(err) else float("nan"),
        "bias": float(np.mean(err)) if len(err) else float("nan"),
    }


def compute_metrics(pred: Sequence[float], label: Sequence[float]) -> dict[str, Any]:
    """Metrics dict: overall, ``high`` (labels >= 4.0 MOS), and ``bins`` (per 0.05 score)."""
    p = np.asarray(pred, dtype=np.float64)
    y = np.asarray(label, dtype=np.float64)
    out: dict[str, Any] = _summary(p, y)
    hi = y >= HIGH_MOS
    out["high"] = _summary(p[hi], y[hi])
    score = mos_to_score(y)
    idx = np.floor(score / SCORE_BIN + 1e-9).astype(int)
    bins = []
    for b in np.unique(idx):
        m = idx == b
        lo = b * SCORE_BIN
        bins.append({"score_lo": round(lo, 4), "mos_lo": round(score_to_mos(lo), 3),
                     "mos_hi": round(score_to_mos(lo + SCORE_BIN), 3),
                     "n": int(m.sum()), "rmse": float(np.sqrt(np.mean((p[m] - y[m]) ** 2))), "bias": float(np.mean(p[m] - y[m]))})
    out["bins"] = bins
    return out


@torch.no_grad()
def predict(model: torch.nn.Module, loader, device: torch.device) -> tuple[np.ndarray, np.ndarray, list[str], int]:
    """(predictions, labels, keys, skipped) over a single pass of a loader."""
    model.eval()
    preds, labels, keys, skipped = [], [], [], 0
    for batch in loader:
        skipped += int(batch["skipped"])
        if len(batch["mos"]) == 0:
            continue
        ref = batch["ref"].to(device, non_blocking=True)
        deg = batch["deg"].to(device, non_blocking=True)
        preds.append(model(ref, deg).float().cpu().numpy())
        labels.append(batch["mos"].numpy())
        keys.extend(batch["keys"])
    if not preds:
        return np.zeros(0), np.zeros(0), [], skipped
    return np.concatenate(preds).astype(np.float64), np.concatenate(labels).astype(np.float64), keys, skipped


def scatter_png(pred: np.ndarray, label: np.ndarray, path: str, title: str = "") -> None:
    """Predicted vs label scatter with the identity line and the 4.0 decision region."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = compute_metrics(pred, label)
    fig, ax = plt.subplots(figsize=(5.5, 5.5), dpi=110)
    ax.scatter(label, pred, s=4, alpha=0.35, lw=0)
    ax.plot([1, 4.8], [1, 4.8], "k--", lw=0.8)
    ax.axvspan(HIGH_MOS, 4.8, color="orange", alpha=0.08, label=f"labels >= {HIGH_MOS}")
    ax.set_xlim(1, 4.8)
    ax.set_ylim(1, 4.8)
    ax.set_xlabel("label MOS (ViSQOL v3 audio)")
    ax.set_ylabel("predicted MOS")
    ax.set_title(
        f"{title}\nn={m['n']}  r={m['pearson']:.4f}  rho={m['spearman']:.4f}  RMSE={m['rmse']:.3f}  "
        f"RMSE(>=4)={m['high']['rmse']:.3f}", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    try:
        with fsutil.atomic_output(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


@dataclass(frozen=True)
class EvalResult:
    metrics: dict
    n_pairs: int
    skipped: int
    duration_s: float
    metrics_path: str | None
    scatter_path: str | None


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def evaluate_checkpoint(
    checkpoint: str,
    data: str | Sequence[str],
    *,
    batch_size: int = 64,
    num_workers: int = 1,
    device: str = "auto",
    out_dir: str | None = None,
    title: str | None = None,
) -> EvalResult:
    """Score every pair of ``data`` once with the checkpoint (library or training
    checkpoint); write metrics.json and scatter.png to ``out_dir`` when given."""
    from ratecontrol.scoring.model import load_checkpoint
    from trainer.data import PairDataset, make_loader, resolve_shards

    dev = resolve_device(device)
    model, _ = load_checkpoint(checkpoint, map_location=dev)
    urls = resolve_shards(data)
    if not urls:
        raise DatasetError("no shards to evaluate; pass --data")
    loader = make_loader(PairDataset(urls, train=False, batch_size=batch_size), num_workers=num_workers, device=str(dev))
    t0 = time.time()
    pred, label, keys, skipped = predict(model, loader, dev)
    dt = time.time() - t0
    if len(label) == 0:
        raise DatasetError(f"no readable pairs in {len(urls)} shard(s) ({skipped} skipped)")
    metrics = compute_metrics(pred, label)
    metrics.update({"checkpoint": os.path.abspath(checkpoint), "shards": len(urls), "skipped": skipped,
                    "pairs_per_s": len(label) / dt if dt > 0 else None})
    mpath = spath = None
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        mpath = os.path.join(out_dir, "metrics.json")
        fsutil.atomic_write(mpath, json.dumps(_finite(metrics), indent=1))
        spath = os.path.join(out_dir, "scatter.png")
        scatter_png(pred, label, spath, title or os.path.basename(checkpoint))
        np.savez_compressed(os.path.join(out_dir, "predictions.npz"), pred=pred, label=label, keys=np.array(keys))
    return EvalResult(metrics, len(label), skipped, dt, mpath, spath)


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def format_metrics(m: dict) -> str:
    h = m["high"]
    lines = [
        f"pairs {m['n']}  pearson {m['pearson']:.4f}  spearman {m['spearman']:.4f}  rmse {m['rmse']:.4f}  bias {m['bias']:+.4f}",
        f"labels >= {HIGH_MOS}: pairs {h['n']}  pearson {h['pearson']:.4f}  spearman {h['spearman']:.4f}  rmse {h['rmse']:.4f}  bias {h['bias']:+.4f}",
        "per 0.05-score bin (MOS range: n, rmse, bias):",
    ]
    for b in m["bins"]:
        lines.append(f"  {b['mos_lo']:.2f}-{b['mos_hi']:.2f}: {b['n']:6d}  {b['rmse']:.3f}  {b['bias']:+.3f}")
    return "\n".join(lines)
