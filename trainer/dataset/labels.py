"""The label cache: ViSQOL labels of clip pairs already labelled, by content key."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ratecontrol import fsutil
from ratecontrol.errors import DatasetError
from trainer.dataset.pool import read_rounds, round_paths

__all__ = ["pair_key", "installed_visqol_version", "LabelCache", "export_labels"]


def pair_key(ref: np.ndarray, deg: np.ndarray) -> str:
    """Content key of one 16-bit clip pair: ViSQOL's label is a function of exactly these
    samples, so a label stored under this key is the label (see :class:`LabelCache`)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(np.ascontiguousarray(ref, "<i2").tobytes())
    h.update(np.ascontiguousarray(deg, "<i2").tobytes())
    return h.hexdigest()


def installed_visqol_version() -> str:
    """The installed visqol-python's version: labels of another version are not ours."""
    from importlib.metadata import version

    return version("visqol-python")


class LabelCache:
    """ViSQOL labels of clip pairs already labelled, keyed by :func:`pair_key`.

    Labelling is ~2/3 of a build's time (docs/data.md), and a build only lasts as long as
    the machine's disk; the labels of a pool are a few MB, small enough to commit, so a
    build on a fresh machine replays its rounds (decode + encode only) and labels only
    what is new. A cached label is used only for a byte-identical 16-bit pair and only
    when it was made by the same visqol-python version; anything else is labelled afresh
    by the one labelling path. File: ``.npz`` with ``keys`` (uint64), ``mos`` (float64),
    ``visqol_version`` and ``format``.
    """

    FORMAT = 1

    def __init__(self, labels: dict | None = None, visqol_version: str | None = None):
        self.labels = dict(labels or {})
        self.visqol_version = visqol_version or installed_visqol_version()

    @classmethod
    def load(cls, path: Path) -> "LabelCache":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                fmt = int(z["format"])
                ver = str(z["visqol_version"])
                keys, mos = z["keys"], z["mos"]
        except (OSError, KeyError, ValueError) as exc:
            raise DatasetError(f"label cache {path} is unreadable ({exc}); delete it or "
                               "rebuild it with `python -m trainer export-labels`") from exc
        if fmt != cls.FORMAT:
            raise DatasetError(f"label cache {path} has format {fmt}, this trainer reads "
                               f"{cls.FORMAT}; rebuild it with `python -m trainer export-labels`")
        return cls({f"{int(k):016x}": float(m) for k, m in zip(keys, mos)}, ver)

    def usable(self) -> bool:
        """Labels from another visqol-python version are not this build's labels."""
        return self.visqol_version == installed_visqol_version()

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self.labels)
        with fsutil.atomic_output(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, keys=np.array([int(k, 16) for k in keys], np.uint64),
                                mos=np.array([self.labels[k] for k in keys], np.float64),
                                visqol_version=np.array(self.visqol_version),
                                format=np.array(self.FORMAT))

    def __len__(self) -> int:
        return len(self.labels)


def export_labels(outs: list[Path], dest: Path) -> LabelCache:
    """Merge the labels of the pools of build folders ``outs`` into the LabelCache file
    ``dest`` (created, or extended if it exists). Pool rounds written before keys were
    recorded are keyed from their audio."""
    dest = Path(dest)
    cache = LabelCache.load(dest) if dest.exists() else LabelCache()
    if not cache.usable():
        raise DatasetError(f"{dest} holds labels of visqol-python {cache.visqol_version}, "
                           f"this is {installed_visqol_version()}; write to a new file")
    for out in outs:
        pool = Path(out) / "work" / "pool"
        if not pool.is_dir():
            raise DatasetError(f"{out} has no labelled pool (no work/pool); give a "
                               "build-dataset output folder")
        for r, rm in read_rounds(pool):
            audio = None
            for job in rm["jobs"]:
                keys = job.get("keys")
                if keys is None:
                    if audio is None:
                        audio = np.load(round_paths(pool, r)[0])
                    keys = [pair_key(audio[job["first"] + j, 0], audio[job["first"] + j, 1])
                            for j in range(len(job["mos"]))]
                cache.labels.update(zip(keys, job["mos"]))
    cache.save(dest)
    return cache
