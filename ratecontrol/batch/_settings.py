"""A run's settings: encode's knobs in one ``Options``, batch's own in ``BatchOptions``,
both checked once before anything is touched, and the manifest's settings dict that
a resumed file is compared by (derived from them, the same bytes as before Options)."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any

from ratecontrol.errors import UsageError
from ratecontrol.options import Options, check_flag

#: what ``video`` may be: a film's default audio stream re-encoded in place, written
#: alone, or the file skipped
VIDEO_CHOICES = ("keep", "audio", "skip")
BACKENDS = ("local", "dask")

#: Options fields batch does not take: the per-file choices batch makes itself
#: (audio_stream, audio_only: ``video``), the scorer's own processes (one per worker:
#: file-level parallelism), and knobs the manifest's settings would not record (a
#: resumed file could not tell they changed)
UNSUPPORTED = ("jobs", "max_kbps", "above_source", "margin_mos", "on_probe", "audio_stream", "audio_only", "ladder")


@dataclass(frozen=True)
class BatchOptions:
    """The batch-only knobs (how the run goes; how each file is encoded is ``Options``).

    jobs: files at once (local worker processes, or a cap on Dask tasks in flight);
    backend/scheduler: where the tasks run; copy_other: copy files that are not audio;
    json_report/csv_report: report paths; progress: the bar (None: when stderr is a
    terminal); resume: skip files the manifest says are done; video: files with video
    or other streams ("keep", "audio", "skip"); overwrite: replace files batch did not
    write."""

    jobs: int | None = None
    backend: str = "local"
    scheduler: Any = None
    copy_other: bool = False
    json_report: str | os.PathLike | None = None
    csv_report: str | os.PathLike | None = None
    progress: bool | None = None
    resume: bool = True
    video: str = "keep"
    overwrite: bool = False

    def __post_init__(self):
        if self.jobs is not None:
            # encode's own check of a process count (a whole number >= 1, the same message)
            object.__setattr__(self, "jobs", Options(jobs=self.jobs).jobs)
        for name in ("copy_other", "resume", "overwrite"):
            object.__setattr__(self, name, check_flag(name, getattr(self, name)))
        if self.progress is not None:
            object.__setattr__(self, "progress", check_flag("progress", self.progress))
        if self.backend not in BACKENDS:
            raise UsageError(f"unknown backend {self.backend!r}; use 'local' or 'dask'")
        if self.video not in VIDEO_CHOICES:
            raise UsageError(f"video must be 'keep', 'audio' or 'skip', got {self.video!r}")


def run_options(options: Options | None, batch: BatchOptions, option_fields: dict) -> Options:
    """The run's Options: ``options`` with ``option_fields`` (today's keywords) merged in,
    checked against what batch takes and against ``batch``; a folder as ``str`` (a path
    pickles the same on every worker)."""
    opts = Options.merge(options, **option_fields)
    defaults = Options()
    given = [f.name for f in fields(Options) if f.name in UNSUPPORTED and getattr(opts, f.name) != getattr(defaults, f.name)]
    if given:
        raise UsageError(f"batch does not take {', '.join(given)} (it chooses per file what encode's "
                         "audio_stream/audio_only choose, through video; jobs is batch's own: files at once)")
    if opts.all_audio_streams and batch.video != "keep":
        raise UsageError(f"all_audio_streams re-encodes every audio stream in place, which video={batch.video!r} "
                         "does not do", options={"video": "keep"})
    if isinstance(opts.cache, os.PathLike):
        opts = replace(opts, cache=os.fspath(opts.cache))
    return opts


def scorer_name(opts: Options) -> str:
    """The run's scorer by name (checked against the registry when given by name)."""
    from ratecontrol.scoring.base import DEFAULT_SCORER, available_scorers

    scorer = opts.scorer
    if scorer is None or isinstance(scorer, str):
        name = scorer or DEFAULT_SCORER
        if name not in available_scorers():
            raise UsageError(f"unknown scorer {name!r}; use one of {available_scorers()}")
        return name
    return getattr(scorer, "name", type(scorer).__name__)


def run_settings(target_mos: float, preset, codec, opts: Options, video: str) -> dict:
    """The manifest's settings dict: a prior record is resumed only with the same one.

    Its keys, their order and their values are what manifests have held since version 2
    (allow_partial and all_audio_streams only when set, step_down only when off), so an
    older manifest's files still resume."""
    settings = {
        "target_mos": float(target_mos),
        "codec": preset.name,
        # what workers load: the packaged name, or the user's YAML path
        "codec_ref": str(preset.source_path) if (preset.source_path and not _is_packaged(codec)) else preset.name,
        "scorer": scorer_name(opts),
        "pool": opts.pool,
        "hop_s": float(opts.hop_s),
        "best_effort": bool(opts.best_effort),
        "sample_share": None if opts.sample_share is None else float(opts.sample_share),
        "verify": bool(opts.verify),
    }
    if opts.allow_partial:  # only when set: manifests written without it stay valid
        settings["allow_partial"] = True
    if not opts.step_down:  # only when off (the default is on): manifests written without it stay valid
        settings["step_down"] = False
    settings["video"] = video  # compared only for files with video (_resume._same_settings)
    if opts.all_audio_streams:
        # only when set: manifests written without it stay valid; compared only for
        # files with several audio streams (_resume._same_settings)
        settings["all_audio_streams"] = True
    return settings


def _is_packaged(codec) -> bool:
    from ratecontrol.presets import preset_names

    return isinstance(codec, str) and codec in preset_names()
