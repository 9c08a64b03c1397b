"""Every temporary file and folder ratecontrol makes, and the atomic writes built on them.

One naming pattern, so that any later run can tell our litter from the user's files and
from another live run's work (ab-av1 keeps all of its temporary files in one module,
``temporary.rs``, for the same reason):

* a temp file next to its destination: ``.rc-tmp.<host>.<pid>.<token>.<name>``, created
  exclusively (``O_EXCL``), renamed onto ``<name>`` only when complete. The name is cut
  to the file system's name limit (255 bytes on ext4/xfs/btrfs/tmpfs) keeping the
  suffix, so a 250-byte output name still gets a temp name.
* a per-process temp folder in the system temp dir: ``ratecontrol-<host>-<pid>-<token>``,
  removed at exit, and by the next run of any command if a kill left it behind.

Every file the tool writes for the user (audio, the report PNG, batch's JSON/CSV reports,
beets outputs) goes through one publish rule (docs/reliability.md "Class 1"):

* ``claim_output`` checks it before any work: never an input of the run, never another
  output of the same run, a folder that exists; a file already there only with
  ``overwrite``. It returns a ``Destination`` that remembers which file was there.
* ``publish(tmp, destination)`` is the final move: where nothing was there it hard-links
  the temp file onto the name (``os.link`` fails if the name exists, so a file that
  appeared during the run, another run's output included, is never replaced); where a
  file was there and ``overwrite`` allowed it, it is replaced only if it is still that
  same file (device, inode, size, mtime, ctime), checked and renamed under an ``flock``
  of the folder so that two of our runs cannot both pass the check.

A temp entry is *stale* when the process named in it is gone (same host), or, for
another host's entry (a cluster on a shared file system), when it is over a day old.
``clean_stale_temps(folder)`` removes only those: a second live run's in-flight files
are never touched.
"""
from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from ratecontrol.errors import OutputError

try:  # POSIX; elsewhere the final move goes on without the folder lock
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = [
    "TEMP_PREFIX",
    "Destination",
    "FileId",
    "atomic_output",
    "atomic_write",
    "check_output_path",
    "claim_output",
    "clean_stale_temps",
    "clean_stale_run_dirs",
    "file_digest",
    "file_id",
    "final_name",
    "publish",
    "is_temp_name",
    "run_temp_dir",
    "temp_dir_sibling",
    "temp_sibling",
    "NotOwnFileError",
    "file_kind",
    "open_own_file",
]

TEMP_PREFIX = ".rc-tmp."
RUN_DIR_PREFIX = "ratecontrol-"
#: NAME_MAX of every common Linux/macOS file system
NAME_MAX_BYTES = 255
#: another host's temp entry is only removed once this old (its pid means nothing here)
FOREIGN_STALE_S = 24 * 3600.0

_TEMP_RE = re.compile(r"^\.rc-tmp\.(?P<host>[0-9a-f]{6})\.(?P<pid>\d+)\.(?P<tok>[0-9a-f]{8})\.")
_RUN_RE = re.compile(r"^ratecontrol-(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-(?P<tok>[0-9a-f]{8})$")


def _host_tag() -> str:
    return hashlib.blake2b(socket.gethostname().encode(), digest_size=3).hexdigest()


def _fit_name(head: str, name: str) -> str:
    """``head + name`` cut to NAME_MAX_BYTES, keeping ``name``'s suffix."""
    full = head + name
    if len(full.encode()) <= NAME_MAX_BYTES:
        return full
    suffix = Path(name).suffix if len(Path(name).suffix.encode()) <= 16 else ""
    stem = name[: len(name) - len(suffix)] if suffix else name
    room = NAME_MAX_BYTES - len(head.encode()) - len(suffix.encode())
    cut = stem.encode()[:room].decode("utf-8", "ignore")
    return head + cut + suffix


def _create_temp(path: Path, suffix: str, folder_too: bool) -> Path:
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    for _ in range(100):
        head = f"{TEMP_PREFIX}{_host_tag()}.{os.getpid()}.{secrets.token_hex(4)}."
        tmp = folder / _fit_name(head, path.name + suffix)
        try:
            if folder_too:
                os.mkdir(tmp, 0o700)
            else:
                os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"could not create a temp {'folder' if folder_too else 'file'} next to {path}")


def temp_sibling(path: str | os.PathLike, suffix: str = "") -> Path:
    """Create (exclusively, mode 0600) and return a temp file beside ``path``.

    ``suffix`` is appended to the name (e.g. ``.txt`` for a side file)."""
    return _create_temp(Path(path), suffix, folder_too=False)


def temp_dir_sibling(path: str | os.PathLike) -> Path:
    """Create (exclusively, mode 0700) and return a temp folder beside ``path``: a
    worker's scratch space that the stale-temp clean-up knows by the same pattern."""
    return _create_temp(Path(path), "", folder_too=True)


def final_name(path: str | os.PathLike) -> str:
    """The name a temp file of ours stands for (``.rc-tmp.h.p.t.song.opus`` -> ``song.opus``,
    nested temps too): for messages, which should name what the user asked for."""
    name = Path(path).name
    while True:
        m = _TEMP_RE.match(name)
        if not m:
            return name
        name = name[m.end():]


def is_temp_name(name: str) -> bool:
    return bool(_TEMP_RE.match(name))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _is_stale(m: re.Match, path: Path) -> bool:
    if m.group("host") != _host_tag():
        try:
            return time.time() - path.lstat().st_mtime > FOREIGN_STALE_S
        except OSError:
            return False
    return not _pid_alive(int(m.group("pid")))


def _remove_stale(folder, pattern: re.Pattern, dirs_only: bool = False) -> int:
    """Remove the entries of ``folder`` whose names match ``pattern`` and are stale."""
    n = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for e in entries:
        m = pattern.match(e.name)
        if not m or (dirs_only and not e.is_dir(follow_symlinks=False)) or not _is_stale(m, Path(e.path)):
            continue
        try:
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path, ignore_errors=True)
            else:
                os.unlink(e.path)
            n += 1
        except OSError:
            pass
    return n


def clean_stale_temps(folder: str | os.PathLike) -> int:
    """Remove temp files of dead runs from ``folder`` (not recursive); returns how many."""
    return _remove_stale(folder, _TEMP_RE)


@dataclass(frozen=True)
class FileId:
    """One version of one file: replaced or rewritten in place, it is another FileId."""

    device: int
    inode: int
    size_bytes: int
    mtime_ns: int
    ctime_ns: int


def file_id(path: str | os.PathLike) -> FileId | None:
    """The FileId of what is at ``path`` (a symlink itself, not its target); None: nothing."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return FileId(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class Destination:
    """A checked output path (``claim_output``) and the file found there at the check:
    ``found`` None means the path was free and nothing may replace a file that appears
    there later; else only that very file may be replaced. Path-like (``os.fspath``,
    ``str``), so it goes wherever a path goes until ``publish``."""

    path: Path
    found: FileId | None = None
    what: str = "output"

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)


def _same_file(a: Path, b: Path) -> bool:
    """The same path after resolving links, or one file under two names (a hard link)."""
    try:
        if a.resolve() == b.resolve():
            return True
    except (OSError, RuntimeError):  # a link loop: compare what is spelled
        if os.path.abspath(a) == os.path.abspath(b):
            return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def claim_output(path: str | os.PathLike, *, overwrite: bool, inputs: Iterable = (), outputs: Iterable = (),
                 what: str = "output") -> Destination:
    """Check an output path under the publish rule before any work; the Destination
    ``publish`` moves the finished file onto.

    Refused with an ``OutputError`` naming ``what`` (``output``, ``report``, ...): a
    path that is one of ``inputs`` (or a hard link to one), one of this run's other
    ``outputs`` (paths or Destinations), a folder or anything else that is not a file
    or a symlink, a path whose folder does not exist or is not writable, and a file
    already there unless ``overwrite``."""
    p = Path(path)
    for inp in inputs:
        if _same_file(p, Path(inp)):
            raise OutputError(f"{what} {p} is an input of this run: writing it would destroy the input; "
                              "choose another path")
    for other in outputs:
        other_what = other.what if isinstance(other, Destination) else "output"
        if _same_file(p, Path(other)):
            raise OutputError(f"{what} {p} is also the {other_what} of this run; give them different paths")
    if p.is_dir():
        raise OutputError(f"{what} path is a folder: {p} (give a file name)")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{what} folder does not exist: {folder} (create it first)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{what} folder is not writable: {folder} (check its permissions)")
    found = file_id(p)
    if found is not None:
        if not (os.path.islink(p) or p.is_file()):
            raise OutputError(f"{what} {p} exists and is not a regular file; choose another path")
        if not overwrite:
            raise OutputError(f"{what} {p} already exists; choose another path or replace it",
                              options={"overwrite": True})
    return Destination(p, found, what)


def check_output_path(out_path, in_path: Path | None = None, what: str = "output") -> Destination:
    """The output of a library write (media's encode and remux, the report PNG) under
    the publish rule: checked by ``claim_output`` with ``overwrite`` (a library call
    replaces what is there, as ``os.replace`` would), ``in_path`` (the source of the
    tags) refused. A Destination is kept as claimed, so the rule it was claimed under
    holds to the final move."""
    if isinstance(out_path, Destination):
        return out_path
    return claim_output(out_path, overwrite=True, inputs=() if in_path is None else (in_path,), what=what)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` of ``folder`` (every publisher in it, threads and processes
    alike: each opens its own descriptor). Where the file system has none (some NFS
    setups refuse a lock on a read-only descriptor) the move goes on unlocked."""
    fd = None
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the lock


def _appeared(dest: Destination) -> OutputError:
    return OutputError(f"{dest.what} {dest.path} appeared or changed while this run was writing it (another run?): "
                       "not replaced, and this run's file was not kept; move it away and run again")


#: errors of ``os.link`` on a file system without hard links (FAT, some FUSE and SMB mounts)
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV, errno.ENOSYS}


def publish(tmp: str | os.PathLike, path: "str | os.PathLike | Destination", mode: int | None = None) -> Path:
    """Move a finished temp file onto ``path``, first giving it the permissions a plain
    ``open`` would (temp files are created 0600); ``mode`` overrides them.

    ``path`` a Destination (``claim_output``): the publish rule (module docstring); a
    file that appeared or changed since the check raises an ``OutputError`` and ``tmp``
    is left for the caller to remove. A plain path (our own temp files, the cache):
    renamed over whatever is there."""
    if mode is None:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)
    if not isinstance(path, Destination):
        os.replace(tmp, path)
        return Path(path)
    dest = path
    folder = dest.path.parent if str(dest.path.parent) else Path(".")
    with _folder_lock(folder):
        if dest.found is None:
            try:
                os.link(tmp, dest.path)
            except FileExistsError:
                raise _appeared(dest) from None
            except OSError as exc:
                if exc.errno not in _NO_LINKS:
                    raise
                # no hard links here: check, then rename, under the folder lock
                if os.path.lexists(dest.path):
                    raise _appeared(dest) from None
                os.replace(tmp, dest.path)
                return dest.path
            os.unlink(tmp)
            return dest.path
        if file_id(dest.path) != dest.found:
            raise _appeared(dest)
        os.replace(tmp, dest.path)
    return dest.path


@contextlib.contextmanager
def atomic_output(path: "str | os.PathLike | Destination", mode: int | None = None) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it is published onto ``path``
    (a Destination: under the publish rule, ``publish``).

    On any exception the temp file is removed and ``path`` is untouched. ``mode``: the
    final permission bits (default: what a plain ``open`` would give under the umask)."""
    path = path if isinstance(path, Destination) else Path(path)
    tmp = temp_sibling(path)
    try:
        yield tmp
        publish(tmp, path, mode)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write(path: "str | os.PathLike | Destination", data: bytes | str, encoding: str = "utf-8") -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + ``publish``)."""
    path = path if isinstance(path, Destination) else Path(path)
    raw = data.encode(encoding) if isinstance(data, str) else data
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", block_bytes: int = 1 << 20) -> str:
    """Hex digest of a file's bytes, read a block at a time."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(block_bytes), b""):
            h.update(block)
    return h.hexdigest()


_RUN_DIR: Path | None = None
_RUN_LOCK = threading.Lock()


def clean_stale_run_dirs(base: str | os.PathLike | None = None) -> int:
    """Remove per-process temp folders of dead runs from the system temp dir."""
    return _remove_stale(Path(base or tempfile.gettempdir()), _RUN_RE, dirs_only=True)


def run_temp_dir() -> Path:
    """This process's temp folder (created on first use, removed at exit).

    The first call also removes the folders that killed runs left behind."""
    global _RUN_DIR
    with _RUN_LOCK:
        if _RUN_DIR is None or not _RUN_DIR.is_dir():
            clean_stale_run_dirs()
            base = Path(tempfile.gettempdir())
            while True:
                d = base / f"{RUN_DIR_PREFIX}{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}"
                try:
                    os.mkdir(d, 0o700)
                    break
                except FileExistsError:
                    continue
            _RUN_DIR = d
            atexit.register(shutil.rmtree, str(d), True)
        return _RUN_DIR


class NotOwnFileError(OSError):
    """``open_own_file``: the path is not a regular file of this user (a symbolic link,
    a folder, a FIFO, a device, another user's file). ``strerror`` says what it is."""


def file_kind(mode: int) -> str:
    """What an ``st_mode`` is, for messages: "a regular file", "a folder", "a named pipe
    (FIFO)", "a character device", ..."""
    kinds = ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symbolic link"),
             (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "a special file")


def _not_own_why(st: os.stat_result, path: Path) -> str:
    """What makes ``st`` (an lstat/fstat) something other than a regular file of ours ("" if it is one)."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        try:
            return f"is a symbolic link (to {os.readlink(path)})"
        except OSError:
            return "is a symbolic link"
    if stat.S_ISDIR(mode):
        return "is a folder"
    if not stat.S_ISREG(mode):
        return f"is {file_kind(mode)}, not a regular file"
    if st.st_uid != os.geteuid():
        return f"is owned by uid {st.st_uid}, not by you (uid {os.geteuid()})"
    return ""


def open_own_file(path: str | os.PathLike, flags: int, mode: int = 0o644) -> int:
    """``os.open(path, flags, mode)`` for a file at a fixed name in a folder others may
    write to (batch's lock and manifest): never through a symbolic link (``O_NOFOLLOW``),
    never blocking on a FIFO (opened non-blocking, blocking again once checked), and only
    a regular file owned by this user. Anything else raises ``NotOwnFileError`` (nothing
    is created or written through it); other failures are the usual ``OSError``."""
    path = Path(path)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        # ELOOP: a link (O_NOFOLLOW); EISDIR: a folder opened for writing; ENXIO: a FIFO
        # with no reader opened write-only
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENODEV, errno.ETXTBSY):
            try:
                why = _not_own_why(os.lstat(path), path)
            except OSError:
                why = ""
            if why:
                raise NotOwnFileError(exc.errno, why, str(path)) from None
        raise
    try:
        why = _not_own_why(os.fstat(fd), path)
        if why:
            raise NotOwnFileError(errno.EPERM, why, str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd
