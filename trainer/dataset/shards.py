"""The output folder: webdataset shards whose pairs are KEY.original.wav, KEY.degraded.wav
(1 s, mono, 44.1 kHz, 16-bit PCM), KEY.score.txt ((MOS - 1) / 4, 6 decimals) and KEY.json
(provenance), and the manifest that describes them. Members carry mtime 0, so the same
seed gives byte-identical shards."""
from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path
from typing import Iterable

import numpy as np

from ratecontrol import fsutil
from ratecontrol.contract import mos_to_score
from trainer.dataset.config import SAMPLE_RATE_HZ, BuildConfig
from trainer.dataset.pool import BinTargets, PoolState, round_paths, score_bin
from trainer.dataset.selection import pair_meta
from trainer.dataset.sources import Plan, Source

__all__ = ["wav_bytes", "write_shard", "shard_pairs", "write_shards", "manifest"]

log = logging.getLogger(__name__)


def wav_bytes(x: np.ndarray) -> bytes:
    """A 16-bit mono WAV file of int16 samples ``x``."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(x, np.int16), SAMPLE_RATE_HZ, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # byte-identical shards for the same seed
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: Path, pairs: Iterable[tuple[str, np.ndarray, np.ndarray, float, dict]]) -> None:
    """Write the shard ``path`` atomically from (key, ref int16, deg int16, MOS, provenance)
    per pair."""
    with fsutil.atomic_output(path) as tmp:
        with tarfile.open(tmp, "w") as tar:
            for key, ref, deg, mos, prov in pairs:
                _tar_add(tar, f"{key}.original.wav", wav_bytes(ref))
                _tar_add(tar, f"{key}.degraded.wav", wav_bytes(deg))
                _tar_add(tar, f"{key}.score.txt", f"{mos_to_score(mos):.6f}".encode())
                _tar_add(tar, f"{key}.json", json.dumps(prov, sort_keys=True).encode())


def shard_pairs(chunk, split: str, by_round: dict, arrays: dict, cfg: BuildConfig, sources: list[Source]):
    """(key, ref, deg, MOS, provenance) of the selected pool pairs ``chunk``; ``arrays``
    keeps each round's audio open (memory-mapped) across calls."""
    pool_dir = cfg.out / "work" / "pool"
    setting_by_name = {s.name: s for s in cfg.settings}
    for r, p in chunk:
        if r not in arrays:
            arrays[r] = np.load(round_paths(pool_dir, r)[0], mmap_mode="r")
        job, j = pair_meta(by_round, r, p, cfg.out)
        ref, deg = np.asarray(arrays[r][p])
        mos = job["mos"][j]
        src = sources[job["source"]]
        setting = setting_by_name[job["setting"]]
        key = f"r{r:06d}p{p:04d}"
        prov = {"key": key, "split": split, "source_id": src.id, "source_kind": src.kind,
                "source_package": src.package, "licence": src.licence,
                "offset_s": round(job["start_s"] + job["offsets_s"][j], 4),
                "channel": job["channel"], "codec": setting.family,
                "setting": setting.name, "preset": setting.preset,
                "options": dict(setting.options), "lowpass_hz": setting.lowpass_hz,
                "bitrate_kbps": job["bitrate_kbps"], "visqol_mos": mos,
                "gain_db": job.get("gain_db", 0.0),
                "score": mos_to_score(mos), "seed": cfg.seed}
        yield key, ref, deg, mos, prov


def write_shards(out: Path, metas: list[dict], selection: dict, cfg: BuildConfig,
                 sources: list[Source]) -> list[dict]:
    """Write the selected pairs into ``out`` (train shards first, ``pairs_per_shard``
    each; a shard already there is kept); returns the manifest's shard list."""
    by_round = {rm["round"]: rm for rm in metas}
    arrays = {}
    shards, n = [], 0
    per = cfg.pairs_per_shard
    for sp in ("train", "val"):
        items = selection["pairs"][sp]
        for start in range(0, len(items), per):
            chunk = items[start:start + per]
            name = f"shard-{n:06d}.tar"
            shards.append({"name": name, "split": sp, "pairs": len(chunk)})
            n += 1
            path = out / name
            if path.exists():
                continue
            write_shard(path, shard_pairs(chunk, sp, by_round, arrays, cfg, sources))
            log.info("wrote %s (%s, %d pairs)", name, sp, len(chunk))
    return shards


def manifest(shards: list[dict], selection: dict, state: PoolState, metas: list[dict], cfg: BuildConfig,
             sources: list[Source], plan: Plan, bins: BinTargets) -> dict:
    """``manifest.json``: the shards, the histograms of the set and of the pool, the
    sources and hours of each split, worker time and the settings."""
    edges = bins.edges
    nb = bins.n_bins
    by_round = {rm["round"]: rm for rm in metas}
    hist = {}
    for sp in ("train", "val"):
        h = np.zeros(nb, int)
        for r, p in selection["pairs"][sp]:
            job, j = pair_meta(by_round, r, p, cfg.out)
            h[score_bin(mos_to_score(job["mos"][j]), edges)] += 1
        hist[sp] = {f"{edges[b]:.2f}": int(h[b]) for b in range(nb)}
    pool_hist = {sp: {f"{edges[b]:.2f}": int(c[b]) for b in range(nb)}
                 for sp, c in state.counts.items()}
    times = np.array([[j["time_s"]["decode"], j["time_s"]["degrade"], j["time_s"]["label"]]
                      for rm in metas for j in rm["jobs"]]).sum(axis=0) if metas else np.zeros(3)
    srcs = {sp: sorted(sources[i].id for i in range(len(sources))
                       if plan.splits[i] == sp) for sp in ("train", "val")}
    hours = {sp: round(sum(plan.durations[i] for i in range(len(sources))
                           if plan.splits[i] == sp) / 3600, 3) for sp in ("train", "val")}
    c = cfg
    return {"format": "ratecontrol-pairs-v1", "seed": c.seed, "pairs": c.pairs,
            "score": "(visqol_mos - 1) / 4", "score_range": list(c.score_range),
            "bin_width": c.bin_width, "per_bin": selection["per_bin"],
            "starved": selection["starved"], "histogram": hist, "pool_histogram": pool_hist,
            "pool_pairs": state.pairs,
            "job_time_s": dict(zip(("decode", "degrade", "label"), map(float, times))),
            "shards": shards, "source_hours": hours, "sources": srcs,
            "settings": [s.name for s in c.settings]}
