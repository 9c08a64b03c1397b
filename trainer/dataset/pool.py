"""The labelled pool: score bins, the per-round checkpoints on disk, and the state the
job chooser steers by."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ratecontrol import fsutil
from ratecontrol.contract import mos_to_score
from ratecontrol.errors import UsageError
from trainer.dataset.config import SCORE_BIN_WIDTH, BuildConfig

__all__ = ["bin_edges", "score_bin", "BinTargets", "PoolState", "round_paths", "read_rounds", "save_round"]

_SPLITS = ("train", "val")


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


@dataclass(frozen=True)
class BinTargets:
    """The score bins (``edges``) and the pairs each split wants in every bin (``target``)."""

    edges: np.ndarray
    target: dict  # split -> pairs per bin

    @classmethod
    def for_config(cls, cfg: BuildConfig) -> "BinTargets":
        edges = bin_edges(cfg.score_range, cfg.bin_width)
        nb = len(edges) - 1
        target = {k: v // nb for k, v in cfg.split_pairs.items()}
        if target["train"] < 1:
            raise UsageError(f"--pairs {cfg.pairs} is too small for {nb} score bins; "
                             f"use at least {nb / (1 - cfg.val_fraction):.0f}")
        return cls(edges, target)

    @property
    def n_bins(self) -> int:
        return len(self.edges) - 1

    @property
    def total(self) -> int:
        """Pairs of the balanced set, both splits."""
        return sum(self.target[sp] * self.n_bins for sp in _SPLITS)

    def bins(self, mos_values) -> list[int]:
        return [score_bin(mos_to_score(m), self.edges) for m in mos_values]

    def deficit(self, state: "PoolState") -> dict:
        return {sp: np.maximum(self.target[sp] - state.counts.get(sp, np.zeros(self.n_bins, int)), 0)
                for sp in _SPLITS}

    def filled(self, state: "PoolState") -> int:
        return int(sum(np.minimum(state.counts.get(sp, 0), self.target[sp]).sum() for sp in _SPLITS))


@dataclass
class PoolState:
    """Labelled pairs per split and bin, where each setting's clips land, and which
    (segment, setting) pairs are used."""

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


def round_paths(pool_dir: Path, r: int) -> tuple[Path, Path]:
    """(audio ``.npy`` [pairs, 2, CLIP_SAMPLES] int16, record ``.json``) of pool round ``r``."""
    return Path(pool_dir) / f"round-{r:06d}.npy", Path(pool_dir) / f"round-{r:06d}.json"


def read_rounds(pool_dir: Path) -> Iterator[tuple[int, dict]]:
    """(round, record) of every finished round in order (a round is finished once its
    record is written, after its audio)."""
    r = 0
    while round_paths(pool_dir, r)[1].exists():
        yield r, json.loads(round_paths(pool_dir, r)[1].read_text())
        r += 1


def save_round(pool_dir: Path, r: int, audio: np.ndarray, record: dict) -> None:
    """Checkpoint round ``r``: its audio, then its record (each written atomically)."""
    npy, js = round_paths(pool_dir, r)
    npy.parent.mkdir(parents=True, exist_ok=True)
    with fsutil.atomic_output(npy) as tmp, open(tmp, "wb") as f:
        np.save(f, audio)
    fsutil.atomic_write(js, json.dumps(record))
