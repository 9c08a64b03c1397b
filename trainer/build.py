"""Balanced, ViSQOL-labelled reference/degraded pairs in the public dataset's format.

    python -m trainer build-dataset --sources DIR... --out DIR --pairs N [--seed S] [-j N]
    python -m trainer verify DIR

Output (``OUT``)::

    shard-000000.tar ...   webdataset shards; each pair is KEY.original.wav,
                           KEY.degraded.wav (1 s, mono, 44.1 kHz, 16-bit PCM),
                           KEY.score.txt ((MOS - 1) / 4) and KEY.json (provenance)
    manifest.json          shards with split and pair counts, sources per split,
                           score histogram, settings, seed and arguments
    build.log              the log
    work/                  plan, labelled pool (checkpointed per round), selection

Method, step by step (each step is checkpointed, so rerunning the same command resumes):

1. Sources: every audio file under each ``--sources`` folder; a folder made by
   ``build-corpus`` has ``manifest.jsonl`` which supplies ids, kinds and licences.
2. Split by source file, per kind, by a seeded hash: no source is in two splits.
3. Plan: each source is decoded once (ratecontrol.media) and cut into 6-s segments on a
   3-s grid; the three 1-s clips in the middle of each segment (1.5 s of context on each
   side) are scored by :func:`window_complexity` (spectral flux x bandwidth); near-silent
   clips are dropped and the most complex ``complexity_keep`` of each source kept.
4. Pool: a job is (segment, degradation setting, channel): the whole 6-s segment is
   encoded once (``ratecontrol.media.roundtrip``) or low-passed, its clips are cut
   afterwards (so codec start-up is not in them), quantised to 16 bit and labelled with
   ``ratecontrol.scoring.visqol.visqol_mos`` -- the project's one labelling path.
   A share of jobs (``quiet_share``) first turns the segment down to a quiet-passage
   level (ViSQOL's labels depend on level; see ``QUIET_RMS_DBFS``). Settings are drawn
   per round with weights that favour the score bins still short of their target,
   estimated from the scores each setting has produced so far: starved bins get more of
   what fills them, and no (segment, setting) is ever used twice. Once a bin is full,
   new clips are pre-screened by the learned scorer (``PRESCREEN_MARGIN_MOS``) and only
   those that may land in a needed bin are labelled; labels already in a
   :class:`LabelCache` are reused.
5. Balance: each split keeps the same count in every 0.05-wide score bin of
   ``score_range``; shards are written atomically (tmp + rename) and skipped if present.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import tarfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

from ratecontrol.errors import DatasetError, OutputError, RatecontrolError, UsageError

log = logging.getLogger("trainer.build")

SAMPLE_RATE_HZ = 44_100
CLIP_SAMPLES = SAMPLE_RATE_HZ  # 1 s, the model's window
#: segment encoded per job and where its clips sit: 1.5 s of codec context before the
#: first clip and after the last (Opus/AAC/MP3 priming is < 0.1 s; the rest lets
#: VBR/bit-reservoir state settle as it would mid-track).
SEGMENT_S = 6.0
SEGMENT_HOP_S = 3.0
CLIP_OFFSETS_S = (1.5, 2.5, 3.5)
SCORE_BIN_WIDTH = 0.05
#: score = (MOS-1)/4. Measured on game music (trainer/build.py probe, docs/data.md):
#: the harshest settings reach MOS 1.3 (score 0.075), identity gives 4.73 (0.93);
#: [0.10, 0.95) is 17 bins that every split can fill.
DEFAULT_SCORE_RANGE = (0.10, 0.95)
#: Level. ViSQOL's label depends on absolute level (its spectrogram floor), and a whole
#: track is full of quiet windows: on the 4-minute FLAC-testbench track 279 of 480 windows
#: sit at -40..-25 dBFS, while game music is mastered loud. (An RMSE of 0.144 on those
#: windows, the reason this was added, turned out to be DC drift, fixed by the model's
#: subsonic pre-filter: 0.030; docs/model.md.) So a share of jobs plays the segment
#: quieter, as a quiet passage of a track: a gain
#: that puts the segment's loudest chosen clip at a level drawn uniformly from
#: QUIET_RMS_DBFS (never a boost), applied before the codec; the label is still ViSQOL on
#: the exact pair.
DEFAULT_QUIET_SHARE = 0.3
QUIET_RMS_DBFS = (-42.0, -22.0)
#: Pre-screen. Late in a build most bins are full and most labels land in them: the
#: learned scorer (~2 ms per pair against ViSQOL's ~150 ms) predicts each new clip, and
#: a clip is labelled only if a bin still short of its target lies within this margin of
#: the prediction; skipped clips still count in the per-setting statistics (at their
#: predicted bin) so the chooser's estimates stay unbiased. Measured on 4,787 pool pairs
#: of the seed-1 build (rounds 60-120, model RMSE 0.034 there) with the top train bin
#: full and 0.85-0.90 still needed: margin 0.15 MOS skipped none of the top bin's clips
#: (the bins are 0.2 MOS wide, so 0.15 reached into nearly all of it), 0.10 skipped 53 %,
#: 0.08 68 % while wrongly skipping 0.2 % of the needed bin's clips, 0.06 79 % (0.2 %).
#: The build used 0.15 up to round 121 and 0.08 from then on.
PRESCREEN_MARGIN_MOS = 0.08
#: near-silence gate: ViSQOL on a -60 dBFS hiss rates codec noise, not music
from ratecontrol.contract import AUDIO_EXTENSIONS, mos_to_score  # noqa: E402  (one list, one formula)


# --------------------------------------------------------------------------- complexity
# window_complexity lives in the library: the sampled search picks probe segments with it
from ratecontrol.windows import SILENCE_RMS_DBFS, WindowComplexity, window_complexity  # noqa: E402


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Setting:
    """One degradation: a codec preset with rung options, or a low-pass anchor."""

    name: str  # unique, e.g. "opus-voip-8k"
    family: str  # opus | aac | mp3-cbr | mp3-vbr | vorbis | lowpass
    preset: str | None  # ratecontrol preset name (None for low-pass)
    options: tuple = ()  # ffmpeg output options of the rung, as sorted (key, value) pairs
    nominal_kbps: float = 0.0
    lowpass_hz: float | None = None


def _codec(family, preset, label, kbps, **opts) -> Setting:
    return Setting(name=f"{family}-{label}", family=family, preset=preset,
                   options=tuple(sorted(opts.items())), nominal_kbps=float(kbps))


def default_settings() -> tuple[Setting, ...]:
    """Every codec family the packaged presets offer, plus MUSHRA-style low-pass anchors.

    Rates reach below the presets' ladders (Opus 6-12 kbps, its voip and lowdelay
    applications) because the low score bins need them; MP3 stays >= 32 kbps (the
    MPEG-1 Layer III minimum at 44.1 kHz). Low-pass anchors: 3.5 and 7 kHz (ITU-R
    BS.1534 MUSHRA anchors) and steps between and above.
    """
    s = []
    for k in (6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128):
        s.append(_codec("opus", "opus", f"{k}k", k, **{"b:a": f"{k}k", "application": "audio"}))
    for k in (6, 8, 10, 12, 16, 24, 32):
        s.append(_codec("opus", "opus", f"voip-{k}k", k, **{"b:a": f"{k}k", "application": "voip"}))
    for k in (12, 16, 24, 32, 48, 64):
        s.append(_codec("opus", "opus", f"lowdelay-{k}k", k,
                        **{"b:a": f"{k}k", "application": "lowdelay"}))
    for k in (16, 24, 32, 48, 64, 80, 96, 128, 160, 192, 256):
        s.append(_codec("aac", "aac", f"{k}k", k, **{"b:a": f"{k}k"}))
    for k in (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 256, 320):
        s.append(_codec("mp3-cbr", "mp3", f"{k}k", k, **{"b:a": f"{k}k"}))
    vbr_kbps = {9: 65, 8: 85, 7: 100, 6: 115, 5: 130, 4: 165, 3: 175, 2: 190, 1: 225, 0: 245}
    for q, k in vbr_kbps.items():
        s.append(_codec("mp3-vbr", "mp3-vbr", f"V{q}", k, **{"q:a": q}))
    for q, k in ((-1, 48), (0, 64), (1, 80), (2, 96), (3, 112), (4, 128), (5, 160), (6, 192)):
        s.append(_codec("vorbis", "vorbis", f"q{q}", k, **{"q:a": q}))
    for hz in (3500, 4500, 5500, 7000, 9000, 11000, 14000):
        s.append(Setting(name=f"lowpass-{hz}", family="lowpass", preset=None, lowpass_hz=hz))
    return tuple(s)


def lowpass(audio: np.ndarray, cutoff_hz: float, sample_rate_hz: int = SAMPLE_RATE_HZ
            ) -> np.ndarray:
    """Zero-phase low-pass anchor (8th-order Butterworth run forward and back, so the
    output lines up with the input sample for sample; -3 dB at the cutoff, >= 90 dB down
    an octave above)."""
    from scipy.signal import butter, sosfiltfilt

    sos = butter(8, cutoff_hz, fs=sample_rate_hz, output="sos")
    return sosfiltfilt(sos, audio, axis=-1).astype(np.float32)


def degrade(audio: np.ndarray, setting: Setting, sample_rate_hz: int = SAMPLE_RATE_HZ
            ) -> tuple[np.ndarray, float | None]:
    """(degraded [C, N] aligned with ``audio``, bitrate_kbps or None) for one setting."""
    if setting.family == "lowpass":
        return lowpass(audio, setting.lowpass_hz, sample_rate_hz), None
    from ratecontrol.media import roundtrip_info
    from ratecontrol.presets import Rung

    rung = Rung(index=0, label=setting.name, nominal_kbps=setting.nominal_kbps,
                options=dict(setting.options))
    rt = roundtrip_info(audio, sample_rate_hz, setting.preset, rung)
    return rt.audio, rt.bitrate_kbps


# --------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class Source:
    id: str
    path: str  # absolute
    kind: str = "unknown"
    licence: str = "unknown"
    package: str = ""


def scan_sources(dirs: list[Path]) -> list[Source]:
    """Every source file under ``dirs``; a folder with ``manifest.jsonl`` (build-corpus)
    lists its files, ids and licences itself."""
    out: list[Source] = []
    for d in dirs:
        d = Path(d)
        if not d.exists():
            raise DatasetError(f"source folder not found: {d} (check --sources)")
        if d.is_file():
            out.append(Source(id=d.name, path=str(d.resolve())))
            continue
        manifest = d / "manifest.jsonl"
        if manifest.exists():
            with open(manifest) as f:
                for line in f:
                    if line.strip():
                        r = json.loads(line)
                        out.append(Source(id=r["id"], path=str((d / r["path"]).resolve()),
                                          kind=r.get("kind", "unknown"),
                                          licence=r.get("licence", "unknown"),
                                          package=r.get("package", "")))
            continue
        for p in sorted(d.rglob("*")):
            if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS:
                out.append(Source(id=f"{d.name}/{p.relative_to(d)}", path=str(p.resolve())))
    ids = [s.id for s in out]
    dup = [i for i, c in Counter(ids).items() if c > 1]
    if dup:
        raise DatasetError(f"source ids are not unique across --sources, e.g. {dup[0]!r}; "
                           "give folders distinct names")
    if not out:
        raise DatasetError(f"no audio files found under {', '.join(map(str, dirs))}")
    return sorted(out, key=lambda s: s.id)


def _hash01(*parts) -> float:
    h = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2 ** 64


def split_sources(sources: list[Source], durations_s: list[float], val_fraction: float,
                  seed: int) -> list[str]:
    """'train'/'val' per source: per kind, sources in seeded-hash order go to val until
    it holds ``val_fraction`` of that kind's duration (at least one source each side when
    a kind has two or more)."""
    splits = ["train"] * len(sources)
    if val_fraction <= 0:
        return splits
    by_kind: dict[str, list[int]] = {}
    for i, s in enumerate(sources):
        by_kind.setdefault(s.kind, []).append(i)
    for kind, idx in sorted(by_kind.items()):
        idx = sorted(idx, key=lambda i: _hash01(seed, "split", sources[i].id))
        total = sum(durations_s[i] for i in idx)
        acc = 0.0
        for n, i in enumerate(idx):
            if len(idx) >= 2 and n == len(idx) - 1:
                break  # keep one for train
            if acc >= val_fraction * total and n > 0:
                break
            splits[i] = "val"
            acc += durations_s[i]
    return splits


# --------------------------------------------------------------------------- planning
def _plan_source(path: str) -> dict:
    """Decode one source once; return its duration, channels and clip complexities."""
    from ratecontrol.media import decode, inspect

    try:
        info = inspect(path)
        channels = int(getattr(info, "channels", 0) or 0)
        mono = decode(path, sample_rate_hz=SAMPLE_RATE_HZ, channels=1)[0]
    except RatecontrolError as exc:
        return {"error": str(exc)}
    n = mono.shape[0]
    segs = []
    starts = np.arange(0, n / SAMPLE_RATE_HZ - SEGMENT_S + 1e-9, SEGMENT_HOP_S)
    clip_starts = [int(round((s + o) * SAMPLE_RATE_HZ)) for s in starts for o in CLIP_OFFSETS_S]
    if clip_starts:
        view = np.lib.stride_tricks.sliding_window_view(mono, CLIP_SAMPLES)
        comp = window_complexity(view[clip_starts])
        k = len(CLIP_OFFSETS_S)
        for j, s in enumerate(starts):
            segs.append({"start_s": round(float(s), 3),
                         "complexity": [round(float(c), 4) for c in comp.score[j * k:(j + 1) * k]],
                         "rms_dbfs": [round(float(c), 2) for c in comp.rms_dbfs[j * k:(j + 1) * k]]})
    return {"duration_s": n / SAMPLE_RATE_HZ, "channels": channels or 1, "segments": segs}


# --------------------------------------------------------------------------- jobs
def _quantise(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def pair_key(ref: np.ndarray, deg: np.ndarray) -> str:
    """Content key of one 16-bit clip pair: ViSQOL's label is a function of exactly these
    samples, so a label stored under this key is the label (see :class:`LabelCache`)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(np.ascontiguousarray(ref, "<i2").tobytes())
    h.update(np.ascontiguousarray(deg, "<i2").tobytes())
    return h.hexdigest()


def _visqol_version() -> str:
    from importlib.metadata import version

    return version("visqol-python")


class LabelCache:
    """ViSQOL labels of clip pairs already labelled, keyed by :func:`pair_key`.

    Labelling is ~2/3 of a build's time (docs/data.md), and a build only lasts as long as
    the machine's disk; the labels of a pool are a few MB, small enough to commit, so a
    build on a fresh machine replays its rounds (decode + encode only) and labels only
    what is new. A cached label is used only for a byte-identical 16-bit pair and only
    when it was made by the same visqol-python version; anything else is labelled afresh
    by the one labelling path. File: ``.npz`` with ``keys`` (uint64), ``mos`` (float64),
    ``visqol_version`` and ``format``.
    """

    FORMAT = 1

    def __init__(self, labels: dict | None = None, visqol_version: str | None = None):
        self.labels = dict(labels or {})
        self.visqol_version = visqol_version or _visqol_version()

    @classmethod
    def load(cls, path: Path) -> "LabelCache":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                fmt = int(z["format"])
                ver = str(z["visqol_version"])
                keys, mos = z["keys"], z["mos"]
        except (OSError, KeyError, ValueError) as exc:
            raise DatasetError(f"label cache {path} is unreadable ({exc}); delete it or "
                               "rebuild it with `python -m trainer export-labels`") from exc
        if fmt != cls.FORMAT:
            raise DatasetError(f"label cache {path} has format {fmt}, this trainer reads "
                               f"{cls.FORMAT}; rebuild it with `python -m trainer export-labels`")
        return cls({f"{int(k):016x}": float(m) for k, m in zip(keys, mos)}, ver)

    def usable(self) -> bool:
        """Labels from another visqol-python version are not this build's labels."""
        return self.visqol_version == _visqol_version()

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self.labels)
        tmp = path.with_name(path.name + ".part.npz")
        np.savez_compressed(tmp, keys=np.array([int(k, 16) for k in keys], np.uint64),
                            mos=np.array([self.labels[k] for k in keys], np.float64),
                            visqol_version=np.array(self.visqol_version),
                            format=np.array(self.FORMAT))
        os.replace(tmp, path)

    def __len__(self) -> int:
        return len(self.labels)


_WORKER_CACHE: dict = {}
_WORKER_SCORER: dict = {}


def _worker_scorer(path: str):
    """The pre-screen model, loaded once per worker process, one thread (workers = cores)."""
    if path not in _WORKER_SCORER:
        from ratecontrol.scoring.learned import LearnedScorer

        _WORKER_SCORER[path] = LearnedScorer(path, device="cpu", threads=1)
    return _WORKER_SCORER[path]


def _wanted(pred_mos: float, need: list) -> bool:
    """Is any needed score range [lo, hi) within the margin of a predicted MOS?"""
    m = PRESCREEN_MARGIN_MOS / 4
    sc = mos_to_score(pred_mos)
    return any(lo - m <= sc < hi + m for lo, hi in need)


def _worker_labels(path: str | None) -> dict:
    """The cache's labels, loaded once per worker process (joblib reuses its workers)."""
    if not path:
        return {}
    if path not in _WORKER_CACHE:
        cache = LabelCache.load(Path(path))
        _WORKER_CACHE[path] = cache.labels if cache.usable() else {}
    return _WORKER_CACHE[path]


def run_job(job: dict, settings: dict, label_cache: str | None = None) -> dict:
    """Decode a segment, degrade it once, cut its clips, label each with ViSQOL (or take
    the label of a byte-identical pair from ``label_cache``, a :class:`LabelCache` file).

    ``job["need"]`` (score ranges still short of their target) with ``job["prescreen"]``
    (a learned-scorer checkpoint): clips predicted far from every needed range are not
    labelled; they come back in ``skipped_pred`` (predicted MOS) instead."""
    from ratecontrol.media import decode
    from ratecontrol.scoring.visqol import visqol_mos

    t0 = time.perf_counter()
    setting = settings[job["setting"]]
    ch = min(int(job["channels"]), 2)
    audio = decode(job["path"], sample_rate_hz=SAMPLE_RATE_HZ, channels=ch,
                   start_s=job["start_s"], duration_s=SEGMENT_S)
    if job.get("gain_db", 0.0):
        audio = audio * np.float32(10 ** (job["gain_db"] / 20))
    t1 = time.perf_counter()
    deg, kbps = degrade(audio, setting)
    t2 = time.perf_counter()
    c = min(int(job["channel"]), audio.shape[0] - 1)
    refs, degs, offs = [], [], []
    for off_s in job["clip_offsets_s"]:
        a = int(round(off_s * SAMPLE_RATE_HZ))
        if a + CLIP_SAMPLES > audio.shape[1]:
            continue
        refs.append(_quantise(audio[c, a:a + CLIP_SAMPLES]))
        degs.append(_quantise(deg[c, a:a + CLIP_SAMPLES]))
        offs.append(off_s)
    known = _worker_labels(label_cache)
    keys = [pair_key(r, d) for r, d in zip(refs, degs)]
    mos = [known.get(k) for k in keys]
    skipped_pred = []
    if refs and job.get("need") is not None and job.get("prescreen"):
        todo = [i for i, m in enumerate(mos) if m is None]
        if todo:
            sc = _worker_scorer(job["prescreen"])
            r32 = np.stack([refs[i] for i in todo]).astype(np.float32) / 32768.0
            d32 = np.stack([degs[i] for i in todo]).astype(np.float32) / 32768.0
            pred = sc.score(sc.prepare(r32), d32)
            drop = {i for i, pm in zip(todo, pred) if not _wanted(float(pm), job["need"])}
            skipped_pred = [round(float(pm), 4) for i, pm in zip(todo, pred) if i in drop]
            keep = [i for i in range(len(refs)) if i not in drop]
            refs, degs, offs = [refs[i] for i in keep], [degs[i] for i in keep], [offs[i] for i in keep]
            keys, mos = [keys[i] for i in keep], [mos[i] for i in keep]
    if refs:
        ref = np.stack(refs)
        dg = np.stack(degs)
        todo = [i for i, m in enumerate(mos) if m is None]
        if todo:
            # label exactly what the shard will hold: the 16-bit samples
            new = visqol_mos(ref[todo].astype(np.float32) / 32768.0,
                             dg[todo].astype(np.float32) / 32768.0)
            for i, m in zip(todo, np.atleast_1d(new)):
                mos[i] = float(m)
    else:
        ref = dg = np.zeros((0, CLIP_SAMPLES), np.int16)
    t3 = time.perf_counter()
    return {"ref": ref, "deg": dg, "mos": [float(m) for m in mos], "offsets_s": offs,
            "keys": keys, "cached": len(keys) - sum(k not in known for k in keys),
            "skipped_pred": skipped_pred,
            "channel": c, "bitrate_kbps": kbps,
            "time_s": {"decode": t1 - t0, "degrade": t2 - t1, "label": t3 - t2}}


# --------------------------------------------------------------------------- balance
def bin_edges(score_range: tuple[float, float], width: float = SCORE_BIN_WIDTH) -> np.ndarray:
    lo, hi = score_range
    n = int(round((hi - lo) / width))
    if n < 1 or abs(lo + n * width - hi) > 1e-9:
        raise UsageError(f"score range {score_range} is not a whole number of {width} bins")
    return np.round(lo + width * np.arange(n + 1), 10)  # 0.1 + 17 * 0.05 != 0.95 in floats


def score_bin(score: float, edges: np.ndarray) -> int:
    """Bin index, or -1 below / len(edges)-1 above the range."""
    if score < edges[0]:
        return -1
    if score >= edges[-1]:
        return len(edges) - 1
    return int(min(np.searchsorted(edges, score, side="right") - 1, len(edges) - 2))


@dataclass
class _PoolState:
    n_bins: int
    n_settings: int
    counts: dict = field(default_factory=dict)  # split -> np.array [n_bins]
    stats: np.ndarray | None = None  # [n_settings, n_bins + 2] (below, bins..., above)
    used: set = field(default_factory=set)  # (segment index, setting index)
    seg_use: Counter = field(default_factory=Counter)
    pairs: int = 0

    def __post_init__(self):
        self.stats = np.zeros((self.n_settings, self.n_bins + 2))

    def add(self, split, seg, setting_idx, bins):
        self.used.add((seg, setting_idx))
        self.seg_use[seg] += 1
        c = self.counts.setdefault(split, np.zeros(self.n_bins, int))
        for b in bins:
            self.stats[setting_idx, b + 1] += 1
            if 0 <= b < self.n_bins:
                c[b] += 1
            self.pairs += 1

    def add_skipped(self, setting_idx, bins):
        """Pre-screened clips: not in the pool, but evidence of where a setting lands."""
        for b in bins:
            self.stats[setting_idx, b + 1] += 1


@dataclass(frozen=True)
class BuildResult:
    out_dir: Path
    pairs_by_split: dict
    shards: int
    pool_pairs: int
    histogram: dict


class _Builder:
    ROUND_JOBS = 96

    def __init__(self, sources, out, pairs, seed, val_fraction, n_jobs, score_range,
                 settings, complexity_keep, max_pool_factor, pairs_per_shard, progress,
                 bin_width=SCORE_BIN_WIDTH, label_cache=None, quiet_share=DEFAULT_QUIET_SHARE,
                 prescreen=None):
        self.sources = sources
        self.out = Path(out)
        self.work = self.out / "work"
        self.pool_dir = self.work / "pool"
        self.pairs, self.seed, self.val_fraction = int(pairs), int(seed), float(val_fraction)
        self.n_jobs = n_jobs
        self.bin_width = float(bin_width)
        self.edges = bin_edges(score_range, self.bin_width)
        self.score_range = tuple(score_range)
        self.settings = tuple(settings)
        self.setting_by_name = {s.name: s for s in self.settings}
        self.complexity_keep = complexity_keep
        self.max_pool_factor = max_pool_factor
        self.pairs_per_shard = pairs_per_shard
        self.progress = progress
        self.quiet_share = float(quiet_share)
        self.prescreen = str(prescreen) if prescreen else None
        self.prescreen_digest = _file_sha1(self.prescreen)[:16] if self.prescreen else None
        # not part of config(): a cache changes how fast labels come, never what they are
        self.label_cache = str(label_cache) if label_cache else None
        n_val = int(round(self.pairs * self.val_fraction))
        self.split_pairs = {"train": self.pairs - n_val, "val": n_val}
        nb = len(self.edges) - 1
        self.target = {k: v // nb for k, v in self.split_pairs.items()}
        if self.target["train"] < 1:
            raise UsageError(f"--pairs {pairs} is too small for {nb} score bins; "
                             f"use at least {nb / (1 - self.val_fraction):.0f}")

    # ---- config / checkpoints
    def config(self) -> dict:
        return {"format": 1, "pairs": self.pairs, "seed": self.seed,
                "val_fraction": self.val_fraction, "score_range": list(self.score_range),
                "bin_width": self.bin_width, "complexity_keep": self.complexity_keep,
                "segment_s": SEGMENT_S, "clip_offsets_s": list(CLIP_OFFSETS_S),
                "settings": [dataclasses.asdict(s) for s in self.settings],
                "sources": [s.id for s in self.sources],
                "pairs_per_shard": self.pairs_per_shard,
                **({"quiet_share": self.quiet_share, "quiet_rms_dbfs": list(QUIET_RMS_DBFS)}
                   if self.quiet_share else {})}

    def check_config(self):
        self.work.mkdir(parents=True, exist_ok=True)
        path = self.work / "config.json"
        cfg = json.loads(json.dumps(self.config()))
        if path.exists():
            old = json.loads(path.read_text())
            if old != cfg:
                diff = sorted(k for k in cfg if old.get(k) != cfg[k])
                raise DatasetError(f"{self.out} was started with different arguments "
                                   f"({', '.join(diff)} differ); rerun the original command "
                                   "or choose a new --out")
        else:
            _atomic_write_text(path, json.dumps(cfg, indent=1))

    # ---- plan
    def plan(self) -> None:
        path = self.work / "plan.json"
        if path.exists():
            plan = json.loads(path.read_text())
        else:
            from joblib import Parallel, delayed

            log.info("planning %d sources", len(self.sources))
            results = Parallel(n_jobs=self.n_jobs)(
                delayed(_plan_source)(s.path) for s in _tq(self.sources, self.progress, "plan"))
            plan = []
            for s, r in zip(self.sources, results):
                if "error" in r:
                    log.warning("source skipped: %s", r["error"])
                plan.append({"id": s.id, **r})
            _atomic_write_text(path, json.dumps(plan))
        self.durations = [p.get("duration_s", 0.0) for p in plan]
        self.splits = split_sources(self.sources, self.durations, self.val_fraction, self.seed)
        # segments whose clips are among the most complex of their source
        self.segments = []  # (source index, start_s, clip offsets)
        for i, p in enumerate(plan):
            segs = p.get("segments", [])
            scores = np.array([c for s in segs for c in s["complexity"]])
            if scores.size == 0:
                continue
            live = scores[scores > 0]
            if live.size == 0:
                continue
            thr = np.quantile(live, 1 - self.complexity_keep)
            for s in segs:
                keep = [(o, lv) for o, c, lv in zip(CLIP_OFFSETS_S, s["complexity"],
                                                    s.get("rms_dbfs", [0.0] * len(CLIP_OFFSETS_S)))
                        if c > 0 and c >= thr]
                if keep:
                    self.segments.append((i, s["start_s"], tuple(o for o, _ in keep),
                                          max(lv for _, lv in keep)))
        self.channels = [max(1, int(p.get("channels", 1))) for p in plan]
        self.seg_by_split = {"train": [], "val": []}
        for j, (i, *_) in enumerate(self.segments):
            self.seg_by_split[self.splits[i]].append(j)
        if not self.seg_by_split["train"] or (self.split_pairs["val"] and not self.seg_by_split["val"]):
            raise DatasetError("not enough usable (non-silent) source audio for a train and a "
                               f"val split; add sources (have {len(self.sources)})")
        log.info("plan: %d segments (%d train, %d val) from %d sources, %.2f h",
                 len(self.segments), len(self.seg_by_split["train"]),
                 len(self.seg_by_split["val"]), len(self.sources), sum(self.durations) / 3600)

    # ---- pool
    def _round_paths(self, r):
        return self.pool_dir / f"round-{r:06d}.npy", self.pool_dir / f"round-{r:06d}.json"

    def load_pool(self) -> tuple[_PoolState, list[dict]]:
        state = _PoolState(n_bins=len(self.edges) - 1, n_settings=len(self.settings))
        metas, r = [], 0
        idx = {s.name: k for k, s in enumerate(self.settings)}
        while self._round_paths(r)[1].exists():
            rm = json.loads(self._round_paths(r)[1].read_text())
            for job in rm["jobs"]:
                bins = [score_bin(mos_to_score(m), self.edges) for m in job["mos"]]
                state.add(job["split"], job["segment"], idx[job["setting"]], bins)
                state.add_skipped(idx[job["setting"]], [score_bin(mos_to_score(m), self.edges)
                                                        for m in job.get("skipped_pred", [])])
            metas.append(rm)
            r += 1
        return state, metas

    def _deficit(self, state):
        return {sp: np.maximum(self.target[sp] - state.counts.get(sp, np.zeros(len(self.edges) - 1, int)), 0)
                for sp in ("train", "val")}

    def _filled(self, state) -> int:
        return int(sum(np.minimum(state.counts.get(sp, 0), self.target[sp]).sum()
                       for sp in ("train", "val")))

    def choose_jobs(self, state: _PoolState, r: int) -> list[dict]:
        rng = np.random.default_rng([self.seed, 1, r])
        deficit = self._deficit(state)
        nb = len(self.edges) - 1
        # p(bin | setting): observed counts + a uniform prior worth 2 pairs, so untried
        # settings are explored and a setting is trusted after a handful of jobs
        prob = (state.stats + 2.0 / (nb + 2)) / (state.stats.sum(axis=1, keepdims=True) + 2.0)
        jobs = []
        split_need = {sp: float(d.sum()) for sp, d in deficit.items() if self.target[sp] > 0}
        total_need = sum(split_need.values())
        # a round is sized to what is still missing (about 2 pairs land in a needed bin
        # per job early on, fewer later), so tiny builds do not overshoot by a full round
        n_round = int(np.clip(np.ceil(total_need / 2), 2, self.ROUND_JOBS))
        need = {}
        if self.prescreen:  # only once some bin of the split is full
            for sp, d in deficit.items():
                if self.target[sp] > 0 and (d == 0).any():
                    need[sp] = [[float(self.edges[b]), float(self.edges[b + 1])]
                                for b in range(nb) if d[b] > 0]
        for _ in range(n_round):
            if total_need <= 0:
                break
            sp = "train" if rng.random() < split_need.get("train", 0) / total_need else "val"
            d = deficit[sp].astype(float)
            w = prob[:, 1:nb + 1] @ d
            w = w + 0.02 * w.mean() + 1e-12  # keep every setting in play a little
            segs = self.seg_by_split[sp]
            for _attempt in range(20):
                k = int(rng.choice(len(self.settings), p=w / w.sum()))
                cand = [segs[int(i)] for i in rng.integers(len(segs), size=8)]
                cand = [c for c in cand if (c, k) not in state.used]
                if not cand:
                    continue
                seg = min(cand, key=lambda c: state.seg_use[c])  # spread use over segments
                break
            else:
                continue
            state.used.add((seg, k))
            state.seg_use[seg] += 1
            si, start_s, offs, loudest_dbfs = self.segments[seg]
            job = {"segment": seg, "split": sp, "setting": self.settings[k].name,
                   "source": si, "path": self.sources[si].path,
                   "channels": self.channels[si], "start_s": start_s,
                   "clip_offsets_s": list(offs),
                   "channel": int(rng.integers(min(self.channels[si], 2)))}
            if self.quiet_share and rng.random() < self.quiet_share:
                level = rng.uniform(*QUIET_RMS_DBFS)
                job["gain_db"] = round(float(min(0.0, level - loudest_dbfs)), 2)
            if sp in need:
                job["need"], job["prescreen"] = need[sp], self.prescreen
            jobs.append(job)
        return jobs

    def fill_pool(self) -> tuple[_PoolState, list[dict]]:
        from joblib import Parallel, delayed

        state, metas = self.load_pool()
        total = sum(self.target[sp] * (len(self.edges) - 1) for sp in ("train", "val"))
        bar = _bar(total, self.progress, "pairs (balanced)")
        bar.update(self._filled(state))
        r = len(metas)
        if r:
            log.info("resuming: %d rounds, %d labelled pairs in the pool", r, state.pairs)
        with Parallel(n_jobs=self.n_jobs, return_as="generator") as par:
            while self._filled(state) < total:
                if state.pairs >= self.max_pool_factor * self.pairs:
                    log.warning("pool reached %d pairs (%.1fx --pairs): stopping with starved "
                                "bins", state.pairs, self.max_pool_factor)
                    break
                # choose_jobs marks its picks as used so one round never repeats a
                # (segment, setting); if the process dies mid-round, the state is rebuilt
                # from the finished rounds on disk and this round is chosen again, identically
                jobs = self.choose_jobs(state, r)
                if not jobs:
                    log.warning("no unused (segment, setting) left: stopping with starved bins")
                    break
                t0 = time.perf_counter()
                arrays, rjobs = [], []
                idx = {s.name: k for k, s in enumerate(self.settings)}
                cached = skipped = 0
                for job, res in zip(jobs, par(delayed(run_job)(j, self.setting_by_name,
                                                               self.label_cache)
                                              for j in jobs)):
                    rec = {k: job[k] for k in ("segment", "split", "setting", "source",
                                               "start_s", "clip_offsets_s")}
                    rec["gain_db"] = job.get("gain_db", 0.0)
                    if res["skipped_pred"]:
                        rec["skipped_pred"] = res["skipped_pred"]
                        skipped += len(res["skipped_pred"])
                    cached += res["cached"]
                    rec.update(mos=res["mos"], offsets_s=res["offsets_s"], keys=res["keys"],
                               channel=res["channel"], bitrate_kbps=res["bitrate_kbps"],
                               time_s=res["time_s"], first=sum(len(a) for a in arrays))
                    if len(res["ref"]):
                        arrays.append(np.stack([res["ref"], res["deg"]], axis=1))
                    rjobs.append(rec)
                    bins = [score_bin(mos_to_score(m), self.edges) for m in res["mos"]]
                    # used/seg_use were already marked by choose_jobs
                    state.used.discard((job["segment"], idx[job["setting"]]))
                    state.seg_use[job["segment"]] -= 1
                    state.add(job["split"], job["segment"], idx[job["setting"]], bins)
                    state.add_skipped(idx[job["setting"]], [score_bin(mos_to_score(m), self.edges)
                                                            for m in res["skipped_pred"]])
                    bar.update(self._filled(state) - bar.n)
                    bar.set_postfix(pool=state.pairs, round=r, refresh=False)
                npy, js = self._round_paths(r)
                npy.parent.mkdir(parents=True, exist_ok=True)
                data = np.concatenate(arrays) if arrays else np.zeros((0, 2, CLIP_SAMPLES), np.int16)
                _atomic_save_npy(npy, data)
                _atomic_write_text(js, json.dumps({"round": r, "jobs": rjobs,
                                                   "wall_s": time.perf_counter() - t0,
                                                   "prescreen": self.prescreen_digest}))
                metas.append({"round": r, "jobs": rjobs})
                log.info("round %d: %d jobs, %d pairs (%d labels from the cache, %d clips "
                         "pre-screened out) in %.1f s; pool %d; filled %d/%d", r, len(jobs),
                         len(data), cached, skipped, time.perf_counter() - t0, state.pairs,
                         self._filled(state), total)
                r += 1
        bar.close()
        return state, metas

    # ---- selection + shards
    def select(self, metas) -> dict:
        path = self.work / "selection.json"
        if path.exists():
            return json.loads(path.read_text())
        nb = len(self.edges) - 1
        cands = {sp: [[] for _ in range(nb)] for sp in ("train", "val")}
        for rm in metas:
            for job in rm["jobs"]:
                for j, m in enumerate(job["mos"]):
                    b = score_bin(mos_to_score(m), self.edges)
                    if 0 <= b < nb:
                        cands[job["split"]][b].append((rm["round"], job["first"] + j))
        rng = np.random.default_rng([self.seed, 2])
        sel, starved = {}, {}
        for sp in ("train", "val"):
            keep = min(self.target[sp], min(len(c) for c in cands[sp])) if self.target[sp] else 0
            if keep < self.target[sp]:
                starved[sp] = {f"{self.edges[b]:.2f}": len(c) for b, c in enumerate(cands[sp])
                               if len(c) < self.target[sp]}
                log.warning("%s: starved bins %s; keeping %d per bin instead of %d",
                            sp, starved[sp], keep, self.target[sp])
            chosen = []
            for c in cands[sp]:
                pick = rng.choice(len(c), size=keep, replace=False) if keep else []
                chosen += [c[int(i)] for i in sorted(pick)]
            order = rng.permutation(len(chosen))
            sel[sp] = [list(chosen[int(i)]) for i in order]
        out = {"pairs": sel, "starved": starved, "per_bin": {sp: len(v) // nb for sp, v in sel.items()}}
        _atomic_write_text(path, json.dumps(out))
        return out

    def write_shards(self, metas, selection) -> list[dict]:
        by_round = {rm["round"]: rm for rm in metas}
        arrays = {}

        def pair_meta(r, p):
            rm = by_round[r]
            for job in rm["jobs"]:
                n = len(job["mos"])
                if job["first"] <= p < job["first"] + n:
                    return job, p - job["first"]
            raise DatasetError(f"pool round {r} has no pair {p}; delete {self.work} and rebuild")

        shards, n = [], 0
        for sp in ("train", "val"):
            items = selection["pairs"][sp]
            for start in range(0, len(items), self.pairs_per_shard):
                chunk = items[start:start + self.pairs_per_shard]
                name = f"shard-{n:06d}.tar"
                shards.append({"name": name, "split": sp, "pairs": len(chunk)})
                n += 1
                path = self.out / name
                if path.exists():
                    continue
                tmp = path.with_name(path.name + ".part")
                with tarfile.open(tmp, "w") as tar:
                    for r, p in chunk:
                        if r not in arrays:
                            arrays[r] = np.load(self._round_paths(r)[0], mmap_mode="r")
                        job, j = pair_meta(r, p)
                        ref, deg = np.asarray(arrays[r][p])
                        mos = job["mos"][j]
                        src = self.sources[job["source"]]
                        setting = self.setting_by_name[job["setting"]]
                        key = f"r{r:06d}p{p:04d}"
                        prov = {"key": key, "split": sp, "source_id": src.id, "source_kind": src.kind,
                                "source_package": src.package, "licence": src.licence,
                                "offset_s": round(job["start_s"] + job["offsets_s"][j], 4),
                                "channel": job["channel"], "codec": setting.family,
                                "setting": setting.name, "preset": setting.preset,
                                "options": dict(setting.options), "lowpass_hz": setting.lowpass_hz,
                                "bitrate_kbps": job["bitrate_kbps"], "visqol_mos": mos,
                                "gain_db": job.get("gain_db", 0.0),
                                "score": mos_to_score(mos), "seed": self.seed}
                        _tar_add(tar, f"{key}.original.wav", _wav_bytes(ref))
                        _tar_add(tar, f"{key}.degraded.wav", _wav_bytes(deg))
                        _tar_add(tar, f"{key}.score.txt", f"{mos_to_score(mos):.6f}".encode())
                        _tar_add(tar, f"{key}.json", json.dumps(prov, sort_keys=True).encode())
                os.replace(tmp, path)
                log.info("wrote %s (%s, %d pairs)", name, sp, len(chunk))
        return shards

    def write_manifest(self, shards, selection, state, metas) -> dict:
        nb = len(self.edges) - 1
        hist = {}
        for sp in ("train", "val"):
            h = np.zeros(nb, int)
            for r, p in selection["pairs"][sp]:
                for job in metas[r]["jobs"]:
                    if job["first"] <= p < job["first"] + len(job["mos"]):
                        h[score_bin(mos_to_score(job["mos"][p - job["first"]]), self.edges)] += 1
            hist[sp] = {f"{self.edges[b]:.2f}": int(h[b]) for b in range(nb)}
        pool_hist = {sp: {f"{self.edges[b]:.2f}": int(c[b]) for b in range(nb)}
                     for sp, c in state.counts.items()}
        times = np.array([[j["time_s"]["decode"], j["time_s"]["degrade"], j["time_s"]["label"]]
                          for rm in metas for j in rm["jobs"]]).sum(axis=0) if metas else np.zeros(3)
        srcs = {sp: sorted(self.sources[i].id for i in range(len(self.sources))
                           if self.splits[i] == sp) for sp in ("train", "val")}
        hours = {sp: round(sum(self.durations[i] for i in range(len(self.sources))
                               if self.splits[i] == sp) / 3600, 3) for sp in ("train", "val")}
        man = {"format": "ratecontrol-pairs-v1", "seed": self.seed, "pairs": self.pairs,
               "score": "(visqol_mos - 1) / 4", "score_range": list(self.score_range),
               "bin_width": self.bin_width, "per_bin": selection["per_bin"],
               "starved": selection["starved"], "histogram": hist, "pool_histogram": pool_hist,
               "pool_pairs": state.pairs,
               "job_time_s": dict(zip(("decode", "degrade", "label"), map(float, times))),
               "shards": shards, "source_hours": hours, "sources": srcs,
               "settings": [s.name for s in self.settings]}
        _atomic_write_text(self.out / "manifest.json", json.dumps(man, indent=1))
        return man


def build_dataset(sources: list[Path], out: Path, pairs: int, seed: int = 0,
                  val_fraction: float = 0.1, n_jobs: int = 2,
                  score_range: tuple[float, float] = DEFAULT_SCORE_RANGE,
                  settings: tuple[Setting, ...] | None = None,
                  complexity_keep: float = 0.7, max_pool_factor: float = 3.0,
                  pairs_per_shard: int = 1000, progress: bool = True,
                  bin_width: float = SCORE_BIN_WIDTH, snapshot: Path | None = None,
                  label_cache: Path | None = None,
                  quiet_share: float = DEFAULT_QUIET_SHARE,
                  prescreen: str | Path | None = "default") -> BuildResult:
    """Build (or resume) a balanced pair set in ``out``; see the module docstring.

    ``snapshot=DEST``: generate nothing; write a balanced set from the pool rounds of
    ``out`` finished so far into the new folder DEST (same format, its own manifest;
    per-bin count = the fullest count every bin of a split reaches), e.g. to start
    training while a long build runs. ``out`` is only read.

    ``prescreen``: a learned-scorer checkpoint ("default": the packaged model; None: off)
    that decides, once some bins are full, which new clips are worth labelling
    (``PRESCREEN_MARGIN_MOS``). It is copied into ``out/work/prescreen.pt`` on first use
    and that copy is used for the rest of the build, so a resumed build screens alike.

    ``label_cache``: a :class:`LabelCache` file (``export-labels`` writes one from a
    pool); pairs byte-identical to cached ones take the cached label instead of being
    labelled again, which makes rebuilding a lost pool ~3x faster. The output is the same
    with or without it.
    """
    if snapshot is not None:
        return _snapshot(sources, Path(out), Path(snapshot), pairs, seed, val_fraction,
                         n_jobs, score_range, settings, complexity_keep, max_pool_factor,
                         pairs_per_shard, bin_width, quiet_share)
    if pairs <= 0:
        raise UsageError(f"--pairs must be positive, got {pairs}")
    if not 0 <= val_fraction < 1:
        raise UsageError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not 0 <= quiet_share <= 1:
        raise UsageError(f"quiet_share must be in [0, 1], got {quiet_share}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "build.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        srcs = scan_sources([Path(s) for s in sources])
        if label_cache is not None:
            cache = LabelCache.load(label_cache)
            if not cache.usable():
                log.warning("label cache %s was made by visqol-python %s, this is %s: "
                            "not used", label_cache, cache.visqol_version, _visqol_version())
                label_cache = None
            else:
                log.info("label cache %s: %d labels", label_cache, len(cache))
        b = _Builder(srcs, out, pairs, seed, val_fraction, n_jobs, score_range,
                     settings or default_settings(), complexity_keep, max_pool_factor,
                     pairs_per_shard, progress, bin_width, label_cache, quiet_share,
                     _prescreen_copy(out, prescreen))
        b.check_config()
        log.info("build: %d sources, %d pairs (%s), seed %d, %d jobs", len(srcs), pairs,
                 b.split_pairs, seed, n_jobs)
        b.plan()
        state, metas = b.fill_pool()
        selection = b.select(metas)
        shards = b.write_shards(metas, selection)
        man = b.write_manifest(shards, selection, state, metas)
        log.info("done: %d shards; per bin %s; pool %d", len(shards), man["per_bin"], state.pairs)
        return BuildResult(out_dir=out, pairs_by_split={sp: len(v) for sp, v in
                                                        selection["pairs"].items()},
                           shards=len(shards), pool_pairs=state.pairs,
                           histogram=man["histogram"])
    finally:
        log.removeHandler(handler)
        handler.close()


def _snapshot(sources, out, dest, pairs, seed, val_fraction, n_jobs, score_range, settings,
              complexity_keep, max_pool_factor, pairs_per_shard, bin_width,
              quiet_share=DEFAULT_QUIET_SHARE) -> BuildResult:
    if not (out / "work" / "plan.json").exists():
        raise DatasetError(f"{out} has no labelled pool yet (no work/plan.json); start "
                           "build-dataset there first")
    if dest.exists() and any(dest.iterdir()):
        raise OutputError(f"snapshot folder {dest} is not empty; give a new folder")
    srcs = scan_sources([Path(s) for s in sources])
    b = _Builder(srcs, out, pairs, seed, val_fraction, n_jobs, score_range,
                 settings or default_settings(), complexity_keep, max_pool_factor,
                 pairs_per_shard, False, bin_width, quiet_share=quiet_share)
    b.check_config()  # the arguments must be the build's own
    b.plan()  # reads work/plan.json
    state, metas = b.load_pool()
    b.out, b.work = dest, dest / "work"
    b.work.mkdir(parents=True)
    selection = b.select(metas)
    shards = b.write_shards(metas, selection)
    man = b.write_manifest(shards, selection, state, metas)
    man["snapshot_of"] = {"out": str(out), "rounds": len(metas)}
    _atomic_write_text(dest / "manifest.json", json.dumps(man, indent=1))
    return BuildResult(out_dir=dest, pairs_by_split={sp: len(v) for sp, v in
                                                     selection["pairs"].items()},
                       shards=len(shards), pool_pairs=state.pairs, histogram=man["histogram"])


def _file_sha1(path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _prescreen_copy(out: Path, prescreen) -> Path | None:
    """The build's own copy of its pre-screen model (made once; later runs reuse it)."""
    if not prescreen:
        return None
    dst = Path(out) / "work" / "prescreen.pt"
    if dst.exists():
        return dst
    if str(prescreen) == "default":
        from ratecontrol.scoring.learned import default_model_path

        prescreen = default_model_path()
    if not Path(prescreen).is_file():
        raise UsageError(f"pre-screen model {prescreen} not found; pass a learned-scorer "
                         "checkpoint or --prescreen none")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    tmp.write_bytes(Path(prescreen).read_bytes())
    os.replace(tmp, dst)
    return dst


# --------------------------------------------------------------------------- label cache
def export_labels(outs: list[Path], dest: Path) -> LabelCache:
    """Merge the labels of the pools of build folders ``outs`` into the LabelCache file
    ``dest`` (created, or extended if it exists). Pool rounds written before keys were
    recorded are keyed from their audio."""
    dest = Path(dest)
    cache = LabelCache.load(dest) if dest.exists() else LabelCache()
    if not cache.usable():
        raise DatasetError(f"{dest} holds labels of visqol-python {cache.visqol_version}, "
                           f"this is {_visqol_version()}; write to a new file")
    for out in outs:
        pool = Path(out) / "work" / "pool"
        if not pool.is_dir():
            raise DatasetError(f"{out} has no labelled pool (no work/pool); give a "
                               "build-dataset output folder")
        r = 0
        while (pool / f"round-{r:06d}.json").exists():
            rm = json.loads((pool / f"round-{r:06d}.json").read_text())
            audio = None
            for job in rm["jobs"]:
                keys = job.get("keys")
                if keys is None:
                    if audio is None:
                        audio = np.load(pool / f"round-{r:06d}.npy")
                    keys = [pair_key(audio[job["first"] + j, 0], audio[job["first"] + j, 1])
                            for j in range(len(job["mos"]))]
                cache.labels.update(zip(keys, job["mos"]))
            r += 1
    cache.save(dest)
    return cache


@click.command("export-labels")
@click.argument("outs", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--to", "dest", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="LabelCache .npz to create or extend")
def export_labels_command(outs, dest):
    """Save the ViSQOL labels of build pools OUTS... to a small file that a later
    build-dataset --label-cache reuses (rebuilding a lost pool without relabelling)."""
    cache = export_labels(list(outs), dest)
    click.echo(f"{len(cache)} labels in {dest} (visqol-python {cache.visqol_version})")


# --------------------------------------------------------------------------- verify
@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    problems: tuple
    pairs_by_split: dict
    histogram: dict  # split -> {bin lower edge: count}
    sources_by_split: dict


def verify(out: Path, max_problems: int = 20) -> VerifyReport:
    """Check a shard set: every shard of the manifest present and readable, 4 members per
    key, WAVs 1 s mono 44.1 kHz 16-bit, score = (MOS-1)/4 and in range, counts match the
    manifest, per-split histogram, and no source id in two splits."""
    import soundfile as sf

    out = Path(out)
    mpath = out / "manifest.json"
    if not mpath.exists():
        raise DatasetError(f"{mpath} not found: not a shard set (build it with build-dataset)")
    man = json.loads(mpath.read_text())
    edges = bin_edges(tuple(man["score_range"]), man.get("bin_width", SCORE_BIN_WIDTH))
    problems: list[str] = []
    pairs = Counter()
    hist = {sp: Counter() for sp in ("train", "val")}
    src_split: dict[str, set] = {}

    def problem(msg):
        if len(problems) < max_problems:
            problems.append(msg)

    for sh in man["shards"]:
        path = out / sh["name"]
        if not path.exists():
            problem(f"{sh['name']}: missing")
            continue
        members: dict[str, dict] = {}
        try:
            with tarfile.open(path) as tar:
                for m in tar:
                    key, _, ext = m.name.partition(".")
                    members.setdefault(key, {})[ext] = tar.extractfile(m).read()
        except (tarfile.TarError, OSError) as exc:
            problem(f"{sh['name']}: unreadable tar ({exc})")
            continue
        if len(members) != sh["pairs"]:
            problem(f"{sh['name']}: {len(members)} pairs, manifest says {sh['pairs']}")
        for key, mm in members.items():
            need = {"original.wav", "degraded.wav", "score.txt", "json"}
            if set(mm) != need:
                problem(f"{sh['name']}:{key}: members {sorted(mm)}, expected {sorted(need)}")
                continue
            for ext in ("original.wav", "degraded.wav"):
                info = sf.info(io.BytesIO(mm[ext]))
                if (info.samplerate, info.channels, info.frames, info.subtype) != \
                        (SAMPLE_RATE_HZ, 1, CLIP_SAMPLES, "PCM_16"):
                    problem(f"{sh['name']}:{key}.{ext}: {info.samplerate} Hz, {info.channels} ch, "
                            f"{info.frames} frames, {info.subtype}; expected 44100 Hz mono 44100 PCM_16")
            score = float(mm["score.txt"])
            prov = json.loads(mm["json"])
            if abs(4 * score + 1 - prov["visqol_mos"]) > 1e-4:
                problem(f"{sh['name']}:{key}: score {score} != (MOS-1)/4 of {prov['visqol_mos']}")
            b = score_bin(score, edges)
            if not 0 <= b < len(edges) - 1:
                problem(f"{sh['name']}:{key}: score {score} outside {man['score_range']}")
            if prov["split"] != sh["split"]:
                problem(f"{sh['name']}:{key}: json split {prov['split']} != shard split")
            hist[sh["split"]][f"{edges[max(0, min(b, len(edges) - 2))]:.2f}"] += 1
            pairs[sh["split"]] += 1
            src_split.setdefault(prov["source_id"], set()).add(sh["split"])
    both = sorted(s for s, v in src_split.items() if len(v) > 1)
    if both:
        problem(f"{len(both)} sources are in both splits, e.g. {both[0]}")
    for sp, h in man.get("histogram", {}).items():
        if {k: v for k, v in h.items() if v} != dict(hist[sp]):
            problem(f"{sp}: histogram differs from manifest.json")
    histogram = {sp: {f"{e:.2f}": hist[sp].get(f"{e:.2f}", 0) for e in edges[:-1]}
                 for sp in ("train", "val")}
    by_split = {sp: sorted(s for s, v in src_split.items() if sp in v) for sp in ("train", "val")}
    return VerifyReport(ok=not problems, problems=tuple(problems), pairs_by_split=dict(pairs),
                        histogram=histogram, sources_by_split=by_split)


def build_status(out: Path) -> dict:
    """Where an unfinished build stands, from its checkpoints (read-only): pool pairs,
    labelled pairs per split and score bin against the per-bin target, worker time."""
    out = Path(out)
    cfg_path = out / "work" / "config.json"
    if not cfg_path.exists():
        raise DatasetError(f"{out} has neither manifest.json nor work/config.json: "
                           "not a shard set (build it with build-dataset)")
    cfg = json.loads(cfg_path.read_text())
    edges = bin_edges(tuple(cfg["score_range"]), cfg["bin_width"])
    nb = len(edges) - 1
    n_val = int(round(cfg["pairs"] * cfg["val_fraction"]))
    target = {"train": (cfg["pairs"] - n_val) // nb, "val": n_val // nb}
    counts = {sp: np.zeros(nb, int) for sp in ("train", "val")}
    outside = Counter()
    t = np.zeros(3)
    wall, pool, r = 0.0, 0, 0
    while (out / "work" / "pool" / f"round-{r:06d}.json").exists():
        rm = json.loads((out / "work" / "pool" / f"round-{r:06d}.json").read_text())
        wall += rm.get("wall_s", 0.0)
        for job in rm["jobs"]:
            t += [job["time_s"][k] for k in ("decode", "degrade", "label")]
            for m in job["mos"]:
                b = score_bin(mos_to_score(m), edges)
                pool += 1
                if 0 <= b < nb:
                    counts[job["split"]][b] += 1
                else:
                    outside["below" if b < 0 else "above"] += 1
        r += 1
    filled = int(sum(np.minimum(counts[sp], target[sp]).sum() for sp in counts))
    return {"rounds": r, "pool_pairs": pool, "filled": filled,
            "needed": int(sum(target[sp] * nb for sp in target)), "target_per_bin": target,
            "pool_wall_s": wall, "outside_range": dict(outside),
            "worker_time_s": dict(zip(("decode", "degrade", "label"), t.round(1).tolist())),
            "histogram": {sp: {f"{edges[b]:.2f}": int(counts[sp][b]) for b in range(nb)}
                          for sp in counts},
            "shards_written": len(list(out.glob("shard-*.tar")))}


def format_histogram(histogram: dict, width: int = 40) -> str:
    lines = []
    peak = max([v for h in histogram.values() for v in h.values()] + [1])
    for sp, h in histogram.items():
        lines.append(f"{sp}:")
        for edge, v in h.items():
            lines.append(f"  {edge}-{float(edge) + SCORE_BIN_WIDTH:.2f} {v:7d} "
                         + "#" * int(round(width * v / peak)))
    return "\n".join(lines)


# --------------------------------------------------------------------------- helpers
def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_save_npy(path: Path, data: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        np.save(f, data)
    os.replace(tmp, path)


def _wav_bytes(x: np.ndarray) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(x, np.int16), SAMPLE_RATE_HZ, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # byte-identical shards for the same seed
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _bar(total, enabled, desc):
    from tqdm import tqdm

    import sys

    # in a log file (nohup) redraw every 30 s instead of on every pair
    interval = 0.5 if sys.stderr.isatty() else 30.0
    return tqdm(total=total, desc=desc, disable=not enabled, smoothing=0.05,
                dynamic_ncols=True, mininterval=interval)


def _tq(it, enabled, desc):
    import sys

    from tqdm import tqdm

    return tqdm(it, desc=desc, disable=not enabled,
                mininterval=0.5 if sys.stderr.isatty() else 30.0)


# --------------------------------------------------------------------------- CLI
@click.command("build-dataset")
@click.option("--sources", "sources", multiple=True, required=True,
              type=click.Path(exists=True, path_type=Path),
              help="audio folder (recursive) or build-corpus folder; repeatable")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--pairs", type=int, required=True, help="pairs in all (train + val)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--val-fraction", type=float, default=0.1, show_default=True)
@click.option("-j", "--jobs", "n_jobs", type=int, default=2, show_default=True)
@click.option("--pairs-per-shard", type=int, default=1000, show_default=True)
@click.option("--snapshot", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="generate nothing: write a balanced set from OUT's pool so far into "
                   "this new folder (same arguments as the build)")
@click.option("--quiet-share", type=float, default=DEFAULT_QUIET_SHARE, show_default=True,
              help="share of jobs played at a quiet-passage level (-42..-22 dBFS)")
@click.option("--prescreen", default="default", show_default=True,
              help="learned-scorer checkpoint that skips labelling clips predicted far from "
                   "every unfilled score bin ('default': the packaged model; 'none': off)")
@click.option("--label-cache", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="labels saved by export-labels: byte-identical pairs reuse "
                                 "them instead of being labelled again")
def build_dataset_command(sources, out, pairs, seed, val_fraction, n_jobs, pairs_per_shard,
                          snapshot, quiet_share, prescreen, label_cache):
    """Build (or resume) balanced ViSQOL-labelled pairs as webdataset shards in OUT."""
    r = build_dataset(list(sources), out, pairs, seed=seed, val_fraction=val_fraction,
                      n_jobs=n_jobs, pairs_per_shard=pairs_per_shard, snapshot=snapshot,
                      label_cache=label_cache, quiet_share=quiet_share,
                      prescreen=None if prescreen == "none" else prescreen)
    click.echo(f"{r.shards} shards in {r.out_dir}: {r.pairs_by_split} (pool {r.pool_pairs})")
    click.echo(format_histogram(r.histogram))


@click.command("verify")
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def verify_command(out_dir):
    """Check a shard set: counts, lengths, rates, score histogram, split disjointness.

    On a build that has not finished, print where it stands and exit non-zero."""
    if not (Path(out_dir) / "manifest.json").exists() and (Path(out_dir) / "work").exists():
        st = build_status(out_dir)
        click.echo(f"unfinished build: {st['filled']}/{st['needed']} balanced pairs, pool "
                   f"{st['pool_pairs']} labelled in {st['rounds']} rounds "
                   f"({st['pool_pairs'] / max(st['pool_wall_s'], 1e-9):.2f} pairs/s), "
                   f"target {st['target_per_bin']} per bin, outside range "
                   f"{st['outside_range']}, {st['shards_written']} shards written")
        click.echo("pool histogram:")
        click.echo(format_histogram(st["histogram"]))
        raise DatasetError(f"{out_dir}: build not finished; rerun the same build-dataset "
                           "command to resume")
    rep = verify(out_dir)
    click.echo(f"pairs: {rep.pairs_by_split}; sources: "
               f"{ {sp: len(v) for sp, v in rep.sources_by_split.items()} }")
    click.echo(format_histogram(rep.histogram))
    if not rep.ok:
        for p in rep.problems:
            click.echo(f"problem: {p}", err=True)
        raise DatasetError(f"{out_dir}: {len(rep.problems)} problem(s) found (listed above)")
    click.echo("ok")
