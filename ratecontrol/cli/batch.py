"""`ratecontrol batch`: a folder tree at a target MOS (the library side is ratecontrol.batch)."""
from __future__ import annotations

import signal
from pathlib import Path

import click

from ratecontrol.batch import MANIFEST_NAME, transcode_folder
from ratecontrol.errors import RatecontrolError
from ratecontrol.cli._common import (
    allow_partial_opt, best_effort_opt, cache_dir_opt, full_opt, no_cache_opt, no_step_down_opt, overwrite_opt,
    pool_opt, sample_share_opt, scorer_opt, spell_flag, targets,
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("in_dir", type=click.Path(path_type=str))
@click.argument("out_dir", type=click.Path(path_type=str))
@click.option("--target-mos", required=True, callback=targets,
              help="Quality target on the ViSQOL MOS scale (1..5; identity ~4.73). A list (3.8,4.2,4.5) makes one "
                   "tree per target: OUT_DIR/mos3.8, OUT_DIR/mos4.2, ... (probes shared through the cache).")
@click.option("--codec", default="opus", show_default=True, help="Preset name (see `ratecontrol presets`) or a preset YAML file.")
@click.option("-j", "--jobs", type=int, default=None,
              help="Files at once (local: worker processes, default = usable CPUs; dask: cap on tasks in flight).")
@click.option("--backend", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="local: joblib/loky processes; dask: a dask.distributed cluster (--scheduler).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Dask scheduler address, e.g. tcp://10.0.0.5:8786 (default with --backend dask: a local cluster).")
@scorer_opt
@pool_opt
@best_effort_opt
@click.option("--copy-other", is_flag=True, help="Copy files that are not audio (cover.jpg, .cue, ...) into OUT_DIR too.")
@click.option("--json-report", type=click.Path(path_type=str), default=None, help="Write the full report as JSON here.")
@click.option("--csv-report", type=click.Path(path_type=str), default=None, help="Write one CSV row per file here.")
@sample_share_opt
@full_opt("Probe whole tracks, never a sample.")
@click.option("--video", type=click.Choice(["keep", "audio", "skip"]), default="keep", show_default=True,
              help="Files with video or other streams: keep re-encodes their default audio stream in place (same "
                   "name and container, video, subtitles and other streams copied, as `ratecontrol encode` does); "
                   "audio writes that audio stream alone; skip leaves them out. Reported either way.")
@click.option("--all-audio-streams", is_flag=True,
              help="With --video keep: re-encode every audio stream of files that have several (each searched on "
                   "its own, each its own rung), not only the default one.")
@allow_partial_opt("Encode what decodes of truncated or damaged inputs (noted in the report) instead of failing them.")
@no_step_down_opt
@no_cache_opt
@cache_dir_opt(" on each machine")
@click.option("--no-resume", is_flag=True, help="Ignore the manifest in OUT_DIR and redo every file.")
@click.option("--no-progress", is_flag=True, help="No progress bar (default: a bar when stderr is a terminal).")
@overwrite_opt("Replace files at output paths that batch did not write (default: leave them, report a conflict).")
def batch_command(in_dir, out_dir, target_mos, codec, jobs, backend, scheduler, scorer, pool, best_effort,
                  copy_other, json_report, csv_report, sample_share, full, video, all_audio_streams, allow_partial,
                  no_step_down, no_cache, cache_dir, no_resume, no_progress, overwrite):
    """Transcode every audio file under IN_DIR into a mirrored tree under OUT_DIR.

    Resumable: rerun the same command after an interruption and finished files are
    skipped (manifest: OUT_DIR/.ratecontrol-manifest.jsonl). Only files batch wrote
    itself are ever replaced (unless --overwrite). Exit status 1 when any file failed
    or hit a conflict (listed at the end and in the reports).
    """
    from ratecontrol.options import Options

    # how every file is encoded, one object for every target (the batch knobs stay keywords)
    options = Options(scorer=scorer, pool=pool, best_effort=best_effort, sample_share=1.0 if full else sample_share,
                      allow_partial=allow_partial, all_audio_streams=all_audio_streams, step_down=not no_step_down,
                      cache=False if no_cache else cache_dir)
    many = len(target_mos) > 1
    ok = True
    for t in target_mos:
        out = Path(out_dir) / f"mos{t:g}" if many else Path(out_dir)
        try:
            report = transcode_folder(
                in_dir, out, t, codec, options, jobs=jobs, backend=backend, scheduler=scheduler,
                copy_other=copy_other, json_report=_per_target(json_report, t, many),
                csv_report=_per_target(csv_report, t, many), progress=False if no_progress else None,
                resume=not no_resume, video=video, overwrite=overwrite,
            )
        except KeyboardInterrupt as exc:  # Ctrl-C, or a stop signal (BatchInterrupted, the CLI's own)
            signum = getattr(exc, "signum", signal.SIGINT)
            click.echo(f"batch interrupted by {signal.Signals(signum).name}: workers stopped; finished files are "
                       f"in {out / MANIFEST_NAME}, rerun the same command to resume", err=True)
            raise SystemExit(128 + signum) from None
        if many:
            click.echo(f"target MOS {t:g} -> {out}")
        for line in report.summary_lines(spell=spell_flag):  # options as this command's flags
            click.echo(line)
        # the hint only where --overwrite would help: not given yet, and a conflict it
        # resolves (a folder or one of this run's inputs is never replaced)
        fixable = [r for r in report.conflicts if r.options.get("overwrite")]
        if fixable and not overwrite:
            click.echo(f"{len(fixable)} file(s) not replaced: they were not written by batch "
                       "(or changed since); --overwrite replaces them")
        ok = ok and report.ok
    if not ok:  # some files failed or were not replaced: the summary says which
        raise SystemExit(RatecontrolError.exit_code)


def _per_target(path, t: float, many: bool):
    """report.json -> report.mos4.2.json when there are several targets."""
    if path is None or not many:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}.mos{t:g}{p.suffix}"))
