"""probe(path) -> ProbeInfo, without ffprobe.

There is no ffprobe next to the imageio-ffmpeg binary, so this parses the stream dump
ffmpeg prints on stderr when it opens an input (``Input #0, flac, from ...``,
``Duration: ...``, ``Stream #0:0: Audio: flac, 44100 Hz, stereo, s16 (24 bit)``, the
``Metadata:`` blocks) while decoding the first 50 ms of audio to the ``null`` muxer. When the container does not know
the duration (a FLAC header with no total-sample count, raw streams) the first audio
stream is decoded to the ``null`` muxer once and the decoded length is reported.
"""
from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import ffmpeg

from ..errors import (EmptyAudioError, FFmpegError, FFmpegNotFoundError, InputError, InputNotFoundError,
                      NotAudioError)
from ._ffmpeg import channel_layouts, ff_path, ffmpeg_path, run, stderr_tail

__all__ = ["ProbeInfo", "probe", "LOSSLESS_CODECS", "check_input_path"]

#: ffmpeg codec names whose decoded samples are bit-exact copies of what was encoded.
#: ``pcm_*`` is matched by prefix (pcm_s16le, pcm_f32le, pcm_s24be, ...).
LOSSLESS_CODECS = frozenset(
    {"flac", "alac", "wavpack", "ape", "tta", "tak", "shorten", "mlp", "truehd",
     "wmalossless", "als", "mp4als", "ralf", "s302m"}
)


@dataclass(frozen=True)
class ProbeInfo:
    """What ffmpeg says about the first audio stream of a file."""

    path: Path
    #: seconds; from the container, or from decoding when the header does not say
    duration_s: float | None
    sample_rate_hz: int
    channels: int
    #: ffmpeg decoder name of the first audio stream ("flac", "mp3", "aac", "pcm_s16le")
    codec: str
    #: the audio stream's bitrate when ffmpeg reports one, else the container's (which
    #: includes tags and cover art); Vorbis: the container's (the stream line is nominal)
    bitrate_kbps: float | None
    lossless: bool
    #: ffmpeg demuxer name(s), e.g. "flac" or "mov,mp4,m4a,3gp,3g2,mj2"
    format_name: str
    #: stored bits per sample for PCM/lossless streams (12 for a 12-bit FLAC), else None
    bits_per_sample: int | None
    #: an attached picture (cover art) stream is present
    has_cover_art: bool
    #: the file's tags (for Ogg/Opus: the audio stream's Vorbis comments)
    tags: dict[str, str] = field(default_factory=dict)
    #: ffmpeg's channel layout word ("stereo", "5.1", "6 channels")
    channel_layout: str = ""
    #: input stream index (``0:N``) and codec of the attached picture, when present
    cover_art_stream: int | None = None
    cover_art_codec: str | None = None
    #: True when the tags live on the audio stream (Ogg: Vorbis comments), not the file
    tags_on_stream: bool = False


_DURATION_RE = re.compile(
    r"^\s*Duration:\s*(?P<dur>N/A|\d+:\d+:\d+(?:\.\d+)?)"
    r"(?:,\s*start:\s*[-\d.]+)?(?:,\s*bitrate:\s*(?P<br>N/A|[\d.]+)\s*kb/s)?"
)
_STREAM_RE = re.compile(r"^\s*Stream #0:(?P<idx>\d+)\S*:\s*(?P<kind>\w+):\s*(?P<rest>.*)$")
_INPUT_RE = re.compile(r"^Input #0, (?P<fmt>.+?), from ")
_META_ENTRY_RE = re.compile(r"^(?P<indent>\s*)(?P<key>[^:]*?)\s*:\s(?P<val>.*)$")


_FILE_KINDS = ((stat.S_ISFIFO, "named pipe (FIFO)"), (stat.S_ISCHR, "character device"),
               (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))


def check_input_path(path) -> Path:
    """Path of an existing, readable, non-empty regular file.

    Raises InputNotFoundError (missing, a directory), InputError (not a regular file:
    a FIFO or a device such as /dev/zero would make ffmpeg wait or read forever; not
    readable), EmptyAudioError (0 bytes)."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputNotFoundError(f"input file not found: {p} (check the path)") from None
    except PermissionError:
        raise InputError(f"cannot read {p}: permission denied on a folder of its path "
                         "(check the folders' permissions)") from None
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            raise InputNotFoundError(f"input file not found: {p} (a part of the path is not a folder)") from None
        raise InputError(f"cannot read {p}: {exc.strerror or exc} (check the path)") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputNotFoundError(
            f"input is a directory, not a file: {p} (pass an audio file, or use batch "
            "mode for folders)"
        )
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(st.st_mode)), "special file")
        raise InputError(f"input is not a regular file: {p} is a {kind}; save the audio to a "
                         "file and pass that")
    if st.st_size == 0:
        raise EmptyAudioError(f"input file is empty (0 bytes): {p} (re-export or re-copy it)")
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except PermissionError:
        raise InputError(f"cannot read {p}: permission denied (check the file's permissions, "
                         "e.g. chmod u+r)") from None
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror or exc}") from None
    os.close(fd)
    return p


def _unquote_path(stderr: str, p: Path) -> str:
    """ffmpeg's stderr with the input's path replaced by ``<input>``.

    ffmpeg prints the path verbatim (``Input #0, wav, from '/a/b\nc.wav':``), so a
    name with a newline splits the dump's first line and a name that looks like a dump
    line could be read as one; the path is known, so take it out before parsing."""
    full = ff_path(p)
    return stderr.replace(full, "<input>") if full else stderr


def _hms_to_s(text: str) -> float:
    h, m, s = text.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def _parse_dump(stderr: str) -> dict:
    """Parse ffmpeg's ``Input #0`` dump into plain values (no validation)."""
    out: dict = {"format_name": "", "duration": None, "container_kbps": None,
                 "audio": None, "has_cover_art": False,
                 "cover_stream": None, "cover_codec": None, "global_tags": {},
                 "audio_tags": {}, "has_video": False,
                 "duration_estimated": "Estimating duration from bitrate" in stderr}
    in_input = False
    # which tag dict the current "Metadata:" block feeds, and the indent of its entries
    target: dict | None = None
    meta_indent = -1
    last_key: str | None = None
    current_stream_is_first_audio = False
    for line in stderr.splitlines():
        m = _INPUT_RE.match(line)
        if m:
            in_input = True
            out["format_name"] = m.group("fmt")
            target, meta_indent, last_key = None, -1, None
            continue
        if not in_input:
            continue
        if line and not line.startswith(" "):
            # "Stream mapping:", "Output #0", "[in#0 @ ...]" -- input dump is over
            if line.startswith("["):
                continue  # a demuxer/decoder warning interleaved with the dump
            break
        indent = len(line) - len(line.lstrip(" "))
        stripped = line.strip()
        if stripped == "Metadata:":
            if indent <= 2:
                target = out["global_tags"]
            elif current_stream_is_first_audio:
                target = out["audio_tags"]
            else:
                target = None  # tags of a cover-art / data stream: not the track's
            meta_indent = indent + 2
            last_key = None
            continue
        if target is not None and indent >= meta_indent:
            me = _META_ENTRY_RE.match(line)
            if me:
                key, val = me.group("key").strip(), me.group("val")
                if key == "" and last_key is not None:
                    # a multi-line value continues as "              : next line"
                    target[last_key] += "\n" + val
                elif key:
                    target[key] = val
                    last_key = key
            continue
        target, meta_indent, last_key = None, -1, None
        md = _DURATION_RE.match(line)
        if md:
            if md.group("dur") != "N/A":
                out["duration"] = _hms_to_s(md.group("dur"))
            br = md.group("br")
            if br and br != "N/A":
                out["container_kbps"] = float(br)
            continue
        ms = _STREAM_RE.match(line)
        if ms:
            kind, rest = ms.group("kind"), ms.group("rest")
            current_stream_is_first_audio = False
            if kind == "Audio" and out["audio"] is None:
                out["audio"] = rest
                current_stream_is_first_audio = True
            elif kind == "Video" and "(attached pic)" not in rest:
                out["has_video"] = True
            elif kind == "Video" and "(attached pic)" in rest and not out["has_cover_art"]:
                out["has_cover_art"] = True
                out["cover_stream"] = int(ms.group("idx"))
                out["cover_codec"] = rest.split(",")[0].split()[0]
    return out


def _split_top_level(text: str) -> list[str]:
    """Split ``a (b, c), d`` on commas that are not inside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if cur:
        parts.append("".join(cur).strip())
    return parts


def _parse_audio_stream(rest: str) -> dict:
    """``flac, 44100 Hz, stereo, s16 (24 bit), 1411 kb/s (default)`` -> fields."""
    parts = _split_top_level(rest)
    codec = parts[0].split()[0] if parts and parts[0] else ""
    info: dict = {"codec": codec, "sample_rate_hz": None, "channels": None,
                  "layout": "", "bits": None, "kbps": None}
    layouts = channel_layouts()
    for i, part in enumerate(parts[1:], start=1):
        m = re.fullmatch(r"(\d+) Hz", part)
        if m:
            info["sample_rate_hz"] = int(m.group(1))
            # the layout is the field right after the rate, the sample format after it
            if i + 1 < len(parts):
                lay = parts[i + 1]
                info["layout"] = lay
                mc = re.fullmatch(r"(\d+) channels(?: \(.*\))?", lay)
                if mc:
                    info["channels"] = int(mc.group(1))
                elif lay in layouts:
                    info["channels"] = layouts[lay]
                elif "(" in lay and lay.split("(")[0] in layouts:
                    info["channels"] = layouts[lay.split("(")[0]]
                else:
                    # explicit layouts like "FL+FR+LFE" or "3 channels (FL+BL+BR)"
                    inner = re.search(r"([A-Z0-9]+(?:\+[A-Z0-9]+)+)", lay)
                    if inner:
                        info["channels"] = len(inner.group(1).split("+"))
            if i + 2 < len(parts):
                fmt = parts[i + 2]
                mb = re.search(r"\((\d+) bit\)", fmt)
                if mb:
                    info["bits"] = int(mb.group(1))
                else:
                    mf = re.fullmatch(r"([us])(\d+)p?", fmt.strip())
                    if mf:
                        info["bits"] = int(mf.group(2))
            continue
        mk = re.match(r"([\d.]+) kb/s", part)
        if mk:
            info["kbps"] = float(mk.group(1))
    return info


#: seconds decoded by probe() to prove the file has samples
_CHECK_S = 0.05


def _nothing_decoded(stderr: str) -> bool:
    """ffmpeg's stderr says the output got no samples (empty/truncated input)."""
    return "Output file is empty" in stderr or "received no packets" in stderr


def _no_decoder(stderr: str) -> bool:
    return bool(re.search(r"Decoder \(codec [^)]*\) not found|"
                          r"Decoding requested, but no decoder", stderr))


def _no_decoder_message(path, stderr: str) -> str:
    m = (re.search(r"no decoder found for: (\S+)", stderr)
         or re.search(r"Decoder \(codec (\S+?)\)", stderr))
    codec = m.group(1) if m else "unknown"
    tag = re.search(r"Audio: \S+ \(.*?(0x[0-9a-fA-F]+)\)", stderr)
    if tag:
        codec += f", tag {tag.group(1)}"
    return (f"this ffmpeg has no decoder for the audio codec '{codec}' of {path}; convert "
            "it with another tool or use an ffmpeg build that decodes it")


def _open_error(path: Path, stderr: str, exc: FFmpegError | None = None) -> Exception:
    """The error for an input ffmpeg could not open (one line, with ffmpeg's reason).

    ffmpeg that printed nothing at all did not get as far as reading the file: that is
    the ffmpeg's failure (``exc`` itself), not the input's."""
    if not stderr.strip():
        return exc if exc is not None else FFmpegError(
            f"ffmpeg failed on {path} without printing anything; check the ffmpeg binary "
            "(ratecontrol doctor)")
    if re.search(r"Permission denied", stderr):
        return InputError(f"cannot read {path}: permission denied (check the file's permissions)")
    if "moov atom not found" in stderr:
        return EmptyAudioError(
            f"{path} is truncated or unfinished: its MP4 index (moov atom) is missing, so "
            "nothing can be decoded; re-export or re-copy the file")
    m = re.search(r"Error opening input(?: file)?: (.+)", stderr)
    reason = m.group(1).strip() if m else stderr_tail(stderr, 2)
    if reason == "End of file":
        return EmptyAudioError(
            f"{path} is truncated: ffmpeg reached the end of the file while reading its "
            "header; re-export or re-copy the file"
        )
    return NotAudioError(
        f"ffmpeg cannot read {path} as audio ({reason}); check that it is an audio file "
        "and not damaged, or convert it with another tool first"
    )


def _decoded_duration_s(path: Path) -> float:
    """Decode the first audio stream to the null muxer; return its length in seconds."""
    stream = ffmpeg.input(ff_path(path)).output(
        "-", format="null", map="0:a:0", progress="pipe:1"
    ).global_args("-nostats")
    out, _ = run(stream, what=f"decoding {path} to measure its length")
    best = 0.0
    for line in out.decode("utf-8", "replace").splitlines():
        if line.startswith("out_time_us="):
            try:
                best = max(best, int(line.split("=", 1)[1]) / 1e6)
            except ValueError:  # "N/A" before the first frame
                pass
    return best


def probe(path) -> ProbeInfo:
    """Describe the first audio stream of ``path``.

    Raises InputNotFoundError (missing path / directory), NotAudioError (ffmpeg cannot
    read it or it has no audio stream), EmptyAudioError (0 bytes, or no decodable
    samples).
    """
    ffmpeg_path()  # a broken ffmpeg is FFmpegNotFoundError here, never the input's fault
    p = check_input_path(path)
    # One call: open the file (ffmpeg prints the stream dump) and decode its first 50 ms
    # to the null muxer, so a header with no decodable audio behind it is caught here.
    stream = ffmpeg.input(ff_path(p)).output("-", format="null", map="0:a:0", t=_CHECK_S)
    empty = False
    try:
        _, err_b = run(stream, what=f"probing {p}")
        stderr = _unquote_path(err_b.decode("utf-8", "replace"), p)
    except FFmpegNotFoundError:
        raise
    except FFmpegError as exc:
        stderr = _unquote_path(exc.stderr, p)
        if "Input #0" not in stderr:
            raise _open_error(p, stderr, exc) from None
        empty = _nothing_decoded(stderr)
        if _no_decoder(stderr):
            raise NotAudioError(_no_decoder_message(p, stderr)) from None
        if not empty and "matches no streams" not in stderr:
            raise
    if _nothing_decoded(stderr):
        empty = True
    d = _parse_dump(stderr)
    if d["audio"] is None:
        raise NotAudioError(
            f"{p} has no audio stream ({d['format_name'] or 'unknown'} container); "
            "pass an audio file"
        )
    a = _parse_audio_stream(d["audio"])
    if not a["sample_rate_hz"] or not a["channels"]:
        raise NotAudioError(
            f"cannot tell the sample rate / channels of {p} from ffmpeg's stream line "
            f"{d['audio']!r}; convert it to WAV or FLAC first"
        )
    duration = d["duration"]
    if not empty and (duration is None or duration <= 0):
        duration = _decoded_duration_s(p)
    if empty or duration <= 0:
        raise EmptyAudioError(
            f"{p} has an audio stream but no decodable samples (empty or truncated); "
            "re-export or re-copy the file"
        )
    codec = a["codec"]
    lossless = codec.startswith("pcm_") or codec in LOSSLESS_CODECS
    kbps = a["kbps"] if a["kbps"] is not None else d["container_kbps"]
    if codec == "vorbis" and d["container_kbps"] and not d["has_cover_art"]:
        # the Vorbis stream line shows the header's *nominal* rate (112 kb/s for q3),
        # not what was spent (96 kb/s measured on a 3-s test signal); the container
        # figure is size / duration, which is the real one
        kbps = d["container_kbps"]
    # File-level tags when there are any; otherwise the audio stream's (Ogg keeps its
    # Vorbis comments on the stream). Not merged: MP4/MKV streams carry technical keys
    # (handler_name, vendor_id) that are not the track's tags.
    tags = dict(d["global_tags"] or d["audio_tags"])
    return ProbeInfo(
        path=p,
        duration_s=duration,
        sample_rate_hz=a["sample_rate_hz"],
        channels=a["channels"],
        codec=codec,
        bitrate_kbps=kbps,
        lossless=lossless,
        format_name=d["format_name"],
        bits_per_sample=a["bits"] if lossless else None,
        has_cover_art=d["has_cover_art"],
        tags=tags,
        channel_layout=a["layout"],
        cover_art_stream=d["cover_stream"],
        cover_art_codec=d["cover_codec"],
        tags_on_stream=bool(d["audio_tags"]) and not d["global_tags"],
    )

