"""One input, one scorer, one cache: the probers of every preset share them."""
from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from ratecontrol import media
from ratecontrol.cache import ProbeCache
from ratecontrol.errors import UsageError
from ratecontrol.presets import Preset, load_preset
from ratecontrol.results import Probe
from ratecontrol.search import first_probes
from ratecontrol.scoring.base import Scorer, available_scorers, get_scorer
from ratecontrol.probing.prober import Prober, encode_rung, ladder
from ratecontrol.probing.sampling import CONTEXT_S, DEFAULT_SAMPLE_SHARE, SAMPLE_MAX_S, pick_segments
from ratecontrol.probing.source import ProbeSource, prepare_windows, score_windows
from ratecontrol.probing.track import NO_RATE, Track, load_track, output_rate
from ratecontrol.options import Options


#: the full-track check scores the finished encode a minute at a time (flat memory)
CHECK_CHUNK_S = 60.0

#: rungs probed at once when a probe is one ffmpeg stream (whole-track probes of inputs
#: under SAMPLE_MIN_DURATION_S): on a smooth 13-rung ladder 2 per round take 2.4 rounds
#: instead of 3.75 sequential probes (tests/test_search.py), for ~27 % more encoding
PARALLEL_PROBES = 2
#: encode the search's first round while the scorer loads (open_session); off only to
#: measure what it saves (bench/bench_cost.py --no-prefetch)
PREFETCH = os.environ.get("RATECONTROL_PREFETCH", "1") != "0"
#: at most this many rungs next to the first round are encoded on speculation while the
#: scorer loads (a rung is ~0.1-0.5 s of ffmpeg; the load takes 2-3 s)
SPECULATE_MAX = 4

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

def _discard(fut: Future) -> None:
    """Wait for a prefetched encode nobody took and delete the file it kept."""
    try:
        rts = fut.result()
    except Exception:  # its error belongs to a probe that never ran
        return
    for rt in rts or ():
        if rt.encoded_path is not None:
            rt.encoded_path.unlink(missing_ok=True)


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

    def __post_init__(self):
        self._source: ProbeSource | None = None
        self._probers: dict[str, Prober] = {}
        self._check_ref: list | None = None
        #: (preset name, rung index) -> encodes started by prefetch
        self._prefetched: dict[tuple[str, int], Future] = {}

    def source(self) -> ProbeSource:
        if self._source is None:
            self._source = ProbeSource(self.track, pick_segments(self.track, self.sample_share,
                                                                   max_s=self.sample_max_s), self.hop_s)
        return self._source

    def _parallel(self) -> int:
        # a probe already split over PROBE_PROCESSES ffmpeg processes fills the cores;
        # a one-stream probe leaves one idle: probe two rungs at once. jobs=1 (batch
        # workers, one core each) keeps it sequential.
        if self.jobs != 1 and len(self.source().encode_spans()) == 1:
            return max(1, min(PARALLEL_PROBES, os.cpu_count() or 1))
        return 1

    def prober(self, preset: Preset) -> Prober:
        if preset.name not in self._probers:
            pr = Prober(self.source(), preset, self.scorer, self.pool, self.cache, self.on_probe, self.max_kbps)
            pr.parallel = self._parallel()
            pr.keep_encodes = self.keep_encodes
            pr.prefetched = {i: f for (name, i), f in self._prefetched.items() if name == preset.name}
            self._probers[preset.name] = pr
        return self._probers[preset.name]

    def prefetch(self, preset: Preset, loaded: threading.Event | None = None) -> None:
        """Start the encodes of the search's first round (``search.first_probes``) in
        the background; the probes that need them take them (``Prober.prefetched``).

        An encode needs ffmpeg, not the scorer, so ``open_session`` calls this while
        the learned scorer is still loading in a fresh process (torch import +
        checkpoint, 2-3 s with one core otherwise idle): the first round is then
        encoded when scoring can start. ``loaded``: an event set when the scorer is
        ready; until then up to ``SPECULATE_MAX`` more rungs next to the first round
        are encoded on speculation (the ones the search is likeliest to probe next),
        and none is started after it. What no probe takes (a probe-cache hit, a
        speculation the search never needed) is deleted by ``close``.
        """
        rungs = ladder(preset, self.track.channels, self.max_kbps)
        if not rungs or preset.name in {name for name, _ in self._prefetched}:
            return
        keep, src, n = self.keep_encodes, self.source(), len(rungs)
        first = first_probes(n, self._parallel())
        spec = []
        if loaded is not None:
            for d in range(1, n):
                for f in first:
                    spec += [j for j in (f + d, f - d) if 0 <= j < n and j not in first and j not in spec]
            spec = spec[:SPECULATE_MAX]

        def speculative(rung):
            # started only while the scorer is loading: after that the search knows better
            return None if loaded.is_set() else encode_rung(src, preset, rung, keep)

        # one ffmpeg stream per first-round rung (a sampled probe's encode is already
        # PROBE_PROCESSES of them); speculations queue behind the first round
        ex = ThreadPoolExecutor(len(first))
        for i in first:
            self._prefetched[(preset.name, i)] = ex.submit(encode_rung, src, preset, rungs[i], keep)
        for i in spec:
            self._prefetched[(preset.name, i)] = ex.submit(speculative, rungs[i])
        ex.shutdown(wait=False)

    def prefetch_stats(self) -> dict[str, int]:
        """How many prefetched encodes were started and how many probes took one."""
        futs = list(self._prefetched.values())
        done = [f for f in futs if f.done() and not f.cancelled() and f.exception() is None and f.result() is not None]
        return {"prefetched": len(done), "taken": sum(pr.prefetch_taken for pr in self._probers.values())}

    def close(self) -> None:
        """Delete the probes' kept encodes, and those of prefetched encodes no probe took."""
        for pr in self._probers.values():
            pr.discard_encodes()
            for fut in pr.prefetched.values():
                _discard(fut)
            pr.prefetched.clear()
        for key, fut in self._prefetched.items():
            if key[0] not in self._probers:
                _discard(fut)
        self._prefetched.clear()

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
                silent, prep = prepare_windows(self.scorer, piece.ref_w)
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
        if sc and sc not in available_scorers():  # fail before any decoding
            raise UsageError(f"unknown scorer {sc!r}; use one of {available_scorers()}")
        ex = ThreadPoolExecutor(1)
        fut = ex.submit(resolve_scorer, sc, n_jobs=opts.jobs)
        ex.shutdown(wait=False)  # an input error below must not wait for the import
        track = load_track(source, rate_for, sample_rate_hz, opts.allow_partial, preset_for_rate)
        sc = fut if not fut.done() else fut.result()
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
                f"input is lossy ({info.codec}, ~{info.bitrate_kbps:.0f} kbps): the ladder stops at its bitrate "
                "(--above-source to allow more)",))
    loading = sc if isinstance(sc, Future) else None
    session = Session(track, None if loading else sc, opts.pool, cache if cache is not None else resolve_cache(opts.cache),
                      opts.hop_s, share, opts.on_probe, max_kbps, opts.jobs,
                      SAMPLE_MAX_S if opts.sample_share is None else None, keep_encodes)
    if loading is not None:
        # the scorer is still loading: encode the search's first round meanwhile
        # (docs/performance.md, "Cost"); the loader keeps one core, ffmpeg takes the other
        loaded = threading.Event()
        loading.add_done_callback(lambda _: loaded.set())
        try:
            if preset_for_rate is not None and PREFETCH:
                session.prefetch(preset_for_rate, loaded)
            session.scorer = loading.result()
        except BaseException:
            session.close()
            raise
    return session
