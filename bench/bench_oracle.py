"""Oracle bench (issue 14): every rung of every preset scored, the cheapest passing rung
per target as the oracle, and the ladder search replayed against it.

    python bench/bench_oracle.py measure --scorer learned            # every rung, every track
    python bench/bench_oracle.py measure --scorer visqol --rungs around   # exact, a subset
    python bench/bench_oracle.py measure --scorer visqol --rungs all --files soprano-E4.wav ...
    python bench/bench_oracle.py analyse [--json F]
    python bench/bench_oracle.py prior                # a batch prior (previous track's rung) vs none

``measure`` scores rungs through the library's own probe path (``probing.session.open_session`` ->
``Prober.probe``: the same decode rate, windows, silence rule and float-fed encode the
search sees) and keeps every window's score in ``/work/data/oracle/curves-<scorer>.json``
(``--data``), one entry per (track, preset, rung), written after each (track, preset):
a killed run resumes where it stopped. ``--rungs around`` scores with the exact scorer
only the rungs that decide something: for each target and margin, the learned oracle's
rung and the rungs the searches under study (``--rules``) choose.

``analyse`` is pure: it pools the stored windows (p10 by default, ``--pools``), takes the
oracle as the lowest rung whose learned pooled score meets the target (and the exact
oracle where the exact scorer covered the whole ladder), replays each search rule of
``ratecontrol.search`` on the learned curve (k = 1 and k = 2 rungs per round), and
reports same-rung %, the exact shortfall at the chosen rung, bits vs the oracle and the
probe counts; then how far the learned track p10 is from the exact one, and the share of
tracks whose chosen rung meets the target by the exact scorer for each search margin.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
AUDIO = HERE.parent / "shared" / "audio"
DATA = Path("/work/data/oracle")
PRESETS = ["opus", "aac", "mp3", "mp3-vbr", "vorbis"]
TARGETS = [4.0, 4.3, 4.5]
MARGINS = [0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08]
# stereo 44.1 kHz music of the FLAC testbench (distinct excerpts), then the sms-tools
# recordings; 61 is a synthetic stress signal, reported apart from music
FLAC = [f"{i:02d} - blocksize {b}.flac" for i, b in
        [(1, 4096), (2, 4608), (3, 16), (4, 192), (5, 254), (6, 512), (7, 725), (8, 1000), (9, 1937), (10, 2304)]] + [
    "11 - partition order 8.flac", "14 - wasted bits.flac", "17 - all fixed orders.flac",
    "18 - precision search.flac", "24 - variable blocksize file created with flake revision 264.flac",
    "26 - variable blocksize file created with CUETools.Flake 2.1.6.flac", "61 - predictor overflow check, 16-bit.flac"]
SYNTHETIC = {"61 - predictor overflow check, 16-bit.flac"}


def tracks() -> list[Path]:
    out = [AUDIO / "flac-test-files" / f for f in FLAC if (AUDIO / "flac-test-files" / f).exists()]
    out += sorted((AUDIO / "sms-tools").rglob("*.wav"))
    if not out:
        sys.exit(f"{AUDIO} is missing: the oracle bench needs real music")
    return out


# ---------------------------------------------------------------- storage (JSON, resumable)

def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _save(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def curves_path(data: Path, scorer: str) -> Path:
    return data / f"curves-{scorer}.json"


# ---------------------------------------------------------------- pooling and replay (pure)

def pooled(entry: dict, pool: str) -> float:
    from ratecontrol.scoring.pooling import pool as pool_scores

    w = np.array([np.nan if v is None else v for v in entry["w"]], dtype=np.float64)
    return pool_scores(w[~np.isnan(w)], pool)


def oracle(curve: list[float], target: float) -> int | None:
    return next((i for i, s in enumerate(curve) if not math.isnan(s) and s >= target), None)


def replay(curve: list[float], target: float, k: int, rule: str) -> tuple[int | None, list[int]]:
    """The search rule ``rule`` of ratecontrol.search on a stored curve: (chosen, probes)."""
    from ratecontrol.search import search_ladder

    calls: list[int] = []

    def ev(i):
        calls.append(i)
        return curve[i]

    def many(idx):
        calls.extend(idx)
        return [curve[i] for i in idx]

    name, _, nm = rule.partition(":")
    kw = {"near_miss": float(nm)} if nm else {}
    out = search_ladder(len(curve), ev, target, parallel=k, evaluate_many=many, rule=name, **kw)
    return out.chosen, calls


# ---------------------------------------------------------------- measure

def measure(a) -> None:
    global RULES, MARGINS
    RULES = a.rules or RULES
    MARGINS = a.margins if a.margins is not None else MARGINS
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from ratecontrol.options import Options
    from ratecontrol.probing.session import open_session
    from ratecontrol.presets import load_preset
    from ratecontrol.scoring import get_scorer

    scorer = get_scorer(a.scorer, n_jobs=1)  # one core: the VM is shared
    data = Path(a.data)
    data.mkdir(parents=True, exist_ok=True)
    path = curves_path(data, a.scorer)
    store = _load(path)
    learned = _load(curves_path(data, "learned")) if a.scorer != "learned" else store
    files = tracks()
    if a.files:
        files = [f for f in files if any(s in f.name for s in a.files)]
    t_start = time.time()
    n_new = 0
    for f in files:
        for pname in a.presets:
            preset = load_preset(pname)
            per = store.setdefault(f.name, {}).setdefault(pname, {})
            want = None
            if a.rungs == "around":
                want = rungs_around(learned.get(f.name, {}).get(pname))
                if want is None:
                    continue
            t0 = time.time()
            done = 0
            session = open_session(f, preset, Options(scorer=scorer, pool="p10", jobs=1, cache=False))
            prober = session.prober(preset)
            rungs = prober.rungs
            for i in range(len(rungs)):
                if (want is not None and i not in want) or rungs[i].label in per:
                    continue
                p = prober.probe(i, 99.0)
                per[rungs[i].label] = {"i": i, "kbps": p.bitrate_kbps, "bytes": p.encoded_bytes,
                                       "w": [None if math.isnan(v) else round(v, 5) for v in p.window_mos]}
                done += 1
            if done:
                n_new += done
                _save(path, store)
                print(f"{time.strftime('%H:%M:%S')} {a.scorer} {f.name[:40]:<40} {pname:<8} {done:2d} rungs "
                      f"{time.time() - t0:6.1f} s (total {time.time() - t_start:7.0f} s)", flush=True)
    print(f"done: {n_new} new rung scores in {time.time() - t_start:.0f} s", flush=True)


def _curve(per: dict | None, pool: str = "p10") -> list[float] | None:
    if not per:
        return None
    ent = sorted(per.values(), key=lambda e: e["i"])
    if [e["i"] for e in ent] != list(range(len(ent))):
        return None
    return [pooled(e, pool) for e in ent]


def rungs_around(per: dict | None) -> set[int] | None:
    """Rungs the exact scorer must see to judge decisions: the learned oracle's rung for
    every target and margin, and what each search rule chooses there."""
    curve = _curve(per)
    if curve is None:
        return None
    want: set[int] = set()
    for t in TARGETS:
        for m in MARGINS:
            o = oracle(curve, t + m)
            if o is not None:
                want.add(o)
            for rule in RULES:
                for k in (1, 2):
                    c, _ = replay(curve, t + m, k, rule)
                    if c is not None:
                        want.add(c)
    return want


# ---------------------------------------------------------------- analyse

#: rules replayed: ``name[:near_miss]`` of ratecontrol.search ("recheck" = the default threshold)
RULES = ["monotone", "recheck"]


def analyse(a) -> dict:
    global RULES, MARGINS
    RULES = a.rules or RULES
    MARGINS = a.margins if a.margins is not None else MARGINS
    data = Path(a.data)
    learned = _load(curves_path(data, "learned"))
    exact = _load(curves_path(data, "visqol"))
    out: dict = {}
    # 1. how often and where curves dip (learned, every rung), per codec and pooling
    dips = {}
    for pool in a.pools:
        for pname in PRESETS:
            n = n_dip = 0
            depth = []
            for f, per in learned.items():
                c = _curve(per.get(pname), pool)
                if c is None or f in SYNTHETIC:
                    continue
                n += 1
                # a dip: a rung scoring below a cheaper one by more than eps
                run_max, d = -np.inf, 0.0
                for s in c:
                    d = max(d, run_max - s)
                    run_max = max(run_max, s)
                depth.append(d)
                n_dip += d > a.eps
            dips[f"{pname}/{pool}"] = {"curves": n, "dipping": n_dip,
                                       "max_depth": round(max(depth), 3) if depth else None,
                                       "median_depth_of_dipping": round(float(np.median([x for x in depth if x > a.eps])), 3)
                                       if n_dip else None}
    out["dips"] = dips
    # decision-relevant non-monotonicity: (curve, target) cases where a rung above the
    # oracle fails; how far below the target such rungs score (a search that probes one
    # missing by more than near_miss is fooled)
    for pool in ("p10",):
        for t in TARGETS:
            cases, misses = 0, []
            for f, perf in learned.items():
                if f in SYNTHETIC:
                    continue
                for pname in PRESETS:
                    c = _curve(perf.get(pname), pool)
                    if c is None:
                        continue
                    o = oracle(c, t)
                    if o is None:
                        continue
                    m = [t - s for s in c[o + 1:] if s < t]
                    if m:
                        cases += 1
                        misses.append(max(m))
            out.setdefault("fooling", {})[f"{pool}/{t}"] = {
                "cases": cases, "max_miss_quantiles_50_90_100": [round(float(np.percentile(misses, q)), 3) for q in (50, 90, 100)] if misses else None,
                "misses": sorted(round(x, 3) for x in misses)}
    # decision-relevant dips: the monotone search returns a rung above the oracle
    # 2. replay the searches
    rows = []
    for f, perf in learned.items():
        for pname in PRESETS:
            per = perf.get(pname)
            c = _curve(per)
            if c is None:
                continue
            kb = [e["bytes"] for e in sorted(per.values(), key=lambda e: e["i"])]
            labels = [lab for lab, e in sorted(per.items(), key=lambda kv: kv[1]["i"])]
            ex = exact.get(f, {}).get(pname, {})
            # the oracle's curve: exact where the exact scorer saw the rung (the rungs that
            # decide), learned elsewhere
            hyb = [pooled(ex[lab], "p10") if lab in ex else c[j] for j, lab in enumerate(labels)]
            for t in TARGETS:
                ox = oracle(hyb, t)
                for m in MARGINS:
                    o = oracle(c, t)  # the oracle is always for the target itself
                    for rule in RULES:
                        for k in (1, 2):
                            ch, calls = replay(c, t + m, k, rule)
                            r = {"file": f, "preset": pname, "target": t, "margin": m, "rule": rule, "k": k,
                                 "oracle": o, "oracle_x": ox, "oracle_bar": oracle(c, t + m), "chosen": ch, "probes": len(calls),
                                 "music": f not in SYNTHETIC}
                            if ch is not None:
                                e = ex.get(labels[ch])
                                r["exact_at_chosen"] = None if e is None else pooled(e, "p10")
                                r["learned_at_chosen"] = c[ch]
                                r["bytes"] = kb[ch]
                            if o is not None:
                                r["oracle_bytes"] = kb[o]
                            if ox is not None:
                                r["oracle_x_bytes"] = kb[ox]
                            rows.append(r)
    out["summary"] = summarise(rows)
    # 3. learned vs exact error on the pooled track statistic
    err = []
    for f, perf in exact.items():
        if f in SYNTHETIC:
            continue
        for pname, per in perf.items():
            for lab, e in per.items():
                le = learned.get(f, {}).get(pname, {}).get(lab)
                if le is None:
                    continue
                x, y = pooled(le, "p10"), pooled(e, "p10")
                if not (math.isnan(x) or math.isnan(y)):
                    err.append((pname, y, x - y))
    if err:
        d = np.array([e[2] for e in err])
        near = np.array([e[2] for e in err if 3.8 <= e[1] <= 4.7])
        out["p10_error"] = {"pairs": len(d), "bias": round(float(d.mean()), 4), "rmse": round(float(np.sqrt((d ** 2).mean())), 4),
                            "p95_over": round(float(np.percentile(d, 95)), 4), "p97_over": round(float(np.percentile(d, 97)), 4),
                            "max_over": round(float(d.max()), 4), "max_under": round(float(d.min()), 4),
                            "pairs_3.8_4.7": len(near),
                            "rmse_3.8_4.7": round(float(np.sqrt((near ** 2).mean())), 4) if len(near) else None,
                            "p97_over_3.8_4.7": round(float(np.percentile(near, 97)), 4) if len(near) else None,
                            "per_preset": {p: {"n": int(sum(e[0] == p for e in err)),
                                               "bias": round(float(np.mean([e[2] for e in err if e[0] == p])), 4)}
                                           for p in sorted({e[0] for e in err})}}
    # 4. where the exact scorer covered a whole ladder: its own oracle
    full = []
    for f, perf in exact.items():
        for pname, per in perf.items():
            lper = learned.get(f, {}).get(pname)
            ce, cl = _curve(per), _curve(lper)
            if ce is None or cl is None or len(ce) != len(cl):
                continue
            labels = [lab for lab, e in sorted(lper.items(), key=lambda kv: kv[1]["i"])]
            for t in TARGETS:
                oe, ol = oracle(ce, t), oracle(cl, t)
                ch, calls = replay(cl, t, 2, "recheck")
                chm, _ = replay(cl, t, 2, "monotone")
                ev, _ = replay(ce, t, 2, "recheck")
                evm, _ = replay(ce, t, 2, "monotone")
                lab = lambda i: None if i is None else labels[i]
                full.append({"file": f, "preset": pname, "target": t, "exact_oracle": lab(oe), "learned_oracle": lab(ol),
                             "learned_search": lab(ch), "learned_search_monotone": lab(chm),
                             "exact_search": lab(ev), "exact_search_monotone": lab(evm),
                             "exact_at_learned_search": None if ch is None else round(ce[ch], 3)})
    if full:
        out["exact_full_ladders"] = {
            "searches": len(full),
            "learned_oracle_is_exact_oracle": sum(r["exact_oracle"] == r["learned_oracle"] for r in full),
            "learned_search_is_exact_oracle": sum(r["exact_oracle"] == r["learned_search"] for r in full),
            "exact_search_is_exact_oracle": sum(r["exact_oracle"] == r["exact_search"] for r in full),
            "exact_monotone_search_is_exact_oracle": sum(r["exact_oracle"] == r["exact_search_monotone"] for r in full),
            "rows": full}
    if a.json:
        Path(a.json).write_text(json.dumps(out | {"rows": rows}, indent=1))
    print(json.dumps(out, indent=1))
    return out


def _per_track(judged: list[dict]) -> dict:
    out: dict = {}
    for r in judged:
        out.setdefault(r["file"], []).append(r["exact_at_chosen"] >= r["target"] - 1e-9)
    return out


def summarise(rows: list[dict]) -> dict:
    res = {}
    for rule in RULES:
        for k in (1, 2):
            for m in MARGINS:
                sel = [r for r in rows if r["rule"] == rule and r["k"] == k and r["margin"] == m and r["music"]]
                both = [r for r in sel if r["oracle"] is not None]
                same = sum(r["chosen"] == r["oracle"] for r in both)
                judged = [r for r in sel if r["chosen"] is not None and r.get("exact_at_chosen") is not None]
                short = [r["target"] - r["exact_at_chosen"] for r in judged]
                bits = sum(r["bytes"] for r in both if r["chosen"] is not None)
                obits = sum(r["oracle_bytes"] for r in both if r["chosen"] is not None)
                reach = [r for r in sel if r["chosen"] is not None]
                bx = [r for r in sel if r["oracle_x"] is not None]
                bits_x = sum(r["bytes"] for r in bx if r["chosen"] is not None)
                obits_x = sum(r["oracle_x_bytes"] for r in bx if r["chosen"] is not None)
                res[f"{rule}/k{k}/m{m:g}"] = {
                    "searches": len(sel), "with_oracle": len(both),
                    "same_rung_pct": round(100 * same / max(len(both), 1), 1),
                    "above_oracle": sum(r["chosen"] is not None and r["oracle"] is not None and r["chosen"] > r["oracle"] for r in sel),
                    "below_oracle": sum(r["chosen"] is not None and r["oracle"] is not None and r["chosen"] < r["oracle"] for r in sel),
                    "exact_judged": len(judged), "exact_of_reached": f"{len(judged)}/{len(reach)}",
                    "meets_exact_pct": round(100 * sum(s <= 1e-9 for s in short) / max(len(judged), 1), 1),
                    "max_shortfall": round(max(short), 4) if short else None,
                    "shortfall_over_0.02": sum(s > 0.02 for s in short),
                    "bits_vs_oracle": round(bits / max(obits, 1), 4),
                    # the search's own job: the cheapest rung the learned scorer passes at target + margin
                    "same_rung_at_bar_pct": round(100 * sum(r["chosen"] == r["oracle_bar"] for r in sel) / max(len(sel), 1), 1),
                    "tracks_all_meet_exact": f"{sum(all(v) for v in _per_track(judged).values())}/{len(_per_track(judged))}",
                    "same_rung_x_pct": round(100 * sum(r["chosen"] == r["oracle_x"] for r in bx) / max(len(bx), 1), 1),
                    "above_x": sum(r["chosen"] is not None and r["chosen"] > r["oracle_x"] for r in bx),
                    "below_x": sum(r["chosen"] is not None and r["chosen"] < r["oracle_x"] for r in bx),
                    "bits_vs_oracle_x": round(bits_x / max(obits_x, 1), 4),
                    "median_probes": float(np.median([r["probes"] for r in sel])) if sel else None,
                    "mean_probes": round(float(np.mean([r["probes"] for r in sel])), 2) if sel else None,
                }
    return res


def prior(a) -> None:
    """Replay the default search with a batch-style prior: the first probe at the rung
    chosen for the previous track of the same set (walk order; FLAC testbench, sms-tools),
    against no prior. Pure, on the stored learned curves."""
    from ratecontrol.search import search_ladder

    curves = _load(curves_path(Path(a.data), "learned"))
    names = [n for n in sorted(curves) if n not in SYNTHETIC]
    sets = {"flac": [n for n in names if n in FLAC], "sms": [n for n in names if n not in FLAC]}

    def run(curve, target, k, guess):
        calls, rounds = [], [0]

        def many(idx):
            calls.extend(idx)
            rounds[0] += 1
            return [curve[i] for i in idx]

        out = search_ladder(len(curve), lambda i: many([i])[0], target, parallel=k, evaluate_many=many,
                            first_guess=guess, margin=a.margin)
        return out.chosen, len(calls), rounds[0]

    for k in (1, 2):
        for mode in ("none", "previous"):
            n = probes = rounds = same = 0
            for preset in PRESETS:
                for target in TARGETS:
                    for members in sets.values():
                        prev = None
                        for name in members:
                            per = curves[name].get(preset)
                            if not per:
                                continue
                            curve = [pooled(e, "p10") for e in sorted(per.values(), key=lambda e: e["i"])]
                            guess = prev if mode == "previous" else None
                            chosen, p, r = run(curve, target, k, guess)
                            n, probes, rounds = n + 1, probes + p, rounds + r
                            same += chosen == run(curve, target, k, None)[0]
                            prev = chosen if chosen is not None else prev
            print(f"k={k} prior={mode:8s} searches {n}: probes/search {probes / n:.2f}, rounds/search "
                  f"{rounds / n:.2f}, same choice as without a prior {100 * same / n:.1f} %")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--scorer", default="learned")
    m.add_argument("--presets", nargs="*", default=PRESETS)
    m.add_argument("--rungs", choices=["all", "around"], default="all")
    m.add_argument("--files", nargs="*", default=None, help="substrings of track names")
    m.add_argument("--data", default=str(DATA))
    m.add_argument("--rules", nargs="*", default=None, help="rules whose choices --rungs around scores")
    m.add_argument("--margins", nargs="*", type=float, default=None)
    s = sub.add_parser("analyse")
    s.add_argument("--data", default=str(DATA))
    s.add_argument("--pools", nargs="*", default=["p10", "mean", "min"])
    s.add_argument("--eps", type=float, default=0.02, help="a dip deeper than this counts")
    s.add_argument("--json", default=None)
    s.add_argument("--rules", nargs="*", default=None, help="e.g. monotone recheck:0.05 recheck:0.1")
    s.add_argument("--margins", nargs="*", type=float, default=None)
    q = sub.add_parser("prior", help="first probe at the previous track's rung (a batch prior) vs none")
    q.add_argument("--data", default=str(DATA))
    q.add_argument("--margin", type=float, default=0.03)
    a = ap.parse_args()
    {"measure": measure, "analyse": analyse, "prior": prior}[a.cmd](a)


if __name__ == "__main__":
    main()
