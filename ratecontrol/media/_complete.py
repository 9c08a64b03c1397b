"""Is a decode complete? A decode is partial when ffmpeg reported decode errors, when it
is much shorter than the container states, or (whole-file decodes) when a WAV's data
chunk or an Ogg stream's missing end page says the file was cut (``_check_complete``:
TruncatedInputError, or a warning with ``allow_partial``). Read by _decode after every
decode; the numbers behind each test are measured where they are defined.
"""
from __future__ import annotations

import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import RatecontrolWarning, TruncatedInputError
from ._stderr import parse_dump, unquote_path

__all__ = ["TRUNCATED_MIN_S", "TRUNCATED_MIN_SHARE"]

#: A decode is *truncated* when it is shorter than the container's stated length (from
#: the input's span) by more than TRUNCATED_MIN_S **and** more than TRUNCATED_MIN_SHARE
#: of it. Why these numbers: a complete file decodes to its stated length within codec
#: priming/padding (AAC 2112 samples, MP3 ~1105-1700, Opus 312: all < 50 ms) plus the
#: 10-ms rounding of ffmpeg's printed duration, so half a second is 10x that margin;
#: the 2 % share keeps container durations that are computed rather than stored (MP3
#: TOC / frame-count arithmetic, a video file's audio track ending a little before its
#: video) from tripping the check on long files. Cut files lose far more: the brief's
#: case is the first third of a 7.00-s FLAC (2.33 s).
TRUNCATED_MIN_S = 0.5
TRUNCATED_MIN_SHARE = 0.02

#: stderr lines by which ffmpeg (7.x-9.x; "Error while decoding" in older builds) says a
#: packet was damaged or could not be decoded; measured for cut FLAC ("invalid residual",
#: "decode_frame() failed", "Decoding error: Invalid data ...") and cut WAV ("Packet
#: corrupt", "corrupt input packet"). A cut MP3 or Ogg prints none of these.
_DECODE_ERROR_RE = re.compile(
    r"Decoding error|Error while decoding|decode_frame\(\) failed|corrupt input packet|"
    r"Packet corrupt|Error submitting packet to decoder"
)
_LOG_PREFIX_RE = re.compile(r"^(?:\[[^\]]*\]\s*)+")

#: demuxers whose printed Duration is where the stream *ends* (counted from 0), not its
#: length. Measured (ffmpeg 9.0.2, ``ffmpeg -itsoffset 3 -i 6s.wav -c:a C out.EXT``,
#: every file decodes to the stream's own 6.0 s): Matroska/WebM 9.00-9.02 s (start
#: 3.00), NUT 9.00, ASF 8.97 (start 2.96); the length in MP4/M4A/MOV/3GP (6.00-6.02),
#: FLV 6.02, MPEG-PS 6.00, MPEG-TS 5.98 (start 4.39). Ogg is neither: Opus says 9.01
#: (start 3.00), FLAC 9.00 (start 0.00), Vorbis 6.00 (start 3.00), so Ogg gets no
#: length test at all; it never caught a cut Ogg file either (ffmpeg states the last
#: page's time: the end-of-stream check below does that)
_DURATION_IS_END = frozenset({"matroska", "nut", "asf"})

#: how a message names a container (ffmpeg's first demuxer name otherwise, upper case)
_CONTAINER_WORDS = {"mov": "MP4", "matroska": "Matroska", "wav": "WAV", "flac": "FLAC", "mp3": "MP3",
                    "ogg": "Ogg", "asf": "ASF", "aiff": "AIFF", "mpegts": "MPEG-TS", "caf": "CAF",
                    "w64": "Wave64"}

_OGG_CRC_TABLE = []
for _i in range(256):
    _r = _i << 24
    for _ in range(8):
        _r = ((_r << 1) ^ 0x04C11DB7) if _r & 0x80000000 else (_r << 1)
    _OGG_CRC_TABLE.append(_r & 0xFFFFFFFF)


def _ogg_crc(data: bytes) -> int:
    crc = 0
    table = _OGG_CRC_TABLE
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[((crc >> 24) ^ b) & 0xFF]
    return crc


#: an Ogg page is at most 27 + 255 + 255 * 255 bytes: the last complete page starts in
#: the last two pages' worth of the file
_OGG_TAIL_BYTES = 2 * (27 + 255 + 255 * 255)


def _ogg_ends_cleanly(path: Path) -> bool | None:
    """True if the last complete (CRC-checked) Ogg page has the end-of-stream flag,
    False if it lacks it (the file was cut, or its writer never finished), None if no
    valid page was found in the tail. ffmpeg itself prints nothing for a cut Ogg file
    and states the duration of what is there (measured: a cut 7-s Opus says 2.00 s)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            fh.seek(max(0, size - _OGG_TAIL_BYTES))
            buf = fh.read(_OGG_TAIL_BYTES)
    except OSError:
        return None
    i = len(buf)
    for _ in range(64):  # "OggS" inside packet data fails the CRC; bounded for hostile files
        i = buf.rfind(b"OggS", 0, i)
        if i < 0:
            return None
        if i + 27 <= len(buf) and buf[i + 4] == 0:
            nseg = buf[i + 26]
            end_head = i + 27 + nseg
            if end_head <= len(buf):
                end = end_head + sum(buf[i + 27:end_head])
                if end <= len(buf):
                    page = bytearray(buf[i:end])
                    want = struct.unpack("<I", page[22:26])[0]
                    page[22:26] = b"\0\0\0\0"
                    if _ogg_crc(bytes(page)) == want:
                        return bool(buf[i + 5] & 0x04)
        if i == 0:
            return None
    return None


@dataclass(frozen=True)
class _WavData:
    """A WAV's ``data`` chunk as its header states it and as the file holds it."""

    #: bytes the header claims (the ``ds64`` size for RF64); None: the "unknown" sentinel
    stated_bytes: int | None
    #: bytes of the file from the start of the samples to its end
    held_bytes: int
    byte_rate: int
    block_align: int


#: ``data`` chunk sizes that mean "unknown": a WAV written to a pipe cannot seek back to
#: fill in its sizes. ffmpeg writes 0xFFFFFFFF (``ffmpeg -i x.wav -f wav - | cat > y.wav``,
#: 9.0.2); 0 is what writers that never patch their header leave
_WAV_UNKNOWN_SIZES = (0, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF)


def _wav_data(path: Path) -> _WavData | None:
    """The ``data`` chunk of the WAV/RF64 at ``path``; None if it is not one or the chunk
    is not in the first 64 KiB."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return None
    if len(head) < 12 or head[8:12] != b"WAVE" or head[:4] not in (b"RIFF", b"RF64"):
        return None
    pos, byte_rate, block_align, ds64 = 12, 0, 0, None
    while pos + 8 <= len(head):
        cid, csize = head[pos:pos + 4], struct.unpack("<I", head[pos + 4:pos + 8])[0]
        if cid == b"ds64" and pos + 32 <= len(head):
            ds64 = struct.unpack("<Q", head[pos + 16:pos + 24])[0]
        elif cid == b"fmt " and pos + 22 <= len(head):
            byte_rate, block_align = struct.unpack("<IH", head[pos + 16:pos + 22])
        elif cid == b"data":
            stated = ds64 if head[:4] == b"RF64" and ds64 is not None else csize
            return _WavData(None if stated in _WAV_UNKNOWN_SIZES else stated, max(0, size - pos - 8),
                            byte_rate, block_align)
        pos += 8 + csize + (csize & 1)
    return None


def _wav_header_claim_s(path: Path) -> float | None:
    """Seconds of audio a WAV's own ``data`` chunk size claims, when that is more than
    the file holds; None otherwise (complete file, or a streamed WAV with a placeholder
    size). ffmpeg re-estimates a cut WAV's duration from its size (measured: a cut 7-s
    WAV says ``Estimating duration from bitrate`` and 2.33 s), so the claim is read here."""
    w = _wav_data(path)
    if w is None or w.stated_bytes is None or not w.byte_rate or w.stated_bytes <= w.held_bytes:
        return None
    return w.stated_bytes / w.byte_rate


#: the decode-error lines ffmpeg's WAV demuxer prints for a packet it read short
_SHORT_PACKET_RE = re.compile(r"Packet corrupt|corrupt input packet")


def _streamed_wav_complete(path: Path) -> bool:
    """True for a WAV whose header gives its size as unknown (a pipe's) and whose
    samples end on a whole frame: ffmpeg reads such a file in fixed-size packets to its
    end and flags the last, shorter one "Packet corrupt" / "corrupt input packet" (9.0.2;
    every sample decodes), so those two lines mean nothing for it. A stream cut inside a
    frame is still damaged; one cut on a frame boundary cannot be told from a complete one."""
    w = _wav_data(path)
    return (w is not None and w.stated_bytes is None and w.block_align > 0
            and w.held_bytes > 0 and w.held_bytes % w.block_align == 0)


def _check_complete(stderr: str, path: Path | None, what: str, n: int, rate: int,
                    start_s: float | None, duration_s: float | None, allow_partial: bool) -> None:
    """Raise TruncatedInputError (or warn, with ``allow_partial``) when the decode of
    ``what`` (``n`` samples at ``rate``) is partial: ffmpeg reported decode errors, or it
    is much shorter than the container states (see TRUNCATED_MIN_S), or (whole-file
    decodes) a WAV's data chunk or an Ogg stream's missing end page says the file was
    cut."""
    if path is not None:
        stderr = unquote_path(stderr, path)
    d = parse_dump(stderr)
    decoded_s = n / rate if rate else 0.0
    whole = start_s is None and duration_s is None
    fmt = d["format_name"].split(",")[0]
    stated = None
    if d["duration"] and not d["duration_estimated"] and not d["has_video"] and fmt != "ogg":
        stated = float(d["duration"])
        if fmt in _DURATION_IS_END:
            # the stream's own samples are what decodes (nothing is put in for a
            # delayed start), so its length is the end less where it starts
            stated = max(0.0, stated - max(0.0, d["audio_start_s"] or d["start_s"] or 0.0))
    source = f"its {_CONTAINER_WORDS.get(fmt, fmt.upper() or 'container')} header states"
    if path is not None and whole and fmt == "wav":
        claim = _wav_header_claim_s(path)
        if claim is not None:
            stated, source = claim, "its WAV data chunk claims"
    errors = [_LOG_PREFIX_RE.sub("", ln.strip()) for ln in stderr.splitlines()
              if _DECODE_ERROR_RE.search(ln)]
    if errors and path is not None and fmt == "wav" and _streamed_wav_complete(path):
        errors = [e for e in errors if not _SHORT_PACKET_RE.search(e)]
    expected = None
    if stated is not None:
        expected = max(0.0, stated - float(start_s or 0.0))
        if duration_s is not None:
            expected = min(expected, float(duration_s))
    if expected is None:
        of = " (its stated length is unknown)"
    elif whole:
        of = f" of the {expected:.2f} s {source}"
    else:
        of = f" of the {expected:.2f} s asked for from {float(start_s or 0):.2f} s ({source} {stated:.2f} s)"
    problem = None
    if expected is not None and (expected - decoded_s) > max(TRUNCATED_MIN_S, TRUNCATED_MIN_SHARE * expected):
        problem = f"{what} is truncated: decoded {decoded_s:.2f} s{of}"
        if errors:
            problem += f" (ffmpeg: {errors[0]})"
    elif errors:
        problem = (f"{what} is damaged: ffmpeg reported {len(errors)} decode error(s) "
                   f"(first: {errors[0]}); decoded {decoded_s:.2f} s{of}")
    elif path is not None and whole and fmt == "ogg" and _ogg_ends_cleanly(path) is False:
        problem = (f"{what} is truncated: its Ogg stream has no end-of-stream page (cut off or "
                   f"never finished); decoded {decoded_s:.2f} s, the full length is unknown")
    if problem is None:
        return
    if allow_partial:
        warnings.warn(f"{problem}; encoding the {decoded_s:.2f} s that decode (allow_partial)",
                      RatecontrolWarning, stacklevel=3)
        return
    raise TruncatedInputError(f"{problem}; re-copy or re-export it, or encode what decodes",
                              options={"allow_partial": True})
