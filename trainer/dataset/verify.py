"""Checking a shard set (:func:`verify`), and where an unfinished build stands
(:func:`build_status`)."""
from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ratecontrol.contract import mos_to_score, score_to_mos
from ratecontrol.errors import DatasetError
from trainer.dataset.config import CLIP_SAMPLES, SAMPLE_RATE_HZ, SCORE_BIN_WIDTH
from trainer.dataset.pool import bin_edges, read_rounds, score_bin

__all__ = ["VerifyReport", "verify", "build_status", "format_histogram"]


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    problems: tuple
    pairs_by_split: dict
    histogram: dict  # split -> {bin lower edge: count}
    sources_by_split: dict


def verify(out: Path, max_problems: int = 20) -> VerifyReport:
    """Check a shard set: every shard of the manifest present and readable, 4 members per
    key, WAVs 1 s mono 44.1 kHz 16-bit, score = (MOS-1)/4 and in range, counts match the
    manifest, per-split histogram, and no source id in two splits."""
    import soundfile as sf

    out = Path(out)
    mpath = out / "manifest.json"
    if not mpath.exists():
        raise DatasetError(f"{mpath} not found: not a shard set (build it with build-dataset)")
    man = json.loads(mpath.read_text())
    edges = bin_edges(tuple(man["score_range"]), man.get("bin_width", SCORE_BIN_WIDTH))
    problems: list[str] = []
    pairs = Counter()
    hist = {sp: Counter() for sp in ("train", "val")}
    src_split: dict[str, set] = {}

    def problem(msg):
        if len(problems) < max_problems:
            problems.append(msg)

    for sh in man["shards"]:
        path = out / sh["name"]
        if not path.exists():
            problem(f"{sh['name']}: missing")
            continue
        members: dict[str, dict] = {}
        try:
            with tarfile.open(path) as tar:
                for m in tar:
                    key, _, ext = m.name.partition(".")
                    members.setdefault(key, {})[ext] = tar.extractfile(m).read()
        except (tarfile.TarError, OSError) as exc:
            problem(f"{sh['name']}: unreadable tar ({exc})")
            continue
        if len(members) != sh["pairs"]:
            problem(f"{sh['name']}: {len(members)} pairs, manifest says {sh['pairs']}")
        for key, mm in members.items():
            need = {"original.wav", "degraded.wav", "score.txt", "json"}
            if set(mm) != need:
                problem(f"{sh['name']}:{key}: members {sorted(mm)}, expected {sorted(need)}")
                continue
            for ext in ("original.wav", "degraded.wav"):
                info = sf.info(io.BytesIO(mm[ext]))
                if (info.samplerate, info.channels, info.frames, info.subtype) != \
                        (SAMPLE_RATE_HZ, 1, CLIP_SAMPLES, "PCM_16"):
                    problem(f"{sh['name']}:{key}.{ext}: {info.samplerate} Hz, {info.channels} ch, "
                            f"{info.frames} frames, {info.subtype}; expected 44100 Hz mono 44100 PCM_16")
            score = float(mm["score.txt"])
            prov = json.loads(mm["json"])
            if abs(score_to_mos(score) - prov["visqol_mos"]) > 1e-4:
                problem(f"{sh['name']}:{key}: score {score} != (MOS-1)/4 of {prov['visqol_mos']}")
            b = score_bin(score, edges)
            if not 0 <= b < len(edges) - 1:
                problem(f"{sh['name']}:{key}: score {score} outside {man['score_range']}")
            if prov["split"] != sh["split"]:
                problem(f"{sh['name']}:{key}: json split {prov['split']} != shard split")
            hist[sh["split"]][f"{edges[max(0, min(b, len(edges) - 2))]:.2f}"] += 1
            pairs[sh["split"]] += 1
            src_split.setdefault(prov["source_id"], set()).add(sh["split"])
    both = sorted(s for s, v in src_split.items() if len(v) > 1)
    if both:
        problem(f"{len(both)} sources are in both splits, e.g. {both[0]}")
    for sp, h in man.get("histogram", {}).items():
        if {k: v for k, v in h.items() if v} != dict(hist[sp]):
            problem(f"{sp}: histogram differs from manifest.json")
    histogram = {sp: {f"{e:.2f}": hist[sp].get(f"{e:.2f}", 0) for e in edges[:-1]}
                 for sp in ("train", "val")}
    by_split = {sp: sorted(s for s, v in src_split.items() if sp in v) for sp in ("train", "val")}
    return VerifyReport(ok=not problems, problems=tuple(problems), pairs_by_split=dict(pairs),
                        histogram=histogram, sources_by_split=by_split)


def build_status(out: Path) -> dict:
    """Where an unfinished build stands, from its checkpoints (read-only): pool pairs,
    labelled pairs per split and score bin against the per-bin target, worker time."""
    out = Path(out)
    cfg_path = out / "work" / "config.json"
    if not cfg_path.exists():
        raise DatasetError(f"{out} has neither manifest.json nor work/config.json: "
                           "not a shard set (build it with build-dataset)")
    cfg = json.loads(cfg_path.read_text())
    edges = bin_edges(tuple(cfg["score_range"]), cfg["bin_width"])
    nb = len(edges) - 1
    n_val = int(round(cfg["pairs"] * cfg["val_fraction"]))
    target = {"train": (cfg["pairs"] - n_val) // nb, "val": n_val // nb}
    counts = {sp: np.zeros(nb, int) for sp in ("train", "val")}
    outside = Counter()
    t = np.zeros(3)
    wall, pool, rounds = 0.0, 0, 0
    for r, rm in read_rounds(out / "work" / "pool"):
        rounds = r + 1
        wall += rm.get("wall_s", 0.0)
        for job in rm["jobs"]:
            t += [job["time_s"][k] for k in ("decode", "degrade", "label")]
            for m in job["mos"]:
                b = score_bin(mos_to_score(m), edges)
                pool += 1
                if 0 <= b < nb:
                    counts[job["split"]][b] += 1
                else:
                    outside["below" if b < 0 else "above"] += 1
    filled = int(sum(np.minimum(counts[sp], target[sp]).sum() for sp in counts))
    return {"rounds": rounds, "pool_pairs": pool, "filled": filled,
            "needed": int(sum(target[sp] * nb for sp in target)), "target_per_bin": target,
            "pool_wall_s": wall, "outside_range": dict(outside),
            "worker_time_s": dict(zip(("decode", "degrade", "label"), t.round(1).tolist())),
            "histogram": {sp: {f"{edges[b]:.2f}": int(counts[sp][b]) for b in range(nb)}
                          for sp in counts},
            "shards_written": len(list(out.glob("shard-*.tar")))}


def format_histogram(histogram: dict, width: int = 40) -> str:
    lines = []
    peak = max([v for h in histogram.values() for v in h.values()] + [1])
    for sp, h in histogram.items():
        lines.append(f"{sp}:")
        for edge, v in h.items():
            lines.append(f"  {edge}-{float(edge) + SCORE_BIN_WIDTH:.2f} {v:7d} "
                         + "#" * int(round(width * v / peak)))
    return "\n".join(lines)
