"""Issue 6 benchmarks: overhead vs plain ffmpeg, speed-up vs exact ViSQOL, decision
agreement, scorer throughput and peak memory, all measured in this one process run.

    python bench/bench_fastpath.py [--quick] [--out docs/fastpath_figures.json]

Inputs: a 4-minute stereo track made by concatenating the music of ../shared/audio
(flac-test-files, decoded at 44.1 kHz, cut to 240 s) and each music file there.
Every figure is a ratio against a baseline measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parents[1]
SHARED = HERE.parent / "shared" / "audio" / "flac-test-files"
# stereo 44.1 kHz music excerpts of the FLAC testbench (the others are format oddities
# of the same music: odd rates, bit depths, channel counts)
MUSIC = ["01 - blocksize 4096.flac", "11 - partition order 8.flac", "14 - wasted bits.flac",
         "17 - all fixed orders.flac", "18 - precision search.flac", "24 - variable blocksize file created with flake revision 264.flac",
         "26 - variable blocksize file created with CUETools.Flake 2.1.6.flac", "61 - predictor overflow check, 16-bit.flac"]
CODECS = ["opus", "aac", "mp3", "mp3-vbr", "vorbis"]
TARGETS = [4.0, 4.3, 4.5]


def _music_files() -> list[Path]:
    return [SHARED / m for m in MUSIC if (SHARED / m).exists()]


def build_long_track(path: Path, seconds: float = 240.0) -> Path:
    from ratecontrol import media

    parts, total = [], 0
    files = _music_files()
    if not files:
        sys.exit("../shared/audio is missing: the benchmarks need real music")
    while total < seconds * 44_100:
        for f in files:
            x = media.decode(f, sample_rate_hz=44_100, channels=2)
            parts.append(x)
            total += x.shape[1]
    audio = np.concatenate(parts, axis=1)[:, : int(seconds * 44_100)]
    sf.write(path, audio.T, 44_100, subtype="PCM_16")
    return path


def timed(fn, *a, **k):
    t0 = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t0


def bench_overhead(files: list[Path], tmp: Path, scorer: str, codecs: list[str]) -> list[dict]:
    """encode() wall time / plain ffmpeg encode of the chosen rung, per file and codec.

    No probe cache; the scorer is already loaded (as in a library or batch worker): the
    one-time start-up is measured apart by bench_startup.
    """
    from bench_cost import plain_cmd
    from ratecontrol.api import encode
    from ratecontrol.presets import load_preset

    rows = []
    for f in files:
        for codec in codecs:
            p = load_preset(codec)
            res, t_rc = timed(encode, f, tmp / f"rc{p.extension}", target_mos=4.3, codec=codec, scorer=scorer,
                              cache=False, overwrite=True, best_effort=True)
            rungs = p.rungs_for(2)
            rung = rungs[[r.label for r in rungs].index(res.rung_label)]
            # the plain ffmpeg command a user would type (bench_cost.py), at the chosen rung
            _, t_ff = timed(subprocess.run, plain_cmd(f, tmp / f"plain{p.extension}", codec, rung.label),
                            check=True, capture_output=True)
            rows.append({"file": f.name, "codec": codec, "rung": res.rung_label, "encode_s": round(t_rc, 2),
                         "ffmpeg_s": round(t_ff, 2), "overhead_ratio": round(t_rc / t_ff, 2),
                         "probes": len(res.search.probes), "stepped_up": res.stepped_up,
                         "full_track_mos": res.full_track_mos})
            print(f"  overhead {f.name[:28]:<28} {codec:<8} {res.rung_label:>6}: {t_rc:6.1f} s vs ffmpeg {t_ff:5.1f} s "
                  f"-> {t_rc / t_ff:5.2f}x ({len(res.search.probes)} probes, stepped up {res.stepped_up})", flush=True)
    return rows


def bench_startup(scorer: str) -> dict:
    """One-time cost of a fresh process: import + model load, vs `ffmpeg -version`."""
    from ratecontrol import media

    code = f"from ratecontrol.scoring import get_scorer; get_scorer({scorer!r})"
    _, t_py = timed(subprocess.run, [sys.executable, "-c", code], check=True)
    _, t_ff = timed(subprocess.run, [media.ffmpeg_path(), "-version"], check=True, capture_output=True)
    out = {"scorer_load_s": round(t_py, 2), "ffmpeg_start_s": round(t_ff, 3)}
    print(f"  start-up: {out}", flush=True)
    return out


def bench_decisions(files: list[Path], codecs: list[str], targets: list[float], learned: str, cache_dir: Path) -> dict:
    """Rung chosen by the learned scorer vs the exact scorer, same (sampled) search."""
    from ratecontrol.api import select_bitrate
    from ratecontrol.cache import ProbeCache
    from ratecontrol.errors import TargetNotReachable

    rows, t_l, t_v = [], 0.0, 0.0
    # within a run the three targets share each probe curve through the cache (as
    # `--target-mos 4.0,4.3,4.5` would); a cache left by an earlier run (--cache-dir)
    # makes a rerun cheap, but then its search times are not a search's
    warm = {sc: (cache_dir / sc).is_dir() and any((cache_dir / sc).iterdir()) for sc in (learned, "visqol")}
    caches = {sc: ProbeCache(cache_dir / sc, max_mb=2000) for sc in (learned, "visqol")}
    curves: dict = {}  # (file, codec) -> {rung index: ViSQOL's pooled score}, all targets
    for f in files:
        for codec in codecs:
            for target in targets:
                got, kbps = {}, {}
                for sc in (learned, "visqol"):
                    try:
                        # a cache per scorer and run: the three targets share one probe curve,
                        # as `--target-mos 4.0,4.3,4.5` would
                        r, dt = timed(select_bitrate, f, target_mos=target, codec=codec, scorer=sc,
                                      cache=caches[sc])
                        got[sc], kbps[sc], probes = r.chosen.rung_index, r.chosen.bitrate_kbps, r.probes
                    except TargetNotReachable as exc:
                        got[sc], kbps[sc], dt = None, None, 0.0
                        probes = exc.result.probes if exc.result else ()
                    if sc == "visqol":
                        curves.setdefault((f.name, codec), {}).update({p.rung_index: p.pooled_mos for p in probes})
                    if sc == "visqol":
                        t_v += dt
                    else:
                        t_l += dt
                rows.append({"file": f.name, "codec": codec, "target": target, "learned": got[learned], "visqol": got["visqol"],
                             "kbps_learned": kbps[learned], "kbps_visqol": kbps["visqol"]})
                print(f"  decision {f.name[:28]:<28} {codec:<8} {target}: learned {got[learned]} visqol {got['visqol']}", flush=True)
    # what a disagreement costs, from ViSQOL's own probe curve: how far below the target
    # ViSQOL puts a lower learned choice (the visqol search always probed the rung just
    # below its own choice), and the bits of a higher one
    for r in rows:
        if r["learned"] is not None and r["visqol"] is not None and r["learned"] != r["visqol"]:
            p10 = curves[(r["file"], r["codec"])].get(r["learned"])
            r["visqol_at_learned"] = None if p10 is None else round(p10, 4)
            r["bits_vs_visqol"] = round(r["kbps_learned"] / r["kbps_visqol"], 3)
    lower = [r for r in rows if r.get("visqol_at_learned") is not None and r["learned"] < r["visqol"]]
    shortfall = sorted(round(r["target"] - r["visqol_at_learned"], 4) for r in lower)
    same = sum(r["learned"] == r["visqol"] for r in rows)
    both = [r for r in rows if r["learned"] is not None and r["visqol"] is not None]
    far = sum(abs(r["learned"] - r["visqol"]) > 1 for r in both)
    return {"cases": len(rows), "same_rung": same, "same_share": round(same / max(len(rows), 1), 3),
            "more_than_one_apart": far, "learned_s": round(t_l, 1), "visqol_s": round(t_v, 1),
            "learned_lower": len([r for r in rows if r["learned"] is not None and r["visqol"] is not None
                                  and r["learned"] < r["visqol"]]),
            "lower_shortfall_mos": shortfall,
            "same_or_within_0.03": same + sum(x <= 0.03 for x in shortfall),
            "warm_cache_at_start": warm,
            "speedup_vs_visqol": None if any(warm.values()) else round(t_v / max(t_l, 1e-9), 1),
            "rows": rows}


def bench_throughput(scorer_name: str, n: int = 2000) -> dict:
    from ratecontrol.scoring import get_scorer

    rng = np.random.default_rng(0)
    ref = (0.1 * rng.standard_normal((n, 44_100))).astype(np.float32)
    deg = ref + (0.01 * rng.standard_normal(ref.shape)).astype(np.float32)
    sc = get_scorer(scorer_name)
    sc.score(sc.prepare(ref[:8]), deg[:8])  # warm up
    prep, t_prep = timed(sc.prepare, ref)
    _, t_score = timed(sc.score, prep, deg)
    v = get_scorer("visqol")
    m = 16
    v.score(v.prepare(ref[:1]), deg[:1])
    _, t_v = timed(lambda: v.score(v.prepare(ref[:m]), deg[:m]))
    out = {"windows": n, "learned_windows_per_s_cached_ref": round(n / t_score, 1),
           "learned_windows_per_s_with_prepare": round(n / (t_score + t_prep), 1),
           "visqol_windows_per_s": round(m / t_v, 2), "ratio_vs_visqol": round((n / t_score) / (m / t_v), 1)}
    print(f"  throughput: {out}", flush=True)
    return out


#: peak RSS of the measuring process itself, in kB. Not getrusage's ru_maxrss: Linux keeps
#: that across fork + exec, so a child of this (large) bench process reported the
#: bench's own size (2.6 GB for a 1.7 GB decode)
_HWM = "next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))"
# VmHWM counts file-backed pages too (a track decoded to a mapped temp file, which the OS
# can drop under pressure); the process's own memory is RssAnon, sampled every 50 ms
_ANON = ("import threading, time\n"
         "_peak = [0]\n"
         "def _watch():\n"
         "    while True:\n"
         "        _peak[0] = max(_peak[0], next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('RssAnon')))\n"
         "        time.sleep(0.05)\n"
         "threading.Thread(target=_watch, daemon=True).start()\n")


def bench_memory(track: Path, tmp: Path, scorer: str, minutes: float) -> dict:
    """Peak RSS of a fresh process searching a long input, vs one that only decodes it."""
    from ratecontrol import media

    x = media.decode(track, sample_rate_hz=44_100, channels=2)
    reps = int(np.ceil(minutes * 60 * 44_100 / x.shape[1]))
    long = tmp / "long.flac"
    sf.write(long, np.tile(x, reps)[:, : int(minutes * 60 * 44_100)].T, 44_100, subtype="PCM_16", format="FLAC")
    del x
    # the whole command: sampled search, final encode and the full-track check
    code_search = (_ANON + "import sys; from ratecontrol.api import encode;"
                   f"r=encode(sys.argv[1], sys.argv[1] + '.opus', target_mos=4.3, codec='opus', scorer='{scorer}', "
                   "cache=False, overwrite=True);"
                   f"print({_HWM}, _peak[0])")
    code_decode = (_ANON + "import sys; from ratecontrol import media; media.decode(sys.argv[1], sample_rate_hz=48000, channels=2);"
                   f"print({_HWM}, _peak[0])")
    rss = {}
    for name, code in (("search", code_search), ("decode_only", code_decode)):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code, str(long)], capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-2000:])
            raise SystemExit(f"memory bench: {name} failed")
        hwm, anon = out.stdout.strip().splitlines()[-1].split()
        rss[name], rss[name + "_anon"] = int(hwm) / 1024, int(anon) / 1024
        rss[name + "_s"] = round(time.perf_counter() - t0, 1)
    res = {"minutes": minutes, "search_peak_mb": round(rss["search"]), "decode_only_peak_mb": round(rss["decode_only"]),
           "search_peak_anon_mb": round(rss["search_anon"]), "decode_only_peak_anon_mb": round(rss["decode_only_anon"]),
           "ratio": round(rss["search"] / rss["decode_only"], 2), "search_s": rss["search_s"]}
    print(f"  memory: {res}", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one file, two codecs, fewer windows")
    ap.add_argument("--scorer", default="learned")
    ap.add_argument("--memory-minutes", type=float, default=60.0)
    ap.add_argument("--skip", nargs="*", default=[], help="startup throughput overhead decisions memory")
    ap.add_argument("--out", default=None)
    ap.add_argument("--cache-dir", default=None,
                    help="probe caches of the decisions bench (default: a fresh temp folder); "
                         "a warm one makes a rerun cheap but drops the speed-up figure")
    a = ap.parse_args()
    figures: dict = {"scorer": a.scorer}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        track = build_long_track(tmp / "four_minutes.wav")
        if "throughput" not in a.skip:
            print("scorer throughput", flush=True)
            figures["throughput"] = bench_throughput(a.scorer, 500 if a.quick else 2000)
        files = [track] + ([] if a.quick else _music_files())
        codecs = CODECS[:2] if a.quick else CODECS
        if "startup" not in a.skip:
            print("start-up", flush=True)
            figures["startup"] = bench_startup(a.scorer)
        if "overhead" not in a.skip:
            print("overhead vs plain ffmpeg", flush=True)
            figures["overhead"] = bench_overhead(files, tmp, a.scorer, codecs)
        if "decisions" not in a.skip:
            print("decisions learned vs visqol", flush=True)
            figures["decisions"] = bench_decisions(files, codecs, TARGETS, a.scorer,
                                                   Path(a.cache_dir) if a.cache_dir else tmp / "cache")
        if "memory" not in a.skip:
            print(f"peak memory, {a.memory_minutes:g}-minute input", flush=True)
            figures["memory"] = bench_memory(track, tmp, a.scorer, a.memory_minutes)
    if a.out:
        Path(a.out).write_text(json.dumps(figures, indent=1))
    print(json.dumps({k: v for k, v in figures.items() if k != "decisions"} | (
        {"decisions": {k: v for k, v in figures["decisions"].items() if k != "rows"}} if "decisions" in figures else {}),
        indent=1))


if __name__ == "__main__":
    main()
