"""Results of a batch run: one FileRecord per input, the BatchReport over all of them, and
their JSON/CSV/human forms (the manifest's lines are FileRecords too)."""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ratecontrol import fsutil
from ratecontrol.errors import OutputError, RatecontrolError
from ratecontrol.results import jsonable


#: statuses of a finished file
ENCODED, KEPT, COPIED, SKIPPED, FAILED = "encoded", "kept", "copied", "skipped", "failed"
#: an output path held a file batch did not write (or that changed since): not replaced
CONFLICT = "conflict"
DONE = (ENCODED, KEPT, COPIED, SKIPPED)
#: statuses that wrote a file under ``output``
WROTE = (ENCODED, KEPT, COPIED)
#: how the reason of a ``skipped`` entry the walk does not read starts (a FIFO, a link
#: to a device or a folder, a dangling link, a folder that cannot be listed:
#: ``_plan._scan``); the summary lists each of them
_NOT_READ = ("not a regular file", "cannot list this folder")


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
    #: one line: why it failed / was kept / was skipped, in the library's words (ends
    #: with ``options`` as ``name=value``, as RatecontrolError.message writes them)
    reason: str = ""
    #: the options that would change the outcome (``{"allow_partial": True}`` for a
    #: truncated input, ``{"overwrite": True}`` for a conflict); ``reason_as`` respells them
    options: dict = field(default_factory=dict)
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
    #: every audio stream re-encoded in place (all_audio_streams), each searched on its
    #: own; the record's rung and scores are ``audio_stream``'s, the notes give each one's
    encoded_streams: tuple[int, ...] = ()
    #: audio streams of the input (all_audio_streams only changes files with more than one)
    input_audio_streams: int = 1

    def reason_as(self, spell=None) -> str:
        """``reason`` with its options spelt by ``spell(name, value)`` (the CLI's flags)."""
        suffix = RatecontrolError.options_text(self.options)
        if spell is None or not suffix or not self.reason.endswith(suffix):
            return self.reason
        return self.reason[: -len(suffix)] + RatecontrolError.options_text(self.options, spell)

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
        kw["encoded_streams"] = tuple(kw.get("encoded_streams") or ())
        kw["options"] = dict(kw.get("options") or {})
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

    def summary_lines(self, spell=None) -> list[str]:
        """Human summary: totals, sizes and scores, then every failure and rename.

        ``spell(name, value)`` writes an option (default: the library's ``name=value``;
        the CLI passes its flags)."""
        spell = spell or (lambda name, value: f"{name}={value!r}")
        parts = [f"{self.n_encoded} encoded"]
        if self.n_kept:
            parts.append(f"{self.n_kept} kept (lossy source)")
        if self.n_copied:
            parts.append(f"{self.n_copied} copied")
        not_read = [r for r in self._with(SKIPPED) if r.reason.startswith(_NOT_READ)]
        if self.n_skipped and not not_read:
            parts.append(f"{self.n_skipped} skipped (not audio)")
        elif self.n_skipped:
            other = self.n_skipped - len(not_read)
            parts.append(f"{self.n_skipped} skipped ({f'{other} not audio, ' if other else ''}"
                         f"{len(not_read)} not regular files or folder links, not read)")
        parts.append(f"{self.n_failed} failed")
        if self.n_conflicts:
            parts.append(f"{self.n_conflicts} conflicts (output path taken, not replaced)")
        resumed = f"; {self.n_resumed} already done (manifest)" if self.n_resumed else ""
        lines = [f"{self.n_files} files in {_fmt_s(self.seconds)}: {', '.join(parts)}{resumed}"]
        if self.input_bytes:
            lines.append(
                f"audio: {size_text(self.input_bytes)} -> {size_text(self.output_bytes)} "
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
            what += [f"{alone} written as their audio alone ({spell('video', 'audio')})"] if alone else []
            what += [f"{skipped} skipped ({spell('video', 'skip')})"] if skipped else []
            other = len(videos) - kept - alone - skipped
            what += [f"{other} kept, failed or in conflict"] if other else []
            lines.append(f"video files: {len(videos)}: {', '.join(what)} (sizes above are whole files)")
        for r in self.failures:
            lines.append(f"failed: {r.input}: {r.reason_as(spell)}")
        for r in not_read:
            lines.append(f"skipped: {r.input}: {r.reason_as(spell)}")
        for r in self.conflicts:
            lines.append(f"conflict: {r.input}: {r.reason_as(spell)}")
        for r in self.records:
            if r.replaced:
                lines.append(f"replaced: {r.output} (existed, not written by batch; {spell('overwrite', True)})")
        for c in self.collisions:
            lines.append(f"renamed: {c.input} -> {c.output} ({c.wanted} is taken by {c.taken_by})")
        return lines

    def write_json(self, path: "str | os.PathLike | fsutil.Destination") -> Path:
        return _write_report(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    def write_csv(self, path: "str | os.PathLike | fsutil.Destination") -> Path:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=_csv_columns(), lineterminator="\n")
        w.writeheader()
        for r in self.records:
            row = r.to_dict()
            row["notes"] = " | ".join(r.notes)
            row["options"] = json.dumps(r.options) if r.options else ""
            row["encoded_streams"] = " ".join(str(n) for n in r.encoded_streams)
            row["output_kbps"] = r.output_kbps
            row["audio_kbps"] = r.audio_kbps
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})
        return _write_report(path, buf.getvalue())


def _csv_columns() -> list[str]:
    return [f.name for f in fields(FileRecord)] + ["output_kbps", "audio_kbps"]


def _write_report(path, text: str) -> Path:
    """``path`` a Destination (``claim_reports``, before the run): under the publish rule."""
    path = path if isinstance(path, fsutil.Destination) else Path(path)
    folder = Path(path).parent if str(Path(path).parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"report folder {folder} does not exist; create it first")
    try:
        return fsutil.atomic_write(path, text)
    except OSError as exc:
        raise OutputError(f"cannot write the report {path} ({exc.strerror}); choose another path") from None


def _is_batch_report(path: Path, kind: str) -> bool:
    """A file a batch run wrote as its ``kind`` report ("json"/"csv"), known by its
    content: a rerun of the same command may replace it without ``overwrite``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return False
    text = head.decode("utf-8", "replace")
    if kind == "csv":
        return text.split("\n", 1)[0] == ",".join(_csv_columns())
    return text.startswith('{\n  "in_dir": ') and '"manifest_path": ' in text


def claim_reports(json_report, csv_report, in_dir: Path, input_ids: dict, out_dir: Path, out_rels,
                  overwrite: bool) -> dict[str, fsutil.Destination]:
    """batch's --json-report / --csv-report under the publish rule, before any work:
    never an input of the run (``input_ids``: (st_dev, st_ino) -> the input's path
    relative to ``in_dir``), never one of its outputs (``out_rels``: paths relative to
    ``out_dir``, the manifest and lock included) or the other report; an existing file
    only with ``overwrite``, or when it is a report batch wrote (a rerun of the same
    command). Looked up by identity and name, so a tree of any size costs nothing."""
    claimed: dict[str, fsutil.Destination] = {}
    out_root, rels = out_dir.resolve(), set(out_rels)
    for kind, rp in (("json", json_report), ("csv", csv_report)):
        if not rp:
            continue
        p = Path(rp)
        inputs, outputs = [], list(claimed.values())
        try:
            st = os.stat(p)
            if (st.st_dev, st.st_ino) in input_ids:
                inputs.append(in_dir / input_ids[(st.st_dev, st.st_ino)])
        except OSError:
            pass
        res = p.resolve()
        if res.is_relative_to(out_root) and res.relative_to(out_root).as_posix() in rels:
            outputs.append(res)
        ours = p.is_file() and not p.is_symlink() and _is_batch_report(p, kind)
        claimed[kind] = fsutil.claim_output(p, overwrite=overwrite or ours, inputs=inputs, outputs=outputs,
                                            what=f"{kind.upper()} report")
    return claimed


# --------------------------------------------------------------------------- driver


def finite(x) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def size_text(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if abs(n) >= 1e5 else f"{n / 1e3:.0f} kB"


def _num(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _fmt_s(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{int(s // 60)} min {s % 60:.0f} s"
