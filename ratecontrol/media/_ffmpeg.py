"""Finding and running the ffmpeg binary.

Discovery order (first usable wins, result cached for the process):

1. ``$RATECONTROL_FFMPEG`` -- an explicit binary, e.g. one built with libfdk_aac;
2. ``ffmpeg`` on ``PATH`` (``shutil.which``);
3. the binary bundled with imageio-ffmpeg (``imageio_ffmpeg.get_ffmpeg_exe()``).

Every ffmpeg invocation in ratecontrol goes through :func:`run` (ffmpeg-python graphs)
or :func:`run_args` (plain argument lists for the informational ``-encoders`` /
``-layouts`` listings that ffmpeg-python cannot express), so failures always surface as
:class:`~ratecontrol.errors.FFmpegError` carrying the command and the stderr tail.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile

import ffmpeg  # ffmpeg-python

from ..errors import FFmpegError, FFmpegNotFoundError

__all__ = [
    "ffmpeg_path",
    "ffmpeg_version",
    "available_encoders",
    "channel_layouts",
    "has_soxr",
    "run",
    "run_args",
    "stderr_tail",
    "clear_cache",
    "ff_path",
]

#: how many stderr lines an FFmpegError message keeps (the useful part is at the end)
_STDERR_TAIL_LINES = 10


def _usable(path: str) -> bool:
    """True if ``path`` runs and prints an ffmpeg version banner."""
    try:
        proc = subprocess.run(
            [path, "-hide_banner", "-version"], capture_output=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0 and b"ffmpeg version" in proc.stdout


@functools.lru_cache(maxsize=1)
def ffmpeg_path() -> str:
    """Absolute path of the ffmpeg binary ratecontrol uses (cached)."""
    tried: list[str] = []
    env = os.environ.get("RATECONTROL_FFMPEG")
    if env:
        if _usable(env):
            return env
        # An explicit setting that does not work is a configuration error: say so
        # instead of silently falling back to a different ffmpeg with other encoders.
        raise FFmpegNotFoundError(
            f"RATECONTROL_FFMPEG={env!r} is not a working ffmpeg binary; "
            "fix the path or unset the variable"
        )
    tried.append("$RATECONTROL_FFMPEG (unset)")
    which = shutil.which("ffmpeg")
    if which and _usable(which):
        return which
    tried.append(f"ffmpeg on PATH ({which or 'not found'})")
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        if exe and _usable(exe):
            return exe
        tried.append(f"imageio-ffmpeg ({exe})")
    except Exception as exc:  # imageio-ffmpeg raises RuntimeError when it has no binary
        tried.append(f"imageio-ffmpeg ({exc.__class__.__name__}: {exc})")
    raise FFmpegNotFoundError(
        "no usable ffmpeg found (tried " + "; ".join(tried) + "); install ffmpeg "
        "or `pip install imageio-ffmpeg`, or set RATECONTROL_FFMPEG to a binary"
    )


def ff_path(path) -> str:
    """A file path as ffmpeg should see it: absolute, so a relative name with a colon
    (``a:b.flac``) is not read as a protocol ``a:`` and a leading ``-`` is harmless."""
    return os.path.abspath(os.fspath(path))


def run_args(args: list[str], input: bytes | None = None) -> tuple[bytes, bytes]:
    """Run ``ffmpeg <args>``; return (stdout, stderr) or raise FFmpegError."""
    cmd = [ffmpeg_path(), *args]
    try:
        proc = subprocess.run(cmd, input=input, capture_output=True)
    except OSError as exc:
        raise FFmpegError(f"cannot run ffmpeg: {exc}", cmd=cmd) from exc
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace")
        raise FFmpegError(
            f"ffmpeg exited with {proc.returncode}: {stderr_tail(err)}", cmd=cmd, stderr=err
        )
    return proc.stdout, proc.stderr


def stderr_tail(stderr: str, n: int = _STDERR_TAIL_LINES) -> str:
    """The last ``n`` non-empty stderr lines joined with `` | `` (one-line messages)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def run(stream, input: bytes | None = None, what: str = "ffmpeg") -> tuple[bytes, bytes]:
    """Run an ffmpeg-python graph with our binary; return (stdout, stderr).

    Raises FFmpegError (message: ``what`` + stderr tail, attributes ``cmd``/``stderr``).
    """
    exe = ffmpeg_path()
    stream = stream.global_args("-hide_banner", "-nostdin") if input is None else (
        stream.global_args("-hide_banner")
    )
    cmd = ffmpeg.compile(stream, cmd=exe, overwrite_output=True)
    try:
        out, err = ffmpeg.run(
            stream,
            cmd=exe,
            capture_stdout=True,
            capture_stderr=True,
            input=input,
            overwrite_output=True,
        )
    except ffmpeg.Error as exc:
        err = (exc.stderr or b"").decode("utf-8", "replace")
        raise FFmpegError(f"{what} failed: {stderr_tail(err)}", cmd=cmd, stderr=err) from None
    except OSError as exc:
        raise FFmpegError(f"{what}: cannot run ffmpeg: {exc}", cmd=cmd) from exc
    return out, err


def stream_stdout(stream, block_bytes: int, what: str = "ffmpeg"):
    """Run an ffmpeg-python graph that writes to stdout; yield its output in blocks.

    Memory holds one block, not the whole output (an hour of 48 kHz stereo float32 is
    1.4 GB). stderr goes to a temporary file so a chatty ffmpeg can never block on a
    full pipe. Raises FFmpegError like :func:`run` when ffmpeg fails.
    """
    exe = ffmpeg_path()
    cmd = ffmpeg.compile(stream.global_args("-hide_banner", "-nostdin"), cmd=exe, overwrite_output=True)
    with tempfile.TemporaryFile() as errf:
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise FFmpegError(f"{what}: cannot run ffmpeg: {exc}", cmd=cmd) from exc
        try:
            while True:
                block = proc.stdout.read(block_bytes)
                if not block:
                    break
                yield block
            rc = proc.wait()
        finally:
            if proc.poll() is None:  # the consumer stopped early
                proc.kill()
                proc.wait()
            proc.stdout.close()
        if rc != 0:
            errf.seek(0)
            err = errf.read().decode("utf-8", "replace")
            raise FFmpegError(f"{what} failed: {stderr_tail(err)}", cmd=cmd, stderr=err)


@functools.lru_cache(maxsize=1)
def _version_text() -> str:
    out, _ = run_args(["-hide_banner", "-version"])
    return out.decode("utf-8", "replace")


@functools.lru_cache(maxsize=1)
def ffmpeg_version() -> str:
    """Version of the ffmpeg binary, e.g. ``"7.1"`` or ``"9.0.2"``.

    Release builds print ``ffmpeg version 7.1``; git builds print e.g.
    ``n9.0.2-17-g2a571b6068`` (BtbN/imageio builds) or ``N-112345-gabc`` (master), in
    which case the raw token is returned.
    """
    first = _version_text().splitlines()[0] if _version_text() else ""
    m = re.match(r"ffmpeg version (\S+)", first)
    if not m:
        return "unknown"
    token = m.group(1)
    m2 = re.match(r"n?(\d+(?:\.\d+)+)", token)
    return m2.group(1) if m2 else token


@functools.lru_cache(maxsize=1)
def has_soxr() -> bool:
    """True if this ffmpeg was built with libsoxr (``aresample=resampler=soxr``)."""
    return "--enable-libsoxr" in _version_text()


@functools.lru_cache(maxsize=1)
def available_encoders() -> frozenset[str]:
    """Names of every encoder this ffmpeg has (parsed from ``ffmpeg -encoders``)."""
    out, _ = run_args(["-hide_banner", "-encoders"])
    names: set[str] = set()
    past_header = False
    for line in out.decode("utf-8", "replace").splitlines():
        if line.strip().startswith("------"):
            past_header = True
            continue
        if not past_header:
            continue
        # " A....D libopus              libopus Opus (codec opus)"
        parts = line.split()
        if len(parts) >= 2 and len(parts[0]) == 6:
            names.add(parts[1])
    return frozenset(names)


@functools.lru_cache(maxsize=1)
def channel_layouts() -> dict[str, int]:
    """Standard channel layout names -> channel count (parsed from ``ffmpeg -layouts``).

    Used to turn the layout word in ``Stream #0:0: Audio: flac, 44100 Hz, 5.1, s16``
    into a channel count without hand-writing ffmpeg's layout table.
    """
    out, _ = run_args(["-hide_banner", "-layouts"])
    layouts: dict[str, int] = {}
    in_std = False
    for line in out.decode("utf-8", "replace").splitlines():
        if line.startswith("Standard channel layouts"):
            in_std = True
            continue
        if not in_std:
            continue
        parts = line.split()
        if len(parts) == 2 and parts[0] != "NAME":
            layouts[parts[0]] = len(parts[1].split("+"))
    return layouts


def clear_cache() -> None:
    """Forget the discovered binary and everything derived from it (for tests)."""
    for f in (ffmpeg_path, _version_text, ffmpeg_version, has_soxr, available_encoders,
              channel_layouts):
        f.cache_clear()
