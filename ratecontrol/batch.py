"""Batch mode: transcode a whole folder tree, resumably, locally or on a Dask cluster.

``transcode_folder(IN_DIR, OUT_DIR, target_mos=..., codec=...)`` walks IN_DIR in sorted
order and mirrors it under OUT_DIR. Every file is probed (not judged by its extension):

* audio -> ``ratecontrol.api.encode`` at the cheapest rung that meets the target, with
  the preset's extension, tags and cover art kept (the media layer does that);
* a *lossy* source is never encoded above its own bitrate: the ladder is cut at the
  source's kbps (``max_kbps``); if no rung is that low, if no rung under it meets the
  target, or if the encode is not smaller than the source, the source itself is copied
  unchanged (status ``kept``, the reason in the report);
* a file ffmpeg cannot read as audio is ``skipped`` (or ``copied`` with
  ``copy_other``), unless its extension says it should have been audio (``song.flac``
  that does not decode): then it ``failed`` with ffmpeg's one-line reason.

Output names: ``<stem><preset extension>`` in the mirrored folder. Two inputs in one
folder that would get the same name (``a.flac`` and ``a.wav`` -> ``a.opus``), or an
output name that is already the name of another input file (``a.flac`` -> ``a.opus``
next to an input ``a.opus``), are resolved in sorted order: the first input keeps
``a.opus``, the next gets its full name plus the extension (``a.wav.opus``), then
``a.wav.2.opus``, ... Each rename is listed in the report (``collisions``).

What batch replaces: only a file its own manifest says it wrote, still with the size
and mtime recorded there. Any other file at an output path (the user's ``a.opus``, a
file batch wrote that was edited since, a folder) is left alone and the input becomes
a ``conflict`` record (exit status 1, like a failure), unless ``overwrite=True``
(``--overwrite``) asks to replace it (the record says so). A file that is an input of
the run (same inode) is never replaced, not even with ``--overwrite``. An OUT_DIR inside
IN_DIR is left out of the walk; if it holds files batch did not write the run is refused
(they would be neither read nor safe).

One run per OUT_DIR: ``OUT_DIR/.ratecontrol-batch.lock`` is held (``flock``) for the
whole run; a second run on the same OUT_DIR fails at once naming the first one's pid.

Resume: ``OUT_DIR/.ratecontrol-manifest.jsonl`` gets one JSON line per finished file
(input size, mtime, SHA-256; output, its size and mtime; rung, score, status; the
settings), written by the driver process as results come in, flushed and fsynced. A
rerun with the same settings skips a file whose input is unchanged and whose output
still has the recorded size and mtime and probes as audio; anything else (failed,
changed, missing or damaged output) is done again. A worker writes its output into a
temp folder of its own next to the final name (``fsutil`` names, owned by its pid); the
driver records the manifest line, then links or renames the file into place, so a
killed run never leaves a truncated file under a final name and never an output the
manifest does not know. Temp files whose process is gone are removed at the start of
the next run (``fsutil.clean_stale_temps``); a live run's never are.

Parallelism: one task per file through joblib (``loky`` processes locally, or joblib's
``dask`` backend on a ``distributed`` cluster: the same code path). Inside a worker the
scorer runs with one job (file-level parallelism keeps every core busy without nested
pools), and is created once per worker process and reused for every file it gets.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import math
import os
import shutil
import signal
import socket
import stat as stat_mod
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from ratecontrol import fsutil
from ratecontrol.errors import (
    InputError,
    InputNotFoundError,
    OutputError,
    RatecontrolError,
    TargetNotReachable,
    UsageError,
)
from ratecontrol.contract import AUDIO_EXTENSIONS
from ratecontrol.results import jsonable
from ratecontrol.scoring.pooling import DEFAULT_POOL, validate_pool

__all__ = [
    "default_jobs",
    "transcode_folder",
    "BatchReport",
    "FileRecord",
    "Collision",
    "MANIFEST_NAME",
    "LOCK_NAME",
    "AUDIO_EXTENSIONS",
    "BatchInterrupted",
]

#: the resume manifest, at the top of OUT_DIR
MANIFEST_NAME = ".ratecontrol-manifest.jsonl"
#: held (flock) by the run that owns OUT_DIR; holds "pid host"
LOCK_NAME = ".ratecontrol-batch.lock"
#: manifest/record format version (bump when fields change meaning)
#: 2: output_mtime_ns, ``conflict`` status, ``{"reset": true}`` lines (--no-resume)
MANIFEST_VERSION = 2

#: statuses of a finished file
ENCODED, KEPT, COPIED, SKIPPED, FAILED = "encoded", "kept", "copied", "skipped", "failed"
#: an output path held a file batch did not write (or that changed since): not replaced
CONFLICT = "conflict"
_DONE = (ENCODED, KEPT, COPIED, SKIPPED)
#: statuses that wrote a file under ``output``
_WROTE = (ENCODED, KEPT, COPIED)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class FileRecord:
    """What happened to one input file (also one line of the manifest)."""

    #: path relative to IN_DIR, '/'-separated
    input: str
    #: encoded | kept (lossy source copied unchanged) | copied (non-audio, --copy-other)
    #: | skipped (not audio) | failed | conflict (an output path held a file batch did
    #: not write; nothing written)
    status: str
    #: path relative to OUT_DIR, None when nothing was written
    output: str | None = None
    #: one line: why it failed / was kept / was skipped
    reason: str = ""
    input_bytes: int = 0
    output_bytes: int = 0
    #: the output's mtime as written (with output_bytes: how batch knows the file is its own)
    output_mtime_ns: int = 0
    #: bytes of the output's audio packets (no container, tags or cover art); None: unknown
    audio_bytes: int | None = None
    input_mtime_ns: int = 0
    input_sha256: str = ""
    input_codec: str | None = None
    input_kbps: float | None = None
    lossless: bool | None = None
    duration_s: float | None = None
    rung_label: str | None = None
    #: the chosen rung's nominal bitrate
    bitrate_kbps: float | None = None
    pooled_mos: float | None = None
    #: score of the finished file over the whole track when the search sampled it
    full_track_mos: float | None = None
    #: False when --best-effort used the top rung without meeting the target
    reached: bool | None = None
    n_probes: int = 0
    seconds: float = 0.0
    notes: tuple[str, ...] = ()
    #: set when the output name was changed to avoid a collision
    collision: str = ""
    #: True when this run took the record from the manifest instead of redoing the file
    resumed: bool = False
    #: True when --overwrite replaced a file at the output path that batch had not written
    replaced: bool = False
    #: streams of the input besides audio (video, subtitles, data; cover art not counted);
    #: > 0 marks a video file, whatever --video did with it
    other_streams: int = 0
    #: --video keep: the audio stream re-encoded in place (position among the audio
    #: streams); the output is the input's container with every other stream copied
    audio_stream: int | None = None

    @property
    def ok(self) -> bool:
        return self.status not in (FAILED, CONFLICT)

    @property
    def final_mos(self) -> float | None:
        """The score of what was written: the full-track check when there was one."""
        return self.full_track_mos if self.full_track_mos is not None else self.pooled_mos

    @property
    def output_kbps(self) -> float | None:
        """Measured bitrate of the output file (whole file, tags and container included)."""
        if not self.output_bytes or not self.duration_s:
            return None
        return self.output_bytes * 8 / 1000 / self.duration_s

    @property
    def audio_kbps(self) -> float | None:
        """Measured bitrate of the output's audio alone (cover art and tags not counted)."""
        if not self.audio_bytes or not self.duration_s:
            return None
        return self.audio_bytes * 8 / 1000 / self.duration_s

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FileRecord":
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["notes"] = tuple(kw.get("notes") or ())
        return cls(**kw)


@dataclass(frozen=True)
class Collision:
    """An output name that was taken, and the name used instead."""

    input: str
    wanted: str
    output: str
    taken_by: str


@dataclass(frozen=True)
class BatchReport:
    """The outcome of one ``transcode_folder`` run (resumed files included)."""

    in_dir: str
    out_dir: str
    codec: str
    target_mos: float
    scorer: str
    pool: str
    backend: str
    jobs: int
    #: every file of IN_DIR, in walk order
    records: tuple[FileRecord, ...]
    collisions: tuple[Collision, ...]
    #: wall time of this run
    seconds: float
    manifest_path: str

    def _with(self, *statuses: str) -> list[FileRecord]:
        return [r for r in self.records if r.status in statuses]

    @property
    def n_files(self) -> int:
        return len(self.records)

    @property
    def n_encoded(self) -> int:
        return len(self._with(ENCODED))

    @property
    def n_kept(self) -> int:
        return len(self._with(KEPT))

    @property
    def n_copied(self) -> int:
        return len(self._with(COPIED))

    @property
    def n_skipped(self) -> int:
        return len(self._with(SKIPPED))

    @property
    def n_failed(self) -> int:
        return len(self._with(FAILED))

    @property
    def n_conflicts(self) -> int:
        return len(self._with(CONFLICT))

    @property
    def n_replaced(self) -> int:
        return sum(r.replaced for r in self.records)

    @property
    def n_resumed(self) -> int:
        return sum(r.resumed for r in self.records)

    @property
    def failures(self) -> tuple[FileRecord, ...]:
        return tuple(self._with(FAILED))

    @property
    def conflicts(self) -> tuple[FileRecord, ...]:
        return tuple(self._with(CONFLICT))

    @property
    def ok(self) -> bool:
        return self.n_failed == 0 and self.n_conflicts == 0

    @property
    def input_bytes(self) -> int:
        """Bytes of the audio inputs that have an output (encoded or kept)."""
        return sum(r.input_bytes for r in self._with(ENCODED, KEPT))

    @property
    def output_bytes(self) -> int:
        return sum(r.output_bytes for r in self._with(ENCODED, KEPT))

    @property
    def saving_fraction(self) -> float:
        """1 - output/input over the audio files with an output (0.8 = 80% smaller)."""
        return 1.0 - self.output_bytes / self.input_bytes if self.input_bytes else math.nan

    @property
    def mean_mos(self) -> float:
        s = self._scores()
        return sum(s) / len(s) if s else math.nan

    @property
    def min_mos(self) -> float:
        s = self._scores()
        return min(s) if s else math.nan

    @property
    def mean_kbps(self) -> float:
        """Duration-weighted mean measured audio bitrate of the outputs (encoded + kept):
        the audio packets' bytes, so cover art and tags do not count (a record without
        ``audio_bytes``, from an older manifest, counts its whole file)."""
        recs = [r for r in self._with(ENCODED, KEPT) if r.duration_s]
        dur = sum(r.duration_s for r in recs)
        bits = sum((r.audio_bytes if r.audio_bytes else r.output_bytes) for r in recs) * 8
        return bits / 1000 / dur if dur else math.nan

    def _scores(self) -> list[float]:
        return [r.final_mos for r in self._with(ENCODED)
                if r.final_mos is not None and not math.isnan(r.final_mos)]

    def summary(self) -> dict[str, Any]:
        return jsonable({
            "files": self.n_files, "encoded": self.n_encoded, "kept": self.n_kept,
            "copied": self.n_copied, "skipped": self.n_skipped, "failed": self.n_failed,
            "conflicts": self.n_conflicts, "replaced": self.n_replaced, "resumed": self.n_resumed, "input_bytes": self.input_bytes,
            "output_bytes": self.output_bytes, "saving_fraction": self.saving_fraction,
            "mean_mos": self.mean_mos, "min_mos": self.min_mos, "mean_kbps": self.mean_kbps,
            "collisions": len(self.collisions), "seconds": self.seconds,
        })

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("in_dir", "out_dir", "codec", "target_mos", "scorer",
                                           "pool", "backend", "jobs", "seconds", "manifest_path")}
        d["summary"] = self.summary()
        d["records"] = [r.to_dict() for r in self.records]
        d["collisions"] = [asdict(c) for c in self.collisions]
        return jsonable(d)

    def summary_lines(self) -> list[str]:
        """Human summary: totals, sizes and scores, then every failure and rename."""
        parts = [f"{self.n_encoded} encoded"]
        if self.n_kept:
            parts.append(f"{self.n_kept} kept (lossy source)")
        if self.n_copied:
            parts.append(f"{self.n_copied} copied")
        if self.n_skipped:
            parts.append(f"{self.n_skipped} skipped (not audio)")
        parts.append(f"{self.n_failed} failed")
        if self.n_conflicts:
            parts.append(f"{self.n_conflicts} conflicts (output path taken, not replaced)")
        resumed = f"; {self.n_resumed} already done (manifest)" if self.n_resumed else ""
        lines = [f"{self.n_files} files in {_fmt_s(self.seconds)}: {', '.join(parts)}{resumed}"]
        if self.input_bytes:
            lines.append(
                f"audio: {_mb(self.input_bytes)} -> {_mb(self.output_bytes)} "
                f"(saved {100 * self.saving_fraction:.1f}%), mean {_num(self.mean_kbps, '.1f')} kbps; "
                f"{self.pool} MOS mean {_num(self.mean_mos)}, lowest {_num(self.min_mos)} "
                f"(target {self.target_mos:g}, {self.codec}, {self.scorer})"
            )
        videos = [r for r in self.records if r.other_streams]
        if videos:
            kept = sum(r.audio_stream is not None and r.status == ENCODED for r in videos)
            alone = sum(r.audio_stream is None and r.status == ENCODED for r in videos)
            skipped = sum(r.status == SKIPPED for r in videos)
            what = [f"{kept} re-encoded in place, video and other streams copied"] if kept else []
            what += [f"{alone} written as their audio alone (--video audio)"] if alone else []
            what += [f"{skipped} skipped (--video skip)"] if skipped else []
            other = len(videos) - kept - alone - skipped
            what += [f"{other} kept, failed or in conflict"] if other else []
            lines.append(f"video files: {len(videos)}: {', '.join(what)} (sizes above are whole files)")
        for r in self.failures:
            lines.append(f"failed: {r.input}: {r.reason}")
        for r in self.conflicts:
            lines.append(f"conflict: {r.input}: {r.reason}")
        for r in self.records:
            if r.replaced:
                lines.append(f"replaced: {r.output} (existed, not written by batch; --overwrite)")
        for c in self.collisions:
            lines.append(f"renamed: {c.input} -> {c.output} ({c.wanted} is taken by {c.taken_by})")
        return lines

    def write_json(self, path: str | os.PathLike) -> Path:
        return _write_report(Path(path), json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    def write_csv(self, path: str | os.PathLike) -> Path:
        cols = [f.name for f in fields(FileRecord)] + ["output_kbps", "audio_kbps"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in self.records:
            row = r.to_dict()
            row["notes"] = " | ".join(r.notes)
            row["output_kbps"] = r.output_kbps
            row["audio_kbps"] = r.audio_kbps
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})
        return _write_report(Path(path), buf.getvalue())


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _Task:
    """One file for a worker: everything it needs, nothing that does not pickle cheaply."""

    rel: str
    in_path: str
    out_root: str
    #: planned output, relative to OUT_DIR, for an encode
    out_rel: str
    collision: str
    settings: dict
    scorer: Any  # a name, or a Scorer instance
    copy_other: bool
    #: probe cache: None (default folder of the machine), False, or a folder
    cache: Any
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


def _walk(in_dir: Path, prune: Path | None, ids: dict | None = None) -> list[str]:
    """Relative '/'-paths of every file under ``in_dir``, sorted per folder, folders first-come.

    ``prune`` (OUT_DIR inside IN_DIR) is not entered. Our own temp files and lock file are
    not inputs. ``ids``, when given, is filled with (st_dev, st_ino) -> relative path."""
    out: list[str] = []
    for root, dirs, files in os.walk(in_dir):
        rootp = Path(root)
        dirs[:] = sorted(d for d in dirs if not fsutil.is_temp_name(d)
                         and (prune is None or (rootp / d).resolve() != prune))
        for name in sorted(files):
            if fsutil.is_temp_name(name) or name == LOCK_NAME:
                continue
            p = rootp / name
            try:
                st = p.stat()
            except OSError:  # a dangling symlink is not a file
                continue
            if stat_mod.S_ISREG(st.st_mode):
                rel = p.relative_to(in_dir).as_posix()
                out.append(rel)
                if ids is not None:
                    ids[(st.st_dev, st.st_ino)] = rel
    return out


def _plan_names(rels: list[str], extension: str) -> tuple[dict[str, str], list[Collision]]:
    """Output name per input (relative to OUT_DIR); see the module docstring for the rule.

    Planned before anything is probed, so it cannot depend on probe results: inputs with
    an audio extension (AUDIO_EXTENSIONS) choose first, then the others, each group in
    sorted order. ``cover.jpg`` therefore never takes ``cover.opus`` from ``cover.flac``.
    """
    by_dir: dict[str, list[str]] = {}
    for rel in rels:
        parent, _, name = rel.rpartition("/")
        by_dir.setdefault(parent, []).append(name)
    planned: dict[str, str] = {}
    collisions: list[Collision] = []
    for parent, names in by_dir.items():
        prefix = f"{parent}/" if parent else ""
        # every input's own name is reserved: a kept or copied file keeps its name
        owner = {n: n for n in names}
        if not parent:
            owner[MANIFEST_NAME] = "(the manifest)"
            owner[LOCK_NAME] = "(the lock file)"
        order = [n for n in names if _suffix(n) in AUDIO_EXTENSIONS] + [n for n in names if _suffix(n) not in AUDIO_EXTENSIONS]
        for name in order:
            stem = name[: -len(_suffix(name))] if _suffix(name) else name
            wanted = stem + extension
            candidates = [wanted, name + extension] + [f"{name}.{k}{extension}" for k in range(2, 10_000)]
            for cand in candidates:
                if owner.get(cand, name) == name:
                    break
            owner[cand] = name
            planned[prefix + name] = prefix + cand
            if cand != wanted:
                collisions.append(Collision(prefix + name, prefix + wanted, prefix + cand, prefix + owner[wanted]))
    return planned, collisions


def _suffix(name: str) -> str:
    """Lower-case extension with the dot ('' for none; a leading dot does not count)."""
    return Path(name).suffix.lower()


# --------------------------------------------------------------------------- manifest


def _read_manifest(path: Path) -> tuple[dict[str, dict], dict[str, set]]:
    """(last record per input since the last ``reset`` line, outputs batch wrote).

    The second map is over every line, resets included: output path -> the set of
    (size, mtime_ns) versions batch wrote there (mtime None for version-1 lines, which
    did not record it). A line cut short by a kill is ignored."""
    last: dict[str, dict] = {}
    owned: dict[str, set] = {}
    if not path.is_file():
        return last, owned
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if not isinstance(d, dict):
                continue
            if d.get("reset") is True:
                last = {}
                continue
            if not isinstance(d.get("input"), str):
                continue
            last[d["input"]] = d
            out = d.get("output")
            if d.get("status") in _WROTE and isinstance(out, str) and isinstance(d.get("output_bytes"), int):
                owned.setdefault(out, set()).add((d["output_bytes"], d.get("output_mtime_ns") or None))
    return last, owned


def _load_manifest(path: Path) -> dict[str, dict]:
    """Last record per input (since the last --no-resume); a line cut short by a kill is ignored."""
    return _read_manifest(path)[0]


def _is_owned(versions, st: os.stat_result) -> bool:
    """True when a file with stat ``st`` is one batch wrote (a recorded size and mtime)."""
    return any(size == st.st_size and (mtime is None or mtime == st.st_mtime_ns)
               for size, mtime in (versions or ()))


class _Manifest:
    """Append-only JSON lines, one fsync per record so a kill loses at most the line being written."""

    def __init__(self, path: Path, fresh: bool):
        self.path = path
        self.fh = open(path, "a+b")
        self.fh.seek(0, os.SEEK_END)
        if self.fh.tell() > 0:
            self.fh.seek(-1, os.SEEK_END)
            if self.fh.read(1) != b"\n":  # the previous run died mid-line
                self.fh.write(b"\n")
        self.fh.seek(0, os.SEEK_END)
        if fresh and self.fh.tell() > 0:
            # --no-resume: earlier lines no longer count as done, but they still say which
            # files batch wrote (so they may be replaced), so they are kept
            self._write({"reset": True, "finished_utc": _utc_now(), "manifest_version": MANIFEST_VERSION})

    def _write(self, d: dict) -> None:
        self.fh.write((json.dumps(d, allow_nan=False) + "\n").encode("utf-8"))
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def append(self, rec: FileRecord, settings: dict) -> None:
        d = rec.to_dict()
        d.pop("resumed", None)
        d["settings"] = settings
        d["finished_utc"] = _utc_now()
        d["manifest_version"] = MANIFEST_VERSION
        self._write(d)

    def close(self) -> None:
        self.fh.close()


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _clean_stale_temps(out_root: Path, planned_outputs: Iterable[str]) -> int:
    """Remove temp files of dead runs from the folders of planned outputs; returns how many.

    ``fsutil.clean_stale_temps`` removes ``.rc-tmp.<host>.<pid>.*`` files and folders whose
    process is gone, so a live run's (even without the lock) are never touched.

    LEGACY (remove after one release): names the media layer and ``encode`` used before
    fsutil, left by a kill of an older version: ``.<name>.*.part``, ``.ffmeta.*.txt``,
    ``.<name>.rc-tmp*`` and ``..<name>.rc-tmp*`` next to a planned output. They carry no
    pid; the OUT_DIR lock keeps another batch run of this version from making them."""
    n = 0
    folders: dict[Path, set[str]] = {}
    for rel in planned_outputs:
        p = out_root / rel
        folders.setdefault(p.parent, set()).add(p.name)
    for folder, names in folders.items():
        if not folder.is_dir():
            continue
        n += fsutil.clean_stale_temps(folder)
        for entry in folder.iterdir():
            nm = entry.name
            stale = nm.startswith(".ffmeta.") and nm.endswith(".txt")
            if nm.startswith(".") and nm.endswith(".part"):
                stale = stale or any(nm.startswith(f".{n}.") for n in names)
            stale = stale or any(nm.startswith((f".{n}.rc-tmp", f"..{n}.rc-tmp")) for n in names)
            if stale and entry.is_file():
                entry.unlink(missing_ok=True)
                n += 1
    return n


class _OutDirLock:
    """Exclusive ``flock`` on OUT_DIR/LOCK_NAME for the whole run (holds "pid host").

    A second run fails at once with an OutputError naming the holder. The file is
    removed on release while still locked; a run that opened the old file before that
    sees, once it gets the lock, that the path no longer names its file and tries again."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / LOCK_NAME
        self.fd: int | None = None

    def __enter__(self) -> "_OutDirLock":
        for _ in range(50):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutputError(f"cannot create the lock file {self.path} ({exc.strerror}); "
                                  "check OUT_DIR's permissions") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_holder(fd)
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise OutputError(
                        f"output folder {self.path.parent} is in use by another ratecontrol batch run "
                        f"({holder or 'pid unknown'}; lock {self.path}); wait for it to finish, or "
                        "stop it, or choose another OUT_DIR") from None
                raise OutputError(f"cannot lock {self.path} ({exc.strerror}); the file system may not "
                                  "support locks: choose an OUT_DIR on another one") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed it after we opened it
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
            self.fd = fd
            return self
        raise OutputError(f"cannot take the lock {self.path}; try again")

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self.fd)
            self.fd = None


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 200).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _foreign_files(out_dir: Path, owned: dict[str, set], also_ours: set[Path]) -> list[str]:
    """Files under OUT_DIR (relative) that are not batch's: not an output the manifest
    records, not the manifest, the lock, a report of this run or a temp file."""
    found: list[str] = []
    for root, dirs, files in os.walk(out_dir):
        dirs[:] = sorted(d for d in dirs if not fsutil.is_temp_name(d))
        for name in sorted(files):
            p = Path(root) / name
            rel = p.relative_to(out_dir).as_posix()
            if rel in (MANIFEST_NAME, LOCK_NAME) or rel in owned or fsutil.is_temp_name(name):
                continue
            if p in also_ours:
                continue
            found.append(rel)
    return found


# --------------------------------------------------------------------------- worker side

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


def _read_problem(path, exc: OSError) -> str:
    """One line for an input that cannot be read."""
    if isinstance(exc, PermissionError):
        return f"cannot read {path}: permission denied (make it readable, or move it out of IN_DIR)"
    return f"cannot read {path}: {(exc.strerror or str(exc)).lower()} (check the file)"


def _write_problem(path, exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return f"cannot write {path}: permission denied (make the folder writable)"
    return f"cannot write {path}: {(exc.strerror or str(exc)).lower()}"


class _Conflict(Exception):
    """An output path is taken by something batch must not replace (message: the reason)."""


def _dest_problem(task: _Task, out_rel: str) -> tuple[str | None, bool]:
    """(why ``out_rel`` must not be written, or None; whether writing replaces a foreign file)."""
    dst = Path(task.out_root) / out_rel
    if task.protected and out_rel in task.protected:
        return task.protected[out_rel], False
    try:
        st = os.lstat(dst)
    except FileNotFoundError:
        return None, False
    except NotADirectoryError:
        return f"{dst}: a file is in the way of its folder: not replaced; move it away", False
    if stat_mod.S_ISDIR(st.st_mode):
        return f"{dst} is a folder: not replaced; move it away or rename it", False
    if _is_owned((task.owned or {}).get(out_rel), st):
        return None, False
    if task.overwrite:
        return None, True
    return (f"{dst} already exists and batch did not write it (or it changed since): "
            "not replaced; move it away, or let batch replace it (overwrite)"), False


def _check_dest(task: _Task, out_rel: str) -> None:
    problem, _ = _dest_problem(task, out_rel)
    if problem:
        raise _Conflict(problem)


class _Work:
    """A worker's temp folder next to the task's outputs (created on first use).

    Named by fsutil (``.rc-tmp.<host>.<pid>.<token>.batch``): while this process lives no
    cleanup removes it; once it is gone the next run does. Everything encode and ffmpeg
    write (their own temp files included) stays inside it until the driver moves the
    finished file into place."""

    def __init__(self, task: _Task):
        self.folder = (Path(task.out_root) / task.rel).parent
        self.path: Path | None = None

    def file(self, name: str) -> Path:
        if self.path is None:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise _Conflict(f"a file is in the way of the output folder {self.folder}: "
                                "nothing written; move it away") from None
            except OSError as exc:
                raise _WriteError(_write_problem(self.folder, exc)) from None
            try:
                tmp = fsutil.temp_dir_sibling(self.folder / "batch")
            except OSError as exc:
                raise _WriteError(_write_problem(self.folder, exc)) from None
            self.path = tmp
        return self.path / name

    def discard(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


class _WriteError(Exception):
    """Writing the output failed (message: one line)."""


@dataclass(frozen=True)
class _Result:
    """A worker's answer: the record, and the finished file the driver must put in place."""

    rec: FileRecord
    #: the finished output inside the worker's temp folder (None: nothing to place)
    tmp: str | None = None
    work_dir: str | None = None


def _still_done(task: _Task, prior: dict, st: os.stat_result) -> FileRecord | None:
    """The prior record if it still holds for this run (input unchanged, output intact)."""
    from ratecontrol import media

    status = prior.get("status")
    if status not in _DONE or prior.get("input_bytes") != st.st_size:
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
        if not _is_owned({(rec.output_bytes, rec.output_mtime_ns or None)}, ost):
            return None
        if status in (ENCODED, KEPT):
            try:
                if not (media.inspect(out).duration_s or 0) > 0:
                    return None
            except RatecontrolError:
                return None
    return replace(rec, resumed=True)


def _same_settings(prior: dict, settings: dict) -> bool:
    """The prior record was made with these settings; --video counts only for files
    that have video (a change of --video does not redo a music library)."""
    old, new = dict(prior.get("settings") or {}), dict(settings)
    if not prior.get("other_streams"):
        old.pop("video", None)
        new.pop("video", None)
    else:
        old.setdefault("video", "audio")  # manifests older than --video keep
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


def _run_task(task: _Task) -> _Result:
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
                    return _Result(done)
            base["input_sha256"] = fsutil.file_digest(src)
        except OSError as exc:
            return _Result(FileRecord(status=FAILED, reason=_read_problem(src, exc),
                                      seconds=time.perf_counter() - t0, **base))
        rec, tmp = _process(task, src, base, t0, work)
        if tmp is None:
            work.discard()
            return _Result(rec)
        return _Result(rec, str(tmp), str(work.path))
    except _Conflict as exc:
        work.discard()
        return _Result(FileRecord(status=CONFLICT, reason=str(exc), seconds=time.perf_counter() - t0, **base))
    except _WriteError as exc:
        work.discard()
        return _Result(FileRecord(status=FAILED, reason=str(exc), seconds=time.perf_counter() - t0, **base))
    except Exception as exc:  # one bad file must not stop a library run
        work.discard()
        return _Result(FileRecord(status=FAILED, reason=_one_line(exc), seconds=time.perf_counter() - t0, **base))


def _copy_into(src: Path, tmp: Path) -> Path:
    try:
        shutil.copyfile(src, tmp)
    except PermissionError as exc:
        if not os.access(src, os.R_OK):
            raise _WriteError(_read_problem(src, exc)) from None
        raise _WriteError(_write_problem(tmp.parent.parent, exc)) from None
    shutil.copystat(src, tmp)
    _fsync(tmp)
    return tmp


def _audio_bytes(path: Path, audio_index: int = 0) -> int | None:
    from ratecontrol import media

    return media.audio_payload_bytes(path, audio_index)


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _process(task: _Task, src: Path, base: dict, t0: float, work: _Work) -> tuple[FileRecord, Path | None]:
    from ratecontrol import media

    try:
        info = media.inspect(src)
    except InputError as exc:
        # ._name files are macOS AppleDouble metadata that copy along with the real file
        if src.suffix.lower() in AUDIO_EXTENSIONS and not src.name.startswith("._"):
            return FileRecord(status=FAILED, reason=_one_line(exc), seconds=time.perf_counter() - t0, **base), None
        if task.copy_other:
            _check_dest(task, task.rel)
            tmp = _copy_into(src, work.file(src.name))
            return FileRecord(status=COPIED, output=task.rel, reason="not audio: copied unchanged",
                              seconds=time.perf_counter() - t0, **base), tmp
        return FileRecord(status=SKIPPED, reason=f"not audio ({_one_line(exc)})",
                          seconds=time.perf_counter() - t0, **base), None

    base.update(input_codec=info.codec, input_kbps=info.bitrate_kbps, lossless=info.lossless,
                duration_s=info.duration_s)
    s = task.settings
    video_note: tuple[str, ...] = ()
    video = s.get("video", "keep")
    keep_video = bool(info.other_streams) and video == "keep"
    if info.other_streams:
        base["other_streams"] = info.other_streams
        if video == "skip":
            return FileRecord(status=SKIPPED, reason=f"has {info.other_streams} video/other stream(s) "
                              "(--video skip)", seconds=time.perf_counter() - t0, **base), None
        if not keep_video:
            video_note = (f"input has {info.other_streams} video/other stream(s): batch wrote its default audio "
                          "stream alone (--video audio; --video keep re-encodes it in place)",)
    lossy_kbps = info.bitrate_kbps if (not info.lossless and info.bitrate_kbps) else None

    def keep(reason: str, notes: tuple[str, ...] = ()) -> tuple[FileRecord, Path]:
        _check_dest(task, task.rel)
        tmp = _copy_into(src, work.file(src.name))
        return FileRecord(status=KEPT, output=task.rel, reason=reason, notes=notes, audio_bytes=_audio_bytes(tmp),
                          seconds=time.perf_counter() - t0, **base), tmp

    if lossy_kbps is not None:
        from ratecontrol.presets import load_preset

        ladder = load_preset(s["codec_ref"]).rungs_for(min(info.channels, 2))
        if ladder[0].nominal_kbps > lossy_kbps:
            return keep(f"lossy source ({info.codec}, ~{lossy_kbps:.0f} kbps) is already below the "
                        f"lowest {s['codec']} rung ({ladder[0].label}): copied unchanged")

    from ratecontrol.api import encode

    # before hours of work: is the output path ours to write? (--video keep: the input's
    # own name and container, its video and other streams copied)
    out_rel = task.rel if keep_video else task.out_rel
    _check_dest(task, out_rel)
    out = work.file(Path(out_rel).name)
    import warnings

    from ratecontrol.errors import RatecontrolWarning

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RatecontrolWarning)
            res = encode(src, out, target_mos=s["target_mos"], codec=s["codec_ref"],
                         scorer=_worker_scorer(task.scorer), pool=s["pool"], hop_s=s["hop_s"],
                         best_effort=s["best_effort"], overwrite=False, jobs=1, max_kbps=lossy_kbps,
                         sample_share=s["sample_share"], verify=s["verify"], cache=task.cache,
                         allow_partial=bool(s.get("allow_partial")),
                         # --video audio: the audio alone, under the planned name (preset's extension)
                         audio_only=not keep_video)
    except TargetNotReachable as exc:
        if lossy_kbps is None:
            raise
        best = max((p.pooled_mos for p in (exc.result.probes if exc.result else ())), default=math.nan)
        return keep(f"no {s['codec']} rung at or below the lossy source's ~{lossy_kbps:.0f} kbps reaches "
                    f"MOS {s['target_mos']:g} (best {best:.3f}): copied unchanged")
    search = res.search
    # warnings of this file (a partial decode with allow_partial) go into its record
    notes = tuple(search.notes) + video_note + tuple(f"warning: {w.message}" for w in caught
                                                     if issubclass(w.category, RatecontrolWarning))
    if info.has_cover_art and not _has_cover(out):
        notes += (f"cover art not kept: ffmpeg cannot store it in a {s['codec']} ({out.suffix}) output",)
    if lossy_kbps is not None and res.output_bytes >= res.input_bytes:
        out.unlink(missing_ok=True)
        return keep(f"the {res.rung_label} encode ({res.output_bytes} bytes) is not smaller than the lossy "
                    f"source ({res.input_bytes} bytes): copied unchanged", notes)
    _fsync(out)
    return FileRecord(
        status=ENCODED, output=out_rel, output_bytes=res.output_bytes,
        audio_bytes=_audio_bytes(out, res.audio_stream if keep_video else 0),
        audio_stream=res.audio_stream if keep_video else None,
        rung_label=res.rung_label, bitrate_kbps=res.bitrate_kbps,
        pooled_mos=_finite(res.pooled_mos), full_track_mos=_finite(getattr(res, "full_track_mos", None)),
        reached=bool(search.reached), n_probes=len(search.probes), notes=notes,
        seconds=time.perf_counter() - t0, **{**base, "duration_s": search.duration_s or base.get("duration_s")},
    ), out


# ---- driver side: put a finished file in place


def _place(res: _Result, task: _Task, record) -> FileRecord:
    """Move a worker's finished file onto its output path; ``record(rec)`` writes the
    manifest line, *before* the file appears under its final name (a kill between the
    two leaves a manifest line for a file not yet there, which the next run redoes;
    never a file of ours that the manifest does not know, which would be a conflict)."""
    rec = res.rec
    tmp = Path(res.tmp)
    try:
        problem, replacing = _dest_problem(task, rec.output)  # again: hours may have passed
        if problem:
            rec = replace(rec, status=CONFLICT, output=None, output_bytes=0, reason=problem)
            record(rec)
            return rec
        st = os.stat(tmp)
        notes = rec.notes + ((f"replaced {rec.output}, which batch had not written (--overwrite)",)
                             if replacing else ())
        rec = replace(rec, output_bytes=st.st_size, output_mtime_ns=st.st_mtime_ns, replaced=replacing,
                      notes=notes)
        record(rec)
        dst = Path(task.out_root) / rec.output
        try:
            _move_into_place(tmp, dst, may_replace=os.path.lexists(dst))
        except _Conflict as exc:
            rec = replace(rec, status=CONFLICT, output=None, output_bytes=0, output_mtime_ns=0,
                          replaced=False, notes=res.rec.notes, reason=str(exc))
            record(rec)
        except OSError as exc:
            rec = replace(rec, status=FAILED, output=None, output_bytes=0, output_mtime_ns=0,
                          replaced=False, notes=res.rec.notes, reason=_write_problem(dst, exc))
            record(rec)
        return rec
    finally:
        if res.work_dir:
            shutil.rmtree(res.work_dir, ignore_errors=True)


def _move_into_place(tmp: Path, dst: Path, may_replace: bool) -> None:
    """Rename ``tmp`` onto ``dst``; where nothing was there, never clobber a file that
    appeared meanwhile (a hard link fails if ``dst`` exists)."""
    if may_replace:
        os.replace(tmp, dst)
        return
    try:
        os.link(tmp, dst)
    except FileExistsError:
        raise _Conflict(f"{dst} appeared while the file was being encoded: not replaced; "
                        "move it away, or let batch replace it (overwrite)") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV, errno.ENOSYS):
            raise
        if os.path.lexists(dst):  # no hard links on this file system: check, then rename
            raise _Conflict(f"{dst} appeared while the file was being encoded: not replaced; "
                            "move it away, or let batch replace it (overwrite)") from None
        os.replace(tmp, dst)
        return
    os.unlink(tmp)


def _write_report(path: Path, text: str) -> Path:
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"report folder {folder} does not exist; create it first")
    try:
        return fsutil.atomic_write(path, text)
    except OSError as exc:
        raise OutputError(f"cannot write the report {path} ({exc.strerror}); choose another path") from None


# --------------------------------------------------------------------------- driver


def default_jobs() -> int:
    """Worker processes for the local backend: the CPUs this process may use.

    joblib's ``cpu_count`` honours CPU affinity and cgroup quotas (a container limited
    to 2 CPUs gets 2). One file per worker: the exact scorer is CPU bound (~0.13 s per
    1-s window on one core), so more workers than cores only adds switching.
    """
    import joblib

    return max(1, joblib.cpu_count())


def _finite(x) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _settings(target_mos, preset, codec, scorer_name, pool, hop_s, best_effort, sample_share, verify) -> dict:
    return {
        "target_mos": float(target_mos),
        "codec": preset.name,
        # what workers load: the packaged name, or the user's YAML path
        "codec_ref": str(preset.source_path) if (preset.source_path and not _is_packaged(codec)) else preset.name,
        "scorer": scorer_name,
        "pool": pool,
        "hop_s": float(hop_s),
        "best_effort": bool(best_effort),
        "sample_share": None if sample_share is None else float(sample_share),
        "verify": bool(verify),
    }


def _is_packaged(codec) -> bool:
    from ratecontrol.presets import preset_names

    return isinstance(codec, str) and codec in preset_names()


def _check_dirs(in_dir, out_dir) -> tuple[Path, Path, Path | None]:
    src = Path(in_dir)
    if not src.exists():
        raise InputNotFoundError(f"input folder not found: {src} (check the path)")
    if not src.is_dir():
        raise InputNotFoundError(f"input is a file, not a folder: {src} (use `ratecontrol encode` for one file)")
    dst = Path(out_dir)
    if dst.exists() and not dst.is_dir():
        raise OutputError(f"output {dst} exists and is not a folder; choose another OUT_DIR")
    rs, rd = src.resolve(), dst.resolve()
    if rs == rd or rs.is_relative_to(rd):
        raise OutputError(f"output folder {dst} contains the input folder {src}; choose an OUT_DIR outside it")
    try:
        dst.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {dst} ({exc.strerror}); choose another OUT_DIR") from None
    if not os.access(dst, os.W_OK):
        raise OutputError(f"output folder {dst} is not writable; choose another OUT_DIR")
    # absolute: Dask workers on other machines do not share this process's cwd
    return Path(os.path.abspath(src)), Path(os.path.abspath(dst)), (rd if rd.is_relative_to(rs) else None)


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
    *,
    target_mos: float,
    codec: str = "opus",
    scorer=None,
    pool: str = DEFAULT_POOL,
    hop_s: float = 1.0,
    best_effort: bool = False,
    jobs: int | None = None,
    backend: str = "local",
    scheduler=None,
    copy_other: bool = False,
    json_report: str | os.PathLike | None = None,
    csv_report: str | os.PathLike | None = None,
    progress: bool | None = None,
    resume: bool = True,
    sample_share: float | None = None,
    allow_partial: bool = False,
    video: str = "keep",
    verify: bool = True,
    cache: bool | str | os.PathLike | None = None,
    overwrite: bool = False,
) -> BatchReport:
    """Transcode every audio file under ``in_dir`` into a mirrored tree under ``out_dir``.

    Returns a BatchReport covering every file (including those a previous run finished,
    ``resumed=True``). A file that fails is recorded with a one-line reason; the run goes
    on (check ``report.ok``). Raises a RatecontrolError only for problems with the run
    itself (missing IN_DIR, unwritable OUT_DIR, OUT_DIR locked by another run, bad
    target/codec/scorer/pool, no Dask scheduler).

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
    summary counts them. allow_partial: encode what decodes
    of a truncated input (a warning in the record's notes) instead of failing it.
    sample_share, verify: as in
    ``ratecontrol.api.encode`` (long tracks are probed on a sample of their segments). cache:
    the probe cache, None for each machine's default folder, False for none, or a folder.
    """
    from ratecontrol.contract import check_target_mos
    from ratecontrol.presets import load_preset
    from ratecontrol.scoring.base import DEFAULT_SCORER, available_scorers

    t0 = time.perf_counter()
    t = check_target_mos(target_mos)
    pool = validate_pool(pool)
    if codec == "auto":
        raise UsageError("batch needs one codec (output names and the lossy-source rule depend on it); "
                         "pick one", options={"codec": "opus"})
    preset = load_preset(codec)
    from ratecontrol import media

    media.require_encoder(preset)
    if cache is not None and not isinstance(cache, bool):
        cache = str(cache)
    if scorer is None or isinstance(scorer, str):
        scorer_name = scorer or DEFAULT_SCORER
        if scorer_name not in available_scorers():
            raise UsageError(f"unknown scorer {scorer_name!r}; use one of {available_scorers()}")
    else:
        scorer_name = getattr(scorer, "name", type(scorer).__name__)
    if jobs is not None and int(jobs) < 1:
        raise UsageError(f"jobs must be >= 1, got {jobs}")
    if backend not in ("local", "dask"):
        raise UsageError(f"unknown backend {backend!r}; use 'local' or 'dask'")
    src, dst, prune = _check_dirs(in_dir, out_dir)
    for rp in (json_report, csv_report):  # fail now, not after hours of encoding
        folder = Path(rp).parent if rp else None
        if folder is not None and str(folder) and not folder.is_dir():
            raise OutputError(f"report folder {folder} does not exist; create it first")
    settings = _settings(t, preset, codec, scorer_name, pool, hop_s, best_effort, sample_share, verify)
    if allow_partial:  # only when set: manifests written without it stay valid
        settings["allow_partial"] = True
    if video not in ("keep", "audio", "skip"):
        raise UsageError(f"video must be 'keep', 'audio' or 'skip', got {video!r}")
    settings["video"] = video  # compared only for files with video (_same_settings)
    with _OutDirLock(dst):
        report = _run(src, dst, prune, settings, preset, t, scorer, scorer_name, pool, backend, scheduler,
                      jobs, copy_other, cache, resume, overwrite, progress, t0, json_report, csv_report)
    if json_report:
        report.write_json(json_report)
    if csv_report:
        report.write_csv(csv_report)
    return report


def _run(src, dst, prune, settings, preset, t, scorer, scorer_name, pool, backend, scheduler, jobs,
         copy_other, cache, resume, overwrite, progress, t0, json_report, csv_report) -> BatchReport:
    """The run itself, with OUT_DIR locked."""
    manifest_path = dst / MANIFEST_NAME
    prior, owned = _read_manifest(manifest_path)
    if not resume:
        prior = {}
    if prune is not None:
        ours = {Path(os.path.abspath(r)) for r in (json_report, csv_report) if r}
        foreign = _foreign_files(dst, owned, ours)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise OutputError(
                f"output folder {dst} is inside the input folder and already holds {len(foreign)} "
                f"file(s) batch did not write ({shown}); batch never reads its own output folder, so "
                "they would not be transcoded and could be overwritten: choose an empty OUT_DIR or "
                "one outside IN_DIR (overwrite does not change this)")

    input_ids: dict = {}
    rels = _walk(src, prune, input_ids)
    planned, collisions = _plan_names(rels, preset.extension)
    coll_note = {c.input: f"{c.wanted} is taken by {c.taken_by}: wrote {c.output}" for c in collisions}
    _clean_stale_temps(dst, list(planned.values()) + rels)
    driver_pid = os.getpid() if backend == "local" else None
    scorer_arg = scorer if not (scorer is None or isinstance(scorer, str)) else scorer_name
    tasks = []
    for rel in rels:
        cands = {planned[rel], rel}
        tasks.append(_Task(
            rel=rel, in_path=str(src / rel), out_root=str(dst), out_rel=planned[rel],
            collision=coll_note.get(rel, ""), settings=settings, scorer=scorer_arg,
            copy_other=copy_other, cache=cache, prior=prior.get(rel),
            owned={c: frozenset(owned[c]) for c in cands if c in owned},
            protected=_protected(dst, cands, input_ids), overwrite=bool(overwrite), driver_pid=driver_pid))
    by_rel = {tk.rel: tk for tk in tasks}

    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    results: dict[str, FileRecord] = {}
    manifest = _Manifest(manifest_path, fresh=not resume)
    bar = tqdm(total=len(tasks), unit="file", desc="batch", disable=None if progress is None else not progress,
               file=sys.stderr, dynamic_ncols=True)
    in_b = out_b = failed = 0
    n_jobs = 1
    gen = None
    clean_exit = False
    try:
        with _stop_on_signals(), _Backend(backend, scheduler, jobs, len(tasks)) as n_jobs:
            par = Parallel(return_as="generator_unordered", batch_size=1)
            gen = par(delayed(_run_task)(tk) for tk in tasks)
            for res in gen:
                rec = res.rec
                if res.tmp is not None:
                    rec = _place(res, by_rel[rec.input], lambda r: manifest.append(r, settings))
                elif not rec.resumed:
                    manifest.append(rec, settings)
                if rec.collision and rec.status != ENCODED:
                    rec = replace(rec, collision="")  # nothing was written under the planned name
                results[rec.input] = rec
                if rec.status in (ENCODED, KEPT):
                    in_b += rec.input_bytes
                    out_b += rec.output_bytes
                failed += rec.status in (FAILED, CONFLICT)
                bar.set_postfix_str(
                    f"saved {_mb(in_b - out_b)} ({100 * (1 - out_b / in_b) if in_b else 0:.0f}%)"
                    + (f", {failed} failed" if failed else ""), refresh=False)
                bar.update(1)
        clean_exit = True
    finally:
        bar.close()
        manifest.close()
        if not clean_exit:
            # interrupted (SIGTERM, Ctrl-C, an error): no worker may go on writing
            if gen is not None:
                with contextlib.suppress(BaseException):
                    gen.close()  # joblib aborts: kills the loky workers
            if backend == "local":
                _kill_local_workers()
            with contextlib.suppress(Exception):
                _clean_stale_temps(dst, list(planned.values()) + rels)

    return BatchReport(
        in_dir=str(src), out_dir=str(dst), codec=preset.name, target_mos=t, scorer=scorer_name, pool=pool,
        backend=backend, jobs=n_jobs, records=tuple(results[r] for r in rels),
        collisions=tuple(c for c in collisions if results[c.input].status == ENCODED),
        seconds=time.perf_counter() - t0, manifest_path=str(manifest_path),
    )


def _protected(dst: Path, cands: set[str], input_ids: dict) -> dict[str, str]:
    """Candidate outputs that are (resolve to) input files of this run."""
    out = {}
    for c in cands:
        try:
            st = os.stat(dst / c)
        except OSError:
            continue
        rel = input_ids.get((st.st_dev, st.st_ino))
        if rel is not None:
            out[c] = (f"{dst / c} is the input file {rel} (a link or shared folder): never replaced, "
                      "not even with overwrite; choose another OUT_DIR")
    return out


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




def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if abs(n) >= 1e5 else f"{n / 1e3:.0f} kB"


def _num(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _fmt_s(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{int(s // 60)} min {s % 60:.0f} s"
