"""What batch does with one audio input, decided from its probe before any encode: skip
(video="skip"), keep (a lossy source no rung can undercut) or encode; and the lossy-source
rule after the encode (an output not smaller than the lossy source is not kept)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ratecontrol.batch._task import Task
from ratecontrol.errors import RatecontrolError


def stream_bytes(path: Path, audio_index: int = 0) -> int | None:
    from ratecontrol import media

    return media.audio_payload_bytes(path, audio_index)


@dataclass(frozen=True)
class Plan:
    """What batch does with one audio input, decided from its probe before any encode."""

    preset: Any
    #: the streams encode will re-encode (the first is the record's)
    sources: tuple["_SourceAudio", ...]
    #: the input's own name and container, every other stream copied (a film; with
    #: all_audio_streams also an audio-only file with several audio streams)
    in_place: bool
    #: more than one audio stream, or video/other streams
    bundled: bool
    video_note: tuple[str, ...] = ()
    #: (reason, options) when the file is skipped (video="skip")
    skip: tuple[str, dict] | None = None
    #: the reason the source is copied unchanged before any work (the lossy rule)
    keep: str | None = None

    @property
    def lossy(self) -> bool:
        return any(not a.lossless for a in self.sources)


def decide(task: Task, src: Path, info, base: dict) -> Plan:
    """Skip, keep or encode, from the probe alone; fills the record's input fields in ``base``."""
    video_note: tuple[str, ...] = ()
    all_streams = task.options.all_audio_streams
    in_place = task.video == "keep" and (info.other_streams > 0 or (all_streams and info.audio_streams > 1))
    bundled = info.other_streams > 0 or info.audio_streams > 1
    base.update(duration_s=info.duration_s, input_audio_streams=info.audio_streams)
    if info.other_streams:
        base["other_streams"] = info.other_streams
        if task.video == "skip":
            base.update(input_codec=info.codec, lossless=info.lossless)
            helps = {"video": "keep"}
            return Plan(None, (), in_place, bundled, skip=(f"has {info.other_streams} video/other stream(s)"
                                                            + RatecontrolError.options_text(helps), helps))
        if not in_place:
            video_note = (f"input has {info.other_streams} video/other stream(s): batch wrote its default audio "
                          "stream alone (video='audio'; video='keep' re-encodes it in place)",)
    sources = _source_audio(src, info, _chosen_streams(src, info, in_place, all_streams))
    first = sources[0]
    base.update(input_codec=first.codec, input_kbps=first.kbps, lossless=all(a.lossless for a in sources))
    from ratecontrol.presets import load_preset

    preset = load_preset(task.codec_ref)
    return Plan(preset, sources, in_place, bundled, video_note, keep=_below_ladder(preset, sources, bundled))


@dataclass(frozen=True)
class _SourceAudio:
    """One audio stream batch re-encodes, as the lossy-source rule needs it."""

    #: position among the input's audio streams
    audio_index: int
    codec: str
    lossless: bool
    #: the stream's own bitrate (None: unknown)
    kbps: float | None
    #: None: the stream line does not say
    channels: int | None


def _chosen_streams(src: Path, info, in_place: bool, all_streams: bool) -> tuple[int, ...]:
    """Positions (among the audio streams) of what ``encode`` will re-encode: encode's own
    choice (``probing.streams.chosen_streams``), all of them only when in place."""
    from ratecontrol.options import Options
    from ratecontrol.probing.streams import chosen_streams

    return tuple(chosen_streams(src, info, Options(all_audio_streams=in_place and all_streams)))


def _source_audio(src: Path, info, chosen: tuple[int, ...]) -> tuple[_SourceAudio, ...]:
    """The chosen streams' own codec, bitrate and channels.

    An audio file's MediaInfo describes its one stream. A film's describes its first
    audio stream (maybe not the chosen one) and has no bitrate when the stream line
    gives none (the container's is mostly video): then a lossy stream's bitrate is
    measured from its packets (one stream-copy pass over the file)."""
    from ratecontrol import media

    if info.other_streams == 0 and info.audio_streams <= 1:
        return (_SourceAudio(0, info.codec, info.lossless, info.bitrate_kbps, info.channels),)
    by_index = {st.audio_index: st for st in info.streams if st.kind == "audio"}
    out = []
    for n in chosen:
        st = by_index.get(n)
        codec = st.codec if st else info.codec
        lossless = media.is_lossless_codec(codec)
        kbps = st.bitrate_kbps if st else None
        if kbps is None and not lossless and info.duration_s:
            payload = media.audio_payload_bytes(src, n)
            kbps = payload * 8 / 1000 / info.duration_s if payload else None
        out.append(_SourceAudio(n, codec, lossless, kbps, st.channels if st else None))
    return tuple(out)


def _below_ladder(preset, sources: tuple[_SourceAudio, ...], bundled: bool) -> str | None:
    """Why the file is copied unchanged before any work, or None.

    A lossy stream is never encoded above its own bitrate, so when even the lowest rung
    of the ladder for its channels (``rungs_for``: 5.1 Opus starts at 3x the stereo
    ladder's lowest rung, measured in docs/scoring.md; MP3 stops at 2 channels) is above
    it, no encode can be smaller."""
    for a in sources:
        if a.lossless or not a.kbps or not a.channels:
            continue
        lowest = preset.rungs_for(a.channels)[0]
        if lowest.nominal_kbps > a.kbps:
            which = f"audio stream {a.audio_index}, " if bundled else ""
            return (f"lossy source ({which}{a.codec}, {a.channels} ch, ~{a.kbps:.0f} kbps) is already below the "
                    f"lowest {preset.name} rung for {a.channels} channels ({lowest.label}): copied unchanged")
    return None


def kbps_list(sources: tuple[_SourceAudio, ...]) -> str:
    return ", ".join(f"~{a.kbps:.0f} kbps" if a.kbps else "unknown kbps" for a in sources if not a.lossless)


def not_smaller(src: Path, res, sources: tuple[_SourceAudio, ...], audio_bytes: int | None, whole: bool) -> bool:
    """The encode is not smaller than the lossy source it replaces.

    Whole files when the output is the input's container (its other streams are copied
    bit for bit, so the difference is the audio's); the audio alone when a film's audio
    stream was written on its own (video='audio': the film's size is mostly video)."""
    if whole:
        return res.output_bytes >= res.input_bytes
    src_audio = stream_bytes(src, sources[0].audio_index)
    return bool(src_audio and audio_bytes) and audio_bytes >= src_audio
