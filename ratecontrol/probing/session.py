"""One input, one scorer, one cache: the probers of every preset share them."""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from ratecontrol import media
from ratecontrol.cache import ProbeCache
from ratecontrol.presets import Preset, load_preset
from ratecontrol.results import Probe
from ratecontrol.scoring.base import Scorer, check_scorer, get_scorer
from ratecontrol.windows import is_digital_silence
from ratecontrol.probing.prober import Prober
from ratecontrol.probing.sampling import CONTEXT_S, DEFAULT_SAMPLE_SHARE, SAMPLE_MAX_S, pick_segments
from ratecontrol.probing.source import ProbeSource, prepare_windows, score_windows
from ratecontrol.probing.track import NO_RATE, Track, load_track, output_rate
from ratecontrol.options import Options


#: the full-track check scores the finished encode a minute at a time (flat memory)
CHECK_CHUNK_S = 60.0

#: rungs probed at once by a *ladder* search when a probe is one ffmpeg stream
#: (whole-track probes of inputs under SAMPLE_MIN_DURATION_S): on a smooth 13-rung ladder
#: 2 per round take 2.4 rounds instead of 3.75 sequential probes (tests/test_search.py),
#: for ~27 % more encoding. The knob search probes one setting at a time: two at once
#: measured worse (10 short real items x Opus/AAC, warm process, idle machine,
#: docs/performance.md "Short inputs: one probe at a time"): 130 probes instead of 88,
#: 1.45x the CPU, 1.08x the wall summed (AAC alone 0.96x), and 1.4 % more bits
PARALLEL_PROBES = 2

def resolve_preset(codec: str | Preset) -> Preset:
    preset = codec if isinstance(codec, Preset) else load_preset(codec)
    media.require_encoder(preset)
    return preset


def resolve_scorer(scorer: str | Scorer | None, **kwargs: Any) -> Scorer:
    if scorer is None or isinstance(scorer, str):
        return get_scorer(scorer, **{k: v for k, v in kwargs.items() if v is not None})
    return scorer


def resolve_cache(cache: ProbeCache | bool | str | os.PathLike | None) -> ProbeCache:
    if isinstance(cache, ProbeCache):
        return cache
    if cache is False:
        return ProbeCache(enabled=False)
    if cache is None or cache is True:
        return ProbeCache()
    return ProbeCache(cache)

@dataclass
class Session:
    """One input, one scorer, one cache: probers per preset share the decode and windows."""

    track: Track
    scorer: Scorer
    pool: str
    cache: ProbeCache
    hop_s: float
    sample_share: float
    on_probe: Callable[[Probe], None] | None
    max_kbps: float | None
    jobs: int | None = None
    sample_max_s: float | None = None
    #: probers keep their whole-track encodes (encode(): the chosen one is the output)
    keep_encodes: bool = False
    #: search the presets' rungs, not their knobs (Options.ladder)
    ladder: bool = False

    def __post_init__(self):
        self._source: ProbeSource | None = None
        self._probers: dict[str, Prober] = {}
        self._check_ref: list | None = None

    def source(self) -> ProbeSource:
        if self._source is None:
            self._source = ProbeSource(self.track, pick_segments(self.track, self.sample_share,
                                                                   max_s=self.sample_max_s), self.hop_s)
        return self._source

    def _parallel(self, pr: Prober) -> int:
        # a probe already split over PROBE_PROCESSES ffmpeg processes fills the cores;
        # a one-stream probe of a ladder search leaves one idle: probe two rungs at once.
        # The knob search goes one setting at a time (PARALLEL_PROBES). jobs=1 (batch
        # workers, one core each) keeps it sequential.
        if pr.searches_ladder and self.jobs != 1 and len(self.source().encode_spans()) == 1:
            return max(1, min(PARALLEL_PROBES, os.cpu_count() or 1))
        return 1

    def prober(self, preset: Preset) -> Prober:
        if preset.name not in self._probers:
            pr = Prober(self.source(), preset, self.scorer, self.pool, self.cache, self.on_probe, self.max_kbps)
            pr.use_ladder = self.ladder
            pr.parallel = self._parallel(pr)
            pr.keep_encodes = self.keep_encodes
            self._probers[preset.name] = pr
        return self._probers[preset.name]

    def close(self) -> None:
        """Delete the probes' kept encodes."""
        for pr in self._probers.values():
            pr.discard_encodes()

    def _check_pieces(self, chunk_s: float = CHECK_CHUNK_S):
        """The track cut into ``chunk_s`` probe sources for the full-track check."""
        t = self.track
        rate, n = t.rate_hz, t.src.shape[1]
        step = int(chunk_s * rate)
        for a in range(0, n, step):
            b = min(n, a + step)
            if n - b < rate:  # never leave a tail shorter than one window
                b = n
            yield a, b, (ProbeSource(t, [(a, b - a)], self.hop_s) if (a, b) != (0, n)
                         else ProbeSource(t, None, self.hop_s))
            if b == n:
                break

    def _prepare_piece(self, piece: ProbeSource):
        """(silence mask, prepared non-silent reference windows or None) of one check
        piece. The windows the probes' sampled source has prepared already (the same
        1-s grid: segments start on whole seconds, as the check's pieces do) are taken
        from it (``Scorer.gather``), only the rest is prepared: one preparation of each
        reference window per track (issue 25 lever 2). The taken rows were prepared
        from the segment's own resampled piece, the check's from the minute's: the
        resampler is the same kernel at the same phase; scores agree within 1e-4 MOS (2.5e-5
        measured on 40 s of real music)
        (tests/test_shared_reference.py)."""
        ref_w = piece.ref_w
        src = self._source
        rows = src.prepared_rows(self.scorer) if src is not None and src.sampled else None
        if not rows:
            return prepare_windows(self.scorer, ref_w)
        silent = is_digital_silence(ref_w)
        live = np.flatnonzero(~silent)
        if not live.size:
            return silent, None
        idx = piece.index
        hits = [rows.get((int(idx.channel[j]), int(idx.start_sample[j]))) for j in live]
        taken = [k for k, h in enumerate(hits) if h is not None]
        if not taken:
            return silent, self.scorer.prepare(ref_w[live])
        fresh = [k for k, h in enumerate(hits) if h is None]
        prep_src = hits[taken[0]][0]
        parts = [(prep_src, np.array([hits[k][1] for k in taken], np.intp))]
        if fresh:
            parts.append((self.scorer.prepare(ref_w[live[fresh]]), np.arange(len(fresh), dtype=np.intp)))
        joined = self.scorer.gather(parts)  # taken rows, then fresh ones: back to window order
        return silent, self.scorer.gather([(joined, np.argsort(np.array(taken + fresh), kind="stable"))])

    def full_track_scores(self, deg, chunk_s: float = CHECK_CHUNK_S, with_index: bool = False):
        """Window scores of a whole decoded encode, a ``CHECK_CHUNK_S`` piece at a time.

        ``with_index``: return ``(scores, start_s, channel)``, where each score's window
        starts in the track (s) and its channel, in the scores' order (the report plots
        the shipped file's windows over the whole track with them).

        ``deg`` is read as ``deg[:, lo:hi]`` moving forward (an array, or a
        ForwardReader over the blocks a StreamedEncode decodes as it encodes). Each
        piece (with 1 s of context for the resampler) is windowed, its reference
        prepared and scored on its own, in the order ffmpeg produces the audio: the
        check keeps pace with the encode on the other core instead of waiting for the
        whole reference first (that wait stalled ffmpeg on a full pipe: 1.5 s of a 4-min
        Opus check). Memory holds one minute of windows. For scorers whose prepared
        reference is compact (``compact_prepare``: ~4 KB per window, ~30 MB for an hour
        of stereo) the prepared pieces are kept, so a step-up rescores without
        preparing again.
        """
        t = self.track
        rate, n = t.rate_hz, t.src.shape[1]
        ctx = int(CONTEXT_S * rate)
        keep = getattr(self.scorer, "compact_prepare", False)
        if self._check_ref is None:
            self._check_ref = {}
        out, starts, chans = [], [], []
        for a, b, piece in self._check_pieces(chunk_s):
            if (a, b) in self._check_ref:
                piece, silent, prep = self._check_ref[(a, b)]
            else:
                silent, prep = self._prepare_piece(piece)
                if keep:
                    self._check_ref[(a, b)] = (piece, silent, prep)
            lo, hi = max(0, a - ctx), min(n, b + ctx)
            deg_w, idx = ProbeSource.cut_like(piece, deg[:, lo:hi])
            out.append(score_windows(self.scorer, silent, prep, lambda: piece.ref_w, deg_w))
            starts.append(idx.start_s())
            chans.append(idx.channel)
            piece.drop_windows()
        scores = np.concatenate(out)
        if with_index:
            return scores, np.concatenate(starts), np.concatenate(chans)
        return scores


def one_call_at_a_time(on_probe: Callable[[Probe], None] | None) -> Callable[[Probe], None] | None:
    """``on_probe`` behind a lock: a round's probes (PARALLEL_PROBES) and codec auto's
    presets run on threads of their own, yet Options.on_probe promises calls that never
    overlap (a printer or a callback that touches files needs no lock of its own).
    Wrapping twice keeps the first wrapper, so every session of a run shares one lock."""
    if on_probe is None or getattr(on_probe, "_one_at_a_time", False):
        return on_probe
    lock = threading.Lock()

    def serialized(probe: Probe) -> None:
        with lock:
            on_probe(probe)
    serialized._one_at_a_time = True  # type: ignore[attr-defined]
    return serialized


def open_session(source, preset_for_rate: Preset | None, opts: Options, sample_rate_hz: int | None = None,
                 keep_encodes: bool = False, scorer: Scorer | None = None, cache: ProbeCache | None = None) -> Session:
    """Decode ``source`` for ``preset_for_rate`` (None: the source's own rate rule) and
    make the session; ``scorer``/``cache`` given are shared (``codec=auto``)."""
    share = DEFAULT_SAMPLE_SHARE if opts.sample_share is None else float(opts.sample_share)
    rate_for = (lambda r: output_rate(preset_for_rate, r)) if preset_for_rate else (lambda r: output_rate(NO_RATE, r))
    sc = scorer if scorer is not None else opts.scorer
    if sc is None or isinstance(sc, str):
        # loading the learned scorer (torch import + checkpoint, ~2-4 s on a 2-core VM)
        # overlaps the input's decode, which ffmpeg does in another process
        check_scorer(sc)  # fail before any decoding (a name, or torch asked for and missing)
        ex = ThreadPoolExecutor(1)
        fut = ex.submit(resolve_scorer, sc, n_jobs=opts.jobs)
        ex.shutdown(wait=False)  # an input error below must not wait for the import
        track = load_track(source, rate_for, sample_rate_hz, opts.allow_partial, preset_for_rate)
        sc = fut.result()
    else:
        track = load_track(source, rate_for, sample_rate_hz, opts.allow_partial, preset_for_rate)
    max_kbps = opts.max_kbps
    info = track.info
    if info is not None and not info.lossless and info.bitrate_kbps and not opts.above_source:
        # one rule for encode and batch: never spend more bits than a lossy source has
        # (its quality is already spent); --above-source lifts it
        if max_kbps is None or info.bitrate_kbps < max_kbps:
            max_kbps = float(info.bitrate_kbps)
            track = replace(track, notes=track.notes + (
                f"input is lossy ({info.codec}, ~{info.bitrate_kbps:.0f} kbps): the ladder stops at its bitrate",))
    return Session(track, sc, opts.pool, cache if cache is not None else resolve_cache(opts.cache), opts.hop_s, share,
                   one_call_at_a_time(opts.on_probe), max_kbps, opts.jobs, SAMPLE_MAX_S if opts.sample_share is None else None,
                   keep_encodes, opts.ladder)
