"""Knob bench (issue 24): the knob search and the ladder search against a continuous
oracle made with the exact scorer, on long real music.

    nice -n 10 python bench/bench_knob.py run --tracks 6 --presets opus aac --targets 4.0 4.3
    python bench/bench_knob.py report [--json F]

``run``: for each track, preset and target, the default search (learned scorer, its
0.03 margin, the track sampled as encode samples it: 20 % in 3-s segments, one probe at a
time) runs twice through the library's own probe path (``open_session`` ->
``run_search``), once on the knob and once on the ladder (``ladder=True``), each with a
fresh prober (so its probe count is its own; encodes come from a disk ProbeCache, so a
rerun is cheap). Then the **continuous oracle**: the exact scorer (visqol-python) on the
same segments at fine steps (4 % of the bits) around the knob's choice, down until it
fails (or up until it passes); the crossing of the target by the exact p10 is the linear
interpolation in ln kbps between the last failing and the first passing step. One JSON
row per (track, preset, target) in ``/work/data/knob/rows.json``, written after each:
a killed run resumes.

Caveats: the oracle is searched near the knob's choice, so a dip more than 6 steps below
it is not seen (the ladder's own dips are in bench_oracle.py); "meets the target" is the
exact p10 of the probed segments at the chosen setting (the shipped file is checked on
the whole track by the learned scorer, verify.py).

Tracks: Wesnoth's music (Debian package wesnoth-1.16-music, CC BY-SA / GPL, Ogg Vorbis
~1-5 min), used here only, never in tests or the repository; ``--above-source`` is set
because the tracks are lossy (Vorbis ~ 128-192 kbps) and the bench wants the codec's
whole range.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
MUSIC = Path("/usr/share/games/wesnoth/1.16/data/core/music")
DATA = Path("/work/data/knob")
STEP_X = math.log(1.04)
MAX_STEPS = 6
#: a fixed, spread choice of tracks (sorted names, every 5th), so runs are comparable
def tracks(n: int) -> list[Path]:
    files = sorted(MUSIC.glob("*.ogg"))
    if not files:
        sys.exit(f"{MUSIC} is missing: apt-get install wesnoth-1.16-music")
    files = [f for f in files if f.stem not in ("silence",)]
    picked = files[::5]
    return picked[:n]


def _load(path: Path) -> list:
    return json.loads(path.read_text()) if path.exists() else []


def _save(path: Path, obj) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _search(session, preset, target, ladder):
    from ratecontrol.probing.prober import run_search

    session._probers.pop(preset.name, None)  # a fresh prober: its probes are this search's own
    pr = session.prober(preset)
    pr.parallel = 1
    t0 = time.perf_counter()
    res = run_search(pr, target, True, parallel=1, ladder=ladder)
    return pr, res, time.perf_counter() - t0


def _oracle(pr_exact, axis, x0: float, target: float) -> dict:
    """Exact p10 at fine steps from x0: down until a failure (or up until a pass)."""
    pts: dict[float, float] = {}

    def exact(x):
        x = axis.snap_x(min(max(x, axis.lo_x), axis.hi_x))
        if x not in pts:
            pts[x] = pr_exact.probe(pr_exact.setting(axis.value_of(x)), target).pooled_mos
        return x, pts[x]

    x, s = exact(x0)
    if s >= target:
        for _ in range(MAX_STEPS):
            if x <= axis.lo_x + 1e-9:
                break
            x, s = exact(x - STEP_X)
            if s < target:
                break
    else:
        for _ in range(MAX_STEPS):
            if x >= axis.hi_x - 1e-9:
                break
            x, s = exact(x + STEP_X)
            if s >= target:
                break
    ordered = sorted(pts.items())
    passes = [x for x, s in ordered if s >= target]
    cross = None
    if passes:
        hi = passes[0]
        fails = [(x, s) for x, s in ordered if x < hi]
        if fails:
            xl, sl = fails[-1]
            sh = pts[hi]
            cross = xl + (target - sl) / (sh - sl) * (hi - xl) if sh > sl else hi
        else:
            cross = hi  # the bottom of the range (or of the steps) passes
    return {"points": [[math.exp(x), s] for x, s in ordered], "cross_kbps": None if cross is None else math.exp(cross)}


def run(args) -> None:
    from ratecontrol.cache import ProbeCache
    from ratecontrol.options import Options
    from ratecontrol.presets import load_preset
    from ratecontrol.probing.session import open_session

    args.data.mkdir(parents=True, exist_ok=True)
    rows_path = args.data / "rows.json"
    rows = _load(rows_path)
    done = {(r["track"], r["preset"], r["target"]) for r in rows}
    cache = ProbeCache(args.data / "cache", max_mb=4096)
    paths = tracks(args.tracks)
    if args.names:
        paths = [MUSIC / n for n in args.names]
    for path in paths:
        for name in args.presets:
            todo = [t for t in args.targets if (path.name, name, t) not in done]
            if not todo:
                continue
            preset = load_preset(name)
            opts = Options(scorer="learned", above_source=True, cache=cache, jobs=1)
            s_learned = open_session(path, preset, opts)
            s_exact = open_session(path, preset, Options(scorer="visqol", above_source=True, cache=cache, jobs=1))
            pr_exact = s_exact.prober(preset)
            for t in todo:
                t0 = time.perf_counter()
                pk, rk, sec_k = _search(s_learned, preset, t, ladder=False)
                pl, rl, sec_l = _search(s_learned, preset, t, ladder=True)
                axis = pk.axis
                row = {"track": path.name, "preset": name, "target": t, "duration_s": s_learned.track.duration_s,
                       "sampled_s": rk.sampled_s, "margin": rk.margin_mos}
                for tag, res, sec in (("knob", rk, sec_k), ("ladder", rl, sec_l)):
                    c = res.chosen
                    ex = pr_exact.probe(pr_exact.setting(c.knob_value), t).pooled_mos if c.knob_value is not None else None
                    row[tag] = {"label": c.rung_label, "nominal_kbps": c.bitrate_kbps, "actual_kbps": c.actual_kbps,
                                "learned": c.pooled_mos, "exact": ex, "reached": res.reached, "probes": len(res.probes),
                                "probe_kbps": [p.bitrate_kbps for p in res.probes], "seconds": sec}
                row["oracle"] = _oracle(pr_exact, axis, axis.x_of(rk.chosen.knob_value), t)
                row["seconds"] = time.perf_counter() - t0
                rows.append(row)
                _save(rows_path, rows)
                o = row["oracle"]["cross_kbps"]
                print(f"{path.name[:28]:28} {name:6} {t}: knob {row['knob']['label']:>6} ({row['knob']['probes']} probes, "
                      f"exact {row['knob']['exact']:.3f}) ladder {row['ladder']['label']:>5} ({row['ladder']['probes']}) "
                      f"oracle {o if o is None else round(o, 1)} kbps  [{row['seconds']:.0f} s]", flush=True)
            s_learned.close()
            s_exact.close()


def replay(args) -> None:
    """The learned knob search again on the stored rows' tracks (cached probes; new
    settings are encoded and scored), with search.py's module constants overridden
    (``--set NAME=VALUE``): probes and choice per row, no exact scoring."""
    import numpy as np

    import ratecontrol.search as S
    from ratecontrol.cache import ProbeCache
    from ratecontrol.options import Options
    from ratecontrol.presets import load_preset
    from ratecontrol.probing.session import open_session

    import ratecontrol.probing.prober as P

    for kv in args.set or []:
        k, v = kv.split("=")
        setattr(P if hasattr(P, k) else S, k, type(getattr(P if hasattr(P, k) else S, k))(float(v)))
    defaults = dict(tolerance=S.KNOB_TOLERANCE_MOS, bracket_x=S.KNOB_BRACKET_X, recheck_x=S.RECHECK_X,
                    slope_prior=S.SLOPE_PRIOR_MOS_PER_X, near_miss=S.NEAR_MISS_MOS,
                    max_probes=int(S.MAX_KNOB_PROBES))
    S.search_knob.__kwdefaults__.update(defaults)
    cache = ProbeCache(args.data / "cache", max_mb=4096)
    rows = _load(args.data / "rows.json")
    sessions, counts, over = {}, [], []
    for r in rows:
        key = (r["track"], r["preset"])
        preset = load_preset(r["preset"])
        if key not in sessions:
            sessions[key] = open_session(MUSIC / r["track"], preset, Options(scorer="learned", above_source=True,
                                                                              cache=cache, jobs=1))
        pk, rk, _ = _search(sessions[key], preset, r["target"], ladder=False)
        counts.append(len(rk.probes))
        if r["oracle"]["cross_kbps"]:
            over.append(rk.chosen.bitrate_kbps / r["oracle"]["cross_kbps"] - 1)
        print(f"{r['track'][:20]:20} {r['preset']:6} {r['target']}: {rk.chosen.rung_label:>6} "
              f"{[p.rung_label for p in rk.probes]} (was {r['knob']['label']}, ladder {r['ladder']['label']})")
    print(f"probes median {np.median(counts):g} mean {np.mean(counts):.2f}; nominal vs oracle mean "
          f"{100 * np.mean(over):+.1f} %")


#: the tracks never looked at while tuning the search's constants (replay ran on the rest)
HELD_OUT = ("legends_of_the_north.ogg", "northerners.ogg", "siege_of_laurelmor.ogg")


def report(args) -> None:
    out = {}
    allrows = [r for r in _load(args.data / "rows.json") if r["oracle"]["cross_kbps"] is not None
               and r["knob"]["reached"]]
    for group, rows in (("held out", [r for r in allrows if r["track"] in HELD_OUT]),
                        ("tuning", [r for r in allrows if r["track"] not in HELD_OUT]), ("all", allrows)):
        if rows:
            print(f"-- {group}")
            out[group] = _summary(rows)
    if args.json:
        _save(args.json, out)


def _summary(rows) -> dict:
    import numpy as np

    out = {"searches": len(rows)}
    print(f"{len(rows)} searches with a reachable target "
          f"({len({r['track'] for r in rows})} tracks, presets {sorted({r['preset'] for r in rows})})")
    for tag in ("knob", "ladder"):
        bits = sum(r[tag]["nominal_kbps"] * r["duration_s"] for r in rows)
        actual = sum((r[tag]["actual_kbps"] or 0) * r["duration_s"] for r in rows)
        oracle = sum(r["oracle"]["cross_kbps"] * r["duration_s"] for r in rows)
        ex = [r[tag]["exact"] for r in rows if r[tag]["exact"] is not None]
        short = [r["target"] - r[tag]["exact"] for r in rows if r[tag]["exact"] is not None]
        met = sum(s <= 1e-9 for s in short)
        probes = [r[tag]["probes"] for r in rows]
        secs = [r[tag]["seconds"] for r in rows]
        d = {"bits_vs_oracle_pct": 100 * (bits / oracle - 1), "actual_kbps_total": actual,
             "meets_target": f"{met}/{len(short)}", "max_shortfall": max([0.0] + short),
             "over_0.02": sum(s > 0.02 for s in short), "probes_median": float(np.median(probes)),
             "probes_mean": float(np.mean(probes)), "search_s_mean": float(np.mean(secs)), "n_exact": len(ex)}
        out[tag] = d
        print(f"{tag:7} nominal bits vs oracle {d['bits_vs_oracle_pct']:+.1f} %; meets target (exact p10) {met}/{len(short)}"
              f", max shortfall {d['max_shortfall']:.3f} ({d['over_0.02']} > 0.02); probes median "
              f"{d['probes_median']:g} mean {d['probes_mean']:.2f}; search {d['search_s_mean']:.1f} s mean")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--tracks", type=int, default=6)
    r.add_argument("--presets", nargs="+", default=["opus", "aac"])
    r.add_argument("--targets", nargs="+", type=float, default=[4.0, 4.3])
    r.add_argument("--data", type=Path, default=DATA)
    r.add_argument("--names", nargs="*", help="these tracks of the music folder, in this order")
    p = sub.add_parser("replay")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--set", nargs="*")
    a = sub.add_parser("report")
    a.add_argument("--data", type=Path, default=DATA)
    a.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    {"run": run, "replay": replay, "report": report}[args.cmd](args)


if __name__ == "__main__":
    main()
