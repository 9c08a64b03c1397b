"""`ratecontrol` command line: thin click commands over the library.

Only this module turns RatecontrolError into exit codes: one line on stderr, no traceback
(set RATECONTROL_DEBUG=1 to see one for an unexpected error).
"""
from __future__ import annotations

import json
import math
import os
import sys
import traceback

import click

from ratecontrol.errors import RatecontrolError, TargetNotReachable
from ratecontrol.scoring.pooling import DEFAULT_POOL, POOL_HELP

__all__ = ["cli", "main", "run_group"]


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _probe_line(p) -> str:
    mark = "pass" if p.passed else "fail"
    worst = _fmt(p.worst_mos, ".2f") if p.window_mos else "n/a"
    size = f"  {p.actual_kbps:6.1f} kbps actual" if p.actual_kbps else ""
    return (f"  probe {p.preset + ' ' if p.preset else ''}{p.rung_label:>8} ({p.bitrate_kbps:g} kbps nominal){size}: "
            f"pooled {_fmt(p.pooled_mos)}  worst {worst}  {mark}  [{p.seconds:.1f} s]")


def _echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, allow_nan=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ratecontrol")
def cli() -> None:
    """Encode audio at the lowest bitrate that still meets a ViSQOL quality target."""


_scorer_opt = click.option("--scorer", default=None, help="Scoring backend: learned (default, fast model of ViSQOL) or visqol (exact, ~100x slower).")
_pool_opt = click.option("--pool", default=DEFAULT_POOL, show_default=True, help=f"Pooling of window scores: {POOL_HELP}.")
_jobs_opt = click.option("-j", "--jobs", type=int, default=None, help="Processes for scoring (default: scorer's own).")
_hop_opt = click.option("--hop", "hop_s", type=float, default=1.0, show_default=True, help="Window hop in seconds.")


def _targets(ctx, param, value: str) -> list[float]:
    try:
        vals = [float(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a number or a comma-separated list like 3.8,4.2,4.5")
    if not vals:
        raise click.BadParameter("give at least one target")
    return vals


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=str))
@click.option("--target-mos", required=True, callback=_targets,
              help="Quality target on the ViSQOL MOS scale (1..5; identity ~4.73). A list (3.8,4.2,4.5) makes one output per target.")
@click.option("--codec", default="opus", show_default=True,
              help="Preset name (see `ratecontrol presets`), a preset YAML file, or 'auto' (smallest output that meets the target).")
@click.option("-o", "--output", default=None, type=click.Path(path_type=str),
              help="Output file (default: INPUT with the preset's extension); a folder when several targets are given.")
@_scorer_opt
@_pool_opt
@_hop_opt
@_jobs_opt
@click.option("--sample-share", type=float, default=None,
              help="Share of a long track (>= 30 s) the probes score, in evenly spread segments "
                   "[default: 0.2, at most 180 s].")
@click.option("--full", is_flag=True, help="Probe the whole track, never a sample.")
@click.option("--no-verify", is_flag=True, help="Do not decode and score the written file (the score shown is then the search's estimate).")
@click.option("--margin", "margin_mos", type=float, default=0.0, show_default=True,
              help="Search for target + MARGIN: a guard against the learned scorer's error (docs/performance.md).")
@click.option("--allow-partial", is_flag=True,
              help="Encode what decodes of a truncated or damaged input (one warning) instead of refusing it (exit 3).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the probe cache.")
@click.option("--cache-dir", type=click.Path(path_type=str), default=None,
              help="Probe cache folder [default: $RATECONTROL_CACHE_DIR or ~/.cache/ratecontrol].")
@click.option("--cache-max-mb", type=float, default=None, help="Probe cache size cap in MB [default: 256].")
@click.option("--report", type=click.Path(path_type=str), default=None,
              help="Write a PNG of per-window MOS over time for the chosen rung and its neighbours.")
@click.option("--best-effort", is_flag=True, help="If even the top rung misses the target, encode at the top rung anyway.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists (never the input).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def encode(input_path, target_mos, codec, output, scorer, pool, hop_s, jobs, sample_share, full, no_verify, margin_mos,
           allow_partial, no_cache, cache_dir, cache_max_mb, report, best_effort, overwrite, as_json):
    """Encode INPUT at the cheapest rung of a codec ladder that meets --target-mos."""
    from ratecontrol.api import encode as _encode, encode_ladder
    from ratecontrol.cache import DEFAULT_CACHE_MAX_MB, ProbeCache
    from ratecontrol.options import Options

    cache = ProbeCache(cache_dir, max_mb=DEFAULT_CACHE_MAX_MB if cache_max_mb is None else cache_max_mb,
                       enabled=not no_cache)
    options = Options(scorer=scorer, pool=pool, hop_s=hop_s, best_effort=best_effort, jobs=jobs,
                      sample_share=1.0 if full else sample_share, verify=not no_verify, cache=cache,
                      margin_mos=margin_mos, allow_partial=allow_partial,
                      on_probe=None if as_json else (lambda p: click.echo(_probe_line(p), err=True)))
    common = dict(options=options, overwrite=overwrite)
    if not as_json:
        click.echo(f"{input_path}: searching '{codec}' for {pool} MOS >= {','.join(f'{t:g}' for t in target_mos)}", err=True)
    if len(target_mos) > 1:
        if report:
            raise click.UsageError("--report takes a single target")
        results = encode_ladder(input_path, output, targets=target_mos, codec=codec, **common)
    else:
        results = (_encode(input_path, output, target_mos=target_mos[0], codec=codec, report=report, **common),)
    if as_json:
        _echo_json(results[0].to_dict() if len(results) == 1 else [r.to_dict() for r in results])
        return
    for res in results:
        _summary(res)
    if report:
        click.echo(f"report: {report}", err=True)


def _summary(res) -> None:
    s = res.search
    for note in s.notes:
        click.echo(f"  note: {note}", err=True)
    status = "TARGET NOT MET (best effort)" if res.best_effort else "target met"
    # the shipped file's own score (decoded and scored after writing), never a probe's
    what = "output" if res.verified else "search estimate, not verified"
    margin = f" + margin {s.margin_mos:g}" if s.margin_mos else ""
    click.echo(
        f"{res.output_path}: {s.preset} {res.rung_label} ({res.bitrate_kbps:g} kbps), {s.pool} MOS "
        f"{_fmt(res.pooled_mos)} ({what}) vs target {s.target_mos:g}{margin}: {status}; {len(s.probes)} probes, "
        f"{res.output_bytes / 1e6:.2f} MB ({100 * res.output_bytes / max(res.input_bytes, 1):.1f}% of input), {res.seconds:.1f} s"
    )


@cli.command()
@click.argument("reference", type=click.Path(path_type=str))
@click.argument("degraded", type=click.Path(path_type=str))
@_scorer_opt
@_pool_opt
@_hop_opt
@_jobs_opt
@click.option("--no-align", is_flag=True, help="Do not search for a delay between the two files.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def score(reference, degraded, scorer, pool, hop_s, jobs, no_align, as_json):
    """Score DEGRADED against REFERENCE, per window and pooled."""
    from ratecontrol.api import score as _score

    res = _score(reference, degraded, scorer=scorer, pool=pool, hop_s=hop_s, align_signals=not no_align, jobs=jobs)
    if as_json:
        _echo_json(res.to_dict())
        return
    for t, c, m in zip(res.window_start_s, res.window_channel, res.window_mos):
        click.echo(f"  ch{c} {t:8.2f} s  {m:.3f}")
    click.echo(f"{res.scorer} {res.pool} MOS {_fmt(res.pooled_mos)} over {len(res.window_mos)} windows "
               f"(delay {res.delay_samples} samples at 44.1 kHz)")


@cli.command()
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
        _echo_json(rows)
        return
    for r in rows:
        ok = "ok " if r["available"] else "n/a"
        click.echo(f"{ok} {r['name']:<14} {r['encoder']:<11} {r['extension']:<6} "
                   f"{r['kbps'][0]:g}..{r['kbps'][-1]:g} kbps, {len(r['rungs'])} rungs  {r['description']}")


@cli.command()
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
        click.echo(f"torch {metadata.version('torch')} installed (CUDA is used when present)")
    except metadata.PackageNotFoundError:
        click.echo("torch: not installed (the learned scorer needs it)")


def _ffmpeg_source(exe: str) -> str:
    import shutil

    if os.environ.get("RATECONTROL_FFMPEG"):
        return "$RATECONTROL_FFMPEG"
    on_path = shutil.which("ffmpeg")
    if on_path and os.path.realpath(on_path) == os.path.realpath(exe):
        return f"`ffmpeg` on PATH ({on_path})"
    return "the imageio-ffmpeg wheel's binary (no usable ffmpeg on PATH)"


def _register_subcommands() -> None:
    # commands whose code lives with the library piece they drive (lhotse style)
    from ratecontrol.batch import batch_command

    cli.add_command(batch_command, name="batch")


_register_subcommands()


def main(argv: list[str] | None = None) -> None:
    run_group(cli, argv)


def _one_line(exc: BaseException) -> str:
    # a file name with a newline must not split the one line
    return str(exc).replace("\r", "\\r").replace("\n", "\\n")


def _format_warning(message, category, filename, lineno, line=None):
    from ratecontrol.errors import RatecontrolWarning

    if issubclass(category, RatecontrolWarning):
        return f"warning: {_one_line(message)}\n"
    return _default_formatwarning(message, category, filename, lineno, line)


_default_formatwarning = None


def run_group(group: click.Group, argv: list[str] | None = None) -> None:
    """Run a click group, turning every error into one line and an exit code
    (shared by `ratecontrol` and `python -m trainer`). With --json on the command line,
    an error is also printed to stdout as one JSON object (error, message, exit_code)."""
    import warnings

    global _default_formatwarning
    if _default_formatwarning is None:
        _default_formatwarning = warnings.formatwarning
        warnings.formatwarning = _format_warning
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args

    def fail(exc: BaseException, code: int, message: str) -> None:
        if as_json:
            _echo_json({"error": type(exc).__name__, "message": message, "exit_code": code})
        sys.exit(code)

    try:
        group.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort as exc:
        click.echo("aborted", err=True)
        fail(exc, 130, "aborted")
    except click.ClickException as exc:
        exc.show()
        fail(exc, exc.exit_code, exc.format_message())
    except TargetNotReachable as exc:
        click.echo(f"error: {_one_line(exc)}", err=True)
        fail(exc, exc.exit_code, str(exc))
    except RatecontrolError as exc:
        click.echo(f"error: {_one_line(exc)}", err=True)
        fail(exc, exc.exit_code, str(exc))
    except KeyboardInterrupt as exc:
        click.echo("interrupted", err=True)
        fail(exc, 130, "interrupted")
    except Exception as exc:  # a bug: one line unless asked for the traceback
        if os.environ.get("RATECONTROL_DEBUG"):
            traceback.print_exc()
        click.echo(f"internal error: {type(exc).__name__}: {_one_line(exc)} (set RATECONTROL_DEBUG=1 for a traceback; "
                   "please report it)", err=True)
        fail(exc, 70, f"{type(exc).__name__}: {exc}")
