"""`ratecontrol doctor`: which ffmpeg, which presets, which scorers, the learned scorer's runtime and
which of the install's extras are present."""
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
    _runtime()
    _extras()


def _runtime() -> None:
    """Which runtime the learned scorer would use, decided as it decides (without
    importing torch: that import is what the numpy runtime saves)."""
    import warnings

    from ratecontrol.errors import RatecontrolError
    from ratecontrol.scoring.learned import RUNTIME_ENV, choose_runtime

    forced = os.environ.get(RUNTIME_ENV)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runtime = choose_runtime()
    except RatecontrolError as exc:
        click.echo(f"learned scorer runtime: cannot run: {exc}")
        return
    why = (f"{RUNTIME_ENV}={forced}" if forced else
           "a GPU was found" if runtime == "torch" else
           "a GPU was found, torch is not installed" if caught else "no GPU found")
    click.echo(f"learned scorer runtime: {runtime} ({why})")


def _extras() -> None:
    """Each extra of pyproject.toml: present, or which of its packages are missing."""
    import re
    from importlib import metadata

    try:
        requires = metadata.requires("ratecontrol") or []
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        click.echo("extras: unknown (ratecontrol is not installed; pip install -e .)")
        return
    wanted: dict[str, list[str]] = {}
    for req in requires:
        m = re.search(r"""extra\s*==\s*['"]([^'"]+)['"]""", req)
        if m:
            name = re.match(r"[A-Za-z0-9_.-]+(\[[^\]]*\])?", req.strip())
            wanted.setdefault(m.group(1), []).append(name.group(0))
    for extra in sorted(wanted):
        missing = sorted({dist for dist in _expand(wanted[extra], wanted) if not _installed(dist)})
        state = "present" if not missing else f"missing {', '.join(missing)} (pip install 'ratecontrol[{extra}]')"
        click.echo(f"extra {extra}: {state}")


def _expand(reqs: list[str], wanted: dict[str, list[str]]) -> list[str]:
    """Distribution names of ``reqs``, with ratecontrol[x, y] replaced by extras x and y's."""
    out: list[str] = []
    for req in reqs:
        if req.lower().startswith("ratecontrol["):
            for extra in req[len("ratecontrol["):-1].split(","):
                out += _expand(wanted.get(extra.strip(), []), {k: v for k, v in wanted.items() if k != extra.strip()})
        else:
            out.append(req.split("[")[0])
    return out


def _installed(dist: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


def _ffmpeg_source(exe: str) -> str:
    import shutil

    if os.environ.get("RATECONTROL_FFMPEG"):
        return "$RATECONTROL_FFMPEG"
    on_path = shutil.which("ffmpeg")
    if on_path and os.path.realpath(on_path) == os.path.realpath(exe):
        return f"`ffmpeg` on PATH ({on_path})"
    return "the imageio-ffmpeg wheel's binary (no usable ffmpeg on PATH)"


