"""decode(path_or_bytes, ...) -> float32 [C, N] through ffmpeg; decode_to_disk (the same,
mapped from a temp file, for long inputs); decode_aligned(_blocks): a file a preset
encoded, lined up with its source sample for sample. Every decode of an input is
checked for being complete (media/_complete.py).

ffmpeg writes 32-bit float WAV to stdout; the WAV header tells us the channel count and
rate ffmpeg actually produced (so no separate inspect call is needed) and the rest of the
stream is the interleaved samples. Only the first audio stream is decoded
(``-map 0:a:0``): cover art, video and data streams are ignored.

Resampling: ``aresample=resampler=soxr:precision=28`` when this ffmpeg has libsoxr
(the imageio-ffmpeg build has it). Precision 28 bits is soxr's "very high quality"
setting (ffmpeg-resampler docs: 20 = HQ, 28 = VHQ); it keeps aliasing/imaging below
-160 dB, far under anything a codec or ViSQOL can see, for a few ms per second of audio.
Without soxr we fall back to ffmpeg's own swr with a 64-tap-per-phase windowed sinc
(default is 32) so the fallback stays close to soxr. Both resamplers compensate their
own filter delay, so resampled output stays sample-aligned with the source (checked in
tests/test_media.py).
"""
from __future__ import annotations

import mmap
import os
import re
import struct
from pathlib import Path

import ffmpeg
import numpy as np

from ..errors import EmptyAudioError, FFmpegError, FFmpegNotFoundError, InputError, NotAudioError, UsageError
from ..fsutil import run_temp_dir, temp_sibling
from ..presets import Preset, load_preset
from ._complete import _check_complete
from ._ffmpeg import batch_filter, decoder_options, ff_path, ffmpeg_path, has_soxr, run, stream_stdout
from ._inspect import check_input_path
from ._stderr import no_decoder, no_decoder_message, nothing_decoded, open_error

__all__ = ["decode", "decode_aligned", "decode_aligned_blocks", "decode_blocks", "decode_to_disk", "resample_filter"]


def resample_filter(sample_rate_hz: int) -> str:
    """The ``-af`` expression used everywhere ratecontrol resamples with ffmpeg."""
    if has_soxr():
        return f"aresample={int(sample_rate_hz)}:resampler=soxr:precision=28"
    return f"aresample={int(sample_rate_hz)}:filter_size=64:phase_shift=10:cutoff=0.97"


def _pcm_output(src, sample_rate_hz: int | None, channels: int | None, fmt: str, dest: str = "pipe:",
                layout: str | None = None):
    """The one way ratecontrol asks ffmpeg for float32 PCM of the first audio stream.

    ``layout``: convert to this channel layout by channel name (swresample; media/_layouts.py).
    Without it, 1 or 2 ``channels`` are ffmpeg's standard down/up-mix (``-ac``), and 3 or
    more are taken as the file has them: ``-ac N`` would convert a file to ffmpeg's
    default N-channel layout (an AAC 6.1(back) output "to 6.1" mixes its back pair into
    BC), so outputs of a surround track are read in their own layout, which is the
    track's (the encoder was fed it)."""
    out_kwargs = {"map": "0:a:0", "acodec": "pcm_f32le", "format": fmt,
                  "map_metadata": "-1", "fflags": "+bitexact"}
    filters = [f"aformat=channel_layouts={layout}"] if layout else []
    if sample_rate_hz is not None:
        filters.append(resample_filter(sample_rate_hz))
        out_kwargs["ar"] = int(sample_rate_hz)
    batch = batch_filter()  # big frames to the pcm encoder, muxer and pipe (_ffmpeg.OUT_FRAME_SAMPLES)
    if batch:
        filters.append(batch)
    if filters:
        out_kwargs["af"] = ",".join(filters)
    if channels is not None and not layout and int(channels) <= 2:
        out_kwargs["ac"] = int(channels)
    return src.output(dest, **out_kwargs)


def decode_blocks(path, sample_rate_hz: int, channels: int, block_samples: int):
    """Decode a whole file as a stream of float32 ``[channels, <= block_samples]`` blocks.

    One ffmpeg process, no seeking, so memory holds a block at a time. Used where a
    file we encoded is read back whole (the full-track check); raises FFmpegError.
    """
    ch = int(channels)
    stream = _pcm_output(ffmpeg.input(ff_path(check_input_path(path)), **decoder_options()), int(sample_rate_hz), ch,
                         "f32le")
    for frames in _frames(stream_stdout(stream, 4 * ch * int(block_samples), what=f"decoding {path}"), ch):
        yield frames.T.copy()


def _frames(blocks, channels: int):
    """Interleaved float32 frames [k, C] from byte blocks that may split a frame."""
    frame, carry = 4 * channels, b""
    for raw in blocks:
        raw = carry + raw
        cut = len(raw) - len(raw) % frame
        carry = raw[cut:]
        if cut:
            yield np.frombuffer(raw, dtype="<f4", count=cut // 4).reshape(-1, channels)


#: read size of a decode. Above glibc's largest dynamic mmap threshold (32 MiB on 64-bit),
#: so every block is its own mapping and goes back to the OS when converted: with 4-MiB
#: blocks an hour of 48 kHz stereo peaked at 2.6 GB (the freed blocks stayed in the heap),
#: with 64 MiB at 1.45 GB for its 1.32 GB of samples
_BLOCK_BYTES = 1 << 26


def _parse_wav_blocks(blocks: list[bytes], what: str) -> tuple[np.ndarray, int]:
    """(float32 [C, N], sample rate) from ffmpeg's streamed pcm_f32le WAV/RF64, given as
    stdout blocks; the list is emptied as it goes.

    Streamed WAVs have placeholder chunk sizes, so the ``data`` chunk is taken to run
    to the end of the stream.

    The header (fmt + the start of data) comes from the first block(s); the samples
    are de-interleaved block by block into one preallocated [C, N] array.
    """
    head = b""
    while blocks and len(head) < 65536:
        head += blocks.pop(0)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        raise FFmpegError(f"ffmpeg did not return a WAV stream while decoding {what}")
    pos, channels, rate, body = 12, None, 0, None
    while pos + 8 <= len(head):
        cid, size = head[pos:pos + 4], struct.unpack("<I", head[pos + 4:pos + 8])[0]
        if cid == b"fmt ":
            channels, rate = struct.unpack("<HI", head[pos + 10:pos + 16])
        elif cid == b"data":
            body = pos + 8
            break
        pos += 8 + size + (size & 1)
    if channels is None or body is None:
        raise FFmpegError(f"ffmpeg returned a WAV stream without fmt/data while decoding {what}")
    n = (len(head) - body + sum(len(b) for b in blocks)) // (4 * channels)
    audio = np.empty((channels, n), dtype=np.float32)
    filled = 0

    def drain():  # hand blocks over one at a time so each is freed once converted
        yield head[body:]
        while blocks:
            yield blocks.pop(0)

    for x in _frames(drain(), channels):
        audio[:, filled:filled + len(x)] = x.T
        filled += len(x)
    return audio, int(rate)


def _raise_decode_error(exc: FFmpegError, what: str) -> None:
    """Turn a failed decode into the error the user can act on; return if ffmpeg merely
    decoded nothing (the caller reports an empty input)."""
    if isinstance(exc, FFmpegNotFoundError):
        raise exc
    err = exc.stderr
    if "matches no streams" in err:
        raise NotAudioError(f"{what} has no audio stream; pass an audio file") from None
    if "Input #0" not in err:
        raise open_error(Path(what), err, exc) from None
    if no_decoder(err):
        raise NotAudioError(no_decoder_message(what, err)) from None
    m = re.search(r"Rematrix is needed between (.+?) and (.+?) but", err)
    if m:
        # 9+ channels without a channel layout (e.g. a 32-channel WAV): swresample has no
        # standard matrix to fold unnamed channels into stereo/mono
        raise InputError(
            f"{what} has {m.group(1)} with no channel layout, which ffmpeg cannot downmix to "
            f"{m.group(2)}; mix it down first, e.g. ffmpeg -i IN -af \"pan=stereo|c0=c0|c1=c1\" OUT.wav"
        ) from None
    if not nothing_decoded(err):
        raise exc


#: bytes a mapped decode hands out as slices before its pages are dropped from this
#: process again (madvise MADV_DONTNEED). Every step reads a long track in pieces of a
#: minute or less (48 kHz stereo float32: 23 MB a minute), so 64 MiB keeps a few of them
#: resident. Without it every page read stayed in the process: a 60-minute encode's RSS
#: was 2.25 GB against 1.0 GB for 10 minutes (issue 23; bench/bench_memory.py)
RELEASE_BYTES = 64 << 20


class _Pager:
    """Counts what slices of one mapping hand out; past RELEASE_BYTES it drops the
    mapping's pages from the process. The mapping is read-only and shared (file-backed),
    so a page still in use is read back from the page cache on its next access (a minor
    fault, no disk read while memory lasts): correct whatever another thread is doing."""

    def __init__(self, mm: mmap.mmap):
        self.mm, self.handed = mm, 0

    def add(self, nbytes: int) -> None:
        self.handed += nbytes
        if self.handed >= RELEASE_BYTES:
            self.handed = 0
            self.release()

    def release(self) -> None:
        advice = getattr(mmap, "MADV_DONTNEED", None)
        if advice is None:  # no madvise on this platform: the OS keeps the pages as before
            return
        try:
            self.mm.madvise(advice)
        except (ValueError, OSError):  # the mapping is closed (no reader is left)
            pass


class _PagedMemmap(np.memmap):
    """The array decode_to_disk returns: a read-only mapped file whose slices count
    against its ``_Pager`` (views, transposes and slices of it carry the same pager)."""

    def __array_finalize__(self, obj):
        super().__array_finalize__(obj)
        self._pager = getattr(obj, "_pager", None)

    def __getitem__(self, key):
        out = super().__getitem__(key)
        pager = getattr(self, "_pager", None)
        if pager is not None and isinstance(out, np.ndarray):
            pager.add(out.nbytes)
        return out


def decode_to_disk(path, sample_rate_hz: int, channels: int, directory=None,
                   allow_partial: bool = False, layout: str | None = None) -> np.ndarray:
    """:func:`decode` into a temporary file mapped read-only: float32 ``[C, N]``.

    For inputs too long to hold (an hour of 48 kHz stereo is 1.4 GB of float32, a
    10-hour audiobook 14 GB): ffmpeg writes raw PCM straight to a file in ``directory``
    (default: this process's temp folder in the system temp folder, fsutil.run_temp_dir),
    which is mapped and unlinked at once, so pages
    are read in as they are used and are file-backed (the OS can drop them under memory
    pressure), and nothing is left behind even if the process dies (a killed decode's
    file is an fsutil temp name, removed by the next run). The array is a
    transposed view of the interleaved ``[N, C]`` file; slices are cheap, ``.copy()``
    one before changing it. ``allow_partial``: as for :func:`decode`.

    Pages read stay in the process only until RELEASE_BYTES more have been sliced out of
    the array (then they are dropped from it; the file stays in the page cache), so a
    long input's resident size does not grow with its length.
    """
    ffmpeg_path()  # a broken ffmpeg is FFmpegNotFoundError here, never the input's fault
    p = check_input_path(path)
    ch = int(channels)
    rate = int(sample_rate_hz)
    tmp = temp_sibling(Path(directory if directory is not None else run_temp_dir()) / "decode.f32")
    try:
        stream = _pcm_output(ffmpeg.input(ff_path(p), **decoder_options()), rate, ch, "f32le", str(tmp), layout)
        err = ""
        try:
            err = run(stream.global_args("-y"), what=f"decoding {p}")[1].decode("utf-8", "replace")
        except FFmpegError as exc:
            _raise_decode_error(exc, str(p))
        n = os.path.getsize(tmp) // (4 * ch)
        if n == 0:
            raise EmptyAudioError(f"{p} has no decodable audio samples (empty or truncated file); "
                                  "re-export or re-copy it")
        _check_complete(err, p, str(p), n, rate, None, None, allow_partial)
        frames = _PagedMemmap(tmp, dtype="<f4", mode="r", shape=(n, ch))
        frames._pager = _Pager(frames._mmap)
    finally:
        os.unlink(tmp)  # the mapping keeps the data until the array is freed
    return frames.T


def _check_decode_args(sample_rate_hz, channels, start_s, duration_s) -> None:
    if sample_rate_hz is not None and int(sample_rate_hz) <= 0:
        raise UsageError(f"sample_rate_hz must be positive, got {sample_rate_hz}")
    if channels is not None and int(channels) <= 0:
        raise UsageError(f"channels must be positive, got {channels}")
    if start_s is not None and start_s < 0:
        raise UsageError(f"start_s must be >= 0, got {start_s}")
    if duration_s is not None and duration_s <= 0:
        raise UsageError(f"duration_s must be > 0, got {duration_s}")


def _decode_input(path_or_bytes, start_s: float | None, duration_s: float | None):
    """(ffmpeg input node, the bytes to feed it or None, the checked path or None, the
    name messages give it) for a file or an in-memory file, with the span to read."""
    in_kwargs = decoder_options()  # one decoder thread (_ffmpeg.DECODER_THREADS)
    if start_s:
        in_kwargs["ss"] = f"{float(start_s):.6f}"
    if duration_s is not None:
        in_kwargs["t"] = f"{float(duration_s):.6f}"
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
        if not data:
            raise EmptyAudioError("cannot decode empty bytes (0 bytes of input)")
        return ffmpeg.input("pipe:", **in_kwargs), data, None, "<bytes input>"
    p = check_input_path(path_or_bytes)
    return ffmpeg.input(ff_path(p), **in_kwargs), None, p, str(p)


def _read_wav_stream(stream, data: bytes | None, what: str, errs: list[str]) -> list[bytes]:
    """The WAV ffmpeg writes for ``stream`` as non-empty stdout blocks (``data`` fed on
    stdin when given); its stderr appended to ``errs``. A failed decode is the error the
    user can act on (_raise_decode_error); nothing decoded is EmptyAudioError."""
    try:
        if data is None:
            # read in blocks: _parse_wav_blocks frees each as it is converted, so the
            # peak is ~1x the decoded audio instead of ~2.7x (bytes + join + array)
            out = list(stream_stdout(stream, _BLOCK_BYTES, what=f"decoding {what}", stderr_out=errs))
        else:
            out_b, err_b = run(stream, input=data, what=f"decoding {what}")
            out = [out_b]
            errs.append(err_b.decode("utf-8", "replace"))
    except FFmpegError as exc:
        _raise_decode_error(exc, what)
        out = []
    out = [b for b in out if b]
    if not out:
        raise EmptyAudioError(
            f"{what} has no decodable audio samples (empty or truncated file); "
            "re-export or re-copy it"
        )
    return out


def decode(
    path_or_bytes,
    sample_rate_hz: int | None = None,
    channels: int | None = None,
    start_s: float | None = None,
    duration_s: float | None = None,
    allow_partial: bool = False,
    layout: str | None = None,
) -> np.ndarray:
    """Decode the first audio stream to float32 ``[C, N]`` in [-1, 1].

    sample_rate_hz: resample to this rate (None keeps the file's rate).
    channels: None (or 3+) keeps the file's channels as they are (a 5.1 file gives 6 rows,
    in ffmpeg's channel order); 1 or 2 makes ffmpeg down/up-mix with its standard matrix
    (stereo -> mono is (L + R) * 0.7071, not the average; 5.1 -> stereo folds the centre
    and surrounds in at -3 dB).
    start_s / duration_s: decode only this span (ffmpeg decodes from the preceding seek
    point and drops samples before ``start_s``: sample-accurate for WAV/FLAC/Ogg/MP3,
    but measured 84-1001 samples off in MP4/AAC, so align such spans yourself).
    allow_partial: a partial decode (decode errors, or much shorter than the container
    states: a cut-off file) is a RatecontrolWarning instead of TruncatedInputError.
    layout: convert to this channel layout by name (a surround track's coding layout,
    media/_layouts.py); 3+ ``channels`` without it keep the file's own layout.

    Raises InputNotFoundError, NotAudioError, EmptyAudioError (no samples),
    TruncatedInputError, InputError (unreadable, not a regular file, a channel count
    ffmpeg cannot downmix), UsageError, FFmpegNotFoundError (broken ffmpeg).
    """
    _check_decode_args(sample_rate_hz, channels, start_s, duration_s)
    ffmpeg_path()  # a broken ffmpeg is FFmpegNotFoundError here, never the input's fault
    src, data, p, what = _decode_input(path_or_bytes, start_s, duration_s)
    stream = _pcm_output(src, sample_rate_hz, channels, "wav", layout=layout)
    errs: list[str] = []
    out = _read_wav_stream(stream, data, what, errs)
    audio, rate = _parse_wav_blocks(out, what)
    if audio.shape[1] == 0:
        span = "" if start_s is None and duration_s is None else " in the requested span"
        raise EmptyAudioError(
            f"{what} has no decodable audio samples{span} (empty or truncated file); "
            "re-export or re-copy it"
        )
    _check_complete("".join(errs), p, what, audio.shape[1], rate, start_s, duration_s, allow_partial)
    return audio


# ------------------------------------------------ a preset's encode, aligned


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
