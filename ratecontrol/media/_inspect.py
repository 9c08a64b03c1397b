"""inspect(path) -> MediaInfo, without ffprobe.

There is no ffprobe next to the imageio-ffmpeg binary, so this parses the stream dump
ffmpeg prints on stderr when it opens an input (``Input #0, flac, from ...``,
``Duration: ...``, ``Stream #0:0: Audio: flac, 44100 Hz, stereo, s16 (24 bit)``, the
``Metadata:`` blocks) while decoding the first 3 audio frames to the ``null`` muxer. When the container does not know
the duration (a FLAC header with no total-sample count, raw streams) the first audio
stream is decoded to the ``null`` muxer once and the decoded length is reported.
"""
from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path

import ffmpeg

from ..errors import (EmptyAudioError, FFmpegError, FFmpegNotFoundError, InputError, InputNotFoundError,
                      NotAudioError)
from ._ffmpeg import ff_path, ffmpeg_path, run
from ._stderr import no_decoder, no_decoder_message, nothing_decoded, open_error, parse_audio_stream, parse_dump, unquote_path

__all__ = ["MediaInfo", "StreamInfo", "default_audio_stream", "inspect", "LOSSLESS_CODECS", "check_input_path", "audio_payload_bytes",
           "is_lossless_codec"]

#: ffmpeg codec names whose decoded samples are bit-exact copies of what was encoded.
#: ``pcm_*`` is matched by prefix (pcm_s16le, pcm_f32le, pcm_s24be, ...).
LOSSLESS_CODECS = frozenset(
    {"flac", "alac", "wavpack", "ape", "tta", "tak", "shorten", "mlp", "truehd",
     "wmalossless", "als", "mp4als", "ralf", "s302m"}
)


@dataclass(frozen=True)
class StreamInfo:
    """One stream of a file, as ffmpeg's dump lists it."""

    #: the stream's index in the file (``-map 0:N``)
    index: int
    #: "audio", "video", "subtitle", "data", "attachment" (ffmpeg's word, lower case)
    kind: str
    #: ffmpeg codec name ("h264", "aac", "mov_text", "subrip")
    codec: str
    #: the stream's language tag ("eng"), None when unset or "und"
    language: str | None = None
    #: ffmpeg disposition names ("default", "comment", "forced", "hearing_impaired")
    dispositions: tuple[str, ...] = ()
    #: position among the file's audio streams (``-map 0:a:N``); None for other kinds
    audio_index: int | None = None
    #: the stream's title tag ("title" in Matroska, "name" in MP4), when present
    title: str | None = None
    #: an attached picture (cover art), not a video
    attached_pic: bool = False
    #: when the stream starts (s), where ffmpeg says it is not 0 (audio delayed against
    #: the video: kept when the stream is re-encoded)
    start_s: float = 0.0
    #: audio streams: channel count from the stream line (None when ffmpeg does not say)
    channels: int | None = None
    #: audio streams: the bitrate on the stream line (MP4 and MPEG-TS give one; Matroska
    #: written by ffmpeg does not: None)
    bitrate_kbps: float | None = None


#: the dispositions ffmpeg prints after a stream line, "(hearing impaired)" etc.
_DISPOSITIONS = ("default", "dub", "original", "comment", "lyrics", "karaoke", "forced", "hearing impaired",
                 "visual impaired", "clean effects", "attached pic", "timed thumbnails", "non-diegetic",
                 "captions", "descriptions", "metadata", "dependent", "still image", "multilayer")
_DISPOSITION_RE = re.compile(r"\((" + "|".join(_DISPOSITIONS) + r")\)")
_START_RE = re.compile(r",\s*start (-?\d+(?:\.\d+)?)")
_STREAM_LINE_RE = re.compile(r"^\s*Stream #0:(?P<idx>\d+)(?:\[0x[0-9a-fA-F]+\])?(?:\((?P<lang>[^)]*)\))?:"
                             r"\s*(?P<kind>\w+):\s*(?P<rest>.*)$")


def _parse_streams(stderr: str) -> tuple[StreamInfo, ...]:
    """Every stream of ``Input #0`` in the dump, in file order, with its language,
    dispositions and title."""
    out: list[StreamInfo] = []
    in_input, n_audio, title_indent = False, 0, None
    for line in stderr.splitlines():
        if line.startswith("Input #0"):
            in_input = True
            continue
        if not in_input:
            continue
        if line and not line.startswith(" ") and not line.startswith("["):
            break
        m = _STREAM_LINE_RE.match(line)
        if m:
            kind, rest = m.group("kind").lower(), m.group("rest")
            disp = tuple(d.replace(" ", "_") for d in _DISPOSITION_RE.findall(rest))
            lang = m.group("lang")
            ms = _START_RE.search(rest)
            a = parse_audio_stream(rest) if kind == "audio" else {}
            out.append(StreamInfo(
                index=int(m.group("idx")), kind=kind, codec=(rest.split(",")[0].split() or [""])[0],
                channels=a.get("channels"), bitrate_kbps=a.get("kbps"),
                language=None if lang in (None, "", "und") else lang,
                dispositions=tuple(d for d in disp if d != "attached_pic"),
                audio_index=n_audio if kind == "audio" else None, attached_pic="attached_pic" in disp,
                start_s=float(ms.group(1)) if ms else 0.0))
            n_audio += kind == "audio"
            title_indent = len(line) - len(line.lstrip(" ")) + 4
            continue
        if out and title_indent is not None:
            body = line.strip()
            key, _, val = body.partition(":")
            if len(line) - len(line.lstrip(" ")) >= title_indent and key.strip().lower() in ("title", "name") \
                    and out[-1].title is None:
                out[-1] = replace(out[-1], title=val.strip())
    return tuple(out)


def is_lossless_codec(codec: str) -> bool:
    """True for an ffmpeg decoder name of a lossless audio codec (PCM, FLAC, ALAC, ...)."""
    return codec.startswith("pcm_") or codec in LOSSLESS_CODECS


def default_audio_stream(info: "MediaInfo") -> int:
    """The audio stream a player starts with: the first with the ``default``
    disposition, else the first (its position among the audio streams)."""
    audio = [s for s in info.streams if s.kind == "audio"]
    return next((s.audio_index for s in audio if "default" in s.dispositions), 0)


@dataclass(frozen=True)
class MediaInfo:
    """What ffmpeg says about the first audio stream of a file."""

    path: Path
    #: seconds; from the container, or from decoding when the header does not say
    duration_s: float | None
    sample_rate_hz: int
    channels: int
    #: ffmpeg decoder name of the first audio stream ("flac", "mp3", "aac", "pcm_s16le")
    codec: str
    #: the audio stream's bitrate when ffmpeg reports one, else the container's (which
    #: includes tags and cover art) when the file holds nothing else, else None (a
    #: film's container figure is mostly video); Vorbis: the container's (the stream
    #: line is nominal)
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
    #: streams that are not audio and not a cover picture: video, subtitles, data (a
    #: film or a music video: encode keeps them by stream copy)
    other_streams: int = 0
    #: audio streams in the file (the first is the one decoded and re-encoded)
    audio_streams: int = 1
    #: every stream of the file in order (video, audio, subtitles, cover art, ...)
    streams: tuple[StreamInfo, ...] = ()


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


#: audio frames inspect decodes to see that the stream has samples (a few ms each): a
#: count, not "the first 50 ms", which is empty for a stream that starts late (a film's
#: audio delayed against its video)
_CHECK_FRAMES = 3


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


#: successful inspections of unchanged files, by (path as given, inode, size, times):
#: an encode inspects its input in the front door and again when it decodes it, batch
#: once more before that (one ffmpeg run, ~30 ms, each; issue 13). Errors are never
#: cached; a file replaced or touched since gets a new key.
_CACHE: dict[tuple, "MediaInfo"] = {}
_CACHE_MAX = 256


def inspect(path) -> MediaInfo:
    """Describe the first audio stream of ``path``.

    Raises InputNotFoundError (missing path / directory), NotAudioError (ffmpeg cannot
    read it or it has no audio stream), EmptyAudioError (0 bytes, or no decodable
    samples).
    """
    ffmpeg_path()  # a broken ffmpeg is FFmpegNotFoundError here, never the input's fault
    p = check_input_path(path)  # a regular, readable file from here on
    try:
        st = os.stat(p)
    except OSError:  # gone since the check: _inspect says so in its own words
        return _inspect(p)
    key = (str(p), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    info = _CACHE.get(key)
    if info is None:
        info = _inspect(p)
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)), None)
        _CACHE[key] = info
    return replace(info, tags=dict(info.tags))  # callers get their own tags dict


def _inspect(p: Path) -> MediaInfo:
    # One call: open the file (ffmpeg prints the stream dump) and decode its first 3 audio frames
    # to the null muxer, so a header with no decodable audio behind it is caught here.
    stream = ffmpeg.input(ff_path(p)).output("-", format="null", map="0:a:0", **{"frames:a": _CHECK_FRAMES})
    empty = False
    try:
        _, err_b = run(stream, what=f"probing {p}")
        stderr = unquote_path(err_b.decode("utf-8", "replace"), p)
    except FFmpegNotFoundError:
        raise
    except FFmpegError as exc:
        stderr = unquote_path(exc.stderr, p)
        if "Input #0" not in stderr:
            raise open_error(p, stderr, exc) from None
        empty = nothing_decoded(stderr)
        if no_decoder(stderr):
            raise NotAudioError(no_decoder_message(p, stderr)) from None
        if not empty and "matches no streams" not in stderr:
            raise
    if nothing_decoded(stderr):
        empty = True
    d = parse_dump(stderr)
    if d["audio"] is None:
        raise NotAudioError(
            f"{p} has no audio stream ({d['format_name'] or 'unknown'} container); "
            "pass an audio file"
        )
    a = parse_audio_stream(d["audio"])
    if not a["sample_rate_hz"] or not a["channels"]:
        # in practice a file that is not what its name says (a text file named .flac
        # reads as 'flac, 0 channels'): open_error's words for an unreadable file, so
        # encode and batch say the same thing for the same cause
        raise NotAudioError(
            f"ffmpeg cannot read {p} as audio (its stream line {d['audio']!r} has no sample "
            "rate or channels); check that it is an audio file and not damaged, or convert "
            "it with another tool first"
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
    lossless = is_lossless_codec(codec)
    # the container's figure (size / duration) stands in for a stream line without one
    # only when the audio is all the file holds: a film's is mostly its video (an MKV
    # with a 128 kbps AAC track beside 1 Mbps of H.264 says ~1100 kb/s)
    alone = d["other_streams"] == 0 and d["audio_streams"] <= 1
    kbps = a["kbps"] if a["kbps"] is not None else (d["container_kbps"] if alone else None)
    if codec == "vorbis" and d["container_kbps"] and not d["has_cover_art"] and alone:
        # the Vorbis stream line shows the header's *nominal* rate (112 kb/s for q3),
        # not what was spent (96 kb/s measured on a 3-s test signal); the container
        # figure is size / duration, which is the real one
        kbps = d["container_kbps"]
    # File-level tags when there are any; otherwise the audio stream's (Ogg keeps its
    # Vorbis comments on the stream). Not merged: MP4/MKV streams carry technical keys
    # (handler_name, vendor_id) that are not the track's tags.
    tags = dict(d["global_tags"] or d["audio_tags"])
    return MediaInfo(
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
        other_streams=d["other_streams"],
        audio_streams=max(1, d["audio_streams"]),
        streams=_parse_streams(stderr),
    )



def audio_payload_bytes(path, audio_index: int = 0) -> int | None:
    """Bytes of audio stream ``a:audio_index``'s packets (ffmpeg stream copy to the raw ``data``
    muxer): what the audio costs without container, tags or an attached cover. None if
    ffmpeg cannot say."""
    from ._ffmpeg import run_args

    try:
        out, _ = run_args(["-v", "error", "-nostdin", "-i", ff_path(path), "-map", f"0:a:{int(audio_index)}",
                           "-c", "copy", "-f", "data", "-"])
    except FFmpegError:
        return None
    return len(out) or None
