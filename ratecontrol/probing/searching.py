"""Run the pure search (ratecontrol.search: the knob or the ladder) over one Prober's
probes: the first guess, the margin, the messages of an unreachable target. Moved
unchanged from prober.py (issue 27: one job per module; prober.py held both)."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ratecontrol.errors import TargetNotReachable
from ratecontrol.options import Options
from ratecontrol.results import Probe, SearchResult
from ratecontrol.search import search_knob, search_ladder
from ratecontrol.probing.prober import Prober

__all__ = ["FIRST_GUESS_RUNGS_BELOW_MIDDLE", "first_guess_x", "resolve_margin", "run_search"]


def resolve_margin(margin: float | None, scorer) -> float:
    """``margin``, or the scorer's own default (learned 0.03, exact 0) when None."""
    return float(getattr(scorer, "default_margin_mos", 0.0) if margin is None else margin)


def run_search(prober: Prober, target: float, options: Options | None = None, *, parallel: int | None = None,
               ladder: bool = False) -> SearchResult:
    """Search ``prober``'s knob (or its ladder: ``options.ladder``, ``ladder=True``, or a
    preset without a knob) for ``target`` (+ ``options.margin_mos``: a setting passes when
    its pooled score is at least ``target + margin``; the result reports both; None: the
    scorer's default). ``options.best_effort``: the top setting instead of
    TargetNotReachable. ``parallel``: probes at once (None: the prober's own)."""
    opts = Options() if options is None else options
    best_effort, ladder = opts.best_effort, ladder or opts.ladder
    margin = resolve_margin(opts.margin_mos, prober.scorer)
    notes: list[str] = []
    bar = target + margin
    track, n = prober.track, len(prober.rungs)
    if prober.source.sampled:
        notes.append(f"probes scored {prober.source.scored_s:.0f} s of the track, spread over it "
                     f"({len(prober.source.pieces)} segments) of {track.duration_s:.0f} s")
    if prober.all_silent:
        notes.append("input is digital silence: nothing to preserve, lowest rung chosen without probing")
        rung = prober.rungs[0]
        chosen = Probe(0, rung.label, float(rung.nominal_kbps), float("nan"), (), True, 0.0)
        return prober.result(target, chosen, (chosen,), True, notes)
    k = prober.parallel if parallel is None else parallel
    prober.warm_up()
    if not (ladder or prober.searches_ladder):
        return _run_knob_search(prober, target, margin, best_effort, notes, k)
    # previous probes (another target on the same curve) seed the bracket for free
    outcome = search_ladder(n, lambda i: prober.probe(i, bar).pooled_mos, target, parallel=k, margin=margin)
    probes = tuple(prober.probes[i] for i, _ in outcome.probes)
    probes = tuple(replace(p, passed=bool(p.pooled_mos >= bar)) for p in probes)
    if outcome.chosen is not None:
        chosen = next(p for p in probes if p.rung_index == outcome.chosen)
        _note_above_source(track, chosen, "rung", notes)
        return prober.result(target, chosen, probes, True, notes, margin)
    top = next(p for p in probes if p.rung_index == n - 1)
    msg, advice, options = _not_reachable(prober, target, margin, top, "rung")
    if not best_effort:
        raise TargetNotReachable(f"{msg}; {advice}", result=prober.result(target, None, probes, False, notes, margin),
                                 options=options)
    notes.append(msg + "; best effort: top rung used")
    return prober.result(target, top, probes, False, notes, margin)


#: the knob's first probe: this many rungs below the ladder's middle (Opus 64k, AAC 112k,
#: Vorbis q3, LAME V5). Starting below the crossing makes the search come at it from
#: underneath, where a near miss has a lower probe that scored lower (no dip recheck to
#: pay). bench_knob.py replay on the 3 tuning tracks (9 searches, Opus/AAC, 4.0/4.3):
#: the middle rung 4.56 probes per search, one below 3.78, two below 5.56. (Round 2 of
#: issue 24 measured a per-preset prior instead, ratecontrol.guess; off by default)
FIRST_GUESS_RUNGS_BELOW_MIDDLE = 1


def first_guess_x(prober: Prober, target: float) -> float:
    """Where the knob search probes first: a rung below the ladder's middle; with
    ``guess.FIRST_GUESS_FROM_PRIOR`` (off by default) the preset's prior crossing of
    target + the scorer's default margin from cheap features of the reference, scaled
    from stereo to the track's channels, for a preset that has a prior."""
    from ratecontrol import guess

    ax = prober.axis
    x = None
    if guess.FIRST_GUESS_FROM_PRIOR and prober.preset.name in guess.PRIORS:
        level = target + resolve_margin(None, prober.scorer)
        x = guess.prior_x(prober.preset.name, level, guess.reference_features(prober.source.ref_w))
        # the prior is in stereo kbps; mono and surround ladders are scaled (and have other
        # lengths: Opus mono 12 rungs, 12-128k): scale by the ratio of the ladders' median rungs
        own, stereo = prober.preset.rungs_for(prober.track.channels), prober.preset.rungs_for(2)
        x += math.log(float(np.median([r.nominal_kbps for r in own])) / float(np.median([r.nominal_kbps for r in stereo])))
    if x is None:
        mid = prober.ladder[max(0, len(prober.ladder) // 2 - FIRST_GUESS_RUNGS_BELOW_MIDDLE)]
        x = ax.x_of(prober.preset.knob_value(mid))
    return min(max(x, ax.lo_x), ax.hi_x)


def _note_above_source(track, chosen: Probe, what: str, notes: list) -> None:
    """Say so when the chosen ``what`` ("rung" or "setting") spends more than a lossy
    source's own bitrate (``above_source`` lifted the cap)."""
    info = track.info
    if info and not info.lossless and info.bitrate_kbps and chosen.bitrate_kbps > info.bitrate_kbps:
        notes.append(f"chosen {what} ({chosen.bitrate_kbps:g} kbps) is above the lossy source's "
                     f"~{info.bitrate_kbps:.0f} kbps")


def _not_reachable(prober: Prober, target: float, margin: float, top: Probe, what: str) -> tuple[str, str, dict]:
    """TargetNotReachable's message, advice and options (``what``: "rung" or "setting").
    When the lossy source's bitrate cut the ladder, the cap, not the codec, may be what
    fails: the message names the source's bitrate and the options above_source."""
    with_margin = f" (+{margin:g} margin)" if margin else ""
    where = f": the top {what}"
    advice = f"lower the target, pick another codec, or take the top {what}"
    options = {"best_effort": True}
    if prober.source_cap_kbps:
        where = f" at or below the lossy source's ~{prober.source_cap_kbps:.0f} kbps: the highest {what} allowed,"
        advice = (f"lower the target, pick another codec, allow {what}s above the source's bitrate, "
                  f"or take the top {what}")
        options["above_source"] = True
    msg = (f"target MOS {target:g}{with_margin} not reachable with preset '{prober.preset.name}'{where} "
           f"{top.rung_label} scores {top.pooled_mos:.3f} ({prober.pool})")
    return msg, advice, options


#: Where a *sampled* knob search stops (a whole-track probe keeps knob_search's 0.03 MOS and
#: 3 %): the sample reads the track's p10 only to about +-0.065 MOS (sd of full-track minus
#: sample p10 over 20 real tracks, Opus 4.3; bootstrap SE over segments 0.069), so probes
#: that refine within 0.03 of the bar buy precision the full-track check does not see,
#: and the check steps up when the track's p10 falls short. Measured on those 20 tracks as
#: a batch worker runs them (/work/data/s13/tol.py; docs/performance.md "Where a sampled
#: search stops"): 0.07 MOS / 7 % against 0.03 / 3 %: probes 84 -> 70, check step-ups 9 -> 5
#: (tracks 7 -> 3), CPU -11.6 %, written bits +0.8 %, every file at or above the bar.
SAMPLED_TOLERANCE_MOS = 0.07
SAMPLED_STOP_X = math.log(1.07)


def _run_knob_search(prober: Prober, target: float, margin: float, best_effort: bool, notes: list,
                     parallel: int = 1) -> SearchResult:
    """The knob search (search.search_knob) over ``prober.axis``; probes of the same
    settings made before (another target on the same curve) are known for free."""
    ax, track = prober.axis, prober.track
    bar = target + margin
    index: dict[float, int] = {}

    def at(x: float) -> int:
        if x not in index:
            index[x] = prober.setting(ax.value_of(x))
        return index[x]

    def evaluate(x: float) -> float:
        return prober.probe(at(x), bar).pooled_mos

    def cost(x: float) -> float:
        # the bits the setting actually took (libopus surround can spend fewer at a
        # higher setting: issue 24's 5.1 track, 100k -> 44.6 kbps, 80k -> 80.4 kbps)
        p = prober.probes[at(x)]
        return p.actual_kbps if p.actual_kbps else p.bitrate_kbps

    known = {}
    for i, p in prober.probes.items():
        x = prober.knob_x(i)
        if x is not None and ax.lo_x - 1e-9 <= x <= ax.hi_x + 1e-9:
            known[x] = p.pooled_mos
            index[x] = i
    # a sampled source stops within the sample's own error of the bar (SAMPLED_STOP_*)
    stops = (dict(tolerance=SAMPLED_TOLERANCE_MOS, bracket_x=SAMPLED_STOP_X, gain_x=SAMPLED_STOP_X)
             if prober.source.sampled else {})
    outcome = search_knob(evaluate, target, ax.lo_x, ax.hi_x, first_x=first_guess_x(prober, target), margin=margin,
                          snap=ax.snap_x, cost=cost, known=known, parallel=parallel, **stops)
    probes = tuple(replace(prober.probes[at(x)], passed=bool(s >= bar)) for x, s in outcome.probes)
    if outcome.chosen is not None:
        chosen = replace(prober.probes[at(outcome.chosen)], passed=True)
        if all(p.rung_index != chosen.rung_index for p in probes):
            probes += (chosen,)  # known from another target's search
        _note_above_source(track, chosen, "setting", notes)
        return prober.result(target, chosen, probes, True, notes, margin, knob=True)
    top = replace(prober.probes[at(ax.snap_x(ax.hi_x))], passed=False)
    if all(p.rung_index != top.rung_index for p in probes):
        probes += (top,)
    msg, advice, options = _not_reachable(prober, target, margin, top, "setting")
    if not best_effort:
        raise TargetNotReachable(f"{msg}; {advice}",
                                 result=prober.result(target, None, probes, False, notes, margin, knob=True),
                                 options=options)
    notes.append(msg + "; best effort: top setting used")
    return prober.result(target, top, probes, False, notes, margin, knob=True)
