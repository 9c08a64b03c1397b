"""The build, stage by stage: config check, plan, pool rounds, selection, shards,
manifest (each checkpointed under ``OUT/work``, so rerunning the same build resumes)."""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ratecontrol import fsutil
from ratecontrol.contract import mos_to_score
from ratecontrol.errors import DatasetError, OutputError, UsageError
from trainer.dataset.config import CLIP_OFFSETS_S, CLIP_SAMPLES, QUIET_RMS_DBFS, SEGMENT_S, BuildConfig
from trainer.dataset.jobs import Job, round_record, run_job
from trainer.dataset.labels import LabelCache, installed_visqol_version
from trainer.dataset.pool import PoolState, bin_edges, read_rounds, round_paths, save_round, score_bin
from trainer.dataset.shards import write_shard
from trainer.dataset.sources import Source, plan_source, scan_sources, split_sources

__all__ = ["BuildResult", "Builder", "build", "build_dataset", "prescreen_copy"]

log = logging.getLogger("trainer.dataset")


@dataclass(frozen=True)
class BuildResult:
    out_dir: Path
    pairs_by_split: dict
    shards: int
    pool_pairs: int
    histogram: dict


def _progress(total, enabled, desc, iterable=None):
    """A tqdm bar; in a log file (nohup) it redraws every 30 s instead of on every pair."""
    import sys

    from tqdm import tqdm

    interval = 0.5 if sys.stderr.isatty() else 30.0
    if iterable is not None:
        return tqdm(iterable, desc=desc, disable=not enabled, mininterval=interval)
    return tqdm(total=total, desc=desc, disable=not enabled, smoothing=0.05,
                dynamic_ncols=True, mininterval=interval)


class Builder:
    """One build over scanned ``sources``: ``cfg.label_cache`` and ``cfg.prescreen`` as
    the build uses them (a usable cache or None; the build's own prescreen copy or None).
    ``out`` is where selection, shards and manifest go (``cfg.out``, or a snapshot's
    folder); the plan and the pool are always read from ``cfg.out``."""

    ROUND_JOBS = 96

    def __init__(self, cfg: BuildConfig, sources: list[Source], out: Path | None = None):
        self.cfg = cfg
        self.sources = sources
        self.out = Path(out) if out is not None else cfg.out
        self.work = self.out / "work"
        self.pool_dir = cfg.out / "work" / "pool"
        self.edges = bin_edges(cfg.score_range, cfg.bin_width)
        self.setting_by_name = {s.name: s for s in cfg.settings}
        self.setting_index = {s.name: k for k, s in enumerate(cfg.settings)}
        self.prescreen = str(cfg.prescreen) if cfg.prescreen else None
        self.prescreen_digest = fsutil.file_digest(self.prescreen, "sha1")[:16] if self.prescreen else None
        # not part of config(): a cache changes how fast labels come, never what they are
        self.label_cache = str(cfg.label_cache) if cfg.label_cache else None
        self.split_pairs = cfg.split_pairs
        nb = len(self.edges) - 1
        self.target = {k: v // nb for k, v in self.split_pairs.items()}
        if self.target["train"] < 1:
            raise UsageError(f"--pairs {cfg.pairs} is too small for {nb} score bins; "
                             f"use at least {nb / (1 - cfg.val_fraction):.0f}")

    # ---- config / checkpoints
    def config(self) -> dict:
        c = self.cfg
        return {"format": 1, "pairs": c.pairs, "seed": c.seed,
                "val_fraction": c.val_fraction, "score_range": list(c.score_range),
                "bin_width": c.bin_width, "complexity_keep": c.complexity_keep,
                "segment_s": SEGMENT_S, "clip_offsets_s": list(CLIP_OFFSETS_S),
                "settings": [dataclasses.asdict(s) for s in c.settings],
                "sources": [s.id for s in self.sources],
                "pairs_per_shard": c.pairs_per_shard,
                **({"quiet_share": c.quiet_share, "quiet_rms_dbfs": list(QUIET_RMS_DBFS)}
                   if c.quiet_share else {})}

    def check_config(self):
        """Refuse to resume ``cfg.out`` with other arguments; record them on a first run."""
        work = self.cfg.out / "work"
        work.mkdir(parents=True, exist_ok=True)
        path = work / "config.json"
        cfg = json.loads(json.dumps(self.config()))
        if path.exists():
            old = json.loads(path.read_text())
            if old != cfg:
                diff = sorted(k for k in cfg if old.get(k) != cfg[k])
                raise DatasetError(f"{self.cfg.out} was started with different arguments "
                                   f"({', '.join(diff)} differ); rerun the original command "
                                   "or choose a new --out")
        else:
            fsutil.atomic_write(path, json.dumps(cfg, indent=1))

    # ---- plan
    def plan(self) -> None:
        path = self.cfg.out / "work" / "plan.json"
        if path.exists():
            plan = json.loads(path.read_text())
        else:
            from joblib import Parallel, delayed

            log.info("planning %d sources", len(self.sources))
            results = Parallel(n_jobs=self.cfg.n_jobs)(
                delayed(plan_source)(s.path)
                for s in _progress(None, self.cfg.progress, "plan", self.sources))
            plan = []
            for s, r in zip(self.sources, results):
                if "error" in r:
                    log.warning("source skipped: %s", r["error"])
                plan.append({"id": s.id, **r})
            fsutil.atomic_write(path, json.dumps(plan))
        self.durations = [p.get("duration_s", 0.0) for p in plan]
        self.splits = split_sources(self.sources, self.durations, self.cfg.val_fraction, self.cfg.seed)
        # segments whose clips are among the most complex of their source
        self.segments = []  # (source index, start_s, clip offsets, loudest clip dBFS)
        for i, p in enumerate(plan):
            segs = p.get("segments", [])
            scores = np.array([c for s in segs for c in s["complexity"]])
            if scores.size == 0:
                continue
            live = scores[scores > 0]
            if live.size == 0:
                continue
            thr = np.quantile(live, 1 - self.cfg.complexity_keep)
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
    def _bins(self, mos_values) -> list[int]:
        return [score_bin(mos_to_score(m), self.edges) for m in mos_values]

    def load_pool(self) -> tuple[PoolState, list[dict]]:
        state = PoolState(n_bins=len(self.edges) - 1, n_settings=len(self.cfg.settings))
        metas = []
        for _, rm in read_rounds(self.pool_dir):
            for job in rm["jobs"]:
                k = self.setting_index[job["setting"]]
                state.add(job["split"], job["segment"], k, self._bins(job["mos"]))
                state.add_skipped(k, self._bins(job.get("skipped_pred", [])))
            metas.append(rm)
        return state, metas

    def _deficit(self, state):
        return {sp: np.maximum(self.target[sp] - state.counts.get(sp, np.zeros(len(self.edges) - 1, int)), 0)
                for sp in ("train", "val")}

    def _filled(self, state) -> int:
        return int(sum(np.minimum(state.counts.get(sp, 0), self.target[sp]).sum()
                       for sp in ("train", "val")))

    def choose_jobs(self, state: PoolState, r: int) -> list[Job]:
        """Round ``r``'s jobs, drawn with weights that favour the bins still short of their
        target; marks each pick as used in ``state``."""
        settings = self.cfg.settings
        rng = np.random.default_rng([self.cfg.seed, 1, r])
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
                    need[sp] = tuple((float(self.edges[b]), float(self.edges[b + 1]))
                                     for b in range(nb) if d[b] > 0)
        for _ in range(n_round):
            if total_need <= 0:
                break
            sp = "train" if rng.random() < split_need.get("train", 0) / total_need else "val"
            d = deficit[sp].astype(float)
            w = prob[:, 1:nb + 1] @ d
            w = w + 0.02 * w.mean() + 1e-12  # keep every setting in play a little
            segs = self.seg_by_split[sp]
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
            si, start_s, offs, loudest_dbfs = self.segments[seg]
            channel = int(rng.integers(min(self.channels[si], 2)))
            gain_db = 0.0
            if self.cfg.quiet_share and rng.random() < self.cfg.quiet_share:
                level = rng.uniform(*QUIET_RMS_DBFS)
                gain_db = round(float(min(0.0, level - loudest_dbfs)), 2)
            jobs.append(Job(segment=seg, split=sp, setting=settings[k].name, source=si,
                            path=self.sources[si].path, channels=self.channels[si],
                            start_s=start_s, clip_offsets_s=tuple(offs), channel=channel,
                            gain_db=gain_db, need=need.get(sp),
                            prescreen=self.prescreen if sp in need else None))
        return jobs

    def fill_pool(self) -> tuple[PoolState, list[dict]]:
        from joblib import Parallel, delayed

        state, metas = self.load_pool()
        total = sum(self.target[sp] * (len(self.edges) - 1) for sp in ("train", "val"))
        bar = _progress(total, self.cfg.progress, "pairs (balanced)")
        bar.update(self._filled(state))
        r = len(metas)
        if r:
            log.info("resuming: %d rounds, %d labelled pairs in the pool", r, state.pairs)
        with Parallel(n_jobs=self.cfg.n_jobs, return_as="generator") as par:
            while self._filled(state) < total:
                if state.pairs >= self.cfg.max_pool_factor * self.cfg.pairs:
                    log.warning("pool reached %d pairs (%.1fx --pairs): stopping with starved "
                                "bins", state.pairs, self.cfg.max_pool_factor)
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
                cached = skipped = 0
                for job, res in zip(jobs, par(delayed(run_job)(j, self.setting_by_name,
                                                               self.label_cache)
                                              for j in jobs)):
                    skipped += len(res.skipped_pred)
                    cached += res.cached
                    rjobs.append(round_record(job, res, first=sum(len(a) for a in arrays)))
                    if len(res.ref):
                        arrays.append(np.stack([res.ref, res.deg], axis=1))
                    k = self.setting_index[job.setting]
                    # used/seg_use were already marked by choose_jobs
                    state.used.discard((job.segment, k))
                    state.seg_use[job.segment] -= 1
                    state.add(job.split, job.segment, k, self._bins(res.mos))
                    state.add_skipped(k, self._bins(res.skipped_pred))
                    bar.update(self._filled(state) - bar.n)
                    bar.set_postfix(pool=state.pairs, round=r, refresh=False)
                data = np.concatenate(arrays) if arrays else np.zeros((0, 2, CLIP_SAMPLES), np.int16)
                save_round(self.pool_dir, r, data, {"round": r, "jobs": rjobs,
                                                    "wall_s": time.perf_counter() - t0,
                                                    "prescreen": self.prescreen_digest})
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
                for j, b in enumerate(self._bins(job["mos"])):
                    if 0 <= b < nb:
                        cands[job["split"]][b].append((rm["round"], job["first"] + j))
        rng = np.random.default_rng([self.cfg.seed, 2])
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
        fsutil.atomic_write(path, json.dumps(out))
        return out

    def _pair_meta(self, by_round, r, p):
        for job in by_round[r]["jobs"]:
            if job["first"] <= p < job["first"] + len(job["mos"]):
                return job, p - job["first"]
        raise DatasetError(f"pool round {r} has no pair {p}; delete {self.cfg.out / 'work'} and rebuild")

    def _shard_pairs(self, chunk, split, by_round, arrays):
        """(key, ref, deg, MOS, provenance) of the selected pool pairs ``chunk``."""
        for r, p in chunk:
            if r not in arrays:
                arrays[r] = np.load(round_paths(self.pool_dir, r)[0], mmap_mode="r")
            job, j = self._pair_meta(by_round, r, p)
            ref, deg = np.asarray(arrays[r][p])
            mos = job["mos"][j]
            src = self.sources[job["source"]]
            setting = self.setting_by_name[job["setting"]]
            key = f"r{r:06d}p{p:04d}"
            prov = {"key": key, "split": split, "source_id": src.id, "source_kind": src.kind,
                    "source_package": src.package, "licence": src.licence,
                    "offset_s": round(job["start_s"] + job["offsets_s"][j], 4),
                    "channel": job["channel"], "codec": setting.family,
                    "setting": setting.name, "preset": setting.preset,
                    "options": dict(setting.options), "lowpass_hz": setting.lowpass_hz,
                    "bitrate_kbps": job["bitrate_kbps"], "visqol_mos": mos,
                    "gain_db": job.get("gain_db", 0.0),
                    "score": mos_to_score(mos), "seed": self.cfg.seed}
            yield key, ref, deg, mos, prov

    def write_shards(self, metas, selection) -> list[dict]:
        by_round = {rm["round"]: rm for rm in metas}
        arrays = {}
        shards, n = [], 0
        per = self.cfg.pairs_per_shard
        for sp in ("train", "val"):
            items = selection["pairs"][sp]
            for start in range(0, len(items), per):
                chunk = items[start:start + per]
                name = f"shard-{n:06d}.tar"
                shards.append({"name": name, "split": sp, "pairs": len(chunk)})
                n += 1
                path = self.out / name
                if path.exists():
                    continue
                write_shard(path, self._shard_pairs(chunk, sp, by_round, arrays))
                log.info("wrote %s (%s, %d pairs)", name, sp, len(chunk))
        return shards

    def manifest(self, shards, selection, state, metas) -> dict:
        nb = len(self.edges) - 1
        by_round = {rm["round"]: rm for rm in metas}
        hist = {}
        for sp in ("train", "val"):
            h = np.zeros(nb, int)
            for r, p in selection["pairs"][sp]:
                job, j = self._pair_meta(by_round, r, p)
                h[score_bin(mos_to_score(job["mos"][j]), self.edges)] += 1
            hist[sp] = {f"{self.edges[b]:.2f}": int(h[b]) for b in range(nb)}
        pool_hist = {sp: {f"{self.edges[b]:.2f}": int(c[b]) for b in range(nb)}
                     for sp, c in state.counts.items()}
        times = np.array([[j["time_s"]["decode"], j["time_s"]["degrade"], j["time_s"]["label"]]
                          for rm in metas for j in rm["jobs"]]).sum(axis=0) if metas else np.zeros(3)
        srcs = {sp: sorted(self.sources[i].id for i in range(len(self.sources))
                           if self.splits[i] == sp) for sp in ("train", "val")}
        hours = {sp: round(sum(self.durations[i] for i in range(len(self.sources))
                               if self.splits[i] == sp) / 3600, 3) for sp in ("train", "val")}
        c = self.cfg
        return {"format": "ratecontrol-pairs-v1", "seed": c.seed, "pairs": c.pairs,
                "score": "(visqol_mos - 1) / 4", "score_range": list(c.score_range),
                "bin_width": c.bin_width, "per_bin": selection["per_bin"],
                "starved": selection["starved"], "histogram": hist, "pool_histogram": pool_hist,
                "pool_pairs": state.pairs,
                "job_time_s": dict(zip(("decode", "degrade", "label"), map(float, times))),
                "shards": shards, "source_hours": hours, "sources": srcs,
                "settings": [s.name for s in c.settings]}

    def finish(self, state, metas, **extra) -> BuildResult:
        """Select, write the shards and the manifest (with ``extra`` entries) into ``out``."""
        selection = self.select(metas)
        shards = self.write_shards(metas, selection)
        man = {**self.manifest(shards, selection, state, metas), **extra}
        fsutil.atomic_write(self.out / "manifest.json", json.dumps(man, indent=1))
        log.info("done: %d shards; per bin %s; pool %d", len(shards), man["per_bin"], state.pairs)
        return BuildResult(out_dir=self.out,
                           pairs_by_split={sp: len(v) for sp, v in selection["pairs"].items()},
                           shards=len(shards), pool_pairs=state.pairs, histogram=man["histogram"])


def prescreen_copy(out: Path, prescreen) -> Path | None:
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
    with fsutil.atomic_output(dst) as tmp:
        shutil.copyfile(prescreen, tmp)
    return dst


def _clean_stale_temps(out: Path) -> None:
    """Temp files a killed build left in its folders (a live build's are kept)."""
    for d in (out, out / "work", out / "work" / "pool"):
        fsutil.clean_stale_temps(d)


def build_dataset(sources, out, pairs, **options) -> BuildResult:
    """``build(BuildConfig(sources, out, pairs, **options))``: the keyword form of
    :func:`build`; ``options`` are the other fields of :class:`BuildConfig`."""
    return build(BuildConfig(sources, out, pairs, **options))


def build(cfg: BuildConfig) -> BuildResult:
    """Build (or resume) a balanced pair set in ``cfg.out``; see :mod:`trainer.dataset`.

    ``cfg.snapshot=DEST``: generate nothing; write a balanced set from the pool rounds of
    ``out`` finished so far into the new folder DEST (same format, its own manifest;
    per-bin count = the fullest count every bin of a split reaches), e.g. to start
    training while a long build runs. ``out`` is only read.

    ``cfg.prescreen``: a learned-scorer checkpoint ("default": the packaged model; None:
    off) that decides, once some bins are full, which new clips are worth labelling
    (``PRESCREEN_MARGIN_MOS``). It is copied into ``out/work/prescreen.pt`` on first use
    and that copy is used for the rest of the build, so a resumed build screens alike.

    ``cfg.label_cache``: a :class:`LabelCache` file (``export-labels`` writes one from a
    pool); pairs byte-identical to cached ones take the cached label instead of being
    labelled again, which makes rebuilding a lost pool ~3x faster. The output is the same
    with or without it.
    """
    if cfg.snapshot is not None:
        return _snapshot(cfg)
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "build.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        _clean_stale_temps(out)
        srcs = scan_sources(list(cfg.sources))
        label_cache = cfg.label_cache
        if label_cache is not None:
            cache = LabelCache.load(label_cache)
            if not cache.usable():
                log.warning("label cache %s was made by visqol-python %s, this is %s: "
                            "not used", label_cache, cache.visqol_version, installed_visqol_version())
                label_cache = None
            else:
                log.info("label cache %s: %d labels", label_cache, len(cache))
        b = Builder(dataclasses.replace(cfg, label_cache=label_cache,
                                        prescreen=prescreen_copy(out, cfg.prescreen)), srcs)
        b.check_config()
        log.info("build: %d sources, %d pairs (%s), seed %d, %d jobs", len(srcs), cfg.pairs,
                 b.split_pairs, cfg.seed, cfg.n_jobs)
        b.plan()
        state, metas = b.fill_pool()
        return b.finish(state, metas)
    finally:
        log.removeHandler(handler)
        handler.close()


def _snapshot(cfg: BuildConfig) -> BuildResult:
    out, dest = cfg.out, cfg.snapshot
    if not (out / "work" / "plan.json").exists():
        raise DatasetError(f"{out} has no labelled pool yet (no work/plan.json); start "
                           "build-dataset there first")
    if dest.exists() and any(dest.iterdir()):
        raise OutputError(f"snapshot folder {dest} is not empty; give a new folder")
    srcs = scan_sources(list(cfg.sources))
    b = Builder(dataclasses.replace(cfg, progress=False, label_cache=None, prescreen=None), srcs,
                out=dest)
    b.check_config()  # the arguments must be the build's own
    b.plan()  # reads work/plan.json
    state, metas = b.load_pool()
    b.work.mkdir(parents=True)
    return b.finish(state, metas, snapshot_of={"out": str(out), "rounds": len(metas)})
