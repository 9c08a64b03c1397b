"""``codec="auto"``: every available preset searched, the smallest output kept."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace


from ratecontrol import media
from ratecontrol.errors import OutputError, TargetNotReachable, UsageError
from ratecontrol.presets import Preset, list_presets
from ratecontrol.results import SearchResult
from ratecontrol.options import Options
from ratecontrol.probing.searching import run_search
from ratecontrol.probing.session import Session, one_call_at_a_time, open_session, resolve_cache, resolve_scorer


#: ``codec="auto"``: try every available preset, keep the smallest output
AUTO_CODEC = "auto"

def auto_presets() -> list[Preset]:
    return [p for p in list_presets() if media.encoder_available(p)]


def search_auto(sessions: dict[int, Session], target: float, options: Options,
                only: tuple[str, ...] | None = None) -> SearchResult:
    """Every available preset; the one whose chosen probe is smallest wins.

    Presets are searched in parallel threads (the work is ffmpeg subprocesses and numpy
    or torch code that releases the GIL), two at a time on this 2-core class of machine.
    ``only``: the preset names to try (those whose container takes the output's extension).
    """
    # a surround track is decoded once per rate with its channels kept: presets that
    # carry fewer (MP3) are left out rather than fed a downmix scored against 6 channels
    # each preset is searched without best effort (an unreachable one is only left out)
    strict = replace(options, best_effort=False)
    everything = [p for p in auto_presets() if only is None or p.name in only]
    presets = [p for p in everything if p.max_channels >= sessions[rate_key(p)].track.channels]
    skipped = [p.name for p in everything if p not in presets]
    if not presets and only is not None:  # the output's extension left only presets that cannot carry the track
        chans = next(iter(sessions.values())).track.channels
        raise OutputError(f"codec auto: the output's extension leaves {', '.join(skipped)}, which cannot carry "
                          f"{chans} channels; choose an extension that another preset writes")

    def run(p: Preset):
        try:
            return p, run_search(sessions[rate_key(p)].prober(p), target, strict, parallel=1), None
        except TargetNotReachable as exc:
            return p, None, exc

    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as ex:
        outcomes = list(ex.map(run, presets))
    ok = [(p, r) for p, r, _ in outcomes if r is not None]
    summary = ", ".join(
        f"{p.name} {r.chosen.rung_label} ~{r.chosen.actual_kbps:.0f} kbps" if r else f"{p.name} unreachable"
        for p, r, _ in outcomes
    )
    if not ok:
        if not options.best_effort:
            raise TargetNotReachable(f"target MOS {target:g} not reachable with any preset ({summary}); "
                                     "lower the target or take the closest preset's top rung",
                                     options={"best_effort": True})
        # best effort: the preset whose top rung came closest
        p, _, exc = max(outcomes, key=lambda o: o[2].result.probes[-1].pooled_mos if o[2].result else -1)
        res = run_search(sessions[rate_key(p)].prober(p), target, options)
        return replace(res, notes=res.notes + (f"codec auto: {summary}",))
    total = sum(len(r.probes) if r is not None else len(exc.result.probes) if exc and exc.result else 0
                for _, r, exc in outcomes)
    p, res = min(ok, key=lambda pr: pr[1].chosen.actual_kbps)
    if skipped:
        summary += f"; not tried on {res.channels} channels: {', '.join(skipped)}"
    return replace(res, notes=res.notes + (f"codec auto: {summary}; chose {p.name}",), probes_total=total)


def rate_key(preset: Preset) -> int:
    return int(preset.sample_rate_hz or 0)

def auto_sessions(source, opts: Options, sample_rate_hz: int | None = None, keep_encodes: bool = False):
    """One session per output rate (48 kHz for Opus, the source's for the rest); the
    scorer and cache are shared."""
    sessions: dict[int, Session] = {}
    opts = replace(opts, on_probe=one_call_at_a_time(opts.on_probe))  # one lock for every session
    shared_scorer = resolve_scorer(opts.scorer, n_jobs=opts.jobs)
    shared_cache = resolve_cache(opts.cache)
    for p in auto_presets():
        k = rate_key(p)
        if k not in sessions:
            sessions[k] = open_session(source, p, opts, sample_rate_hz, keep_encodes, scorer=shared_scorer,
                                       cache=shared_cache)
    if not sessions:
        raise UsageError("codec auto: this ffmpeg has none of the presets' encoders (see `ratecontrol doctor`)")
    return sessions
