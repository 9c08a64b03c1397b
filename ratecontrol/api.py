"""Library entry points: ``select_bitrate``, ``encode``, ``score``.

The flow for one track:
1. decode the input once at the rate the output will have (``_output_rate``), up to two
   channels (``src``); resample that to the model's 44.1 kHz (``ref44``) and cut windows;
2. ``scorer.prepare`` the reference windows once;
3. each probe round-trips ``src`` through the codec at one rung (media.roundtrip, delay
   compensated), resamples the decode with the *same* resampler, cuts the same windows,
   scores and pools;
4. the ladder search (search.py) decides which rung to probe next;
5. ``encode`` writes the chosen rung from the original file (keeping tags and cover
   art) to a temp file, then renames it into place.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ratecontrol import media
from ratecontrol._resample import resample
from ratecontrol.align import align, estimate_delay
from ratecontrol.errors import InputError, OutputError, TargetNotReachable, UsageError
from ratecontrol.presets import Preset, load_preset
from ratecontrol.results import EncodeResult, Probe, ScoreResult, SearchResult
from ratecontrol.scoring.base import Scorer, get_scorer
from ratecontrol.scoring.pooling import DEFAULT_POOL, pool as pool_scores, validate_pool
from ratecontrol.search import search_ladder
from ratecontrol.windows import MODEL_SAMPLE_RATE_HZ, WindowIndex, cut_windows, is_digital_silence

__all__ = ["select_bitrate", "encode", "score", "MOS_MIN", "MOS_MAX"]

#: ViSQOL MOS-LQO spans 1..5 by definition (audio mode tops out at ~4.73 for identity)
MOS_MIN, MOS_MAX = 1.0, 5.0
#: the largest codec/file delay ``score`` searches for when aligning two files (0.5 s)
MAX_ALIGN_LAG_S = 0.5


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
    ref44: np.ndarray  # float32 [C, N44] at 44.1 kHz: what windows are cut from
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


def _load_track(source, preset: Preset, sample_rate_hz: int | None) -> _Track:
    notes: list[str] = []
    if isinstance(source, np.ndarray):
        if not sample_rate_hz:
            raise UsageError("pass sample_rate_hz together with an audio array")
        a = _as_array(source, "input array")
        if a.shape[0] > 2:
            raise InputError(f"input array has {a.shape[0]} channels; pass mono or stereo")
        rate = _output_rate(preset, int(sample_rate_hz))
        src = resample(a, int(sample_rate_hz), rate)
        return _Track(None, src, rate, resample(src, rate, MODEL_SAMPLE_RATE_HZ), None, ())
    path = Path(source)
    info = media.probe(path)
    channels = min(info.channels, 2)
    if info.channels > 2:
        # the mp3 encoder takes at most 2 channels and the model scores stereo; one
        # policy for every preset: ffmpeg's standard downmix to stereo
        notes.append(f"input has {info.channels} channels: downmixed to stereo")
    rate = _output_rate(preset, info.sample_rate_hz)
    src = media.decode(path, sample_rate_hz=rate, channels=channels)
    if not info.lossless and info.bitrate_kbps:
        notes.append(f"input is lossy ({info.codec}, ~{info.bitrate_kbps:.0f} kbps): scores are relative to the decoded input")
    return _Track(path, src, rate, resample(src, rate, MODEL_SAMPLE_RATE_HZ), info, tuple(notes))


class _Prober:
    """Encodes, decodes and scores rungs of one preset against one track (with memo)."""

    def __init__(self, track: _Track, preset: Preset, scorer: Scorer, pool: str, hop_s: float,
                 on_probe: Callable[[Probe], None] | None = None, max_kbps: float | None = None):
        self.track, self.preset, self.scorer, self.pool = track, preset, scorer, pool
        self.on_probe = on_probe
        rungs = preset.rungs_for(track.channels)
        if max_kbps is not None:
            rungs = tuple(r for r in rungs if r.nominal_kbps <= max_kbps)
            if not rungs:
                raise UsageError(
                    f"no rung of preset '{preset.name}' is at or below {max_kbps:g} kbps "
                    f"(lowest is {preset.rungs_for(track.channels)[0].nominal_kbps:g})"
                )
        self.rungs = rungs
        self.ref_w, self.index = cut_windows(track.ref44, hop_s=hop_s)
        self.ref_silent = is_digital_silence(self.ref_w)
        self.prepared = scorer.prepare(self.ref_w[~self.ref_silent]) if (~self.ref_silent).any() else None
        self.probes: dict[int, Probe] = {}

    @property
    def all_silent(self) -> bool:
        return bool(self.ref_silent.all())

    def window_scores(self, deg44: np.ndarray) -> np.ndarray:
        """MOS per window; nan where both reference and degraded are digital silence."""
        deg_w, _ = cut_windows(deg44, starts=self.index.start_sample[: self._per_channel()])
        scores = np.full(len(self.ref_w), np.nan)
        keep = ~self.ref_silent
        if keep.any():
            scores[keep] = self.scorer.score(self.prepared, deg_w[keep])
        # reference silent but the codec put something there: score it as well
        odd = self.ref_silent & ~is_digital_silence(deg_w)
        if odd.any():
            scores[odd] = self.scorer.score(self.scorer.prepare(self.ref_w[odd]), deg_w[odd])
        return scores

    def _per_channel(self) -> int:
        return len(self.index) // self.track.channels

    def probe(self, i: int, target: float) -> Probe:
        if i in self.probes:
            return self.probes[i]
        rung = self.rungs[i]
        t0 = time.perf_counter()
        rt = media.roundtrip_info(self.track.src, self.track.rate_hz, self.preset, rung)
        deg44 = resample(rt.audio, self.track.rate_hz, MODEL_SAMPLE_RATE_HZ)
        scores = self.window_scores(deg44)
        valid = scores[~np.isnan(scores)]
        pooled = pool_scores(valid, self.pool)
        size = getattr(rt, "size_bytes", None)
        p = Probe(
            rung_index=i,
            rung_label=rung.label,
            bitrate_kbps=float(rung.nominal_kbps),
            pooled_mos=pooled,
            window_mos=tuple(float(s) for s in scores),
            passed=bool(not np.isnan(pooled) and pooled >= target),
            seconds=time.perf_counter() - t0,
            encoded_bytes=size,
            actual_kbps=(size * 8 / 1000 / self.track.duration_s) if size else None,
        )
        self.probes[i] = p
        if self.on_probe:
            self.on_probe(p)
        return p


def _search(prober: _Prober, target: float, best_effort: bool, notes: list[str]) -> SearchResult:
    track = prober.track
    n = len(prober.rungs)
    if prober.all_silent:
        notes.append("input is digital silence: nothing to preserve, lowest rung chosen without probing")
        rung = prober.rungs[0]
        chosen = Probe(0, rung.label, float(rung.nominal_kbps), float("nan"), (), True, 0.0)
        return _result(prober, target, chosen, (chosen,), True, notes)
    outcome = search_ladder(n, lambda i: prober.probe(i, target).pooled_mos, target)
    probes = tuple(prober.probes[i] for i, _ in outcome.probes)
    if outcome.chosen is not None:
        chosen = prober.probes[outcome.chosen]
        if track.info and not track.info.lossless and track.info.bitrate_kbps and chosen.bitrate_kbps > track.info.bitrate_kbps:
            notes.append(
                f"chosen rung ({chosen.bitrate_kbps:g} kbps) is above the lossy source's ~{track.info.bitrate_kbps:.0f} kbps"
            )
        return _result(prober, target, chosen, probes, True, notes)
    top = prober.probes[n - 1]
    msg = (
        f"target MOS {target:g} not reachable with preset '{prober.preset.name}': the top rung "
        f"{top.rung_label} scores {top.pooled_mos:.3f} ({prober.pool})"
    )
    if not best_effort:
        raise TargetNotReachable(msg + "; lower the target, pick another codec, or pass --best-effort",
                                 result=_result(prober, target, None, probes, False, notes))
    notes.append(msg + "; best effort: top rung used")
    return _result(prober, target, top, probes, False, notes)


def _result(prober: _Prober, target, chosen, probes, reached, notes) -> SearchResult:
    return SearchResult(
        preset=prober.preset.name,
        target_mos=target,
        pool=prober.pool,
        scorer=prober.scorer.name,
        channels=prober.track.channels,
        duration_s=prober.track.duration_s,
        chosen=chosen,
        probes=tuple(probes),
        reached=reached,
        n_windows=int((~prober.ref_silent).sum()),
        notes=tuple(prober.track.notes) + tuple(notes),
    )


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
) -> SearchResult:
    """Find the cheapest rung of ``codec`` whose pooled score meets ``target_mos``.

    ``source`` is a path, or a float array ``[channels, samples]`` with ``sample_rate_hz``.
    Nothing is written. ``max_kbps`` cuts the ladder above that nominal bitrate (e.g. a
    lossy source's own bitrate). ``on_probe`` is called with each Probe as it finishes. Raises ``TargetNotReachable`` when even the top rung fails,
    unless ``best_effort`` (then the top rung is returned with ``reached=False``).
    """
    return _select(source, target_mos, codec, scorer, pool, sample_rate_hz, hop_s, best_effort, jobs, on_probe, max_kbps)[0]


def _select(source, target_mos, codec, scorer, pool, sample_rate_hz, hop_s, best_effort, jobs, on_probe=None, max_kbps=None):
    target = _check_target(target_mos)
    pool = validate_pool(pool)
    preset = _resolve_preset(codec)
    sc = _resolve_scorer(scorer, n_jobs=jobs)
    track = _load_track(source, preset, sample_rate_hz)
    return _search(_Prober(track, preset, sc, pool, hop_s, on_probe, max_kbps), target, best_effort, []), track


def _default_output(input_path: Path, preset: Preset) -> Path:
    out = input_path.with_suffix(preset.extension)
    if out.resolve() == input_path.resolve():
        out = input_path.with_name(f"{input_path.stem}.rc{preset.extension}")
    return out


def _check_output(input_path: Path, output: Path, overwrite: bool) -> Path:
    output = Path(output)
    if output.exists() and output.is_dir():
        raise OutputError(f"output {output} is a directory; pass a file name")
    if output.resolve() == input_path.resolve():
        raise OutputError(f"output {output} is the input file; choose another output path (-o)")
    if output.exists() and not overwrite:
        raise OutputError(f"output {output} already exists; pass --overwrite or choose another path")
    folder = output.parent if str(output.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"output folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"output folder {folder} is not writable; choose another output path")
    return output


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
) -> EncodeResult:
    """Search the ladder, then encode ``source`` at the chosen rung to ``output``.

    The output keeps the input's tags and (where the container allows) cover art, gets a
    comment tag with the chosen settings and score, and is written to a temp file in the
    output folder and renamed, so a failure never leaves a partial file behind.
    """
    t0 = time.perf_counter()
    input_path = Path(source)
    media.probe(input_path)  # one clear error for a missing / non-audio / empty input
    preset = _resolve_preset(codec)
    out = _check_output(input_path, Path(output) if output else _default_output(input_path, preset), overwrite)
    result, track = _select(input_path, target_mos, preset, scorer, pool, None, hop_s, best_effort, jobs, on_probe, max_kbps)
    chosen = result.chosen
    rung = preset.rungs_for(result.channels)[chosen.rung_index]
    comment = (
        f"ratecontrol {preset.name} {rung.label} target_mos={result.target_mos:g} "
        f"{result.pool}_mos={chosen.pooled_mos:.3f} scorer={result.scorer}"
    )
    media.encode_file(
        input_path, out, preset, rung, metadata={**(metadata or {}), "comment": comment},
        channels=track.channels, sample_rate_hz=track.rate_hz,
    )
    return EncodeResult(
        input_path=str(input_path),
        output_path=str(out),
        search=result,
        rung_label=rung.label,
        bitrate_kbps=float(rung.nominal_kbps),
        pooled_mos=chosen.pooled_mos,
        output_bytes=out.stat().st_size,
        input_bytes=input_path.stat().st_size,
        best_effort=not result.reached,
        seconds=time.perf_counter() - t0,
    )


def _load_for_scoring(x, sample_rate_hz: int | None, what: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        if not sample_rate_hz:
            raise UsageError(f"pass sample_rate_hz together with the {what} array")
        return resample(_as_array(x, what), int(sample_rate_hz), MODEL_SAMPLE_RATE_HZ)
    info = media.probe(x)
    return media.decode(x, sample_rate_hz=MODEL_SAMPLE_RATE_HZ, channels=min(info.channels, 2))


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
    ref = _load_for_scoring(reference, sample_rate_hz, "reference")
    deg = _load_for_scoring(degraded, sample_rate_hz, "degraded")
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
