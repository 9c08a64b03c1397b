"""build-dataset, verify, export-labels: click over :mod:`trainer.dataset`."""
from __future__ import annotations

from pathlib import Path

import click

from ratecontrol.errors import DatasetError
from trainer.dataset.config import DEFAULT_QUIET_SHARE

__all__ = ["build_dataset_command", "verify_command", "export_labels_command"]


@click.command("build-dataset")
@click.option("--sources", "sources", multiple=True, required=True,
              type=click.Path(exists=True, path_type=Path),
              help="audio folder (recursive) or build-corpus folder; repeatable")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--pairs", type=int, required=True, help="pairs in all (train + val)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--val-fraction", type=float, default=0.1, show_default=True)
@click.option("-j", "--jobs", "n_jobs", type=int, default=2, show_default=True)
@click.option("--pairs-per-shard", type=int, default=1000, show_default=True)
@click.option("--snapshot", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="generate nothing: write a balanced set from OUT's pool so far into "
                   "this new folder (same arguments as the build)")
@click.option("--quiet-share", type=float, default=DEFAULT_QUIET_SHARE, show_default=True,
              help="share of jobs played at a quiet-passage level (-42..-22 dBFS)")
@click.option("--prescreen", default="default", show_default=True,
              help="learned-scorer checkpoint that skips labelling clips predicted far from "
                   "every unfilled score bin ('default': the packaged model; 'none': off)")
@click.option("--label-cache", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="labels saved by export-labels: byte-identical pairs reuse "
                                 "them instead of being labelled again")
def build_dataset_command(sources, out, pairs, seed, val_fraction, n_jobs, pairs_per_shard,
                          snapshot, quiet_share, prescreen, label_cache):
    """Build (or resume) balanced ViSQOL-labelled pairs as webdataset shards in OUT."""
    from trainer.dataset import BuildConfig, build, format_histogram

    r = build(BuildConfig(tuple(sources), out, pairs, seed=seed, val_fraction=val_fraction,
                          n_jobs=n_jobs, pairs_per_shard=pairs_per_shard, snapshot=snapshot,
                          label_cache=label_cache, quiet_share=quiet_share,
                          prescreen=None if prescreen == "none" else prescreen))
    click.echo(f"{r.shards} shards in {r.out_dir}: {r.pairs_by_split} (pool {r.pool_pairs})")
    click.echo(format_histogram(r.histogram))


@click.command("verify")
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def verify_command(out_dir):
    """Check a shard set: counts, lengths, rates, score histogram, split disjointness.

    On a build that has not finished, print where it stands and exit non-zero."""
    from trainer.dataset import build_status, format_histogram, verify

    if not (Path(out_dir) / "manifest.json").exists() and (Path(out_dir) / "work").exists():
        st = build_status(out_dir)
        click.echo(f"unfinished build: {st['filled']}/{st['needed']} balanced pairs, pool "
                   f"{st['pool_pairs']} labelled in {st['rounds']} rounds "
                   f"({st['pool_pairs'] / max(st['pool_wall_s'], 1e-9):.2f} pairs/s), "
                   f"target {st['target_per_bin']} per bin, outside range "
                   f"{st['outside_range']}, {st['shards_written']} shards written")
        click.echo("pool histogram:")
        click.echo(format_histogram(st["histogram"]))
        raise DatasetError(f"{out_dir}: build not finished; rerun the same build-dataset "
                           "command to resume")
    rep = verify(out_dir)
    click.echo(f"pairs: {rep.pairs_by_split}; sources: "
               f"{ {sp: len(v) for sp, v in rep.sources_by_split.items()} }")
    click.echo(format_histogram(rep.histogram))
    if not rep.ok:
        for p in rep.problems:
            click.echo(f"problem: {p}", err=True)
        raise DatasetError(f"{out_dir}: {len(rep.problems)} problem(s) found (listed above)")
    click.echo("ok")


@click.command("export-labels")
@click.argument("outs", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--to", "dest", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="LabelCache .npz to create or extend")
def export_labels_command(outs, dest):
    """Save the ViSQOL labels of build pools OUTS... to a small file that a later
    build-dataset --label-cache reuses (rebuilding a lost pool without relabelling)."""
    from trainer.dataset import export_labels

    cache = export_labels(list(outs), dest)
    click.echo(f"{len(cache)} labels in {dest} (visqol-python {cache.visqol_version})")
