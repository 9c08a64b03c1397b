"""The training/validation data pipeline: webdataset shards of labelled window pairs.

Shard format (the public dataset's, and what ``trainer build-dataset`` writes): tar files
``shard-NNNNNN.tar`` whose samples are ``KEY.original.wav`` and ``KEY.degraded.wav``
(1-s mono 44.1-kHz 16-bit), ``KEY.score.txt`` (score in 0..1, MOS = 4*score + 1) and an
optional ``KEY.json`` (provenance, ignored here).

* ``resolve_shards`` turns brace patterns (``shards/shard-{000000..000071}.tar``), lists,
  directories and manifests into URL lists; anything webdataset opens works (local
  paths, ``http(s)://``, ``pipe:`` commands for cloud storage).
* Training reads shards resampled with replacement (an endless stream, cut into
  ``samples_per_epoch``) through a shuffle buffer; validation reads each shard once,
  in order. Shards are split by node (torchrun rank) and by DataLoader worker first,
  so every process sees disjoint shards.
* Each sample is decoded with soundfile, downmixed to mono, resampled to 44.1 kHz when
  needed (``ratecontrol.windows.to_model_rate``: the library's own resampler) and
  padded/cropped to 1 s. A sample
  that fails is skipped, logged with its key and reason, and counted: every batch
  carries the number of samples its worker skipped since the last batch, and the
  trainer logs the per-epoch total.
* ``BatchAugment`` runs on the training device: one random circular shift and one
  gain per pair, applied to both signals; optional time reversal (off by default: it
  turns pre-echo into post-echo, which masks differently). Its random stream is
  seeded by (seed, epoch), so an epoch replays exactly.
"""
from __future__ import annotations

import glob
import io
import itertools
import json
import logging
import math
import os
import random
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset

from ratecontrol.errors import DatasetError
from ratecontrol.windows import to_model_rate

__all__ = [
    "SAMPLE_RATE_HZ",
    "WINDOW_SAMPLES",
    "resolve_shards",
    "read_manifest",
    "split_shards",
    "decode_pair",
    "PairDataset",
    "make_loader",
    "BatchAugment",
]

log = logging.getLogger("trainer.data")

from ratecontrol.contract import MODEL_SAMPLE_RATE_HZ as SAMPLE_RATE_HZ  # noqa: E402
from ratecontrol.contract import WINDOW_SAMPLES  # noqa: E402
# the public dataset stores score in 0..1; MOS = 4 * score + 1 (dataset card)
from ratecontrol.contract import score_to_mos  # noqa: E402


# --------------------------------------------------------------------------- shard lists
def _expand_one(spec: str) -> list[str]:
    if "://" not in spec and not spec.startswith("pipe:"):
        if os.path.isdir(spec):
            found = sorted(glob.glob(os.path.join(spec, "*.tar")))
            if not found:
                raise DatasetError(f"no .tar shards in folder {spec}; point --data at shard files or a brace pattern")
            return found
        path, _, split = spec.partition("#")
        if path.endswith(".json") and os.path.isfile(path):
            splits = read_manifest(path)
            if split:
                if split not in splits:
                    raise DatasetError(f"manifest {path} has no split {split!r}; it has {sorted(splits)}")
                return splits[split]
            return [u for urls in splits.values() for u in urls]
    urls = list(wds.shardlists.expand_urls(spec))
    return urls


def resolve_shards(spec: str | Sequence[str] | None) -> list[str]:
    """Shard URLs from a brace pattern, a folder, a manifest .json (``manifest.json#val``
    for one split), or a list of those.

    Local files must exist (DatasetError names the first missing one); remote URLs are
    passed through for webdataset to open."""
    if spec is None:
        return []
    specs = [spec] if isinstance(spec, str) else list(spec)
    urls: list[str] = []
    for s in specs:
        for part in str(s).split("::"):
            if part.strip():
                urls.extend(_expand_one(part.strip()))
    for u in urls:
        local = "://" not in u and not u.startswith("pipe:")
        if local and not os.path.isfile(u):
            raise DatasetError(f"shard {u} not found; check the --data pattern (brace ranges like shard-{{000000..000071}}.tar)")
    return urls


def read_manifest(path: str) -> dict[str, list[str]]:
    """Split name -> shard URLs from a manifest .json.

    Accepted layouts: ``trainer build-dataset``'s ``{"shards": [{"name": ...,
    "split": "train"|"val", "pairs": n}, ...]}``; ``{"splits": {"train": [...], "val":
    [...]}}``; ``{"train": [...], ...}``, with split entries that are lists of names or of
    ``{"shard"/"path"/"url": ...}`` dicts, or a dict with a "shards" list. Relative paths
    are relative to the manifest's folder. ``validation``/``valid``/``dev`` read as ``val``."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError as exc:
        raise DatasetError(f"manifest {path} not found") from exc
    except (OSError, ValueError) as exc:
        raise DatasetError(f"manifest {path} is not readable JSON ({exc}); rebuild it with `python -m trainer build-dataset`") from exc
    if isinstance(data, dict) and isinstance(data.get("shards"), list) and "splits" not in data:
        grouped: dict[str, list] = {}
        for sh in data["shards"]:
            if not isinstance(sh, dict) or "split" not in sh:
                raise DatasetError(f"manifest {path}: shard entry without a split: {sh!r}")
            grouped.setdefault(sh["split"], []).append(sh)
        data = {"splits": grouped}
    splits = data.get("splits", data) if isinstance(data, dict) else None
    if not isinstance(splits, dict):
        raise DatasetError(f"manifest {path} has no splits (expected {{'splits': {{'train': [...], 'val': [...]}}}})")
    base = os.path.dirname(os.path.abspath(path))
    alias = {"validation": "val", "valid": "val", "dev": "val"}
    out: dict[str, list[str]] = {}
    for name, entries in splits.items():
        if isinstance(entries, dict):
            entries = entries.get("shards", entries.get("files"))
        if not isinstance(entries, list):
            continue
        urls = []
        for e in entries:
            u = e if isinstance(e, str) else next((e[k] for k in ("shard", "path", "url", "file", "name") if isinstance(e, dict) and k in e), None)
            if u is None:
                raise DatasetError(f"manifest {path}: split {name!r} has an entry without shard/path/url: {e!r}")
            if "://" not in u and not u.startswith("pipe:") and not os.path.isabs(u):
                u = os.path.join(base, u)
            urls.append(u)
        out[alias.get(name, name)] = urls
    if not out:
        raise DatasetError(f"manifest {path} lists no shards in any split")
    return out


def split_shards(urls: Sequence[str], val_shards: int | None = None, val_fraction: float = 0.1) -> tuple[list[str], list[str]]:
    """Hold out the LAST shards for validation (``val_shards`` of them, or a fraction,
    at least one). Builders write shards source by source, so the last shards hold
    other sources than the first ones as far as the builder kept sources together."""
    urls = list(urls)
    if len(urls) < 2:
        raise DatasetError(f"need at least 2 shards to split train/validation, got {len(urls)}; pass --val-data")
    n_val = val_shards if val_shards is not None else max(1, int(round(len(urls) * val_fraction)))
    n_val = min(max(1, n_val), len(urls) - 1)
    return urls[:-n_val], urls[-n_val:]


# --------------------------------------------------------------------------- decoding
def _read_wav(data: bytes) -> np.ndarray:
    import soundfile as sf

    audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    if audio.shape[0] == 0:
        raise ValueError("empty audio")
    mono = audio.mean(axis=1)  # downmix
    if rate != SAMPLE_RATE_HZ:
        mono = to_model_rate(mono, rate)
    if len(mono) >= WINDOW_SAMPLES:
        return np.ascontiguousarray(mono[:WINDOW_SAMPLES])
    return np.pad(mono, (0, WINDOW_SAMPLES - len(mono)))


def decode_pair(sample: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, float]:
    """(ref float32 [44100], deg float32 [44100], MOS) of one raw webdataset sample."""
    missing = [k for k in ("original.wav", "degraded.wav", "score.txt") if k not in sample]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    score = float(sample["score.txt"].decode("utf-8").strip())
    if not (0.0 <= score <= 1.0) or not math.isfinite(score):
        raise ValueError(f"score {score} outside 0..1")
    ref = _read_wav(sample["original.wav"])
    deg = _read_wav(sample["degraded.wav"])
    return ref, deg, score_to_mos(score)


# --------------------------------------------------------------------------- dataset
class PairDataset(IterableDataset):
    """Batches {"ref": [B, 44100], "deg": [B, 44100], "mos": [B], "keys": [...],
    "skipped": int} from shards. Set ``.epoch`` before each epoch (workers get a fresh
    copy per epoch) so training shard draws and shuffling replay per (seed, epoch)."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        train: bool,
        batch_size: int,
        seed: int = 0,
        shuffle_buffer: int = 2000,
        samples_per_epoch: int | None = None,
    ):
        super().__init__()
        if not urls:
            raise DatasetError("no shards given")
        self.urls = list(urls)
        self.train = train
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.samples_per_epoch = samples_per_epoch
        self.epoch = 0

    def _consumer(self) -> tuple[int, int, int, int]:
        return wds.utils.pytorch_worker_info()

    def _my_shards(self) -> list[str]:
        rank, world, worker, n_workers = self._consumer()
        mine = list(wds.split_by_worker(wds.split_by_node(iter(self.urls))))
        if not mine:
            if not self.train:
                return []
            # fewer shards than consumers: disjointness is impossible; resample all of
            # them with this consumer's own seed instead (documented in docs/model.md)
            log.warning("%d shards for %d ranks x %d workers: shards are shared", len(self.urls), world, n_workers)
            mine = list(self.urls)
        return mine

    #: this many failures in a row (no good sample between) means the data is unusable
    MAX_CONSECUTIVE_FAILURES = 500

    def _failed(self, counter: list[int], streak: list[int], what: str) -> None:
        counter[0] += 1
        streak[0] += 1
        log.warning("skipped %s", what)
        if streak[0] >= self.MAX_CONSECUTIVE_FAILURES:
            raise DatasetError(
                f"{streak[0]} unreadable samples/shards in a row (last: {what}); check the shards with `python -m trainer verify`")

    def _skip_handler(self, counter: list[int], streak: list[int]):
        def handler(exn: Exception) -> bool:
            self._failed(counter, streak, f"unreadable shard data: {exn}")
            return True

        return handler

    def _samples(self, counter: list[int]) -> Iterator[tuple[str, np.ndarray, np.ndarray, float]]:
        rank, world, worker, n_workers = self._consumer()
        shards = self._my_shards()
        if self.train:
            rng = random.Random(wds.utils.make_seed(self.seed, self.epoch, rank, worker))
            def source() -> Iterator[dict]:
                while True:
                    yield {"url": rng.choice(shards)}
        else:
            def source() -> Iterator[dict]:
                yield from ({"url": u} for u in shards)
        streak = [0]
        stages: list[Any] = [source, wds.tarfile_to_samples(handler=self._skip_handler(counter, streak))]
        if self.train and self.shuffle_buffer > 1:
            srng = random.Random(wds.utils.make_seed(self.seed, self.epoch, rank, worker, "shuffle"))
            stages.append(wds.shuffle(self.shuffle_buffer, initial=min(self.shuffle_buffer, 500), rng=srng))
        for sample in wds.DataPipeline(*stages):
            key = sample.get("__key__", "?")
            try:
                ref, deg, mos = decode_pair(sample)
            except Exception as exc:  # any decode failure: skip, count, say which
                self._failed(counter, streak, f"sample {key} from {sample.get('__url__', '?')}: {exc}")
                continue
            streak[0] = 0
            yield key, ref, deg, mos

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, world, worker, n_workers = self._consumer()
        counter = [0]
        samples = self._samples(counter)
        if self.train:
            per_consumer = math.ceil((self.samples_per_epoch or 10_000) / (world * n_workers))
            n_batches = max(1, math.ceil(per_consumer / self.batch_size))
        else:
            n_batches = None
        done = 0
        while n_batches is None or done < n_batches:
            chunk = list(itertools.islice(samples, self.batch_size))
            if not chunk:
                break
            if self.train and len(chunk) < self.batch_size:
                break
            reported, counter[0] = counter[0], 0
            yield {
                "keys": [c[0] for c in chunk],
                "ref": torch.from_numpy(np.stack([c[1] for c in chunk])),
                "deg": torch.from_numpy(np.stack([c[2] for c in chunk])),
                "mos": torch.tensor([c[3] for c in chunk], dtype=torch.float32),
                "skipped": reported,
            }
            done += 1
        if counter[0] and not self.train:
            yield {"keys": [], "ref": torch.zeros(0, WINDOW_SAMPLES), "deg": torch.zeros(0, WINDOW_SAMPLES),
                   "mos": torch.zeros(0), "skipped": counter[0]}


def make_loader(dataset: PairDataset, num_workers: int = 2, device: str | torch.device = "cpu") -> torch.utils.data.DataLoader:
    """A WebLoader over already-batched samples; pinned memory when training on CUDA."""
    pin = torch.device(device).type == "cuda"
    return wds.WebLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin,
        persistent_workers=False,  # a fresh worker copy per epoch carries the new .epoch
        prefetch_factor=4 if num_workers > 0 else None,
    )


# --------------------------------------------------------------------------- augmentation
@dataclass(frozen=True)
class BatchAugment:
    """Pair-preserving augmentation on the device; off unless configured.

    ``shift``: one uniform circular shift per pair (both signals). ``gain_db``: (lo, hi)
    uniform gain per pair, both signals. ``reverse_p``: probability of reversing both
    (default 0). The stream is seeded by (seed, epoch): call ``for_epoch`` each epoch."""

    shift: bool = False
    gain_db: tuple[float, float] = (0.0, 0.0)
    reverse_p: float = 0.0

    @property
    def active(self) -> bool:
        return self.shift or self.gain_db != (0.0, 0.0) or self.reverse_p > 0

    def generator(self, seed: int, epoch: int, device: torch.device) -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed(wds.utils.make_seed(seed, epoch, "augment"))
        return g

    def __call__(self, ref: torch.Tensor, deg: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        b, n = ref.shape
        dev = ref.device
        if self.shift:
            shift = torch.randint(0, n, (b, 1), generator=gen, device=dev)
            idx = (torch.arange(n, device=dev)[None, :] + shift) % n
            ref, deg = ref.gather(1, idx), deg.gather(1, idx)
        lo, hi = self.gain_db
        if lo != 0.0 or hi != 0.0:
            g_db = lo + (hi - lo) * torch.rand((b, 1), generator=gen, device=dev)
            g = torch.pow(10.0, g_db / 20.0)
            ref, deg = ref * g, deg * g
        if self.reverse_p > 0:
            flip = torch.rand((b, 1), generator=gen, device=dev) < self.reverse_p
            ref = torch.where(flip, ref.flip(1), ref)
            deg = torch.where(flip, deg.flip(1), deg)
        return ref, deg
