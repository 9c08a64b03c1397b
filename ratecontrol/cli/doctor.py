"""`ratecontrol doctor`: which ffmpeg, which presets, which scorers."""
from __future__ import annotations

import os

import click



@click.command()
def doctor():
    """Show which ffmpeg is used and which presets it can run."""
    from ratecontrol.media import available_encoders, ffmpeg_path, ffmpeg_version
    from ratecontrol.presets import list_presets
    from ratecontrol.scoring.base import available_scorers

    exe = ffmpeg_path()
    click.echo(f"ffmpeg: {exe} (version {ffmpeg_version()})")
    click.echo(f"  chosen via: {_ffmpeg_source(exe)}")
    enc = available_encoders()
    for p in list_presets():
        click.echo(f"  preset {p.name:<14} needs {p.encoder:<11} {'available' if p.encoder in enc else 'MISSING'}")
    click.echo(f"scorers: {', '.join(available_scorers())}")
    # the installed version only: importing torch costs seconds, and CUDA is picked at
    # run time (device=auto) by the scorer
    from importlib import metadata

    try:
        click.echo(f"torch {metadata.version('torch')} installed (used on a GPU; on the CPU the learned scorer "
                   "runs on numpy, RATECONTROL_RUNTIME=torch forces torch)")
    except metadata.PackageNotFoundError:
        click.echo("torch: not installed (the learned scorer runs on numpy on the CPU; a GPU and the trainer need torch)")


def _ffmpeg_source(exe: str) -> str:
    import shutil

    if os.environ.get("RATECONTROL_FFMPEG"):
        return "$RATECONTROL_FFMPEG"
    on_path = shutil.which("ffmpeg")
    if on_path and os.path.realpath(on_path) == os.path.realpath(exe):
        return f"`ffmpeg` on PATH ({on_path})"
    return "the imageio-ffmpeg wheel's binary (no usable ffmpeg on PATH)"


