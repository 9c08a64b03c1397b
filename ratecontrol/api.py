"""Library entry points: ``select_bitrate``, ``encode``, ``encode_ladder``, ``score``.

This module is the front door; the work is in ``ratecontrol.probing`` (as demucs'
api.py hands off to apply/audio):

1. ``probing.track``: decode the input once at the rate the output will have (mono,
   stereo, or surround in the layout the encoder takes);
2. ``probing.sampling``: which parts of a long input the probes encode (segments
   spread evenly, each with 1 s of codec context either side);
3. ``probing.source``: the reference windows (44.1 kHz, 1 s), prepared once;
4. ``probing.prober``: each probe encodes the probe source at one rung through the one
   encode path (``media.encode_array``), decodes it, scores the same windows (cached
   on disk by content, cache.py); ``probing.searching`` runs the knob or ladder
   search (search.py) over them, which picks the next setting;
5. ``probing.verify``: write the chosen rung (a whole-track probe is stream-copied
   into the output), decode the written file and score it; a miss steps up a rung;
6. ``probing.auto``: ``codec="auto"``;
7. ``probing.output``: the output path, checked before any work;
   ``probing.encode``: one audio input (and a ladder of targets) from search to
   report; ``probing.streams``: inputs with video, subtitles or more audio streams;
   ``probing.compare``: ``score``.

Options (scorer, pool, cache, ...) are one frozen ``Options``; the keyword arguments
of these functions are its fields.
"""
from __future__ import annotations

import os
import time
from typing import Any, Sequence

from ratecontrol.contract import check_target_mos
from ratecontrol.options import Options, check_flag
from ratecontrol.presets import Preset
from ratecontrol.probing import compare
from ratecontrol.probing.auto import AUTO_CODEC, auto_sessions, search_auto
from ratecontrol.probing.encode import encode_targets
from ratecontrol.probing.searching import run_search
from ratecontrol.probing.request import EncodeRequest, LadderRequest
from ratecontrol.probing.session import open_session, resolve_preset
from ratecontrol.probing.streams import encode_input, refuse_stream_options
from ratecontrol.results import EncodeResult, ScoreResult, SearchResult

__all__ = ["select_bitrate", "encode", "encode_ladder", "score", "Options", "AUTO_CODEC"]


def select_bitrate(source, *, target_mos: float, codec: str | Preset = "opus", options: Options | None = None,
                   sample_rate_hz: int | None = None, **option_fields: Any) -> SearchResult:
    """Find the cheapest rung of ``codec`` whose pooled score meets ``target_mos``.

    ``source`` is a path, or a float array ``[channels, samples]`` (or soundfile's
    ``[samples, channels]``) with ``sample_rate_hz``. ``codec="auto"`` tries every
    available preset and keeps the smallest. ``options`` / keyword fields: see
    ``Options`` (scorer, pool, hop_s, sample_share, jobs, cache, max_kbps,
    best_effort, margin_mos, on_probe, ...). Nothing is written except the cache.
    Raises ``TargetNotReachable`` when even the top rung fails, unless ``best_effort``
    (then the top rung is returned with ``reached=False``).
    """
    opts = Options.merge(options, **option_fields)
    refuse_stream_options(opts, "select_bitrate")
    target = check_target_mos(target_mos)
    if codec == AUTO_CODEC:
        return search_auto(auto_sessions(source, opts, sample_rate_hz), target, opts)
    preset = resolve_preset(codec)
    s = open_session(source, preset, opts, sample_rate_hz)
    return run_search(s.prober(preset), target, opts)


def encode(source: str | os.PathLike, output: str | os.PathLike | None = None, *, target_mos: float,
           codec: str | Preset = "opus", options: Options | None = None, overwrite: bool = False,
           metadata: dict[str, str] | None = None, report: str | os.PathLike | None = None,
           **option_fields: Any) -> EncodeResult:
    """Search the ladder, then write ``source`` at the chosen rung to ``output``.

    The output keeps the input's tags and (where the container allows) cover art, gets
    a RATECONTROL tag with the chosen settings, and is written to a temp file beside it
    and renamed, so a failure never leaves a partial file. The written file is decoded
    and scored (``verify``, default on): ``pooled_mos`` is the shipped file's own
    score, and a miss steps up a rung. ``report``: a PNG path for the per-window plot.

    An input with several streams (a film, a music video: video, subtitles, more
    audio, attachments) keeps them all: the chosen audio stream (``audio_stream``: its
    position among the audio streams; default the one marked default, else the first),
    or every audio stream with ``all_audio_streams`` (each searched on its own, each
    its own rung), is re-encoded, and the output is the input's container (default
    name ``<stem>.<preset><ext>``) with every other stream, the chapters and the tags
    stream-copied in their order, languages and dispositions kept
    (``media.mux_audio``). A container that cannot hold the preset's codec with those
    streams (Vorbis in MP4, MP3 in WebM) is a UsageError before any work. The result's
    fields are the default (or first) re-encoded stream's; ``streams`` has one result
    per re-encoded stream. ``audio_only`` writes the chosen stream alone instead. Other
    arguments: ``select_bitrate``.
    """
    t0 = time.perf_counter()
    opts = Options.merge(options, **option_fields)
    overwrite = check_flag("overwrite", overwrite)  # "no" is truthy: never guess a switch
    return encode_input(EncodeRequest.build(source, output, target_mos, codec, opts, overwrite, metadata, report, t0))


def encode_ladder(source: str | os.PathLike, out_dir: str | os.PathLike | None = None, *, targets: Sequence[float],
                  codec: str | Preset = "opus", options: Options | None = None, overwrite: bool = False,
                  report: str | os.PathLike | None = None, **option_fields: Any) -> tuple[EncodeResult, ...]:
    """One encode per target from ONE probe curve (an audio bitrate ladder).

    Outputs go to ``out_dir`` (default: the input's folder; it must exist) as
    ``<stem>.mos<target><ext>``. Probes made for one target are reused by the others;
    targets that land on the same rung share one file (each result names it).
    ``report``: a PNG path; each target gets its own, ``.mos<target>`` before the
    extension (``report.report_path_for``), drawn once every output is written.
    """
    t0 = time.perf_counter()
    opts = Options.merge(options, **option_fields)
    overwrite = check_flag("overwrite", overwrite)  # "no" is truthy: never guess a switch
    refuse_stream_options(opts, "encode_ladder")
    return encode_targets(LadderRequest.build(source, out_dir, targets, codec, opts, overwrite, report, t0))


def score(reference, degraded, *, scorer: Any = None, pool: str = "p10", sample_rate_hz: int | None = None,
          hop_s: float = 1.0, align_signals: bool = True, jobs: int | None = None,
          allow_partial: bool = False) -> ScoreResult:
    """Score ``degraded`` against ``reference`` (paths, or arrays with ``sample_rate_hz``).

    Both are brought to 44.1 kHz, the degraded one is aligned to the reference by
    cross-correlation (up to 0.5 s either way), and scored window by window.
    """
    return compare.score(reference, degraded, scorer=scorer, pool=pool, sample_rate_hz=sample_rate_hz, hop_s=hop_s,
                         align_signals=align_signals, jobs=jobs, allow_partial=allow_partial)
