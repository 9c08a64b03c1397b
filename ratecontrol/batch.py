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

Resume: ``OUT_DIR/.ratecontrol-manifest.jsonl`` gets one JSON line per finished file
(input size, mtime, SHA-256; output, its size; rung, score, status; the settings), written
by the driver process as results come in, flushed and fsynced. A rerun with the same
settings skips a file whose input is unchanged and whose output still has the recorded
size and probes as audio; anything else (failed, changed, missing or damaged output)
is done again. Outputs are written to a temp file and renamed (media layer), so a killed
run never leaves a truncated file under a final name; the temp files a killed ffmpeg
leaves behind (``.<name>.*.part``) are removed at the start of the next run.

Parallelism: one task per file through joblib (``loky`` processes locally, or joblib's
``dask`` backend on a ``distributed`` cluster: the same code path). Inside a worker the
scorer runs with one job (file-level parallelism keeps every core busy without nested
pools), and is created once per worker process and reused for every file it gets.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import click

from ratecontrol.errors import (
    InputError,
    InputNotFoundError,
    OutputError,
    RatecontrolError,
    TargetNotReachable,
    UsageError,
)
from ratecontrol.results import jsonable
from ratecontrol.scoring.pooling import DEFAULT_POOL, POOL_HELP, validate_pool

__all__ = [
    "transcode_folder",
    "BatchReport",
    "FileRecord",
    "Collision",
    "MANIFEST_NAME",
    "AUDIO_EXTENSIONS",
    "batch_command",
]

#: the resume manifest, at the top of OUT_DIR
MANIFEST_NAME = ".ratecontrol-manifest.jsonl"
#: manifest/record format version (bump when fields change meaning)
MANIFEST_VERSION = 1

#: extensions that promise audio: such a file that ffmpeg cannot read is a *failure*
#: (corrupt or truncated), not a non-audio file to skip
AUDIO_EXTENSIONS = frozenset(
    ".flac .wav .wave .w64 .aif .aiff .aifc .caf .au .snd .mp3 .mp2 .mpa .m4a .m4b .aac "
    ".adts .ogg .oga .opus .spx .wma .wv .ape .tta .tak .alac .mka .ac3 .eac3 .dts .amr "
    ".dsf .dff .mpc".split()
)

#: statuses of a finished file
ENCODED, KEPT, COPIED, SKIPPED, FAILED = "encoded", "kept", "copied", "skipped", "failed"
_DONE = (ENCODED, KEPT, COPIED, SKIPPED)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class FileRecord:
    """What happened to one input file (also one line of the manifest)."""

    #: path relative to IN_DIR, '/'-separated
    input: str
    #: encoded | kept (lossy source copied unchanged) | copied (non-audio, --copy-other)
    #: | skipped (not audio) | failed
    status: str
    #: path relative to OUT_DIR, None when nothing was written
    output: str | None = None
    #: one line: why it failed / was kept / was skipped
    reason: str = ""
    input_bytes: int = 0
    output_bytes: int = 0
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

    @property
    def ok(self) -> bool:
        return self.status != FAILED

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
    def n_resumed(self) -> int:
        return sum(r.resumed for r in self.records)

    @property
    def failures(self) -> tuple[FileRecord, ...]:
        return tuple(self._with(FAILED))

    @property
    def ok(self) -> bool:
        return self.n_failed == 0

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
        """Duration-weighted mean measured bitrate of the audio outputs (encoded + kept)."""
        recs = [r for r in self._with(ENCODED, KEPT) if r.duration_s]
        dur = sum(r.duration_s for r in recs)
        return sum(r.output_bytes for r in recs) * 8 / 1000 / dur if dur else math.nan

    def _scores(self) -> list[float]:
        return [r.final_mos for r in self._with(ENCODED)
                if r.final_mos is not None and not math.isnan(r.final_mos)]

    def summary(self) -> dict[str, Any]:
        return jsonable({
            "files": self.n_files, "encoded": self.n_encoded, "kept": self.n_kept,
            "copied": self.n_copied, "skipped": self.n_skipped, "failed": self.n_failed,
            "resumed": self.n_resumed, "input_bytes": self.input_bytes,
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
        resumed = f"; {self.n_resumed} already done (manifest)" if self.n_resumed else ""
        lines = [f"{self.n_files} files in {_fmt_s(self.seconds)}: {', '.join(parts)}{resumed}"]
        if self.input_bytes:
            lines.append(
                f"audio: {_mb(self.input_bytes)} -> {_mb(self.output_bytes)} "
                f"(saved {100 * self.saving_fraction:.1f}%), mean {_num(self.mean_kbps, '.1f')} kbps; "
                f"{self.pool} MOS mean {_num(self.mean_mos)}, lowest {_num(self.min_mos)} "
                f"(target {self.target_mos:g}, {self.codec}, {self.scorer})"
            )
        for r in self.failures:
            lines.append(f"failed: {r.input}: {r.reason}")
        for c in self.collisions:
            lines.append(f"renamed: {c.input} -> {c.output} ({c.wanted} is taken by {c.taken_by})")
        return lines

    def write_json(self, path: str | os.PathLike) -> Path:
        return _atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    def write_csv(self, path: str | os.PathLike) -> Path:
        cols = [f.name for f in fields(FileRecord)] + ["output_kbps"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in self.records:
            row = r.to_dict()
            row["notes"] = " | ".join(r.notes)
            row["output_kbps"] = r.output_kbps
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})
        return _atomic_write_text(Path(path), buf.getvalue())


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


def _walk(in_dir: Path, prune: Path | None) -> list[str]:
    """Relative '/'-paths of every file under ``in_dir``, sorted per folder, folders first-come."""
    out: list[str] = []
    for root, dirs, files in os.walk(in_dir):
        rootp = Path(root)
        dirs[:] = sorted(d for d in dirs if prune is None or (rootp / d).resolve() != prune)
        for name in sorted(files):
            p = rootp / name
            if p.is_file():  # a dangling symlink is not a file
                out.append(p.relative_to(in_dir).as_posix())
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


def _load_manifest(path: Path) -> dict[str, dict]:
    """Last record per input; a line cut short by a kill is ignored."""
    last: dict[str, dict] = {}
    if not path.is_file():
        return last
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if isinstance(d, dict) and isinstance(d.get("input"), str):
                last[d["input"]] = d
    return last


class _Manifest:
    """Append-only JSON lines, one fsync per record so a kill loses at most the line being written."""

    def __init__(self, path: Path, fresh: bool):
        self.path = path
        if fresh and path.exists():
            path.unlink()
        self.fh = open(path, "a+b")
        self.fh.seek(0, os.SEEK_END)
        if self.fh.tell() > 0:
            self.fh.seek(-1, os.SEEK_END)
            if self.fh.read(1) != b"\n":  # the previous run died mid-line
                self.fh.write(b"\n")
        self.fh.seek(0, os.SEEK_END)

    def append(self, rec: FileRecord, settings: dict) -> None:
        d = rec.to_dict()
        d.pop("resumed", None)
        d["settings"] = settings
        d["finished_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        d["manifest_version"] = MANIFEST_VERSION
        self.fh.write((json.dumps(d, allow_nan=False) + "\n").encode("utf-8"))
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


def _clean_stale_temps(out_root: Path, planned_outputs: Iterable[str]) -> int:
    """Remove temp files a killed run left next to planned outputs; returns how many."""
    n = 0
    folders: dict[Path, set[str]] = {}
    for rel in planned_outputs:
        p = out_root / rel
        folders.setdefault(p.parent, set()).add(p.name)
    for folder, names in folders.items():
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            nm = entry.name
            stale = nm.startswith(".ffmeta.") and nm.endswith(".txt")
            if nm.startswith(".") and nm.endswith(".part"):
                stale = stale or any(nm.startswith(f".{n}.") for n in names)
            # encode()'s own intermediate (``.NAME.rc-tmp.EXT``, renamed to NAME once
            # checked) and media's temp file for it (``..NAME.rc-tmp.EXT.*.part``): a
            # kill during a final encode leaves these
            stale = stale or any(nm.startswith((f".{n}.rc-tmp", f"..{n}.rc-tmp")) for n in names)
            if stale and entry.is_file():
                entry.unlink(missing_ok=True)
                n += 1
    return n


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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else type(exc).__name__
    if not isinstance(exc, RatecontrolError):
        msg = f"internal error: {type(exc).__name__}: {msg}"
    return msg


def _atomic_copy(src: Path, dst: Path) -> int:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        shutil.copystat(src, tmp)
        os.replace(tmp, dst)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dst.stat().st_size


def _atomic_write_text(path: Path, text: str) -> Path:
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"report folder {folder} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def _still_done(task: _Task, prior: dict, st: os.stat_result) -> FileRecord | None:
    """The prior record if it still holds for this run (input unchanged, output intact)."""
    from ratecontrol import media

    status = prior.get("status")
    if status not in _DONE or prior.get("input_bytes") != st.st_size:
        return None
    if status == SKIPPED and task.copy_other:
        return None  # now asked to copy it
    if status in (ENCODED, KEPT) and prior.get("settings") != task.settings:
        return None
    rec = FileRecord.from_dict(prior)
    if status == ENCODED and rec.output != task.out_rel:
        return None  # the tree changed and this input's planned name with it
    if prior.get("input_mtime_ns") != st.st_mtime_ns and _sha256(Path(task.in_path)) != prior.get("input_sha256"):
        return None
    if rec.output:
        out = Path(task.out_root) / rec.output
        try:
            if out.stat().st_size != rec.output_bytes:
                return None
        except OSError:
            return None
        if status in (ENCODED, KEPT):
            try:
                if not (media.probe(out).duration_s or 0) > 0:
                    return None
            except RatecontrolError:
                return None
    return replace(rec, resumed=True)


def _has_cover(path: Path) -> bool:
    from ratecontrol import media

    try:
        return media.probe(path).has_cover_art
    except RatecontrolError:
        return False


def _run_task(task: _Task) -> FileRecord:
    """Process one input file; never raises for a file problem (it becomes a failed record)."""
    t0 = time.perf_counter()
    src = Path(task.in_path)
    base = {"input": task.rel, "collision": task.collision}
    try:
        st = src.stat()
        base.update(input_bytes=st.st_size, input_mtime_ns=st.st_mtime_ns)
        if task.prior is not None:
            done = _still_done(task, task.prior, st)
            if done is not None:
                return done
        base["input_sha256"] = _sha256(src)
        return _process(task, src, base, t0)
    except Exception as exc:  # one bad file must not stop a library run
        return FileRecord(status=FAILED, reason=_one_line(exc), seconds=time.perf_counter() - t0, **base)


def _process(task: _Task, src: Path, base: dict, t0: float) -> FileRecord:
    from ratecontrol import media

    out_root = Path(task.out_root)
    try:
        info = media.probe(src)
    except InputError as exc:
        # ._name files are macOS AppleDouble metadata that copy along with the real file
        if src.suffix.lower() in AUDIO_EXTENSIONS and not src.name.startswith("._"):
            return FileRecord(status=FAILED, reason=_one_line(exc), seconds=time.perf_counter() - t0, **base)
        if task.copy_other:
            size = _atomic_copy(src, out_root / task.rel)
            return FileRecord(status=COPIED, output=task.rel, output_bytes=size,
                              reason="not audio: copied unchanged", seconds=time.perf_counter() - t0, **base)
        return FileRecord(status=SKIPPED, reason=f"not audio ({_one_line(exc)})",
                          seconds=time.perf_counter() - t0, **base)

    base.update(input_codec=info.codec, input_kbps=info.bitrate_kbps, lossless=info.lossless,
                duration_s=info.duration_s)
    s = task.settings
    lossy_kbps = info.bitrate_kbps if (not info.lossless and info.bitrate_kbps) else None

    def keep(reason: str, notes: tuple[str, ...] = ()) -> FileRecord:
        size = _atomic_copy(src, out_root / task.rel)
        return FileRecord(status=KEPT, output=task.rel, output_bytes=size, reason=reason, notes=notes,
                          seconds=time.perf_counter() - t0, **base)

    if lossy_kbps is not None:
        from ratecontrol.presets import load_preset

        ladder = load_preset(s["codec_ref"]).rungs_for(min(info.channels, 2))
        if ladder[0].nominal_kbps > lossy_kbps:
            return keep(f"lossy source ({info.codec}, ~{lossy_kbps:.0f} kbps) is already below the "
                        f"lowest {s['codec']} rung ({ladder[0].label}): copied unchanged")

    from ratecontrol.api import encode

    out = out_root / task.out_rel
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        res = encode(src, out, target_mos=s["target_mos"], codec=s["codec_ref"],
                     scorer=_worker_scorer(task.scorer), pool=s["pool"], hop_s=s["hop_s"],
                     best_effort=s["best_effort"], overwrite=True, jobs=1, max_kbps=lossy_kbps,
                     sample_share=s["sample_share"], verify=s["verify"], cache=task.cache)
    except TargetNotReachable as exc:
        if lossy_kbps is None:
            raise
        best = max((p.pooled_mos for p in (exc.result.probes if exc.result else ())), default=math.nan)
        return keep(f"no {s['codec']} rung at or below the lossy source's ~{lossy_kbps:.0f} kbps reaches "
                    f"MOS {s['target_mos']:g} (best {best:.3f}): copied unchanged")
    search = res.search
    notes = tuple(search.notes)
    if info.has_cover_art and not _has_cover(out):
        notes += (f"cover art not kept: ffmpeg cannot store it in a {s['codec']} ({out.suffix}) output",)
    if lossy_kbps is not None and res.output_bytes >= res.input_bytes:
        out.unlink(missing_ok=True)
        return keep(f"the {res.rung_label} encode ({res.output_bytes} bytes) is not smaller than the lossy "
                    f"source ({res.input_bytes} bytes): copied unchanged", notes)
    return FileRecord(
        status=ENCODED, output=task.out_rel, output_bytes=res.output_bytes,
        rung_label=res.rung_label, bitrate_kbps=res.bitrate_kbps,
        pooled_mos=_finite(res.pooled_mos), full_track_mos=_finite(getattr(res, "full_track_mos", None)),
        reached=bool(search.reached), n_probes=len(search.probes), notes=notes,
        seconds=time.perf_counter() - t0, **{**base, "duration_s": search.duration_s or base.get("duration_s")},
    )


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
                raise UsageError("--scheduler only applies to --backend dask")
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
    progress: bool = True,
    resume: bool = True,
    sample_share: float | None = None,
    verify: bool = True,
    cache: bool | str | os.PathLike | None = None,
) -> BatchReport:
    """Transcode every audio file under ``in_dir`` into a mirrored tree under ``out_dir``.

    Returns a BatchReport covering every file (including those a previous run finished,
    ``resumed=True``). A file that fails is recorded with a one-line reason; the run goes
    on (check ``report.ok``). Raises a RatecontrolError only for problems with the run
    itself (missing IN_DIR, unwritable OUT_DIR, bad target/codec/scorer/pool, no Dask
    scheduler).

    jobs: worker processes (local; default: usable CPUs) or at most this many tasks at
    once (dask; default: every worker thread). backend: "local" (joblib/loky) or "dask"
    (joblib's dask backend); scheduler: a ``dask.distributed`` address
    ("tcp://host:8786"), a ``distributed.Client``, or None for a LocalCluster.
    IN_DIR and OUT_DIR must be visible at the same paths on every Dask worker.
    resume=False ignores (and restarts) the manifest. sample_share, verify: as in
    ``ratecontrol.api.encode`` (long tracks are probed on a sample of their segments). cache:
    the probe cache, None for each machine's default folder, False for none, or a folder.
    """
    from ratecontrol.api import MOS_MAX, MOS_MIN
    from ratecontrol.presets import load_preset
    from ratecontrol.scoring.base import DEFAULT_SCORER, available_scorers

    t0 = time.perf_counter()
    t = float(target_mos)
    if not (MOS_MIN <= t <= MOS_MAX):
        raise UsageError(f"target MOS {target_mos} is outside [{MOS_MIN:g}, {MOS_MAX:g}]; ViSQOL MOS-LQO tops out at ~4.73")
    pool = validate_pool(pool)
    if codec == "auto":
        raise UsageError("batch needs one codec (output names and the lossy-source rule depend on it); "
                         "pick one, e.g. --codec opus")
    preset = load_preset(codec)
    preset.check_available()
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

    rels = _walk(src, prune)
    planned, collisions = _plan_names(rels, preset.extension)
    coll_note = {c.input: f"{c.wanted} is taken by {c.taken_by}: wrote {c.output}" for c in collisions}
    manifest_path = dst / MANIFEST_NAME
    prior = _load_manifest(manifest_path) if resume else {}
    _clean_stale_temps(dst, list(planned.values()) + rels)
    tasks = [
        _Task(rel=rel, in_path=str(src / rel), out_root=str(dst), out_rel=planned[rel],
              collision=coll_note.get(rel, ""), settings=settings,
              scorer=scorer if not (scorer is None or isinstance(scorer, str)) else scorer_name,
              copy_other=copy_other, cache=cache, prior=prior.get(rel))
        for rel in rels
    ]

    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    results: dict[str, FileRecord] = {}
    manifest = _Manifest(manifest_path, fresh=not resume)
    bar = tqdm(total=len(tasks), unit="file", desc="batch", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    in_b = out_b = failed = 0
    try:
        with _Backend(backend, scheduler, jobs, len(tasks)) as n_jobs:
            par = Parallel(return_as="generator_unordered", batch_size=1)
            for rec in par(delayed(_run_task)(tk) for tk in tasks):
                if rec.collision and rec.status != ENCODED:
                    rec = replace(rec, collision="")  # nothing was written under the planned name
                results[rec.input] = rec
                if not rec.resumed:
                    manifest.append(rec, settings)
                if rec.status in (ENCODED, KEPT):
                    in_b += rec.input_bytes
                    out_b += rec.output_bytes
                failed += rec.status == FAILED
                bar.set_postfix_str(
                    f"saved {_mb(in_b - out_b)} ({100 * (1 - out_b / in_b) if in_b else 0:.0f}%)"
                    + (f", {failed} failed" if failed else ""), refresh=False)
                bar.update(1)
    finally:
        bar.close()
        manifest.close()

    report = BatchReport(
        in_dir=str(src), out_dir=str(dst), codec=preset.name, target_mos=t, scorer=scorer_name, pool=pool,
        backend=backend, jobs=n_jobs, records=tuple(results[r] for r in rels),
        collisions=tuple(c for c in collisions if results[c.input].status == ENCODED),
        seconds=time.perf_counter() - t0, manifest_path=str(manifest_path),
    )
    if json_report:
        report.write_json(json_report)
    if csv_report:
        report.write_csv(csv_report)
    return report


# --------------------------------------------------------------------------- helpers




def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if abs(n) >= 1e5 else f"{n / 1e3:.0f} kB"


def _num(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _fmt_s(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{int(s // 60)} min {s % 60:.0f} s"


# --------------------------------------------------------------------------- CLI


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("in_dir", type=click.Path(path_type=str))
@click.argument("out_dir", type=click.Path(path_type=str))
@click.option("--target-mos", type=float, required=True, help="Quality target on the ViSQOL MOS scale (1..5; identity ~4.73).")
@click.option("--codec", default="opus", show_default=True, help="Preset name (see `ratecontrol presets`) or a preset YAML file.")
@click.option("-j", "--jobs", type=int, default=None,
              help="Files at once (local: worker processes, default = usable CPUs; dask: cap on tasks in flight).")
@click.option("--backend", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="local: joblib/loky processes; dask: a dask.distributed cluster (--scheduler).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Dask scheduler address, e.g. tcp://10.0.0.5:8786 (default with --backend dask: a local cluster).")
@click.option("--scorer", default=None, help="Scoring backend: visqol (exact) or learned (fast).")
@click.option("--pool", default=DEFAULT_POOL, show_default=True, help=f"Pooling of window scores: {POOL_HELP}.")
@click.option("--best-effort", is_flag=True, help="When even the top rung misses the target, encode at the top rung anyway.")
@click.option("--copy-other", is_flag=True, help="Copy files that are not audio (cover.jpg, .cue, ...) into OUT_DIR too.")
@click.option("--json-report", type=click.Path(path_type=str), default=None, help="Write the full report as JSON here.")
@click.option("--csv-report", type=click.Path(path_type=str), default=None, help="Write one CSV row per file here.")
@click.option("--sample-share", type=float, default=None,
              help="Share of a long track (>= 30 s) the probes score, in evenly spread segments "
                   "[default: 0.2, at most 180 s].")
@click.option("--full", is_flag=True, help="Probe whole tracks, never a sample.")
@click.option("--no-cache", is_flag=True, help="Do not read or write the probe cache.")
@click.option("--cache-dir", type=click.Path(path_type=str), default=None,
              help="Probe cache folder [default: $RATECONTROL_CACHE_DIR or ~/.cache/ratecontrol on each machine].")
@click.option("--no-resume", is_flag=True, help="Ignore the manifest in OUT_DIR and redo every file.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def batch_command(in_dir, out_dir, target_mos, codec, jobs, backend, scheduler, scorer, pool, best_effort,
                  copy_other, json_report, csv_report, sample_share, full, no_cache, cache_dir, no_resume, no_progress):
    """Transcode every audio file under IN_DIR into a mirrored tree under OUT_DIR.

    Resumable: rerun the same command after an interruption and finished files are
    skipped (manifest: OUT_DIR/.ratecontrol-manifest.jsonl). Exit status 1 when any
    file failed (listed at the end and in the reports).
    """
    report = transcode_folder(
        in_dir, out_dir, target_mos=target_mos, codec=codec, scorer=scorer, pool=pool,
        best_effort=best_effort, jobs=jobs, backend=backend, scheduler=scheduler, copy_other=copy_other,
        json_report=json_report, csv_report=csv_report, progress=not no_progress, resume=not no_resume,
        sample_share=1.0 if full else sample_share, cache=False if no_cache else cache_dir,
    )
    for line in report.summary_lines():
        click.echo(line)
    if not report.ok:
        raise SystemExit(1)
