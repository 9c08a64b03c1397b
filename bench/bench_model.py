"""Benchmarks for the learned model and the training data pipeline.

    python bench/bench_model.py speed  [--model PATH] [--batch 128] [--threads 2] [--seconds 20]
    python bench/bench_model.py runtimes [--seconds-per-file 8] [--rounds 3] [--rungs opus:64k aac:96k]
    python bench/bench_model.py threads [--seconds-per-file 8] [--rounds 4] [--variants blas1 caller]
    python bench/bench_model.py loader --data 'shards/shard-{000000..000003}.tar' [--workers 0 1 2]

``speed``: windows/s of the learned scorer's ``score`` with reference features cached
(the search's hot path), and of ``prepare``; wall-clock and process CPU time are both
reported, because the machine this was written on is shared (wall-clock figures are only
meaningful when it is quiet; CPU-time per window is not affected by other load).

``runtimes``: the learned scorer's numpy runtime against its torch runtime (1 and 2
intra-op threads) in one process, alternating, on real music (../shared/audio
flac-test-files, both channels as mono windows) through real codecs: windows/s and CPU
ms per window of ``prepare`` and ``score``, and the largest per-window difference.

``threads`` (issue 25): the numpy runtime with its BLAS limited to N threads inside the
scorer's calls (``blasN``; ``blas1`` is the default, ``NUMPY_BLAS_THREADS``) against
the caller's own BLAS threads (``caller``: OpenBLAS's default, one per core), and
``torch-default`` / ``torch-1`` for the torch runtime on the CPU, in one process, the
variants alternating A B A B (order reversed every other round) on the same real-music
windows as ``runtimes``: windows/s wall and CPU ms per window (process CPU, every
thread) of ``prepare`` and ``score``, per-round figures, and the largest per-window
score difference of every variant against ``caller``.

``realmusic``: held-out check on real recordings the model never trained on
(../shared/audio): the loudest 1-s windows of music files, each encoded inside a 3-s
segment (codec context) by real codecs (ratecontrol.media.roundtrip) over a spread of
rungs, labelled by the exact scorer (``ratecontrol.scoring.visqol.visqol_mos``) and
scored by the learned model. Labels are cached (``--labels``) so other models reuse them.

``loader``: pairs/s of trainer.data's webdataset pipeline (one sequential read per
shard) against a naive loader that reads one wav file per signal from a folder
(the pairs extracted to files first), both through a torch DataLoader.
"""
from __future__ import annotations

import argparse
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


def bench_runtimes(args) -> dict:
    import glob

    import torch

    from ratecontrol import media
    from ratecontrol.presets import load_preset
    from ratecontrol.scoring.learned import LearnedScorer

    sr = 44_100
    refs, degs = {}, {}
    files = sorted(glob.glob(os.path.join(args.root, "flac-test-files", "*.flac")))
    files = [f for f in files if "predictor overflow" not in f]
    for spec in args.rungs:
        codec, label = spec.split(":")
        preset = load_preset(codec)
        rung = preset.rung(label)
        r_all, d_all = [], []
        for f in files:
            info = media.inspect(f)
            if info.channels > 2 or (info.duration_s or 0) < 3:
                continue
            x = media.decode(f, sample_rate_hz=sr, channels=2)[:, : int(args.seconds_per_file * sr)]
            n = x.shape[1] // sr * sr
            y = media.roundtrip(x, sr, preset, rung)[:, :n]
            r_all.append(x[:, :n].reshape(-1, sr))
            d_all.append(y.reshape(-1, sr))
        refs[spec], degs[spec] = np.concatenate(r_all), np.concatenate(d_all)
    scorers = {"numpy": LearnedScorer(runtime="numpy"), "torch": LearnedScorer(runtime="torch", device="cpu")}
    rows: dict[str, dict] = {}
    worst = 0.0
    for rnd in range(args.rounds):
        for name, threads in (("numpy", None), ("torch-1thread", 1), ("torch-2threads", 2)):
            sc = scorers[name.split("-")[0]]
            if threads:
                torch.set_num_threads(threads)
            row = rows.setdefault(name, {"prepare_wall": 0.0, "prepare_cpu": 0.0, "score_wall": 0.0, "score_cpu": 0.0,
                                         "windows": 0, "prepared": 0})
            for spec in args.rungs:
                ref, deg = refs[spec], degs[spec]
                t0, c0 = time.perf_counter(), time.process_time()
                prep = sc.prepare(ref)
                row["prepare_wall"] += time.perf_counter() - t0
                row["prepare_cpu"] += time.process_time() - c0
                row["prepared"] += len(ref)
                t0, c0 = time.perf_counter(), time.process_time()
                got = sc.score(prep, deg)
                row["score_wall"] += time.perf_counter() - t0
                row["score_cpu"] += time.process_time() - c0
                row["windows"] += len(deg)
                if rnd == 0:
                    rows.setdefault("_scores", {})[(name, spec)] = got
    for spec in args.rungs:
        worst = max(worst, float(np.abs(rows["_scores"][("numpy", spec)] - rows["_scores"][("torch-1thread", spec)]).max()))
    sc_rows = rows.pop("_scores")
    out = {"windows_per_round": int(sum(len(v) for v in refs.values())), "rounds": args.rounds, "rungs": args.rungs,
           "max_abs_diff_mos": worst,
           "mean_mos_numpy": {spec: float(sc_rows[("numpy", spec)].mean()) for spec in args.rungs},
           "loadavg_1min": os.getloadavg()[0]}
    for name, r in rows.items():
        out[name] = {"score_windows_per_s_wall": r["windows"] / r["score_wall"],
                     "score_cpu_ms_per_window": 1e3 * r["score_cpu"] / r["windows"],
                     "prepare_windows_per_s_wall": r["prepared"] / r["prepare_wall"],
                     "prepare_cpu_ms_per_window": 1e3 * r["prepare_cpu"] / r["prepared"]}
    base = out["numpy"]["score_windows_per_s_wall"]
    out["score_wall_ratio_numpy_over"] = {k: base / out[k]["score_windows_per_s_wall"] for k in rows if k != "numpy"}
    return out


def _runtime_windows(args) -> tuple[dict, dict]:
    """{rung: reference windows}, {rung: degraded windows}: both channels of the
    flac-test-files music as mono 1-s windows, through each --rungs codec rung."""
    import glob

    from ratecontrol import media
    from ratecontrol.presets import load_preset

    sr = 44_100
    refs, degs = {}, {}
    files = sorted(glob.glob(os.path.join(args.root, "flac-test-files", "*.flac")))
    files = [f for f in files if "predictor overflow" not in f]
    for spec in args.rungs:
        codec, label = spec.split(":")
        preset = load_preset(codec)
        rung = preset.rung(label)
        r_all, d_all = [], []
        for f in files:
            info = media.inspect(f)
            if info.channels > 2 or (info.duration_s or 0) < 3:
                continue
            x = media.decode(f, sample_rate_hz=sr, channels=2)[:, : int(args.seconds_per_file * sr)]
            n = x.shape[1] // sr * sr
            y = media.roundtrip(x, sr, preset, rung)[:, :n]
            r_all.append(x[:, :n].reshape(-1, sr))
            d_all.append(y.reshape(-1, sr))
        refs[spec], degs[spec] = np.concatenate(r_all), np.concatenate(d_all)
    return refs, degs


def bench_threads(args) -> dict:
    from threadpoolctl import threadpool_info

    from ratecontrol.scoring.learned import LearnedScorer

    refs, degs = _runtime_windows(args)
    scorers = {}
    for name in args.variants:
        if name.startswith("torch"):
            sc = LearnedScorer(runtime="torch", device="cpu", threads=1 if name == "torch-1" else None)
        else:
            sc = LearnedScorer(runtime="numpy")
            # what the scorer does inside its calls: "caller" leaves the process's BLAS threads alone
            sc.thread_limit = ("blas", None if name == "caller" else int(name[len("blas"):]))
        scorers[name] = sc
    spec0 = args.rungs[0]
    for sc in scorers.values():  # warm-up, not timed: first-call imports and allocations
        sc.score(sc.prepare(refs[spec0][:8]), degs[spec0][:8])
    blas_before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    rows = {n: {"prepare_wall": 0.0, "prepare_cpu": 0.0, "score_wall": 0.0, "score_cpu": 0.0, "windows": 0,
                "prepared": 0, "rounds": []} for n in args.variants}
    scores: dict = {}
    for rnd in range(args.rounds):
        for name in (args.variants if rnd % 2 == 0 else args.variants[::-1]):
            sc, row = scorers[name], rows[name]
            this = {"prepare_wall": 0.0, "prepare_cpu": 0.0, "score_wall": 0.0, "score_cpu": 0.0}
            for spec in args.rungs:
                ref, deg = refs[spec], degs[spec]
                t0, c0 = time.perf_counter(), time.process_time()
                prep = sc.prepare(ref)
                this["prepare_wall"] += time.perf_counter() - t0
                this["prepare_cpu"] += time.process_time() - c0
                t0, c0 = time.perf_counter(), time.process_time()
                got = sc.score(prep, deg)
                this["score_wall"] += time.perf_counter() - t0
                this["score_cpu"] += time.process_time() - c0
                row["windows"] += len(deg)
                row["prepared"] += len(ref)
                scores.setdefault((name, spec), got)
            for k, v in this.items():
                row[k] += v
            n = sum(len(d) for d in degs.values())
            row["rounds"].append({"score_w_per_s": round(n / this["score_wall"], 1),
                                  "score_cpu_ms_per_w": round(1e3 * this["score_cpu"] / n, 3),
                                  "prepare_w_per_s": round(n / this["prepare_wall"], 1),
                                  "prepare_cpu_ms_per_w": round(1e3 * this["prepare_cpu"] / n, 3)})
            print(f"  round {rnd} {name:<14} {row['rounds'][-1]}", file=sys.stderr, flush=True)
    out: dict = {"windows_per_round": int(sum(len(v) for v in degs.values())), "rounds": args.rounds,
                 "rungs": args.rungs, "cpus": os.cpu_count(), "blas_threads_outside_scorer": blas_before,
                 "blas_threads_after": [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"],
                 "loadavg_1min_end": os.getloadavg()[0]}
    base = "caller" if "caller" in args.variants else args.variants[0]
    for name, r in rows.items():
        out[name] = {"score_windows_per_s_wall": round(r["windows"] / r["score_wall"], 1),
                     "score_cpu_ms_per_window": round(1e3 * r["score_cpu"] / r["windows"], 3),
                     "prepare_windows_per_s_wall": round(r["prepared"] / r["prepare_wall"], 1),
                     "prepare_cpu_ms_per_window": round(1e3 * r["prepare_cpu"] / r["prepared"], 3),
                     f"max_abs_diff_mos_vs_{base}": max(float(np.abs(scores[(name, s)] - scores[(base, s)]).max())
                                                        for s in args.rungs),
                     "per_round": r["rounds"]}
    for name in rows:
        if name != base:
            out[name][f"score_wall_ratio_vs_{base}"] = round(out[base]["score_windows_per_s_wall"]
                                                             / out[name]["score_windows_per_s_wall"], 3)
            out[name][f"score_cpu_ratio_vs_{base}"] = round(out[name]["score_cpu_ms_per_window"]
                                                            / out[base]["score_cpu_ms_per_window"], 3)
            out[name][f"prepare_cpu_ratio_vs_{base}"] = round(out[name]["prepare_cpu_ms_per_window"]
                                                              / out[base]["prepare_cpu_ms_per_window"], 3)
    return out


def _naive_dataset(folder: str):
    import soundfile as sf
    import torch

    from ratecontrol.contract import score_to_mos

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
        # CPU time of one in-process pass (no workers): what each pair costs the machine
        c0 = time.process_time()
        n = sum(len(b["mos"]) for b in PairDataset(urls, train=False, batch_size=args.batch))
        wds_cpu = 1e3 * (time.process_time() - c0) / max(1, n)
        c0 = time.process_time()
        m = sum(1 for _ in naive)
        naive_cpu = 1e3 * (time.process_time() - c0) / max(1, m)
        out.append({"workers": "in-process", "webdataset_cpu_ms_per_pair": wds_cpu, "naive_files_cpu_ms_per_pair": naive_cpu})
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


#: real music in ../shared/audio (sms-tools instruments/voices/ensembles, FLAC testbench)
REAL_MUSIC = [
    "sms-tools/orchestra.wav", "sms-tools/piano.wav", "sms-tools/cello-phrase.wav", "sms-tools/violin-B3.wav",
    "sms-tools/flute-A4.wav", "sms-tools/sax-phrase.wav", "sms-tools/trumpet-A4.wav", "sms-tools/vibraphone-C6.wav",
    "sms-tools/mridangam.wav", "sms-tools/bendir.wav", "sms-tools/carnatic.wav", "sms-tools/nessundorma.wav",
    "sms-tools/singing-female.wav", "sms-tools/tedeum.wav", "sms-tools/organ-C3.wav", "sms-tools/oboe-A4.wav",
    "flac-test-files/01 - blocksize 4096.flac", "flac-test-files/11 - partition order 8.flac",
    "flac-test-files/14 - wasted bits.flac", "flac-test-files/17 - all fixed orders.flac",
    "flac-test-files/24 - variable blocksize file created with flake revision 264.flac",
    "flac-test-files/28 - high resolution audio, default settings.flac", "flac-test-files/38 - 3 channels (3.0).flac",
    "flac-test-files/45 - no total number of samples set.flac", "flac-test-files/60 - mono audio.flac",
]
REAL_SETTINGS = [("opus", "16k"), ("opus", "32k"), ("opus", "64k"), ("opus", "128k"), ("aac", "32k"), ("aac", "64k"),
                 ("aac", "128k"), ("mp3", "48k"), ("mp3", "96k"), ("mp3", "160k"), ("vorbis", "q0"), ("vorbis", "q4")]


def _real_pairs(root: str, windows_per_file: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from ratecontrol.media import decode, roundtrip
    from ratecontrol.presets import load_preset

    sr = 44100
    refs, degs, tags = [], [], []
    for rel in REAL_MUSIC:
        path = os.path.join(root, rel)
        if not os.path.exists(path):
            continue
        x = decode(path, sample_rate_hz=sr, channels=1)[0]
        n_win = len(x) // sr
        if n_win < 3:
            continue
        # loudest whole seconds away from the ends (1 s of context either side)
        energy = [float(np.mean(x[i * sr:(i + 1) * sr] ** 2)) for i in range(1, n_win - 1)]
        picks = sorted(np.argsort(energy)[::-1][:windows_per_file] + 1)
        for i in picks:
            seg = x[(i - 1) * sr:(i + 2) * sr][None, :]
            for codec, label in REAL_SETTINGS:
                preset = load_preset(codec)
                rung = next(r for r in preset.rungs if r.label == label)
                y = roundtrip(seg, sr, preset, rung)[0]
                refs.append(seg[0, sr:2 * sr])
                degs.append(y[sr:2 * sr])
                tags.append(f"{rel}#{i}:{codec}-{label}")
    return np.stack(refs).astype(np.float32), np.stack(degs).astype(np.float32), tags


def bench_realmusic(args) -> dict:
    from ratecontrol.scoring.learned import LearnedScorer
    from trainer.evaluate import compute_metrics, scatter_png

    if os.path.exists(args.labels):
        z = np.load(args.labels)
        ref, deg, mos, tags = z["ref"], z["deg"], z["mos"], list(z["tags"])
    else:
        from ratecontrol.scoring.visqol import visqol_mos

        ref, deg, tags = _real_pairs(args.root, args.windows_per_file)
        mos = visqol_mos(ref, deg)
        np.savez_compressed(args.labels, ref=ref, deg=deg, mos=mos, tags=np.array(tags))
    scorer = LearnedScorer(model_path=args.model, device=args.device)
    pred = scorer.score(scorer.prepare(ref), deg)
    ok = np.isfinite(mos)
    m = compute_metrics(pred[ok], mos[ok])
    if args.png:
        scatter_png(pred[ok], mos[ok], args.png, f"{os.path.basename(args.model or 'default.pt')} on ../shared/audio music")
    worst = np.argsort(-np.abs(pred - mos))[:8]
    return {"model": scorer.model_path, "version": scorer.version, "pairs": int(ok.sum()), "files": len({t.split('#')[0] for t in tags}),
            "pearson": m["pearson"], "spearman": m["spearman"], "rmse": m["rmse"], "bias": m["bias"],
            "high": {k: m["high"][k] for k in ("n", "pearson", "rmse", "bias")},
            "worst": [{"tag": tags[i], "label": float(mos[i]), "pred": float(pred[i])} for i in worst]}


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
    rm = sub.add_parser("realmusic")
    rm.add_argument("--model", default=None, help="checkpoint (default: the packaged default)")
    rm.add_argument("--device", default="auto")
    rm.add_argument("--root", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "audio"))
    rm.add_argument("--windows-per-file", type=int, default=2)
    rm.add_argument("--labels", default="realmusic-labels.npz", help="cache of pairs + ViSQOL labels (made on first run)")
    rm.add_argument("--png", default=None, help="write a scatter plot here")
    lo = sub.add_parser("loader")
    lo.add_argument("--data", required=True)
    lo.add_argument("--batch", type=int, default=64)
    lo.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    rt = sub.add_parser("runtimes")
    rt.add_argument("--root", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "audio"))
    rt.add_argument("--seconds-per-file", type=float, default=8.0)
    rt.add_argument("--rounds", type=int, default=3)
    rt.add_argument("--rungs", nargs="+", default=["opus:64k", "aac:96k"])
    th = sub.add_parser("threads")
    th.add_argument("--root", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "audio"))
    th.add_argument("--seconds-per-file", type=float, default=8.0)
    th.add_argument("--rounds", type=int, default=4)
    th.add_argument("--rungs", nargs="+", default=["opus:64k", "aac:96k"])
    th.add_argument("--variants", nargs="+", default=["blas1", "caller"],
                    help="blasN (numpy, BLAS limited to N in the scorer's calls), caller (numpy, no limit), "
                         "torch-default, torch-1")
    args = ap.parse_args()
    res = {"speed": bench_speed, "loader": bench_loader, "realmusic": bench_realmusic,
           "runtimes": bench_runtimes, "threads": bench_threads}[args.cmd](args)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
