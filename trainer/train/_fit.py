"""fit(): one training run in its steps (``trainer.train`` describes it)."""
from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import yaml

from ratecontrol.errors import DatasetError, ModelError, UsageError
from trainer.train._config import run_config
from trainer.train._dist import Dist
from trainer.train._precompute import stat_batches, statistics_cache, use_precompute
from trainer.train._runlog import CsvLog, log_epoch, tensorboard

__all__ = ["FitResult", "fit", "Run"]

log = logging.getLogger("trainer.train")


@dataclass(frozen=True)
class FitResult:
    out_dir: str
    best_checkpoint: str
    last_checkpoint: str
    best_epoch: int
    best_val_rmse: float
    epochs_run: int
    stopped_early: bool
    duration_s: float


def _lr_lambda(warmup: int, total: int, min_ratio: float):
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def _loss(pred: torch.Tensor, mos: torch.Tensor, cfg: Mapping[str, Any]) -> torch.Tensor:
    """MSE, with labels >= high_mos weighted high_weight: the region where a 0.1 MOS
    error moves a bitrate decision (targets 4.0..4.5)."""
    w = torch.where(mos >= float(cfg["high_mos"]), float(cfg["high_weight"]), 1.0)
    return (w * (pred.float() - mos) ** 2).sum() / w.sum()


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
            "python": repr(random.getstate())}


def _data_split(data, val_data, manifest, cfg) -> tuple[list[str], list[str], str]:
    from trainer.data import read_manifest, resolve_shards, split_shards

    specs = [data] if isinstance(data, str) else list(data or [])
    if not manifest and len(specs) == 1 and str(specs[0]).endswith(".json"):
        manifest, specs = str(specs[0]), []  # --data manifest.json: use its splits
    train_urls = resolve_shards(specs) if specs else []
    val_urls = resolve_shards(val_data) if val_data else []
    how = "--val-data"
    if manifest:
        splits = read_manifest(manifest)
        if not train_urls:
            train_urls = splits.get("train", [])
        if not val_urls:
            val_urls = splits.get("val", [])
            how = f"manifest {manifest} val split"
    if not train_urls:
        raise DatasetError("no training shards: pass --data (brace pattern, folder) or --manifest")
    if not val_urls:
        train_urls, val_urls = split_shards(train_urls, cfg["data"]["val_shards"], cfg["data"]["val_fraction"])
        how = f"last {len(val_urls)} of {len(train_urls) + len(val_urls)} shards"
    overlap = set(train_urls) & set(val_urls)
    if overlap:
        raise DatasetError(f"{len(overlap)} shard(s) are in both training and validation data, e.g. {sorted(overlap)[0]}")
    return train_urls, val_urls, how


@dataclass
class Run:
    """One training run as fit sets it up: config, device, model, optimiser, data, and the
    progress that a checkpoint saves (epoch, step, best so far, epochs without a gain)."""

    cfg: dict
    dev: torch.device
    dist: Dist
    out_dir: str
    model: Any = None
    opt: Any = None
    sched: Any = None
    scaler: Any = None
    use_amp: bool = False
    steps_per_epoch: int = 1
    train_ds: Any = None
    val_ds: Any = None
    augment: Any = None
    precompute: bool = False
    net: Any = None  # the model, DDP-wrapped when distributed and streaming
    head_net: Any = None  # the head, DDP-wrapped when distributed and precomputed
    train_cache: Any = None
    val_cache: Any = None
    training_data: dict | None = None
    split_how: str = ""
    start_epoch: int = 0
    step: int = 0
    best_rmse: float = float("inf")
    best_epoch: int = -1
    bad_epochs: int = 0

    @property
    def seed(self) -> int:
        return int(self.cfg["seed"])

    @property
    def last_path(self) -> str:
        return os.path.join(self.out_dir, "last.pt")

    @property
    def best_path(self) -> str:
        return os.path.join(self.out_dir, "best.pt")

    @property
    def num_workers(self) -> int:
        return int(self.cfg["data"]["num_workers"])


def _start(cfg: dict[str, Any], device: str, out_dir: str) -> Run:
    """Device and process group, threads, per-rank seeds."""
    from trainer.evaluate import resolve_device

    dev = resolve_device(device)
    dist = Dist(dev)
    if dist.enabled and dev.type == "cuda":
        dev = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(dev)
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    seed = int(cfg["seed"])
    random.seed(seed + dist.rank)
    np.random.seed((seed + dist.rank) % 2**32)
    torch.manual_seed(seed + dist.rank)
    return Run(cfg=cfg, dev=dev, dist=dist, out_dir=out_dir)


def _build_model(run: Run, init_from: str | None) -> None:
    """Model (same initial weights on every rank), AdamW, warm-up + cosine schedule, AMP scaler."""
    from ratecontrol.scoring.model import build_model, load_checkpoint

    cfg, dev = run.cfg, run.dev
    bs = int(cfg["data"]["batch_size"])
    run.steps_per_epoch = max(1, math.ceil(int(cfg["data"]["samples_per_epoch"]) / (bs * run.dist.world)))
    total_steps = run.steps_per_epoch * int(cfg["epochs"])
    torch.manual_seed(run.seed)  # same initial weights on every rank
    run.model = build_model(cfg["model"]["arch"], cfg["model"]["kwargs"]).to(dev)
    if init_from:
        src, _ = load_checkpoint(init_from)
        run.model.load_state_dict(src.state_dict())
    ocfg = cfg["optim"]
    run.opt = torch.optim.AdamW(run.model.parameters(), lr=float(ocfg["lr"]), weight_decay=float(ocfg["weight_decay"]),
                                betas=tuple(float(b) for b in ocfg["betas"]))
    run.sched = torch.optim.lr_scheduler.LambdaLR(
        run.opt, _lr_lambda(int(cfg["schedule"]["warmup_steps"]), total_steps, float(cfg["schedule"]["min_lr_ratio"])))
    run.use_amp = bool(cfg["amp"]) and dev.type == "cuda"
    run.scaler = torch.amp.GradScaler("cuda", enabled=run.use_amp)


def _resume(run: Run) -> None:
    """Continue from ``last.pt``: weights, optimiser, schedule, scaler and progress."""
    last_path, cfg = run.last_path, run.cfg
    ckpt = torch.load(last_path, map_location="cpu", weights_only=True)
    st = ckpt.get("train_state")
    if st is None:
        raise ModelError(f"{last_path} has no train_state to resume from; use --no-resume or another --out")
    if ckpt["arch"] != cfg["model"]["arch"]:
        raise UsageError(f"{last_path} holds a {ckpt['arch']!r} model but the config asks for {cfg['model']['arch']!r}; use another --out")
    run.model.load_state_dict(ckpt["state_dict"])
    run.opt.load_state_dict(st["optimizer"])
    run.sched.load_state_dict(st["scheduler"])
    if run.use_amp and st.get("scaler"):
        run.scaler.load_state_dict(st["scaler"])
    run.start_epoch, run.step = int(st["epoch"]) + 1, int(st["step"])
    run.best_rmse, run.best_epoch, run.bad_epochs = float(st["best_rmse"]), int(st["best_epoch"]), int(st["bad_epochs"])
    if run.dist.main:
        log.info("resumed from %s at epoch %d (best val RMSE %.4f at epoch %d)", last_path, run.start_epoch,
                 run.best_rmse, run.best_epoch)


def _setup_data(run: Run, train_urls: list[str], val_urls: list[str]) -> None:
    """Augmentation, datasets, and (nsimnet without augmentation) the precomputed
    statistics the head trains on; wraps model or head in DDP when distributed."""
    from trainer.data import BatchAugment, PairDataset

    cfg, dev, dist, model = run.cfg, run.dev, run.dist, run.model
    dcfg, aug_cfg = cfg["data"], cfg["augment"]
    run.augment = BatchAugment(shift=bool(aug_cfg["shift"]), gain_db=tuple(float(g) for g in aug_cfg["gain_db"]),
                               reverse_p=float(aug_cfg["reverse_p"]))
    run.train_ds = PairDataset(train_urls, train=True, batch_size=int(dcfg["batch_size"]), seed=run.seed,
                               shuffle_buffer=int(dcfg["shuffle_buffer"]), samples_per_epoch=int(dcfg["samples_per_epoch"]))
    run.val_ds = PairDataset(val_urls, train=False, batch_size=int(dcfg["val_batch_size"]))
    run.precompute = use_precompute(cfg, model, run.augment)
    device_ids = [dev.index] if dev.type == "cuda" else None
    run.net = model
    if dist.enabled and not run.precompute:
        run.net = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if run.precompute:
        vb, nw = int(dcfg["val_batch_size"]), run.num_workers
        run.train_cache = statistics_cache(model, train_urls, vb, nw, dev,
                                            os.path.join(run.out_dir, f"stats-train-rank{dist.rank}.pt"), dist.rank)
        run.val_cache = statistics_cache(model, val_urls, vb, nw, dev,
                                          os.path.join(run.out_dir, f"stats-val-rank{dist.rank}.pt"), dist.rank)
        run.head_net = (torch.nn.parallel.DistributedDataParallel(model.head, device_ids=device_ids)
                        if dist.enabled else model.head)
        if sum(dist.gather(len(run.train_cache["mos"]))) == 0:
            raise DatasetError("no readable training pairs")
    run.training_data = {"train_shards": len(train_urls), "val_shards": len(val_urls), "validation": run.split_how,
                         "train_first": train_urls[0], "train_last": train_urls[-1], "val_first": val_urls[0],
                         "samples_per_epoch": int(dcfg["samples_per_epoch"]), "precomputed_statistics": run.precompute}
    if run.precompute:
        run.training_data["train_pairs"] = sum(dist.gather(len(run.train_cache["mos"])))
        run.training_data["val_pairs"] = sum(dist.gather(len(run.val_cache["mos"])))


def _train_epoch(run: Run, epoch: int) -> tuple[float, int, int, float]:
    """One epoch of optimiser steps: (loss sum, pairs, skipped pairs) over all ranks, and
    this rank's seconds."""
    from ratecontrol.scoring.model import bounded_mos
    from trainer.data import make_loader

    cfg, dev, dist, augment = run.cfg, run.dev, run.dist, run.augment
    bs = int(cfg["data"]["batch_size"])
    t0 = time.time()
    run.train_ds.epoch = epoch
    run.model.train()
    gen = augment.generator(run.seed + dist.rank, epoch, dev) if augment.active else None
    loss_sum, pairs, skipped = 0.0, 0, 0
    for batch in (stat_batches(run.train_cache, bs, run.steps_per_epoch, run.seed, epoch, dist.rank) if run.precompute
                  else make_loader(run.train_ds, num_workers=run.num_workers, device=str(dev))):
        skipped += int(batch["skipped"])
        mos = batch["mos"].to(dev, non_blocking=True)
        if run.precompute:
            with torch.autocast(device_type=dev.type, enabled=run.use_amp):
                pred = bounded_mos(run.head_net(batch["stats"].to(dev, non_blocking=True).flatten(1)).squeeze(-1).float())
        else:
            ref = batch["ref"].to(dev, non_blocking=True)
            deg = batch["deg"].to(dev, non_blocking=True)
            if gen is not None:
                ref, deg = augment(ref, deg, gen)
            with torch.autocast(device_type=dev.type, enabled=run.use_amp):
                pred = run.net(ref, deg)
        loss = _loss(pred, mos, cfg["loss"])
        run.opt.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.unscale_(run.opt)
        if cfg["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), float(cfg["grad_clip"]))
        run.scaler.step(run.opt)
        run.scaler.update()
        run.sched.step()
        run.step += 1
        loss_sum += float(loss.detach()) * len(mos)
        pairs += len(mos)
    train_s = time.time() - t0
    tot = dist.gather((loss_sum, pairs, skipped))
    loss_sum, pairs, skipped = (sum(t[i] for t in tot) for i in range(3))
    return loss_sum, pairs, skipped, train_s


def _validate(run: Run) -> tuple[dict[str, Any], int]:
    """Metrics of the validation predictions gathered from every rank, and skipped pairs."""
    from trainer.data import make_loader
    from trainer.evaluate import compute_metrics, predict

    model, dev = run.model, run.dev
    if run.precompute:
        model.eval()
        with torch.no_grad():
            vs = run.val_cache["stats"]
            pred = np.concatenate([model.predict_statistics(vs[i:i + 4096].to(dev)).cpu().numpy()
                                   for i in range(0, len(vs), 4096)]) if len(vs) else np.zeros(0)
        label, val_skipped = run.val_cache["mos"].numpy().astype(np.float64), int(run.val_cache["skipped"])
        pred = pred.astype(np.float64)
    else:
        pred, label, _, val_skipped = predict(model, make_loader(run.val_ds, num_workers=run.num_workers, device=str(dev)), dev)
    parts = run.dist.gather((pred, label, val_skipped))
    pred = np.concatenate([p[0] for p in parts])
    label = np.concatenate([p[1] for p in parts])
    val_skipped = sum(p[2] for p in parts)
    if len(label) == 0:
        raise DatasetError(f"validation data ({run.split_how}) yielded no readable pairs")
    return compute_metrics(pred, label), val_skipped


def _checkpoint(run: Run, epoch: int, m: dict[str, Any], improved: bool) -> None:
    """``last.pt`` (with the train state to resume from) and, on a gain, ``best.pt``."""
    from ratecontrol.scoring.model import checkpoint_dict, save_checkpoint

    metrics = {"val": {k: m[k] for k in ("n", "pearson", "spearman", "rmse", "mae", "bias")},
               "val_high": m["high"], "epoch": epoch}
    state = {"optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
             "scaler": run.scaler.state_dict() if run.use_amp else {}, "epoch": epoch, "step": run.step,
             "best_rmse": run.best_rmse, "best_epoch": run.best_epoch, "bad_epochs": run.bad_epochs,
             "config": run.cfg, "rng": _rng_state()}
    ck = checkpoint_dict(run.model, training_data=run.training_data, metrics=metrics, extra={"train_state": state})
    save_checkpoint(ck, run.last_path)
    if improved:
        ck.pop("train_state")
        save_checkpoint(ck, run.best_path)


def fit(
    config: str | Mapping[str, Any] | None,
    data: str | Sequence[str] | None,
    out_dir: str,
    *,
    val_data: str | Sequence[str] | None = None,
    manifest: str | None = None,
    resume: bool = True,
    device: str = "auto",
    epochs: int | None = None,
    num_workers: int | None = None,
    samples_per_epoch: int | None = None,
    init_from: str | None = None,
) -> FitResult:
    """Train; returns where the best checkpoint is and how it scored on validation."""
    cfg = run_config(config, epochs, num_workers, samples_per_epoch)
    run = _start(cfg, device, out_dir)
    dist = run.dist
    train_urls, val_urls, run.split_how = _data_split(data, val_data, manifest, cfg)
    os.makedirs(out_dir, exist_ok=True)
    _build_model(run, init_from)
    if resume and os.path.exists(run.last_path):
        _resume(run)
    _setup_data(run, train_urls, val_urls)
    csv_log = tb = None
    if dist.main:
        with open(os.path.join(out_dir, "config.yaml"), "w", encoding="utf-8") as fh:
            yaml.safe_dump({"config": cfg, "data": run.training_data, "world_size": dist.world}, fh, sort_keys=False)
        csv_log = CsvLog(os.path.join(out_dir, "log.csv"))
        tb = tensorboard(out_dir)
        log.info("training %s on %d shards, validating on %s; %d steps/epoch x %d epochs, device %s, world %d",
                 cfg["model"]["arch"], len(train_urls), run.split_how, run.steps_per_epoch, cfg["epochs"], run.dev,
                 dist.world)

    t_start = time.time()
    stopped_early = False
    epoch = run.start_epoch - 1
    patience = int(cfg["early_stopping"]["patience"])
    min_delta = float(cfg["early_stopping"]["min_delta"])
    try:
        for epoch in range(run.start_epoch, int(cfg["epochs"])):
            t0 = time.time()
            train = _train_epoch(run, epoch)
            m, val_skipped = _validate(run)
            improved = m["rmse"] < run.best_rmse - min_delta
            if improved:
                run.best_rmse, run.best_epoch, run.bad_epochs = m["rmse"], epoch, 0
            else:
                run.bad_epochs += 1
            if dist.main:
                _checkpoint(run, epoch, m, improved)
                log_epoch(run, csv_log, tb, epoch, t0, train, m, val_skipped, improved)
            dist.barrier()
            if run.bad_epochs >= patience:
                stopped_early = True
                if dist.main:
                    log.info("early stop: no validation RMSE gain for %d epochs (best %.4f at epoch %d)", patience,
                             run.best_rmse, run.best_epoch)
                break
    finally:
        if csv_log is not None:
            csv_log.close()
        if tb is not None:
            tb.close()
        dist.close()
    return FitResult(out_dir, run.best_path, run.last_path, run.best_epoch, run.best_rmse, epoch + 1, stopped_early,
                     time.time() - t_start)
