"""Which segments should a sampled search probe? Measured, not assumed.

    python bench/bench_sampling.py measure [--out DIR] [FILES...]   # slow: full-track scores per rung
    python bench/bench_sampling.py analyse [--out DIR]              # fast: strategies vs the full track
    python bench/bench_sampling.py exact FILE [--codec opus --rung 64k]  # learned vs ViSQOL by window level
    python bench/bench_sampling.py critical FILES... [--json F]  # critical-segment probes vs full sample (issue 25)

``measure`` encodes every relevant rung of opus, aac and mp3 over the WHOLE of each long
input and keeps the learned scorer's per-window MOS (1-s windows, hop 1 s, per channel),
one .npz per input in DIR (default /work/data/bench/sampling). Inputs: the 4-minute
track of bench_fastpath (concatenated ../shared/audio music) plus long music sources
given on the command line (docs/performance.md lists the held-out corpus files used).

``analyse`` replays the sampled search offline for each segment-picking strategy of
``ratecontrol.api`` (the library's own code picks the segments): for each input, codec
and target (4.0, 4.3, 4.5) the rung the sampled p10 chooses against the rung the
full-track p10 chooses. Lower = the full-track check must step up (one more full
encode); higher = bits wasted.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CODECS = {"opus": "48k", "aac": "112k", "mp3": "128k"}  # lowest rung measured per codec (lower ones never meet 4.0 on these inputs)
TARGETS = (4.0, 4.3, 4.5)
DEFAULT_OUT = Path("/work/data/bench/sampling")


def _track(path):
    import ratecontrol.api as A
    from ratecontrol.presets import load_preset

    out = {}
    for codec in CODECS:
        p = load_preset(codec)
        k = A._rate_key(p)
        if k not in out:
            out[k] = A._load_track(str(path), lambda r, p=p: A._output_rate(p, r), None)
    return out


def measure_file(path: Path, out_dir: Path) -> Path:
    import ratecontrol.api as A
    from ratecontrol import media
    from ratecontrol.presets import load_preset
    from ratecontrol.scoring import get_scorer

    dst = out_dir / (path.stem[:60].replace(" ", "_") + ".npz")
    if dst.exists():
        return dst
    sc = get_scorer("learned")
    tracks = _track(path)
    res = {}
    for codec, lowest in CODECS.items():
        p = load_preset(codec)
        track = tracks[A._rate_key(p)]
        full = A._ProbeSource(track, None, 1.0)
        prep = sc.prepare(full.ref_w)
        rungs = p.rungs_for(track.channels)
        labels = [r.label for r in rungs]
        start = labels.index(lowest) if lowest else 0
        for rung in rungs[start:]:
            tmp = out_dir / f".probe{p.extension}"
            media.encode_array(track.src, track.rate_hz, p, rung, tmp)
            deg = media.decode_aligned(tmp, p, track.rate_hz, track.channels, track.src.shape[1])
            dw, idx = A._ProbeSource.cut_like(full, deg)
            res[f"{codec}/{rung.label}"] = sc.score(prep, dw).astype(np.float32)
            tmp.unlink()
            print(f"  {path.name[:40]} {codec} {rung.label}: p10 {np.percentile(res[f'{codec}/{rung.label}'], 10):.3f}",
                  flush=True)
        res[f"{codec}/_start_s"] = (idx.start_sample / 44_100).astype(np.float32)
        res[f"{codec}/_channel"] = idx.channel
    np.savez(dst, path=str(path), **res)
    return dst


def choose(curve: list[tuple[str, float]], target: float) -> int | None:
    """Index of the lowest rung whose pooled score meets the target (None: none does)."""
    for i, (_, s) in enumerate(curve):
        if s >= target:
            return i
    return None


def analyse(out_dir: Path, strategies: list[str], share: float) -> dict:
    import ratecontrol.api as A
    from ratecontrol.presets import load_preset
    from ratecontrol.scoring.pooling import pool as pool_scores

    rows = []
    for f in sorted(out_dir.glob("*.npz")):
        z = np.load(f)
        tracks = _track(str(z["path"]))
        for codec in CODECS:
            p = load_preset(codec)
            track = tracks[A._rate_key(p)]
            start_s = z[f"{codec}/_start_s"]
            rung_keys = [k for k in z.files if k.startswith(codec + "/") and not k.split("/")[1].startswith("_")]
            full_curve = [(k, pool_scores(z[k], "p10")) for k in rung_keys]
            for strat in strategies:
                segs = A._pick_segments(track, share, strategy=strat)
                if segs is None:
                    mask = np.ones(len(start_s), bool)
                else:
                    mask = np.zeros(len(start_s), bool)
                    for a, n in segs:
                        a_s, b_s = a / track.rate_hz, (a + n) / track.rate_hz
                        mask |= (start_s >= a_s - 1e-6) & (start_s + 1.0 <= b_s + 1e-6)
                samp_curve = [(k, pool_scores(z[k][mask], "p10")) for k in rung_keys]
                for t in TARGETS:
                    cf, cs = choose(full_curve, t), choose(samp_curve, t)
                    rows.append({"file": f.stem, "codec": codec, "strategy": strat, "target": t, "full": cf,
                                 "sampled": cs, "windows": int(mask.sum()),
                                 "p10_err": float(np.mean([s - fv for (_, s), (_, fv) in zip(samp_curve, full_curve)]))})
    out = {}
    for strat in strategies:
        r = [x for x in rows if x["strategy"] == strat and x["full"] is not None and x["sampled"] is not None]
        d = np.array([x["sampled"] - x["full"] for x in r])
        errs = np.array([x["p10_err"] for x in rows if x["strategy"] == strat])
        out[strat] = {"cases": len(r), "same": int((d == 0).sum()), "lower_by_1": int((d == -1).sum()),
                      "lower_by_2plus": int((d <= -2).sum()), "higher_by_1": int((d == 1).sum()),
                      "higher_by_2plus": int((d >= 2).sum()),
                      "mean_p10_bias": round(float(errs.mean()), 3), "mean_abs_p10_bias": round(float(np.abs(errs).mean()), 3)}
        print(f"{strat:<12} {out[strat]}", flush=True)
    return {"share": share, "summary": out, "rows": rows}


def exact(path: Path, codec: str, rung_label: str, models: list[str] | None = None) -> dict:
    """Every window of one full-track encode scored by ViSQOL and by each learned model
    (``models``: checkpoints; default the packaged one), the learned error by level."""
    import ratecontrol.api as A
    from ratecontrol import media
    from ratecontrol.presets import load_preset
    from ratecontrol.scoring import get_scorer

    p = load_preset(codec)
    track = _track(path)[A._rate_key(p)]
    rung = next(r for r in p.rungs_for(track.channels) if r.label == rung_label)
    full = A._ProbeSource(track, None, 1.0)
    with __import__("tempfile").TemporaryDirectory() as td:
        tmp = Path(td) / f"x{p.extension}"
        media.encode_array(track.src, track.rate_hz, p, rung, tmp)
        deg = media.decode_aligned(tmp, p, track.rate_hz, track.channels, track.src.shape[1])
    dw, _ = A._ProbeSource.cut_like(full, deg)
    v = get_scorer("visqol")
    ref_visqol = v.score(v.prepare(full.ref_w), dw)
    ref_db = 10 * np.log10(np.mean(full.ref_w.astype(np.float64) ** 2, axis=1) + 1e-20)
    results = {"windows": len(ref_visqol), "p10_visqol": float(np.percentile(ref_visqol, 10)), "models": {}}
    for model in models or [None]:
        sc = get_scorer("learned", model_path=model)
        learned = sc.score(sc.prepare(full.ref_w), dw)
        err = learned - ref_visqol
        res = {"version": sc.version, "rmse": float(np.sqrt(np.mean(err ** 2))),
               "pearson": float(np.corrcoef(learned, ref_visqol)[0, 1]),
               "p10_learned": float(np.percentile(learned, 10)), "by_level": []}
        for lo, hi in ((-200, -40), (-40, -30), (-30, -25), (-25, -20), (-20, -15), (-15, 10)):
            m = (ref_db >= lo) & (ref_db < hi)
            if m.any():
                res["by_level"].append({"dbfs": [lo, hi], "windows": int(m.sum()),
                                        "visqol_mean": float(ref_visqol[m].mean()),
                                        "bias": float(err[m].mean()), "rmse": float(np.sqrt(np.mean(err[m] ** 2)))})
        results["models"][model or "packaged"] = res
    print(json.dumps(results, indent=1))
    return results


def _cpu() -> float:
    import resource

    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def critical(files: list[Path], codecs=("opus", "aac"), targets=(4.3,), rules=("rank",),
             full_cache: Path | None = None) -> dict:
    """Issue 25 lever 1: the knob search with critical-segment probes (one search per
    rule of ``prober.CRITICAL_RULE``) against the same search with every probe on the
    full sample, on long real music. Per (file, codec, target): the chosen setting of
    each, the probes, the segments encoded, the CPU seconds of each search (self +
    children; the full search's only when its probes are not in ``full_cache``), and for
    every critical-segment probe the full sample's pooled score at the same setting (a
    shadow probe, not counted)."""
    import time

    from ratecontrol.cache import ProbeCache
    from ratecontrol.options import Options
    from ratecontrol.presets import load_preset
    from ratecontrol.probing import prober as P
    from ratecontrol.probing.searching import run_search
    from ratecontrol.probing.session import open_session

    cases, shadows = [], []
    k = 0
    for f in files:
        for codec in codecs:
            preset = load_preset(codec)
            ses = open_session(str(f), preset, Options(cache=False, best_effort=True, above_source=True))
            src = ses.source()
            n_seg = len(src.pieces)
            for t in targets:
                out = {}
                modes = ("full",) + tuple(rules)
                k += 1
                for mode in (modes if k % 2 else modes[::-1]):
                    cache = ProbeCache(full_cache) if (mode == "full" and full_cache) else ProbeCache(enabled=False)
                    pr = P.Prober(src, preset, ses.scorer, ses.pool, cache)
                    pr.critical = mode != "full"
                    P.CRITICAL_RULE = mode if mode != "full" else P.CRITICAL_RULE
                    c0, w0 = _cpu(), time.perf_counter()
                    res = run_search(pr, t, Options(best_effort=True))
                    segs = sum(pr.partial[p.rung_index][0] if p.rung_index in pr.partial else n_seg for p in res.probes)
                    out[mode] = {"cpu_s": _cpu() - c0, "wall_s": time.perf_counter() - w0,
                                 "chosen": res.chosen.bitrate_kbps, "probes": len(res.probes), "segments": segs,
                                 "pooled": [(p.bitrate_kbps, p.pooled_mos) for p in res.probes],
                                 "partial": {pr.rungs[i].nominal_kbps: v for i, v in pr.partial.items()}, "pr": pr}
                fp = out["full"].pop("pr")
                for rule in rules:
                    cp = out[rule].pop("pr")
                    for i, (a, b) in cp.partial.items():
                        j = fp.setting(cp.preset.knob_value(cp.rungs[i]))
                        shadow = fp.probe(j, t + 0.03)
                        shadows.append({"rule": rule, "file": f.name, "codec": codec, "target": t,
                                        "kbps": cp.rungs[i].nominal_kbps, "crit_pooled": cp.probes[i].pooled_mos,
                                        "full_pooled": shadow.pooled_mos, "pieces": [a, b],
                                        "same_pass": (cp.probes[i].pooled_mos >= t + 0.03) == (shadow.pooled_mos >= t + 0.03)})
                case = {"file": f.name, "codec": codec, "target": t, "segments_per_probe": n_seg,
                        **{f"{m}_{kk}": v for m in out for kk, v in out[m].items()}}
                for rule in rules:
                    case[f"{rule}_same_choice"] = out[rule]["chosen"] == out["full"]["chosen"]
                cases.append(case)
                print(f"{f.name[:24]:<24} {codec:<5} {t}: full {out['full']['chosen']:g}k {out['full']['probes']}p "
                      f"{out['full']['segments']}seg {out['full']['cpu_s']:.1f}CPU-s | "
                      + " | ".join(f"{r} {out[r]['chosen']:g}k {out[r]['probes']}p {out[r]['segments']}seg "
                                   f"{out[r]['cpu_s']:.1f}CPU-s {out[r]['partial']}" for r in rules), flush=True)
            ses.close()
    summary = {"cases": len(cases)}
    for rule in rules:
        sh = [s_ for s_ in shadows if s_["rule"] == rule]
        diffs = [abs(s_["crit_pooled"] - s_["full_pooled"]) for s_ in sh]
        summary[rule] = {
            "same_choice": sum(c[f"{rule}_same_choice"] for c in cases),
            "cpu_s": round(sum(c[f"{rule}_cpu_s"] for c in cases), 1),
            "segments": sum(c[f"{rule}_segments"] for c in cases), "probes": sum(c[f"{rule}_probes"] for c in cases),
            "bits_vs_full": round(float(np.mean([c[f"{rule}_chosen"] / c["full_chosen"] for c in cases])), 4),
            "partial_probes": len(sh), "same_pass": sum(s_["same_pass"] for s_ in sh),
            "pooled_absdiff_max": max(diffs) if diffs else None,
            "pooled_absdiff_median": float(np.median(diffs)) if diffs else None}
    summary["full"] = {"cpu_s": round(sum(c["full_cpu_s"] for c in cases), 1),
                       "segments": sum(c["full_segments"] for c in cases), "probes": sum(c["full_probes"] for c in cases)}
    print(json.dumps(summary, indent=1))
    return {"summary": summary, "cases": cases, "shadows": shadows}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["measure", "analyse", "exact", "critical"])
    ap.add_argument("--codec", default="opus")
    ap.add_argument("--rung", default="64k")
    ap.add_argument("files", nargs="*")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--share", type=float, default=0.2)
    ap.add_argument("--strategies", nargs="*", default=["hardest", "spread", "level"])
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--full-cache", type=Path, default=None,
                    help="critical: a probe cache for the full-sample searches (a rerun skips their encodes)")
    ap.add_argument("--model", action="append", default=None,
                    help="exact: a learned-scorer checkpoint to compare (repeatable; default the packaged one)")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.cmd == "critical":
        res = critical([Path(f) for f in a.files], full_cache=a.full_cache)
        if a.json:
            a.json.write_text(json.dumps(res, indent=1, default=float))
    elif a.cmd == "exact":
        exact(Path(a.files[0]), a.codec, a.rung, a.model)
    elif a.cmd == "measure":
        from bench_fastpath import build_long_track

        track = a.out / "four_minutes.wav"
        if not track.exists():
            build_long_track(track)
        for f in [track, *map(Path, a.files)]:
            measure_file(f, a.out)
    else:
        res = analyse(a.out, a.strategies, a.share)
        if a.json:
            a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
