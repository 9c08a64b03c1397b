"""Shared pieces of the commands: formatting, JSON output, click options."""
from __future__ import annotations

import json
import math

import click

from ratecontrol.scoring.pooling import DEFAULT_POOL, POOL_HELP

#: library option -> the flag that sets it; an error's ``options`` are spelt with these
#: (RatecontrolError.message): the library names options, only the CLI names flags
FLAGS = {
    "above_source": "--above-source", "all_audio_streams": "--all-audio-streams", "allow_partial": "--allow-partial",
    "audio_only": "--audio-only", "audio_stream": "--audio-stream", "backend": "--backend",
    "best_effort": "--best-effort", "cache_dir": "--cache-dir", "cache_max_mb": "--cache-max-mb", "codec": "--codec",
    "ladder": "--ladder",
    "overwrite": "--overwrite", "report": "--report", "scheduler": "--scheduler", "scorer": "--scorer",
    "video": "--video",
}
#: options whose False has a flag of its own
OFF_FLAGS = {"cache": "--no-cache", "verify": "--no-verify"}


def spell_flag(name: str, value) -> str:
    """How the CLI writes ``name=value`` (an option without a flag keeps its library name)."""
    if value is False and name in OFF_FLAGS:
        return OFF_FLAGS[name]
    if name not in FLAGS:
        return f"{name}={value!r}"
    return FLAGS[name] if value is True else f"{FLAGS[name]} {value}"


def error_message(exc) -> str:
    """A RatecontrolError's message as the CLI prints it (its options as flags)."""
    return exc.message(spell_flag) if hasattr(exc, "message") and callable(exc.message) else str(exc)


def fmt(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def probe_line(p) -> str:
    mark = "pass" if p.passed else "fail"
    worst = fmt(p.worst_mos, ".2f") if p.window_mos else "n/a"
    size = f"  {p.actual_kbps:6.1f} kbps actual" if p.actual_kbps else ""
    return (f"  probe {p.preset + ' ' if p.preset else ''}{p.rung_label:>8} ({p.bitrate_kbps:g} kbps nominal){size}: "
            f"pooled {fmt(p.pooled_mos)}  worst {worst}  {mark}  [{p.seconds:.1f} s]")


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, allow_nan=False))


scorer_opt = click.option("--scorer", default=None, help="Scoring backend: learned (default, fast model of ViSQOL) or visqol (exact, ~100x slower).")
pool_opt = click.option("--pool", default=DEFAULT_POOL, show_default=True, help=f"Pooling of window scores: {POOL_HELP}.")
jobs_opt = click.option("-j", "--jobs", type=int, default=None, help="Processes for scoring (default: scorer's own).")
hop_opt = click.option("--hop", "hop_s", type=float, default=1.0, show_default=True, help="Window hop in seconds.")


def targets(ctx, param, value: str) -> list[float]:
    try:
        vals = [float(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a number or a comma-separated list like 3.8,4.2,4.5")
    if not vals:
        raise click.BadParameter("give at least one target")
    return vals


