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
OFF_FLAGS = {"cache": "--no-cache", "verify": "--no-verify", "step_down": "--no-step-down"}


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

# the options `encode` and `batch` share, declared once here so the flag, its type and
# its default cannot drift apart between the two commands. Where the flag does something
# different per command (one file vs a tree: exit 3 vs a report note, a conflict rule of
# its own) the command passes its help; the declaration stays here.
sample_share_opt = click.option("--sample-share", type=float, default=None,
                                help="Share of a long track (>= 30 s) the probes score, in evenly spread segments "
                                     "[default: 0.2, at most 180 s].")
no_cache_opt = click.option("--no-cache", is_flag=True, help="Do not read or write the probe cache.")
best_effort_opt = click.option("--best-effort", is_flag=True,
                               help="If even the top rung misses the target, encode at the top rung anyway.")
_CACHE_DIR_HELP = "Probe cache folder [default: $RATECONTROL_CACHE_DIR or ~/.cache/ratecontrol{where}]."


def full_opt(help: str):
    return click.option("--full", is_flag=True, help=help)


def allow_partial_opt(help: str):
    return click.option("--allow-partial", is_flag=True, help=help)


def no_step_down_opt(f):
    return click.option("--no-step-down", is_flag=True,
                        help="After a sampled search, do not try one setting lower when the written file's check "
                             "passes well above the target (saves a second write and check on some tracks, "
                             "~10-20 % of the CPU; the files are ~3.6 % larger).")(f)


def overwrite_opt(help: str):
    return click.option("--overwrite", is_flag=True, help=help)


def cache_dir_opt(where: str = ""):
    """``where`` says where the default folder is when that is not this machine (batch on dask)."""
    return click.option("--cache-dir", type=click.Path(path_type=str), default=None,
                        help=_CACHE_DIR_HELP.format(where=where))


def targets(ctx, param, value: str) -> list[float]:
    try:
        vals = [float(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a number or a comma-separated list like 3.8,4.2,4.5")
    if not vals:
        raise click.BadParameter("give at least one target")
    return vals


