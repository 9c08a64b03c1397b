"""Balance: from the labelled pool, the same seeded random count of pairs in every score
bin of a split (``OUT/work/selection.json``, made once)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ratecontrol import fsutil
from ratecontrol.errors import DatasetError
from trainer.dataset.pool import BinTargets

__all__ = ["select", "pair_meta"]

log = logging.getLogger(__name__)


def select(work: Path, metas: list[dict], bins: BinTargets, seed: int) -> dict:
    """``{"pairs": {split: [[round, pair], ...]}, "starved": ..., "per_bin": ...}``: each
    bin keeps ``target`` pairs (fewer, the same in every bin, when one is starved)."""
    path = work / "selection.json"
    if path.exists():
        return json.loads(path.read_text())
    nb = bins.n_bins
    cands = {sp: [[] for _ in range(nb)] for sp in ("train", "val")}
    for rm in metas:
        for job in rm["jobs"]:
            for j, b in enumerate(bins.bins(job["mos"])):
                if 0 <= b < nb:
                    cands[job["split"]][b].append((rm["round"], job["first"] + j))
    rng = np.random.default_rng([seed, 2])
    sel, starved = {}, {}
    for sp in ("train", "val"):
        keep = min(bins.target[sp], min(len(c) for c in cands[sp])) if bins.target[sp] else 0
        if keep < bins.target[sp]:
            starved[sp] = {f"{bins.edges[b]:.2f}": len(c) for b, c in enumerate(cands[sp])
                           if len(c) < bins.target[sp]}
            log.warning("%s: starved bins %s; keeping %d per bin instead of %d",
                        sp, starved[sp], keep, bins.target[sp])
        chosen = []
        for c in cands[sp]:
            pick = rng.choice(len(c), size=keep, replace=False) if keep else []
            chosen += [c[int(i)] for i in sorted(pick)]
        order = rng.permutation(len(chosen))
        sel[sp] = [list(chosen[int(i)]) for i in order]
    out = {"pairs": sel, "starved": starved, "per_bin": {sp: len(v) // nb for sp, v in sel.items()}}
    fsutil.atomic_write(path, json.dumps(out))
    return out


def pair_meta(by_round: dict, r: int, p: int, out: Path) -> tuple[dict, int]:
    """(job record, index of the clip in the job) of pair ``p`` of pool round ``r``."""
    for job in by_round[r]["jobs"]:
        if job["first"] <= p < job["first"] + len(job["mos"]):
            return job, p - job["first"]
    raise DatasetError(f"pool round {r} has no pair {p}; delete {out / 'work'} and rebuild")
