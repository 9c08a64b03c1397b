"""Batch throughput: files per minute for -j 1 and -j 2, and the Dask path's overhead.

    python bench/bench_batch.py [--files 8] [--seconds 3] [--target-mos 4.0] [--codec opus]

Builds one tree of short clips (sms-tools recordings from ../shared/audio trimmed to
--seconds, mono and a stereo pair each; synthetic signals when the folder is absent) in
a temp folder, then transcodes it four times into fresh output folders, all in this one
process so the ratios compare runs under the same machine load:

1. local, -j 1 (joblib runs the files one by one in this process)
2. local, -j 2 (two loky worker processes)
3. dask: a LocalCluster of 2 single-threaded worker processes, started before the timer
   (its start-up time is printed separately), joblib's dask backend
4. local, -j 2 again, to see how much the machine's load moved during the run

All runs use the exact ViSQOL scorer and no probe cache. Every worker process pays its own imports (torch,
numba-compiled ViSQOL from the on-disk cache) once; that is part of the figures, as it
is for a user's run. Prints one JSON object at the end (--json FILE writes it too).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "audio" / "sms-tools"
CLIPS = ["speech-female.wav", "piano.wav", "oboe-A4.wav", "tedeum.wav", "vibraphone-C6.wav",
         "carnatic.wav", "bendir.wav", "trumpet-A4.wav", "speech-male.wav", "orchestra.wav"]


def build_tree(root: Path, n_files: int, seconds: float) -> None:
    rng = np.random.default_rng(0)
    for i in range(n_files):
        sub = root / f"disc{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        name = CLIPS[i % len(CLIPS)]
        if (SHARED / name).is_file():
            x, sr = sf.read(SHARED / name, dtype="float32")
            x = x[: int(seconds * sr)]
        else:  # synthetic fallback: a chord with a little noise
            sr = 44100
            t = np.arange(int(seconds * sr)) / sr
            x = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (220, 277, 330)) + 0.01 * rng.standard_normal(t.size)
        if i % 2:  # every other file stereo (the right channel delayed by 3 ms)
            x = np.stack([x, np.roll(x, int(0.003 * sr))], axis=1)
        sf.write(sub / f"{i:02d}-{Path(name).stem}.flac", x, sr, subtype="PCM_16")


def run(src: Path, out: Path, label: str, **kw) -> dict:
    from joblib.externals.loky import get_reusable_executor

    from ratecontrol.batch import transcode_folder

    # cold workers for every run (loky keeps idle workers for 300 s otherwise), as the
    # Dask workers are: each run pays its worker processes' imports once
    get_reusable_executor().shutdown(wait=True)
    t0 = time.perf_counter()
    rep = transcode_folder(src, out, resume=False, progress=False, **kw)
    wall = time.perf_counter() - t0
    assert rep.ok and rep.n_encoded == rep.n_files, [r.reason for r in rep.records if not r.ok]
    row = {"run": label, "files": rep.n_files, "seconds": round(wall, 2),
           "files_per_min": round(60 * rep.n_files / wall, 2), "mean_kbps": round(rep.mean_kbps, 1),
           "mean_mos": round(rep.mean_mos, 3), "rungs": [r.rung_label for r in rep.records]}
    print(f"{label:<22} {wall:7.1f} s  {row['files_per_min']:6.2f} files/min  (load avg {os.getloadavg()[0]:.1f})",
          flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--target-mos", type=float, default=4.0)
    ap.add_argument("--codec", default="opus")
    ap.add_argument("--json", default=None, help="also write the result object here")
    args = ap.parse_args()

    from distributed import Client, LocalCluster

    # no probe cache: every run scores for itself (a warm cache would make reruns free)
    kw = dict(target_mos=args.target_mos, codec=args.codec, scorer="visqol", cache=False)
    tmp = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    try:
        src = tmp / "in"
        build_tree(src, args.files, args.seconds)
        print(f"tree: {args.files} files x {args.seconds:g} s, target {args.target_mos:g}, {args.codec}, "
              f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}", flush=True)
        rows = [run(src, tmp / "j1", "local -j 1", jobs=1, **kw),
                run(src, tmp / "j2", "local -j 2", jobs=2, **kw)]
        t0 = time.perf_counter()
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            cluster_s = time.perf_counter() - t0
            rows.append(run(src, tmp / "dask", "dask 2 workers", backend="dask", scheduler=client, **kw))
        rows.append(run(src, tmp / "j2b", "local -j 2 (again)", jobs=2, **kw))
        j1, j2, dk, j2b = (r["seconds"] for r in rows)
        same = all(r["rungs"] == rows[0]["rungs"] for r in rows)
        result = {
            "rows": rows,
            "dask_cluster_start_s": round(cluster_s, 2),
            "speedup_j2_over_j1": round(j1 / j2, 2),
            "dask_over_local_j2": round(dk / ((j2 + j2b) / 2), 2),
            "local_j2_repeat_ratio": round(j2b / j2, 2),
            "same_rungs_everywhere": same,
            "load_avg_end": round(os.getloadavg()[0], 1),
        }
        print(f"speed-up -j 2 / -j 1: {result['speedup_j2_over_j1']:.2f}x; dask / local -j 2 wall time: "
              f"{result['dask_over_local_j2']:.2f} (cluster start {cluster_s:.1f} s, not included); "
              f"local -j 2 repeat ratio {result['local_j2_repeat_ratio']:.2f}; same rungs: {same}")
        print(json.dumps(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
