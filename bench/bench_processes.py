"""Issue 25 lever 3: what the ffmpeg processes of an encode cost, job by job, before/after.

    python bench/bench_processes.py --before-tree DIR [--tree DIR] [--track FILE]
        [--rounds N] [--only jobs whole] [--jobs decode probe ...] [--strace [--strace-rounds N]]
        [--ablate] [--codecs opus aac] [--out FILE.json]

``--before-tree``: a checkout to compare with, e.g. ``git archive fe9b849 | tar -x -C
/work/data/base14``; ``--tree``: the checkout measured as "after" (default: this one).
Every figure is a ratio within this run; trees alternate A B A B (the order reversed
every other round), each measurement in a fresh Python process with that tree first on
``sys.path``.

1. jobs: each ffmpeg job of an encode run alone on ``--track`` (default the 4-minute
   FLAC /work/data/cost/four_min.flac, resampled to 48 kHz stereo as a track is):
   ``decode`` (the input decode: media.decode), ``probe`` (one probe process:
   media.roundtrip_info of a 40-s span, as a sampled probe's half, Opus 96k),
   ``check`` (the final encode that decodes its own packets back while a consumer
   reads them in 60-s blocks: media.StreamedEncode, Opus 128k), ``decode_aligned`` (the
   written file read back whole: media.decode_aligned_blocks) and ``encode`` (the plain
   array encode: media.encode_array, AAC 128k). For each: wall, the ffmpeg
   process's CPU user/sys and context switches (getrusage RUSAGE_CHILDREN: voluntary
   ``vcs``, involuntary ``ivcs``), the Python process's own CPU and context switches
   (RUSAGE_SELF: its feed/reader threads), and with ``--strace`` (strace on PATH) the
   futex / read / write calls of the ffmpeg process (``strace -f -c``; a separate
   pass, since strace itself costs CPU).
   ``--ablate`` adds the "after" tree with one lever off again (media._ffmpeg's
   PIPE_BYTES, OUT_FRAME_SAMPLES or DECODER_THREADS set to 0 in the worker).
2. whole: a fresh ``python -m ratecontrol encode TRACK --target-mos 4.3 --codec C
   --no-cache --overwrite --json`` per tree and codec: wall, CPU user/sys (the process
   and its waited-for children, os.wait4), context switches, the chosen setting; and a
   plain ``ffmpeg -i TRACK -c:a ENC -b:a <chosen>k`` of the same file in the same
   round as the ratio's denominator.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
TRACK = Path("/work/data/cost/four_min.flac")
JOBS = ("decode", "probe", "check", "decode_aligned", "encode")


# ------------------------------------------------------------------ worker side


def _usage():
    import resource

    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return (s.ru_utime, s.ru_stime, s.ru_nvcsw, s.ru_nivcsw, c.ru_utime, c.ru_stime, c.ru_nvcsw, c.ru_nivcsw)


def _strace_counts(folder: Path) -> dict:
    """futex/read/write calls summed over the ``strace -c`` files in ``folder``."""
    out = {"futex": 0, "read": 0, "write": 0}
    for f in folder.glob("st.*"):
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[-1] in out and parts[3].isdigit():
                out[parts[-1]] += int(parts[3])
    return out


def worker(job: str, track: Path, strace_dir: str | None) -> dict:
    """Run one job in this process (the tree under test is on sys.path) and measure it."""
    import numpy as np

    from ratecontrol import media
    from ratecontrol.presets import load_preset

    opus, aac = load_preset("opus"), load_preset("aac")
    media.ffmpeg_path(), media.require_encoder(opus), media.require_encoder(aac)
    from ratecontrol.media._ffmpeg import has_loopback_decoder

    has_loopback_decoder()
    tmp = Path(tempfile.mkdtemp(prefix="bench-proc-"))
    rate = 48_000
    audio = media.decode(track, sample_rate_hz=rate, channels=2) if job != "decode" else None
    written = None
    if job == "decode_aligned":
        written = tmp / "w.opus"
        media.encode_array(audio, rate, opus, "128k", written)

    def run():
        if job == "decode":
            return media.decode(track, sample_rate_hz=rate, channels=2).shape[1]
        if job == "probe":
            return media.roundtrip_info(audio[:, 30 * rate:70 * rate], rate, opus, "96k").size_bytes
        if job == "check":
            acc = 0.0
            with media.StreamedEncode(audio, rate, opus, "128k", tmp / "c.opus", block_samples=60 * rate) as enc:
                for x in enc.blocks():  # a consumer that touches every sample, as the check does
                    acc += float(np.abs(x).sum())
                return enc.finish().size_bytes
        if job == "decode_aligned":
            # decode_blocks, under decode_aligned_blocks, read to the end: the aligned reader
            # stops at N samples and kills an ffmpeg still exiting (and strace with it)
            from ratecontrol.media._decode import decode_blocks

            return sum(x.shape[1] for x in decode_blocks(written, rate, 2, 60 * rate))
        if job == "encode":
            return media.encode_array(audio, rate, aac, "128k", tmp / "e.m4a").size_bytes
        raise SystemExit(f"unknown job {job}")

    for setting in filter(None, os.environ.get("BENCH_PROC_SET", "").split(",")):
        # one lever off in the "after" tree (--ablate): a media._ffmpeg constant
        from ratecontrol.media import _ffmpeg

        name, value = setting.split("=")
        setattr(_ffmpeg, name, int(value))
    if strace_dir:
        for f in Path(strace_dir).glob("st.*"):
            f.unlink()
    u0, t0 = _usage(), time.perf_counter()
    result = run()
    wall, u1 = time.perf_counter() - t0, _usage()
    d = [b - a for a, b in zip(u0, u1)]
    out = {"job": job, "wall_s": wall, "py_user_s": d[0], "py_sys_s": d[1], "py_vcs": d[2], "py_ivcs": d[3],
           "ff_user_s": d[4], "ff_sys_s": d[5], "ff_vcs": d[6], "ff_ivcs": d[7], "result": result}
    if strace_dir:
        out.update({f"ff_{k}": v for k, v in _strace_counts(Path(strace_dir)).items()})
    shutil.rmtree(tmp, ignore_errors=True)
    return out


# ------------------------------------------------------------------ driver side


def _ffmpeg_exe(tree: Path) -> str:
    return subprocess.run([sys.executable, "-c", "from ratecontrol import media; print(media.ffmpeg_path())"],
                          env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True,
                          check=True).stdout.strip()


def _strace_wrapper(folder: Path, exe: str) -> Path:
    w = folder / "ffmpeg-strace.sh"
    w.write_text(f'#!/bin/sh\nexec strace -f -c -o "{folder}/st.$$" "{exe}" "$@"\n')
    w.chmod(0o755)
    return w


#: --ablate: the "after" tree with one lever turned off again
ABLATIONS = {"after_pipe64k": "PIPE_BYTES=0", "after_unbatched": "OUT_FRAME_SAMPLES=0",
             "after_decoder_threads": "DECODER_THREADS=0"}


def run_job(tree: Path, job: str, track: Path, strace_dir: Path | None, exe: str, setting: str = "") -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "BENCH_PROC_SET": setting}
    if strace_dir is not None:
        env["RATECONTROL_FFMPEG"] = str(_strace_wrapper(strace_dir, exe))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", job, "--track", str(track)]
    if strace_dir is not None:
        cmd += ["--strace-dir", str(strace_dir)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"worker {job} in {tree} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _wait4(cmd: list[str], env: dict, stdout=subprocess.DEVNULL) -> tuple[float, "os.struct_rusage", int]:
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    return wall, ru, os.waitstatus_to_exitcode(status)


def whole(tree: Path, codec: str, track: Path, work: Path) -> dict:
    out = work / ("o.opus" if codec == "opus" else "o.m4a")
    js = work / "o.json"
    cmd = [sys.executable, "-m", "ratecontrol", "encode", str(track), "--target-mos", "4.3", "--codec", codec,
           "-o", str(out), "--no-cache", "--overwrite", "--json"]
    with open(js, "w") as fh:
        wall, ru, rc = _wait4(cmd, {**os.environ, "PYTHONPATH": str(tree)}, stdout=fh)
    if rc != 0:
        raise SystemExit(f"ratecontrol encode ({tree}, {codec}) exited {rc}")
    res = json.loads(js.read_text())
    return {"wall_s": wall, "user_s": ru.ru_utime, "sys_s": ru.ru_stime, "cpu_s": ru.ru_utime + ru.ru_stime,
            "vcs": ru.ru_nvcsw, "ivcs": ru.ru_nivcsw, "knob": res.get("knob_value"), "rung": res.get("rung")}


def plain(exe: str, codec: str, kbps, track: Path, work: Path) -> dict:
    enc = {"opus": ("libopus", "opus"), "aac": ("aac", "m4a")}[codec]
    cmd = [exe, "-hide_banner", "-nostdin", "-y", "-i", str(track), "-c:a", enc[0], "-b:a", f"{kbps}k",
           str(work / f"plain.{enc[1]}")]
    wall, ru, rc = _wait4(cmd, dict(os.environ))
    if rc != 0:
        raise SystemExit(f"plain ffmpeg exited {rc}")
    return {"wall_s": wall, "user_s": ru.ru_utime, "sys_s": ru.ru_stime, "cpu_s": ru.ru_utime + ru.ru_stime,
            "vcs": ru.ru_nvcsw, "ivcs": ru.ru_nivcsw}


def _med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _fmt(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--strace-dir", help=argparse.SUPPRESS)
    ap.add_argument("--before-tree", type=Path)
    ap.add_argument("--tree", type=Path, default=HERE)
    ap.add_argument("--track", type=Path, default=TRACK)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", nargs="+", default=["jobs", "whole"], choices=["jobs", "whole"])
    ap.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    ap.add_argument("--codecs", nargs="+", default=["opus", "aac"], choices=["opus", "aac"])
    ap.add_argument("--strace", action="store_true", help="also count the ffmpeg processes' futex/read/write calls")
    ap.add_argument("--strace-rounds", type=int, default=1, help="rounds of the (separate) strace pass")
    ap.add_argument("--ablate", action="store_true",
                    help="jobs: also the after tree with each lever off (" + ", ".join(ABLATIONS) + ")")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.track, a.strace_dir)))
        return
    if a.before_tree is None:
        ap.error("--before-tree is required")
    if not a.track.exists():
        raise SystemExit(f"no track at {a.track}")
    trees = {"before": a.before_tree.resolve(), "after": a.tree.resolve()}
    exe = _ffmpeg_exe(trees["after"])
    report: dict = {"track": str(a.track), "trees": {k: str(v) for k, v in trees.items()}, "rounds": a.rounds,
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": os.getloadavg()}
    work = Path(tempfile.mkdtemp(prefix="bench-proc-"))

    def order(r, names=("before", "after")):
        return tuple(names) if r % 2 == 0 else tuple(reversed(names))

    try:
        if "jobs" in a.only:
            names = ["before", "after"] + (list(ABLATIONS) if a.ablate else [])
            rows = {j: {n: [] for n in names} for j in a.jobs}
            passes = [False] + ([True] if a.strace and shutil.which("strace") else [])
            for traced in passes:
                for r in range(a.rounds if not traced else a.strace_rounds):
                    for job in a.jobs:
                        for name in order(r, names):
                            sdir = None
                            if traced:
                                sdir = work / f"st-{name}-{job}"
                                sdir.mkdir(exist_ok=True)
                            m = run_job(trees.get(name, trees["after"]), job, a.track, sdir, exe,
                                        ABLATIONS.get(name, ""))
                            (rows[job][name] if not traced else rows[job].setdefault(f"{name}_strace", [])).append(m)
                            print(f"{'strace ' if traced else ''}round {r} {job:15s} {name:6s} "
                                  + " ".join(f"{k}={_fmt(v)}" for k, v in m.items() if k not in ("job", "result")),
                                  flush=True)
            report["jobs"] = rows
            print("\nmedians (X / before):")
            for job, rr in rows.items():
                for name in names[1:]:
                    line = [f"{job:15s} {name:16s}"]
                    for k in ("wall_s", "ff_user_s", "ff_sys_s", "ff_vcs", "ff_ivcs", "py_user_s", "py_sys_s", "py_vcs"):
                        b, f = _med(rr["before"], k), _med(rr[name], k)
                        line.append(f"{k} {_fmt(b)} -> {_fmt(f)} ({f / b:.2f}x)" if b else f"{k} {_fmt(b)} -> {_fmt(f)}")
                    if rr.get("before_strace") and rr.get(f"{name}_strace"):
                        for k in ("ff_futex", "ff_read", "ff_write"):
                            line.append(f"{k} {_med(rr['before_strace'], k):.0f} -> {_med(rr[name + '_strace'], k):.0f}")
                    print(" | ".join(line))
        if "whole" in a.only:
            rows = {c: {"before": [], "after": [], "plain": []} for c in a.codecs}
            for r in range(a.rounds):
                for codec in a.codecs:
                    for name in order(r):
                        m = whole(trees[name], codec, a.track, work)
                        rows[codec][name].append(m)
                        print(f"round {r} encode {codec} {name:6s} " + " ".join(f"{k}={_fmt(v)}" for k, v in m.items()),
                              flush=True)
                    knob = rows[codec]["after"][-1]["knob"] or str(rows[codec]["after"][-1]["rung"]).rstrip("k")
                    m = plain(exe, codec, knob, a.track, work)
                    rows[codec]["plain"].append(m)
                    print(f"round {r} plain  {codec} {knob}k " + " ".join(f"{k}={_fmt(v)}" for k, v in m.items()),
                          flush=True)
            report["whole"] = rows
            print("\nmedians:")
            for codec, rr in rows.items():
                p = {k: _med(rr["plain"], k) for k in ("wall_s", "cpu_s")}
                for name in ("before", "after"):
                    w, c, s = (_med(rr[name], k) for k in ("wall_s", "cpu_s", "sys_s"))
                    print(f"{codec} {name:6s} wall {w:.2f} s ({w / p['wall_s']:.1f}x plain) CPU {c:.2f} s "
                          f"({c / p['cpu_s']:.1f}x plain) sys {s:.2f} s vcs {_med(rr[name], 'vcs'):.0f}")
                b, f = rr["before"], rr["after"]
                print(f"{codec} after/before: wall {_med(f, 'wall_s') / _med(b, 'wall_s'):.2f}x "
                      f"CPU {_med(f, 'cpu_s') / _med(b, 'cpu_s'):.2f}x sys {_med(f, 'sys_s') / _med(b, 'sys_s'):.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if a.out:
        a.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
