"""Inputs with several streams (a film, a music video: video, subtitles, more audio,
attachments): the chosen audio stream(s) copied out, each searched and encoded on
its own, and put back in place of their streams, everything else stream-copied
(``media.mux_audio``); or, with ``audio_only``, the chosen stream written alone."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from ratecontrol import fsutil, media
from ratecontrol.errors import InputError, UsageError
from ratecontrol.options import Options
from ratecontrol.presets import Preset
from ratecontrol.probing.auto import auto_presets
from ratecontrol.probing.encode import encode_audio, render
from ratecontrol.probing.output import OutputPlan, check_output, claim_report, plan_outputs
from ratecontrol.probing.searching import run_search
from ratecontrol.probing.request import EncodeRequest
from ratecontrol.probing.session import open_session
from ratecontrol.probing.verify import TAG_KEY, finish_encode
from ratecontrol.results import EncodeResult

__all__ = ["encode_input", "chosen_streams", "refuse_stream_options", "stream_report_path"]


def refuse_stream_options(opts: Options, what: str) -> None:
    """audio_stream / all_audio_streams are encode's (and batch's): refused, not ignored."""
    if opts.audio_stream is not None or opts.all_audio_streams:
        raise UsageError(f"{what} searches the first audio stream only; audio_stream and all_audio_streams are "
                         "options of encode (copy the stream out first, e.g. with media.extract_audio)")


def encode_input(req: EncodeRequest) -> EncodeResult:
    """``api.encode`` of any input: a plain audio file goes to ``encode_audio``; an
    input with more streams keeps them (or, ``audio_only``, gives its chosen stream)."""
    input_path, info, opts, preset, output = req.input_path, req.info, req.options, req.preset, req.output
    if info.other_streams == 0 and info.audio_streams <= 1:
        if opts.audio_stream not in (None, 0):
            raise UsageError(f"{input_path} has one audio stream: there is no audio stream {opts.audio_stream} "
                             "(they count from 0)")
        return encode_audio(req, input_path, _plan(req))
    chosen = chosen_streams(input_path, info, opts)
    if opts.audio_only:
        folder = Path(output).parent if output is not None else input_path.parent
        plan = _plan(req)  # before any work, once: the copy-out below does not change it
        extracted = fsutil.temp_sibling(folder / input_path.name, suffix=".mka")
        try:
            media.extract_audio(input_path, chosen[0], extracted)
            enc = encode_audio(req, extracted, plan)
        finally:
            extracted.unlink(missing_ok=True)
        return replace(enc, input_path=str(input_path), audio_stream=chosen[0])
    if preset is None:
        raise UsageError(f"{input_path} has video or other streams: codec auto needs the audio alone "
                         "(the container decides which codecs fit), or name a codec",
                         options={"audio_only": True, "codec": "NAME"})
    default = input_path.with_name(f"{input_path.stem}.{preset.name}{input_path.suffix}")
    # a name without an extension gets the input's: ffmpeg picks the container by it
    out = check_output(input_path, Path(output) if output else default, req.overwrite, None,
                       suffix_if_none=input_path.suffix)
    report = req.report
    reports = {n: claim_report(report if len(chosen) == 1 else stream_report_path(report, n), input_path,
                               req.overwrite, outputs=[out]) for n in chosen} if report else {}
    media.check_mux(input_path, preset, chosen, out)  # an impossible pair fails before any search
    fsutil.clean_stale_temps(out.path.parent)  # what a killed run left beside its output
    return _encode_streams(req, chosen, out, reports)


def _plan(req: EncodeRequest) -> OutputPlan:
    """Every output of an audio encode (codec auto: for each preset it may pick), checked
    before any work, once."""
    presets = [req.preset] if req.preset is not None else auto_presets()
    return plan_outputs(req.input_path, req.output, req.overwrite, presets, req.report)


def chosen_streams(input_path: Path, info: media.MediaInfo, opts: Options) -> list[int]:
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


def _encode_streams(req: EncodeRequest, chosen: list[int], out: fsutil.Destination, reports: dict) -> EncodeResult:
    """Each chosen audio stream copied out, searched and encoded on its own, then all
    of them put back in place of their streams, everything else stream-copied."""
    input_path, info, target, preset, opts, t0 = (req.input_path, req.info, req.target_mos, req.preset,
                                                  req.options, req.t0_s)
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
                    result = run_search(session.prober(preset), target, opts)
                    enc = finish_encode(req, session, preset, result, extracted, encoded[n])
                    if n in reports:
                        render(session.prober(preset), replace(enc, output_path=str(out)), reports[n])
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
    return replace(first, output_bytes=out.path.stat().st_size, input_bytes=input_path.stat().st_size,
                   seconds=time.perf_counter() - t0, streams=streams,
                   search=replace(first.search, notes=first.search.notes + (note,)))


def _open_stream_session(extracted: Path, input_path: Path, n: int, preset: Preset, opts: Options, scorer):
    """The session of one copied-out audio stream; an input error names the input and
    the stream, not the temp file."""
    try:
        return open_session(extracted, preset, opts, keep_encodes=True, scorer=scorer)
    except InputError as exc:
        # the options stay separate (the CLI spells them as flags); the copied-out file's
        # Matroska header only repeats the length the input's packets give
        text = Exception.__str__(exc).replace(str(extracted), f"{input_path} (audio stream {n})")
        raise type(exc)(text.replace("its Matroska header states", "its packets state"),
                        options=exc.options) from None


def stream_report_path(report, audio_index: int) -> Path:
    """The report of one audio stream: ``plot.png`` -> ``plot.a1.png``."""
    p = Path(report)
    suffix = p.suffix or ".png"
    return p.with_name(f"{p.stem if p.suffix else p.name}.a{audio_index}{suffix}")
