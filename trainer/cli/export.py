"""export: click over :func:`trainer.export.export_checkpoint`."""
from __future__ import annotations

import click

__all__ = ["export_command", "export_numpy_command"]


@click.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--out", "out_path", default="ratecontrol/weights/default.pt", show_default=True)
@click.option("--metrics", default=None, type=click.Path(dir_okay=False), help="metrics.json from `trainer evaluate` to embed")
@click.option("--extra-metrics", "extra", multiple=True, metavar="NAME=FILE.json",
              help="more metrics to embed under NAME (repeatable), e.g. realmusic=eval-realmusic.json")
@click.option("--note", default=None, help="free text stored in the checkpoint (e.g. 'interim data')")
def export_command(checkpoint, out_path, metrics, extra, note):
    """Write CHECKPOINT as a library checkpoint (weights_only-loadable)."""
    from trainer.export import export_checkpoint

    extra_metrics = {}
    for item in extra:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"expected NAME=FILE.json, got {item!r}", param_hint="--extra-metrics")
        extra_metrics[name] = path
    res = export_checkpoint(checkpoint, out_path, metrics=metrics, note=note, extra_metrics=extra_metrics)
    click.echo(f"wrote {res.path} ({res.size_bytes / 1024:.0f} KiB, {res.arch}, {res.n_parameters} parameters)")


@click.command("export-numpy")
@click.argument("checkpoint", type=click.Path(dir_okay=False), default="ratecontrol/weights/default.pt")
@click.option("--out", "out_path", default=None, help="default: CHECKPOINT with .npz")
def export_numpy_command(checkpoint, out_path):
    """Write a library checkpoint's arrays for the numpy runtime (CPU scoring without torch)."""
    from trainer.export import export_numpy

    res = export_numpy(checkpoint, out_path)
    click.echo(f"wrote {res.path} ({res.size_bytes / 1024:.0f} KiB, {res.arch}, {res.n_parameters} parameters)")
