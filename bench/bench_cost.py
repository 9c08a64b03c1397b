"""Issue 13: what a target-quality encode costs against a plain ffmpeg encode.

    python bench/bench_cost.py [--tree DIR] [--only long short batch] [--out FILE.json]

Every figure is a ratio against a baseline measured in this same run:

1. long: a fresh `ratecontrol encode X.flac --target-mos 4.3 --codec C --no-cache`
   process (4-min 48 kHz stereo FLAC of the real music in ../shared/audio,
   concatenated) / a plain `ffmpeg -i X.flac -c:a ENC <rung options> out` process at
   the rung ratecontrol chose; Opus and AAC.
2. short: the real music files of ../shared/audio of 10-30 s, probed whole: in one
   warm process (scorer loaded, as in a library or batch worker) `ratecontrol.encode`
   / the plain ffmpeg process; and the fresh-process ratio too.
3. batch: `ratecontrol batch IN OUT -j 2` over 20 real tracks / plain ffmpeg over the
   same files two at a time at each file's chosen rung; wall and CPU seconds.

4. runtime (``--only runtime [--rounds N] [--variants torch numpy]``): the learned
   scorer's runtimes (session 8): fresh-process ``ratecontrol encode`` of the 4-min
   track (Opus) and of 6 short real tracks (Opus), each under
   ``RATECONTROL_RUNTIME=torch`` and ``=numpy`` (variant ``numpy-blas1`` adds
   ``OPENBLAS_NUM_THREADS=1``), alternating variant by variant in every round; wall
   and CPU seconds (self + children) of each run, the chosen rung, and medians.

5. threads (``--only threads --before-tree DIR --inputs F [F ...] [--excerpt-s 60]``,
   issue 25): fresh-process ``ratecontrol encode`` (Opus, target 4.3) of each input
   (cut to its first ``--excerpt-s`` seconds after 30 s into a FLAC in a temporary
   folder when longer) by the checkout ``--before-tree`` (e.g. ``git archive`` of the
   commit before the scoped thread limits) and by this one (or ``--tree``), A B A B
   (order reversed every other round): wall and CPU seconds (self + children) of each
   run, the chosen rung, and medians.

6. paired (``--only paired --before-tree DIR --inputs F [F ...] [--codecs opus aac]
   [--rounds N]``, issue 25 round 3): fresh-process encodes of each input by both
   checkouts, A B A B, each beside a plain ffmpeg encode at its chosen setting: wall and
   CPU ratios per run and their medians.

``--tree DIR`` runs ratecontrol from another checkout (e.g. a `git worktree` of an
older commit) for before/after figures; the plain-ffmpeg baselines are the same.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parents[1]
SHARED = HERE.parent / "shared" / "audio"
TARGET = 4.3


def _music() -> list[Path]:
    """Real music (and voice) recordings of ../shared/audio, 44.1/48 kHz, >= 5 s."""
    out = []
    for f in sorted((SHARED / "flac-test-files").glob("*.flac")) + sorted((SHARED / "sms-tools").glob("*.wav")):
        try:
            info = sf.info(f)
        except Exception:
            continue
        # the "predictor overflow check" files are synthetic stress signals, not music
        if (info.samplerate in (44_100, 48_000) and info.channels <= 2 and info.duration >= 5.0
                and "predictor overflow" not in f.name):
            out.append(f)
    if not out:
        sys.exit("../shared/audio is missing: the benchmarks need real music")
    return out


def build_long_track(path: Path, seconds: float = 240.0) -> Path:
    from ratecontrol import media

    parts, total, n = [], 0, int(seconds * 48_000)
    files = [f for f in _music() if "flac-test-files" in str(f)]
    while total < n:
        for f in files:
            x = media.decode(f, sample_rate_hz=48_000, channels=2)
            parts.append(x)
            total += x.shape[1]
    sf.write(path, np.concatenate(parts, axis=1)[:, :n].T, 48_000, subtype="PCM_16", format="FLAC")
    return path


def short_tracks(folder: Path, lo_s: float = 10.0, hi_s: float = 30.0) -> list[Path]:
    """The real recordings of 10-30 s, as 16-bit stereo FLAC (shorter ones looped to 10 s)."""
    from ratecontrol import media

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for f in _music():
        info = media.inspect(f)
        rate = info.sample_rate_hz
        x = media.decode(f, sample_rate_hz=rate, channels=2)
        if x.shape[1] < lo_s * rate:
            x = np.tile(x, (1, int(np.ceil(lo_s * rate / x.shape[1]))))[:, : int(lo_s * rate)]
        x = x[:, : int(hi_s * rate)]
        dst = folder / f"{len(out):02d}-{f.stem[:24].replace(' ', '_')}.flac"
        sf.write(dst, x.T, rate, subtype="PCM_16", format="FLAC")
        out.append(dst)
    return out


def _ext(codec: str) -> str:
    from ratecontrol.presets import load_preset

    return load_preset(codec).extension


def _rc_cmd(tree: Path | None) -> list[str]:
    code = "import sys; from ratecontrol.cli import main; sys.exit(main())"
    return [sys.executable, "-c", code]


def _env(tree: Path | None) -> dict:
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = str(tree)
    return env


def plain_cmd(src: Path, out: Path, preset: str, rung_label: str, channels: int = 2,
              knob_value: float | None = None) -> list[str]:
    """The plain ffmpeg command a user would type for this preset rung (or knob setting:
    ``knob_value``, which a search on the knob chooses)."""
    from ratecontrol import media
    from ratecontrol.presets import load_preset

    p = load_preset(preset)
    rung = p.knob_rung(knob_value, channels) if knob_value is not None else p.rung(rung_label, channels)
    cmd = [media.ffmpeg_path(), "-hide_banner", "-nostdin", "-y", "-i", str(src), "-vn", "-c:a", p.encoder]
    for k, v in {**p.options, **rung.options}.items():
        cmd += [f"-{k}", str(v)]
    if p.sample_rate_hz:
        cmd += ["-ar", str(p.sample_rate_hz)]
    return cmd + ["-f", p.format, str(out)]


def _timed_run(cmd, env=None) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall s, CPU s of the child, result)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if res.returncode != 0:
        raise RuntimeError(f"{cmd[:4]}... exited {res.returncode}: {res.stderr[-800:]}")
    return wall, cpu, res


def fresh_encode(src: Path, out: Path, codec: str, tree: Path | None, env: dict | None = None,
                 plain: bool = True) -> dict:
    wall, cpu, res = _timed_run(_rc_cmd(tree) + ["encode", str(src), "--target-mos", str(TARGET), "--codec", codec,
                                                 "-o", str(out), "--no-cache", "--overwrite", "--json"],
                                {**_env(tree), **(env or {})})
    j = json.loads(res.stdout)
    if not plain:
        return {"file": src.name, "codec": codec, "rung": j["rung_label"], "rc_s": round(wall, 2),
                "rc_cpu_s": round(cpu, 2), "probes": len(j["search"]["probes"]), "mos": j["pooled_mos"]}
    pw, pc, _ = _timed_run(plain_cmd(src, out.with_name("plain-" + out.name), j["preset"], j["rung_label"],
                                     j["search"]["channels"], j.get("knob_value")))
    return {"file": src.name, "codec": codec, "rung": j["rung_label"], "rc_s": round(wall, 2), "rc_cpu_s": round(cpu, 2),
            "ffmpeg_s": round(pw, 2), "ffmpeg_cpu_s": round(pc, 2), "ratio": round(wall / pw, 2),
            "probes": len(j["search"]["probes"]), "stepped_up": j.get("stepped_up"), "mos": j["pooled_mos"]}


def bench_long(tmp: Path, tree: Path | None, codecs=("opus", "aac")) -> list[dict]:
    track = build_long_track(tmp / "four_minutes.flac")
    rows = []
    for codec in codecs:
        r = fresh_encode(track, tmp / f"long-{codec}{_ext(codec)}", codec, tree)
        rows.append(r)
        print(f"  long {codec:<6} {r['rung']:>6}: {r['rc_s']:6.2f} s vs ffmpeg {r['ffmpeg_s']:5.2f} s -> {r['ratio']:.2f}x"
              f" ({r['probes']} probes)", flush=True)
    return rows


def bench_short(tmp: Path, tree: Path | None, codecs=("opus", "aac")) -> dict:
    files = short_tracks(tmp / "short")
    code = (
        "import json, sys, time\n"
        "from pathlib import Path\n"
        "import ratecontrol\n"
        "from ratecontrol.scoring import get_scorer\n"
        "sc = get_scorer(None)\n"
        "rows = []\n"
        "for f, codec, out in json.loads(sys.argv[1]):\n"
        "    t0 = time.perf_counter()\n"
        "    r = ratecontrol.encode(f, out, target_mos=%r, codec=codec, scorer=sc, cache=False, overwrite=True,"
        " best_effort=True)\n"
        "    rows.append([time.perf_counter() - t0, r.rung_label, len(r.search.probes), r.search.channels])\n"
        "print(json.dumps(rows))\n" % TARGET)
    jobs = [[str(f), c, str(tmp / f"short-{i}-{c}{_ext(c)}")] for i, f in enumerate(files) for c in codecs]
    res = subprocess.run([sys.executable, "-c", code, json.dumps(jobs)], capture_output=True, text=True,
                         env=_env(tree))
    if res.returncode:
        raise RuntimeError(res.stderr[-1500:])
    warm = json.loads(res.stdout.strip().splitlines()[-1])
    rows = []
    for (f, codec, out), (t_rc, rung, probes, ch) in zip(jobs, warm):
        pw, _, _ = _timed_run(plain_cmd(Path(f), Path(out).with_name("plain-" + Path(out).name), codec, rung, ch))
        rows.append({"file": Path(f).name, "codec": codec, "rung": rung, "rc_warm_s": round(t_rc, 3),
                     "ffmpeg_s": round(pw, 3), "ratio_warm": round(t_rc / pw, 2), "probes": probes})
    # fresh process on a few of them (each pays the interpreter + torch start-up)
    for r in rows[:: max(1, len(rows) // 6)]:
        f = next(j[0] for j in jobs if Path(j[0]).name == r["file"])
        fr = fresh_encode(Path(f), tmp / f"fresh-{r['codec']}{_ext(r['codec'])}", r["codec"], tree)
        r["ratio_fresh"] = fr["ratio"]
    out = {"files": len(files), "rows": rows,
           "median_ratio_warm": round(statistics.median(r["ratio_warm"] for r in rows), 2),
           "median_ratio_fresh": round(statistics.median(r["ratio_fresh"] for r in rows if "ratio_fresh" in r), 2),
           "median_probes": statistics.median(r["probes"] for r in rows)}
    for c in codecs:
        out[f"median_ratio_warm_{c}"] = round(statistics.median(r["ratio_warm"] for r in rows if r["codec"] == c), 2)
    print(f"  short: median warm {out['median_ratio_warm']}x, fresh {out['median_ratio_fresh']}x, "
          f"median probes {out['median_probes']}", flush=True)
    return out


def bench_batch(tmp: Path, tree: Path | None, n: int = 20, codec: str = "opus") -> dict:
    src = tmp / "batch-in"
    files = short_tracks(tmp / "batch-pool")
    src.mkdir()
    for i in range(n):
        f = files[i % len(files)]
        os.link(f, src / f"{i:02d}-{f.name}")
    out = tmp / "batch-out"
    report = tmp / "batch.json"
    wall, cpu, _ = _timed_run(_rc_cmd(tree) + ["batch", str(src), str(out), "--target-mos", str(TARGET), "--codec", codec,
                                               "-j", "2", "--json-report", str(report)], _env(tree))
    recs = json.loads(report.read_text())["records"]
    plain = [(src / r["input"], r["rung_label"])
             for r in recs if r.get("status") == "encoded"]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as ex:
        list(ex.map(lambda a: subprocess.run(plain_cmd(a[1][0], tmp / f"plain-{a[0]}.opus", codec, a[1][1]),
                                             capture_output=True, check=True), enumerate(plain)))
    pw = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    pc = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    outd = {"files": n, "encoded": len(plain), "rc_wall_s": round(wall, 1), "rc_cpu_s": round(cpu, 1),
            "ffmpeg_wall_s": round(pw, 1), "ffmpeg_cpu_s": round(pc, 1), "wall_ratio": round(wall / pw, 2),
            "cpu_ratio": round(cpu / pc, 2)}
    print(f"  batch: {outd}", flush=True)
    return outd


VARIANTS = {"torch": {"RATECONTROL_RUNTIME": "torch"}, "numpy": {"RATECONTROL_RUNTIME": "numpy"},
            "numpy-blas1": {"RATECONTROL_RUNTIME": "numpy", "OPENBLAS_NUM_THREADS": "1"}}


def bench_runtime(tmp: Path, tree: Path | None, rounds: int = 3, variants=("torch", "numpy")) -> dict:
    track = build_long_track(tmp / "four_minutes.flac")
    shorts = short_tracks(tmp / "short")
    shorts = shorts[:: max(1, len(shorts) // 6)][:6]
    runs: list[dict] = []
    for rnd in range(rounds):
        for name in (variants if rnd % 2 == 0 else variants[::-1]):
            r = fresh_encode(track, tmp / f"rt-long{_ext('opus')}", "opus", tree, VARIANTS[name], plain=False)
            runs.append({"round": rnd, "variant": name, "kind": "long", **r})
            print(f"  runtime {name:<12} long  {r['rung']:>5}: {r['rc_s']:6.2f} s wall, {r['rc_cpu_s']:6.2f} s CPU", flush=True)
            for i, f in enumerate(shorts):
                r = fresh_encode(f, tmp / f"rt-short{i}{_ext('opus')}", "opus", tree, VARIANTS[name], plain=False)
                runs.append({"round": rnd, "variant": name, "kind": "short", **r})
    out: dict = {"rounds": rounds, "runs": runs, "loadavg_1min_end": os.getloadavg()[0]}
    for name in variants:
        for kind in ("long", "short"):
            rows = [r for r in runs if r["variant"] == name and r["kind"] == kind]
            out[f"{name}_{kind}_median_wall_s"] = round(statistics.median(r["rc_s"] for r in rows), 2)
            out[f"{name}_{kind}_median_cpu_s"] = round(statistics.median(r["rc_cpu_s"] for r in rows), 2)
        sums = [sum(r["rc_s"] for r in runs if r["variant"] == name and r["kind"] == "short" and r["round"] == k)
                for k in range(rounds)]
        out[f"{name}_short6_total_wall_s_per_round"] = [round(x, 2) for x in sums]
    return out


def _excerpt(src: Path, out: Path, seconds: float, start_s: float = 30.0) -> Path:
    """src itself when it is no longer than ``seconds``, else ``seconds`` of it from
    ``start_s`` (or from 0 when too short for that) as a FLAC at out."""
    from ratecontrol import media

    dur = media.inspect(str(src)).duration_s or 0.0
    if dur <= seconds:
        return src
    start = start_s if dur >= start_s + seconds else 0.0
    subprocess.run([media.ffmpeg_path(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-ss", str(start),
                    "-t", str(seconds), "-i", str(src), "-vn", "-c:a", "flac", str(out)], check=True)
    return out


def bench_threads(tmp: Path, tree: Path | None, before: Path, inputs: list[Path], rounds: int = 4,
                  excerpt_s: float = 60.0) -> dict:
    files = [_excerpt(f, tmp / f"threads-in{i}.flac", excerpt_s) for i, f in enumerate(inputs)]
    variants = {"before": before, "after": tree or HERE}
    runs: list[dict] = []
    for rnd in range(rounds):
        for name in (list(variants) if rnd % 2 == 0 else list(variants)[::-1]):
            for i, f in enumerate(files):
                r = fresh_encode(f, tmp / f"threads-out{i}{_ext('opus')}", "opus", variants[name], plain=False)
                r["file"] = inputs[i].name
                runs.append({"round": rnd, "variant": name, **r, "loadavg_1min": round(os.getloadavg()[0], 1)})
                print(f"  threads {name:<7} {inputs[i].name[:28]:<28} {r['rung']:>5}: {r['rc_s']:6.2f} s wall, "
                      f"{r['rc_cpu_s']:6.2f} s CPU (load {os.getloadavg()[0]:.1f})", flush=True)
    out: dict = {"rounds": rounds, "excerpt_s": excerpt_s, "before_tree": str(before), "runs": runs}
    for i, f in enumerate(inputs):
        row = {}
        for name in variants:
            rs = [r for r in runs if r["variant"] == name and r["file"] == f.name]
            row[name] = {"median_wall_s": round(statistics.median(r["rc_s"] for r in rs), 2),
                         "median_cpu_s": round(statistics.median(r["rc_cpu_s"] for r in rs), 2),
                         "wall_s": [r["rc_s"] for r in rs], "cpu_s": [r["rc_cpu_s"] for r in rs],
                         "rungs": sorted({r["rung"] for r in rs}), "mos": sorted({r["mos"] for r in rs})}
        row["cpu_ratio_after_over_before"] = round(row["after"]["median_cpu_s"] / row["before"]["median_cpu_s"], 3)
        row["wall_ratio_after_over_before"] = round(row["after"]["median_wall_s"] / row["before"]["median_wall_s"], 3)
        out[f.name] = row
    return out


def bench_paired(tmp: Path, tree: Path | None, before: Path, inputs: list[Path], codecs=("opus", "aac"),
                 rounds: int = 2) -> dict:
    """Issue 25 round 3: fresh-process ``ratecontrol encode`` of each input by the
    checkout ``--before-tree`` and by this one (or ``--tree``), A B A B (order reversed
    every other round), each beside a plain ffmpeg encode at the setting it chose (run
    right after it): wall and CPU seconds (self + children) and both ratios."""
    variants = {"before": before, "after": tree or HERE}
    runs: list[dict] = []
    for rnd in range(rounds):
        for codec in codecs:
            for name in (list(variants) if rnd % 2 == 0 else list(variants)[::-1]):
                for i, f in enumerate(inputs):
                    r = fresh_encode(f, tmp / f"paired-out{i}{_ext(codec)}", codec, variants[name])
                    r.update(round=rnd, variant=name, cpu_ratio=round(r["rc_cpu_s"] / r["ffmpeg_cpu_s"], 2),
                             loadavg_1min=round(os.getloadavg()[0], 1))
                    runs.append(r)
                    print(f"  paired {name:<6} {codec:<5} {f.name[:24]:<24} {r['rung']:>5} {r['probes']}p: "
                          f"{r['rc_s']:6.2f} s / {r['rc_cpu_s']:6.2f} CPU-s; ffmpeg {r['ffmpeg_s']:5.2f} s / "
                          f"{r['ffmpeg_cpu_s']:5.2f} CPU-s -> wall {r['ratio']:.2f}x, CPU {r['cpu_ratio']:.2f}x "
                          f"(load {r['loadavg_1min']})", flush=True)
    out: dict = {"rounds": rounds, "before_tree": str(before), "runs": runs}
    for codec in codecs:
        for f in inputs:
            row = {}
            for name in variants:
                rs = [r for r in runs if r["variant"] == name and r["file"] == f.name and r["codec"] == codec]
                row[name] = {k: round(statistics.median(r[k] for r in rs), 2)
                             for k in ("rc_s", "rc_cpu_s", "ffmpeg_s", "ffmpeg_cpu_s", "ratio", "cpu_ratio")}
                row[name]["rungs"] = sorted({r["rung"] for r in rs})
                row[name]["probes"] = sorted({r["probes"] for r in rs})
            out[f"{codec}:{f.name}"] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", type=Path, default=None, help="run ratecontrol from this checkout")
    ap.add_argument("--only", nargs="*", default=["long", "short", "batch"])
    ap.add_argument("--out", default=None)
    ap.add_argument("--rounds", type=int, default=3, help="runtime: alternating rounds")
    ap.add_argument("--variants", nargs="+", default=["torch", "numpy"], choices=sorted(VARIANTS))
    ap.add_argument("--before-tree", type=Path, default=None, help="threads: the checkout to compare against")
    ap.add_argument("--inputs", type=Path, nargs="+", default=[], help="threads: the files to encode")
    ap.add_argument("--excerpt-s", type=float, default=60.0, help="threads: cut longer inputs to this many seconds")
    ap.add_argument("--codecs", nargs="+", default=["opus", "aac"], help="paired: the codecs")
    a = ap.parse_args()
    figs: dict = {"tree": str(a.tree or HERE)}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        if "long" in a.only:
            figs["long"] = bench_long(tmp, a.tree)
        if "short" in a.only:
            figs["short"] = bench_short(tmp, a.tree)
        if "batch" in a.only:
            figs["batch"] = bench_batch(tmp, a.tree)
        if "runtime" in a.only:
            figs["runtime"] = bench_runtime(tmp, a.tree, a.rounds, tuple(a.variants))
        if "paired" in a.only:
            if not a.before_tree or not a.inputs:
                ap.error("--only paired needs --before-tree and --inputs")
            figs["paired"] = bench_paired(tmp, a.tree, a.before_tree, a.inputs, tuple(a.codecs), a.rounds)
        if "threads" in a.only:
            if not a.before_tree or not a.inputs:
                ap.error("--only threads needs --before-tree and --inputs")
            figs["threads"] = bench_threads(tmp, a.tree, a.before_tree, a.inputs, a.rounds, a.excerpt_s)
    if a.out:
        Path(a.out).write_text(json.dumps(figs, indent=1))
    print(json.dumps({k: ({kk: vv for kk, vv in v.items() if kk not in ("rows", "runs")} if isinstance(v, dict) else v)
                      for k, v in figs.items()}, indent=1))


if __name__ == "__main__":
    main()
