"""evaluate: click over :func:`trainer.evaluate.evaluate_checkpoint`."""
from __future__ import annotations

import click

__all__ = ["evaluate_command"]


@click.command("evaluate")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--data", "data", required=True, multiple=True, help="shards: brace pattern, folder, manifest .json (repeatable)")
@click.option("--out", "out_dir", default=None, help="folder for metrics.json, scatter.png, predictions.npz")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--num-workers", default=1, show_default=True)
@click.option("--device", default="auto", show_default=True)
def evaluate_command(checkpoint, data, out_dir, batch_size, num_workers, device):
    """Pearson/Spearman/RMSE of CHECKPOINT on labelled shards."""
    from trainer.evaluate import evaluate_checkpoint, format_metrics

    res = evaluate_checkpoint(checkpoint, list(data), batch_size=batch_size, num_workers=num_workers, device=device, out_dir=out_dir)
    click.echo(format_metrics(res.metrics))
    click.echo(f"{res.n_pairs} pairs in {res.duration_s:.1f} s, {res.skipped} skipped")
    if res.metrics_path:
        click.echo(f"wrote {res.metrics_path} and {res.scatter_path}")
