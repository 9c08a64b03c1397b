"""One audio input encoded: search the ladder, write the chosen rung, check it, draw
the report; and a ladder of targets from one probe curve (``api.encode`` /
``api.encode_ladder``; an input with several streams goes through streams.py first)."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from ratecontrol import fsutil
from ratecontrol.errors import OutputError
from ratecontrol.presets import load_preset
from ratecontrol.probing.auto import auto_sessions, rate_key, search_auto
from ratecontrol.probing.output import OutputPlan, check_output, claim_report
from ratecontrol.probing.prober import Prober
from ratecontrol.probing.searching import run_search
from ratecontrol.probing.request import EncodeRequest, LadderRequest
from ratecontrol.probing.session import open_session
from ratecontrol.probing.verify import finish_encode
from ratecontrol.results import EncodeResult, SearchResult

__all__ = ["encode_audio", "encode_targets", "render"]


def encode_audio(req: EncodeRequest, src: Path, plan: OutputPlan) -> EncodeResult:
    """One audio file's encode: ``src`` is what is decoded (the input itself, or one
    of its audio streams copied out), ``req.input_path`` names the output and is never
    overwritten; ``req.preset`` None is codec auto. ``plan``: every output, checked by
    the caller before any work (codec auto: for each preset it may pick)."""
    target, preset, opts = req.target_mos, req.preset, req.options
    if preset is None:
        sessions = auto_sessions(src, opts, keep_encodes=True)
    else:
        sessions = {0: open_session(src, preset, opts, keep_encodes=True)}
    try:
        if preset is None:
            result = search_auto(sessions, target, opts, only=tuple(plan.audio))
            preset = load_preset(result.preset)
            session = sessions[rate_key(preset)]
        else:
            session, result = sessions[0], None
        out = plan.for_preset(preset)
        fsutil.clean_stale_temps(out.path.parent)  # what a killed run left beside its output
        if result is None:
            result = run_search(session.prober(preset), target, opts)
        enc = finish_encode(req, session, preset, result, src, out)
        if plan.report is not None:
            render(session.prober(preset), enc, plan.report)
        return enc
    finally:
        for s_ in sessions.values():
            s_.close()


def encode_targets(req: LadderRequest) -> tuple[EncodeResult, ...]:
    """``api.encode_ladder``: one session, one probe curve, one output per distinct rung."""
    input_path, ts, preset, opts, overwrite, t0 = (req.input_path, req.targets_mos, req.preset, req.options,
                                                   req.overwrite, req.t0_s)
    report, folder = req.report, req.out_dir
    outs: list = []
    for t in ts:  # every output checked before any work, each against the others
        outs.append(check_output(input_path, folder / f"{input_path.stem}.mos{t:g}{preset.extension}", overwrite,
                                 preset, outputs=outs))
    reps: list = []
    if report:
        from ratecontrol.report import report_path_for

        for t in ts:
            reps.append(claim_report(report_path_for(report, t), input_path, overwrite, outputs=outs + reps))
    session = open_session(input_path, preset, opts, keep_encodes=True)
    results: list[EncodeResult] = []
    try:
        for t, out in zip(ts, outs):
            res = run_search(session.prober(preset), t, opts)
            same = next((r for r in results if r.search.chosen.rung_index == res.chosen.rung_index
                         and r.stepped_up == 0 and r.pooled_mos >= t + res.margin_mos), None)
            if same is not None:
                # the same rung for another target: one file, named by both results
                results.append(replace(same, search=res, seconds=time.perf_counter() - t0))
                continue
            results.append(finish_encode(req, session, preset, res, input_path, out))
        for rep, enc in zip(reps, results):
            render(session.prober(preset), enc, rep)
    finally:
        session.close()
    return tuple(results)


def render(prober: Prober, enc: EncodeResult, report) -> None:
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
    if result.knob_option:
        # the knob: a setting a rung (RECHECK_X, ~22 %) above, unless a probe lies above
        if any(p.bitrate_kbps > result.chosen.bitrate_kbps for p in result.probes) or prober.axis is None:
            return result
        from ratecontrol.search import RECHECK_X

        ax = prober.axis
        x = ax.x_of(result.chosen.knob_value)
        if x >= ax.hi_x - 1e-9:
            return result
        i = prober.setting(ax.value_of(min(x + RECHECK_X, ax.hi_x)))
    else:
        i = result.chosen.rung_index + 1
        if i >= len(prober.ladder) or any(p.rung_index == i for p in result.probes):
            return result
    p = prober.probe(i, result.target_mos)
    return replace(result, probes=result.probes + (replace(p, passed=p.pooled_mos >= result.target_mos),))
