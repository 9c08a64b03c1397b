"""The written file against the whole track's curve (issue 24): how many bits the shipped
files take over the setting where each track's *whole-track* p10 crosses the bar.

    python bench/bench_written.py run --out A.json [--step-down 0|1] [--sample-share S] [--target 4.3] [--codec opus] FILE ...
    python bench/bench_written.py curves --from A.json --out curves.json FILE ...
    python bench/bench_written.py report --curves curves.json A.json [B.json]    # A1.json+A2.json: a split run
    python bench/bench_written.py exact --from B.json --out exact.json [--curves curves.json] [--with E2.json] FILE ...

bench_knob.py measures the search on its sample against an exact oracle on that same
sample; the full-track check then decides what is written, and the sample reads the
whole track's p10 only to about +-0.065 MOS. This bench measures what ships:

``run``: each file encoded as a batch worker does (``ratecontrol.encode``, jobs=1, no
cache), one JSON row per file (written setting, actual kbps, the search's probes, the
check's notes, the step-up / step-down, CPU = user + sys of the process and its ffmpeg
children, wall); ``--step-down 0`` turns the check's step down off (``step_down=False``);
``--sample-share`` sets the share of a long track the probes score (default: the library's).
Resumable (rows are saved after each file).

``curves``: the learned p10 of the *whole track*, encoded by the path the output takes
(media.StreamedEncode from the decoded track) and scored as the check scores it
(verify.score_written), on a 4 % grid from one step above the setting a ``run`` wrote
down to a clear failure (< bar - 0.03, or ``--stop-below``) or 8 steps. Resumable.

``report``: per file and in total (duration-weighted actual kbps), the written bits over
the lowest grid setting that passes going down from the written one (``lowest pass``),
and over the interpolated crossing (ln kbps, between that and the failure below it, at
the written file's actual/nominal ratio); with two runs, their ratios (bits, CPU, wall).

``exact``: the written setting of a ``run`` encoded again as the output is, and its whole
track scored window by window by both scorers, learned (as the check) and exact
(visqol-python, ``jobs`` processes): does the shipped file meet the *target* by exact
ViSQOL, by how much, and how far the learned whole-track p10 is from the exact one. With
``--curves``, the exact crossing of the target is estimated on the learned whole-track
curve shifted by that track's learned - exact difference at the written setting.
Resumable; ~0.13 CPU-s per window, so a 4-minute stereo track costs about a minute of CPU.

Tracks: the Wesnoth music (Debian package wesnoth-1.16-music, CC BY-SA / GPL), converted
to FLAC for the runs in docs/performance.md; for benches only, never in tests or the
repository.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STEP_X = math.log(1.04)
MAX_STEPS = 8


def _load(path: Path) -> list:
    return json.loads(path.read_text()) if path.exists() else []


def _save(path: Path, obj) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def run(args) -> None:
    import tempfile

    import ratecontrol
    from ratecontrol.presets import load_preset

    rows = _load(args.out)
    done = {r["file"] for r in rows}
    scratch = Path(tempfile.mkdtemp(prefix="bench-written-"))
    for f in args.files:
        if Path(f).name in done:
            continue
        c0, t0 = _cpu(), time.perf_counter()
        r = ratecontrol.encode(f, scratch / f"out{load_preset(args.codec).extension}", target_mos=args.target,
                               codec=args.codec, jobs=1, cache=False, overwrite=True,
                               step_down=bool(args.step_down), sample_share=args.sample_share)
        rows.append(dict(file=Path(f).name, path=str(f), codec=args.codec, target=args.target,
                         bar=r.search.target_mos + r.search.margin_mos, chosen=r.search.chosen.rung_label,
                         written=r.rung_label, kbps=r.bitrate_kbps, knob=r.knob_value, actual_kbps=r.actual_kbps,
                         duration_s=r.output_bytes * 8 / 1000 / r.actual_kbps, full_mos=r.pooled_mos,
                         steps=r.stepped_up, stepped_down=r.stepped_down, notes=list(r.search.notes),
                         probe_list=[(p.bitrate_kbps, p.pooled_mos) for p in r.search.probes],
                         cpu=_cpu() - c0, wall=time.perf_counter() - t0))
        _save(args.out, rows)
        x = rows[-1]
        print(f"{x['file'][:28]:28} {x['chosen']:>6} -> {x['written']:>6} {x['actual_kbps']:6.1f} kbps  "
              f"{x['full_mos']:.3f}  probes {len(x['probe_list'])}  up {x['steps']} down {x['stepped_down']}  "
              f"{x['cpu']:.1f} CPU-s", flush=True)


def curves(args) -> None:
    import tempfile

    from ratecontrol import media
    from ratecontrol.options import Options
    from ratecontrol.presets import load_preset
    from ratecontrol.probing.session import CHECK_CHUNK_S, open_session
    from ratecontrol.probing.verify import score_written

    start = {r["file"]: r for r in _load(args.from_run)}
    rows = _load(args.out)
    have = {(r["file"], r["kbps"]): r["p10"] for r in rows}
    for f in args.files:
        name = Path(f).name
        if name not in start:
            sys.exit(f"{name} is not in {args.from_run}: run it first")
        r0 = start[name]
        preset = load_preset(r0["codec"])
        if preset.knob is None or preset.knob.unit != "kbps":
            sys.exit(f"preset {preset.name}: curves need a kbps knob")
        sess = open_session(f, preset, Options(jobs=1, cache=False))
        pr, tr = sess.prober(preset), sess.track
        scratch = Path(tempfile.mkdtemp(prefix="bench-written-"))

        def at(kbps: float) -> float:
            i = pr.setting(kbps)
            rung = pr.rungs[i]
            key = (name, float(rung.nominal_kbps))
            if key in have:
                return have[key]
            out = scratch / f"c{preset.extension}"
            t0 = time.perf_counter()
            with media.StreamedEncode(tr.src, tr.rate_hz, preset, rung, out,
                                      block_samples=int(CHECK_CHUNK_S * tr.rate_hz)) as job:
                p10, (w, _, _) = score_written(sess, pr, job.blocks())
                job.finish()
            row = dict(file=name, kbps=key[1], p10=float(p10), actual_kbps=out.stat().st_size * 8 / 1000 / tr.duration_s,
                       duration_s=tr.duration_s, sec=time.perf_counter() - t0)
            out.unlink()
            rows.append(row)
            have[key] = row["p10"]
            _save(args.out, rows)
            print(f"{name[:28]:28} {key[1]:6.0f}k  p10 {p10:.4f}  {row['actual_kbps']:6.1f} kbps", flush=True)
            return row["p10"]

        w = r0["kbps"]
        stop = r0["bar"] - 0.03 if args.stop_below is None else args.stop_below
        at(round(w * math.exp(STEP_X)))
        for k in range(MAX_STEPS + 1):
            if at(round(w * math.exp(-k * STEP_X))) < stop:
                break
        sess.close()
        scratch.rmdir()


def exact(args) -> None:
    import numpy as np

    import ratecontrol
    from ratecontrol import media
    from ratecontrol.options import Options
    from ratecontrol.presets import load_preset
    from ratecontrol.probing.session import CHECK_CHUNK_S, open_session

    start = {r["file"]: r for r in _load(args.from_run)}
    rows = _load(args.out)
    done = {r["file"] for r in rows}
    for f in args.files:
        name = Path(f).name
        if name in done:
            continue
        if name not in start:
            sys.exit(f"{name} is not in {args.from_run}: run it first")
        r0 = start[name]
        preset = load_preset(r0["codec"])
        sess = open_session(f, preset, Options(jobs=1, cache=False))
        pr, tr = sess.prober(preset), sess.track
        out = Path(args.out).with_suffix(f".tmp{preset.extension}")
        t0, c0 = time.perf_counter(), _cpu()
        with media.StreamedEncode(tr.src, tr.rate_hz, preset, pr.rungs[pr.setting(r0["knob"])], out,
                                  block_samples=int(CHECK_CHUNK_S * tr.rate_hz)) as job:
            blocks = list(job.blocks())
            job.finish()
        deg = np.concatenate(blocks, axis=1)
        ref = np.asarray(tr.src)
        sess.close()
        out.unlink()
        # the check's windows and score: ``ratecontrol score`` equals the check (tests/test_oneencode.py;
        # no alignment here, the decode is aligned already)
        lr = ratecontrol.score(ref, deg, sample_rate_hz=tr.rate_hz, align_signals=False)
        ex = ratecontrol.score(ref, deg, sample_rate_hz=tr.rate_hz, align_signals=False, scorer="visqol",
                               jobs=args.jobs)
        row = dict(file=name, kbps=r0["kbps"], knob=r0["knob"], target=r0["target"], bar=r0["bar"],
                   actual_kbps=r0["actual_kbps"], duration_s=r0["duration_s"], learned=lr.pooled_mos, exact=ex.pooled_mos, learned_windows=[round(float(v), 4) for v in lr.window_mos],
                   exact_windows=[round(float(v), 4) for v in ex.window_mos], cpu=_cpu() - c0,
                   sec=time.perf_counter() - t0)
        rows.append(row)
        _save(args.out, rows)
        print(f"{name[:28]:28} {r0['written']:>6}  learned {row['learned']:.4f}  exact "
              f"{row['exact']:.4f}  target {r0['target']}  {row['sec']:.0f} s", flush=True)
    if args.curves:
        rows = rows + [r for part in (args.with_rows.split("+") if args.with_rows else []) for r in _load(Path(part))]
        summary, per = _exact_report(rows, [r for part in args.curves.split("+") for r in _load(Path(part))])
        print(json.dumps(summary))
        for p in per:
            print(f"  {p['file'][:28]:28} written {p['written']:6.0f}k  exact crossing ~{p['crossing']:6.1f}k  "
                  f"{p['over_crossing_pct']:+5.1f} %")


def _exact_report(rows: list, curve_rows: list) -> tuple[dict, list]:
    """Meets the target by exact ViSQOL, the learned - exact p10 differences, and the bits over
    the exact crossing of the target estimated on the learned whole-track curve moved by
    each track's learned - exact difference at its written setting: ``(summary, per file)``."""
    import numpy as np

    shifted = []
    for t in rows:
        err = t["learned"] - t["exact"]
        # the learned whole-track curve, moved by this track's error: where it crosses the target
        shifted.append((dict(t, bar=t["target"]), [dict(c, p10=c["p10"] - err) for c in curve_rows if c["file"] == t["file"]]))
    per, tot = _gap([s[0] for s in shifted], [c for s in shifted for c in s[1]])
    d = np.array([t["learned"] - t["exact"] for t in rows])
    ex = np.array([t["exact"] - t["target"] for t in rows])
    summary = dict(tracks=len(rows), meets=int((ex >= 0).sum()), worst_shortfall=round(float(min(0.0, ex.min())), 4),
                   exact_over_target_mean=round(float(ex.mean()), 4), learned_minus_exact_mean=round(float(d.mean()), 4),
                   learned_minus_exact_sd=round(float(d.std(ddof=1)), 4) if len(d) > 1 else None,
                   over_exact_crossing_pct=tot["over_crossing_pct"])
    return summary, per


def _gap(run_rows: list, curve_rows: list) -> tuple[list, dict]:
    curves_by: dict = {}
    for r in curve_rows:
        curves_by.setdefault(r["file"], {})[r["kbps"]] = r
    per, W, O, OI = [], 0.0, 0.0, 0.0
    for t in run_rows:
        c = curves_by.get(t["file"])
        if not c:
            continue
        bar, w = t["bar"], t["kbps"]
        ks = sorted(c)
        lowest = None
        for k in sorted((k for k in ks if k <= w + 0.5), reverse=True):
            if c[k]["p10"] >= bar:
                lowest = k
            else:
                break
        ratio = t["actual_kbps"] / w
        if lowest is None:  # written below the grid's first failure: its own oracle
            lowest, oa, cross = w, t["actual_kbps"], w
        else:
            oa = c[lowest]["actual_kbps"]
            below = [k for k in ks if k < lowest]
            cross = lowest
            if below:
                kl = max(below)
                sl, sh = c[kl]["p10"], c[lowest]["p10"]
                cross = math.exp(math.log(kl) + (bar - sl) / (sh - sl) * (math.log(lowest) - math.log(kl)))
        d = t["duration_s"]
        W += t["actual_kbps"] * d
        O += min(oa, t["actual_kbps"]) * d
        OI += min(cross * ratio, t["actual_kbps"]) * d
        per.append(dict(file=t["file"], written=w, lowest_pass=lowest, crossing=round(cross, 1),
                        over_crossing_pct=round(100 * (w / cross - 1), 1)))
    return per, {"tracks": len(per), "over_lowest_pass_pct": round(100 * (W / O - 1), 2) if O else None,
                 "over_crossing_pct": round(100 * (W / OI - 1), 2) if OI else None}


def report(args) -> None:
    curve_rows = [r for part in args.curves.split("+") for r in _load(Path(part))]
    # a run split over several processes: A1.json+A2.json
    runs = [[r for part in p.split("+") for r in _load(Path(part))] for p in args.runs]
    common = set.intersection(*({r["file"] for r in rows} for rows in runs))
    out = {}
    for path, rows in zip(args.runs, runs):
        rows = [r for r in rows if r["file"] in common]
        per, tot = _gap(rows, curve_rows)
        dur = sum(r["duration_s"] for r in rows)
        tot.update(kbps=round(sum(r["actual_kbps"] * r["duration_s"] for r in rows) / dur, 2),
                   cpu_s=round(sum(r["cpu"] for r in rows), 1), wall_s=round(sum(r["wall"] for r in rows), 1),
                   probes=sum(len(r["probe_list"]) for r in rows), step_ups=sum(r["steps"] for r in rows),
                   stepped_down=sum(r["stepped_down"] for r in rows),
                   step_down_tried_and_kept=sum(any(", kept " in n for n in r["notes"]) for r in rows),
                   min_score=round(min(r["full_mos"] for r in rows), 4),
                   under_bar=sum(r["full_mos"] < r["bar"] for r in rows))
        out[path] = {"total": tot, "per_file": per}
        print(f"{path}: {json.dumps(tot)}")
    if len(runs) == 2:
        a, b = (out[p]["total"] for p in args.runs)
        ratios = {k: round(b[k] / a[k], 4) for k in ("kbps", "cpu_s", "wall_s")}
        out["ratio_second_over_first"] = ratios
        print(f"second / first: {json.dumps(ratios)}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("files", nargs="+")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--step-down", type=int, default=1)
    r.add_argument("--sample-share", type=float, default=None)
    r.add_argument("--target", type=float, default=4.3)
    r.add_argument("--codec", default="opus")
    c = sub.add_parser("curves")
    c.add_argument("files", nargs="+")
    c.add_argument("--from", dest="from_run", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--stop-below", type=float, default=None,
                   help="go down until the p10 is under this (default: the bar - 0.03); lower it for exact's crossing")
    p = sub.add_parser("report")
    p.add_argument("runs", nargs="+")
    p.add_argument("--curves", required=True, help="curves.json (C1.json+C2.json: several)")
    p.add_argument("--json", default=None)
    e = sub.add_parser("exact")
    e.add_argument("files", nargs="+")
    e.add_argument("--from", dest="from_run", type=Path, required=True)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--curves", default=None, help="curves.json of the same tracks (C1.json+C2.json: several)")
    e.add_argument("--jobs", type=int, default=2, help="processes for the exact scorer")
    e.add_argument("--with", dest="with_rows", default=None,
                   help="exact rows of other files (X.json+Y.json: a split run) counted in the summary too")
    args = ap.parse_args()
    {"run": run, "curves": curves, "report": report, "exact": exact}[args.cmd](args)


if __name__ == "__main__":
    main()
