"""What batch knows about OUT_DIR: the resume manifest (append-only JSON lines), the
run lock, and the cleanup of temp files dead runs left."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from ratecontrol import fsutil
from ratecontrol.errors import (
    OutputError,
)
from ratecontrol.batch._records import WROTE, FileRecord


#: the resume manifest, at the top of OUT_DIR
MANIFEST_NAME = ".ratecontrol-manifest.jsonl"
#: held (flock) by the run that owns OUT_DIR; holds "pid host"
LOCK_NAME = ".ratecontrol-batch.lock"
#: manifest/record format version (bump when fields change meaning)
#: 2: output_mtime_ns, ``conflict`` status, ``{"reset": true}`` lines (--no-resume)
MANIFEST_VERSION = 2


def read_manifest(path: Path) -> tuple[dict[str, dict], dict[str, set]]:
    """(last record per input since the last ``reset`` line, outputs batch wrote).

    The second map is over every line, resets included: output path -> the set of
    (size, mtime_ns) versions batch wrote there (mtime None for version-1 lines, which
    did not record it). A line cut short by a kill is ignored."""
    last: dict[str, dict] = {}
    owned: dict[str, set] = {}
    try:
        fd = fsutil.open_own_file(path, os.O_RDONLY)
    except FileNotFoundError:
        return last, owned
    except OSError as exc:
        raise _state_error(path, "manifest", exc) from None
    with open(fd, encoding="utf-8", errors="replace") as fh:
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
            if d.get("status") in WROTE and isinstance(out, str) and isinstance(d.get("output_bytes"), int):
                owned.setdefault(out, set()).add((d["output_bytes"], d.get("output_mtime_ns") or None))
    return last, owned


def load_manifest(path: Path) -> dict[str, dict]:
    """Last record per input (since the last --no-resume); a line cut short by a kill is ignored."""
    return read_manifest(path)[0]


def is_owned(versions, st: os.stat_result) -> bool:
    """True when a file with stat ``st`` is one batch wrote (a recorded size and mtime)."""
    return any(size == st.st_size and (mtime is None or mtime == st.st_mtime_ns)
               for size, mtime in (versions or ()))


class Manifest:
    """Append-only JSON lines, one fsync per record so a kill loses at most the line being written."""

    def __init__(self, path: Path, fresh: bool):
        self.path = path
        try:
            self.fh = open(fsutil.open_own_file(path, os.O_RDWR | os.O_CREAT | os.O_APPEND), "a+b")
        except OSError as exc:
            raise _state_error(path, "manifest", exc) from None
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
        try:
            self.fh.write((json.dumps(d, allow_nan=False) + "\n").encode("utf-8"))
            self.fh.flush()
            os.fsync(self.fh.fileno())
        except OSError as exc:  # a full disk mid-run stops the run with one line
            raise _state_error(self.path, "manifest", exc) from None

    def append(self, rec: FileRecord, settings: dict) -> None:
        d = rec.to_dict()
        d.pop("resumed", None)
        d["settings"] = settings
        d["finished_utc"] = _utc_now()
        d["manifest_version"] = MANIFEST_VERSION
        self._write(d)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # every line was flushed and fsynced already
            self.fh.close()


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def clean_stale_temps(out_root: Path, planned_outputs: Iterable[str]) -> int:
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


class OutDirLock:
    """Exclusive ``flock`` on OUT_DIR/LOCK_NAME for the whole run (holds "pid host").

    A second run fails at once with an OutputError naming the holder. The file is
    removed on release while still locked; a run that opened the old file before that
    sees, once it gets the lock, that the path no longer names its file and tries again."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / LOCK_NAME
        self.fd: int | None = None

    def __enter__(self) -> "OutDirLock":
        for _ in range(50):
            try:
                fd = fsutil.open_own_file(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise _state_error(self.path, "lock file", exc) from None
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
                same = os.fstat(fd).st_ino == os.lstat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed it after we opened it
                os.close(fd)
                continue
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
            except OSError as exc:
                # a full disk: no lock file of 0 bytes (or a stale holder's text) is left behind
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
                os.close(fd)
                raise _state_error(self.path, "lock file", exc) from None
            self.fd = fd
            return self
        raise OutputError(f"cannot take the lock {self.path}; try again")

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self.fd)
            self.fd = None


def _state_error(path: Path, what: str, exc: OSError) -> OutputError:
    """One line for a state file (the lock, the manifest) batch cannot use."""
    if isinstance(exc, fsutil.NotOwnFileError):
        return OutputError(
            f"{path} {exc.strerror}: batch keeps its {what} at that name and never writes through a link or "
            "into anything but a regular file of your own; remove it, or choose another OUT_DIR")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(f"cannot write the {what} {path}: the disk is full (or your quota is used up); "
                           "free some space, or choose an OUT_DIR on another disk")
    if exc.errno == errno.EROFS:
        return OutputError(f"cannot write the {what} {path}: the file system is read-only; choose another OUT_DIR")
    return OutputError(f"cannot open the {what} {path} ({exc.strerror or exc}); check OUT_DIR's permissions")


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 200).decode("utf-8", "replace").strip()
    except OSError:
        return ""
