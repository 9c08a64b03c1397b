"""fit: click over :func:`trainer.train.fit`."""
from __future__ import annotations

import json
import logging
import os

import click

__all__ = ["fit_command"]


@click.command("fit")
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None, help="YAML config (trainer/configs/*.yaml)")
@click.option("--data", "data", multiple=True, help="training shards: brace pattern, folder, or manifest .json (repeatable)")
@click.option("--val-data", "val_data", multiple=True, help="validation shards (default: manifest val split or the last shards)")
@click.option("--manifest", default=None, type=click.Path(dir_okay=False), help="dataset manifest with train/val splits")
@click.option("--out", "out_dir", required=True, help="run folder: last.pt, best.pt, log.csv, config.yaml")
@click.option("--resume/--no-resume", default=True, show_default=True, help="continue from OUT/last.pt when present")
@click.option("--device", default="auto", show_default=True, help="auto = CUDA if available else CPU")
@click.option("--epochs", type=int, default=None, help="override config epochs")
@click.option("--num-workers", type=int, default=None, help="override data.num_workers")
@click.option("--samples-per-epoch", type=int, default=None, help="override data.samples_per_epoch")
@click.option("--init-from", default=None, help="start from this checkpoint's weights (fine-tuning)")
def fit_command(config, data, val_data, manifest, out_dir, resume, device, epochs, num_workers, samples_per_epoch, init_from):
    """Train the quality model; checkpoints every epoch and resumes."""
    from trainer.train import fit

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    res = fit(config, list(data) or None, out_dir, val_data=list(val_data) or None, manifest=manifest, resume=resume,
              device=device, epochs=epochs, num_workers=num_workers, samples_per_epoch=samples_per_epoch, init_from=init_from)
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(json.dumps({"best_checkpoint": res.best_checkpoint, "best_epoch": res.best_epoch,
                               "best_val_rmse": res.best_val_rmse, "epochs_run": res.epochs_run,
                               "stopped_early": res.stopped_early, "duration_s": round(res.duration_s, 1)}))
