"""Finding and running the ffmpeg binary.

Discovery order (first usable wins; each binary is checked once per process with
``<binary> -version``, see :func:`binary_problem`):

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

from ..errors import EncoderNotAvailableError, FFmpegError, FFmpegNotFoundError, OutputError

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
    "binary_problem",
    "widen_pipe",
    "PIPE_BYTES",
    "OUT_FRAME_SAMPLES",
    "batch_filter",
    "DECODER_THREADS",
    "decoder_options",
]

#: how many stderr lines an FFmpegError message keeps (the useful part is at the end)
_STDERR_TAIL_LINES = 10


#: how long ``<binary> -version`` may take before the binary is called broken
_VERSION_TIMEOUT_S = 30


@functools.lru_cache(maxsize=None)
def binary_problem(path: str) -> str | None:
    """Why ``path`` is not a working ffmpeg (short text), or None if it is one.

    Runs ``<path> -hide_banner -version`` once per path per process (cached): a
    working ffmpeg exits 0 and prints ``ffmpeg version ...``. ``/bin/false`` (exit 1,
    prints nothing), a missing file, a non-executable file, a script that prints
    something else: each gets its own reason, so no caller ever blames the input for a
    broken binary."""
    try:
        proc = subprocess.run([path, "-hide_banner", "-version"], capture_output=True,
                              stdin=subprocess.DEVNULL, timeout=_VERSION_TIMEOUT_S)
    except FileNotFoundError:
        return "no such file"
    except PermissionError:
        return "permission denied: not executable"
    except subprocess.TimeoutExpired:
        return f"'-version' did not finish within {_VERSION_TIMEOUT_S} s"
    except (OSError, subprocess.SubprocessError) as exc:
        return getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
    if proc.returncode != 0:
        said = stderr_tail(proc.stderr.decode("utf-8", "replace"), 1)
        return f"'-version' exited with {proc.returncode}" + (f": {said}" if said else ", printing nothing")
    if b"ffmpeg version" not in proc.stdout:
        return "'-version' printed no 'ffmpeg version' line"
    return None


def _usable(path: str) -> bool:
    """True if ``path`` runs and prints an ffmpeg version banner (cached per path)."""
    return binary_problem(path) is None


def ffmpeg_path() -> str:
    """Absolute path of the ffmpeg binary ratecontrol uses.

    Every ffmpeg run in ratecontrol starts here, so a broken binary is reported as
    :class:`FFmpegNotFoundError` (exit 6) before any input file could be blamed. The
    check is cached per binary path; the choice is made again when
    ``$RATECONTROL_FFMPEG`` or ``$PATH`` changes."""
    return _resolve(os.environ.get("RATECONTROL_FFMPEG") or None, os.environ.get("PATH"))


@functools.lru_cache(maxsize=8)
def _resolve(env: str | None, path_var: str | None) -> str:
    tried: list[str] = []
    if env:
        why = binary_problem(env)
        if why is None:
            return env
        # An explicit setting that does not work is a configuration error: say so
        # instead of silently falling back to a different ffmpeg with other encoders.
        raise FFmpegNotFoundError(
            f"RATECONTROL_FFMPEG={env} is not a working ffmpeg ({why}); "
            "unset it or point it at an ffmpeg binary"
        )
    tried.append("$RATECONTROL_FFMPEG (unset)")
    which = shutil.which("ffmpeg", path=path_var)
    if which:
        why = binary_problem(which)
        if why is None:
            return which
        tried.append(f"ffmpeg on PATH ({which}: {why})")
    else:
        tried.append("ffmpeg on PATH (not found)")
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        why = binary_problem(exe) if exe else "no binary"
        if why is None:
            return exe
        tried.append(f"imageio-ffmpeg ({exe}: {why})")
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


def run_args(args: list[str], input: bytes | None = None, exe: str | None = None) -> tuple[bytes, bytes]:
    """Run ``ffmpeg <args>`` (``exe``: a binary already checked; default ffmpeg_path());
    return (stdout, stderr) or raise FFmpegError."""
    cmd = [exe or ffmpeg_path(), *args]
    try:
        proc = subprocess.run(cmd, input=input, capture_output=True)
    except OSError as exc:
        raise FFmpegError(f"cannot run ffmpeg: {exc}", cmd=cmd) from exc
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace")
        exc = failure(f"ffmpeg exited with {proc.returncode}", cmd, err)
        if isinstance(exc, FFmpegError):  # keep the old one-line form
            exc = FFmpegError(f"ffmpeg exited with {proc.returncode}: {stderr_tail(err)}", cmd=cmd, stderr=err)
        raise exc
    return proc.stdout, proc.stderr


#: what ffmpeg prints when the *output* cannot be written: the user's disk, not ffmpeg
_OUTPUT_PROBLEMS = (("No space left on device", "the disk is full"), ("Disk quota exceeded", "the disk quota is used up"),
                    ("Read-only file system", "the file system is read-only"))


def failure(what: str, cmd: list[str], err: str) -> Exception:
    """The exception for an ffmpeg run that failed with stderr ``err``: an OutputError
    (exit 4) when the output could not be written (full disk, quota, read-only file
    system), else an FFmpegError with the stderr tail."""
    for needle, why in _OUTPUT_PROBLEMS:
        if needle in err:
            return OutputError(f"{what}: {why} ({needle}); nothing was written. Free some space or write elsewhere")
    return FFmpegError(f"{what} failed: {stderr_tail(err)}", cmd=cmd, stderr=err)


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
        raise failure(what, cmd, err) from None
    except OSError as exc:
        raise FFmpegError(f"{what}: cannot run ffmpeg: {exc}", cmd=cmd) from exc
    return out, err


def stream_stdout(stream, block_bytes: int, what: str = "ffmpeg", stderr_out: list | None = None):
    """Run an ffmpeg-python graph that writes to stdout; yield its output in blocks.

    Memory holds one block, not the whole output (an hour of 48 kHz stereo float32 is
    1.4 GB). stderr goes to a temporary file so a chatty ffmpeg can never block on a
    full pipe. Raises FFmpegError like :func:`run` when ffmpeg fails. ``stderr_out``: a
    list that gets ffmpeg's stderr text appended once it exits successfully (decode
    reads the stated duration and decode errors from it).
    """
    exe = ffmpeg_path()
    cmd = ffmpeg.compile(stream.global_args("-hide_banner", "-nostdin"), cmd=exe, overwrite_output=True)
    with tempfile.TemporaryFile() as errf:
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise FFmpegError(f"{what}: cannot run ffmpeg: {exc}", cmd=cmd) from exc
        widen_pipe(proc.stdout)
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
        errf.seek(0)
        err = errf.read().decode("utf-8", "replace")
        if rc != 0:
            raise failure(what, cmd, err)
        if stderr_out is not None:
            stderr_out.append(err)


#: capacity asked for the stdout pipes ratecontrol reads PCM from (Linux F_SETPIPE_SZ;
#: 0 leaves the 64-KiB default). 1 MiB is what an unprivileged process may ask for
#: (/proc/sys/fs/pipe-max-size default). On the 4-minute track, with OUT_FRAME_SAMPLES
#: on, it cut the Python reader's context switches 862 -> 250 (decode), 2140 -> 1634
#: (final encode + check); ffmpeg's own figures did not move, and on stdin (the array
#: feed) nothing did, so stdin keeps 64 KiB (bench/bench_processes.py --ablate,
#: docs/performance.md "Lean ffmpeg processes")
PIPE_BYTES = 1 << 20

#: F_SETPIPE_SZ from <linux/fcntl.h> (Python's fcntl has it from 3.10 on Linux only)
_F_SETPIPE_SZ = 1031


def widen_pipe(fileobj) -> None:
    """Ask the kernel for a PIPE_BYTES pipe behind ``fileobj`` (a Popen pipe), so one
    read or write moves up to a MiB instead of 64 KiB; a no-op where the platform or
    its limit refuses (macOS, Windows, a lowered pipe-max-size): only a speed-up."""
    if not PIPE_BYTES or fileobj is None:
        return
    try:
        import fcntl

        fcntl.fcntl(fileobj.fileno(), getattr(fcntl, "F_SETPIPE_SZ", _F_SETPIPE_SZ), PIPE_BYTES)
    except (ImportError, OSError, ValueError):
        pass


#: samples per frame of the raw PCM an ffmpeg hands back to ratecontrol (decodes, the
#: loopback decode of an encode). Decoders emit small frames (Opus 960 samples, a FLAC
#: file of 610-sample blocks 18,885 frames in 4 minutes, MP3 1152) and ffmpeg 7+ hands
#: every frame from thread to thread (filter, pcm encoder, muxer) and writes each one to
#: the pipe: ``asetnsamples`` regroups them into 64-Ki-sample frames after the last
#: filter, so those steps run 68x (Opus) to 107x (that FLAC) less often: the 4-minute
#: check's pipe writes 12,094 -> 2,906 (ffmpeg's 32-KiB write buffer), its voluntary
#: context switches 98.9k -> 73.0k, sys 1.19 -> 0.97 s. Samples are unchanged (``p=0``: the last
#: frame is not padded); tests/test_lean_ffmpeg.py compares them with the unbatched
#: decode. 0 turns it off (the bench's "before" of this lever)
OUT_FRAME_SAMPLES = 1 << 16


def batch_filter() -> str | None:
    """The filter that regroups PCM into OUT_FRAME_SAMPLES frames (None when off)."""
    return f"asetnsamples=n={int(OUT_FRAME_SAMPLES)}:p=0" if OUT_FRAME_SAMPLES else None


#: threads of the decoder of an input ratecontrol decodes (``-threads`` before ``-i``).
#: ffmpeg's default is one per core for decoders with frame threading (FLAC, WavPack,
#: ALAC list "Threading capabilities: frame"), and each frame then travels between
#: them: the 4-minute FLAC of 610-sample blocks decoded batched measured 210k / 202k
#: futex calls, 67k / 71k voluntary context switches and 0.71 / 0.82 sys-s with the
#: default, 110k / 111k, 48k / 57k and 0.53 / 0.60 with 1 thread, same wall (2 cores,
#: docs/performance.md "Lean ffmpeg processes"). Decoding is bit-exact either way
#: (tests/test_lean_ffmpeg.py). 0: ffmpeg's default (the bench's "before")
DECODER_THREADS = 1


def decoder_options() -> dict:
    """ffmpeg-python input options for an input ratecontrol decodes."""
    return {"threads": int(DECODER_THREADS)} if DECODER_THREADS else {}


def _version_text() -> str:
    return _version_text_of(ffmpeg_path())


@functools.lru_cache(maxsize=8)
def _version_text_of(exe: str) -> str:
    out, _ = run_args(["-hide_banner", "-version"], exe=exe)
    return out.decode("utf-8", "replace")


def ffmpeg_version() -> str:
    """Version of the ffmpeg binary, e.g. ``"7.1"`` or ``"9.0.2"``.

    Release builds print ``ffmpeg version 7.1``; git builds print e.g.
    ``n9.0.2-17-g2a571b6068`` (BtbN/imageio builds) or ``N-112345-gabc`` (master), in
    which case the raw token is returned.
    """
    return _version_of(ffmpeg_path())


@functools.lru_cache(maxsize=8)
def _version_of(exe: str) -> str:
    text = _version_text_of(exe)
    first = text.splitlines()[0] if text else ""
    m = re.match(r"ffmpeg version (\S+)", first)
    if not m:
        return "unknown"
    token = m.group(1)
    m2 = re.match(r"n?(\d+(?:\.\d+)+)", token)
    return m2.group(1) if m2 else token


def has_soxr() -> bool:
    """True if this ffmpeg was built with libsoxr (``aresample=resampler=soxr``)."""
    return _has_soxr_of(ffmpeg_path())


@functools.lru_cache(maxsize=8)
def _has_soxr_of(exe: str) -> bool:
    return "--enable-libsoxr" in _version_text_of(exe)


def has_loopback_decoder() -> bool:
    """True if this ffmpeg has loopback decoders (``-dec``, ffmpeg 7.0+): one process
    can then write an encode and decode its packets back (media.StreamedEncode)."""
    return _loopback_of(ffmpeg_path())


@functools.lru_cache(maxsize=8)
def _loopback_of(exe: str) -> bool:
    # not listed by `-h full`: try it once on 10 ms of generated silence
    try:
        run_args(["-hide_banner", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "0.01",
                  "-c:a", "pcm_s16le", "-f", "null", "-", "-dec", "0:0", "-filter_complex", "[dec:0]anull[o]",
                  "-map", "[o]", "-f", "null", "-"], exe=exe)
    except FFmpegError:
        return False
    return True


def encoder_available(preset) -> bool:
    """True if this ffmpeg has ``preset``'s encoder."""
    return preset.encoder in available_encoders()


def require_encoder(preset) -> None:
    """Raise EncoderNotAvailableError (naming the preset, the encoder and what build
    would have it) if this ffmpeg lacks ``preset``'s encoder; then check the preset's
    container and options against what this ffmpeg lists for that encoder and muxer
    (``media._encoders``: an allow-list, so no option can make ffmpeg write elsewhere)."""
    if encoder_available(preset):
        # imported here: _encoders runs ffmpeg through this module
        from ._encoders import check_preset_options

        check_preset_options(preset)
        return
    hint = ""
    if preset.encoder.startswith("lib"):
        hint = f" built with --enable-{preset.encoder.replace('_', '-')}"
        if preset.encoder == "libfdk_aac":  # its licence makes the build non-free
            hint += " --enable-nonfree"
    raise EncoderNotAvailableError(
        f"preset '{preset.name}' needs ffmpeg encoder '{preset.encoder}', which this "
        f"ffmpeg ({ffmpeg_path()}, version {ffmpeg_version()}) lacks; install an "
        f"ffmpeg{hint} and point RATECONTROL_FFMPEG at it"
    )


def available_encoders() -> frozenset[str]:
    """Names of every encoder this ffmpeg has (parsed from ``ffmpeg -encoders``)."""
    return _encoders_of(ffmpeg_path())


@functools.lru_cache(maxsize=8)
def _encoders_of(exe: str) -> frozenset[str]:
    out, _ = run_args(["-hide_banner", "-encoders"], exe=exe)
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


def channel_layouts() -> dict[str, int]:
    """Standard channel layout names -> channel count (parsed from ``ffmpeg -layouts``).

    Used to turn the layout word in ``Stream #0:0: Audio: flac, 44100 Hz, 5.1, s16``
    into a channel count without hand-writing ffmpeg's layout table.
    """
    return _layouts_of(ffmpeg_path())


@functools.lru_cache(maxsize=8)
def _layouts_of(exe: str) -> dict[str, int]:
    out, _ = run_args(["-hide_banner", "-layouts"], exe=exe)
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
    for f in (binary_problem, _resolve, _version_text_of, _version_of, _has_soxr_of,
              _encoders_of, _layouts_of):
        f.cache_clear()
