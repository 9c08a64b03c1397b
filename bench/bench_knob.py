"""Knob bench (issue 24): the knob search and the ladder search against a continuous
oracle made with the exact scorer, on long real music.

    nice -n 10 python bench/bench_knob.py run --tracks 6 --presets opus aac --targets 4.0 4.3
    python bench/bench_knob.py report [--json F] [--rows rows.json]
    python bench/bench_knob.py replay [--set NAME=VALUE ...]       # the tuning tracks again
    nice -n 10 python bench/bench_knob.py curves                    # learned rung curves + features
    python bench/bench_knob.py fit                                  # the first guess's prior
    python bench/bench_knob.py simulate [--set NAME=VALUE ...]      # the search on those curves

(issue 24 round 2: ``curves`` / ``fit`` / ``simulate`` tune the first guess and the knob
search's constants without encoding; docs/performance.md, "Round 2 (probes and bits)".)

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
    from ratecontrol.options import Options
    from ratecontrol.probing.searching import run_search

    session._probers.pop(preset.name, None)  # a fresh prober: its probes are this search's own
    pr = session.prober(preset)
    pr.parallel = 1
    t0 = time.perf_counter()
    res = run_search(pr, target, Options(best_effort=True), parallel=1, ladder=ladder)
    return pr, res, time.perf_counter() - t0


def _oracle(pr_exact, axis, x0: float, target: float, seed: dict | None = None) -> dict:
    """Exact p10 at fine steps from x0: down until a failure (or up until a pass).
    ``seed``: exact points measured before on the same curve (an earlier run's oracle,
    {kbps: p10}); when they and x0 already hold a failure below the lowest pass, no
    step is taken."""
    pts: dict[float, float] = {axis.snap_x(math.log(k)): v for k, v in (seed or {}).items()}

    def exact(x):
        x = axis.snap_x(min(max(x, axis.lo_x), axis.hi_x))
        if x not in pts:
            pts[x] = pr_exact.probe(pr_exact.setting(axis.value_of(x)), target).pooled_mos
        return x, pts[x]

    x, s = exact(x0)
    passes = [p for p, v in pts.items() if v >= target]
    settled = seed and passes and any(p < min(passes) for p in pts)
    if settled:
        pass  # the seed and x0 bracket the crossing already
    elif s >= target:
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
    rows_path = args.data / args.rows
    rows = _load(rows_path)
    done = {(r["track"], r["preset"], r["target"]) for r in rows}
    # an earlier run's exact oracle points seed this one (the curve is the same; only the
    # search changed): usually one exact probe per search, at the new choice
    earlier = {(r["track"], r["preset"], r["target"]): r for r in _load(args.data / args.oracle_from)} \
        if args.oracle_from else {}
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
                old = earlier.get((path.name, name, t))
                seed = {k: v for k, v in old["oracle"]["points"]} if old else None
                row["oracle"] = _oracle(pr_exact, axis, axis.x_of(rk.chosen.knob_value), t, seed)
                row["seconds"] = time.perf_counter() - t0
                rows.append(row)
                _save(rows_path, rows)
                o = row["oracle"]["cross_kbps"]
                print(f"{path.name[:28]:28} {name:6} {t}: knob {row['knob']['label']:>6} ({row['knob']['probes']} probes, "
                      f"exact {row['knob']['exact']:.3f}) ladder {row['ladder']['label']:>5} ({row['ladder']['probes']}) "
                      f"oracle {o if o is None else round(o, 1)} kbps  [{row['seconds']:.0f} s]", flush=True)
            s_learned.close()
            s_exact.close()


#: the tracks never looked at while tuning the search's constants (replay ran on the rest)
HELD_OUT = ("legends_of_the_north.ogg", "northerners.ogg", "siege_of_laurelmor.ogg")
#: the tracks replay tunes on
TUNING = ("battle-epic.ogg", "defeat2.ogg", "heroes_rite.ogg")


#: the rungs the ``curves`` command probes: from where the learned p10 is below
#: CURVE_LOW_MOS up to where it is at least CURVE_HIGH_MOS (targets 4.0-4.5 + margin)
CURVE_LOW_MOS, CURVE_HIGH_MOS = 3.9, 4.6


def curves(args) -> None:
    """Learned p10 at the ladder's rungs around the targets, for the tracks that are not
    held out, and the cheap features of each reference (ratecontrol.guess): the data the
    first guess's prior is fitted on. One JSON row per (track, preset) in
    ``curves.json``, written after each (resumable); probes go to the same disk cache."""
    from ratecontrol.cache import ProbeCache
    from ratecontrol.options import Options
    from ratecontrol.presets import load_preset
    from ratecontrol.probing.session import open_session

    path_out = args.data / "curves.json"
    rows = _load(path_out)
    done = {(r["track"], r["preset"]) for r in rows}
    cache = ProbeCache(args.data / "cache", max_mb=4096)
    files = [f for f in sorted(MUSIC.glob("*.ogg")) if f.stem != "silence" and f.name not in HELD_OUT]
    first = [MUSIC / n for n in TUNING]
    files = first + [f for f in files if f not in first]
    for path in files[: args.tracks]:
        for name in args.presets:
            if (path.name, name) in done:
                continue
            preset = load_preset(name)
            s = open_session(path, preset, Options(scorer="learned", above_source=True, cache=cache, jobs=1))
            pr = s.prober(preset)
            pr.parallel = 1
            pr.warm_up()
            t0 = time.perf_counter()
            n = len(pr.ladder)
            pts: dict[int, float] = {}

            def at(i):
                if i not in pts:
                    pts[i] = pr.probe(i, 0.0).pooled_mos
                return pts[i]

            i = n // 2 - 1
            while i > 0 and at(i) >= CURVE_LOW_MOS:
                i -= 1
            i = n // 2 - 1
            while i < n - 1 and not at(i) >= CURVE_HIGH_MOS:
                i += 1
            from ratecontrol.guess import reference_features

            row = {"track": path.name, "preset": name, "duration_s": s.track.duration_s,
                   "points": [[pr.ladder[i].nominal_kbps, pts[i]] for i in sorted(pts)],
                   "features": reference_features(pr.source.ref_w).as_dict(),
                   "seconds": time.perf_counter() - t0}
            s.close()
            rows.append(row)
            _save(path_out, rows)
            print(f"{path.name[:28]:28} {name:6} {[(round(k), round(v, 3)) for k, v in row['points']]} "
                  f"[{row['seconds']:.0f} s]", flush=True)


def _crossing_x(points, level):
    """The lowest ln kbps where the piecewise-linear curve through ``points`` ([kbps, mos],
    by kbps) reaches ``level``; None if it never does or starts above it."""
    pts = [(math.log(k), m) for k, m in points if m == m]
    if not pts or pts[0][1] >= level:
        return None
    for (x1, s1), (x2, s2) in zip(pts, pts[1:]):
        if s1 < level <= s2:
            return x1 + (level - s1) / (s2 - s1) * (x2 - x1)
    return None


def _fit_prior(rows, preset, feature, exclude=None):
    """Least squares ln kbps at the crossing = a + b (level - 4.3) [+ c (ln feature - centre)]
    over the curves of ``preset`` (but ``exclude``'s track), levels 4.03 / 4.33 / 4.53."""
    import numpy as np

    X, y, fs = [], [], []
    for r in rows:
        if r["preset"] != preset or r["track"] == exclude:
            continue
        for lv in SIM_LEVELS:
            xc = _crossing_x(r["points"], lv)
            if xc is not None:
                f = math.log(r["features"][feature]) if feature else 0.0
                X.append([1.0, lv - 4.3, f]); y.append(xc); fs.append(f)
    X, y = np.array(X), np.array(y)
    centre = float(np.mean(fs)) if feature else 0.0
    X[:, 2] -= centre
    if not feature:
        X = X[:, :2]
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    return [float(c) for c in coef] + ([0.0] if not feature else []), centre, float(np.std(resid))


SIM_LEVELS = (4.03, 4.33, 4.53)


def simulate(args) -> None:
    """The knob search on the learned rung curves of ``curves.json`` (piecewise linear in
    ln kbps between the rungs, plus a fixed pseudo-random wiggle of +-``--jitter`` MOS per
    kbps, as real curves step at a fine scale), with each first-guess model fitted
    leave-one-track-out: probes per search and kbps over the crossing of the bar."""
    import hashlib

    import numpy as np

    import ratecontrol.guess as G
    import ratecontrol.search as S

    _apply_sets(args.set)
    rows = [r for r in _load(args.data / "curves.json") if r["preset"] in args.presets]
    ladders = {"opus": 64.0, "aac": 112.0}
    for model in args.models:
        counts, over, n = [], [], 0
        for r in rows:
            pts = [(math.log(k), m) for k, m in r["points"]]
            xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
            sl_lo = max((ys[1] - ys[0]) / (xs[1] - xs[0]), 0.3) if len(xs) > 1 else 1.0
            sl_hi = max((ys[-1] - ys[-2]) / (xs[-1] - xs[-2]), 0.1) if len(xs) > 1 else 0.3

            def f(x, r=r, xs=xs, ys=ys, sl_lo=sl_lo, sl_hi=sl_hi):
                if x < xs[0]:
                    base = ys[0] - sl_lo * (xs[0] - x)
                elif x > xs[-1]:
                    base = ys[-1] + sl_hi * (x - xs[-1])
                else:
                    base = float(np.interp(x, xs, ys))
                h = hashlib.blake2b(f"{r['track']}{r['preset']}{round(math.exp(x))}".encode(), digest_size=4)
                u = int.from_bytes(h.digest(), "little") / 2**32
                return min(base, 4.75) + args.jitter * (2 * u - 1)

            if model != "rung":
                coef, centre, _ = _fit_prior(rows, r["preset"], None if model == "prior" else model, r["track"])
            for t in args.targets:
                bar = t + args.margin
                xc = _crossing_x(r["points"], bar)
                if xc is None:
                    continue
                if model == "rung":
                    first = math.log(ladders[r["preset"]])
                else:
                    fv = math.log(r["features"][model]) - centre if model != "prior" else 0.0
                    first = coef[0] + coef[1] * (bar - 4.3) + coef[2] * fv + G.FIRST_GUESS_OFFSET_X
                out = S.search_knob(f, t, math.log(16), math.log(256), first_x=first, margin=args.margin,
                                    snap=lambda x: math.log(max(1, round(math.exp(x)))))
                if out.chosen is None:
                    continue
                counts.append(len(out.probes))
                over.append(math.exp(out.chosen - xc) - 1)
                if args.trace:
                    print(f"  {r['track'][:14]:14} {r['preset']:5} {t}: cross {math.exp(xc):5.1f} first "
                          f"{math.exp(first):5.1f} -> {math.exp(out.chosen):5.1f} "
                          + " ".join(f"{math.exp(x):.0f}:{s - bar:+.3f}" for x, s in out.probes))
                n += 1
        c = np.array(counts)
        print(f"{model:12} {n} searches: probes median {np.median(c):g} mean {c.mean():.2f} "
              f"(<=3: {100 * np.mean(c <= 3):.0f} %); kbps over the bar's crossing mean {100 * np.mean(over):+.1f} % "
              f"median {100 * np.median(over):+.1f} %")


def fit(args) -> None:
    """The first guess's prior fitted on every curve of ``curves.json`` (no held-out
    track is in it): coefficients for ratecontrol/guess.py, per preset and feature."""
    rows = _load(args.data / "curves.json")
    print(f"{len({r['track'] for r in rows})} tracks")
    for preset in sorted({r["preset"] for r in rows}):
        for feature in (None, "complexity", "bandwidth_hz", "flux_db", "rms_dbfs"):
            if feature == "rms_dbfs":
                continue  # negative: ln undefined
            coef, centre, sd = _fit_prior(rows, preset, feature)
            print(f"{preset:6} {str(feature):12} a {coef[0]:.4f} b {coef[1]:.4f} c {coef[2]:.4f} centre {centre:.4f} "
                  f"residual sd {sd:.3f} ln kbps")


def _apply_sets(sets) -> None:
    """``NAME=VALUE``: set a module constant of the knob search (ratecontrol.knob_search),
    the first guess (ratecontrol.guess) or the prober, and the search's keyword defaults."""
    import ratecontrol.guess as G
    import ratecontrol.knob_search as K
    import ratecontrol.probing.prober as P
    import ratecontrol.probing.searching as S

    for kv in sets or []:
        k, v = kv.split("=")
        mod = next(m for m in (P, S, G, K) if hasattr(m, k))
        setattr(mod, k, type(getattr(mod, k))(float(v)))
    K.search_knob.__kwdefaults__.update(
        dict(tolerance=K.KNOB_TOLERANCE_MOS, bracket_x=K.KNOB_BRACKET_X, recheck_x=K.RECHECK_X,
             slope_prior=K.KNOB_SLOPE_PRIOR_MOS_PER_X, near_miss=K.KNOB_NEAR_MISS_MOS, max_probes=int(K.MAX_KNOB_PROBES)))


def replay(args) -> None:
    """The learned knob search again on the stored rows' tracks (cached probes; new
    settings are encoded and scored), with the knob search's module constants (ratecontrol.knob_search, guess, prober) overridden
    (``--set NAME=VALUE``): probes and choice per row, no exact scoring."""
    import numpy as np

    from ratecontrol.cache import ProbeCache
    from ratecontrol.options import Options
    from ratecontrol.presets import load_preset
    from ratecontrol.probing.session import open_session

    _apply_sets(args.set)
    cache = ProbeCache(args.data / "cache", max_mb=4096)
    # the tuning tracks only, unless asked: the held-out ones are run once, by ``run``
    rows = [r for r in _load(args.data / "rows.json") if r["track"] in (args.names or TUNING)]
    sessions, counts, over, bits, oracle = {}, [], [], 0.0, 0.0
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
            bits += rk.chosen.bitrate_kbps * r["duration_s"]
            oracle += r["oracle"]["cross_kbps"] * r["duration_s"]
        print(f"{r['track'][:20]:20} {r['preset']:6} {r['target']}: {rk.chosen.rung_label:>6} "
              f"{[p.rung_label for p in rk.probes]} (was {r['knob']['label']}, ladder {r['ladder']['label']})")
    print(f"probes median {np.median(counts):g} mean {np.mean(counts):.2f}; nominal vs oracle: per search mean "
          f"{100 * np.mean(over):+.1f} %, total bits {100 * (bits / oracle - 1):+.1f} %")




def report(args) -> None:
    out = {}
    allrows = [r for r in _load(args.data / args.rows) if r["oracle"]["cross_kbps"] is not None
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
    r.add_argument("--rows", default="rows.json", help="the rows file under --data (resumes it)")
    r.add_argument("--oracle-from", default=None, help="an earlier rows file under --data whose exact oracle "
                   "points seed this run's")
    p = sub.add_parser("replay")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--set", nargs="*")
    p.add_argument("--names", nargs="*", help="tracks of rows.json to replay (default: the tuning tracks)")
    c = sub.add_parser("curves")
    c.add_argument("--tracks", type=int, default=40)
    c.add_argument("--presets", nargs="+", default=["opus", "aac"])
    c.add_argument("--data", type=Path, default=DATA)
    m = sub.add_parser("simulate")
    m.add_argument("--data", type=Path, default=DATA)
    m.add_argument("--set", nargs="*")
    m.add_argument("--presets", nargs="+", default=["opus", "aac"])
    m.add_argument("--targets", nargs="+", type=float, default=[4.0, 4.3, 4.5])
    m.add_argument("--margin", type=float, default=0.03)
    m.add_argument("--jitter", type=float, default=0.015)
    m.add_argument("--trace", action="store_true")
    m.add_argument("--models", nargs="+", default=["rung", "prior", "complexity", "bandwidth_hz", "flux_db"])
    f = sub.add_parser("fit")
    f.add_argument("--data", type=Path, default=DATA)
    a = sub.add_parser("report")
    a.add_argument("--data", type=Path, default=DATA)
    a.add_argument("--json", type=Path, default=None)
    a.add_argument("--rows", default="rows.json")
    args = ap.parse_args()
    {"run": run, "replay": replay, "report": report, "curves": curves, "simulate": simulate, "fit": fit}[args.cmd](args)


if __name__ == "__main__":
    main()
