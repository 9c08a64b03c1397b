"""What every encode shares: the preset's encoder options and filters and the atomic
finish (the output path is checked by ``fsutil``, the one place output paths are
checked); remux (a probe's encode written out with the tags).

Every output is written to a temporary file in the destination folder and moved into
place by ``fsutil.publish`` only after ffmpeg succeeded, so a failed or interrupted
encode never leaves a partial file under the final name.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

from .. import fsutil
from ..errors import EmptyAudioError, OutputError, UsageError
from ..presets import Preset, Rung, load_preset
from ._decode import resample_filter
from ._ffmpeg import ff_path, require_encoder, run
from ._inspect import MediaInfo, check_input_path, inspect
from ._layouts import canonical_layout
from ._tags import _build, _source_extras

__all__ = ["remux", "WrittenFile", "ENCODER_INPUT"]

#: What every encode of ratecontrol feeds the encoder: the decoded track as float32
#: PCM (f32le on a pipe) at the output rate and channel count. Probes and the shipped
#: file take this one path, so the encoder sees the same samples *and the same sample
#: format*: libopus is told the input's bit depth (ffmpeg's libopusenc passes
#: bits_per_raw_sample to OPUS_SET_LSB_DEPTH: 16 for s16 input, 24 by default), and on
#: quiet material that changed a real recording's p10 from 4.164 (float) to 3.353
#: (s16 from the source file) at the same rung (issue 12). docs/scoring.md.
ENCODER_INPUT = "f32le"


@dataclass(frozen=True)
class WrittenFile:
    """What encode_array / remux wrote."""

    path: Path
    size_bytes: int
    duration_s: float
    #: size_bytes * 8 / duration_s / 1000 (the whole file, container + tags included)
    bitrate_kbps: float
    preset: str
    rung: str


def _resolve(preset, rung, channels: int) -> tuple[Preset, Rung]:
    p = load_preset(preset)
    require_encoder(p)
    if isinstance(rung, Rung):
        return p, rung
    return p, p.rung(rung, channels)


def _temp_path(out: Path) -> Path:
    return fsutil.temp_sibling(out)


def _add_filters(kw: dict, out_rate: int | None, preset: Preset, in_rate: int,
                 in_ch: int, out_ch: int) -> None:
    """Resampling / channel-count / layout options for one encode (edits ``kw``).

    3..8 output channels are coded in ``canonical_layout(out_ch, encoder)`` (the Vorbis
    I order Opus mapping family 1 and libvorbis require, 6.1(back) for AAC's 7-channel
    configuration; media/_layouts.py). The array's input declares the layout of its
    own channel count (the track was decoded into it: FLAC 5.1 decodes as "5.1(side)",
    which libopus refuses), so the filter changes nothing unless the preset takes fewer
    channels than the array has."""
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


def _finish(tmp: Path, dest: fsutil.Destination, preset: Preset, rung: Rung,
            duration_s: float | None = None) -> WrittenFile:
    size = tmp.stat().st_size
    if size == 0:
        raise OutputError(f"ffmpeg wrote an empty file for {dest.path}; nothing was saved")
    out = fsutil.publish(tmp, dest)
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
    dest = fsutil.check_output_path(out_path, src_file)
    out = dest.path
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
        return _finish(tmp, dest, p, r, duration_s)
    finally:
        tmp.unlink(missing_ok=True)
        if extras is not None:
            extras.meta_path.unlink(missing_ok=True)
