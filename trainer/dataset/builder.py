"""The build, stage by stage: config check, plan, pool rounds, selection, shards,
manifest (each checkpointed under ``OUT/work``, so rerunning the same build resumes).
The stages live in their modules; this one runs them in order."""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from ratecontrol import fsutil
from ratecontrol.errors import DatasetError, OutputError, UsageError
from trainer.dataset.config import BuildConfig, check_resume
from trainer.dataset.labels import LabelCache, installed_visqol_version
from trainer.dataset.pool import BinTargets, PoolState
from trainer.dataset.rounds import fill_pool, load_pool
from trainer.dataset.selection import select
from trainer.dataset.shards import manifest, write_shards
from trainer.dataset.sources import Plan, Source, plan_build, scan_sources

__all__ = ["BuildResult", "Builder", "build", "build_dataset", "prescreen_copy"]

# the stage modules log to children of this logger, so build.log gets them all
log = logging.getLogger("trainer.dataset")


@dataclass(frozen=True)
class BuildResult:
    out_dir: Path
    pairs_by_split: dict
    shards: int
    pool_pairs: int
    histogram: dict


class Builder:
    """One build over scanned ``sources``: ``cfg.label_cache`` and ``cfg.prescreen`` as
    the build uses them (a usable cache or None; the build's own prescreen copy or None).
    ``out`` is where selection, shards and manifest go (``cfg.out``, or a snapshot's
    folder); the plan and the pool are always read from ``cfg.out``."""

    def __init__(self, cfg: BuildConfig, sources: list[Source], out: Path | None = None):
        self.cfg = cfg
        self.sources = sources
        self.out = Path(out) if out is not None else cfg.out
        self.work = self.out / "work"
        self.pool_dir = cfg.out / "work" / "pool"
        self.bins = BinTargets.for_config(cfg)
        self.prescreen = str(cfg.prescreen) if cfg.prescreen else None
        self.prescreen_digest = fsutil.file_digest(self.prescreen, "sha1")[:16] if self.prescreen else None
        # not part of config_record(): a cache changes how fast labels come, never what they are
        self.label_cache = str(cfg.label_cache) if cfg.label_cache else None
        self.plan: Plan | None = None

    def check_config(self) -> None:
        check_resume(self.cfg, [s.id for s in self.sources])

    def make_plan(self) -> None:
        self.plan = plan_build(self.cfg, self.sources)

    def load_pool(self) -> tuple[PoolState, list[dict]]:
        return load_pool(self.pool_dir, self.cfg, self.bins)

    def fill_pool(self) -> tuple[PoolState, list[dict]]:
        return fill_pool(self.pool_dir, self.cfg, self.plan, self.sources, self.bins,
                         self.prescreen, self.prescreen_digest, self.label_cache)

    def finish(self, state, metas, **extra) -> BuildResult:
        """Select, write the shards and the manifest (with ``extra`` entries) into ``out``."""
        selection = select(self.work, metas, self.bins, self.cfg.seed)
        shards = write_shards(self.out, metas, selection, self.cfg, self.sources)
        man = {**manifest(shards, selection, state, metas, self.cfg, self.sources, self.plan, self.bins),
               **extra}
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
                 cfg.split_pairs, cfg.seed, cfg.n_jobs)
        b.make_plan()
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
    b.make_plan()  # reads work/plan.json
    state, metas = b.load_pool()
    b.work.mkdir(parents=True)
    return b.finish(state, metas, snapshot_of={"out": str(out), "rounds": len(metas)})
