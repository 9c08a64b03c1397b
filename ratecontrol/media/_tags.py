"""Tags and cover art an encode carries over from its source.

Tags: the source's tags are dumped with ffmpeg's ``ffmetadata`` muxer (exact, escaped,
no command-line length limits even for the 1000-repeated-tag FLAC), extra ``metadata``
entries are appended, and the result is fed back as a second input with
``-map_metadata 1``.

Cover art: MP3 (ID3v2 APIC) and MP4/M4A (``covr``) keep the attached picture
(``-c:v copy`` + ``disposition attached_pic``; MP4 only stores JPEG/PNG/BMP, other
formats are converted to PNG). Ogg (Opus/Vorbis) cannot take a picture stream (the
ffmpeg 9.0 ogg muxer writes nothing and fails with "at least one of its streams received
no packets"), so there the picture goes into a ``METADATA_BLOCK_PICTURE`` Vorbis comment
instead: base64 of a FLAC PICTURE block (Xiph "VorbisComment" wiki, "Cover art"; block
layout RFC 9639 section 8.8), the way opusenc/oggenc and most players store covers.
JPEG and PNG bytes are copied unchanged; other codecs (GIF, BMP, ...) become PNG. The
tag goes through the ffmetadata file as a global tag, which ffmpeg's ogg muxer writes
into the single audio stream's comment header (OpusTags / Vorbis comment packet), where
players read it. Size: no limit of ours or ffmpeg's below the 32-bit comment length;
a ~505 KB PNG round-trips in tests/test_media.py and a 20 MB PNG (from an MP3 source)
byte-exact by hand (ffmpeg 9.0). A FLAC *source* cannot hold a picture over 16 MiB
(24-bit block length). The cover costs 4/3 of its size in the output (base64), which
counts in WrittenFile.bitrate_kbps like the MP3/M4A picture does.
"""
from __future__ import annotations

import base64
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from .. import fsutil
from ..errors import OutputError
from ..presets import Preset
from ._ffmpeg import ff_path, run
from ._inspect import MediaInfo, inspect

__all__: list[str] = []

#: muxers that can store an attached picture, and the picture codecs each accepts as is
_COVER_CODECS = {
    "mp3": {"mjpeg", "png", "gif", "bmp", "tiff", "webp"},
    "ipod": {"mjpeg", "png", "bmp"},
    "mp4": {"mjpeg", "png", "bmp"},
    "mov": {"mjpeg", "png", "bmp"},
    "flac": {"mjpeg", "png", "gif", "bmp", "tiff", "webp"},
    "matroska": None,  # anything: stored as an attachment-like stream
}


def _escape_ffmeta(text: str) -> str:
    # ffmetadata format: '=', ';', '#', '\' and newlines are escaped with a backslash
    out = []
    for ch in str(text):
        if ch in "=;#\\\n":
            out.append("\\")
        out.append(ch)
    return "".join(out)


def _write_ffmetadata(dest_dir: Path, base: bytes, extra: dict | None,
                      picture_b64: str | None = None) -> Path:
    """A temp ffmetadata file: ``base`` (an ffmetadata dump, may be empty) + ``extra``
    (+ a ``METADATA_BLOCK_PICTURE`` tag, replacing any the dump had)."""
    lines = [";FFMETADATA1"]
    for raw in base.decode("utf-8", "replace").splitlines()[1:] if base else []:
        if raw.startswith("encoder="):
            continue  # the dump muxer's own tag; the encoding ffmpeg sets its own
        if picture_b64 is not None and raw.upper().startswith("METADATA_BLOCK_PICTURE="):
            continue
        if raw.startswith("["):  # [CHAPTER]/[STREAM] sections: global tags only
            break
        lines.append(raw)
    for k, v in (extra or {}).items():
        lines.append(f"{_escape_ffmeta(k)}={_escape_ffmeta(v)}")
    if picture_b64 is not None:
        # base64 uses A-Z a-z 0-9 + / and '=' padding: only '=' needs the escape
        lines.append(f"METADATA_BLOCK_PICTURE={_escape_ffmeta(picture_b64)}")
    tmp = fsutil.temp_sibling(Path(dest_dir) / "ffmeta", suffix=".txt")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp


#: muxers whose covers go into a METADATA_BLOCK_PICTURE comment (no picture streams)
_OGG_FORMATS = {"ogg", "opus", "oga", "spx"}
#: picture codecs copied as is into METADATA_BLOCK_PICTURE, with their MIME type;
#: anything else is converted to PNG (what players decode everywhere)
_PICTURE_MIME = {"mjpeg": "image/jpeg", "png": "image/png"}
#: FLAC picture type 3 = "Cover (front)" (RFC 9639 section 8.8, ID3v2 APIC types)
_FRONT_COVER = 3
_OUT_VIDEO_RE = re.compile(r"^\s*Stream #0:0\S*:\s*Video:\s*(?P<rest>.*)$")
_SIZE_RE = re.compile(r",\s(?P<w>\d+)x(?P<h>\d+)\b")


def _depth_bits(stream_desc: str) -> int:
    """Bits per pixel for the PICTURE block, from ffmpeg's pixel format word.

    A hint only (players decode the image itself): 32 with alpha, 8 for palette/grey,
    else 24 -- the common cases of what metaflac writes.
    """
    words = set(re.findall(r"[a-z0-9]+", stream_desc))
    if any(w.startswith(("rgba", "bgra", "argb", "abgr", "ya8", "ya16", "yuva"))
           for w in words):
        return 32
    if any(w.startswith(("pal8", "gray", "mono")) for w in words):
        return 8
    return 24


def _picture_block_b64(src_path: Path, stream_index: int, codec: str | None) -> str:
    """The source's cover as a base64 FLAC PICTURE block (METADATA_BLOCK_PICTURE value).

    The picture bytes come from ffmpeg (copied for JPEG/PNG, converted to PNG
    otherwise); width, height and pixel format from ffmpeg's description of the
    output stream of that same run.
    """
    mime = _PICTURE_MIME.get(codec or "")
    vkw = {"vcodec": "copy"} if mime else {"vcodec": "png"}
    mime = mime or "image/png"
    src = ffmpeg.input(ff_path(src_path))
    data, err = run(src[str(stream_index)].output("pipe:", format="image2pipe",
                                                  **{"frames:v": 1}, **vkw),
                    what=f"reading the cover art of {src_path}")
    if not data:
        raise OutputError(f"ffmpeg returned no cover art from {src_path}")
    width = height = 0
    depth = 24
    text = err.decode("utf-8", "replace")
    out_part = text.split("Output #0", 1)[-1]
    for line in out_part.splitlines():
        m = _OUT_VIDEO_RE.match(line)
        if m:
            ms = _SIZE_RE.search(m.group("rest"))
            if ms:
                width, height = int(ms.group("w")), int(ms.group("h"))
            depth = _depth_bits(m.group("rest"))
            break
    mime_b = mime.encode("ascii")
    block = b"".join([
        struct.pack(">II", _FRONT_COVER, len(mime_b)), mime_b,
        struct.pack(">I", 0),  # description: empty
        struct.pack(">IIIII", width, height, depth, 0, len(data)),  # 0 = not indexed
        data,
    ])
    return base64.b64encode(block).decode("ascii")


def _input_index(stream, path: str) -> int:
    """Index ffmpeg will give the input file ``path`` in the compiled command."""
    args = ffmpeg.compile(stream)
    inputs = [args[k + 1] for k, a in enumerate(args[:-1]) if a == "-i"]
    return inputs.index(path)


def _build(streams: list, meta_in, meta_path: Path | None, filename: str, kw: dict):
    """ffmpeg-python output node; the ffmetadata input (if any) feeds -map_metadata.

    An ffmetadata input has no streams, and ffmpeg-python only emits inputs that a
    mapped stream comes from, so it is referenced with the optional map ``N:d?``
    (matches nothing, never an error).
    """
    if meta_in is None:
        return ffmpeg.output(*streams, filename, **kw)
    kw = dict(kw)
    kw["map_metadata"] = "1"
    stream = ffmpeg.output(*streams, meta_in["d?"], filename, **kw)
    idx = _input_index(stream, ff_path(meta_path))
    if idx != 1:
        kw["map_metadata"] = str(idx)
        stream = ffmpeg.output(*streams, meta_in["d?"], filename, **kw)
    return stream


@dataclass(frozen=True)
class _Extras:
    """What a source file adds to an encode: its tags (+ ours) and its cover art."""

    streams: list  # extra ffmpeg-python streams to map (the cover picture)
    kw: dict  # output options for them
    meta_path: Path  # temp ffmetadata file (tags), removed by the caller


def _source_extras(src_path: Path | None, cover_input, p: Preset, out: Path,
                   metadata: dict | None, info: MediaInfo | None = None) -> _Extras:
    """Tags of ``src_path`` plus ``metadata``, and its cover art in the form the
    output container takes (module docstring). ``cover_input``: the ffmpeg-python
    input node that reads ``src_path`` in this encode's graph (for the picture)."""
    streams, kw, picture_b64, base = [], {}, None, b""
    if src_path is not None:
        info = info if info is not None else inspect(src_path)
        if info.cover_art_stream is not None and p.format in _OGG_FORMATS:
            picture_b64 = _picture_block_b64(src_path, info.cover_art_stream, info.cover_art_codec)
        elif info.cover_art_stream is not None and p.format in _COVER_CODECS:
            streams.append(cover_input[str(info.cover_art_stream)])
            cover_ok = _COVER_CODECS[p.format]
            if cover_ok is None or info.cover_art_codec in cover_ok:
                kw["c:v"] = "copy"
            else:  # e.g. GIF cover into MP4, whose covr atom holds JPEG/PNG/BMP only
                kw["c:v"] = "png"
            kw["disposition:v:0"] = "attached_pic"
        # source tags (exact ffmetadata dump; Ogg keeps them on the audio stream)
        dump_kw = {"format": "ffmetadata"}
        if info.tags_on_stream:
            dump_kw["map_metadata"] = "0:s:a:0"
        base, _ = run(ffmpeg.input(ff_path(src_path)).output("pipe:", **dump_kw),
                      what=f"reading tags of {src_path}")
    meta_path = _write_ffmetadata(out.parent, base, metadata, picture_b64)
    return _Extras(streams, kw, meta_path)
