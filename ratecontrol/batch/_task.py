"""The records that travel between the driver and a worker: Task (one file and the run's
settings) and Result (its record, and the finished file to put in place)."""
from __future__ import annotations

from dataclasses import dataclass

from ratecontrol.batch._records import FileRecord
from ratecontrol.options import Options


@dataclass(frozen=True)
class Task:
    """One file for a worker: everything it needs, nothing that does not pickle cheaply."""

    rel: str
    in_path: str
    out_root: str
    #: planned output, relative to OUT_DIR, for an encode
    out_rel: str
    collision: str
    target_mos: float
    #: the preset workers load: its packaged name, or the user's YAML path
    codec_ref: str
    #: how encode runs (its scorer a name, each worker builds its own once, or a Scorer);
    #: the worker adds the per-file choices (every audio stream, the audio alone)
    options: Options
    #: the manifest's settings of this run: a prior record counts only with the same
    settings: dict
    #: files with video or other streams: "keep", "audio" or "skip"
    video: str
    copy_other: bool
    #: the manifest's last record for this input, when it may still be valid
    prior: dict | None
    #: per candidate output (relative to OUT_DIR): the (size, mtime_ns) versions the
    #: manifest says batch wrote there (mtime None: a version-1 line, size only)
    owned: dict = None
    #: candidate outputs that are input files of this run: never replaced (the reason)
    protected: dict = None
    #: replace files batch did not write (--overwrite)
    overwrite: bool = False
    #: the driver's pid for local workers (they stop when it is gone); None on Dask
    driver_pid: int | None = None



@dataclass(frozen=True)
class Result:
    """A worker's answer: the record, and the finished file the driver must put in place."""

    rec: FileRecord
    #: the finished output inside the worker's temp folder (None: nothing to place)
    tmp: str | None = None
    work_dir: str | None = None
