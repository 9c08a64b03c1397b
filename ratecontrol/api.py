"""Library entry points: ``select_bitrate``, ``encode``, ``encode_ladder``, ``score``.

The flow for one track:
1. decode the input once at the rate the output will have (``_output_rate``), up to two
   channels (``_Track.src``);
2. decide what the probes encode (``_ProbeSource``): the whole track, or for long inputs
   segments spread evenly over it (``_pick_segments``), each with 1 s of context
   either side so codec start-up does not bias them;
3. cut the reference windows (44.1 kHz, 1 s) and ``scorer.prepare`` them once;
4. each probe round-trips the probe source through the codec at one rung (delay
   compensated), resamples with the *same* resampler, cuts the same windows, scores
   (per-window scores are cached on disk, see cache.py) and pools;
5. the ladder search (search.py) decides which rung to probe next;
6. ``encode`` writes the chosen rung from the original file (keeping tags and cover
   art) to a temp file; when the search was sampled, the whole encode is then decoded
   and scored, and if it misses the target the next rung up is tried; then rename.
"""
from __future__ import annotations

import functools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ratecontrol import fsutil, media
from ratecontrol._resample import resample
from ratecontrol.align import align, estimate_delay
from ratecontrol.cache import ProbeCache, pcm_digest, preset_fingerprint
from ratecontrol.errors import InputError, OutputError, TargetNotReachable, UsageError
from ratecontrol.presets import Preset, list_presets, load_preset
from ratecontrol.results import EncodeResult, Probe, ScoreResult, SearchResult
from ratecontrol.scoring.base import Scorer, available_scorers, get_scorer
from ratecontrol.scoring.pooling import DEFAULT_POOL, pool as pool_scores, validate_pool
from ratecontrol.search import search_ladder
from ratecontrol.windows import (
    MODEL_SAMPLE_RATE_HZ,
    WindowIndex,
    cut_windows,
    is_digital_silence,
    window_complexity,
)

__all__ = ["select_bitrate", "encode", "encode_ladder", "score", "MOS_MIN", "MOS_MAX", "AUTO_CODEC"]

#: ViSQOL MOS-LQO spans 1..5 by definition (audio mode tops out at ~4.73 for identity)
MOS_MIN, MOS_MAX = 1.0, 5.0
#: the largest codec/file delay ``score`` searches for when aligning two files (0.5 s)
MAX_ALIGN_LAG_S = 0.5
#: ``codec="auto"``: try every available preset, keep the smallest output
AUTO_CODEC = "auto"

#: Sampled search defaults. Inputs shorter than SAMPLE_MIN_DURATION_S are probed whole.
#: Longer ones are probed on SEGMENT_S-second segments covering DEFAULT_SAMPLE_SHARE of
#: the track (at least SAMPLE_MIN_S seconds), each encoded with CONTEXT_S of audio either
#: side (Opus/AAC/MP3 settle within ~50 ms; 1 s is generous).
DEFAULT_SAMPLE_SHARE = 0.2
SAMPLE_MIN_DURATION_S = 30.0
SAMPLE_MIN_S = 12.0
#: With the default share, probes score at most this much of a track (60 segments of 3 s):
#: what a spread sample estimates well depends on its number of segments, not on the
#: share (docs/performance.md: 6-13 segments at share 0.1 chose the full track's rung in
#: 63 of 93 cases, 12-26 at 0.2 in 81, 18-39 at 0.3 in 83), and without a cap a probe of
#: an hour-long input scored 12 minutes at once (~1.3 GB of working memory, growing with
#: the input). An explicit --sample-share is taken as given.
SAMPLE_MAX_S = 180.0
SEGMENT_S = 3.0
CONTEXT_S = 1.0
#: the full-track check scores the finished encode a minute at a time (flat memory)
CHECK_CHUNK_S = 60.0
#: inputs at least this long are decoded to a mapped temp file (media.decode_to_disk),
#: not into process memory: 10 minutes of 48 kHz stereo is 230 MB of float32, an hour
#: 1.4 GB, and every later step reads the track a segment or a minute at a time
DISK_DECODE_MIN_S = 600.0
#: ffmpeg processes per sampled probe (its pieces split between them). Fixed, not
#: os.cpu_count(): the split is part of what a probe measured, so results and cache
#: keys must not depend on the machine
PROBE_PROCESSES = 2
#: rungs probed at once when a probe is one ffmpeg stream (whole-track probes of inputs
#: under SAMPLE_MIN_DURATION_S): on a smooth 13-rung ladder 2 per round take 2.4 rounds
#: instead of 3.75 sequential probes (tests/test_search.py), for ~27 % more encoding
PARALLEL_PROBES = 2
SAMPLE_STRATEGIES = ("hardest", "spread", "level")
#: Which segments (bench/bench_sampling.py, docs/performance.md): against full-track
#: scores of 11 long inputs x opus/aac/mp3 x 3 targets (93 cases, share 0.2), evenly
#: spread segments chose the full track's rung in 81 cases (never 2+ rungs off),
#: loudness-stratified ones in 76, the data builder's "hardest" (complexity) segments
#: in 60 with 9 cases 2+ rungs too low: ViSQOL's worst windows are quiet passages,
#: not dense ones, and the hardest segments overestimated the track's p10 by 0.06 MOS.
DEFAULT_SAMPLE_STRATEGY = "spread"


def _check_target(target_mos: float) -> float:
    t = float(target_mos)
    if not (MOS_MIN <= t <= MOS_MAX):
        raise UsageError(f"target MOS {target_mos} is outside [{MOS_MIN:g}, {MOS_MAX:g}]; ViSQOL MOS-LQO tops out at ~4.73")
    return t


def _resolve_preset(codec: str | Preset) -> Preset:
    preset = codec if isinstance(codec, Preset) else load_preset(codec)
    preset.check_available()
    return preset


def _resolve_scorer(scorer: str | Scorer | None, **kwargs: Any) -> Scorer:
    if scorer is None or isinstance(scorer, str):
        return get_scorer(scorer, **{k: v for k, v in kwargs.items() if v is not None})
    return scorer


def _resolve_cache(cache: ProbeCache | bool | str | os.PathLike | None) -> ProbeCache:
    if isinstance(cache, ProbeCache):
        return cache
    if cache is False:
        return ProbeCache(enabled=False)
    if cache is None or cache is True:
        return ProbeCache()
    return ProbeCache(cache)


def _output_rate(preset: Preset, source_rate_hz: int) -> int:
    """Sample rate of the encoded output (and therefore of every probe).

    A preset may force one (Opus is always 48 kHz). Otherwise 44.1 and 48 kHz sources
    keep their rate; anything above 48 kHz is brought to 48 kHz (lossy codecs spend bits
    on content above 20 kHz otherwise, and MP3 cannot store > 48 kHz); odd low rates
    (22.05, 35.467, 39 kHz) go to 44.1 kHz, a rate every preset's encoder supports.
    """
    if preset.sample_rate_hz:
        return int(preset.sample_rate_hz)
    if source_rate_hz in (44_100, 48_000):
        return source_rate_hz
    return 48_000 if source_rate_hz > 48_000 else 44_100


@dataclass(frozen=True)
class _Track:
    """A decoded input ready for probing."""

    path: Path | None
    src: np.ndarray  # float32 [C, N] at rate_hz: what probes encode
    rate_hz: int
    info: media.ProbeInfo | None
    notes: tuple[str, ...]

    @property
    def channels(self) -> int:
        return int(self.src.shape[0])

    @property
    def duration_s(self) -> float:
        return self.src.shape[1] / self.rate_hz


def _as_array(audio: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] == 0:
        raise InputError(f"{what}: expected audio shaped [channels, samples] with samples > 0, got {a.shape}")
    if a.shape[0] > a.shape[1]:
        raise InputError(f"{what}: got {a.shape[0]} channels x {a.shape[1]} samples; pass [channels, samples]")
    if not np.all(np.isfinite(a)):
        raise InputError(f"{what}: audio contains NaN or infinity")
    return a


def _load_track(source, rate_for: Callable[[int], int], sample_rate_hz: int | None) -> _Track:
    """Decode ``source`` once at ``rate_for(source rate)``, at most 2 channels."""
    notes: list[str] = []
    if isinstance(source, np.ndarray):
        if not sample_rate_hz:
            raise UsageError("pass sample_rate_hz together with an audio array")
        a = _as_array(source, "input array")
        if a.shape[0] > 2:
            raise InputError(f"input array has {a.shape[0]} channels; pass mono or stereo")
        rate = rate_for(int(sample_rate_hz))
        return _Track(None, resample(a, int(sample_rate_hz), rate), rate, None, ())
    path = Path(source)
    info = media.probe(path)
    channels = min(info.channels, 2)
    if info.channels > 2:
        # the mp3 encoder takes at most 2 channels and the model scores stereo; one
        # policy for every preset: ffmpeg's standard downmix to stereo
        notes.append(f"input has {info.channels} channels: downmixed to stereo")
    rate = rate_for(info.sample_rate_hz)
    if info.duration_s and info.duration_s >= DISK_DECODE_MIN_S:
        src = media.decode_to_disk(path, rate, channels)
    else:
        src = media.decode(path, sample_rate_hz=rate, channels=channels)
    if not info.lossless and info.bitrate_kbps:
        notes.append(f"input is lossy ({info.codec}, ~{info.bitrate_kbps:.0f} kbps): scores are relative to the decoded input")
    return _Track(path, src, rate, info, tuple(notes))


def _pick_segments(track: _Track, share: float, strategy: str | None = None,
                   max_s: float | None = None) -> list[tuple[int, int]] | None:
    """``SEGMENT_S`` segments covering ``share`` of the track (at most ``max_s`` seconds),
    or None (= probe it all).

    Strategies (``bench/bench_sampling.py`` measures them against full-track scores):

    * ``hardest``: the segments with the highest mean ``window_complexity`` (the data
      builder's spectral flux x bandwidth), greedily, never overlapping.
    * ``spread``: evenly spaced over the track (systematic sampling).
    * ``level``: stratified by loudness: segments sorted by level, taken at evenly
      spaced ranks, so quiet and loud passages are probed in proportion.

    Digital silence is never picked. Returns (start, length) in samples at the track's
    rate, sorted by time.
    """
    strategy = strategy or DEFAULT_SAMPLE_STRATEGY
    if strategy not in SAMPLE_STRATEGIES:
        raise UsageError(f"unknown sampling strategy {strategy!r}; use one of {', '.join(SAMPLE_STRATEGIES)}")
    dur = track.duration_s
    if share >= 1.0 or dur < SAMPLE_MIN_DURATION_S:
        return None
    rate = track.rate_hz
    seg = int(SEGMENT_S)
    n_slots = int(dur) // seg
    want = max(SAMPLE_MIN_S, share * dur)
    if max_s is not None:
        want = min(want, max(max_s, SAMPLE_MIN_S))
    n_seg = min(int(np.ceil(want / seg)), n_slots)
    if n_seg >= n_slots * 0.9:
        return None  # nearly everything: probe the whole track
    if strategy == "hardest":
        n_sec = int(dur)
        # a minute at a time: the track may be a mapped file (DISK_DECODE_MIN_S)
        hard = np.concatenate([
            window_complexity(track.src[:, a * rate : min(a + 60, n_sec) * rate].mean(axis=0).reshape(-1, rate),
                              sample_rate_hz=rate).score
            for a in range(0, n_sec, 60)])
        seg_score = np.convolve(hard, np.ones(seg) / seg, mode="valid")  # start k covers k..k+seg-1
        taken = np.zeros(n_sec, bool)
        starts: list[int] = []
        for k in np.argsort(-seg_score, kind="stable"):
            if len(starts) >= n_seg:
                break
            if not taken[k : k + seg].any():
                taken[k : k + seg] = True
                starts.append(int(k))
        return [(k * rate, seg * rate) for k in sorted(starts)]
    # slots: the track cut into consecutive SEGMENT_S pieces; energy per slot, loudest
    # channel, 20 slots (a minute) at a time: no copy of the track (a float64 square of
    # it was 2.8 GB per hour of 48 kHz stereo), and a mapped track is read once in order
    ms = np.empty(n_slots)
    for k in range(0, n_slots, 20):
        k1 = min(n_slots, k + 20)
        block = np.ascontiguousarray(track.src[:, k * seg * rate : k1 * seg * rate]).reshape(
            track.channels, k1 - k, seg * rate)
        ms[k:k1] = np.einsum("csn,csn->cs", block, block).max(axis=0)
    live = np.flatnonzero(ms > 0)
    if live.size <= n_seg:
        return None
    if strategy == "spread":
        picks = live[np.round((np.arange(n_seg) + 0.5) * live.size / n_seg - 0.5).astype(int)]
    else:  # level
        order = live[np.argsort(ms[live], kind="stable")]
        picks = order[np.round((np.arange(n_seg) + 0.5) * live.size / n_seg - 0.5).astype(int)]
    return [(int(k) * seg * rate, seg * rate) for k in sorted(set(picks.tolist()))]


@dataclass(frozen=True)
class _Piece:
    offset: int  # where the piece starts in the probe array (track-rate samples)
    start: int  # where its scored segment starts in the track
    length: int  # scored length
    before: int  # context before the segment inside the piece
    after: int  # context after


class _ProbeSource:
    """What each probe encodes, and how windows are cut from its decode."""

    def __init__(self, track: _Track, segments: list[tuple[int, int]] | None, hop_s: float):
        self.track, self.hop_s = track, hop_s
        n = track.src.shape[1]
        if segments is None:
            self.pieces = (_Piece(0, 0, n, 0, 0),)
            self.audio = track.src
        else:
            ctx = int(CONTEXT_S * track.rate_hz)
            pieces, chunks, off = [], [], 0
            for start, length in segments:
                b0, e1 = max(0, start - ctx), min(n, start + length + ctx)
                pieces.append(_Piece(off, start, length, start - b0, e1 - start - length))
                chunks.append(track.src[:, b0:e1])
                off += e1 - b0
            # one segment (the full-track check's minutes) stays a view of the track: a
            # copy per minute, kept by the check's prepared reference, was a second copy
            # of the whole input (1.3 GB per hour)
            self.pieces = tuple(pieces)
            self.audio = chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=1)
        self.sampled = segments is not None

    # windows and digest are computed on first use: the full-track check builds
    # sources per minute and keeps only their geometry once the reference is prepared
    @functools.cached_property
    def _ref(self) -> tuple[np.ndarray, WindowIndex]:
        return self.windows(self.audio)

    @property
    def ref_w(self) -> np.ndarray:
        return self._ref[0]

    @property
    def index(self) -> WindowIndex:
        return self._ref[1]

    def drop_windows(self) -> None:
        self.__dict__.pop("_ref", None)

    @functools.cached_property
    def digest(self) -> str:
        return pcm_digest(self.audio, self.track.rate_hz)

    def encode_spans(self) -> list[tuple[int, int]]:
        """Where a probe's audio is cut into independent encodes, at piece boundaries.

        Sampled pieces each carry their own codec context, so they can be encoded by
        ``PROBE_PROCESSES`` ffmpeg processes at once (about halving a probe's wall
        time on 2 cores); a whole-track probe stays one stream.
        """
        n = self.audio.shape[1]
        k = min(PROBE_PROCESSES, len(self.pieces)) if self.sampled else 1
        if k < 2:
            return [(0, n)]
        cuts = [0]
        for j in range(1, k):
            goal = j * n / k  # the piece start nearest to an equal share
            cuts.append(min((p.offset for p in self.pieces[1:]), key=lambda o: abs(o - goal)))
        cuts = sorted(set(cuts)) + [n]
        return list(zip(cuts[:-1], cuts[1:]))

    @staticmethod
    def cut_like(source: "_ProbeSource", x: np.ndarray) -> tuple[np.ndarray, WindowIndex]:
        """Windows of ``x``, which must be shaped like ``source.audio``."""
        if x.shape != source.audio.shape:
            raise ValueError(f"degraded audio {x.shape} does not match the probe source {source.audio.shape}")
        return source.windows(x)

    @property
    def scored_s(self) -> float:
        return sum(p.length for p in self.pieces) / self.track.rate_hz

    def windows(self, x: np.ndarray) -> tuple[np.ndarray, WindowIndex]:
        """Windows of ``x`` (shaped like ``self.audio``) with absolute track positions."""
        rate = self.track.rate_hz
        ws, chans, starts = [], [], []
        for p in self.pieces:
            piece = x[:, p.offset : p.offset + p.before + p.length + p.after]
            # resample the whole piece (context included) so filter edges stay outside
            p44 = resample(piece, rate, MODEL_SAMPLE_RATE_HZ)
            b = int(round(p.before * MODEL_SAMPLE_RATE_HZ / rate))
            core = p44[:, b : b + int(round(p.length * MODEL_SAMPLE_RATE_HZ / rate))]
            w, idx = cut_windows(core, hop_s=self.hop_s)
            ws.append(w)
            chans.append(idx.channel)
            starts.append(idx.start_sample + int(round(p.start * MODEL_SAMPLE_RATE_HZ / rate)))
        index = WindowIndex(np.concatenate(chans), np.concatenate(starts),
                            int(round(self.track.src.shape[1] * MODEL_SAMPLE_RATE_HZ / rate)))
        return np.concatenate(ws), index


def _prepare_windows(scorer: Scorer, ref_w: np.ndarray):
    """(digital-silence mask, scorer-prepared non-silent reference windows or None)."""
    silent = is_digital_silence(ref_w)
    return silent, (scorer.prepare(ref_w[~silent]) if (~silent).any() else None)


def _score_windows(scorer: Scorer, silent: np.ndarray, prep, ref_windows: Callable[[], np.ndarray],
                   deg_w: np.ndarray) -> np.ndarray:
    """MOS per window against a prepared reference; nan where both sides are silence.

    A window whose reference is digital silence but whose decode is not (the codec put
    something there) is scored too, against ``ref_windows()`` fetched only then.
    """
    scores = np.full(len(deg_w), np.nan)
    if prep is not None:
        scores[~silent] = scorer.score(prep, deg_w[~silent])
    odd = silent & ~is_digital_silence(deg_w)
    if odd.any():
        scores[odd] = scorer.score(scorer.prepare(ref_windows()[odd]), deg_w[odd])
    return scores


class _Prober:
    """Encodes, decodes and scores rungs of one preset against one probe source."""

    def __init__(self, source: _ProbeSource, preset: Preset, scorer: Scorer, pool: str,
                 cache: ProbeCache, on_probe: Callable[[Probe], None] | None = None,
                 max_kbps: float | None = None):
        self.source, self.track = source, source.track
        self.preset, self.scorer, self.pool, self.cache, self.on_probe = preset, scorer, pool, cache, on_probe
        rungs = preset.rungs_for(self.track.channels)
        if max_kbps is not None:
            rungs = tuple(r for r in rungs if r.nominal_kbps <= max_kbps)
            if not rungs:
                raise UsageError(
                    f"no rung of preset '{preset.name}' is at or below {max_kbps:g} kbps "
                    f"(lowest is {preset.rungs_for(self.track.channels)[0].nominal_kbps:g})"
                )
        self.rungs = rungs
        self.ref_silent = is_digital_silence(source.ref_w)
        self._prepared = None
        self.probes: dict[int, Probe] = {}
        #: rungs probed at once (set by the session; see PARALLEL_PROBES)
        self.parallel = 1
        #: keep each whole-track probe's encoded file (rung index -> path in the run's
        #: temp folder): the one that is chosen becomes the output by stream copy
        self.keep_encodes = False
        self.encodes: dict[int, Path] = {}

    @property
    def all_silent(self) -> bool:
        return bool(self.ref_silent.all())

    def warm_up(self) -> None:
        """Make the state probes share (prepared reference, PCM digest) before threads read it."""
        self._prep()
        _ = self.source.digest  # cached_property: computed once here, not raced by two probes

    def _prep(self):
        if self._prepared is None:
            self._prepared = self.scorer.prepare(self.source.ref_w[~self.ref_silent])
        return self._prepared

    def window_scores(self, deg_w: np.ndarray) -> np.ndarray:
        """MOS per window; nan where both reference and degraded are digital silence."""
        prep = self._prep() if (~self.ref_silent).any() else None
        return _score_windows(self.scorer, self.ref_silent, prep, lambda: self.source.ref_w, deg_w)

    def _measure(self, i: int) -> dict:
        audio, rate = self.source.audio, self.track.rate_hz

        def roundtrip(span, keep=False):
            return media.roundtrip_info(audio[:, span[0] : span[1]], rate, self.preset, self.rungs[i], keep=keep)

        spans = self.source.encode_spans()
        if len(spans) == 1:
            keep = self.keep_encodes and not self.source.sampled
            rts = [roundtrip(spans[0], keep)]
            if rts[0].encoded_path is not None:
                self.encodes[i] = rts[0].encoded_path
        else:  # independent ffmpeg processes, one per core
            with ThreadPoolExecutor(len(spans)) as ex:
                rts = list(ex.map(roundtrip, spans))
        deg_w, _ = self.source.windows(np.concatenate([rt.audio for rt in rts], axis=1))
        return {"window_mos": [float(s) for s in self.window_scores(deg_w)],
                "encoded_bytes": int(sum(rt.size_bytes for rt in rts))}

    def cache_key(self, i: int) -> dict:
        return {
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

    def probe(self, i: int, target: float) -> Probe:
        if i in self.probes:
            return self.probes[i]
        rung = self.rungs[i]
        t0 = time.perf_counter()
        out = self.cache.get_or_compute(self.cache_key(i), lambda: self._measure(i))
        scores = np.asarray(out["window_mos"], dtype=np.float64)
        pooled = pool_scores(scores[~np.isnan(scores)], self.pool)
        size = out["encoded_bytes"]
        # bits per second of the probe encode (context included, as encoded)
        dur = self.source.audio.shape[1] / self.track.rate_hz
        p = Probe(
            rung_index=i,
            rung_label=rung.label,
            bitrate_kbps=float(rung.nominal_kbps),
            pooled_mos=pooled,
            window_mos=tuple(float(s) for s in scores),
            passed=bool(not np.isnan(pooled) and pooled >= target),
            seconds=time.perf_counter() - t0,
            encoded_bytes=size,
            actual_kbps=size * 8 / 1000 / dur,
        )
        self.probes[i] = p
        if self.on_probe:
            self.on_probe(p)
        return p

    def discard_encodes(self) -> None:
        for path in self.encodes.values():
            path.unlink(missing_ok=True)
        self.encodes.clear()

    def result(self, target: float, chosen: Probe | None, probes, reached: bool, notes) -> SearchResult:
        return SearchResult(
            preset=self.preset.name,
            target_mos=target,
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
        )


def _search(prober: _Prober, target: float, best_effort: bool, parallel: int | None = None) -> SearchResult:
    notes: list[str] = []
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
    if k > 1:
        prober.warm_up()
    # previous probes (another target on the same curve) seed the bracket for free
    outcome = search_ladder(n, lambda i: prober.probe(i, target).pooled_mos, target, parallel=k)
    probes = tuple(prober.probes[i] for i, _ in outcome.probes)
    probes = tuple(replace(p, passed=bool(p.pooled_mos >= target)) for p in probes)
    if outcome.chosen is not None:
        chosen = next(p for p in probes if p.rung_index == outcome.chosen)
        if track.info and not track.info.lossless and track.info.bitrate_kbps and chosen.bitrate_kbps > track.info.bitrate_kbps:
            notes.append(
                f"chosen rung ({chosen.bitrate_kbps:g} kbps) is above the lossy source's ~{track.info.bitrate_kbps:.0f} kbps"
            )
        return prober.result(target, chosen, probes, True, notes)
    top = next(p for p in probes if p.rung_index == n - 1)
    msg = (
        f"target MOS {target:g} not reachable with preset '{prober.preset.name}': the top rung "
        f"{top.rung_label} scores {top.pooled_mos:.3f} ({prober.pool})"
    )
    if not best_effort:
        raise TargetNotReachable(msg + "; lower the target, pick another codec, or pass --best-effort",
                                 result=prober.result(target, None, probes, False, notes))
    notes.append(msg + "; best effort: top rung used")
    return prober.result(target, top, probes, False, notes)


class _ForwardReader:
    """``x[:, lo:hi]`` over a stream of [C, k] blocks, for ranges moving forward.

    The full-track check reads its minute-long pieces (plus 1 s of context either side)
    in order; this keeps only the blocks still needed, so a decoded hour never sits in
    memory at once.
    """

    def __init__(self, blocks, channels: int, n_samples: int):
        self._blocks = iter(blocks)
        self.shape = (channels, n_samples)
        self._buf = np.zeros((channels, 0), np.float32)
        self._start = 0  # track position of _buf[:, 0]

    def __getitem__(self, key):
        rows, cols = key
        if rows != slice(None) or cols.step not in (None, 1):
            raise IndexError("only x[:, lo:hi] is supported")
        lo, hi = cols.start or 0, min(cols.stop, self.shape[1])
        if lo < self._start:
            raise IndexError(f"range {lo}:{hi} starts before the retained data ({self._start})")
        parts, end = [self._buf], self._start + self._buf.shape[1]
        while end < hi:  # read on (through any gap) until the range is covered
            b = next(self._blocks)
            parts.append(b)
            end += b.shape[1]
        buf = np.concatenate(parts, axis=1) if len(parts) > 1 else self._buf
        # drop what no later range needs: ranges only move forward
        self._buf, self._start = buf[:, lo - self._start :], lo
        return self._buf[:, : hi - lo]


@dataclass
class _Session:
    """One input, one scorer, one cache: probers per preset share the decode and windows."""

    track: _Track
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
        self._source: _ProbeSource | None = None
        self._probers: dict[str, _Prober] = {}
        self._check_ref: list | None = None

    def source(self) -> _ProbeSource:
        if self._source is None:
            self._source = _ProbeSource(self.track, _pick_segments(self.track, self.sample_share,
                                                                   max_s=self.sample_max_s), self.hop_s)
        return self._source

    def prober(self, preset: Preset) -> _Prober:
        if preset.name not in self._probers:
            pr = _Prober(self.source(), preset, self.scorer, self.pool, self.cache, self.on_probe, self.max_kbps)
            # a probe already split over PROBE_PROCESSES ffmpeg processes fills the cores;
            # a one-stream probe leaves one idle: probe two rungs at once. jobs=1 (batch
            # workers, one core each) keeps it sequential.
            if self.jobs != 1 and len(pr.source.encode_spans()) == 1:
                pr.parallel = max(1, min(PARALLEL_PROBES, os.cpu_count() or 1))
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
            yield a, b, (_ProbeSource(t, [(a, b - a)], self.hop_s) if (a, b) != (0, n)
                         else _ProbeSource(t, None, self.hop_s))
            if b == n:
                break

    def check_reference(self, chunk_s: float = CHECK_CHUNK_S) -> list:
        """Reference side of the full-track check, prepared once per session.

        Only for scorers whose prepared reference is compact (``compact_prepare``: the
        learned scorer keeps ~4 KB per window, ~30 MB for an hour of stereo); it runs in
        a thread while ffmpeg makes the final encode and is reused if the check steps
        up a rung. Each entry keeps the piece's geometry, not its windows.
        """
        if self._check_ref is None:
            entries = []
            for a, b, piece in self._check_pieces(chunk_s):
                silent, prep = _prepare_windows(self.scorer, piece.ref_w)
                piece.drop_windows()
                entries.append((a, b, piece, silent, prep))
            self._check_ref = entries
        return self._check_ref

    def full_track_scores(self, deg: np.ndarray, reference: list | None = None,
                          chunk_s: float = CHECK_CHUNK_S) -> np.ndarray:
        """Window scores of a whole decoded encode, streamed in ``CHECK_CHUNK_S`` pieces.

        Each piece (with 1 s of context for the resampler) is windowed and scored on its
        own, so memory holds one minute of windows, not the whole track (an hour of
        stereo is 7,200 windows = 1.3 GB of float32 per signal). ``reference``: the
        entries of :meth:`check_reference`, else each piece is prepared here.
        """
        t = self.track
        rate, n = t.rate_hz, t.src.shape[1]
        ctx = int(CONTEXT_S * rate)
        out = []
        pieces = reference if reference is not None else (
            (a, b, piece, None, None) for a, b, piece in self._check_pieces(chunk_s))
        for a, b, piece, silent, prep in pieces:
            if silent is None:
                silent, prep = _prepare_windows(self.scorer, piece.ref_w)
            lo, hi = max(0, a - ctx), min(n, b + ctx)
            deg_w, _ = _ProbeSource.cut_like(piece, deg[:, lo:hi])
            out.append(_score_windows(self.scorer, silent, prep, lambda: piece.ref_w, deg_w))
            piece.drop_windows()
        return np.concatenate(out)


def _open_session(source, preset_for_rate: Preset | None, scorer, pool, sample_rate_hz, hop_s, sample_share,
                  jobs, on_probe, max_kbps, cache, keep_encodes: bool = False) -> _Session:
    pool = validate_pool(pool)
    share = DEFAULT_SAMPLE_SHARE if sample_share is None else float(sample_share)
    if not 0 < share <= 1:
        raise UsageError(f"sample share must be in (0, 1], got {sample_share}")
    rate_for = (lambda r: _output_rate(preset_for_rate, r)) if preset_for_rate else (lambda r: _output_rate(_NO_RATE, r))
    if scorer is None or isinstance(scorer, str):
        # loading the learned scorer (torch import + checkpoint, ~4 s on this 2-core VM)
        # overlaps the input's decode, which ffmpeg does in another process
        if scorer and scorer not in available_scorers():  # fail before any decoding
            raise UsageError(f"unknown scorer {scorer!r}; use one of {available_scorers()}")
        ex = ThreadPoolExecutor(1)
        fut = ex.submit(_resolve_scorer, scorer, n_jobs=jobs)
        ex.shutdown(wait=False)  # an input error below must not wait for the import
        track = _load_track(source, rate_for, sample_rate_hz)
        sc = fut.result()
    else:
        sc = scorer
        track = _load_track(source, rate_for, sample_rate_hz)
    return _Session(track, sc, pool, _resolve_cache(cache), hop_s, share, on_probe, max_kbps, jobs,
                    SAMPLE_MAX_S if sample_share is None else None, keep_encodes)


class _NoRate:
    sample_rate_hz = None


_NO_RATE = _NoRate()


def _auto_presets() -> list[Preset]:
    return [p for p in list_presets() if p.available]


def _search_auto(sessions: dict[int, _Session], target: float, best_effort: bool) -> SearchResult:
    """Every available preset; the one whose chosen probe is smallest wins.

    Presets are searched in parallel threads (the work is ffmpeg subprocesses and numpy
    or torch code that releases the GIL), two at a time on this 2-core class of machine.
    """
    presets = _auto_presets()

    def run(p: Preset):
        try:
            return p, _search(sessions[_rate_key(p)].prober(p), target, False, parallel=1), None
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
        if not best_effort:
            raise TargetNotReachable(f"target MOS {target:g} not reachable with any preset ({summary}); "
                                     "lower the target or pass --best-effort")
        # best effort: the preset whose top rung came closest
        p, _, exc = max(outcomes, key=lambda o: o[2].result.probes[-1].pooled_mos if o[2].result else -1)
        res = _search(sessions[_rate_key(p)].prober(p), target, True)
        return replace(res, notes=res.notes + (f"codec auto: {summary}",))
    p, res = min(ok, key=lambda pr: pr[1].chosen.actual_kbps)
    return replace(res, notes=res.notes + (f"codec auto: {summary}; chose {p.name}",))


def _rate_key(preset: Preset) -> int:
    return int(preset.sample_rate_hz or 0)


def select_bitrate(
    source,
    *,
    target_mos: float,
    codec: str | Preset = "opus",
    scorer: str | Scorer | None = None,
    pool: str = DEFAULT_POOL,
    sample_rate_hz: int | None = None,
    hop_s: float = 1.0,
    best_effort: bool = False,
    jobs: int | None = None,
    on_probe: Callable[[Probe], None] | None = None,
    max_kbps: float | None = None,
    sample_share: float | None = None,
    cache: ProbeCache | bool | str | None = None,
) -> SearchResult:
    """Find the cheapest rung of ``codec`` whose pooled score meets ``target_mos``.

    ``source`` is a path, or a float array ``[channels, samples]`` with ``sample_rate_hz``.
    ``codec="auto"`` tries every available preset and keeps the smallest. Inputs of 30 s
    or more are probed on segments spread over the track (``sample_share`` of it, default
    0.2; 1.0 probes everything). ``max_kbps`` cuts the ladder above that nominal bitrate
    (e.g. a lossy source's own). ``cache``: a ProbeCache, a folder, or False for none.
    ``on_probe`` is called with each Probe as it finishes. Nothing is written except the
    cache. Raises ``TargetNotReachable`` when even the top rung fails, unless
    ``best_effort`` (then the top rung is returned with ``reached=False``).
    """
    target = _check_target(target_mos)
    if codec == AUTO_CODEC:
        sessions = _auto_sessions(source, scorer, pool, sample_rate_hz, hop_s, sample_share, jobs, on_probe, max_kbps, cache)
        return _search_auto(sessions, target, best_effort)
    preset = _resolve_preset(codec)
    s = _open_session(source, preset, scorer, pool, sample_rate_hz, hop_s, sample_share, jobs, on_probe, max_kbps, cache)
    return _search(s.prober(preset), target, best_effort)


def _auto_sessions(source, scorer, pool, sample_rate_hz, hop_s, sample_share, jobs, on_probe, max_kbps, cache,
                   keep_encodes: bool = False):
    # one decode per output rate (48 kHz for Opus, the source's for the rest); the
    # scorer and cache are shared
    sessions: dict[int, _Session] = {}
    shared_scorer = _resolve_scorer(scorer, n_jobs=jobs)
    shared_cache = _resolve_cache(cache)
    for p in _auto_presets():
        k = _rate_key(p)
        if k not in sessions:
            sessions[k] = _open_session(source, p, shared_scorer, pool, sample_rate_hz, hop_s, sample_share, jobs,
                                        on_probe, max_kbps, shared_cache, keep_encodes)
    if not sessions:
        raise UsageError("codec auto: this ffmpeg has none of the presets' encoders (see `ratecontrol doctor`)")
    return sessions


def _default_output(input_path: Path, preset: Preset, suffix: str = "") -> Path:
    out = input_path.with_name(f"{input_path.stem}{suffix}{preset.extension}")
    if out.resolve() == input_path.resolve():
        out = input_path.with_name(f"{input_path.stem}{suffix}.rc{preset.extension}")
    return out


def _check_output(input_path: Path, output: Path, overwrite: bool) -> Path:
    output = media.check_output_path(output, input_path)
    if output.exists() and not overwrite:
        raise OutputError(f"output {output} already exists; pass --overwrite or choose another path")
    return output


#: the tag ratecontrol writes its settings under (ID3v2 TXXX:RATECONTROL, a Vorbis
#: comment RATECONTROL=...). The user's own tags, ``comment`` included, are kept.
TAG_KEY = "RATECONTROL"


def _our_tags(preset: Preset, rung, result: SearchResult, track: "_Track") -> dict[str, str]:
    from ratecontrol import __version__

    ours = (f"ratecontrol {__version__} preset={preset.name} rung={rung.label} "
            f"target_mos={result.target_mos:g} pool={result.pool} scorer={result.scorer}")
    if preset.format in ("ipod", "mp4", "mov"):
        # MP4 has no free-form keys without -movflags use_metadata_tags (which rewrites
        # every tag as an mdta key that many players skip): append to the comment
        theirs = (track.info.tags.get("comment") if track.info else None) or ""
        return {"comment": f"{theirs}\n{ours}" if theirs else ours}
    return {TAG_KEY: ours}


def _finish_encode(session: _Session, preset: Preset, result: SearchResult, input_path: Path, out: Path,
                   metadata: dict | None, verify: bool, t0: float) -> EncodeResult:
    """Write the chosen rung, then decode the written file and score it: the reported
    score is the shipped file's own; a miss steps up a rung.

    The output is made by the one encode path the probes took (media.encode_array from
    the decoded track, ENCODER_INPUT): when a probe encoded the whole input at this
    rung its packets are stream-copied into the output with the input's tags and cover
    art (media.remux), else the track is encoded again the same way.
    """
    track = session.track
    prober = session.prober(preset)
    rungs = prober.rungs
    i = result.chosen.rung_index
    notes = list(result.notes)
    checked = None
    check = verify and not prober.all_silent
    # the check's reference side does not depend on the encode: prepare it in a thread
    # while ffmpeg (another process) encodes, when the scorer's prepared form is small
    sampled = session.source().sampled
    pool = (ThreadPoolExecutor(1) if check and sampled and getattr(session.scorer, "compact_prepare", False)
            else None)
    reference = pool.submit(session.check_reference) if pool else None
    tmp = fsutil.temp_sibling(out)
    try:
        while True:
            rung = rungs[i]
            tags = {**_our_tags(preset, rung, result, track), **(metadata or {})}
            if i in prober.encodes:
                media.remux(prober.encodes[i], tmp, preset, rung, metadata=tags, tags_from=input_path)
            else:
                media.encode_array(track.src, track.rate_hz, preset, rung, tmp, metadata=tags, tags_from=input_path)
            if not check:
                break
            checked = _score_written(session, prober, preset, tmp, reference)
            if checked >= result.target_mos or i == len(rungs) - 1:
                if checked < result.target_mos:
                    notes.append(f"output check: {rung.label} scores {checked:.3f} < target even at the top rung")
                break
            notes.append(f"output check: {rung.label} scored {checked:.3f} < {result.target_mos:g}; stepped up one rung")
            i += 1
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)
    rung = rungs[i]
    if checked is None:
        notes.append("output not checked (--no-verify): the score is the search's estimate")
    final_mos = checked if checked is not None else result.chosen.pooled_mos
    met = not np.isnan(final_mos) and final_mos >= result.target_mos if checked is not None else result.reached
    result = replace(result, notes=tuple(notes))
    return EncodeResult(
        input_path=str(input_path),
        output_path=str(out),
        search=result,
        rung_label=rung.label,
        bitrate_kbps=float(rung.nominal_kbps),
        pooled_mos=final_mos,
        output_bytes=out.stat().st_size,
        input_bytes=input_path.stat().st_size,
        best_effort=not met,
        seconds=time.perf_counter() - t0,
        full_track_mos=checked,
        stepped_up=i - result.chosen.rung_index,
        preset=preset.name,
        verified=checked is not None,
    )


def _score_written(session: _Session, prober: _Prober, preset: Preset, path: Path, reference) -> float:
    """Pooled score of the written file, decoded as a user's player would (ffmpeg,
    priming removed, the preset's residual delay taken out) against the input."""
    track = session.track
    n = track.src.shape[1]
    if not prober.source.sampled:
        # the probe source is the whole track: its prepared reference windows serve
        deg = media.decode_aligned(path, preset, track.rate_hz, track.channels, n)
        deg_w, _ = prober.source.windows(deg)
        scores = prober.window_scores(deg_w)
    else:
        deg = _ForwardReader(media.decode_aligned_blocks(path, preset, track.rate_hz, track.channels, n,
                                                         int(CHECK_CHUNK_S * track.rate_hz)), track.channels, n)
        scores = session.full_track_scores(deg, reference.result() if reference else None)
    del deg
    return pool_scores(scores[~np.isnan(scores)], session.pool)


def _fmt_mos(x: float) -> str:
    return "nan" if x != x else f"{x:.3f}"


def encode(
    source: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    target_mos: float,
    codec: str | Preset = "opus",
    scorer: str | Scorer | None = None,
    pool: str = DEFAULT_POOL,
    hop_s: float = 1.0,
    best_effort: bool = False,
    overwrite: bool = False,
    jobs: int | None = None,
    on_probe: Callable[[Probe], None] | None = None,
    max_kbps: float | None = None,
    metadata: dict[str, str] | None = None,
    sample_share: float | None = None,
    verify: bool = True,
    cache: ProbeCache | bool | str | None = None,
    report: str | os.PathLike | None = None,
) -> EncodeResult:
    """Search the ladder, then encode ``source`` at the chosen rung to ``output``.

    The output keeps the input's tags and (where the container allows) cover art, gets a
    comment tag with the chosen settings and score, and is written to a temp file in the
    output folder and renamed, so a failure never leaves a partial file behind. When the
    search probed only part of the track, the finished encode is scored whole
    (``verify``) and stepped up a rung if it misses. ``report``: a PNG path for the
    per-window plot (the rung above the chosen one is probed for it if it was not).
    Other arguments: ``select_bitrate``.
    """
    t0 = time.perf_counter()
    input_path = Path(source)
    media.probe(input_path)  # one clear error for a missing / non-audio / empty input
    target = _check_target(target_mos)
    if codec == AUTO_CODEC:
        sessions = _auto_sessions(input_path, scorer, pool, None, hop_s, sample_share, jobs, on_probe, max_kbps, cache,
                                  keep_encodes=True)
    else:
        preset = _resolve_preset(codec)
        sessions = {0: _open_session(input_path, preset, scorer, pool, None, hop_s, sample_share, jobs, on_probe,
                                     max_kbps, cache, keep_encodes=True)}
    try:
        if codec == AUTO_CODEC:
            result = _search_auto(sessions, target, best_effort)
            preset = load_preset(result.preset)
            session = sessions[_rate_key(preset)]
        else:
            session, result = sessions[0], None
        out = _check_output(input_path, Path(output) if output else _default_output(input_path, preset), overwrite)
        if result is None:
            result = _search(session.prober(preset), target, best_effort)
        if report:
            result = _with_upper_neighbour(session.prober(preset), result)
            from ratecontrol.report import render_report

            render_report(result, report)
        return _finish_encode(session, preset, result, input_path, out, metadata, verify, t0)
    finally:
        for s_ in sessions.values():
            s_.close()


def _with_upper_neighbour(prober: _Prober, result: SearchResult) -> SearchResult:
    """Add a probe of the rung above the chosen one (for the report) if there is one."""
    if result.chosen is None or not result.chosen.window_mos:
        return result
    i = result.chosen.rung_index + 1
    if i >= len(prober.rungs) or any(p.rung_index == i for p in result.probes):
        return result
    p = prober.probe(i, result.target_mos)
    return replace(result, probes=result.probes + (replace(p, passed=p.pooled_mos >= result.target_mos),))


def encode_ladder(
    source: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    targets: Sequence[float],
    codec: str | Preset = "opus",
    scorer: str | Scorer | None = None,
    pool: str = DEFAULT_POOL,
    hop_s: float = 1.0,
    best_effort: bool = False,
    overwrite: bool = False,
    jobs: int | None = None,
    on_probe: Callable[[Probe], None] | None = None,
    sample_share: float | None = None,
    verify: bool = True,
    cache: ProbeCache | bool | str | None = None,
) -> tuple[EncodeResult, ...]:
    """One encode per target from ONE probe curve (an audio bitrate ladder).

    Outputs go to ``out_dir`` (default: the input's folder) as
    ``<stem>.mos<target><ext>``. Probes made for one target are reused by the others.
    """
    t0 = time.perf_counter()
    input_path = Path(source)
    media.probe(input_path)
    ts = sorted({_check_target(t) for t in targets})
    if not ts:
        raise UsageError("give at least one target MOS")
    preset = _resolve_preset(codec)
    folder = Path(out_dir) if out_dir else input_path.parent
    if not folder.is_dir():
        raise OutputError(f"output folder {folder} does not exist; create it first")
    outs = [_check_output(input_path, folder / f"{input_path.stem}.mos{t:g}{preset.extension}", overwrite) for t in ts]
    session = _open_session(input_path, preset, scorer, pool, None, hop_s, sample_share, jobs, on_probe, None, cache,
                            keep_encodes=True)
    results = []
    try:
        for t, out in zip(ts, outs):
            res = _search(session.prober(preset), t, best_effort)
            results.append(_finish_encode(session, preset, res, input_path, out, None, verify, t0))
    finally:
        session.close()
    return tuple(results)


def _load_pair(reference, degraded, sample_rate_hz: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Both signals at the model's 44.1 kHz, brought there the way a search's check is.

    Files are decoded by ffmpeg at one common rate, the degraded file's own when it
    is 44.1 or 48 kHz (the rate it was encoded at: an Opus file is 48 kHz), and both
    are then resampled by the one in-process resampler, as probes and the output check
    are: so ``score(INPUT, OUTPUT)`` reads the shipped file exactly as ``encode``
    scored it (tests/test_oneencode.py)."""
    out = []
    files = [x for x in (reference, degraded) if not isinstance(x, np.ndarray)]
    common = None
    if files:
        infos = {id(x): media.probe(x) for x in files}
        anchor = degraded if not isinstance(degraded, np.ndarray) else reference
        common = _output_rate(_NO_RATE, infos[id(anchor)].sample_rate_hz)
    for x, what in ((reference, "reference"), (degraded, "degraded")):
        if isinstance(x, np.ndarray):
            if not sample_rate_hz:
                raise UsageError(f"pass sample_rate_hz together with the {what} array")
            out.append(resample(_as_array(x, what), int(sample_rate_hz), MODEL_SAMPLE_RATE_HZ))
        else:
            a = media.decode(x, sample_rate_hz=common, channels=min(infos[id(x)].channels, 2))
            out.append(resample(a, common, MODEL_SAMPLE_RATE_HZ))
    return out[0], out[1]


def score(
    reference,
    degraded,
    *,
    scorer: str | Scorer | None = None,
    pool: str = DEFAULT_POOL,
    sample_rate_hz: int | None = None,
    hop_s: float = 1.0,
    align_signals: bool = True,
    jobs: int | None = None,
) -> ScoreResult:
    """Score ``degraded`` against ``reference`` (paths, or arrays with ``sample_rate_hz``).

    Both are brought to 44.1 kHz, the degraded one is aligned to the reference by
    cross-correlation (up to 0.5 s either way), and scored window by window.
    """
    pool = validate_pool(pool)
    sc = _resolve_scorer(scorer, n_jobs=jobs)
    ref, deg = _load_pair(reference, degraded, sample_rate_hz)
    if ref.shape[0] != deg.shape[0]:
        # mono vs stereo: compare mono mixes rather than refuse
        ref, deg = ref.mean(axis=0, keepdims=True), deg.mean(axis=0, keepdims=True)
    delay = 0
    if align_signals:
        delay = estimate_delay(ref, deg, int(MAX_ALIGN_LAG_S * MODEL_SAMPLE_RATE_HZ))
        deg = align(ref, deg, delay)
    else:
        deg = _fit_length(deg, ref.shape[1])
    ref_w, index = cut_windows(ref, hop_s=hop_s)
    deg_w, _ = cut_windows(deg, starts=index.start_sample[: len(index) // ref.shape[0]])
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


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    if x.shape[1] >= n:
        return x[:, :n]
    return np.pad(x, ((0, 0), (0, n - x.shape[1])))
