"""Encoding with a preset rung, and encode+decode round trips for scoring.

Every output is written to a temporary file in the destination folder and moved into
place with ``os.replace`` only after ffmpeg succeeded, so a failed or interrupted encode
never leaves a partial file under the final name.

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
import os
import re
import struct
import queue
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

from .. import fsutil
from ..errors import EmptyAudioError, FFmpegError, OutputError, UsageError
from ..presets import Preset, Rung, load_preset
from ._decode import decode_blocks, resample_filter
from ._ffmpeg import failure, ff_path, ffmpeg_path, has_loopback_decoder, require_encoder, run
from ._inspect import MediaInfo, check_input_path, inspect
from ._layouts import canonical_layout

__all__ = ["encode_array", "encode_file", "remux", "roundtrip", "roundtrip_info", "RoundTrip",
           "WrittenFile", "ENCODER_INPUT", "StreamedEncode"]

#: What every encode of ratecontrol feeds the encoder: the decoded track as float32
#: PCM (f32le on a pipe) at the output rate and channel count. Probes and the shipped
#: file take this one path, so the encoder sees the same samples *and the same sample
#: format*: libopus is told the input's bit depth (ffmpeg's libopusenc passes
#: bits_per_raw_sample to OPUS_SET_LSB_DEPTH: 16 for s16 input, 24 by default), and on
#: quiet material that changed a real recording's p10 from 4.164 (float) to 3.353
#: (s16 from the source file) at the same rung (issue 12). docs/scoring.md.
ENCODER_INPUT = "f32le"

#: muxers that can store an attached picture, and the picture codecs each accepts as is
_COVER_CODECS = {
    "mp3": {"mjpeg", "png", "gif", "bmp", "tiff", "webp"},
    "ipod": {"mjpeg", "png", "bmp"},
    "mp4": {"mjpeg", "png", "bmp"},
    "mov": {"mjpeg", "png", "bmp"},
    "flac": {"mjpeg", "png", "gif", "bmp", "tiff", "webp"},
    "matroska": None,  # anything: stored as an attachment-like stream
}


@dataclass(frozen=True)
class WrittenFile:
    """What encode_file / encode_array wrote."""

    path: Path
    size_bytes: int
    duration_s: float
    #: size_bytes * 8 / duration_s / 1000 (the whole file, container + tags included)
    bitrate_kbps: float
    preset: str
    rung: str


@dataclass(frozen=True)
class RoundTrip:
    """Result of :func:`roundtrip_info`: decoded audio plus what the encode cost."""

    audio: np.ndarray
    size_bytes: int
    bitrate_kbps: float
    #: the encoded file, when asked to keep it (``roundtrip_info(keep=True)``)
    encoded_path: Path | None = None


def _resolve(preset, rung, channels: int) -> tuple[Preset, Rung]:
    p = load_preset(preset)
    require_encoder(p)
    if isinstance(rung, Rung):
        return p, rung
    return p, p.rung(rung, channels)


def check_output_path(out_path, in_path: Path | None = None) -> Path:
    """Refuse an output that is a folder, sits in a missing/unwritable folder, or is the input."""
    out = Path(out_path)
    if out.is_dir():
        raise OutputError(f"output path is a directory: {out} (give a file name)")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output folder does not exist: {parent} (create it first)")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output folder is not writable: {parent}")
    if in_path is not None and out.exists() and out.resolve() == in_path.resolve():
        raise OutputError(f"output would overwrite the input: {out} (choose another name)")
    return out


def _temp_path(out: Path) -> Path:
    return fsutil.temp_sibling(out)


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


def _add_filters(kw: dict, out_rate: int | None, preset: Preset, in_rate: int,
                 in_ch: int, out_ch: int) -> None:
    """Resampling / channel-count / layout options for one encode (edits ``kw``).

    3..8 output channels are coded in ``canonical_layout(out_ch, encoder)`` (the Vorbis
    I order Opus mapping family 1 and libvorbis require, 6.1(back) for AAC's 7-channel
    configuration; media/_layouts.py): FLAC 5.1 decodes as "5.1(side)", which libopus
    refuses, and aformat makes swresample move SL/SR onto BL/BR (gain 1). An array
    encode declares that layout on its input already (the track was decoded into it), so
    there the filter changes nothing."""
    filters = []
    layout = canonical_layout(out_ch, preset.encoder)
    if out_ch != in_ch and layout is None:
        kw["ac"] = out_ch
    if layout is not None:
        filters.append(f"aformat=channel_layouts={layout}")
    if out_rate and int(out_rate) != int(in_rate):
        filters.append(resample_filter(int(out_rate)))
        kw["ar"] = int(out_rate)
    if filters:
        kw["af"] = ",".join(filters)


def _output_kwargs(preset: Preset, rung: Rung, channels: int = 2) -> dict:
    kw = {"acodec": preset.encoder, "format": preset.format}
    kw.update(preset.options)
    if preset.encoder == "libopus" and channels > 2:
        # mapping family 1 with libopus's surround encoder (ffmpeg's default -1 writes a
        # family-1 header but codes each stream without the surround masking analysis
        # and LFE handling that opus_multistream_surround_encoder_create does)
        kw["mapping_family"] = 1
    kw.update(rung.options)
    return kw


def _finish(tmp: Path, out: Path, preset: Preset, rung: Rung, duration_s: float | None = None) -> WrittenFile:
    size = tmp.stat().st_size
    if size == 0:
        raise OutputError(f"ffmpeg wrote an empty file for {out}; nothing was saved")
    fsutil.publish(tmp, out)
    dur = duration_s
    if dur is None:
        try:
            dur = inspect(out).duration_s or 0.0
        except Exception:  # the file is written; a failed re-probe only loses the figure
            dur = 0.0
    return WrittenFile(
        path=out, size_bytes=size, duration_s=dur,
        bitrate_kbps=(size * 8 / dur / 1000.0) if dur > 0 else float("nan"),
        preset=preset.name, rung=rung.label,
    )


def _as_audio(audio) -> np.ndarray:
    # asanyarray: a mapped decode (decode_to_disk) stays itself, so the blocks fed to
    # ffmpeg count towards dropping its pages (_decode.RELEASE_BYTES)
    a = np.asanyarray(audio)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise UsageError(f"audio must be [channels, samples], got shape {a.shape}")
    if a.shape[0] > 64:
        raise UsageError(
            f"audio has {a.shape[0]} channels; expected [channels, samples] (transposed?)"
        )
    if a.shape[1] == 0:
        raise EmptyAudioError("cannot encode an empty signal (0 samples)")
    a = a.astype(np.float32, copy=False)
    # a minute of 48 kHz at a time: np.isfinite of a whole hour of stereo was a 0.35-GB
    # bool array (issue 23 class 9)
    step = 48_000 * 60
    if not all(np.isfinite(a[:, i:i + step]).all() for i in range(0, a.shape[1], step)):
        raise UsageError("audio contains NaN or infinite samples")
    return a


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


#: stdin feed of an array encode: a minute of 48 kHz stereo float32 (23 MB) at a time,
#: so a long (mapped, media.decode_to_disk) track is never copied whole
_FEED_SAMPLES = 48_000 * 60


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


def encode_array(
    audio: np.ndarray,
    sample_rate_hz: int,
    preset,
    rung,
    out_path,
    metadata: dict | None = None,
    tags_from=None,
) -> WrittenFile:
    """Encode float32 ``[C, N]`` audio (fed to ffmpeg as f32le on stdin, ENCODER_INPUT).

    This is ratecontrol's one encode path: probes and the shipped file both go through
    it, so what was scored is what is shipped. preset: a Preset or a name/path for
    load_preset. rung: a Rung, or a label/index into ``preset.rungs_for(C)``.
    metadata: tags to write. tags_from: a source file whose tags and cover art the
    output keeps (``metadata`` entries override its tags). Returns an WrittenFile.
    """
    with StreamedEncode(audio, sample_rate_hz, preset, rung, out_path, metadata=metadata, tags_from=tags_from,
                        decode_back=False) as job:
        return job.finish()


class StreamedEncode:
    """One ffmpeg process that encodes ``audio`` [C, N] to ``out_path`` *and* decodes
    its own packets back (a loopback decoder, ``-dec``, ffmpeg 7.0+), so the written
    file can be scored while it is being encoded: the check rides on the encode.

    ``blocks()`` yields the decode aligned with ``audio`` (the preset's residual delay
    removed, cut or padded to exactly N samples) as float32 ``[C, <= block_samples]``;
    ``finish()`` waits for ffmpeg and renames the file into place. Leaving the ``with``
    block without ``finish()`` (an error, a failed check) kills ffmpeg and removes the
    temp file. The loopback decode equals a decode of the written file sample for
    sample, priming removed (tests/test_oneencode.py, every preset); where ffmpeg has no
    loopback decoder the file is decoded after the encode instead (same samples).
    ``decode_back=False`` makes it the plain array encode (``encode_array``).
    """

    def __init__(self, audio: np.ndarray, sample_rate_hz: int, preset, rung, out_path,
                 metadata: dict | None = None, tags_from=None, block_samples: int = _FEED_SAMPLES,
                 decode_back: bool = True):
        self.audio = _as_audio(audio)
        self.rate = int(sample_rate_hz)
        self.channels, self.n = self.audio.shape
        self.preset, self.rung = _resolve(preset, rung, self.channels)
        self.src_file = check_input_path(tags_from) if tags_from is not None else None
        self.out = check_output_path(out_path, self.src_file)
        self.metadata, self.block_samples = metadata, int(block_samples)
        # decode_back=False: a plain encode (media.encode_array), nothing read back
        self.loopback = decode_back and has_loopback_decoder()
        self._proc = self._tmp = self._extras = self._errf = self._writer = None
        self._write_error: BaseException | None = None
        self._done = False
        self._stop = threading.Event()
        self._read_thread: threading.Thread | None = None

    def __enter__(self) -> "StreamedEncode":
        p, r = self.preset, self.rung
        layout = canonical_layout(self.channels, p.encoder)
        # a surround track's rows are in its coding layout (probing/track.py decoded it so)
        chans = {"ch_layout": layout} if layout else {"ac": self.channels}
        src = ffmpeg.input("pipe:", format=ENCODER_INPUT, ar=self.rate, **chans)
        kw = _output_kwargs(p, r, self.channels)
        _add_filters(kw, p.sample_rate_hz, p, self.rate, self.channels, min(self.channels, p.max_channels))
        self._tmp = _temp_path(self.out)
        try:
            if self.metadata or self.src_file is not None:
                cover_in = ffmpeg.input(ff_path(self.src_file)) if self.src_file is not None else None
                self._extras = _source_extras(self.src_file, cover_in, p, self.out, self.metadata)
                kw.update(self._extras.kw)
                meta_in = ffmpeg.input(ff_path(self._extras.meta_path), format="ffmetadata")
                stream = _build([src["a:0"], *self._extras.streams], meta_in, self._extras.meta_path,
                                ff_path(self._tmp), kw)
            else:
                stream = _build([src["a:0"]], None, None, ff_path(self._tmp), kw)
            cmd = ffmpeg.compile(stream.global_args("-hide_banner"), cmd=ffmpeg_path(), overwrite_output=True)
            if self.loopback:
                # output 0 stream 0 is the encoded audio: decode its packets, raw f32 on stdout
                # (back at the input's rate, with the resampler a decode of the file uses)
                lb = "anull" if int(p.sample_rate_hz or self.rate) == self.rate else resample_filter(self.rate)
                # (3+ channels: no -ac, which would convert to ffmpeg's default layout; the
                # decoder gives back the layout the encoder was fed)
                cmd += ["-dec", "0:0", "-filter_complex", f"[dec:0]{lb}[rc_loop]", "-map", "[rc_loop]",
                        "-c:a", "pcm_f32le", "-ar", str(self.rate),
                        *(["-ac", str(self.channels)] if layout is None else []),
                        "-f", "f32le", "pipe:1"]
            self._cmd = cmd
            self._errf = tempfile.TemporaryFile()
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=self._errf,
                                          stdout=subprocess.PIPE if self.loopback else subprocess.DEVNULL)
        except BaseException:
            self._cleanup()
            raise
        self._writer = threading.Thread(target=self._feed, name="ratecontrol-feed", daemon=True)
        self._writer.start()
        return self

    def _feed(self) -> None:
        try:
            for a in range(0, self.n, _FEED_SAMPLES):
                block = np.ascontiguousarray(self.audio[:, a : a + _FEED_SAMPLES].T, dtype="<f4")
                self._proc.stdin.write(memoryview(block).cast("B"))
        except (BrokenPipeError, ValueError, OSError):  # ffmpeg stopped (or was killed)
            pass
        except BaseException as exc:  # pragma: no cover - reported by finish()
            self._write_error = exc
        finally:
            try:
                self._proc.stdin.close()
            except OSError:
                pass

    #: decoded blocks read ahead of the consumer: ffmpeg's stdout pipe holds 64 KB, so
    #: without a reader thread the encode stalled whenever the check computed (a 4-min
    #: Opus check ran 5.0 s instead of ~2.6 s); 4 blocks = 4 minutes of 48 kHz stereo
    #: (92 MB) at most
    READ_AHEAD_BLOCKS = 4

    def _reader(self, q: "queue.Queue") -> None:
        want = 4 * self.channels * self.block_samples
        try:
            while not self._stop.is_set():
                raw = self._proc.stdout.read(want)
                while not self._stop.is_set():
                    try:
                        q.put(raw, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if not raw:
                    return
        except (OSError, ValueError):  # stdout closed by a cancel
            q.put(b"")

    def _raw_blocks(self):
        """Decoded float32 [C, k] blocks as ffmpeg produces them (priming removed)."""
        if self.loopback:
            frame = 4 * self.channels
            q: queue.Queue = queue.Queue(maxsize=self.READ_AHEAD_BLOCKS)
            self._read_thread = threading.Thread(target=self._reader, args=(q,), name="ratecontrol-read",
                                                 daemon=True)
            self._read_thread.start()
            carry = b""
            while True:
                raw = q.get()
                if not raw:
                    break
                raw = carry + raw
                cut = len(raw) - len(raw) % frame
                carry = raw[cut:]
                if cut:
                    yield np.frombuffer(raw, dtype="<f4", count=cut // 4).reshape(-1, self.channels).T
            self._wait()
        else:
            self._wait()
            yield from decode_blocks(self._tmp, self.rate, self.channels, self.block_samples)

    def blocks(self):
        """The decode, aligned with the input: exactly N samples in all."""
        delay = _delay_at(self.preset, self.rate)
        yield from _aligned(self._raw_blocks(), self.channels, self.n, self.block_samples, delay)

    def _wait(self) -> None:
        if self._done:
            return
        rc = self._proc.wait()
        self._writer.join()
        self._done = True
        if rc != 0:
            self._errf.seek(0)
            err = self._errf.read().decode("utf-8", "replace")
            raise failure(f"encoding {fsutil.final_name(self.out)} with preset '{self.preset.name}' rung {self.rung.label}",
                          self._cmd, err)
        if self._write_error is not None:
            raise self._write_error

    def finish(self) -> WrittenFile:
        """Wait for ffmpeg (reading any decode left unread) and rename the file into place."""
        if self.loopback and not self._done:
            if self._read_thread is not None:  # blocks() stopped early: drop the rest
                self._stop.set()
                self._read_thread.join()
            while self._proc.stdout.read(1 << 20):
                pass
        self._wait()
        return _finish(self._tmp, self.out, self.preset, self.rung, duration_s=self.n / self.rate)

    def _cleanup(self) -> None:
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._writer is not None:
            self._writer.join()
        if self._read_thread is not None:
            self._read_thread.join()
        for f in (getattr(self._proc, "stdout", None), self._errf):
            if f is not None:
                f.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
        if self._extras is not None:
            self._extras.meta_path.unlink(missing_ok=True)

    def __exit__(self, *exc) -> None:
        self._cleanup()


def _aligned(blocks, channels: int, n_samples: int, block_samples: int, delay: int):
    """Blocks with ``delay`` samples dropped (or zeros put first when negative), cut or
    zero-padded to exactly ``n_samples``."""
    skip = max(delay, 0)
    emitted = 0
    if delay < 0:
        lead = min(-delay, n_samples)
        yield np.zeros((channels, lead), np.float32)
        emitted = lead
    try:
        for x in blocks:
            if skip:
                k = min(skip, x.shape[1])
                x, skip = x[:, k:], skip - k
            x = x[:, : n_samples - emitted]
            if x.shape[1]:
                emitted += x.shape[1]
                yield np.ascontiguousarray(x, dtype=np.float32)
            if emitted >= n_samples:
                break
    finally:
        close = getattr(blocks, "close", None)
        if close:
            close()
    while emitted < n_samples:
        k = min(block_samples, n_samples - emitted)
        yield np.zeros((channels, k), np.float32)
        emitted += k


def remux(encoded_path, out_path, preset, rung, metadata: dict | None = None, tags_from=None,
          tags_info: MediaInfo | None = None, duration_s: float | None = None) -> WrittenFile:
    """Copy the audio of a file this preset encoded into ``out_path`` (no re-encode),
    with the tags and cover art of ``tags_from`` plus ``metadata``.

    ``tags_info``: ``inspect(tags_from)`` when the caller has it, ``duration_s``: the
    encode's length when known (each saves an ffmpeg run, ~20 ms, of a short
    input's ~0.7 s encode).

    Used when a probe already encoded the whole input at the chosen rung: the shipped
    file then holds those exact packets. Stream copy keeps the codec's priming and
    padding (Opus pre-skip and end trim, the LAME gapless header, the MP4 edit list):
    tests/test_oneencode.py decodes every preset's remux against a direct encode.
    """
    p = load_preset(preset)
    r = rung if isinstance(rung, Rung) else p.rung(rung, 2)
    enc = check_input_path(encoded_path)
    src_file = check_input_path(tags_from) if tags_from is not None else None
    out = check_output_path(out_path, src_file)
    src = ffmpeg.input(ff_path(enc))
    kw = {"format": p.format, "c:a": "copy"}
    tmp = _temp_path(out)
    extras = None
    try:
        cover_in = ffmpeg.input(ff_path(src_file)) if src_file is not None else None
        extras = _source_extras(src_file, cover_in, p, out, metadata, tags_info)
        kw.update(extras.kw)
        meta_in = ffmpeg.input(ff_path(extras.meta_path), format="ffmetadata")
        stream = _build([src["a:0"], *extras.streams], meta_in, extras.meta_path, ff_path(tmp), kw)
        run(stream, what=f"writing {fsutil.final_name(out)} from the chosen probe's encode")
        return _finish(tmp, out, p, r, duration_s)
    finally:
        tmp.unlink(missing_ok=True)
        if extras is not None:
            extras.meta_path.unlink(missing_ok=True)


def encode_file(
    in_path,
    out_path,
    preset,
    rung,
    metadata: dict | None = None,
    start_s: float | None = None,
    duration_s: float | None = None,
    channels: int | None = None,
    sample_rate_hz: int | None = None,
) -> WrittenFile:
    """Encode an audio file with one preset rung the way plain ffmpeg does, keeping its
    tags and cover art: ffmpeg decodes the file and feeds the encoder the decoder's
    own sample format.

    Not ratecontrol's encode path (that is :func:`encode_array` from the decoded track,
    ENCODER_INPUT); this is the plain-ffmpeg baseline of the benches and a tool for
    tests. metadata: extra/overriding tags. start_s / duration_s: encode only this
    span. channels: downmix/upmix to this count (None keeps the source's, capped at the
    preset's max_channels). sample_rate_hz: output rate (the preset's forced rate wins).
    """
    src_path = check_input_path(in_path)
    info = inspect(src_path)
    out_ch = int(channels) if channels is not None else info.channels
    p, r = _resolve(preset, rung, min(out_ch, load_preset(preset).max_channels))
    out = check_output_path(out_path, src_path)
    if start_s is not None and start_s < 0:
        raise UsageError(f"start_s must be >= 0, got {start_s}")
    if duration_s is not None and duration_s <= 0:
        raise UsageError(f"duration_s must be > 0, got {duration_s}")
    in_kw = {}
    if start_s:
        in_kw["ss"] = f"{float(start_s):.6f}"
    if duration_s is not None:
        in_kw["t"] = f"{float(duration_s):.6f}"
    src = ffmpeg.input(ff_path(src_path), **in_kw)

    kw = _output_kwargs(p, r, min(out_ch, p.max_channels))
    _add_filters(kw, p.sample_rate_hz or sample_rate_hz, p, info.sample_rate_hz,
                 info.channels, min(out_ch, p.max_channels))
    tmp = _temp_path(out)
    extras = None
    try:
        extras = _source_extras(src_path, src, p, out, metadata)
        kw.update(extras.kw)
        meta_in = ffmpeg.input(ff_path(extras.meta_path), format="ffmetadata")
        stream = _build([src["a:0"], *extras.streams], meta_in, extras.meta_path, ff_path(tmp), kw)
        run(stream, what=f"encoding {src_path.name} -> {out.name} with preset "
                         f"'{p.name}' rung {r.label}")
        return _finish(tmp, out, p, r)
    finally:
        tmp.unlink(missing_ok=True)
        if extras is not None:
            extras.meta_path.unlink(missing_ok=True)


def _delay_at(preset: Preset, sample_rate_hz: int) -> int:
    """The preset's residual decoder delay converted to ``sample_rate_hz`` samples."""
    if not preset.decoder_delay_samples:
        return 0
    return int(round(preset.decoder_delay_samples * sample_rate_hz
                     / preset.decoder_delay_rate_hz))


def decode_aligned(path, preset, sample_rate_hz: int, channels: int, n_samples: int) -> np.ndarray:
    """Decode a file this preset encoded so it lines up with its source sample-accurately.

    ffmpeg removes the codec's priming (Opus pre-skip, LAME gapless header, MP4 edit
    list); the preset's measured residual delay is removed here; the result is cut or
    zero-padded at the end to ``n_samples``. Used by roundtrip; the full-track check
    reads the same samples as a stream (:func:`decode_aligned_blocks`).
    """
    blocks = list(decode_aligned_blocks(path, preset, sample_rate_hz, channels, n_samples, max(int(n_samples), 1)))
    return np.ascontiguousarray(np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0], dtype=np.float32)


def decode_aligned_blocks(path, preset, sample_rate_hz: int, channels: int, n_samples: int,
                          block_samples: int):
    """:func:`decode_aligned` as a stream: float32 ``[C, <= block_samples]`` blocks.

    One ffmpeg process decodes the whole file (no seeking: ffmpeg's -ss is not
    sample-accurate in MP4/AAC, measured off by 84-1001 samples at 44.1 kHz), so
    memory holds a block, not the track. The blocks add up to exactly ``n_samples``.
    """
    p = load_preset(preset)
    rate, ch = int(sample_rate_hz), int(channels)
    yield from _aligned(decode_blocks(path, rate, ch, block_samples), ch, int(n_samples), int(block_samples),
                        _delay_at(p, rate))


def roundtrip_info(audio: np.ndarray, sample_rate_hz: int, preset, rung, keep: bool = False) -> RoundTrip:
    """Encode ``audio`` [C, N] with a rung, decode it back; see :func:`roundtrip`.

    ``keep``: leave the encoded file in this process's temp folder
    (``fsutil.run_temp_dir``) and return its path as ``encoded_path``; the caller
    deletes it (a kill leaves it to the next run's clean-up)."""
    a = _as_audio(audio)
    channels, n = a.shape
    p, r = _resolve(preset, rung, channels)
    enc = fsutil.temp_sibling(fsutil.run_temp_dir() / f"rt{p.extension}")
    try:
        with StreamedEncode(a, sample_rate_hz, p, r, enc, block_samples=max(n, 1)) as job:
            dec = np.concatenate(list(job.blocks()), axis=1)
            size = job.finish().size_bytes
    except BaseException:
        enc.unlink(missing_ok=True)
        raise
    if not keep:
        enc.unlink(missing_ok=True)
    dur = n / float(sample_rate_hz)
    return RoundTrip(audio=np.ascontiguousarray(dec, dtype=np.float32), size_bytes=size,
                     bitrate_kbps=size * 8 / dur / 1000.0, encoded_path=enc if keep else None)


def roundtrip(audio: np.ndarray, sample_rate_hz: int, preset, rung,
              return_size: bool = False):
    """Encode + decode back at ``sample_rate_hz``, aligned sample-accurately, N samples.

    The codec's priming/padding is removed by ffmpeg (Opus pre-skip, the LAME gapless
    header, the MP4 edit list); any residual constant delay the preset declares is
    removed here; the result is cut (or zero-padded at the end) to exactly the input's
    N samples so it lines up with the reference for scoring.

    Returns float32 ``[C, N]``, or ``(audio, size_bytes)`` with ``return_size=True``
    (size of the whole encoded file, container included). ``roundtrip_info`` returns a
    RoundTrip with the bitrate too.
    """
    rt = roundtrip_info(audio, sample_rate_hz, preset, rung)
    return (rt.audio, rt.size_bytes) if return_size else rt.audio
