"""Filling the pool, round by round: choose jobs where bins are short, run them in worker
processes, checkpoint each round (a restart rebuilds the state from the finished rounds
and chooses the interrupted round again, identically)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from trainer.dataset._progress import progress
from trainer.dataset.config import CLIP_SAMPLES, QUIET_RMS_DBFS, BuildConfig
from trainer.dataset.jobs import Job, round_record, run_job
from trainer.dataset.pool import BinTargets, PoolState, read_rounds, save_round
from trainer.dataset.sources import Plan, Source

__all__ = ["ROUND_JOBS", "load_pool", "choose_jobs", "fill_pool"]

log = logging.getLogger(__name__)

#: the most jobs per round (a round is one checkpoint)
ROUND_JOBS = 96


def load_pool(pool_dir: Path, cfg: BuildConfig, bins: BinTargets) -> tuple[PoolState, list[dict]]:
    """The pool state and round records rebuilt from the rounds finished on disk."""
    setting_index = {s.name: k for k, s in enumerate(cfg.settings)}
    state = PoolState(n_bins=bins.n_bins, n_settings=len(cfg.settings))
    metas = []
    for _, rm in read_rounds(pool_dir):
        for job in rm["jobs"]:
            k = setting_index[job["setting"]]
            state.add(job["split"], job["segment"], k, bins.bins(job["mos"]))
            state.add_skipped(k, bins.bins(job.get("skipped_pred", [])))
        metas.append(rm)
    return state, metas


def choose_jobs(state: PoolState, r: int, cfg: BuildConfig, plan: Plan, sources: list[Source],
                bins: BinTargets, prescreen: str | None) -> list[Job]:
    """Round ``r``'s jobs, drawn with weights that favour the bins still short of their
    target; marks each pick as used in ``state``."""
    settings = cfg.settings
    rng = np.random.default_rng([cfg.seed, 1, r])
    deficit = bins.deficit(state)
    nb = bins.n_bins
    # p(bin | setting): observed counts + a uniform prior worth 2 pairs, so untried
    # settings are explored and a setting is trusted after a handful of jobs
    prob = (state.stats + 2.0 / (nb + 2)) / (state.stats.sum(axis=1, keepdims=True) + 2.0)
    jobs = []
    split_need = {sp: float(d.sum()) for sp, d in deficit.items() if bins.target[sp] > 0}
    total_need = sum(split_need.values())
    # a round is sized to what is still missing (about 2 pairs land in a needed bin
    # per job early on, fewer later), so tiny builds do not overshoot by a full round
    n_round = int(np.clip(np.ceil(total_need / 2), 2, ROUND_JOBS))
    need = {}
    if prescreen:  # only once some bin of the split is full
        for sp, d in deficit.items():
            if bins.target[sp] > 0 and (d == 0).any():
                need[sp] = tuple((float(bins.edges[b]), float(bins.edges[b + 1]))
                                 for b in range(nb) if d[b] > 0)
    for _ in range(n_round):
        if total_need <= 0:
            break
        sp = "train" if rng.random() < split_need.get("train", 0) / total_need else "val"
        d = deficit[sp].astype(float)
        w = prob[:, 1:nb + 1] @ d
        w = w + 0.02 * w.mean() + 1e-12  # keep every setting in play a little
        segs = plan.seg_by_split[sp]
        for _attempt in range(20):
            k = int(rng.choice(len(settings), p=w / w.sum()))
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
        si, start_s, offs, loudest_dbfs = plan.segments[seg]
        channel = int(rng.integers(min(plan.channels[si], 2)))
        gain_db = 0.0
        if cfg.quiet_share and rng.random() < cfg.quiet_share:
            level = rng.uniform(*QUIET_RMS_DBFS)
            gain_db = round(float(min(0.0, level - loudest_dbfs)), 2)
        jobs.append(Job(segment=seg, split=sp, setting=settings[k].name, source=si,
                        path=sources[si].path, channels=plan.channels[si],
                        start_s=start_s, clip_offsets_s=tuple(offs), channel=channel,
                        gain_db=gain_db, need=need.get(sp),
                        prescreen=prescreen if sp in need else None))
    return jobs


def fill_pool(pool_dir: Path, cfg: BuildConfig, plan: Plan, sources: list[Source], bins: BinTargets,
              prescreen: str | None, prescreen_digest: str | None,
              label_cache: str | None) -> tuple[PoolState, list[dict]]:
    """Run rounds until every bin of both splits has its target (or the pool reaches
    ``cfg.max_pool_factor`` x ``cfg.pairs``, or no unused job is left)."""
    from joblib import Parallel, delayed

    setting_by_name = {s.name: s for s in cfg.settings}
    setting_index = {s.name: k for k, s in enumerate(cfg.settings)}
    state, metas = load_pool(pool_dir, cfg, bins)
    total = bins.total
    bar = progress(total, cfg.progress, "pairs (balanced)")
    bar.update(bins.filled(state))
    r = len(metas)
    if r:
        log.info("resuming: %d rounds, %d labelled pairs in the pool", r, state.pairs)
    with Parallel(n_jobs=cfg.n_jobs, return_as="generator") as par:
        while bins.filled(state) < total:
            if state.pairs >= cfg.max_pool_factor * cfg.pairs:
                log.warning("pool reached %d pairs (%.1fx --pairs): stopping with starved "
                            "bins", state.pairs, cfg.max_pool_factor)
                break
            # choose_jobs marks its picks as used so one round never repeats a
            # (segment, setting); if the process dies mid-round, the state is rebuilt
            # from the finished rounds on disk and this round is chosen again, identically
            jobs = choose_jobs(state, r, cfg, plan, sources, bins, prescreen)
            if not jobs:
                log.warning("no unused (segment, setting) left: stopping with starved bins")
                break
            t0 = time.perf_counter()
            arrays, rjobs = [], []
            cached = skipped = 0
            for job, res in zip(jobs, par(delayed(run_job)(j, setting_by_name, label_cache)
                                          for j in jobs)):
                skipped += len(res.skipped_pred)
                cached += res.cached
                rjobs.append(round_record(job, res, first=sum(len(a) for a in arrays)))
                if len(res.ref):
                    arrays.append(np.stack([res.ref, res.deg], axis=1))
                k = setting_index[job.setting]
                # used/seg_use were already marked by choose_jobs
                state.used.discard((job.segment, k))
                state.seg_use[job.segment] -= 1
                state.add(job.split, job.segment, k, bins.bins(res.mos))
                state.add_skipped(k, bins.bins(res.skipped_pred))
                bar.update(bins.filled(state) - bar.n)
                bar.set_postfix(pool=state.pairs, round=r, refresh=False)
            data = np.concatenate(arrays) if arrays else np.zeros((0, 2, CLIP_SAMPLES), np.int16)
            save_round(pool_dir, r, data, {"round": r, "jobs": rjobs,
                                           "wall_s": time.perf_counter() - t0,
                                           "prescreen": prescreen_digest})
            metas.append({"round": r, "jobs": rjobs})
            log.info("round %d: %d jobs, %d pairs (%d labels from the cache, %d clips "
                     "pre-screened out) in %.1f s; pool %d; filled %d/%d", r, len(jobs),
                     len(data), cached, skipped, time.perf_counter() - t0, state.pairs,
                     bins.filled(state), total)
            r += 1
    bar.close()
    return state, metas
