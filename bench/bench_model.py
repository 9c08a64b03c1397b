"""Benchmarks for the learned model and the training data pipeline.

    python bench/bench_model.py speed  [--model PATH] [--batch 128] [--threads 2] [--seconds 20]
    python bench/bench_model.py loader --data 'shards/shard-{000000..000003}.tar' [--workers 0 1 2]

``speed``: windows/s of the learned scorer's ``score`` with reference features cached
(the search's hot path), and of ``prepare``; wall-clock and process CPU time are both
reported, because the machine this was written on is shared (wall-clock figures are only
meaningful when it is quiet; CPU-time per window is not affected by other load).

``loader``: pairs/s of trainer.data's webdataset pipeline (one sequential read per
shard) against a naive loader that reads one wav file per signal from a folder
(the pairs extracted to files first), both through a torch DataLoader.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _music_windows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(44100) / 44100
    out = np.empty((n, 44100), np.float32)
    for i in range(n):
        f0 = 110 * 2 ** rng.uniform(0, 3)
        x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 25) if f0 * k < 20000)
        out[i] = 0.2 * x / np.max(np.abs(x)) + 0.01 * rng.standard_normal(44100)
    return out


def bench_speed(args) -> dict:
    import torch

    from ratecontrol.scoring.learned import LearnedScorer

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        scorer = LearnedScorer(model_path=args.model, device=args.device, batch_size=args.batch)
    else:
        from ratecontrol.scoring.model import build_model, checkpoint_dict, save_checkpoint

        tmp = os.path.join(tempfile.mkdtemp(), "untrained.pt")
        save_checkpoint(checkpoint_dict(build_model(args.arch)), tmp)
        scorer = LearnedScorer(model_path=tmp, device=args.device, batch_size=args.batch)
    ref = _music_windows(args.windows)
    deg = (ref + 0.003 * np.random.default_rng(1).standard_normal(ref.shape)).astype(np.float32)
    prep = scorer.prepare(ref[: args.batch])
    scorer.score(prep, deg[: args.batch])  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    prep = scorer.prepare(ref)
    prep_wall, prep_cpu = time.perf_counter() - t0, time.process_time() - c0
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < args.seconds:
        scorer.score(prep, deg)
        n += len(deg)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    res = {
        "arch": scorer.arch, "device": str(scorer.device), "threads": torch.get_num_threads(), "batch": scorer.batch_size,
        "score_windows_per_s_wall": n / wall, "score_cpu_ms_per_window": 1e3 * cpu / n,
        "prepare_windows_per_s_wall": len(ref) / prep_wall, "prepare_cpu_ms_per_window": 1e3 * prep_cpu / len(ref),
        "loadavg_1min": os.getloadavg()[0],
    }
    return res


def _naive_dataset(folder: str):
    import soundfile as sf
    import torch

    from trainer.data import score_to_mos

    keys = sorted(f[: -len(".original.wav")] for f in os.listdir(folder) if f.endswith(".original.wav"))

    class Naive(torch.utils.data.Dataset):
        def __len__(self):
            return len(keys)

        def __getitem__(self, i):
            k = os.path.join(folder, keys[i])
            ref, _ = sf.read(k + ".original.wav", dtype="float32")
            deg, _ = sf.read(k + ".degraded.wav", dtype="float32")
            with open(k + ".score.txt") as fh:
                mos = score_to_mos(float(fh.read()))
            return torch.from_numpy(ref), torch.from_numpy(deg), mos

    return Naive()


def bench_loader(args) -> list[dict]:
    import torch

    from trainer.data import PairDataset, make_loader, resolve_shards

    urls = resolve_shards(args.data)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for u in urls:
            with tarfile.open(u) as tf:
                tf.extractall(tmp, filter="data")
        naive = _naive_dataset(tmp)
        n_pairs = len(naive)
        for workers in args.workers:
            ds = PairDataset(urls, train=False, batch_size=args.batch)
            t0 = time.perf_counter()
            n = sum(len(b["mos"]) for b in make_loader(ds, num_workers=workers))
            wds_rate = n / (time.perf_counter() - t0)
            dl = torch.utils.data.DataLoader(naive, batch_size=args.batch, num_workers=workers, shuffle=True)
            t0 = time.perf_counter()
            m = sum(len(b[2]) for b in dl)
            naive_rate = m / (time.perf_counter() - t0)
            out.append({"workers": workers, "pairs": n_pairs, "webdataset_pairs_per_s": wds_rate,
                        "naive_files_pairs_per_s": naive_rate, "loadavg_1min": os.getloadavg()[0]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--model", default=None, help="checkpoint (default: an untrained --arch model; same speed)")
    s.add_argument("--arch", default="nsimnet")
    s.add_argument("--device", default="auto")
    s.add_argument("--batch", type=int, default=128)
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--windows", type=int, default=512)
    s.add_argument("--seconds", type=float, default=20.0)
    lo = sub.add_parser("loader")
    lo.add_argument("--data", required=True)
    lo.add_argument("--batch", type=int, default=64)
    lo.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    res = bench_speed(args) if args.cmd == "speed" else bench_loader(args)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
