"""`ratecontrol encode`: one file (or an audio ladder) at a target MOS."""
from __future__ import annotations

import click

from ratecontrol.cli._common import (
    allow_partial_opt, best_effort_opt, cache_dir_opt, echo_json, fmt, full_opt, hop_opt, jobs_opt, no_cache_opt,
    no_step_down_opt, overwrite_opt, pool_opt, probe_line, sample_share_opt, scorer_opt, targets,
)


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=str))
@click.option("--target-mos", required=True, callback=targets,
              help="Quality target on the ViSQOL MOS scale (1..5; identity ~4.73). A list (3.8,4.2,4.5) makes one output per target.")
@click.option("--codec", default="opus", show_default=True,
              help="Preset name (see `ratecontrol presets`), a preset YAML file, or 'auto' (smallest output that meets the target).")
@click.option("-o", "--output", default=None, type=click.Path(path_type=str),
              help="Output file (default: INPUT with the preset's extension); a folder when several targets are given. "
                   "Its folder must exist.")
@scorer_opt
@pool_opt
@hop_opt
@jobs_opt
@sample_share_opt
@full_opt("Probe the whole track, never a sample.")
@click.option("--no-verify", is_flag=True, help="Do not decode and score the written file (the score shown is then the search's estimate).")
@no_step_down_opt
@click.option("--margin", "margin_mos", type=float, default=None,
              help="Search for target + MARGIN MOS, a guard against the scorer's error [default: the scorer's own: "
                   "learned 0.03 (the chosen rung then meets the target by exact ViSQOL on 99.8 % of measured "
                   "searches), visqol 0].")
@click.option("--ladder", is_flag=True,
              help="Choose among the preset's standard rungs (64k, 80k, 96k ...) instead of the lowest setting "
                   "of its knob that meets the target.")
@click.option("--above-source", is_flag=True,
              help="Allow rungs above a lossy input's own bitrate (by default the ladder stops there).")
@allow_partial_opt("Encode what decodes of a truncated or damaged input (one warning) instead of refusing it (exit 3).")
@no_cache_opt
@cache_dir_opt()
@click.option("--cache-max-mb", type=float, default=None, help="Probe cache size cap in MB [default: 256].")
@click.option("--report", type=click.Path(path_type=str), default=None,
              help="Write a PNG of per-window MOS over time: the shipped rung over the whole track, the probed rungs on "
                   "their segments (with several targets: one PNG per target, REPORT.mos<target>.png).")
@best_effort_opt
@overwrite_opt("Replace OUTPUT (and --report) if it exists: never the input, and never a file that appears "
               "there while the encode runs.")
@click.option("--audio-stream", type=int, default=None, metavar="N",
              help="For an input with several audio streams (a film's languages, a commentary): re-encode audio "
                   "stream N, counted from 0 among the audio streams (-map 0:a:N); the others are kept as they are "
                   "[default: the one marked default, else the first].")
@click.option("--all-audio-streams", is_flag=True,
              help="Re-encode every audio stream, each searched on its own (each gets its own rung).")
@click.option("--audio-only", is_flag=True,
              help="For an input with video or other streams: write the chosen audio stream alone (default: keep every "
                   "other stream by stream copy in the input's container).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def encode(input_path, target_mos, codec, output, scorer, pool, hop_s, jobs, sample_share, full, no_verify,
           no_step_down, margin_mos, ladder, above_source, allow_partial, no_cache, cache_dir, cache_max_mb, report,
           best_effort, overwrite, audio_stream, all_audio_streams, audio_only, as_json):
    """Encode INPUT at the cheapest setting of a codec that meets --target-mos (a rung of its ladder with --ladder)."""
    from ratecontrol.api import encode as _encode, encode_ladder
    from ratecontrol.cache import DEFAULT_CACHE_MAX_MB, ProbeCache
    from ratecontrol.options import Options

    cache = ProbeCache(cache_dir, max_mb=DEFAULT_CACHE_MAX_MB if cache_max_mb is None else cache_max_mb,
                       enabled=not no_cache)
    options = Options(scorer=scorer, pool=pool, hop_s=hop_s, best_effort=best_effort, jobs=jobs,
                      sample_share=1.0 if full else sample_share, verify=not no_verify, step_down=not no_step_down,
                      cache=cache, margin_mos=margin_mos, ladder=ladder, allow_partial=allow_partial,
                      above_source=above_source, audio_stream=audio_stream, all_audio_streams=all_audio_streams,
                      audio_only=audio_only,
                      on_probe=None if as_json else _announcing_probe_lines(
                          f"{input_path}: searching '{codec}' for {pool} MOS >= {','.join(f'{t:g}' for t in target_mos)}"))
    common = dict(options=options, overwrite=overwrite)
    # validate, then announce: an argument error is the error line alone (issue 26). The
    # output's checks (the publish rule's claim) run inside the library before any probe,
    # so the "searching" line is printed with the first probe's line, after all of them.
    _check_arguments(input_path, target_mos, codec, scorer)
    if len(target_mos) > 1:
        # one report per target: PLOT.mos<target>.png
        results = encode_ladder(input_path, output, targets=target_mos, codec=codec, report=report, **common)
    else:
        results = (_encode(input_path, output, target_mos=target_mos[0], codec=codec, report=report, **common),)
    if as_json:
        echo_json(results[0].to_dict() if len(results) == 1 else [r.to_dict() for r in results])
        return
    for res in results:
        _summary(res)
    if report:
        from ratecontrol.report import report_path_for

        for res in results:
            path = report if len(results) == 1 else report_path_for(report, res.search.target_mos)
            click.echo(f"report: {path}", err=True)


def _announcing_probe_lines(announce: str):
    """An on_probe callback that prints ``announce`` before the first probe's line: by
    then every check the library makes before work (output path, report path) passed."""
    said = []

    def on_probe(p) -> None:
        if not said:
            said.append(True)
            click.echo(announce, err=True)
        click.echo(probe_line(p), err=True)

    return on_probe


def _check_arguments(input_path: str, target_mos: list[float], codec: str, scorer: str | None) -> None:
    """What the library checks before any work, checked here before the announce line:
    each target, the preset and its encoder, the scorer (and the runtime it needs), the
    input (inspected once: the library reuses the result for an unchanged file)."""
    from ratecontrol import media
    from ratecontrol.api import AUTO_CODEC
    from ratecontrol.contract import check_target_mos
    from ratecontrol.probing.session import resolve_preset
    from ratecontrol.scoring.base import check_scorer

    for t in target_mos:
        check_target_mos(t)
    if codec != AUTO_CODEC:
        resolve_preset(codec)
    check_scorer(scorer)
    media.inspect(input_path)


def _summary(res) -> None:
    if len(res.streams) > 1 or (res.streams and res.streams[0].audio_stream is not None):
        # a container: one line per re-encoded audio stream (its own notes), then the
        # file with what was kept (probing.streams._encode_streams adds that note last)
        for st in res.streams:
            _summary_line(st, f"{res.output_path} audio stream {st.audio_stream}")
        if res.search.notes:
            click.echo(f"  note: {res.search.notes[-1]}", err=True)
        click.echo(f"{res.output_path}: {res.output_bytes / 1e6:.2f} MB "
                   f"({100 * res.output_bytes / max(res.input_bytes, 1):.1f}% of input), {res.seconds:.1f} s")
        return
    _summary_line(res, res.output_path)


def _summary_line(res, name: str) -> None:
    s = res.search
    for note in s.notes:
        click.echo(f"  note: {note}", err=True)
    status = "TARGET NOT MET (best effort)" if res.best_effort else "target met"
    # the shipped file's own score (decoded and scored after writing), never a probe's
    what = "output" if res.verified else "search estimate, not verified"
    margin = f" (+{s.margin_mos:g} margin)" if s.margin_mos else ""
    if s.scorer_uncertainty_mos:
        margin += f"; {s.scorer} reads exact ViSQOL to +-{s.scorer_uncertainty_mos:g} per track"
    # the rung is named by the encoder setting (-b:a 16k / -q:a 5); VBR encoders spend
    # less on easy or mono material, so the file's own rate is shown beside it
    actual = (f", {res.output_bytes * 8 / 1000 / s.duration_s:.1f} kbps actual"
              if s.duration_s and res.output_bytes else "")
    chans = {1: "mono", 2: "stereo"}.get(s.channels, f"{s.channels} ch")
    click.echo(
        f"{name}: {s.preset} {res.rung_label} ({res.bitrate_kbps:g} kbps nominal{actual}, {chans}), {s.pool} MOS "
        f"{fmt(res.pooled_mos)} ({what}) vs target {s.target_mos:g}{margin}: {status}; {s.probes_total or len(s.probes)} probes, "
        f"{res.output_bytes / 1e6:.2f} MB ({100 * res.output_bytes / max(res.input_bytes, 1):.1f}% of input), {res.seconds:.1f} s"
    )


