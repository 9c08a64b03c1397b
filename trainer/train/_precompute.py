"""nsimnet's frontend has no parameters: its band statistics are computed once per pair
(cached in the run folder) and the head trains on batches drawn from them."""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Mapping

import torch

from ratecontrol.errors import DatasetError, UsageError

__all__ = ["stat_batches", "statistics_cache", "use_precompute"]

log = logging.getLogger("trainer.train")


def stat_batches(cache: Mapping[str, Any], batch_size: int, steps: int, seed: int, epoch: int, rank: int):
    """``steps`` batches drawn with replacement from precomputed statistics (the same
    count on every rank, as DDP needs), seeded by (seed, epoch, rank)."""
    n = len(cache["mos"])
    if n == 0:
        raise DatasetError("this rank has no precomputed training pairs (fewer shards than ranks?)")
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch * 1009 + rank)
    for i in range(steps):
        idx = torch.randint(0, n, (batch_size,), generator=g)
        yield {"stats": cache["stats"][idx], "mos": cache["mos"][idx], "skipped": cache["skipped"] if i == 0 else 0}


def statistics_cache(model, urls: list[str], batch_size: int, num_workers: int, dev: torch.device,
                      path: str, rank: int) -> dict[str, Any]:
    """{"stats": [N, bands, features], "mos": [N], "skipped": int} of this rank's shards,
    computed with the model's fixed frontend; reused from ``path`` when it was made for
    the same shards and frontend settings."""
    from trainer.data import PairDataset, make_loader

    ident = {"urls": list(urls), "config": {k: v for k, v in model.config.items() if k != "hidden"}, "rank": rank,
             "world": int(os.environ.get("WORLD_SIZE", "1"))}
    if os.path.exists(path):
        cached = torch.load(path, map_location="cpu", weights_only=True)
        if cached.get("ident") == json.loads(json.dumps(ident)):
            return cached
    stats, mos, skipped, t0 = [], [], 0, time.time()
    loader = make_loader(PairDataset(urls, train=False, batch_size=batch_size), num_workers=num_workers, device=str(dev))
    with torch.no_grad():
        for batch in loader:
            skipped += int(batch["skipped"])
            if len(batch["mos"]) == 0:
                continue
            ref = batch["ref"].to(dev, non_blocking=True)
            deg = batch["deg"].to(dev, non_blocking=True)
            stats.append(model.band_statistics(model.reference_features(ref), deg).float().cpu())
            mos.append(batch["mos"].float())
    if not stats:
        out = {"stats": torch.zeros(0), "mos": torch.zeros(0), "skipped": skipped, "ident": ident}
    else:
        out = {"stats": torch.cat(stats), "mos": torch.cat(mos), "skipped": skipped, "ident": ident}
    out["seconds"] = time.time() - t0
    from ratecontrol.scoring.model import save_checkpoint

    save_checkpoint(out, path)
    log.info("precomputed statistics of %d pairs in %.0f s -> %s (%d skipped)", len(out["mos"]), out["seconds"], path, skipped)
    return out


def use_precompute(cfg: Mapping[str, Any], model, augment) -> bool:
    want = cfg["data"]["precompute"]
    can = hasattr(model, "predict_statistics") and not augment.active
    if want == "auto":
        return can
    if want and not can:
        raise UsageError("data.precompute needs a model with a fixed frontend (nsimnet) and no augmentation")
    return bool(want)
