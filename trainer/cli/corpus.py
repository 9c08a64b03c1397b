"""build-corpus: click over :mod:`trainer.corpus`."""
from __future__ import annotations

import logging
from pathlib import Path

import click

from trainer.corpus import STAGES, CorpusConfig, build_corpus

__all__ = ["build_corpus_command"]


@click.command("build-corpus")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, help="seed of renders/patterns/speech")
@click.option("--render-hours", default=CorpusConfig.render_hours, show_default=True)
@click.option("--stage", "stages", multiple=True, type=click.Choice(STAGES),
              help="run only these stages (default: all)")
@click.option("-j", "--jobs", "n_jobs", default=2, show_default=True)
def build_corpus_command(out_dir: Path, seed: int, render_hours: float, stages, n_jobs: int):
    """Fetch and build the default source corpus into OUT_DIR (resumable)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = CorpusConfig(seed=seed, render_hours=render_hours)
    s = build_corpus(out_dir, cfg, n_jobs=n_jobs, stages=tuple(stages) or STAGES)
    click.echo(f"{s.files} source files in {s.out_dir}/manifest.jsonl "
               f"({s.rejected} music files rejected, see rejected.jsonl)")
    for kind, h in s.hours_by_kind.items():
        click.echo(f"  {kind:7s} {h:7.2f} h")
    click.echo(f"  total   {sum(s.hours_by_kind.values()):7.2f} h")
