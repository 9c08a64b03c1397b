"""One job of the pool: a (segment, setting, channel) decoded, degraded once, cut into
clips and labelled. :func:`run_job` runs in a worker process (joblib); its records are
typed: :class:`Job` in, :class:`JobResult` out."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from ratecontrol.contract import mos_to_score
from trainer.dataset.config import CLIP_SAMPLES, PRESCREEN_MARGIN_MOS, SAMPLE_RATE_HZ, SEGMENT_S
from trainer.dataset.labels import LabelCache, pair_key
from trainer.dataset.settings import Setting, degrade

__all__ = ["Job", "JobResult", "run_job", "quantise", "worker_labels", "round_record"]


@dataclass(frozen=True)
class Job:
    """What one worker does: segment ``start_s`` of source ``path`` (index ``source``,
    segment index ``segment`` of the plan) under setting ``setting`` (its name), clips at
    ``clip_offsets_s`` on channel ``channel``, played ``gain_db`` quieter or louder.
    ``need`` (score ranges [lo, hi) still short of their target) with ``prescreen`` (a
    learned-scorer checkpoint): clips predicted far from every needed range are not
    labelled."""

    segment: int
    split: str
    setting: str
    source: int
    path: str
    channels: int
    start_s: float
    clip_offsets_s: tuple[float, ...]
    channel: int
    gain_db: float = 0.0
    need: tuple[tuple[float, float], ...] | None = None
    prescreen: str | None = None


@dataclass(frozen=True, eq=False)
class JobResult:
    """A job's labelled clips: ``ref``/``deg`` int16 [clips, CLIP_SAMPLES], one ``mos``,
    offset and key per clip; ``cached`` labels came from the label cache,
    ``skipped_pred`` are the predicted MOS of pre-screened clips (not labelled, not in
    ``ref``); ``time_s`` per stage (decode, degrade, label)."""

    ref: np.ndarray
    deg: np.ndarray
    mos: tuple[float, ...]
    offsets_s: tuple[float, ...]
    keys: tuple[str, ...]
    cached: int
    skipped_pred: tuple[float, ...]
    channel: int
    bitrate_kbps: float | None
    time_s: Mapping[str, float]


def quantise(x: np.ndarray) -> np.ndarray:
    """Float samples to the 16-bit PCM a shard holds."""
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


_WORKER_CACHE: dict = {}
_WORKER_SCORER: dict = {}


def _worker_scorer(path: str):
    """The pre-screen model, loaded once per worker process, one thread (workers = cores)."""
    if path not in _WORKER_SCORER:
        from ratecontrol.scoring.learned import LearnedScorer

        _WORKER_SCORER[path] = LearnedScorer(path, device="cpu", threads=1)
    return _WORKER_SCORER[path]


def _wanted(pred_mos: float, need) -> bool:
    """Is any needed score range [lo, hi) within the margin of a predicted MOS?"""
    m = PRESCREEN_MARGIN_MOS / 4
    sc = mos_to_score(pred_mos)
    return any(lo - m <= sc < hi + m for lo, hi in need)


def worker_labels(path: str | None) -> dict:
    """The labels of LabelCache file ``path`` this worker may use, loaded once per worker
    process (joblib reuses its workers); none when another visqol-python made them."""
    if not path:
        return {}
    if path not in _WORKER_CACHE:
        cache = LabelCache.load(Path(path))
        _WORKER_CACHE[path] = cache.labels if cache.usable() else {}
    return _WORKER_CACHE[path]


def run_job(job: Job, settings: Mapping[str, Setting], label_cache: str | None = None) -> JobResult:
    """Decode a segment, degrade it once, cut its clips, label each with ViSQOL (or take
    the label of a byte-identical pair from ``label_cache``, a :class:`LabelCache` file).

    With ``job.need`` and ``job.prescreen``, clips predicted far from every needed range
    are not labelled; they come back in ``skipped_pred`` (predicted MOS) instead."""
    from ratecontrol.media import decode
    from ratecontrol.scoring.visqol import visqol_mos

    t0 = time.perf_counter()
    setting = settings[job.setting]
    ch = min(int(job.channels), 2)
    audio = decode(job.path, sample_rate_hz=SAMPLE_RATE_HZ, channels=ch,
                   start_s=job.start_s, duration_s=SEGMENT_S)
    if job.gain_db:
        audio = audio * np.float32(10 ** (job.gain_db / 20))
    t1 = time.perf_counter()
    deg, kbps = degrade(audio, setting)
    t2 = time.perf_counter()
    c = min(int(job.channel), audio.shape[0] - 1)
    refs, degs, offs = [], [], []
    for off_s in job.clip_offsets_s:
        a = int(round(off_s * SAMPLE_RATE_HZ))
        if a + CLIP_SAMPLES > audio.shape[1]:
            continue
        refs.append(quantise(audio[c, a:a + CLIP_SAMPLES]))
        degs.append(quantise(deg[c, a:a + CLIP_SAMPLES]))
        offs.append(off_s)
    known = worker_labels(label_cache)
    keys = [pair_key(r, d) for r, d in zip(refs, degs)]
    mos = [known.get(k) for k in keys]
    skipped_pred = []
    if refs and job.need is not None and job.prescreen:
        todo = [i for i, m in enumerate(mos) if m is None]
        if todo:
            sc = _worker_scorer(job.prescreen)
            r32 = np.stack([refs[i] for i in todo]).astype(np.float32) / 32768.0
            d32 = np.stack([degs[i] for i in todo]).astype(np.float32) / 32768.0
            pred = sc.score(sc.prepare(r32), d32)
            drop = {i for i, pm in zip(todo, pred) if not _wanted(float(pm), job.need)}
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
    return JobResult(ref=ref, deg=dg, mos=tuple(float(m) for m in mos), offsets_s=tuple(offs),
                     keys=tuple(keys), cached=len(keys) - sum(k not in known for k in keys),
                     skipped_pred=tuple(skipped_pred), channel=c, bitrate_kbps=kbps,
                     time_s={"decode": t1 - t0, "degrade": t2 - t1, "label": t3 - t2})


def round_record(job: Job, res: JobResult, first: int) -> dict:
    """A job's entry in its round's checkpoint (``round-N.json``): what was done and what
    came of it; its pairs are rows ``first...`` of the round's audio."""
    rec = {"segment": job.segment, "split": job.split, "setting": job.setting,
           "source": job.source, "start_s": job.start_s, "clip_offsets_s": list(job.clip_offsets_s),
           "gain_db": job.gain_db}
    if res.skipped_pred:
        rec["skipped_pred"] = list(res.skipped_pred)
    rec.update(mos=list(res.mos), offsets_s=list(res.offsets_s), keys=list(res.keys),
               channel=res.channel, bitrate_kbps=res.bitrate_kbps, time_s=dict(res.time_s),
               first=first)
    return rec
