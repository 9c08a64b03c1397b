"""One input file, in a worker process: resume check, probe, encode or keep/copy/skip, and
its FileRecord. Never raises for a problem of the file (it becomes a failed or conflict
record); the finished output comes back inside the worker's temp folder."""
from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ratecontrol import fsutil
from ratecontrol._malloc import tune_if_asked
from ratecontrol.errors import InputError, RatecontrolError, TargetNotReachable, UsageError
from ratecontrol.batch._decide import Plan, decide, kbps_list, not_smaller, stream_bytes
from ratecontrol.batch._dest import Conflict, WorkDir, WriteError, check_dest, check_name_fits, write_problem
from ratecontrol.batch._records import (
    CONFLICT, COPIED, ENCODED, FAILED, KEPT, SKIPPED, FileRecord, finite,
)
from ratecontrol.batch._resume import still_done
from ratecontrol.batch._task import Result, Task
from ratecontrol.batch._watchdog import start_watchdog
from ratecontrol.contract import AUDIO_EXTENSIONS

#: scorers created in this process, by name: a model loads once per worker
_SCORERS: dict[Any, Any] = {}


def _worker_scorer(scorer):
    if scorer is None or isinstance(scorer, str):
        from ratecontrol.scoring.base import DEFAULT_SCORER, get_scorer

        name = scorer or DEFAULT_SCORER
        if name not in _SCORERS:
            # one file per worker process: the scorer's own pool would only oversubscribe
            _SCORERS[name] = get_scorer(name, n_jobs=1)
        return _SCORERS[name]
    key = (getattr(scorer, "name", type(scorer).__name__), getattr(scorer, "version", ""))
    return _SCORERS.setdefault(key, scorer)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else type(exc).__name__
    if not isinstance(exc, RatecontrolError):
        msg = f"internal error: {type(exc).__name__}: {msg}"
    return msg


def _failed(exc: BaseException, t0: float, base: dict) -> FileRecord:
    """The failed record of an error: its one line, and its options (what would help)."""
    return FileRecord(status=FAILED, reason=_one_line(exc), options=getattr(exc, "options", None) or {},
                      seconds=time.perf_counter() - t0, **base)


def _read_problem(path, exc: OSError) -> str:
    """One line for an input that cannot be read."""
    if isinstance(exc, PermissionError):
        return f"cannot read {path}: permission denied (make it readable, or move it out of IN_DIR)"
    return f"cannot read {path}: {(exc.strerror or str(exc)).lower()} (check the file)"



def _has_cover(path: Path) -> bool:
    from ratecontrol import media

    try:
        return media.inspect(path).has_cover_art
    except RatecontrolError:
        return False


def run_task(task: Task) -> Result:
    """Process one input file; never raises for a file problem (it becomes a failed or
    conflict record). A finished output comes back inside the worker's temp folder."""
    start_watchdog(task.driver_pid)
    tune_if_asked()  # a worker of the CLI's batch: its allocator settings (ratecontrol._malloc)
    t0 = time.perf_counter()
    src = Path(task.in_path)
    base = {"input": task.rel, "collision": task.collision}
    work = WorkDir(task)
    try:
        try:
            st = src.stat()
            base.update(input_bytes=st.st_size, input_mtime_ns=st.st_mtime_ns)
            if task.prior is not None:
                done = still_done(task, task.prior, st)
                if done is not None:
                    return Result(done)
            base["input_sha256"] = fsutil.file_digest(src)
        except OSError as exc:
            return Result(FileRecord(status=FAILED, reason=_read_problem(src, exc),
                                     seconds=time.perf_counter() - t0, **base))
        rec, tmp = _process(task, src, base, t0, work)
        if tmp is None:
            work.discard()
            return Result(rec)
        return Result(rec, str(tmp), str(work.path))
    except Conflict as exc:
        work.discard()
        return Result(FileRecord(status=CONFLICT, reason=str(exc), options=exc.options,
                                 seconds=time.perf_counter() - t0, **base))
    except WriteError as exc:
        work.discard()
        return Result(FileRecord(status=FAILED, reason=str(exc), seconds=time.perf_counter() - t0, **base))
    except Exception as exc:  # one bad file must not stop a library run
        work.discard()
        return Result(_failed(exc, t0, base))
    except BaseException:
        # Ctrl-C or a stop signal in the driver itself (jobs=1 runs the task there): its
        # temp folder must not outlive the run (the driver's pid is alive, so no
        # stale-temp clean-up would take it)
        work.discard()
        raise


def _copy_into(src: Path, tmp: Path) -> Path:
    try:
        shutil.copyfile(src, tmp)
    except PermissionError as exc:
        if not os.access(src, os.R_OK):
            raise WriteError(_read_problem(src, exc)) from None
        raise WriteError(write_problem(tmp.parent.parent, exc)) from None
    shutil.copystat(src, tmp)
    _fsync(tmp)
    return tmp



def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _process(task: Task, src: Path, base: dict, t0: float, work: WorkDir) -> tuple[FileRecord, Path | None]:
    """Decide what the file gets (skip, copy, keep: before any encode), then encode it."""
    from ratecontrol import media

    try:
        info = media.inspect(src)
    except InputError as exc:
        return _not_audio(task, src, exc, base, t0, work)
    plan = decide(task, src, info, base)
    if plan.skip is not None:
        reason, helps = plan.skip
        return FileRecord(status=SKIPPED, options=helps, reason=reason, seconds=time.perf_counter() - t0,
                          **base), None
    if plan.keep is not None:
        return _keep(task, src, plan, plan.keep, (), base, t0, work)
    return _encode(task, src, info, plan, base, t0, work)


def _not_audio(task: Task, src: Path, exc: InputError, base: dict, t0: float,
               work: WorkDir) -> tuple[FileRecord, Path | None]:
    """A file ffmpeg cannot read as audio: failed when its name says audio, else copied
    (copy_other) or skipped."""
    # ._name files are macOS AppleDouble metadata that copy along with the real file
    if src.suffix.lower() in AUDIO_EXTENSIONS and not src.name.startswith("._"):
        return _failed(exc, t0, base), None
    if task.copy_other:
        check_dest(task, task.rel)
        tmp = _copy_into(src, work.file(src.name))
        return FileRecord(status=COPIED, output=task.rel, reason="not audio: copied unchanged",
                          seconds=time.perf_counter() - t0, **base), tmp
    return FileRecord(status=SKIPPED, reason=f"not audio ({_one_line(exc)})",
                      seconds=time.perf_counter() - t0, **base), None



def _keep(task: Task, src: Path, plan: Plan, reason: str, notes: tuple[str, ...], base: dict, t0: float,
          work: WorkDir) -> tuple[FileRecord, Path]:
    """The source copied unchanged under its own name (a lossy source batch cannot improve)."""
    check_dest(task, task.rel)
    tmp = _copy_into(src, work.file(src.name))
    return FileRecord(status=KEPT, output=task.rel, reason=reason, notes=notes,
                      audio_bytes=stream_bytes(tmp, plan.sources[0].audio_index), seconds=time.perf_counter() - t0,
                      **base), tmp


def _encode(task: Task, src: Path, info, plan: Plan, base: dict, t0: float,
            work: WorkDir) -> tuple[FileRecord, Path]:
    """Encode the file (or keep the source when no smaller encode reaches the target)."""
    from ratecontrol.api import encode

    sources, in_place, bundled, lossy = plan.sources, plan.in_place, plan.bundled, plan.lossy
    # before hours of work: is the output path ours to write?
    out_rel = task.rel if in_place else task.out_rel
    check_name_fits(task, out_rel)
    check_dest(task, out_rel)
    out = work.file(Path(out_rel).name)
    import warnings

    from ratecontrol.errors import RatecontrolWarning

    # the run's Options with this file's choices: one scorer job (file-level parallelism),
    # every audio stream only in place, a film's default stream alone under the planned
    # name (video='audio'); no max_kbps: each stream's session caps its own ladder at
    # that stream's bitrate when it is lossy (probing.session: one rule for encode and batch)
    opts = replace(task.options, scorer=_worker_scorer(task.options.scorer), jobs=1,
                   all_audio_streams=in_place and len(sources) > 1, audio_only=bundled and not in_place)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RatecontrolWarning)
            res = encode(src, out, target_mos=task.target_mos, codec=task.codec_ref, options=opts, overwrite=False)
    except TargetNotReachable as exc:
        if not lossy:
            raise
        best = max((p.pooled_mos for p in (exc.result.probes if exc.result else ())), default=math.nan)
        return _keep(task, src, plan, f"no {plan.preset.name} rung at or below the lossy source's own bitrate "
                     f"({kbps_list(sources)}) reaches MOS {task.target_mos:g} (best {best:.3f}): copied unchanged",
                     (), base, t0, work)
    except UsageError as exc:
        if not exc.options.get("above_source"):
            raise
        # the session found no rung at or below a lossy stream's own bitrate (its figure
        # from the stream copied out, which the check above may not have had)
        return _keep(task, src, plan, f"{_one_line(exc)}: copied unchanged", (), base, t0, work)
    search = res.search
    streams = tuple(res.streams) if in_place and len(sources) > 1 else ()
    # warnings of this file (a partial decode with allow_partial) go into its record
    notes = tuple(search.notes) + plan.video_note + tuple(f"warning: {w.message}" for w in caught
                                                          if issubclass(w.category, RatecontrolWarning))
    notes += tuple(f"audio stream {r.audio_stream}: {r.rung_label}, MOS {r.pooled_mos:.3f}" for r in streams)
    if info.has_cover_art and not _has_cover(out):
        notes += (f"cover art not kept: ffmpeg cannot store it in a {plan.preset.name} ({out.suffix}) output",)
    audio_stream = res.audio_stream if in_place else None
    audio_bytes = stream_bytes(out, audio_stream or 0)
    if lossy and not_smaller(src, res, sources, audio_bytes, whole=in_place or not bundled):
        out.unlink(missing_ok=True)
        return _keep(task, src, plan, f"the {res.rung_label} encode is not smaller than the lossy source: "
                     "copied unchanged", notes, base, t0, work)
    _fsync(out)
    return FileRecord(
        status=ENCODED, output=out_rel, output_bytes=res.output_bytes, audio_bytes=audio_bytes,
        audio_stream=audio_stream, encoded_streams=tuple(r.audio_stream for r in streams),
        rung_label=res.rung_label, bitrate_kbps=res.bitrate_kbps,
        pooled_mos=finite(res.pooled_mos), full_track_mos=finite(getattr(res, "full_track_mos", None)),
        reached=bool(search.reached), n_probes=len(search.probes), notes=notes,
        seconds=time.perf_counter() - t0, **{**base, "duration_s": search.duration_s or base.get("duration_s")},
    ), out
