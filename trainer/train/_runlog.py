"""What a training run logs: log.csv (one row per epoch), TensorBoard when installed, and
the epoch's log line."""
from __future__ import annotations

import csv
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from trainer.train._fit import Run

__all__ = ["CsvLog", "tensorboard", "log_epoch"]

log = logging.getLogger("trainer.train")


class CsvLog:
    FIELDS = ["epoch", "step", "lr", "train_loss", "train_pairs", "train_pairs_per_s", "skipped",
              "val_pairs", "val_pearson", "val_spearman", "val_rmse", "val_rmse_high", "val_pearson_high",
              "val_skipped", "best", "epoch_s"]

    def __init__(self, path: str):
        self.path = path
        new = not os.path.exists(path)
        self.fh = open(path, "a", newline="", encoding="utf-8")
        self.w = csv.DictWriter(self.fh, fieldnames=self.FIELDS)
        if new:
            self.w.writeheader()

    def write(self, row: Mapping[str, Any]) -> None:
        self.w.writerow({k: row.get(k, "") for k in self.FIELDS})
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def tensorboard(out_dir: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: CSV only
        return None
    return SummaryWriter(os.path.join(out_dir, "tb"))


def log_epoch(run: Run, csv_log: CsvLog, tb, epoch: int, t0: float, train: tuple, m: dict[str, Any],
               val_skipped: int, improved: bool) -> None:
    loss_sum, pairs, skipped, train_s = train
    row = {"epoch": epoch, "step": run.step, "lr": run.sched.get_last_lr()[0], "train_loss": loss_sum / max(1, pairs),
           "train_pairs": pairs, "train_pairs_per_s": pairs / train_s if train_s > 0 else "",
           "skipped": skipped, "val_pairs": m["n"], "val_pearson": m["pearson"], "val_spearman": m["spearman"],
           "val_rmse": m["rmse"], "val_rmse_high": m["high"]["rmse"], "val_pearson_high": m["high"]["pearson"],
           "val_skipped": val_skipped, "best": int(improved), "epoch_s": time.time() - t0}
    csv_log.write(row)
    if tb is not None:
        for k in ("train_loss", "val_rmse", "val_rmse_high", "val_pearson", "lr"):
            tb.add_scalar(k, row[k], epoch)
    log.info("epoch %d: train loss %.4f (%d pairs, %.0f/s, %d skipped) | val r %.4f rmse %.4f rmse>=4 %.4f (%d skipped)%s",
             epoch, row["train_loss"], pairs, row["train_pairs_per_s"] or 0, skipped, m["pearson"], m["rmse"],
             m["high"]["rmse"], val_skipped, "  *best*" if improved else "")
