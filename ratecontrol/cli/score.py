"""`ratecontrol score`: score a degraded file against its reference."""
from __future__ import annotations

import math

import click

from ratecontrol.cli._common import echo_json, fmt, hop_opt, jobs_opt, pool_opt, scorer_opt


#: windows the default output lists
WORST_SHOWN = 5


@click.command()
@click.argument("reference", type=click.Path(path_type=str))
@click.argument("degraded", type=click.Path(path_type=str))
@scorer_opt
@pool_opt
@hop_opt
@jobs_opt
@click.option("--no-align", is_flag=True, help="Do not search for a delay between the two files.")
@click.option("--windows", "all_windows", is_flag=True,
              help=f"Print every window's score (default: the {WORST_SHOWN} worst, then the pooled score).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def score(reference, degraded, scorer, pool, hop_s, jobs, no_align, all_windows, as_json):
    """Score DEGRADED against REFERENCE: the pooled MOS and the worst windows."""
    from ratecontrol.api import score as _score

    res = _score(reference, degraded, scorer=scorer, pool=pool, hop_s=hop_s, align_signals=not no_align, jobs=jobs)
    if as_json:
        echo_json(res.to_dict())
        return
    rows = list(zip(res.window_start_s, res.window_channel, res.window_mos))
    if all_windows:
        for t, c, m in rows:
            click.echo(f"  ch{c} {t:8.2f} s  {m:.3f}")
    else:
        # a 78-s stereo track has 156 windows: the ones that pull the pool down are the news
        scored = sorted((r for r in rows if not math.isnan(r[2])), key=lambda r: r[2])
        for t, c, m in sorted(scored[:WORST_SHOWN], key=lambda r: (r[0], r[1])):
            click.echo(f"  worst: ch{c} {t:8.2f} s  {m:.3f}")
    channels = len(set(res.window_channel))
    more = "" if all_windows or len(rows) <= WORST_SHOWN else "; --windows prints each"
    click.echo(f"{res.scorer} {res.pool} MOS {fmt(res.pooled_mos)} over {len(rows)} windows "
               f"({channels} channel{'s' if channels != 1 else ''}){more}; {_delay(reference, res.delay_samples)}")


def _delay(reference: str, delay_model: int) -> str:
    """The delay found, in ms and in samples of the reference's own rate (the library
    reports it at the model's 44.1 kHz, which a 96-kHz file's user does not count in)."""
    from ratecontrol import media
    from ratecontrol.contract import MODEL_SAMPLE_RATE_HZ

    delay_s = delay_model / MODEL_SAMPLE_RATE_HZ
    rate = media.inspect(reference).sample_rate_hz  # inspected by the score already (cached)
    return f"delay {1000 * delay_s:.1f} ms ({round(delay_s * rate)} samples at {rate / 1000:g} kHz)"
