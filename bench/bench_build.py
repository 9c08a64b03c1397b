"""Dataset-builder throughput on this machine: pairs/s and where the time goes.

    python bench/bench_build.py [--corpus /work/data/corpus] [--files 16] [--pairs 300] [-j 2]

Builds a small balanced set from ``--files`` sources of a build-corpus folder (symlinked
into a temp folder; synthesized noise/chirps if the corpus is absent) and prints:
- pairs/s overall (wall clock, incl. ViSQOL's one-off JIT of ~18 s per worker) and in
  steady state (rounds after the first);
- the fraction of worker time spent decoding the segment, degrading it (ffmpeg encode +
  decode, or the low-pass), and labelling (resampling to 48 kHz + ViSQOL);
- the pool size needed per kept pair (how much balancing costs).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import dataset as B  # noqa: E402


def _sources(corpus: Path, n: int, tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    man = corpus / "manifest.jsonl"
    if man.exists():
        rows = [json.loads(line) for line in man.read_text().splitlines() if line.strip()]
        rng = np.random.default_rng(0)
        by_kind: dict[str, list] = {}
        for r in rows:
            by_kind.setdefault(r["kind"], []).append(r)
        picked = []
        for kind, rs in sorted(by_kind.items()):  # some of every kind, most music
            k = max(1, round(n * len(rs) / len(rows)))
            picked += [rs[i] for i in rng.choice(len(rs), size=min(k, len(rs)), replace=False)]
        for i, r in enumerate(picked[:n]):
            p = corpus / r["path"]
            (src / f"{i:03d}_{p.name}").symlink_to(p)
        print(f"sources: {len(picked[:n])} files from {man}")
    else:
        import soundfile as sf

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from conftest import Synth

        s = Synth(0)
        for i in range(n):
            x = s.transients(44100, 2, 30.0) + s.noise(44100, 2, 30.0, 0.05)
            sf.write(str(src / f"synth{i:02d}.flac"), np.clip(x, -1, 1).T, 44100)
        print(f"sources: {n} synthesized 30-s files ({man} not found)")
    return src


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("/work/data/corpus"))
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--max-pool-factor", type=float, default=5.0,
                    help="a few sources fill the extreme bins slowly; stop at this x --pairs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        src = _sources(args.corpus, args.files, tmp)
        out = tmp / "out"
        t0 = time.perf_counter()
        res = B.build_dataset([src], out, pairs=args.pairs, seed=0, n_jobs=args.jobs,
                              pairs_per_shard=1000, progress=False,
                              max_pool_factor=args.max_pool_factor)
        wall = time.perf_counter() - t0
        rounds = [json.loads(p.read_text()) for p in sorted((out / "work/pool").glob("*.json"))]
        pool = sum(len(j["mos"]) for r in rounds for j in r["jobs"])
        steady = rounds[1:]
        st_pairs = sum(len(j["mos"]) for r in steady for j in r["jobs"])
        st_wall = sum(r["wall_s"] for r in steady)
        t = np.array([[j["time_s"][k] for k in ("decode", "degrade", "label")]
                      for r in rounds for j in r["jobs"]]).sum(axis=0)
        kept = sum(res.pairs_by_split.values())
        print(f"jobs: {args.jobs}; kept {kept} pairs ({res.pairs_by_split}), pool {pool} "
              f"({pool / max(kept, 1):.2f} labelled per kept pair)")
        print(f"wall: {wall:.0f} s for everything -> {pool / wall:.2f} labelled pairs/s, "
              f"{kept / wall:.2f} kept pairs/s")
        if st_wall > 0:
            print(f"steady state (rounds 2+): {st_pairs} pairs in {st_wall:.0f} s -> "
                  f"{st_pairs / st_wall:.2f} labelled pairs/s")
        print("worker time: " + ", ".join(f"{k} {v / t.sum():.0%} ({v / max(pool, 1) * 1000:.0f} ms/pair)"
                                          for k, v in zip(("decode", "degrade", "label"), t)))
        man = json.loads((out / "manifest.json").read_text())
        print("pool histogram (labelled, before balancing):")
        print(B.format_histogram(man["pool_histogram"]))
        if man["starved"]:
            print(f"starved bins: {man['starved']}")
        print("kept:")
        print(B.format_histogram(res.histogram))


if __name__ == "__main__":
    main()
