"""Encode, decode and score rungs of one preset (the search over them: searching.py)."""
from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from ratecontrol import media
from ratecontrol.cache import ProbeCache, pcm_digest, preset_fingerprint
from ratecontrol.errors import UsageError
from ratecontrol.presets import Preset, Rung
from ratecontrol.results import Probe, SearchResult
from ratecontrol.scoring.base import Scorer
from ratecontrol.scoring.pooling import pool as pool_scores, validate_pool
from ratecontrol.probing.source import ProbeSource, score_windows


def ladder(preset: Preset, channels: int, max_kbps: float | None) -> tuple[Rung, ...]:
    """The rungs a search may choose from: the preset's for ``channels``, up to ``max_kbps``."""
    rungs = preset.rungs_for(channels)
    return rungs if max_kbps is None else tuple(r for r in rungs if r.nominal_kbps <= max_kbps)


def encode_rung(source: ProbeSource, preset: Preset, rung: Rung, keep: bool = False) -> list[media.RoundTrip]:
    """Encode and decode ``source``'s audio at ``rung``: one ffmpeg per encode span
    (``PROBE_PROCESSES`` of them side by side for a sampled probe), each span run in on
    the track's audio before it (``WARM_UP_S``). ``keep``: a whole-track probe keeps its
    encoded file (the output, if it is chosen)."""
    audio, rate = source.audio, source.track.rate_hz
    warm = warm_up_samples(source, preset)

    def roundtrip(span, keep=False):
        a, b = span
        # the span's encoder runs in on the track's audio before its first piece (none
        # where warm is 0); that part of the decode is dropped, and its share of the bytes
        return media.roundtrip_info(audio[:, a:b], rate, preset, rung, keep=keep, lead_in=source.warm_up(a, warm))

    spans = source.encode_spans()
    if len(spans) == 1:
        return [roundtrip(spans[0], keep and not source.sampled)]
    with ThreadPoolExecutor(len(spans)) as ex:  # independent ffmpeg processes, one per core
        return list(ex.map(roundtrip, spans))


#: Seconds of the track's own audio that each encode span of a sampled probe is run in
#: on before its first piece (per encoder; none for the others). A span starts a fresh
#: encoder in the middle of the track, where the full-track encode (what ships and is
#: checked) has been running. Measured against the full-track encode's windows at the
#: same setting (docs/performance.md "Cold encoders in sampled probes"): ffmpeg's native
#: aac adapts its rate control over seconds (started cold it read one piece 0.38 MOS low;
#: mean window error 0.066 MOS and the sample's p10 0.069 low over 18 cases, 0.034 and
#: 0.013 with 20 s; 8 real tracks end to end: 1.3 % fewer bits, 4.4 probes instead of
#: 4.9, the same CPU). libopus read a cold span's first piece up to 0.12 high and 3 s
#: fixed it (window error 0.016 -> 0.010), but it changed no decision and no step-up on
#: 20 tracks and cost a probe on another: not kept. libvorbis's sampled probes read
#: 0.3-0.7 MOS high (it codes a passage differently unless its stream starts where the
#: track starts); probes that encoded the track from its start were exact, but on 8 real
#: tracks they cost 14 % more CPU and 3.8 % more bits than the check's step-ups from the
#: biased probes: not kept either.
WARM_UP_S = {"aac": 20.0}


def warm_up_samples(source: ProbeSource, preset: Preset) -> int:
    """Samples of warm-up before each encode span of a probe of ``source`` (0: none)."""
    if not source.sampled:
        return 0
    return int(WARM_UP_S.get(preset.encoder, 0.0) * source.track.rate_hz)


class Prober:
    """Encodes, decodes and scores rungs of one preset against one probe source."""

    def __init__(self, source: ProbeSource, preset: Preset, scorer: Scorer, pool: str,
                 cache: ProbeCache, on_probe: Callable[[Probe], None] | None = None,
                 max_kbps: float | None = None):
        self.source, self.track = source, source.track
        self.preset, self.scorer, self.pool, self.cache, self.on_probe = preset, scorer, pool, cache, on_probe
        rungs = ladder(preset, self.track.channels, max_kbps)
        if max_kbps is not None:
            if not rungs:
                lossy = self.track.info is not None and not self.track.info.lossless
                raise UsageError(
                    f"no rung of preset '{preset.name}' is at or below {max_kbps:g} kbps "
                    f"(lowest is {preset.rungs_for(self.track.channels)[0].nominal_kbps:g})"
                    + ("; the input is a lossy file at that bitrate: keep it as it is, or allow rungs above it"
                       if lossy else ""), options={"above_source": True} if lossy else None)
        #: every setting probed, by index: the ladder's rungs first (indices as in the
        #: preset's ladder), then each knob value the search asked for, appended
        self.ladder = rungs
        self.rungs: list[Rung] = list(rungs)
        #: search the rungs, not the knob (Options.ladder; set by the session)
        self.use_ladder = False
        self.axis = KnobAxis(preset, self.track.channels, max_kbps) if preset.knob is not None else None
        info = self.track.info
        #: the lossy source's bitrate when it is what cut the ladder (session.open_session
        #: sets max_kbps to it; above_source lifts it), else None: TargetNotReachable says so
        self.source_cap_kbps = (max_kbps if info is not None and not info.lossless and info.bitrate_kbps
                                and max_kbps == float(info.bitrate_kbps)
                                and len(rungs) < len(preset.rungs_for(self.track.channels)) else None)
        self.ref_silent = source.ref_silent
        self._prep_lock = threading.Lock()
        self.probes: dict[int, Probe] = {}
        #: rungs probed at once (set by the session; see PARALLEL_PROBES)
        self.parallel = 1
        #: keep each whole-track probe's encoded file (rung index -> path in the run's
        #: temp folder): the one that is chosen becomes the output by stream copy
        self.keep_encodes = False
        self.encodes: dict[int, Path] = {}
        #: digest of each kept encode's aligned decode: a written copy that decodes to the
        #: same samples carries the probe's window scores (nothing to score again)
        self.decode_digests: dict[int, str] = {}
        #: later probes of a sampled source encode only the segments that can change the
        #: pooled score (``_plan``; issue 25 lever 1); False: every probe encodes them all
        self.critical = CRITICAL_PROBES
        #: per setting probed: (windows measured at it, their scores; nan elsewhere)
        self._measured: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        #: settings probed on part of the segments: index -> (segments encoded, of)
        self.partial: dict[int, tuple[int, int]] = {}

    @property
    def all_silent(self) -> bool:
        return bool(self.ref_silent.all())

    def warm_up(self) -> None:
        """Make the state probes share (the PCM digest) before threads read it."""
        _ = self.source.digest  # cached_property: computed once here, not raced by two probes

    def _start_prep(self) -> None:
        """Prepare the reference in a thread of its own, once, when the first probe is
        measured (not for probes the cache answers): it is computed while that probe's
        ffmpeg encodes, and the probe waits for it only when it scores (a short input's
        reference takes ~0.1 s of a ~0.8 s encode; issue 13). The source keeps it: every
        prober of the source and the full-track check share it (issue 25)."""
        if (~self.ref_silent).any():
            self.source.reference(self.scorer, background=True)

    def _prep(self):
        return self.source.reference(self.scorer).result()

    def window_scores(self, deg_w: np.ndarray) -> np.ndarray:
        """MOS per window; nan where both reference and degraded are digital silence."""
        prep = self._prep() if (~self.ref_silent).any() else None
        return score_windows(self.scorer, self.ref_silent, prep, lambda: self.source.ref_w, deg_w)

    def _measure(self, i: int) -> dict:
        self._start_prep()
        rts = encode_rung(self.source, self.preset, self.rungs[i], self.keep_encodes)
        if rts[0].encoded_path is not None:
            self.encodes[i] = rts[0].encoded_path
            self.decode_digests[i] = pcm_digest(rts[0].audio, self.track.rate_hz)
        deg_w, _ = self.source.windows(np.concatenate([rt.audio for rt in rts], axis=1))
        return {"window_mos": [float(s) for s in self.window_scores(deg_w)],
                "encoded_bytes": int(sum(rt.size_bytes for rt in rts))}

    def cache_key(self, i: int, pieces=None) -> dict:
        key = {
            "v": 2,
            "pcm": self.source.digest,
            "spans": self.source.encode_spans(),
            "pieces": [(p.offset, p.start, p.length, p.before, p.after) for p in self.source.pieces],
            "rate": self.track.rate_hz,
            "hop_s": self.source.hop_s,
            "codec": preset_fingerprint(self.preset, self.rungs[i]),
            "ffmpeg": media.ffmpeg_version(),
            "scorer": (self.scorer.name, self.scorer.version),
        }
        if pieces is not None:  # a critical-segment probe's encode of these pieces only
            key["subset"] = sorted(int(k) for k in pieces)
        warm = warm_up_samples(self.source, self.preset)
        if warm:  # (absent where there is none: the keys of earlier probes stay valid)
            key["warm_up"] = warm
        return key

    def _measure_pieces(self, i: int, pieces) -> dict:
        """Encode, decode and score only ``pieces`` of the source at setting ``i``."""
        self._start_prep()
        sub = self.source.subset(pieces)
        rts = encode_rung(sub, self.preset, self.rungs[i])
        deg_w, _ = sub.windows(np.concatenate([rt.audio for rt in rts], axis=1))
        at = np.flatnonzero(np.isin(self.source.window_piece, sorted(pieces)))  # the same windows, in order
        if len(at) != len(deg_w):
            raise RuntimeError(f"{len(deg_w)} windows from {len(pieces)} pieces, expected {len(at)}")
        silent = self.ref_silent[at]
        rows = (np.cumsum(~self.ref_silent) - 1)[at[~silent]]  # their rows in the prepared reference
        prep = self.scorer.gather([(self._prep(), rows)]) if len(rows) else None
        scores = score_windows(self.scorer, silent, prep, lambda: self.source.ref_w[at], deg_w)
        return {"window_mos": [float(v) for v in scores], "encoded_bytes": int(sum(rt.size_bytes for rt in rts)),
                "encoded_s": sub.audio.shape[1] / self.track.rate_hz}

    def _plan(self, i: int):
        """Which segments a probe of setting ``i`` encodes: None (all of them), or
        ``(bound, pieces, guard)``. ``bound(pooled)`` [W]: each window's lower bound at
        ``i`` when the pool there is ``pooled``: its score at a lower setting less
        ``CRITICAL_SLACK_MOS``, and (``CRITICAL_RULE`` "rank") its expected score
        (``_predicted_windows``) less the slack; ``pieces``: the segments holding a
        window whose bound is within ``CRITICAL_SELECT_MOS`` of the pool expected at
        ``i`` (the tail the pool is made of) or a window of reference silence, and
        ``guard``: one in ``CRITICAL_GUARD_EVERY`` of the others, spread in time, that
        checks the tail kept its windows. The plan aims at the pool, not at the target:
        a probe's scores serve every target (encode_ladder)."""
        if not (self.critical and self.source.sampled and hasattr(self.scorer, "gather")
                and self.preset.encoder in CRITICAL_ENCODERS and _pool_edge(np.zeros(1), self.pool) is not None):
            return None
        kbps = self.rungs[i].nominal_kbps
        below = [j for j in self._measured if self.rungs[j].nominal_kbps < kbps]
        if not below:
            return None  # nothing below this setting bounds its scores
        mono = np.full(len(self.ref_silent), -np.inf)
        for j in below:
            got, sc = self._measured[j]
            m = got & np.isfinite(sc)
            mono[m] = np.maximum(mono[m], sc[m] - CRITICAL_SLACK_MOS)
        if CRITICAL_RULE == "rank":
            shift, fixed = self._predicted_windows(i, below)

            def bound(pooled: float) -> np.ndarray:
                return np.maximum(mono, np.maximum(fixed, shift + pooled) - CRITICAL_SLACK_MOS)
        else:
            def bound(pooled: float) -> np.ndarray:
                return mono
        edge = self._predicted_pool(i)
        wp = self.source.window_piece
        n = len(self.source.pieces)
        crit = set(wp[(bound(edge) < edge + CRITICAL_SELECT_MOS) | self.ref_silent].tolist())
        rest = [k for k in range(n) if k not in crit]
        guard = set(rest[CRITICAL_GUARD_EVERY // 2 :: CRITICAL_GUARD_EVERY])
        if len(crit) + len(guard) > CRITICAL_MAX_SHARE * n:
            return None  # little to save
        return bound, crit | guard, guard

    def _predicted_windows(self, i: int, below: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Each window's score expected at setting ``i`` as ``(shift, fixed)``: the
        expectation is ``max(fixed, shift + pooled)`` for the pooled score ``pooled`` at
        ``i`` (-inf where unknown). Between the nearest settings measured below and above
        it at which the window was measured, ``fixed``: interpolated in ln kbps; from
        the nearest below, ``shift``: its score there less that setting's pooled score
        (the tail stays the tail: the window keeps its distance from the pool)."""
        kbps = self.rungs[i].nominal_kbps
        x = math.log(kbps)
        n = len(self.ref_silent)
        # per window, the nearest setting below and above ``i`` at which it was measured
        lo_s, lo_x = np.full(n, np.nan), np.full(n, np.nan)
        shift = np.full(n, -np.inf)
        for j in sorted(below, key=lambda j: self.rungs[j].nominal_kbps):
            got, sc = self._measured[j]
            m = got & np.isfinite(sc)
            lo_s[m], lo_x[m] = sc[m], math.log(self.rungs[j].nominal_kbps)
            shift[m] = sc[m] - self.probes[j].pooled_mos
        hi_s, hi_x = np.full(n, np.nan), np.full(n, np.nan)
        above = [j for j in self._measured if self.rungs[j].nominal_kbps > kbps]
        for j in sorted(above, key=lambda j: -self.rungs[j].nominal_kbps):
            got, sc = self._measured[j]
            m = got & np.isfinite(sc)
            hi_s[m], hi_x[m] = sc[m], math.log(self.rungs[j].nominal_kbps)
        fixed = np.full(n, -np.inf)
        both = np.isfinite(lo_s) & np.isfinite(hi_s)
        fixed[both] = lo_s[both] + (hi_s[both] - lo_s[both]) * (x - lo_x[both]) / np.maximum(hi_x[both] - lo_x[both], 1e-9)
        return shift, fixed

    def _predicted_pool(self, i: int) -> float:
        """The pooled score expected at setting ``i``: the probed curve interpolated in
        ln kbps, extrapolated above its top at its last slope (the slope prior's range,
        as ``steps.slope_near``). Only where the planned segments end: a wrong guess costs
        another encode of the segments it left out, never a wrong pool."""
        pts = sorted((math.log(p.bitrate_kbps), p.pooled_mos) for p in self.probes.values()
                     if not math.isnan(p.pooled_mos) and p.bitrate_kbps > 0)
        x = math.log(self.rungs[i].nominal_kbps)
        lo = [q for q in pts if q[0] < x]
        hi = [q for q in pts if q[0] >= x]
        if lo and hi:
            (x0, y0), (x1, y1) = lo[-1], hi[0]
            return y0 + (y1 - y0) * (x - x0) / max(x1 - x0, 1e-9)
        from ratecontrol.search import SLOPE_PRIOR_MOS_PER_X

        sl = SLOPE_PRIOR_MOS_PER_X
        if len(lo) >= 2 and lo[-1][0] > lo[-2][0]:
            sl = (lo[-1][1] - lo[-2][1]) / (lo[-1][0] - lo[-2][0])
            sl = min(max(sl, SLOPE_PRIOR_MOS_PER_X / 3), 3 * SLOPE_PRIOR_MOS_PER_X)
        return lo[-1][1] + sl * (x - lo[-1][0])

    def _measure_critical(self, i: int, bound, pieces: set, guard: set):
        """Scores of setting ``i`` from the planned segments, then as many more as it
        takes for the pool to be the full sample's: a window not encoded counts at its
        bound (``bound(pooled)``), which must lie above the pool's edge (the largest
        score the pool reads: the p10 window itself); windows at or below it get their
        segments encoded. A guard window at or below the edge (the plan missed the tail)
        makes the probe encode every segment. Returns (window scores, measured mask,
        bytes, seconds encoded)."""
        wp = self.source.window_piece
        got = np.zeros(len(wp), bool)
        scores = np.full(len(wp), np.nan)
        size, enc_s, todo, done = 0, 0.0, set(pieces), set()
        lower = None
        while todo:
            out = self.cache.get_or_compute(self.cache_key(i, todo), lambda t=frozenset(todo): self._measure_pieces(i, t))
            at = np.flatnonzero(np.isin(wp, sorted(todo)))
            scores[at] = out["window_mos"]
            got[at] = True
            size += out["encoded_bytes"]
            enc_s += out["encoded_s"]
            done |= todo
            # the pool as if every window left out lay above it, and their bounds at it
            vals = np.where(got, scores, np.inf)
            edge = _pool_edge(vals[~np.isnan(vals)], self.pool)
            lower = bound(edge)
            if guard and (got & np.isin(wp, sorted(guard)) & (scores <= edge)).any():
                # a guard window is in the pool's tail: the plan missed windows like it,
                # and the bounds of those left out cannot be trusted: encode them all
                todo, guard = set(range(len(self.source.pieces))) - done, set()
                continue
            todo = set(wp[~got & (lower <= edge)].tolist()) - done
        return np.where(got, scores, lower), got, size, enc_s

    def knob_x(self, i: int) -> float | None:
        """Setting ``i`` on the knob's axis (ln nominal kbps); None off the knob."""
        v = None if self.axis is None else self.preset.knob_value(self.rungs[i])
        return None if v is None else self.axis.x_of(v)

    def setting(self, value: float) -> int:
        """The index of the setting at knob ``value`` (snapped): a ladder rung with that
        value, one probed before, or a new one appended to ``rungs``."""
        rung = self.preset.knob_rung(value, self.track.channels)
        with self._prep_lock:  # a round's probes ask from threads of their own
            for r in self.rungs:
                if r.options == rung.options:
                    return r.index
            self.rungs.append(replace(rung, index=len(self.rungs)))
            return len(self.rungs) - 1

    def probe(self, i: int, target: float) -> Probe:
        if i in self.probes:
            return self.probes[i]
        rung = self.rungs[i]
        t0 = time.perf_counter()
        plan = self._plan(i)
        if plan is None:
            out = self.cache.get_or_compute(self.cache_key(i), lambda: self._measure(i))
            scores = np.asarray(out["window_mos"], dtype=np.float64)
            size = out["encoded_bytes"]
            self._measured[i] = (np.ones(len(scores), bool), scores)
            # bits per second of the probe encode (context included, as encoded)
            actual = size * 8 / 1000 / (self.source.audio.shape[1] / self.track.rate_hz)
        else:
            scores, got, size, enc_s = self._measure_critical(i, *plan)
            self._measured[i] = (got, np.where(got, scores, np.nan))
            n_got = len(set(self.source.window_piece[got].tolist()))
            if n_got < len(self.source.pieces):
                self.partial[i] = (n_got, len(self.source.pieces))
                actual = self._estimated_kbps(i)
            else:
                actual = size * 8 / 1000 / enc_s
        pooled = pool_scores(scores[~np.isnan(scores)], self.pool)
        p = Probe(
            rung_index=i,
            rung_label=rung.label,
            bitrate_kbps=float(rung.nominal_kbps),
            pooled_mos=pooled,
            window_mos=tuple(float(s) for s in scores),
            passed=bool(not np.isnan(pooled) and pooled >= target),
            seconds=time.perf_counter() - t0,
            encoded_bytes=size,
            actual_kbps=actual,
            preset=self.preset.name,
            knob_value=self.preset.knob_value(rung),
        )
        self.probes[i] = p
        if self.on_probe:
            self.on_probe(p)
        return p

    def _estimated_kbps(self, i: int) -> float:
        """A critical-segment probe's bits per second: its nominal kbps at the actual /
        nominal ratio of the nearest setting probed on every segment (its own segments
        are the quiet ones, where VBR spends less: their own rate would make a higher
        setting look cheaper to the search's cost)."""
        full = [j for j in self.probes if j not in self.partial and self.probes[j].actual_kbps]
        kbps = self.rungs[i].nominal_kbps
        if not full:
            return float(kbps)
        j = min(full, key=lambda j: abs(math.log(self.rungs[j].nominal_kbps / kbps)))
        return float(kbps) * self.probes[j].actual_kbps / self.probes[j].bitrate_kbps

    def discard_encodes(self) -> None:
        for path in self.encodes.values():
            path.unlink(missing_ok=True)
        self.encodes.clear()
        self.decode_digests.clear()

    def result(self, target: float, chosen: Probe | None, probes, reached: bool, notes,
               margin: float = 0.0, knob: bool = False) -> SearchResult:
        part = [self.partial[p.rung_index] for p in probes if p.rung_index in self.partial]
        if part:
            notes = list(notes) + [
                f"{len(part)} later probe(s) encoded only the segments near the bar and a guard sample "
                f"({', '.join(f'{a} of {b}' for a, b in part)}); each other window counts at its score expected "
                f"from the settings measured around it less {CRITICAL_SLACK_MOS:g} MOS, above every window "
                f"the pool reads"]
        return SearchResult(
            preset=self.preset.name,
            target_mos=target,
            margin_mos=margin,
            scorer_uncertainty_mos=getattr(self.scorer, "pooled_error_mos", None),
            pool=self.pool,
            scorer=self.scorer.name,
            channels=self.track.channels,
            duration_s=self.track.duration_s,
            chosen=chosen,
            probes=tuple(probes),
            reached=reached,
            n_windows=int((~self.ref_silent).sum()),
            notes=tuple(self.track.notes) + tuple(notes),
            window_start_s=tuple(float(s) for s in self.source.index.start_s()),
            window_channel=tuple(int(c) for c in self.source.index.channel),
            sampled_s=self.source.scored_s if self.source.sampled else None,
            channel_layout=self.track.layout,
            downmixed_from_channels=self.track.downmixed_from_channels,
            unscored_channels=tuple(sorted(set(range(self.track.channels)) - set(
                self.track.scored_channels or range(self.track.channels)))),
            knob_option=self.preset.knob.option if knob and self.preset.knob is not None else "",
        )

    @property
    def searches_ladder(self) -> bool:
        """run_search takes the rungs, not the knob: the preset has no knob (MP3 CBR) or
        the ladder was asked for (``use_ladder``); the one rule for the search and for
        how many probes a round takes (session.PARALLEL_PROBES)."""
        return self.axis is None or self.use_ladder


class KnobAxis:
    """The knob of one preset for one channel count, as the search sees it: ``x`` = ln of
    the nominal kbps (so the search's tolerances are shares of the bits whatever the
    knob's unit), from the ladder's bottom to its top or ``max_kbps`` (the caps that cut
    the ladder bound the knob)."""

    def __init__(self, preset: Preset, channels: int, max_kbps: float | None):
        self.preset, self.channels, self.knob = preset, channels, preset.knob
        ladder = preset.rungs_for(channels)
        vals = [preset.knob_value(r) for r in ladder]
        self.bounds = preset.knob_bounds(channels)
        self.span = (min(vals), max(vals))
        lo_v, hi_v = (min(vals), max(vals)) if self.knob.direction == "up" else (max(vals), min(vals))
        self.lo_x, self.hi_x = self.x_of(lo_v), self.x_of(hi_v)
        if max_kbps is not None and max_kbps < math.exp(self.hi_x):
            self.hi_x = max(self.lo_x, self.x_of(self.value_of(math.log(max_kbps), down=True)))

    def nominal_kbps(self, value: float) -> float:
        if self.knob.unit == "kbps":
            return float(value)
        return self.preset.quality_nominal_kbps(value, self.channels)

    def x_of(self, value: float) -> float:
        return math.log(self.nominal_kbps(value))

    def value_of(self, x: float, down: bool = False) -> float:
        """The knob value (snapped to its resolution) whose nominal kbps is exp(x);
        ``down``: the nearest grid value not above it."""
        k = self.knob
        if k.unit == "kbps":
            v = math.exp(x)
        else:
            from scipy.optimize import brentq

            lo, hi = self.span
            f = lambda q: self.x_of(q) - x  # noqa: E731 - monotone in q
            if f(lo) * f(hi) > 0:
                v = lo if abs(f(lo)) < abs(f(hi)) else hi
            else:
                v = brentq(f, lo, hi, xtol=k.resolution / 20)
        s = k.snap(v, self.bounds)
        if down and self.x_of(s) > x + 1e-9:
            s = k.snap(s - k.resolution if k.direction == "up" else s + k.resolution, self.bounds)
        return s

    def snap_x(self, x: float) -> float:
        return self.x_of(self.value_of(x))


#: Critical-segment probes (issue 25 lever 1; measured in docs/performance.md "Cost, round
#: 3"): a window's score at a higher setting is taken to be at least its score at a lower
#: one less this slack (MOS) ...
CRITICAL_SLACK_MOS = 0.1
#: ... windows whose bound lies within this of the pooled score expected at the setting
#: (the probed curve, interpolated) are encoded: the tail the 10th percentile is made of ...
CRITICAL_SELECT_MOS = 0.15
#: ... with one in this many of the other segments as a guard of the rise ...
CRITICAL_GUARD_EVERY = 4
#: ... unless that is more than this share of the segments (then all are encoded)
CRITICAL_MAX_SHARE = 0.75
#: the default: later probes encode only the critical segments
CRITICAL_PROBES = True
#: ... for these encoders only: a segment's encode must not depend on the segments before
#: it in the same ffmpeg run (it does not have them in a critical-segment probe). libopus
#: settles within the 1 s of context: 11 critical-segment probes on 6 long real tracks
#: were within 0.015 MOS of the full sample's pool (7 identical), same pass/fail in all.
#: ffmpeg's aac carries its rate control across segments: 15 such probes read up to
#: 0.09 MOS off, and 2 passed where the full sample failed (docs/performance.md "Cost,
#: round 3")
CRITICAL_ENCODERS = ("libopus",)
#: how a window left out is bounded: "monotone" (its score at a lower setting less the
#: slack) or "rank" (also: its score expected at the setting, interpolated between the
#: settings measured around it, or moved by the pool's rise above them, less the slack)
CRITICAL_RULE = "rank"


def _pool_edge(scores: np.ndarray, pool: str) -> float | None:
    """The largest window score ``pool`` reads (a window above it does not change the
    pooled value), or None for a pool every window changes (the mean)."""
    m = validate_pool(pool)
    if m == "mean":
        return None
    if scores.size == 0:
        return float("inf")
    if m == "min" or m.startswith("p"):
        return pool_scores(scores, m)
    k = max(1, int(np.ceil(float(m[len("worst"):]) / 100.0 * scores.size)))
    return float(np.sort(scores)[k - 1])
