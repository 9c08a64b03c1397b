"""Batch throughput: files per minute for -j 1 and -j 2, and the Dask path's overhead.

    python bench/bench_batch.py [--files 8] [--seconds 3] [--target-mos 4.0] [--rounds 2]

Builds one tree of short clips (sms-tools recordings from ../shared/audio trimmed to
--seconds, every other one made stereo; synthetic signals when the folder is absent) in
a temp folder, then transcodes it with three configurations, interleaved for --rounds
rounds in this one process so every configuration sees the same machine load:

* local -j 1: joblib runs the files one by one in this process;
* local -j 2: two loky worker processes;
* dask 2 workers: a LocalCluster of 2 single-threaded worker processes and joblib's dask
  backend (cluster start-up timed separately, not in the run's wall time).

Every run is cold: a fresh output folder, fresh worker processes (their imports: torch,
numba-compiled ViSQOL from its on-disk cache), the exact ViSQOL scorer and no probe
cache. Reported per configuration: the fastest wall time (the least disturbed by other
load on a shared machine), and CPU seconds per file (this process plus all reaped
descendants: workers, ffmpeg; far less sensitive to load than wall time). Prints one
JSON object at the end (--json FILE writes it too).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
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


def _cpu_s() -> float:
    """CPU seconds of this process plus every finished (reaped) descendant."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def _shutdown_loky() -> None:
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


def run(src: Path, out: Path, label: str, **kw) -> dict:
    """One cold run: fresh output folder, fresh worker processes (imports included)."""
    from ratecontrol.batch import transcode_folder

    shutil.rmtree(out, ignore_errors=True)
    _shutdown_loky()  # loky keeps idle workers for 300 s otherwise; Dask workers start cold too
    cpu0, t0 = _cpu_s(), time.perf_counter()
    cluster_s = 0.0
    if kw.get("backend") == "dask":
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            cluster_s = time.perf_counter() - t0
            rep = transcode_folder(src, out, resume=False, progress=False, scheduler=client, **kw)
            wall = time.perf_counter() - t0 - cluster_s
    else:
        rep = transcode_folder(src, out, resume=False, progress=False, **kw)
        wall = time.perf_counter() - t0
        _shutdown_loky()  # reap the workers so their CPU time is counted
    cpu = _cpu_s() - cpu0
    assert rep.ok and rep.n_encoded == rep.n_files, [r.reason for r in rep.records if not r.ok]
    row = {"run": label, "files": rep.n_files, "seconds": round(wall, 2), "cluster_start_s": round(cluster_s, 2),
           "files_per_min": round(60 * rep.n_files / wall, 2), "cpu_s_per_file": round(cpu / rep.n_files, 2),
           "load_avg": round(os.getloadavg()[0], 1), "mean_kbps": round(rep.mean_kbps, 1),
           "mean_mos": round(rep.mean_mos, 3), "rungs": [r.rung_label for r in rep.records]}
    extra = f" + {cluster_s:.1f} s cluster start" if cluster_s else ""
    print(f"{label:<16} {wall:7.1f} s{extra}  {row['files_per_min']:6.2f} files/min  "
          f"{row['cpu_s_per_file']:5.2f} CPU s/file  (load avg {row['load_avg']:.1f})", flush=True)
    return row


CONFIGS = [("local -j 1", {"jobs": 1}), ("local -j 2", {"jobs": 2}), ("dask 2 workers", {"backend": "dask"})]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--target-mos", type=float, default=4.0)
    ap.add_argument("--codec", default="opus")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the fastest of each is kept")
    ap.add_argument("--json", default=None, help="also write the result object here")
    args = ap.parse_args()

    # no probe cache: every run scores for itself (a warm cache would make reruns free)
    kw = dict(target_mos=args.target_mos, codec=args.codec, scorer="visqol", cache=False)
    tmp = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    try:
        src = tmp / "in"
        build_tree(src, args.files, args.seconds)
        print(f"tree: {args.files} files x {args.seconds:g} s, target {args.target_mos:g}, {args.codec}, "
              f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}", flush=True)
        rows = []
        for r in range(args.rounds):
            for label, extra in CONFIGS:
                rows.append({"round": r, **run(src, tmp / "out", label, **kw, **extra)})
        best = {label: min((x for x in rows if x["run"] == label), key=lambda x: x["seconds"]) for label, _ in CONFIGS}
        cpu = {label: min(x["cpu_s_per_file"] for x in rows if x["run"] == label) for label, _ in CONFIGS}
        j1, j2, dk = (best[label]["seconds"] for label, _ in CONFIGS)
        result = {
            "rows": rows,
            "best_files_per_min": {k: v["files_per_min"] for k, v in best.items()},
            "min_cpu_s_per_file": cpu,
            "speedup_j2_over_j1": round(j1 / j2, 2),
            "dask_over_local_j2_wall": round(dk / j2, 2),
            "dask_over_local_j2_cpu": round(cpu["dask 2 workers"] / cpu["local -j 2"], 2),
            "dask_cluster_start_s": min(x["cluster_start_s"] for x in rows if x["run"] == "dask 2 workers"),
            "same_rungs_everywhere": all(x["rungs"] == rows[0]["rungs"] for x in rows),
        }
        print(f"best of {args.rounds}: -j 2 / -j 1 speed-up {result['speedup_j2_over_j1']:.2f}x; "
              f"dask / local -j 2: wall {result['dask_over_local_j2_wall']:.2f}, CPU {result['dask_over_local_j2_cpu']:.2f} "
              f"(+ {result['dask_cluster_start_s']:.1f} s cluster start); same rungs: {result['same_rungs_everywhere']}")
        print(json.dumps(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
