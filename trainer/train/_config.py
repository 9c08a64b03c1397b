"""The training config: DEFAULT_CONFIG overridden by a YAML file or a mapping (unknown keys
are errors), and the command line's overrides of it."""
from __future__ import annotations

import copy
from typing import Any, Mapping

import yaml

from ratecontrol.errors import UsageError

__all__ = ["DEFAULT_CONFIG", "load_config", "run_config"]

DEFAULT_CONFIG: dict[str, Any] = {
    "seed": 1234,
    "model": {"arch": "nsimnet", "kwargs": {}},
    "data": {
        "batch_size": 64,
        "samples_per_epoch": 20000,
        "shuffle_buffer": 2000,
        "num_workers": 1,
        "val_shards": None,
        "val_fraction": 0.1,
        "val_batch_size": 128,
        # nsimnet's frontend has no parameters: compute its band statistics once per
        # pair (cached in the run folder) and train the head on them; "auto" = when the
        # model allows it and no augmentation is on
        "precompute": "auto",
    },
    "augment": {"shift": False, "gain_db": [0.0, 0.0], "reverse_p": 0.0},
    "optim": {"lr": 3.0e-3, "weight_decay": 1.0e-4, "betas": [0.9, 0.999]},
    "schedule": {"warmup_steps": 100, "min_lr_ratio": 0.02},
    "loss": {"high_mos": 4.0, "high_weight": 2.0},
    "epochs": 40,
    "grad_clip": 1.0,
    "amp": True,
    "threads": None,
    "early_stopping": {"patience": 8, "min_delta": 0.0005},
}


def _merge(base: dict, over: Mapping, path: str, source: str) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k not in base:
            raise UsageError(f"{source}: unknown config key {path}{k!r}; known keys: {sorted(base)}")
        if isinstance(base[k], dict) and k != "kwargs":
            if not isinstance(v, Mapping):
                raise UsageError(f"{source}: config key {path}{k!r} must be a mapping")
            out[k] = _merge(base[k], v, f"{path}{k}.", source)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(config: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """DEFAULT_CONFIG overridden by a YAML file or a mapping; unknown keys are errors."""
    if config is None:
        return copy.deepcopy(DEFAULT_CONFIG)
    if isinstance(config, Mapping):
        return _merge(DEFAULT_CONFIG, config, "", "config")
    try:
        with open(config, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except FileNotFoundError as exc:
        raise UsageError(f"training config {config} not found; see trainer/configs/ for examples") from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"training config {config} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, Mapping):
        raise UsageError(f"training config {config} must be a YAML mapping")
    return _merge(DEFAULT_CONFIG, data, "", str(config))


def run_config(config, epochs, num_workers, samples_per_epoch) -> dict[str, Any]:
    cfg = load_config(config)
    if epochs is not None:
        cfg["epochs"] = int(epochs)
    if num_workers is not None:
        cfg["data"]["num_workers"] = int(num_workers)
    if samples_per_epoch is not None:
        cfg["data"]["samples_per_epoch"] = int(samples_per_epoch)
    return cfg
