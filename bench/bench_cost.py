"""Issue 13: what a target-quality encode costs against a plain ffmpeg encode.

    python bench/bench_cost.py [--tree DIR] [--only long short batch] [--out FILE.json]
    python bench/bench_cost.py --only short --inputs F ... --short-rounds 2 --fresh 0
    python bench/bench_cost.py --only batch --inputs F ... --batch-files 20 --batch-rounds 2

Every figure is a ratio against a baseline measured in this same run:

1. long: a fresh `ratecontrol encode X.flac --target-mos 4.3 --codec C --no-cache`
   process (4-min 48 kHz stereo FLAC of the real music in ../shared/audio,
   concatenated) / a plain `ffmpeg -i X.flac -c:a ENC <rung options> out` process at
   the rung ratecontrol chose; Opus and AAC.
2. short: the real music files of ../shared/audio of 10-30 s (or ``--inputs F ...``),
   probed whole: in one warm process (scorer loaded, one untimed encode first, as in a
   library or batch worker) each `ratecontrol.encode` followed at once by the plain
   ffmpeg process at the setting it chose, run from that process: wall and CPU
   seconds (all threads + waited-for ffmpeg children) of both (``--short-rounds N``: the
   list again, order reversed; ``--codecs``); and ``--fresh N`` fresh-process ratios.
3. batch: `ratecontrol batch IN OUT -j 2 --no-cache` over ``--batch-files`` real tracks
   (``--inputs F ...``, else the short recordings) / plain ffmpeg over the same files
   two at a time at each file's chosen setting; wall and CPU seconds in all, and per
   file (the worker's CPU around its task, ``timed_task``; the plain process's own,
   os.wait4), each file's output-check step-ups; ``--batch-rounds N``: batch then plain,
   plain then batch, ... (A B B A).

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
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
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


def cpu() -> float:
    """CPU seconds (user + sys) of this process, all its threads, and its waited-for
    children (ffmpeg, workers) so far."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


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


_WARM = """
import json, os, subprocess, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
import ratecontrol
from bench_cost import cpu, plain_cmd
from ratecontrol.scoring import get_scorer

sc = get_scorer(None)
jobs = json.loads(sys.argv[1])
# one untimed encode first: what a warm process (a library, a batch worker) has paid already
f, codec, out = jobs[0][:3]
ratecontrol.encode(f, out, target_mos=%r, codec=codec, scorer=sc, cache=False, overwrite=True, best_effort=True)
rows = []
for f, codec, out in jobs:
    row = {}
    def rc():
        c0, t0 = cpu(), time.perf_counter()
        r = ratecontrol.encode(f, out, target_mos=%r, codec=codec, scorer=sc, cache=False, overwrite=True,
                               best_effort=True)
        row.update(rc_s=time.perf_counter() - t0, rc_cpu_s=cpu() - c0, rung=r.rung_label,
                   knob=getattr(r, "knob_value", None), probes=len(r.search.probes), channels=r.search.channels,
                   mos=r.pooled_mos)
    def plain():
        cmd = plain_cmd(Path(f), Path(out).with_name("plain-" + Path(out).name), codec, row["rung"],
                        row["channels"], row["knob"])
        c0, t0 = cpu(), time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        row.update(ffmpeg_s=time.perf_counter() - t0, ffmpeg_cpu_s=cpu() - c0)
    rc()
    plain()
    row.update(file=f, codec=codec, loadavg_1min=os.getloadavg()[0])
    rows.append(row)
print(json.dumps(rows))
""" % (TARGET, TARGET)


def bench_short(tmp: Path, tree: Path | None, codecs=("opus", "aac"), inputs: list[Path] | None = None,
                rounds: int = 1, fresh: int = 6) -> dict:
    """Short inputs in one warm process (scorer loaded, one untimed encode first): each
    ``ratecontrol.encode`` followed at once by the plain ffmpeg encode at the setting it
    chose, run from the same process, so each pair sees the same load; wall and CPU
    seconds (the process, all its threads, and its waited-for ffmpeg children) of both.
    ``inputs``: the files (default: the real recordings of ../shared/audio cut or looped
    to 10-30 s); ``rounds``: the whole list again (order reversed every other round);
    ``fresh``: also this many fresh-process encodes (wall ratio only)."""
    files = list(inputs) if inputs else short_tracks(tmp / "short")
    jobs = [[str(f), c, str(tmp / f"short-{i}-{c}{_ext(c)}")] for i, f in enumerate(files) for c in codecs]
    order = [j for rnd in range(rounds) for j in (jobs if rnd % 2 == 0 else jobs[::-1])]
    res = subprocess.run([sys.executable, "-c", _WARM, json.dumps(order), str(HERE / "bench")], capture_output=True,
                         text=True, env=_env(tree))
    if res.returncode:
        raise RuntimeError(res.stderr[-1500:])
    rows = []
    for r in json.loads(res.stdout.strip().splitlines()[-1]):
        rows.append({"file": Path(r["file"]).name, "codec": r["codec"], "rung": r["rung"], "probes": r["probes"],
                     "mos": round(r["mos"], 4), "rc_warm_s": round(r["rc_s"], 3), "rc_cpu_s": round(r["rc_cpu_s"], 3),
                     "ffmpeg_s": round(r["ffmpeg_s"], 3), "ffmpeg_cpu_s": round(r["ffmpeg_cpu_s"], 3),
                     "ratio_warm": round(r["rc_s"] / r["ffmpeg_s"], 2),
                     "cpu_ratio_warm": round(r["rc_cpu_s"] / max(r["ffmpeg_cpu_s"], 1e-3), 2),
                     "loadavg_1min": round(r["loadavg_1min"], 1)})
    # fresh process on a few of them (each pays the interpreter + torch start-up)
    for r in rows[: len(jobs)][:: max(1, len(jobs) // fresh)] if fresh else []:
        f = next(j[0] for j in jobs if Path(j[0]).name == r["file"])
        fr = fresh_encode(Path(f), tmp / f"fresh-{r['codec']}{_ext(r['codec'])}", r["codec"], tree)
        r["ratio_fresh"] = fr["ratio"]
    med = statistics.median
    out = {"files": len(files), "inputs": [str(f) for f in files], "rounds": rounds, "rows": rows,
           "median_ratio_warm": round(med(r["ratio_warm"] for r in rows), 2),
           "median_cpu_ratio_warm": round(med(r["cpu_ratio_warm"] for r in rows), 2),
           "median_rc_cpu_s": round(med(r["rc_cpu_s"] for r in rows), 3),
           "median_ffmpeg_cpu_s": round(med(r["ffmpeg_cpu_s"] for r in rows), 3),
           "median_probes": med(r["probes"] for r in rows)}
    if any("ratio_fresh" in r for r in rows):
        out["median_ratio_fresh"] = round(med(r["ratio_fresh"] for r in rows if "ratio_fresh" in r), 2)
    for c in codecs:
        rc = [r for r in rows if r["codec"] == c]
        out[f"median_ratio_warm_{c}"] = round(med(r["ratio_warm"] for r in rc), 2)
        out[f"median_cpu_ratio_warm_{c}"] = round(med(r["cpu_ratio_warm"] for r in rc), 2)
        out[f"median_probes_{c}"] = med(r["probes"] for r in rc)
    print(f"  short: median warm wall {out['median_ratio_warm']}x, CPU {out['median_cpu_ratio_warm']}x "
          f"(fresh {out.get('median_ratio_fresh')}x), median probes {out['median_probes']}", flush=True)
    return out


def timed_task(task):
    """``batch._worker.run_task`` with the worker's CPU seconds for this one file (the
    process, all its threads, and its waited-for ffmpeg children; a local worker runs
    one file at a time) appended to the record's notes as ``bench_cpu_s=X``."""
    from dataclasses import replace

    from ratecontrol.batch._worker import run_task

    c0, t0 = cpu(), time.perf_counter()
    res = run_task(task)
    note = f"bench_cpu_s={cpu() - c0:.3f} bench_wall_s={time.perf_counter() - t0:.3f}"
    return replace(res, rec=replace(res.rec, notes=tuple(res.rec.notes) + (note,)))


_BATCH = """
import sys
sys.path.insert(0, sys.argv[1])
import bench_cost
from ratecontrol.batch import _driver
from ratecontrol.cli import main
_driver.run_task = bench_cost.timed_task  # per-file CPU in each record's notes
try:
    main(sys.argv[2:])
except SystemExit as e:
    code = e.code
else:
    code = 0
from joblib.externals.loky import get_reusable_executor
get_reusable_executor().shutdown(wait=True)  # reap the workers: their CPU counts in ours
sys.exit(code)
"""


def _note(rec: dict, key: str) -> float | None:
    for n in rec.get("notes") or ():
        for part in n.split():
            if part.startswith(key + "="):
                return float(part.split("=", 1)[1])
    return None


def _plain_pair(items: list[tuple[Path, Path, list[str]]]) -> tuple[float, float, list[float]]:
    """Plain ffmpeg over ``items`` (src, out, cmd) two at a time: (wall s, CPU s in all,
    CPU s of each process, from os.wait4)."""
    import threading

    cpus = [0.0] * len(items)
    nxt = iter(range(len(items)))
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            p = subprocess.Popen(items[i][2], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            if p.returncode:
                raise RuntimeError(f"plain ffmpeg exited {p.returncode}: {items[i][2]}")
            cpus[i] = ru.ru_utime + ru.ru_stime

    t0 = time.perf_counter()
    ths = [threading.Thread(target=worker) for _ in range(2)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    return time.perf_counter() - t0, sum(cpus), cpus


def bench_batch(tmp: Path, tree: Path | None, n: int = 20, codec: str = "opus", inputs: list[Path] | None = None,
                rounds: int = 1, jobs: int = 2) -> dict:
    """``ratecontrol batch IN OUT -j 2 --no-cache`` over ``n`` files / plain ffmpeg over the
    same files two at a time at each file's chosen setting. ``inputs``: the files (default:
    the real recordings of ../shared/audio at 10-30 s); ``rounds``: batch then plain in
    even rounds, plain then batch in odd ones (A B B A ...; plain needs the settings, so
    round 0's are reused). Wall, CPU in all (the batch process, its workers and their
    ffmpeg children, reaped) and CPU per file (each worker's, around its task)."""
    src = tmp / "batch-in"
    files = list(inputs) if inputs else short_tracks(tmp / "batch-pool")
    src.mkdir()
    for i in range(n):
        f = files[i % len(files)]
        os.link(f, src / f"{i:02d}-{f.name}")
    runs: list[dict] = []
    settings: dict[str, tuple] = {}

    def run_rc(rnd):
        out, report = tmp / f"batch-out{rnd}", tmp / f"batch{rnd}.json"
        wall, cpu, _ = _timed_run([sys.executable, "-c", _BATCH, str(HERE / "bench"), "batch", str(src), str(out),
                                   "--target-mos", str(TARGET), "--codec", codec, "-j", str(jobs), "--no-cache",
                                   "--no-progress", "--json-report", str(report)], _env(tree))
        recs = json.loads(report.read_text())["records"]
        per = {r["input"]: {"status": r["status"], "rung": r.get("rung_label"), "mos": r.get("pooled_mos"),
                            "probes": r.get("n_probes"), "duration_s": r.get("duration_s"),
                            "cpu_s": _note(r, "bench_cpu_s"), "wall_s": _note(r, "bench_wall_s"),
                            # the output check's step-ups: each a whole re-encode and check
                            "stepped_up": sum("stepped up" in n for n in r.get("notes") or ())} for r in recs}
        for r in recs:
            if r.get("status") == "encoded":
                settings.setdefault(r["input"], (r["rung_label"], r.get("bitrate_kbps")))
        shutil.rmtree(out, ignore_errors=True)
        runs.append({"round": rnd, "kind": "batch", "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                     "per_file": per, "loadavg_1min": round(os.getloadavg()[0], 2)})
        print(f"  batch   round {rnd}: {wall:7.1f} s wall, {cpu:7.1f} CPU-s (load {os.getloadavg()[0]:.1f})",
              flush=True)

    def run_plain(rnd):
        items = []
        for rel, (rung, _) in sorted(settings.items()):
            dst = tmp / f"plain-{rel}{_ext(codec)}"
            ch = _channels(src / rel)
            items.append((src / rel, dst, plain_cmd(src / rel, dst, codec, rung, ch, _knob(codec, rung, ch))))
        wall, cpu, cpus = _plain_pair(items)
        runs.append({"round": rnd, "kind": "plain", "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                     "per_file": {rel: {"cpu_s": round(c, 3)} for (rel, _), c in zip(sorted(settings.items()), cpus)},
                     "loadavg_1min": round(os.getloadavg()[0], 2)})
        for it in items:
            it[1].unlink(missing_ok=True)
        print(f"  plain   round {rnd}: {wall:7.1f} s wall, {cpu:7.1f} CPU-s (load {os.getloadavg()[0]:.1f})",
              flush=True)

    for rnd in range(rounds):
        if rnd % 2 == 0 or not settings:
            run_rc(rnd)
            run_plain(rnd)
        else:
            run_plain(rnd)
            run_rc(rnd)
    med = statistics.median
    b = [r for r in runs if r["kind"] == "batch"]
    p = [r for r in runs if r["kind"] == "plain"]
    per_file = {}
    for rel in sorted(b[0]["per_file"]):
        rc_cpu = [r["per_file"][rel]["cpu_s"] for r in b if r["per_file"].get(rel, {}).get("cpu_s") is not None]
        pl_cpu = [r["per_file"][rel]["cpu_s"] for r in p if rel in r["per_file"]]
        row = {k: b[0]["per_file"][rel].get(k) for k in ("status", "rung", "mos", "probes", "duration_s", "stepped_up")}
        row["rungs"] = sorted({str(r["per_file"][rel]["rung"]) for r in b})
        if rc_cpu:
            row["rc_cpu_s"] = round(med(rc_cpu), 2)
        if pl_cpu:
            row["ffmpeg_cpu_s"] = round(med(pl_cpu), 2)
            if rc_cpu:
                row["cpu_ratio"] = round(row["rc_cpu_s"] / row["ffmpeg_cpu_s"], 2)
        per_file[rel] = row
    outd = {"files": n, "jobs": jobs, "codec": codec, "inputs": [str(f) for f in files[:n]], "runs": runs,
            "per_file": per_file,
            "encoded": sum(1 for r in b[0]["per_file"].values() if r["status"] == "encoded"),
            "rc_wall_s": med(r["wall_s"] for r in b), "rc_cpu_s": med(r["cpu_s"] for r in b),
            "ffmpeg_wall_s": med(r["wall_s"] for r in p), "ffmpeg_cpu_s": med(r["cpu_s"] for r in p),
            "rc_cpu_in_tasks_s": med(round(sum(v["cpu_s"] or 0 for v in r["per_file"].values()), 2) for r in b)}
    outd["wall_ratio"] = round(outd["rc_wall_s"] / outd["ffmpeg_wall_s"], 2)
    outd["cpu_ratio"] = round(outd["rc_cpu_s"] / outd["ffmpeg_cpu_s"], 2)
    outd["median_file_cpu_ratio"] = round(med(v["cpu_ratio"] for v in per_file.values() if "cpu_ratio" in v), 2)
    print(f"  batch: {({k: v for k, v in outd.items() if k not in ('runs', 'per_file', 'inputs')})}", flush=True)
    return outd


def _knob(codec: str, label: str, channels: int) -> float | None:
    """The knob value a record's setting label stands for (None: a ladder rung's label)."""
    from ratecontrol.errors import RatecontrolError
    from ratecontrol.presets import load_preset

    p = load_preset(codec)
    try:
        p.rung(label, channels)
        return None
    except RatecontrolError:
        pre, _, post = p.knob.label.partition("{")
        post = post.partition("}")[2]
        return float(label[len(pre): len(label) - len(post) if post else None])


def _channels(path: Path) -> int:
    from ratecontrol import media

    return media.inspect(path).channels


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
    ap.add_argument("--codecs", nargs="+", default=["opus", "aac"], help="paired, short: the codecs")
    ap.add_argument("--short-rounds", type=int, default=1, help="short: the list again, order reversed")
    ap.add_argument("--fresh", type=int, default=6, help="short: fresh-process encodes too (0: none)")
    ap.add_argument("--batch-rounds", type=int, default=1, help="batch: rounds, batch/plain order alternating")
    ap.add_argument("--batch-files", type=int, default=20, help="batch: files in the tree")
    a = ap.parse_args()
    figs: dict = {"tree": str(a.tree or HERE)}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        if "long" in a.only:
            figs["long"] = bench_long(tmp, a.tree)
        if "short" in a.only:
            figs["short"] = bench_short(tmp, a.tree, tuple(a.codecs), a.inputs or None, a.short_rounds, a.fresh)
        if "batch" in a.only:
            figs["batch"] = bench_batch(tmp, a.tree, a.batch_files, inputs=a.inputs or None, rounds=a.batch_rounds)
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
