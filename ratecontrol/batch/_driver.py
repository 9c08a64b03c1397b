"""The run: settings, the backend (joblib/loky locally, joblib's dask backend on a
cluster), the loop that records each result in the manifest and puts its file in place,
and the stop on SIGTERM/Ctrl-C."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat as stat_mod
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ratecontrol import fsutil
from ratecontrol.errors import (
    OutputError,
    UsageError,
)
# the package's internal API: what the driver shares with its siblings has public names
# inside the private modules (an underscore name stays private to its own module)
from ratecontrol.batch._manifest import LOCK_NAME, MANIFEST_NAME, Manifest, OutDirLock, clean_stale_temps, read_manifest
from ratecontrol.batch._plan import check_dirs, foreign_files, plan_names, protected_outputs, scan, walk
from ratecontrol.batch._records import (
    CONFLICT, ENCODED, FAILED, KEPT, SKIPPED, BatchReport, FileRecord, claim_reports, size_text,
)
from ratecontrol.batch._dest import Conflict, dest_problem, write_problem
from ratecontrol.batch._task import Result, Task
from ratecontrol.batch._worker import run_task
from ratecontrol.batch._settings import BatchOptions, run_options, run_settings
from ratecontrol.options import Options


def default_jobs() -> int:
    """Worker processes for the local backend: the CPUs this process may use.

    joblib's ``cpu_count`` honours CPU affinity and cgroup quotas (a container limited
    to 2 CPUs gets 2). One file per worker: the exact scorer is CPU bound (~0.13 s per
    1-s window on one core), so more workers than cores only adds switching.
    """
    import joblib

    return max(1, joblib.cpu_count())


class _Backend:
    """Context manager yielding (n_jobs, joblib backend name) for local or dask runs."""

    def __init__(self, backend: str, scheduler, jobs: int | None, n_tasks: int):
        self.backend, self.scheduler, self.jobs, self.n_tasks = backend, scheduler, jobs, n_tasks
        self._client = self._cluster = self._cfg = None

    def __enter__(self) -> int:
        """Set joblib's backend; return how many files run at once."""
        import joblib

        if self.backend == "local":
            if self.scheduler is not None:
                raise UsageError("a scheduler address only applies to the dask backend", options={"backend": "dask"})
            n = self.jobs or default_jobs()
            n = max(1, min(n, self.n_tasks or 1))
            self._cfg = joblib.parallel_config(backend="loky", n_jobs=n)
            self._cfg.__enter__()
            return n
        if self.backend != "dask":
            raise UsageError(f"unknown backend {self.backend!r}; use 'local' or 'dask'")
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise UsageError("the dask backend needs dask.distributed: pip install 'ratecontrol[dask]'") from None
        if isinstance(self.scheduler, Client):
            client = self.scheduler
        elif self.scheduler is None:
            # no cluster given: a local one, one single-threaded worker process per job
            n = self.jobs or default_jobs()
            self._cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                         dashboard_address=":0")
            client = self._client = Client(self._cluster)
        else:
            try:
                client = self._client = Client(str(self.scheduler), timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise UsageError(
                    f"cannot connect to the Dask scheduler at {self.scheduler} ({exc}); start one with "
                    "`dask scheduler` and workers with `dask worker ADDRESS --nthreads 1` (docs/batch.md)"
                ) from None
        threads = sum(client.nthreads().values()) or 1
        n = min(self.jobs, threads) if self.jobs else threads
        self._cfg = joblib.parallel_config(backend="dask", n_jobs=n if self.jobs else -1,
                                           wait_for_workers_timeout=60)
        self._cfg.__enter__()
        return max(1, n)

    def __exit__(self, *exc) -> None:
        if self._cfg is not None:
            self._cfg.__exit__(*exc)
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()


def transcode_folder(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    target_mos: float,
    codec: str = "opus",
    options: Options | None = None,
    *,
    jobs: int | None = None,
    backend: str = "local",
    scheduler=None,
    copy_other: bool = False,
    json_report: str | os.PathLike | None = None,
    csv_report: str | os.PathLike | None = None,
    progress: bool | None = None,
    resume: bool = True,
    video: str = "keep",
    overwrite: bool = False,
    **option_fields: Any,
) -> BatchReport:
    """Transcode every audio file under ``in_dir`` into a mirrored tree under ``out_dir``.

    Returns a BatchReport covering every file (including those a previous run finished,
    ``resumed=True``). A file that fails is recorded with a one-line reason; the run goes
    on (check ``report.ok``). Raises a RatecontrolError only for problems with the run
    itself (missing IN_DIR, unwritable OUT_DIR, OUT_DIR locked by another run, bad
    target/codec/scorer/pool, no Dask scheduler).

    How each file is searched and encoded is ``options`` (an ``Options``), with any of
    its fields also accepted as a keyword (``scorer``, ``pool``, ``hop_s``,
    ``best_effort``, ``sample_share``, ``verify``, ``cache``, ``allow_partial``,
    ``all_audio_streams``), as in ``ratecontrol.api.encode``. Batch chooses each file's
    audio stream and output itself, runs one scorer job per worker and records only
    these settings in its manifest, so ``jobs``, ``max_kbps``, ``above_source``,
    ``margin_mos``, ``on_probe``, ``audio_stream``, ``audio_only`` and ``ladder`` are
    refused. cache: the probe cache, None for each machine's default folder, False for
    none, or a folder. sample_share, verify: long tracks are probed on a sample of their
    segments, the written file is scored. allow_partial: encode what decodes of a
    truncated input (a warning in the record's notes) instead of failing it.
    all_audio_streams (with video="keep"): re-encode every audio stream of files that
    have several, each searched on its own (as ``encode`` does; also an audio-only file
    with several audio streams keeps its container then); the record's rung is the
    default stream's, ``encoded_streams`` and the notes give each one's. A lossy stream
    is never encoded above its own bitrate (the stream's, not the container's).

    Only files the manifest says batch wrote (unchanged since) are replaced; any other
    file at an output path makes that input a ``conflict`` record, unless
    ``overwrite=True``. progress: True/False, or None (default) for a bar only when
    stderr is a terminal (tqdm's convention).

    jobs: worker processes (local; default: usable CPUs) or at most this many tasks at
    once (dask; default: every worker thread). backend: "local" (joblib/loky) or "dask"
    (joblib's dask backend); scheduler: a ``dask.distributed`` address
    ("tcp://host:8786"), a ``distributed.Client``, or None for a LocalCluster.
    IN_DIR and OUT_DIR must be visible at the same paths on every Dask worker.
    resume=False ignores (and restarts) the manifest. video: what happens to files with
    video (or subtitles, several audio streams): "keep" (the default, as ``encode``
    does: the default audio stream is re-encoded in place, the output keeps the input's
    name and container with every other stream stream-copied), "audio" (that audio
    stream written alone under the preset's extension, noted in the record) or "skip"
    (skipped, reported); records of such files have ``other_streams`` > 0 and the
    summary counts them.
    """
    from ratecontrol.contract import check_target_mos
    from ratecontrol.presets import load_preset
    from ratecontrol.scoring.base import check_scorer

    t0 = time.perf_counter()
    t = check_target_mos(target_mos)
    # every knob checked once, here (a bool is a bool, numbers in range: allow_partial="false"
    # is refused instead of being taken as True), before anything is read or written
    run = BatchOptions(jobs=jobs, backend=backend, scheduler=scheduler, copy_other=copy_other,
                       json_report=json_report, csv_report=csv_report, progress=progress, resume=resume,
                       video=video, overwrite=overwrite)
    opts = run_options(options, run, option_fields)
    if codec == "auto":
        raise UsageError("batch needs one codec (output names and the lossy-source rule depend on it); "
                         "pick one", options={"codec": "opus"})
    preset = load_preset(codec)
    from ratecontrol import media

    media.require_encoder(preset)
    settings = run_settings(t, preset, codec, opts, run.video)
    if run.backend == "local" and (opts.scorer is None or isinstance(opts.scorer, str)):
        # the runtime the scorer needs (torch?) is here: one error, not one per file;
        # dask workers may have what the driver lacks
        check_scorer(settings["scorer"])
    src, dst, prune = check_dirs(in_dir, out_dir)
    # the reports under the publish rule, now, not after hours of encoding: never an input
    # of the run, never one of its outputs (a planned name, a kept or copied file's name)
    ids: dict = {}
    rels = walk(src, prune, ids)
    planned, _ = plan_names(rels, preset.extension)
    reports = claim_reports(json_report, csv_report, src, ids, dst,
                            [*planned.values(), *rels, MANIFEST_NAME, LOCK_NAME], overwrite)
    with OutDirLock(dst):
        report = _run(src, dst, prune, t, preset, opts, run, settings, t0)
    if "json" in reports:
        report.write_json(reports["json"])
    if "csv" in reports:
        report.write_csv(reports["csv"])
    return report


def _run(src: Path, dst: Path, prune: Path | None, t: float, preset, opts: Options, run: BatchOptions,
         settings: dict, t0: float) -> BatchReport:
    """The run itself, with OUT_DIR locked."""
    manifest_path = dst / MANIFEST_NAME
    prior, owned = read_manifest(manifest_path)
    if not run.resume:
        prior = {}
    if prune is not None:
        _refuse_foreign_files(dst, owned, run)

    input_ids: dict = {}
    rels, left_out, order = scan(src, prune, input_ids)
    planned, collisions = plan_names(rels, preset.extension)
    clean_stale_temps(dst, list(planned.values()) + rels)
    tasks = _tasks(src, dst, opts, run, settings, rels, planned, collisions, prior, owned, input_ids)
    by_rel = {tk.rel: tk for tk in tasks}

    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    # what the walk does not read (a FIFO, a link to /dev/zero or to a folder, ...) is
    # reported, not left out silently; nothing to resume, so no manifest line
    results: dict[str, FileRecord] = {rel: FileRecord(input=rel, status=SKIPPED, reason=why)
                                      for rel, why in left_out.items()}
    manifest = Manifest(manifest_path, fresh=not run.resume)
    bar = tqdm(total=len(tasks), unit="file", desc="batch", disable=None if run.progress is None else not run.progress,
               file=sys.stderr, dynamic_ncols=True)
    in_b = out_b = failed = 0
    n_jobs = 1
    gen = None
    clean_exit = False
    try:
        with _stop_on_signals(), _Backend(run.backend, run.scheduler, run.jobs, len(tasks)) as n_jobs:
            par = Parallel(return_as="generator_unordered", batch_size=1)
            gen = par(delayed(run_task)(tk) for tk in tasks)
            for res in gen:
                rec = res.rec
                if res.tmp is not None:
                    rec = _place(res, by_rel[rec.input], lambda r: manifest.append(r, settings))
                elif not rec.resumed:
                    manifest.append(rec, settings)
                if rec.collision and (rec.status != ENCODED or rec.output != by_rel[rec.input].out_rel):
                    # nothing was written under the planned name (video='keep' wrote the
                    # input's own name in place): no rename to report
                    rec = replace(rec, collision="")
                results[rec.input] = rec
                if rec.status in (ENCODED, KEPT):
                    in_b += rec.input_bytes
                    out_b += rec.output_bytes
                failed += rec.status in (FAILED, CONFLICT)
                bar.set_postfix_str(
                    f"saved {size_text(in_b - out_b)} ({100 * (1 - out_b / in_b) if in_b else 0:.0f}%)"
                    + (f", {failed} failed" if failed else ""), refresh=False)
                bar.update(1)
        clean_exit = True
    finally:
        bar.close()
        manifest.close()
        if not clean_exit:
            # interrupted (SIGTERM, Ctrl-C, an error): no worker may go on writing
            _stop_workers(gen, run.backend, dst, list(planned.values()) + rels)

    return BatchReport(
        in_dir=str(src), out_dir=str(dst), codec=preset.name, target_mos=t, scorer=settings["scorer"],
        pool=opts.pool, backend=run.backend, jobs=n_jobs, records=tuple(results[r] for r in order),
        collisions=tuple(c for c in collisions
                         if results[c.input].status == ENCODED and results[c.input].output == c.output),
        seconds=time.perf_counter() - t0, manifest_path=str(manifest_path),
    )


def _refuse_foreign_files(dst: Path, owned: dict, run: BatchOptions) -> None:
    """An OUT_DIR inside IN_DIR may hold only what batch wrote (the walk leaves it out:
    anything else there would be neither transcoded nor safe from being written over)."""
    ours = {Path(os.path.abspath(r)) for r in (run.json_report, run.csv_report) if r}
    foreign = foreign_files(dst, owned, ours)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputError(
            f"output folder {dst} is inside the input folder and already holds {len(foreign)} "
            f"file(s) batch did not write ({shown}); batch never reads its own output folder, so "
            "they would not be transcoded and could be overwritten: choose an empty OUT_DIR or "
            "one outside IN_DIR (overwrite does not change this)")


def _tasks(src: Path, dst: Path, opts: Options, run: BatchOptions, settings: dict, rels: list[str],
           planned: dict[str, str], collisions, prior: dict, owned: dict, input_ids: dict) -> list[Task]:
    """One Task per input: what its worker needs, all of it pickled to the worker."""
    coll_note = {c.input: f"{c.wanted} is taken by {c.taken_by}: wrote {c.output}" for c in collisions}
    driver_pid = os.getpid() if run.backend == "local" else None
    # the workers get the scorer by name (each builds its own, once), an instance as it is
    task_opts = replace(opts, scorer=opts.scorer if not (opts.scorer is None or isinstance(opts.scorer, str))
                        else settings["scorer"])
    tasks = []
    for rel in rels:
        cands = {planned[rel], rel}
        tasks.append(Task(
            rel=rel, in_path=str(src / rel), out_root=str(dst), out_rel=planned[rel],
            collision=coll_note.get(rel, ""), target_mos=settings["target_mos"], codec_ref=settings["codec_ref"],
            options=task_opts, settings=settings, video=run.video, copy_other=run.copy_other, prior=prior.get(rel),
            owned={c: frozenset(owned[c]) for c in cands if c in owned},
            protected=protected_outputs(dst, cands, input_ids), overwrite=run.overwrite, driver_pid=driver_pid))
    return tasks


def _stop_workers(gen, backend: str, dst: Path, outputs: list[str]) -> None:
    """Stop the workers of an interrupted run and remove what they were writing."""
    if gen is not None:
        with contextlib.suppress(BaseException):
            gen.close()  # joblib aborts: kills the loky workers
    if backend == "local":
        _kill_local_workers()
        # the killed workers had no way out: their per-process folders in the
        # system temp dir (probe encodes) go now, not at some later run's start
        with contextlib.suppress(Exception):
            fsutil.clean_stale_run_dirs()
    with contextlib.suppress(Exception):
        clean_stale_temps(dst, outputs)


def _kill_local_workers() -> None:
    """Kill joblib's reusable loky executor's workers (and their ffmpeg children), waiting."""
    try:
        from joblib.externals.loky import reusable_executor
    except ImportError:
        return
    ex = getattr(reusable_executor, "_executor", None)
    if ex is not None:
        with contextlib.suppress(Exception):
            ex.shutdown(wait=True, kill_workers=True)


class BatchInterrupted(KeyboardInterrupt):
    """The driver got SIGTERM: workers were stopped; finished files are in the manifest."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def _stop_on_signals():
    """Turn SIGTERM into BatchInterrupted for the run (SIGINT already raises
    KeyboardInterrupt), so the workers are killed on the way out instead of living on."""
    old = None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        def handler(signum, frame):
            raise BatchInterrupted(signum)

        old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


# --------------------------------------------------------------------------- helpers


def _place(res: Result, task: Task, record) -> FileRecord:
    """Move a worker's finished file onto its output path; ``record(rec)`` writes the
    manifest line, *before* the file appears under its final name (a kill between the
    two leaves a manifest line for a file not yet there, which the next run redoes;
    never a file of ours that the manifest does not know, which would be a conflict)."""
    rec = res.rec
    tmp = Path(res.tmp)
    try:
        problem, replacing = dest_problem(task, rec.output)  # again: hours may have passed
        if problem:
            rec = replace(rec, status=CONFLICT, output=None, output_bytes=0, reason=str(problem),
                          options=problem.options)
            record(rec)
            return rec
        st = os.stat(tmp)
        notes = rec.notes + ((f"replaced {rec.output}, which batch had not written (overwrite=True)",)
                             if replacing else ())
        rec = replace(rec, output_bytes=st.st_size, output_mtime_ns=st.st_mtime_ns, replaced=replacing,
                      notes=notes)
        record(rec)
        dst = Path(task.out_root) / rec.output
        try:
            _move_into_place(tmp, dst)
        except Conflict as exc:
            rec = replace(rec, status=CONFLICT, output=None, output_bytes=0, output_mtime_ns=0,
                          replaced=False, notes=res.rec.notes, reason=str(exc), options=exc.options)
            record(rec)
        except OSError as exc:
            rec = replace(rec, status=FAILED, output=None, output_bytes=0, output_mtime_ns=0,
                          replaced=False, notes=res.rec.notes, reason=write_problem(dst, exc))
            record(rec)
        return rec
    finally:
        if res.work_dir:
            shutil.rmtree(res.work_dir, ignore_errors=True)


def _move_into_place(tmp: Path, dst: Path) -> None:
    """Publish ``tmp`` onto ``dst`` under the project's publish rule (``fsutil.publish``).

    Batch's own claim has just allowed what is at ``dst`` (``dest_problem``: nothing, a
    file its manifest says it wrote, or any file with overwrite): that exact file may be
    replaced; where nothing was, a file that appeared meanwhile is never clobbered (a
    hard link fails if the name exists). ``claim_output`` is not the claim here: its
    overwrite flag cannot say "a file this run's manifest wrote". The temp file keeps
    its mode (a kept or copied file has its source's, as ``copystat`` gave it)."""
    dest = fsutil.Destination(dst, fsutil.file_id(dst), "output")
    try:
        fsutil.publish(tmp, dest, mode=stat_mod.S_IMODE(os.stat(tmp).st_mode))
    except OutputError:
        raise Conflict(f"{dst} appeared while the file was being encoded: not replaced; "
                       "move it away, or let batch replace it", {"overwrite": True}) from None
