"""Library entry points: ``select_bitrate``, ``encode``, ``encode_ladder``, ``score``.

This module is the front door; the work is in ``ratecontrol.probing`` (as demucs'
api.py hands off to apply/audio):

1. ``probing.track``: decode the input once at the rate the output will have, up to
   two channels;
2. ``probing.sampling``: which parts of a long input the probes encode (segments
   spread evenly, each with 1 s of codec context either side);
3. ``probing.source``: the reference windows (44.1 kHz, 1 s), prepared once;
4. ``probing.prober``: each probe encodes the probe source at one rung through the one
   encode path (``media.encode_array``), decodes it, scores the same windows (cached
   on disk by content, cache.py); the ladder search (search.py) picks the next rung;
5. ``probing.verify``: write the chosen rung (a whole-track probe is stream-copied
   into the output), decode the written file and score it; a miss steps up a rung;
6. ``probing.auto``: ``codec="auto"``.

Options (scorer, pool, cache, ...) are one frozen ``Options``; the keyword arguments
of these functions are its fields.
"""
from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ratecontrol import fsutil, media
from ratecontrol._resample import resample
from ratecontrol.align import align, estimate_delay
from ratecontrol.contract import check_target_mos
from ratecontrol.errors import InputError, OutputError, UsageError
from ratecontrol.options import Options
from ratecontrol.presets import Preset, load_preset
from ratecontrol.probing.auto import AUTO_CODEC, auto_sessions, rate_key, search_auto
from ratecontrol.probing.prober import Prober, run_search
from ratecontrol.probing.session import open_session, resolve_preset, resolve_scorer
from ratecontrol.probing.track import NO_RATE, as_array, check_rate, output_rate, require_finite
from ratecontrol.probing.verify import finish_encode
from ratecontrol.results import EncodeResult, ScoreResult, SearchResult
from ratecontrol.scoring.pooling import pool as pool_scores
from ratecontrol.windows import MODEL_SAMPLE_RATE_HZ, cut_windows, is_digital_silence
from ratecontrol.media._layouts import lfe_indices

__all__ = ["select_bitrate", "encode", "encode_ladder", "score", "Options", "AUTO_CODEC"]

#: the largest codec/file delay ``score`` searches for when aligning two files (0.5 s)
MAX_ALIGN_LAG_S = 0.5


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
    _encode_only_stream_options(opts, "select_bitrate")
    target = check_target_mos(target_mos)
    if codec == AUTO_CODEC:
        return search_auto(auto_sessions(source, opts, sample_rate_hz), target, opts.best_effort, opts.margin_mos)
    preset = resolve_preset(codec)
    s = open_session(source, preset, opts, sample_rate_hz)
    return run_search(s.prober(preset), target, opts.best_effort, margin=opts.margin_mos)


def _encode_only_stream_options(opts: Options, what: str) -> None:
    """audio_stream / all_audio_streams are encode's (and batch's): refused, not ignored."""
    if opts.audio_stream is not None or opts.all_audio_streams:
        raise UsageError(f"{what} searches the first audio stream only; audio_stream and all_audio_streams are "
                         "options of encode (copy the stream out first, e.g. with media.extract_audio)")


def _default_output(input_path: Path, preset: Preset, suffix: str = "") -> Path:
    out = input_path.with_name(f"{input_path.stem}{suffix}{preset.extension}")
    if out.resolve() == input_path.resolve():
        out = input_path.with_name(f"{input_path.stem}{suffix}.rc{preset.extension}")
    return out


#: file extensions that name each container a preset writes (anything else is refused:
#: Ogg data in a .mp3 or MP4 in a .aac is a file players misread)
_CONTAINER_EXTENSIONS = {
    "ogg": {".ogg", ".oga", ".opus"}, "opus": {".opus", ".ogg", ".oga"},
    "ipod": {".m4a", ".m4b", ".mp4"}, "mp4": {".mp4", ".m4a", ".m4b"}, "mov": {".mov", ".mp4", ".m4a"},
    "mp3": {".mp3"}, "adts": {".aac"}, "matroska": {".mka", ".mkv"}, "webm": {".webm"},
    "flac": {".flac"}, "wav": {".wav"},
}


def _check_output(input_path: Path, output: Path, overwrite: bool, preset: Preset | None = None) -> Path:
    """The output path, checked: a folder that exists, not the input, an extension
    that matches the container (none: the preset's is added), not an existing file
    unless ``overwrite``, a name the file system can hold with our temp prefix."""
    if len(output.name.encode()) > 255:
        raise OutputError(f"output name is {len(output.name.encode())} bytes; file systems allow 255: {output.name[:40]}...")
    output = media.check_output_path(output, input_path)
    if preset is not None:
        if not output.suffix:
            output = media.check_output_path(output.with_name(output.name + preset.extension), input_path)
        ok = _CONTAINER_EXTENSIONS.get(preset.format)
        if ok is not None and output.suffix.lower() not in ok:
            raise OutputError(f"output {output} has the extension {output.suffix} but preset '{preset.name}' writes "
                              f"{preset.format} data; use {output.with_suffix(preset.extension).name}")
    if output.exists() and not overwrite:
        raise OutputError(f"output {output} already exists; choose another path or replace it",
                          options={"overwrite": True})
    return output


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
    input_path = Path(source)
    info = media.inspect(input_path)  # one clear error for a missing / non-audio / empty input
    target = check_target_mos(target_mos)
    preset = None if codec == AUTO_CODEC else resolve_preset(codec)
    if info.other_streams == 0 and info.audio_streams <= 1:
        if opts.audio_stream not in (None, 0):
            raise UsageError(f"{input_path} has one audio stream: there is no audio stream {opts.audio_stream} "
                             "(they count from 0)")
        return _encode_audio(input_path, input_path, output, target, preset, opts, overwrite, metadata, report, t0)
    chosen = _chosen_streams(input_path, info, opts)
    if opts.audio_only:
        folder = Path(output).parent if output is not None else input_path.parent
        if output is not None and preset is not None:
            _check_output(input_path, Path(output), overwrite, preset)  # before any work
        extracted = fsutil.temp_sibling(folder / input_path.name, suffix=".mka")
        try:
            media.extract_audio(input_path, chosen[0], extracted)
            enc = _encode_audio(extracted, input_path, output, target, preset, opts, overwrite, metadata, report, t0)
        finally:
            extracted.unlink(missing_ok=True)
        return replace(enc, input_path=str(input_path), audio_stream=chosen[0])
    if preset is None:
        raise UsageError(f"{input_path} has video or other streams: codec auto needs the audio alone "
                         "(the container decides which codecs fit), or name a codec",
                         options={"audio_only": True, "codec": "NAME"})
    default = input_path.with_name(f"{input_path.stem}.{preset.name}{input_path.suffix}")
    out = _check_output(input_path, Path(output) if output else default, overwrite, None)
    media.check_mux(input_path, preset, chosen, out)  # an impossible pair fails before any search
    fsutil.clean_stale_temps(out.parent)  # what a killed run left beside its output
    return _encode_streams(input_path, info, chosen, out, target, preset, opts, metadata, report, t0)


def _chosen_streams(input_path: Path, info: media.MediaInfo, opts: Options) -> list[int]:
    """Which audio streams (positions among the audio streams) are re-encoded."""
    n_audio = sum(s.kind == "audio" for s in info.streams) or info.audio_streams
    if opts.all_audio_streams:
        return list(range(n_audio))
    if opts.audio_stream is not None:
        if opts.audio_stream >= n_audio:
            listing = "; ".join(f"{s.audio_index}: {s.codec}" + (f" ({s.language})" if s.language else "")
                                for s in info.streams if s.kind == "audio")
            raise UsageError(f"{input_path} has {n_audio} audio stream(s), counted from 0 ({listing}): there is "
                             f"no audio stream {opts.audio_stream}")
        return [opts.audio_stream]
    return [media.default_audio_stream(info)]


def _encode_audio(src: Path, input_path: Path, output, target: float, preset: Preset | None, opts: Options,
                  overwrite: bool, metadata, report, t0: float) -> EncodeResult:
    """One audio file's encode: ``src`` is what is decoded (the input itself, or one
    of its audio streams copied out), ``input_path`` names the output and is never
    overwritten."""
    if output is not None and preset is not None:
        _check_output(input_path, Path(output), overwrite, preset)  # before any work
    if preset is None:
        sessions = auto_sessions(src, opts, keep_encodes=True)
    else:
        sessions = {0: open_session(src, preset, opts, keep_encodes=True)}
    try:
        if preset is None:
            result = search_auto(sessions, target, opts.best_effort, opts.margin_mos)
            preset = load_preset(result.preset)
            session = sessions[rate_key(preset)]
        else:
            session, result = sessions[0], None
        out = _check_output(input_path, Path(output) if output else _default_output(input_path, preset), overwrite,
                            preset)
        fsutil.clean_stale_temps(out.parent)  # what a killed run left beside its output
        if result is None:
            result = run_search(session.prober(preset), target, opts.best_effort, margin=opts.margin_mos)
        enc = finish_encode(session, preset, result, src, out, metadata, opts.verify, t0)
        if report:
            _render(session.prober(preset), enc, report)
        return enc
    finally:
        for s_ in sessions.values():
            s_.close()


def _encode_streams(input_path: Path, info: media.MediaInfo, chosen: list[int], out: Path, target: float,
                    preset: Preset, opts: Options, metadata, report, t0: float) -> EncodeResult:
    """Each chosen audio stream copied out, searched and encoded on its own, then all
    of them put back in place of their streams, everything else stream-copied."""
    from ratecontrol.probing.verify import TAG_KEY

    encoded: dict[int, Path] = {}
    results: list[EncodeResult] = []
    scorer = None
    try:
        for n in chosen:
            extracted = fsutil.temp_sibling(out, suffix=".mka")
            try:
                media.extract_audio(input_path, n, extracted)
                encoded[n] = fsutil.temp_sibling(out, suffix=preset.extension)
                session = _open_stream_session(extracted, input_path, n, preset, opts, scorer)
                scorer = session.scorer  # one scorer for every stream
                try:
                    result = run_search(session.prober(preset), target, opts.best_effort, margin=opts.margin_mos)
                    enc = finish_encode(session, preset, result, extracted, encoded[n], metadata, opts.verify, t0)
                    if report:
                        rep = report if len(chosen) == 1 else _stream_report_path(report, n)
                        _render(session.prober(preset), replace(enc, output_path=str(out)), rep)
                finally:
                    session.close()
            finally:
                extracted.unlink(missing_ok=True)
            results.append(replace(enc, input_path=str(input_path), output_path=str(out), audio_stream=n))
        tags = {r.audio_stream: {TAG_KEY: f"ratecontrol preset={preset.name} rung={r.rung_label} "
                                          f"target_mos={target:g} mos={r.pooled_mos:.3f}"} for r in results}
        media.mux_audio(input_path, encoded, out, stream_tags=tags)
    finally:
        for p in encoded.values():
            p.unlink(missing_ok=True)
    n_other = len(info.streams) - len(chosen)
    streams = tuple(results)
    note = (f"kept the input's {n_other} other stream(s) by stream copy; re-encoded audio stream(s) "
            f"{', '.join(str(n) for n in chosen)} of {info.audio_streams}")
    first = next((r for r in results if r.audio_stream == media.default_audio_stream(info)), results[0])
    return replace(first, output_bytes=out.stat().st_size, input_bytes=input_path.stat().st_size,
                   seconds=time.perf_counter() - t0, streams=streams,
                   search=replace(first.search, notes=first.search.notes + (note,)))


def _open_stream_session(extracted: Path, input_path: Path, n: int, preset: Preset, opts: Options, scorer):
    """The session of one copied-out audio stream; an input error names the input and
    the stream, not the temp file."""
    try:
        return open_session(extracted, preset, opts, keep_encodes=True, scorer=scorer)
    except InputError as exc:
        raise type(exc)(str(exc).replace(str(extracted), f"{input_path} (audio stream {n})")) from None


def _stream_report_path(report, audio_index: int) -> Path:
    """The report of one audio stream: ``plot.png`` -> ``plot.a1.png``."""
    p = Path(report)
    suffix = p.suffix or ".png"
    return p.with_name(f"{p.stem if p.suffix else p.name}.a{audio_index}{suffix}")


def _render(prober: Prober, enc: EncodeResult, report) -> None:
    """The report of a finished encode; the audio is already in place, so a report that
    cannot be written is one OutputError that says so (``.result``: the encode)."""
    from ratecontrol.report import render_report

    search = _with_upper_neighbour(prober, enc.search)
    try:
        render_report(search, report, encode_result=enc)
    except (OSError, OutputError) as exc:
        why = str(exc) if isinstance(exc, OutputError) else (exc.strerror or str(exc))
        err = OutputError(f"report {report} not written ({why}); the audio was written to {enc.output_path}")
        err.result = enc
        raise err from exc


def _with_upper_neighbour(prober: Prober, result: SearchResult) -> SearchResult:
    """Add a probe of the rung above the chosen one (for the report) if there is one."""
    if result.chosen is None or not result.chosen.window_mos:
        return result
    i = result.chosen.rung_index + 1
    if i >= len(prober.rungs) or any(p.rung_index == i for p in result.probes):
        return result
    p = prober.probe(i, result.target_mos)
    return replace(result, probes=result.probes + (replace(p, passed=p.pooled_mos >= result.target_mos),))


def encode_ladder(source: str | os.PathLike, out_dir: str | os.PathLike | None = None, *, targets: Sequence[float],
                  codec: str | Preset = "opus", options: Options | None = None, overwrite: bool = False,
                  report: str | os.PathLike | None = None, **option_fields: Any) -> tuple[EncodeResult, ...]:
    """One encode per target from ONE probe curve (an audio bitrate ladder).

    Outputs go to ``out_dir`` (default: the input's folder; created if missing) as
    ``<stem>.mos<target><ext>``. Probes made for one target are reused by the others;
    targets that land on the same rung share one file (each result names it).
    ``report``: a PNG path; each target gets its own, ``.mos<target>`` before the
    extension (``report.report_path_for``), drawn once every output is written.
    """
    t0 = time.perf_counter()
    opts = Options.merge(options, **option_fields)
    _encode_only_stream_options(opts, "encode_ladder")
    input_path = Path(source)
    media.inspect(input_path)
    if isinstance(targets, (str, bytes)) or not isinstance(targets, Sequence):
        raise UsageError(f"targets must be a list of MOS values, got {targets!r}")
    ts = sorted({check_target_mos(t) for t in targets})
    if not ts:
        raise UsageError("give at least one target MOS")
    preset = resolve_preset(codec)
    folder = Path(out_dir) if out_dir else input_path.parent
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"output folder {folder} is a file; give a folder for a ladder")
    folder.mkdir(parents=True, exist_ok=True)
    outs = [_check_output(input_path, folder / f"{input_path.stem}.mos{t:g}{preset.extension}", overwrite, preset)
            for t in ts]
    session = open_session(input_path, preset, opts, keep_encodes=True)
    results: list[EncodeResult] = []
    try:
        for t, out in zip(ts, outs):
            res = run_search(session.prober(preset), t, opts.best_effort, margin=opts.margin_mos)
            same = next((r for r in results if r.search.chosen.rung_index == res.chosen.rung_index
                         and r.stepped_up == 0 and r.pooled_mos >= t + res.margin_mos), None)
            if same is not None:
                # the same rung for another target: one file, named by both results
                results.append(replace(same, search=res, seconds=time.perf_counter() - t0))
                continue
            results.append(finish_encode(session, preset, res, input_path, out, None, opts.verify, t0))
        if report:
            from ratecontrol.report import report_path_for

            for t, enc in zip(ts, results):
                _render(session.prober(preset), enc, report_path_for(report, t))
    finally:
        session.close()
    return tuple(results)


def _load_pair(reference, degraded, sample_rate_hz: int | None,
               allow_partial: bool = False) -> tuple[np.ndarray, np.ndarray, str]:
    """Both signals at the model's 44.1 kHz, brought there the way a search's check is.

    Files are decoded by ffmpeg at one common rate, the degraded file's own when it
    is 44.1 or 48 kHz (the rate it was encoded at: an Opus file is 48 kHz), and both
    are then resampled by the one in-process resampler, as probes and the output check
    are: so ``score(INPUT, OUTPUT)`` reads the shipped file exactly as ``encode``
    scored it (tests/test_oneencode.py).

    Surround (two files of the same 3+ channel count): the degraded file is read in its
    own layout and the reference converted to it by channel name, as ``encode`` decoded
    the input for the encoder; the third value is that layout ("" otherwise)."""
    out = []
    files = [x for x in (reference, degraded) if not isinstance(x, np.ndarray)]
    common = None
    layout = ""
    if files:
        infos = {id(x): media.inspect(x) for x in files}
        anchor = degraded if not isinstance(degraded, np.ndarray) else reference
        common = output_rate(NO_RATE, infos[id(anchor)].sample_rate_hz)
        if len(files) == 2 and infos[id(reference)].channels == infos[id(degraded)].channels > 2:
            layout = infos[id(degraded)].channel_layout
    for x, what in ((reference, "reference"), (degraded, "degraded")):
        if isinstance(x, np.ndarray):
            if sample_rate_hz is None:
                raise UsageError(f"pass sample_rate_hz together with the {what} array")
            out.append(resample(as_array(x, what), check_rate(sample_rate_hz), MODEL_SAMPLE_RATE_HZ))
        else:
            a = media.decode(x, sample_rate_hz=common,
                             channels=None if layout else min(infos[id(x)].channels, 2),
                             allow_partial=allow_partial,
                             layout=layout if layout and x is reference else None)
            out.append(resample(require_finite(a, str(x)), common, MODEL_SAMPLE_RATE_HZ))
    return out[0], out[1], layout


def score(reference, degraded, *, scorer: Any = None, pool: str = "p10", sample_rate_hz: int | None = None,
          hop_s: float = 1.0, align_signals: bool = True, jobs: int | None = None,
          allow_partial: bool = False) -> ScoreResult:
    """Score ``degraded`` against ``reference`` (paths, or arrays with ``sample_rate_hz``).

    Both are brought to 44.1 kHz, the degraded one is aligned to the reference by
    cross-correlation (up to 0.5 s either way), and scored window by window.
    """
    opts = Options(scorer=scorer, pool=pool, hop_s=hop_s, jobs=jobs, allow_partial=allow_partial)
    pool = opts.pool
    sc = resolve_scorer(opts.scorer, n_jobs=opts.jobs)
    ref, deg, layout = _load_pair(reference, degraded, sample_rate_hz, allow_partial)
    if ref.shape[0] != deg.shape[0]:
        # mono vs stereo: compare mono mixes rather than refuse
        ref, deg = ref.mean(axis=0, keepdims=True), deg.mean(axis=0, keepdims=True)
    delay = 0
    if align_signals:
        delay = estimate_delay(ref, deg, int(MAX_ALIGN_LAG_S * MODEL_SAMPLE_RATE_HZ))
        deg = align(ref, deg, delay)
    else:
        deg = _fit_length(deg, ref.shape[1])
    _warn_if_unrelated(ref, deg, reference, degraded)
    # surround: every channel but the LFE, as encode's probes and check (docs/scoring.md)
    lfe = lfe_indices(layout) if ref.shape[0] == deg.shape[0] else ()
    chans = [c for c in range(ref.shape[0]) if c not in lfe]
    ref_w, index = cut_windows(ref, hop_s=hop_s, channels=chans)
    deg_w, _ = cut_windows(deg, starts=index.start_sample[: len(index) // len(chans)], channels=chans)
    both_silent = is_digital_silence(ref_w) & is_digital_silence(deg_w)
    scores = np.full(len(ref_w), np.nan)
    if (~both_silent).any():
        scores[~both_silent] = sc.score(sc.prepare(ref_w[~both_silent]), deg_w[~both_silent])
    keep = ~both_silent
    return ScoreResult(
        scorer=sc.name,
        pool=pool,
        pooled_mos=pool_scores(scores[keep], pool),
        window_mos=tuple(float(s) for s in scores[keep]),
        window_start_s=tuple(float(s) for s in index.start_s()[keep]),
        window_channel=tuple(int(c) for c in index.channel[keep]),
        delay_samples=int(delay),
    )


#: below this correlation of the aligned mono mixes, two signals are not one recording
#: and its encode: a codec at its lowest rung keeps > 0.7 on music, unrelated music
#: gives < 0.1 (tests/test_api.py)
RELATED_MIN_CORRELATION = 0.3


def _warn_if_unrelated(ref: np.ndarray, deg: np.ndarray, ref_name, deg_name) -> None:
    a, b = ref.mean(axis=0).astype(np.float64), deg.mean(axis=0).astype(np.float64)
    n = min(a.size, b.size)
    a, b = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    if den == 0:
        return
    r = float((a * b).sum() / den)
    if r < RELATED_MIN_CORRELATION:
        import warnings

        from ratecontrol.errors import RatecontrolWarning

        what = (f"{deg_name} and {ref_name}" if not isinstance(ref_name, np.ndarray) else "the two signals")
        warnings.warn(RatecontrolWarning(
            f"{what} do not look like the same audio (correlation {r:.2f} after alignment): the score compares "
            "unrelated signals"), stacklevel=3)


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    if x.shape[1] >= n:
        return x[:, :n]
    return np.pad(x, ((0, 0), (0, n - x.shape[1])))
