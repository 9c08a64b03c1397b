"""`ratecontrol score`: score a degraded file against its reference."""
from __future__ import annotations

import click

from ratecontrol.cli._common import echo_json, fmt, hop_opt, jobs_opt, pool_opt, scorer_opt


@click.command()
@click.argument("reference", type=click.Path(path_type=str))
@click.argument("degraded", type=click.Path(path_type=str))
@scorer_opt
@pool_opt
@hop_opt
@jobs_opt
@click.option("--no-align", is_flag=True, help="Do not search for a delay between the two files.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def score(reference, degraded, scorer, pool, hop_s, jobs, no_align, as_json):
    """Score DEGRADED against REFERENCE, per window and pooled."""
    from ratecontrol.api import score as _score

    res = _score(reference, degraded, scorer=scorer, pool=pool, hop_s=hop_s, align_signals=not no_align, jobs=jobs)
    if as_json:
        echo_json(res.to_dict())
        return
    for t, c, m in zip(res.window_start_s, res.window_channel, res.window_mos):
        click.echo(f"  ch{c} {t:8.2f} s  {m:.3f}")
    click.echo(f"{res.scorer} {res.pool} MOS {fmt(res.pooled_mos)} over {len(res.window_mos)} windows "
               f"(delay {res.delay_samples} samples at 44.1 kHz)")


