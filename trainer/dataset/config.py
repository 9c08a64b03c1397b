"""What a build is: the pair layout, its measured defaults, and :class:`BuildConfig`, the
one object that carries a build's arguments from the command line to every stage."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ratecontrol import fsutil
from ratecontrol.contract import MODEL_SAMPLE_RATE_HZ, WINDOW_SAMPLES
from ratecontrol.errors import DatasetError, UsageError
from trainer.dataset.settings import Setting, default_settings

__all__ = [
    "SAMPLE_RATE_HZ",
    "CLIP_SAMPLES",
    "SEGMENT_S",
    "SEGMENT_HOP_S",
    "CLIP_OFFSETS_S",
    "SCORE_BIN_WIDTH",
    "DEFAULT_SCORE_RANGE",
    "DEFAULT_QUIET_SHARE",
    "QUIET_RMS_DBFS",
    "PRESCREEN_MARGIN_MOS",
    "BuildConfig",
    "config_record",
    "check_resume",
]

SAMPLE_RATE_HZ = MODEL_SAMPLE_RATE_HZ
CLIP_SAMPLES = WINDOW_SAMPLES  # 1 s, the model's window
#: segment encoded per job and where its clips sit: 1.5 s of codec context before the
#: first clip and after the last (Opus/AAC/MP3 priming is < 0.1 s; the rest lets
#: VBR/bit-reservoir state settle as it would mid-track).
SEGMENT_S = 6.0
SEGMENT_HOP_S = 3.0
CLIP_OFFSETS_S = (1.5, 2.5, 3.5)
SCORE_BIN_WIDTH = 0.05
#: score = (MOS-1)/4. Measured on game music (docs/data.md): the harshest settings
#: reach MOS 1.3 (score 0.075), identity gives 4.73 (0.93); [0.10, 0.95) is 17 bins that
#: every split can fill.
DEFAULT_SCORE_RANGE = (0.10, 0.95)
#: Level. ViSQOL's label depends on absolute level (its spectrogram floor), and a whole
#: track is full of quiet windows: on the 4-minute FLAC-testbench track 279 of 480 windows
#: sit at -40..-25 dBFS, while game music is mastered loud. (An RMSE of 0.144 on those
#: windows, the reason this was added, turned out to be DC drift, fixed by the model's
#: subsonic pre-filter: 0.030; docs/model.md.) So a share of jobs plays the segment
#: quieter, as a quiet passage of a track: a gain
#: that puts the segment's loudest chosen clip at a level drawn uniformly from
#: QUIET_RMS_DBFS (never a boost), applied before the codec; the label is still ViSQOL on
#: the exact pair.
DEFAULT_QUIET_SHARE = 0.3
QUIET_RMS_DBFS = (-42.0, -22.0)
#: Pre-screen. Late in a build most bins are full and most labels land in them: the
#: learned scorer (~2 ms per pair against ViSQOL's ~150 ms) predicts each new clip, and
#: a clip is labelled only if a bin still short of its target lies within this margin of
#: the prediction; skipped clips still count in the per-setting statistics (at their
#: predicted bin) so the chooser's estimates stay unbiased. Measured on 4,787 pool pairs
#: of the seed-1 build (rounds 60-120, model RMSE 0.034 there) with the top train bin
#: full and 0.85-0.90 still needed: margin 0.15 MOS skipped none of the top bin's clips
#: (the bins are 0.2 MOS wide, so 0.15 reached into nearly all of it), 0.10 skipped 53 %,
#: 0.08 68 % while wrongly skipping 0.2 % of the needed bin's clips, 0.06 79 % (0.2 %).
#: The build used 0.15 up to round 121 and 0.08 from then on.
PRESCREEN_MARGIN_MOS = 0.08


@dataclass(frozen=True)
class BuildConfig:
    """A build's arguments, checked once (``UsageError`` naming the bad one).

    ``sources``: audio folders (recursive) or build-corpus folders; ``out``: the build
    folder. ``snapshot``: generate nothing, write a balanced set from ``out``'s pool into
    this new folder. ``label_cache``: a LabelCache file whose byte-identical pairs are not
    labelled again. ``prescreen``: a learned-scorer checkpoint ("default": the packaged
    model; None: off). See :func:`trainer.dataset.build_dataset`.
    """

    sources: tuple[Path, ...]
    out: Path
    pairs: int
    seed: int = 0
    val_fraction: float = 0.1
    n_jobs: int = 2
    score_range: tuple[float, float] = DEFAULT_SCORE_RANGE
    settings: tuple[Setting, ...] = field(default_factory=default_settings)
    complexity_keep: float = 0.7
    max_pool_factor: float = 3.0
    pairs_per_shard: int = 1000
    progress: bool = True
    bin_width: float = SCORE_BIN_WIDTH
    snapshot: Path | None = None
    label_cache: Path | None = None
    quiet_share: float = DEFAULT_QUIET_SHARE
    prescreen: str | os.PathLike | None = "default"

    def __post_init__(self):
        norm = {"sources": tuple(Path(s) for s in self.sources), "out": Path(self.out),
                "pairs": int(self.pairs), "seed": int(self.seed),
                "val_fraction": float(self.val_fraction),
                "score_range": tuple(float(x) for x in self.score_range),
                "settings": tuple(self.settings) if self.settings else default_settings(),
                "bin_width": float(self.bin_width), "quiet_share": float(self.quiet_share),
                "snapshot": None if self.snapshot is None else Path(self.snapshot),
                "label_cache": None if self.label_cache is None else Path(self.label_cache)}
        for k, v in norm.items():
            object.__setattr__(self, k, v)
        if self.pairs <= 0:
            raise UsageError(f"--pairs must be positive, got {self.pairs}")
        if not 0 <= self.val_fraction < 1:
            raise UsageError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0 <= self.quiet_share <= 1:
            raise UsageError(f"quiet_share must be in [0, 1], got {self.quiet_share}")

    @property
    def split_pairs(self) -> dict[str, int]:
        """Pairs per split: val gets ``val_fraction`` of ``pairs``, rounded."""
        n_val = int(round(self.pairs * self.val_fraction))
        return {"train": self.pairs - n_val, "val": n_val}


def config_record(cfg: BuildConfig, source_ids: list[str]) -> dict:
    """The arguments that decide what a build makes, as ``OUT/work/config.json`` keeps them."""
    c = cfg
    return {"format": 1, "pairs": c.pairs, "seed": c.seed,
            "val_fraction": c.val_fraction, "score_range": list(c.score_range),
            "bin_width": c.bin_width, "complexity_keep": c.complexity_keep,
            "segment_s": SEGMENT_S, "clip_offsets_s": list(CLIP_OFFSETS_S),
            "settings": [dataclasses.asdict(s) for s in c.settings],
            "sources": list(source_ids),
            "pairs_per_shard": c.pairs_per_shard,
            **({"quiet_share": c.quiet_share, "quiet_rms_dbfs": list(QUIET_RMS_DBFS)}
               if c.quiet_share else {})}


def check_resume(cfg: BuildConfig, source_ids: list[str]) -> None:
    """Refuse to resume ``cfg.out`` with other arguments; record them on a first run."""
    work = cfg.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    path = work / "config.json"
    record = json.loads(json.dumps(config_record(cfg, source_ids)))
    if path.exists():
        old = json.loads(path.read_text())
        if old != record:
            diff = sorted(k for k in record if old.get(k) != record[k])
            raise DatasetError(f"{cfg.out} was started with different arguments "
                               f"({', '.join(diff)} differ); rerun the original command "
                               "or choose a new --out")
    else:
        fsutil.atomic_write(path, json.dumps(record, indent=1))
