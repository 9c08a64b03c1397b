"""One input file, in a worker process: resume check, probe, encode or keep/copy/skip, and
its FileRecord. Never raises for a problem of the file (it becomes a failed or conflict
record); the finished output comes back inside the worker's temp folder."""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import stat as stat_mod
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ratecontrol import fsutil
from ratecontrol.errors import InputError, RatecontrolError, TargetNotReachable, UsageError
from ratecontrol.batch._manifest import is_owned
from ratecontrol.batch._records import (
    DONE, CONFLICT, COPIED, ENCODED, FAILED, KEPT, SKIPPED, FileRecord, finite,
)
from ratecontrol.contract import AUDIO_EXTENSIONS
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


def write_problem(path, exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return f"cannot write {path}: permission denied (make the folder writable)"
    return f"cannot write {path}: {(exc.strerror or str(exc)).lower()}"


class Conflict(Exception):
    """An output path is taken by something batch must not replace. ``str()`` is the
    record's reason (the options, e.g. ``overwrite=True``, at its end, in the library's
    words); ``options`` go into the record as they are."""

    def __init__(self, text: str, options: dict | None = None):
        self.options = dict(options or {})
        super().__init__(text + RatecontrolError.options_text(self.options))


def dest_problem(task: Task, out_rel: str) -> tuple[Conflict | None, bool]:
    """(why ``out_rel`` must not be written, or None; whether writing replaces a foreign file)."""
    dst = Path(task.out_root) / out_rel
    if task.protected and out_rel in task.protected:
        return Conflict(task.protected[out_rel]), False
    try:
        st = os.lstat(dst)
    except FileNotFoundError:
        return None, False
    except NotADirectoryError:
        return Conflict(f"{dst}: a file is in the way of its folder: not replaced; move it away"), False
    except OSError as exc:  # a link loop in OUT_DIR (ELOOP), a folder that cannot be searched (EACCES)
        return Conflict(f"{dst} cannot be checked ({(exc.strerror or str(exc)).lower()}): nothing written; "
                        "fix that path in the output folder"), False
    if stat_mod.S_ISDIR(st.st_mode):
        return Conflict(f"{dst} is a folder: not replaced; move it away or rename it"), False
    if is_owned((task.owned or {}).get(out_rel), st):
        return None, False
    if task.overwrite:
        return None, True
    return Conflict(f"{dst} already exists and batch did not write it (or it changed since): "
                    "not replaced; move it away, or let batch replace it", {"overwrite": True}), False


def _check_dest(task: Task, out_rel: str) -> None:
    problem, _ = dest_problem(task, out_rel)
    if problem:
        raise problem


def _check_name_fits(task: Task, out_rel: str) -> None:
    """The output's name fits the file system's name limit (only ``<stem><ext>`` can be
    too long: renames are cut to fit when they are planned)."""
    n = len(Path(out_rel).name.encode())
    if n > fsutil.NAME_MAX_BYTES:
        raise _WriteError(f"cannot write {Path(task.out_root) / out_rel}: its name would be {n} bytes, over the "
                          f"{fsutil.NAME_MAX_BYTES}-byte limit for a file name; give the input a shorter name")


class _Work:
    """A worker's temp folder next to the task's outputs (created on first use).

    Named by fsutil (``.rc-tmp.<host>.<pid>.<token>.batch``): while this process lives no
    cleanup removes it; once it is gone the next run does. Everything encode and ffmpeg
    write (their own temp files included) stays inside it until the driver moves the
    finished file into place."""

    def __init__(self, task: Task):
        self.folder = (Path(task.out_root) / task.rel).parent
        self.path: Path | None = None

    def file(self, name: str) -> Path:
        if self.path is None:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise Conflict(f"a file is in the way of the output folder {self.folder}: "
                               "nothing written; move it away") from None
            except OSError as exc:
                raise _WriteError(write_problem(self.folder, exc)) from None
            try:
                tmp = fsutil.temp_dir_sibling(self.folder / "batch")
            except OSError as exc:
                raise _WriteError(write_problem(self.folder, exc)) from None
            self.path = tmp
        return self.path / name

    def discard(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


class _WriteError(Exception):
    """Writing the output failed (message: one line)."""


@dataclass(frozen=True)
class Result:
    """A worker's answer: the record, and the finished file the driver must put in place."""

    rec: FileRecord
    #: the finished output inside the worker's temp folder (None: nothing to place)
    tmp: str | None = None
    work_dir: str | None = None


def _still_done(task: Task, prior: dict, st: os.stat_result) -> FileRecord | None:
    """The prior record if it still holds for this run (input unchanged, output intact)."""
    from ratecontrol import media

    status = prior.get("status")
    if status not in DONE or prior.get("input_bytes") != st.st_size:
        return None
    if status == SKIPPED and task.copy_other:
        return None  # now asked to copy it
    if status in (ENCODED, KEPT) and not _same_settings(prior, task.settings):
        return None
    rec = FileRecord.from_dict(prior)
    if status == ENCODED and rec.output != (task.rel if rec.audio_stream is not None else task.out_rel):
        return None  # the tree changed and this input's planned name with it (--video keep: its own name)
    if prior.get("input_mtime_ns") != st.st_mtime_ns and fsutil.file_digest(task.in_path) != prior.get("input_sha256"):
        return None
    if rec.output:
        out = Path(task.out_root) / rec.output
        try:
            ost = out.stat()
        except OSError:
            return None
        if not is_owned({(rec.output_bytes, rec.output_mtime_ns or None)}, ost):
            return None
        if status in (ENCODED, KEPT):
            try:
                if not (media.inspect(out).duration_s or 0) > 0:
                    return None
            except RatecontrolError:
                return None
    return replace(rec, resumed=True)


def _same_settings(prior: dict, settings: dict) -> bool:
    """The prior record was made with these settings; video counts only for files
    that have video and all_audio_streams only for files with several audio streams
    (changing either does not redo a music library)."""
    old, new = dict(prior.get("settings") or {}), dict(settings)
    if not prior.get("other_streams"):
        old.pop("video", None)
        new.pop("video", None)
    else:
        old.setdefault("video", "audio")  # manifests older than --video keep
    if (prior.get("input_audio_streams") or 1) <= 1:  # all_audio_streams changes nothing there
        old.pop("all_audio_streams", None)
        new.pop("all_audio_streams", None)
    return old == new


def _has_cover(path: Path) -> bool:
    from ratecontrol import media

    try:
        return media.inspect(path).has_cover_art
    except RatecontrolError:
        return False


# ---- a local worker stops when its driver is gone

_WATCHDOG: threading.Thread | None = None


def _kill_children() -> None:
    """SIGKILL this process's children (ffmpeg) before it exits."""
    me = os.getpid()
    try:
        import psutil

        for child in psutil.Process(me).children(recursive=True):
            with contextlib.suppress(Exception):
                child.kill()
        return
    except ImportError:
        pass
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                fields_ = fh.read().rsplit(b")", 1)[1].split()
            if int(fields_[1]) == me:
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, IndexError, ValueError):
            pass


def _watch_driver(driver_pid: int) -> None:
    while True:
        time.sleep(0.25)
        if os.getppid() != driver_pid:
            # the driver died (even by SIGKILL): nothing this worker writes could be
            # placed or recorded any more, so stop now; the temp folder is left to the
            # next run's cleanup (its pid is ours, dead in a moment)
            _kill_children()
            os._exit(3)


def _start_watchdog(driver_pid: int | None) -> None:
    global _WATCHDOG
    if driver_pid is None or _WATCHDOG is not None or os.getpid() == driver_pid:
        return  # dask, already watching, or running in the driver itself (-j 1)
    if os.getppid() != driver_pid:
        return  # not a direct child (some other pool): do not guess
    _WATCHDOG = threading.Thread(target=_watch_driver, args=(driver_pid,), name="ratecontrol-driver-watch",
                                 daemon=True)
    _WATCHDOG.start()


def run_task(task: Task) -> Result:
    """Process one input file; never raises for a file problem (it becomes a failed or
    conflict record). A finished output comes back inside the worker's temp folder."""
    _start_watchdog(task.driver_pid)
    t0 = time.perf_counter()
    src = Path(task.in_path)
    base = {"input": task.rel, "collision": task.collision}
    work = _Work(task)
    try:
        try:
            st = src.stat()
            base.update(input_bytes=st.st_size, input_mtime_ns=st.st_mtime_ns)
            if task.prior is not None:
                done = _still_done(task, task.prior, st)
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
    except _WriteError as exc:
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
            raise _WriteError(_read_problem(src, exc)) from None
        raise _WriteError(write_problem(tmp.parent.parent, exc)) from None
    shutil.copystat(src, tmp)
    _fsync(tmp)
    return tmp


def _audio_bytes(path: Path, audio_index: int = 0) -> int | None:
    from ratecontrol import media

    return media.audio_payload_bytes(path, audio_index)


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _process(task: Task, src: Path, base: dict, t0: float, work: _Work) -> tuple[FileRecord, Path | None]:
    """Decide what the file gets (skip, copy, keep: before any encode), then encode it."""
    from ratecontrol import media

    try:
        info = media.inspect(src)
    except InputError as exc:
        return _not_audio(task, src, exc, base, t0, work)
    plan = _decide(task, src, info, base)
    if plan.skip is not None:
        reason, helps = plan.skip
        return FileRecord(status=SKIPPED, options=helps, reason=reason, seconds=time.perf_counter() - t0,
                          **base), None
    if plan.keep is not None:
        return _keep(task, src, plan, plan.keep, (), base, t0, work)
    return _encode(task, src, info, plan, base, t0, work)


def _not_audio(task: Task, src: Path, exc: InputError, base: dict, t0: float,
               work: _Work) -> tuple[FileRecord, Path | None]:
    """A file ffmpeg cannot read as audio: failed when its name says audio, else copied
    (copy_other) or skipped."""
    # ._name files are macOS AppleDouble metadata that copy along with the real file
    if src.suffix.lower() in AUDIO_EXTENSIONS and not src.name.startswith("._"):
        return _failed(exc, t0, base), None
    if task.copy_other:
        _check_dest(task, task.rel)
        tmp = _copy_into(src, work.file(src.name))
        return FileRecord(status=COPIED, output=task.rel, reason="not audio: copied unchanged",
                          seconds=time.perf_counter() - t0, **base), tmp
    return FileRecord(status=SKIPPED, reason=f"not audio ({_one_line(exc)})",
                      seconds=time.perf_counter() - t0, **base), None


@dataclass(frozen=True)
class _Plan:
    """What batch does with one audio input, decided from its probe before any encode."""

    preset: Any
    #: the streams encode will re-encode (the first is the record's)
    sources: tuple["_SourceAudio", ...]
    #: the input's own name and container, every other stream copied (a film; with
    #: all_audio_streams also an audio-only file with several audio streams)
    in_place: bool
    #: more than one audio stream, or video/other streams
    bundled: bool
    video_note: tuple[str, ...] = ()
    #: (reason, options) when the file is skipped (video="skip")
    skip: tuple[str, dict] | None = None
    #: the reason the source is copied unchanged before any work (the lossy rule)
    keep: str | None = None

    @property
    def lossy(self) -> bool:
        return any(not a.lossless for a in self.sources)


def _decide(task: Task, src: Path, info, base: dict) -> _Plan:
    """Skip, keep or encode, from the probe alone; fills the record's input fields in ``base``."""
    video_note: tuple[str, ...] = ()
    all_streams = task.options.all_audio_streams
    in_place = task.video == "keep" and (info.other_streams > 0 or (all_streams and info.audio_streams > 1))
    bundled = info.other_streams > 0 or info.audio_streams > 1
    base.update(duration_s=info.duration_s, input_audio_streams=info.audio_streams)
    if info.other_streams:
        base["other_streams"] = info.other_streams
        if task.video == "skip":
            base.update(input_codec=info.codec, lossless=info.lossless)
            helps = {"video": "keep"}
            return _Plan(None, (), in_place, bundled, skip=(f"has {info.other_streams} video/other stream(s)"
                                                            + RatecontrolError.options_text(helps), helps))
        if not in_place:
            video_note = (f"input has {info.other_streams} video/other stream(s): batch wrote its default audio "
                          "stream alone (video='audio'; video='keep' re-encodes it in place)",)
    sources = _source_audio(src, info, _chosen_streams(src, info, in_place, all_streams))
    first = sources[0]
    base.update(input_codec=first.codec, input_kbps=first.kbps, lossless=all(a.lossless for a in sources))
    from ratecontrol.presets import load_preset

    preset = load_preset(task.codec_ref)
    return _Plan(preset, sources, in_place, bundled, video_note, keep=_below_ladder(preset, sources, bundled))


def _keep(task: Task, src: Path, plan: _Plan, reason: str, notes: tuple[str, ...], base: dict, t0: float,
          work: _Work) -> tuple[FileRecord, Path]:
    """The source copied unchanged under its own name (a lossy source batch cannot improve)."""
    _check_dest(task, task.rel)
    tmp = _copy_into(src, work.file(src.name))
    return FileRecord(status=KEPT, output=task.rel, reason=reason, notes=notes,
                      audio_bytes=_audio_bytes(tmp, plan.sources[0].audio_index), seconds=time.perf_counter() - t0,
                      **base), tmp


def _encode(task: Task, src: Path, info, plan: _Plan, base: dict, t0: float,
            work: _Work) -> tuple[FileRecord, Path]:
    """Encode the file (or keep the source when no smaller encode reaches the target)."""
    from ratecontrol.api import encode

    sources, in_place, bundled, lossy = plan.sources, plan.in_place, plan.bundled, plan.lossy
    # before hours of work: is the output path ours to write?
    out_rel = task.rel if in_place else task.out_rel
    _check_name_fits(task, out_rel)
    _check_dest(task, out_rel)
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
                     f"({_kbps_list(sources)}) reaches MOS {task.target_mos:g} (best {best:.3f}): copied unchanged",
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
    audio_bytes = _audio_bytes(out, audio_stream or 0)
    if lossy and _not_smaller(src, res, sources, audio_bytes, whole=in_place or not bundled):
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


@dataclass(frozen=True)
class _SourceAudio:
    """One audio stream batch re-encodes, as the lossy-source rule needs it."""

    #: position among the input's audio streams
    audio_index: int
    codec: str
    lossless: bool
    #: the stream's own bitrate (None: unknown)
    kbps: float | None
    #: None: the stream line does not say
    channels: int | None


def _chosen_streams(src: Path, info, in_place: bool, all_streams: bool) -> tuple[int, ...]:
    """Positions (among the audio streams) of what ``encode`` will re-encode: encode's own
    choice (``probing.streams.chosen_streams``), all of them only when in place."""
    from ratecontrol.options import Options
    from ratecontrol.probing.streams import chosen_streams

    return tuple(chosen_streams(src, info, Options(all_audio_streams=in_place and all_streams)))


def _source_audio(src: Path, info, chosen: tuple[int, ...]) -> tuple[_SourceAudio, ...]:
    """The chosen streams' own codec, bitrate and channels.

    An audio file's MediaInfo describes its one stream. A film's describes its first
    audio stream (maybe not the chosen one) and has no bitrate when the stream line
    gives none (the container's is mostly video): then a lossy stream's bitrate is
    measured from its packets (one stream-copy pass over the file)."""
    from ratecontrol import media

    if info.other_streams == 0 and info.audio_streams <= 1:
        return (_SourceAudio(0, info.codec, info.lossless, info.bitrate_kbps, info.channels),)
    by_index = {st.audio_index: st for st in info.streams if st.kind == "audio"}
    out = []
    for n in chosen:
        st = by_index.get(n)
        codec = st.codec if st else info.codec
        lossless = media.is_lossless_codec(codec)
        kbps = st.bitrate_kbps if st else None
        if kbps is None and not lossless and info.duration_s:
            payload = media.audio_payload_bytes(src, n)
            kbps = payload * 8 / 1000 / info.duration_s if payload else None
        out.append(_SourceAudio(n, codec, lossless, kbps, st.channels if st else None))
    return tuple(out)


def _below_ladder(preset, sources: tuple[_SourceAudio, ...], bundled: bool) -> str | None:
    """Why the file is copied unchanged before any work, or None.

    A lossy stream is never encoded above its own bitrate, so when even the lowest rung
    of the ladder for its channels (``rungs_for``: 5.1 Opus starts at 3x the stereo
    ladder's lowest rung, measured in docs/scoring.md; MP3 stops at 2 channels) is above
    it, no encode can be smaller."""
    for a in sources:
        if a.lossless or not a.kbps or not a.channels:
            continue
        lowest = preset.rungs_for(a.channels)[0]
        if lowest.nominal_kbps > a.kbps:
            which = f"audio stream {a.audio_index}, " if bundled else ""
            return (f"lossy source ({which}{a.codec}, {a.channels} ch, ~{a.kbps:.0f} kbps) is already below the "
                    f"lowest {preset.name} rung for {a.channels} channels ({lowest.label}): copied unchanged")
    return None


def _kbps_list(sources: tuple[_SourceAudio, ...]) -> str:
    return ", ".join(f"~{a.kbps:.0f} kbps" if a.kbps else "unknown kbps" for a in sources if not a.lossless)


def _not_smaller(src: Path, res, sources: tuple[_SourceAudio, ...], audio_bytes: int | None, whole: bool) -> bool:
    """The encode is not smaller than the lossy source it replaces.

    Whole files when the output is the input's container (its other streams are copied
    bit for bit, so the difference is the audio's); the audio alone when a film's audio
    stream was written on its own (video='audio': the film's size is mostly video)."""
    if whole:
        return res.output_bytes >= res.input_bytes
    src_audio = _audio_bytes(src, sources[0].audio_index)
    return bool(src_audio and audio_bytes) and audio_bytes >= src_audio


# ---- driver side: put a finished file in place
