"""Sources and the plan: which files, which split, which segments are worth encoding."""
from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ratecontrol.contract import AUDIO_EXTENSIONS
from ratecontrol.errors import DatasetError, RatecontrolError
# window_complexity lives in the library: the sampled search picks probe segments with it
from ratecontrol.windows import window_complexity
from ratecontrol import fsutil
from trainer.dataset._progress import progress
from trainer.dataset.config import (CLIP_OFFSETS_S, CLIP_SAMPLES, SAMPLE_RATE_HZ, SEGMENT_HOP_S, SEGMENT_S,
                                    BuildConfig)

__all__ = ["Source", "scan_sources", "split_sources", "plan_source", "seeded_fraction", "Plan", "plan_build"]

log = logging.getLogger(__name__)


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


def seeded_fraction(*parts) -> float:
    """A number in [0, 1) fixed by ``parts`` (SHA-256 of their ``:``-joined text)."""
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
        idx = sorted(idx, key=lambda i: seeded_fraction(seed, "split", sources[i].id))
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


def plan_source(path: str) -> dict:
    """Decode one source once; return its duration, channels and clip complexities
    (``{"error": message}`` for a source that cannot be used)."""
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


@dataclass
class Plan:
    """The build's plan: per source its duration, split and channel count; the segments
    worth encoding (source index, start_s, clip offsets, loudest clip dBFS) and which of
    them each split may use (indices into ``segments``)."""

    durations: list[float]
    splits: list[str]
    channels: list[int]
    segments: list[tuple] = field(default_factory=list)
    seg_by_split: dict = field(default_factory=lambda: {"train": [], "val": []})


def plan_build(cfg: BuildConfig, sources: list[Source]) -> Plan:
    """Plan every source (``OUT/work/plan.json``, made once), split the sources and keep
    the segments whose clips are among the most complex of their source."""
    path = cfg.out / "work" / "plan.json"
    if path.exists():
        plan = json.loads(path.read_text())
    else:
        from joblib import Parallel, delayed

        log.info("planning %d sources", len(sources))
        results = Parallel(n_jobs=cfg.n_jobs)(
            delayed(plan_source)(s.path)
            for s in progress(None, cfg.progress, "plan", sources))
        plan = []
        for s, r in zip(sources, results):
            if "error" in r:
                log.warning("source skipped: %s", r["error"])
            plan.append({"id": s.id, **r})
        fsutil.atomic_write(path, json.dumps(plan))
    durations = [p.get("duration_s", 0.0) for p in plan]
    out = Plan(durations=durations, splits=split_sources(sources, durations, cfg.val_fraction, cfg.seed),
               channels=[max(1, int(p.get("channels", 1))) for p in plan])
    # segments whose clips are among the most complex of their source
    for i, p in enumerate(plan):
        segs = p.get("segments", [])
        scores = np.array([c for s in segs for c in s["complexity"]])
        if scores.size == 0:
            continue
        live = scores[scores > 0]
        if live.size == 0:
            continue
        thr = np.quantile(live, 1 - cfg.complexity_keep)
        for s in segs:
            keep = [(o, lv) for o, c, lv in zip(CLIP_OFFSETS_S, s["complexity"],
                                                s.get("rms_dbfs", [0.0] * len(CLIP_OFFSETS_S)))
                    if c > 0 and c >= thr]
            if keep:
                out.segments.append((i, s["start_s"], tuple(o for o, _ in keep),
                                     max(lv for _, lv in keep)))
    for j, (i, *_) in enumerate(out.segments):
        out.seg_by_split[out.splits[i]].append(j)
    if not out.seg_by_split["train"] or (cfg.split_pairs["val"] and not out.seg_by_split["val"]):
        raise DatasetError("not enough usable (non-silent) source audio for a train and a "
                           f"val split; add sources (have {len(sources)})")
    log.info("plan: %d segments (%d train, %d val) from %d sources, %.2f h",
             len(out.segments), len(out.seg_by_split["train"]),
             len(out.seg_by_split["val"]), len(sources), sum(durations) / 3600)
    return out
