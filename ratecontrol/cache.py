"""Content-addressed on-disk cache of probe results: one JSON file per entry.

A probe's outcome depends only on: the decoded PCM that was encoded, the preset's
encoder settings for the rung, the ffmpeg build, the scorer (and its model weights),
and the window grid. The key hashes exactly those, so a rerun with another target or
another pooling reuses every probe (we store per-window scores, never a pooled number),
while a new ffmpeg or new model weights miss.

Default location: ``$RATECONTROL_CACHE_DIR``, else ``$XDG_CACHE_HOME/ratecontrol``, else
``~/.cache/ratecontrol``. Size cap: 256 MB by default (an entry is a few KB of window
scores).

Format (docs/reliability.md): ``<dir>/probes-v1/<h[:2]>/<h>.json`` where ``h`` is the
sha256 of the key dict's canonical JSON (sorted keys, no spaces); the file is
``{"format": "ratecontrol-probe/1", "key": <that canonical JSON>, "value": {...}}``.

* Nothing read from the folder can run code: entries are only ever parsed with
  ``json.loads``. The joblib cache of earlier versions (pickles, ``<dir>/joblib/``) is
  ignored, never unpickled; delete it to get the space back.
* An entry that does not parse, is of another format, or whose stored key is not the
  key asked for (a copied or damaged file) is a miss: the probe is recomputed and the
  entry rewritten; one warning per folder per process says so.
* Writes are atomic (``fsutil.atomic_write``: temp file, fsync, rename), so two threads,
  two processes, or machines sharing the folder over NFS never see half an entry; when
  two compute the same key the last rename wins (both computed the same thing).
* Trust: once per process per folder, the folder and its ``probes-v1`` subfolder must be
  owned by this user and not writable by group/others unless sticky; otherwise the cache
  is not used (one RatecontrolWarning, the run goes on uncached), because whoever can
  write there chooses the scores a later search trusts.
* LRU cap: a hit sets the entry's mtime to now (its last use); when this object's running
  total of the folder passes ``max_mb``, the folder is scanned and the least recently
  used entries are deleted down to 90 % of the cap (and dead runs' temp files removed).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import numbers
import os
import re
import stat
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import OutputError, RatecontrolWarning, UsageError
from .fsutil import atomic_write, clean_stale_temps

__all__ = ["ProbeCache", "default_cache_dir", "pcm_digest", "preset_fingerprint", "DEFAULT_CACHE_MAX_MB",
           "canonical_key"]

DEFAULT_CACHE_MAX_MB = 256

#: the entries' subfolder; a new layout gets a new name, so old and new never mix
ENTRY_DIR = "probes-v1"
ENTRY_FORMAT = "ratecontrol-probe/1"
#: an entry is a few KB; anything bigger than this is not one of ours and is not read
MAX_ENTRY_BYTES = 16 << 20
#: an eviction scan deletes down to this share of the cap, so it is not rerun every write
EVICT_TO_SHARE = 0.9
_ENTRY_NAME_RE = re.compile(r"^[0-9a-f]{64}\.json$")


def default_cache_dir() -> Path:
    env = os.environ.get("RATECONTROL_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ratecontrol"


def pcm_digest(audio: np.ndarray, sample_rate_hz: int) -> str:
    """sha256 of the float32 PCM (row-major [C, N] bytes), its shape and its rate.

    Hashed a row and ~16 MB at a time, so a mapped track (media.decode_to_disk) is never
    copied whole."""
    a = np.asarray(audio)
    h = hashlib.sha256()
    h.update(f"{a.shape}|{sample_rate_hz}|".encode())
    step = 1 << 22
    for row in a.reshape(-1, a.shape[-1]) if a.ndim > 1 else a[None]:
        for i in range(0, row.shape[0], step):
            h.update(memoryview(np.ascontiguousarray(row[i:i + step], dtype=np.float32)).cast("B"))
    return h.hexdigest()


def _plain(obj):
    """json.dumps ``default``: numpy scalars/arrays and paths as plain JSON values."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"probe cache keys and values must be JSON data, not {type(obj).__name__}")


def canonical_key(key: dict[str, Any]) -> str:
    """The key dict as canonical JSON (sorted keys, tuples as lists, no spaces)."""
    return json.dumps(key, sort_keys=True, separators=(",", ":"), default=_plain, allow_nan=True)


def _check_max_mb(max_mb) -> float:
    if isinstance(max_mb, bool) or not isinstance(max_mb, numbers.Real):
        raise UsageError(f"cache max_mb must be a number of MB, got {max_mb!r}")
    v = float(max_mb)
    if math.isnan(v) or v < 0:
        raise UsageError(f"cache max_mb must be >= 0 MB, got {max_mb!r}")
    return v


# ------------------------------------------------------------------- trust

_TRUST: dict[str, str | None] = {}
_WARNED: set[tuple[str, str]] = set()
_GLOBAL_LOCK = threading.Lock()


def _untrusted_why(path: Path) -> str | None:
    """Why a folder may not be trusted (owned by someone else, or writable by others
    without the sticky bit), or None."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot stat it ({exc.strerror or exc})"
    me = os.geteuid()
    if st.st_uid != me:
        return f"it is owned by uid {st.st_uid}, not by you (uid {me})"
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        return f"it is writable by group or others (mode {stat.S_IMODE(st.st_mode):o}) without the sticky bit"
    return None


def _trust_problem(directory: Path) -> str | None:
    """The folder check, once per process per folder (the answer is kept)."""
    real = os.path.realpath(directory)
    with _GLOBAL_LOCK:
        if real in _TRUST:
            return _TRUST[real]
    why = _untrusted_why(directory)
    if why is None:
        sub = _untrusted_why(directory / ENTRY_DIR)
        why = f"its {ENTRY_DIR} subfolder: {sub}" if sub else None
    with _GLOBAL_LOCK:
        _TRUST[real] = why
    return why


def _warn_once(directory: Path, what: str, message: str) -> None:
    tag = (os.path.realpath(directory), what)
    with _GLOBAL_LOCK:
        if tag in _WARNED:
            return
        _WARNED.add(tag)
    warnings.warn(message, RatecontrolWarning, stacklevel=3)


def _prepare_dir(d: Path) -> None:
    """Create the cache folder, or one OutputError saying why it cannot be used."""
    advice = "use a writable folder, or no cache"
    # the options as the library names them; the CLI spells them --cache-dir DIR / --no-cache
    helps = {"cache_dir": "DIR", "cache": False}
    if d.exists() and not d.is_dir():
        raise OutputError(f"probe cache folder {d} is a file, not a folder; {advice}", options=helps)
    try:
        # 0700: with a umask of 002 (user-private groups) a default mkdir would make a
        # group-writable folder that the trust check then refuses
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"cannot create probe cache folder {d}: a part of its path is a file; "
                          f"{advice}", options=helps) from None
    except PermissionError:
        raise OutputError(f"cannot create probe cache folder {d}: permission denied; {advice}", options=helps) from None
    except OSError as exc:
        raise OutputError(f"cannot create probe cache folder {d}: {exc.strerror or exc}; {advice}", options=helps) from None
    if not os.access(d, os.W_OK | os.X_OK):
        raise OutputError(f"probe cache folder {d} is read-only; {advice}", options=helps)


# ------------------------------------------------------------------- cache


class ProbeCache:
    """Cache of ``dict`` probe outcomes keyed by a dict of JSON-able key parts.

    ``get_or_compute(key, compute)`` returns the stored dict for ``key`` or calls
    ``compute()`` and stores its result. Safe to call from several threads at once
    (probes of two rungs run in parallel) and from several processes on one folder.
    """

    def __init__(self, directory: str | os.PathLike | None = None, max_mb: float = DEFAULT_CACHE_MAX_MB,
                 enabled: bool = True):
        self.max_mb = _check_max_mb(max_mb)
        self.enabled = bool(enabled)
        self.directory = Path(directory) if directory else default_cache_dir()
        self.hits = 0
        self.misses = 0
        #: False when the folder failed the trust check (the run goes on uncached)
        self.usable = False
        # probes of two rungs may run at once (api.PARALLEL_PROBES)
        self._lock = threading.Lock()
        self._approx_bytes: int | None = None  # this object's running total of the folder
        self._checked_dirs: set[str] = set()
        if self.enabled:
            _prepare_dir(self.directory)
            why = _trust_problem(self.directory)
            if why:
                _warn_once(self.directory, "trust",
                           f"probe cache {self.directory} is not used ({why}); running uncached: "
                           "give it a probe cache folder of your own (chmod go-w it)")
            else:
                self.usable = True

    # pickling (e.g. into a worker process): the lock is rebuilt, the counts kept
    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def entry_root(self) -> Path:
        return self.directory / ENTRY_DIR

    def _entry_path(self, digest: str) -> Path:
        return self.entry_root / digest[:2] / f"{digest}.json"

    def _count(self, hit: bool) -> None:
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def get_or_compute(self, key: dict[str, Any], compute: Callable[[], dict]) -> dict:
        if not (self.enabled and self.usable):
            self._count(False)
            return compute()
        text = canonical_key(key)
        digest = hashlib.sha256(text.encode()).hexdigest()
        path = self._entry_path(digest)
        value = self._read(path, text)
        if value is not None:
            self._count(True)
            return value
        self._count(False)
        out = compute()
        if not isinstance(out, dict):
            raise TypeError(f"a probe cache value must be a dict, not {type(out).__name__}")
        data = json.dumps({"format": ENTRY_FORMAT, "key": text, "value": out}, separators=(",", ":"),
                          default=_plain, allow_nan=True)
        self._write(path, data)
        # what a hit would return: the stored JSON read back (tuples become lists)
        return json.loads(data)["value"]

    # -- reading -----------------------------------------------------------------------

    def _dir_ok(self, folder: Path) -> bool:
        """A fan-out folder is ours (checked once per object)."""
        name = str(folder)
        if name in self._checked_dirs:
            return True
        why = _untrusted_why(folder)
        if why:
            _warn_once(self.directory, f"trust:{folder.name}",
                       f"probe cache folder {folder} is not read ({why}); its probes are recomputed")
            return False
        with self._lock:
            self._checked_dirs.add(name)
        return True

    def _read(self, path: Path, key_text: str) -> dict | None:
        """The stored value, or None (missing, unreadable, damaged, foreign: a miss)."""
        if not path.parent.is_dir() or not self._dir_ok(path.parent):
            return None
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            return None
        except OSError as exc:  # a symlink (ELOOP), no permission, ...
            self._bad(path, f"cannot be read ({exc.strerror or exc})")
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_ENTRY_BYTES:
                self._bad(path, "is not a probe entry (not a regular file of a few KB)")
                return None
            if st.st_uid != os.geteuid():
                self._bad(path, f"is owned by uid {st.st_uid}, not by you")
                return None
            with os.fdopen(fd, "rb", closefd=False) as fh:
                raw = fh.read(MAX_ENTRY_BYTES + 1)
        except OSError as exc:
            self._bad(path, f"cannot be read ({exc.strerror or exc})")
            return None
        finally:
            os.close(fd)
        try:
            entry = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            self._bad(path, "does not parse as JSON")
            return None
        if (not isinstance(entry, dict) or entry.get("format") != ENTRY_FORMAT
                or not isinstance(entry.get("value"), dict)):
            self._bad(path, f"is not a {ENTRY_FORMAT} entry")
            return None
        if entry.get("key") != key_text:
            self._bad(path, "holds another key's result")
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # last use, for the LRU cap
        return entry["value"]

    def _bad(self, path: Path, why: str) -> None:
        _warn_once(self.directory, "bad-entry",
                   f"probe cache entry {path} {why}: ignored and recomputed (further bad entries "
                   f"in {self.directory} are not reported)")

    # -- writing and the size cap ------------------------------------------------------

    def _write(self, path: Path, data: str) -> None:
        try:
            path.parent.parent.mkdir(mode=0o700, exist_ok=True)
            path.parent.mkdir(mode=0o700, exist_ok=True)
            if not self._dir_ok(path.parent):
                return
            atomic_write(path, data)
        except OSError as exc:  # disk full, folder removed under us, ...
            _warn_once(self.directory, "write",
                       f"cannot write to probe cache {self.directory} ({exc.strerror or exc}); "
                       "probes of this run are not cached")
            return
        with self._lock:
            if self._approx_bytes is not None:
                self._approx_bytes += len(data.encode())
            # the first write of this object measures the folder (other processes fill it too)
            over = self._approx_bytes is None or self._approx_bytes > self.max_mb * 1e6
        if over:
            self._evict()

    def _scan(self) -> list[tuple[float, int, Path]]:
        """(last use, bytes, path) of every entry; stale temp files are removed."""
        out = []
        root = self.entry_root
        try:
            subs = [e for e in os.scandir(root) if e.is_dir(follow_symlinks=False)]
        except OSError:
            return out
        for sub in subs:
            clean_stale_temps(sub.path)
            try:
                entries = list(os.scandir(sub.path))
            except OSError:
                continue
            for e in entries:
                if not _ENTRY_NAME_RE.match(e.name):
                    continue  # not an entry of ours (temp files are cleaned above)
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                out.append((st.st_mtime, st.st_size, Path(e.path)))
        return out

    def _evict(self) -> None:
        """Delete least recently used entries until the folder is under the cap."""
        with self._lock:
            entries = self._scan()
            total = sum(size for _, size, _ in entries)
            cap = self.max_mb * 1e6
            if total > cap:
                goal = cap * EVICT_TO_SHARE
                for _, size, path in sorted(entries, key=lambda t: t[0]):
                    if total <= goal:
                        break
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    total -= size
            self._approx_bytes = int(total)

    def clear(self) -> None:
        """Delete every entry (only the files this cache writes; nothing else in the folder)."""
        if not (self.enabled and self.usable):
            return
        with self._lock:
            for _, _, path in self._scan():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            self._approx_bytes = 0


def preset_fingerprint(preset, rung) -> dict:
    """Everything of a preset rung that changes the encoded bits (not its name or label)."""
    return {
        "encoder": preset.encoder,
        "format": preset.format,
        "sample_rate_hz": preset.sample_rate_hz,
        "preset_options": sorted((str(k), str(v)) for k, v in preset.options.items()),
        "rung_options": sorted((str(k), str(v)) for k, v in rung.options.items()),
        "decoder_delay": (preset.decoder_delay_samples, preset.decoder_delay_rate_hz),
    }
