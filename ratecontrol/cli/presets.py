"""`ratecontrol presets`: the packaged codec ladders."""
from __future__ import annotations

import click

from ratecontrol.cli._common import echo_json


@click.command()
@click.option("--json", "as_json", is_flag=True)
def presets(as_json):
    """List the packaged codec presets and whether this ffmpeg can run them."""
    from ratecontrol.media import available_encoders
    from ratecontrol.presets import list_presets

    enc = available_encoders()
    rows = []
    for p in list_presets():
        rows.append({
            "name": p.name, "encoder": p.encoder, "available": p.encoder in enc, "extension": p.extension,
            "rungs": [r.label for r in p.rungs], "kbps": [r.nominal_kbps for r in p.rungs], "description": p.description,
        })
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        ok = "ok " if r["available"] else "n/a"
        click.echo(f"{ok} {r['name']:<14} {r['encoder']:<11} {r['extension']:<6} "
                   f"{r['kbps'][0]:g}..{r['kbps'][-1]:g} kbps, {len(r['rungs'])} rungs  {r['description']}")


