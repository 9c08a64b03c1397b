"""Files with several streams (a film, a music video, a multi-language Matroska): one
audio stream copied out alone to be searched, and the encoded audio put back in place
of the streams it replaces, every other stream stream-copied.

``extract_audio(src, n, out)``: audio stream ``a:n`` alone, by stream copy, in a
Matroska audio file (Matroska holds every codec ffmpeg reads), with the file's tags;
that is what a search of one stream of a container decodes.

``mux_audio(src, {n: encoded, ...}, out)``: ``src`` with audio stream ``a:n`` replaced
by the (only) audio stream of ``encoded``, for each ``n`` given. Streams keep their
order (stream ``0:i`` of the input is ``0:i`` of the output); every other stream
(video, other audio, subtitles, attachments, data) is stream-copied with its tags and
dispositions, and so are the chapters and the file's tags. A replaced stream keeps the
language, title and dispositions of the stream it replaces (its ``encoder`` tag is
dropped: the stream was not made by the input's encoder).

``check_mux(src, preset, {n: ...}, out)``: before any search, whether ``out``'s
container takes the preset's codec together with the input's other streams: a short
trial mux (0.3 s of the preset's encode of silence + 0.3 s of every other stream),
plus one policy ffmpeg does not enforce (Vorbis in MP4/MOV: ffmpeg writes it under a
private object type no other player decodes). A pair that does not fit is one
UsageError that says what to do.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import numpy as np

from .. import fsutil
from ..errors import FFmpegError, UsageError
from ._ffmpeg import ff_path, run_args
from ._inspect import MediaInfo, check_input_path, inspect

__all__ = ["extract_audio", "mux_audio", "check_mux", "MATROSKA_HINT"]

#: what every "cannot hold" message suggests first
MATROSKA_HINT = "write .mkv instead (-o NAME.mkv; Matroska holds every codec and stream)"

#: containers that take Vorbis from ffmpeg's muxer but not in any standard way
_MP4_FAMILY = frozenset({".mp4", ".m4v", ".m4a", ".m4b", ".mov", ".3gp", ".3g2"})

#: ffmpeg stderr lines that mean "this container cannot hold this stream"
_CANNOT_HOLD = ("not currently supported in container", "Could not find tag for codec", "are supported for",
                "only supported in", "Could not write header", "codec not currently supported",
                "Unsupported codec", "is not supported")

#: how long the trial mux of check_mux copies (s)
_TRIAL_S = 0.3


def extract_audio(src, audio_index: int, out_path) -> Path:
    """Audio stream ``a:audio_index`` of ``src`` alone, stream-copied into a Matroska
    file at ``out_path`` (written in place: the caller owns that temp path), with the
    file's tags; no chapters, no other stream."""
    p = check_input_path(src)
    out = Path(out_path)
    run_args(["-hide_banner", "-nostdin", "-y", "-i", ff_path(p), "-map", f"0:a:{int(audio_index)}", "-c", "copy",
              "-map_metadata", "0", "-map_chapters", "-1", "-f", "matroska", ff_path(out)])
    return out


def _mux_args(info: MediaInfo, src: Path, replaced: Mapping[int, Path], dest: str,
              stream_tags: Mapping[int, Mapping[str, str]] | None, limit_s: float | None) -> list[str]:
    order = sorted(replaced)
    args = ["-hide_banner", "-nostdin", "-y", "-i", ff_path(src)]
    starts = {st.audio_index: st.start_s for st in info.streams if st.kind == "audio"}
    for n in order:
        if starts.get(n, 0.0) > 0.0005:
            # the stream started late (audio delayed against the video); its encode starts
            # at 0, so it is put back where the original started
            args += ["-itsoffset", f"{starts[n]:.6f}"]
        args += ["-i", ff_path(replaced[n])]
    maps: list[str] = []
    per_stream: list[str] = []
    out_i = 0
    for st in info.streams:
        if st.kind not in ("video", "audio", "subtitle", "data", "attachment"):
            continue  # an "Unknown" stream ffmpeg cannot map
        if st.kind == "audio" and st.audio_index in replaced:
            maps += ["-map", f"{order.index(st.audio_index) + 1}:a:0"]
            per_stream += [f"-disposition:{out_i}", "+".join(st.dispositions) or "0",
                           f"-metadata:s:{out_i}", "encoder="]
            for k, v in (stream_tags or {}).get(st.audio_index, {}).items():
                per_stream += [f"-metadata:s:{out_i}", f"{k}={v}"]
        else:
            maps += ["-map", f"0:{st.index}"]
        # stream tags (language, title, handler) from the input's own stream, replaced or not
        per_stream += [f"-map_metadata:s:{out_i}", f"0:s:{st.index}"]
        if st.title:
            # MP4 reads a track's title as "name" and writes only "title": a plain copy drops it
            per_stream += [f"-metadata:s:{out_i}", f"title={st.title}"]
        out_i += 1
    args += maps + ["-c", "copy", "-map_metadata", "0", "-map_chapters", "0", *per_stream]
    if limit_s is not None:
        args += ["-t", f"{limit_s:g}"]
    return args + [dest]


def _cannot_hold(exc: FFmpegError) -> str | None:
    """ffmpeg's own line saying why, without its ``[mp4 @ 0x55...]`` prefix."""
    hit = next((ln.strip() for ln in exc.stderr.splitlines() if any(n in ln for n in _CANNOT_HOLD)), None)
    return None if hit is None else re.sub(r"^\[[^\]]* @ 0x[0-9a-f]+\]\s*", "", hit)


def _refusal(out: Path, codec_word: str, why: str) -> UsageError:
    mkv = "" if out.suffix.lower() in (".mkv", ".mka") else f"{MATROSKA_HINT}, or "
    return UsageError(f"{fsutil.final_name(out)}: a {out.suffix or 'extensionless'} container cannot hold "
                      f"{codec_word} audio ({why}); {mkv}choose another codec, or write the audio alone",
                      options={"codec": "NAME", "audio_only": True})


def _stream_refusal(out: Path, src: Path, info: MediaInfo, replaced) -> UsageError | None:
    """The first of the input's streams that ``out``'s container cannot take by stream
    copy on its own (a mov_text subtitle in .mkv, SubRip in .mp4), as a UsageError."""
    for st in info.streams:
        if st.kind == "audio" and st.audio_index in replaced:
            continue
        trial = fsutil.temp_sibling(out)
        try:
            run_args(["-hide_banner", "-nostdin", "-y", "-i", ff_path(src), "-map", f"0:{st.index}", "-c", "copy",
                      "-t", f"{_TRIAL_S:g}", ff_path(trial)])
        except FFmpegError as exc:
            hit = _cannot_hold(exc) or "ffmpeg refused it"
            return UsageError(
                f"{fsutil.final_name(out)}: a {out.suffix or 'extensionless'} container cannot hold the input's "
                f"{st.kind} stream 0:{st.index} ({st.codec}) by stream copy ({hit[:160]}); keep the input's "
                f"container (an output named NAME{src.suffix}), or write the audio alone",
                options={"audio_only": True})
        finally:
            trial.unlink(missing_ok=True)
    return None


def mux_audio(container_src, replaced, out_path, stream_tags: Mapping[int, Mapping[str, str]] | None = None) -> Path:
    """``container_src`` with audio stream ``a:n`` replaced by ``replaced[n]``'s audio
    (``replaced``: {n: path}; a bare path replaces ``a:0``), everything else stream-copied
    in order (module docstring). ``stream_tags``: extra tags for the new streams, by n.
    The container is the one ``out_path``'s extension names; written to a temp file
    and renamed. A pair the container cannot hold is a UsageError naming both."""
    src = check_input_path(container_src)
    if not isinstance(replaced, Mapping):
        replaced = {0: replaced}
    replaced = {int(n): check_input_path(p) for n, p in replaced.items()}
    out = Path(out_path)
    info = inspect(src)
    tmp = fsutil.temp_sibling(out)
    try:
        try:
            run_args(_mux_args(info, src, replaced, ff_path(tmp), stream_tags, None))
        except FFmpegError as exc:
            hit = _cannot_hold(exc)
            if hit:
                raise _refusal(out, ", ".join(sorted({Path(p).suffix for p in replaced.values()})), hit[:160]) from None
            raise
        fsutil.publish(tmp, out_path)  # a Destination: under the publish rule
    finally:
        tmp.unlink(missing_ok=True)
    return out


def check_mux(container_src, preset, audio_indices, out_path) -> None:
    """Raise a UsageError (before any search) when ``out_path``'s container cannot hold
    ``preset``'s codec in place of audio streams ``audio_indices`` of ``container_src``
    together with its other streams (module docstring)."""
    from ._streamed import encode_array

    src = check_input_path(container_src)
    out = Path(out_path)
    codec_word = {"libvorbis": "Vorbis", "vorbis": "Vorbis", "libopus": "Opus", "opus": "Opus",
                  "libmp3lame": "MP3", "aac": "AAC", "libfdk_aac": "AAC"}.get(preset.encoder, preset.name)
    if codec_word == "Vorbis" and out.suffix.lower() in _MP4_FAMILY:
        raise _refusal(out, codec_word, "ffmpeg would write it under a private MP4 object type that players "
                       "other than ffmpeg do not decode")
    info = inspect(src)
    rate = int(preset.sample_rate_hz or 48_000)
    silence = np.zeros((2, int(rate * _TRIAL_S)), dtype=np.float32)
    samples: dict[int, Path] = {}
    trial = fsutil.temp_sibling(out)
    try:
        sample = fsutil.temp_sibling(out, suffix=preset.extension)
        samples = {int(n): sample for n in audio_indices}
        encode_array(silence, rate, preset, 0, sample)
        try:
            run_args(_mux_args(info, src, samples, ff_path(trial), None, _TRIAL_S))
        except FFmpegError as exc:
            hit = _cannot_hold(exc)
            if hit:
                raise (_stream_refusal(out, src, info, samples) or _refusal(out, codec_word, hit[:160])) from None
            raise
    finally:
        trial.unlink(missing_ok=True)
        for p in set(samples.values()):
            p.unlink(missing_ok=True)
