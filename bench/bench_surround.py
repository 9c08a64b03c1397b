"""Surround ladders and the LFE decision (issue 17): the figures in docs/scoring.md.

    python -m bench.bench_surround [--out FILE.json] [--seconds 10] [--visqol]

Material, all from ../shared/audio/flac-test-files (not copied; written to a temp folder):

- ``music``: real stereo music arranged per layout (no real multichannel music mix is
  at hand): FL/FR = file 01, FC = mono of 04, BL/BR = 17, SL/SR = 08, BC = mono of 09,
  LFE = file 01's mono below 120 Hz (4th-order Butterworth), 10 s of each;
  the stereo reference is file 01 itself (the front pair alone) on the stereo ladder;
- ``testbench``: files 38-43 as they are (a voice naming each channel in turn; the
  LFE of 41-43 holds that full-band voice too).

For each preset (opus, aac, vorbis) and layout, every rung of ``rungs_for(channels)``
is probed through the real pipeline (probing.session: the track decoded into its coding
layout, the encoder, the decode, per-channel windows without the LFE, p10 of the
learned scorer). LFE: the LFE windows of the 5.1 encodes scored on their own, learned
and (``--visqol``) exact ViSQOL.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from ratecontrol import media
from ratecontrol.media import lfe_indices
from ratecontrol.options import Options
from ratecontrol.probing.session import open_session
from ratecontrol.presets import load_preset
from ratecontrol.scoring.base import get_scorer
from ratecontrol.scoring.pooling import pool
from ratecontrol.windows import cut_windows, is_digital_silence

AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio" / "flac-test-files"
LAYOUTS = {"3.0": 3, "quad": 4, "5.0": 5, "5.1": 6, "6.1": 7, "7.1": 8}
TESTBENCH = {"3.0": "38", "4.0": "39", "5.0": "40", "5.1": "41", "6.1": "42", "7.1": "43"}
PRESETS = ("opus", "aac", "vorbis")


def _file(num: str) -> Path:
    return next(AUDIO.glob(f"{num} *.flac"))


def _lowpass(x: np.ndarray, rate: int, hz: float) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    return sosfiltfilt(butter(4, hz, fs=rate, output="sos"), x).astype(np.float32)


def _write(path: Path, a: np.ndarray, rate: int, layout: str) -> Path:
    cmd = [media.ffmpeg_path(), "-hide_banner", "-loglevel", "error", "-y", "-f", "f32le", "-ar", str(rate),
           "-ch_layout", layout, "-i", "pipe:", "-c:a", "flac", str(path)]
    subprocess.run(cmd, input=np.ascontiguousarray(a.T, dtype="<f4").tobytes(), check=True)
    return path


def music_files(tmp: Path, seconds: float) -> dict[str, Path]:
    rate = 44_100
    n = int(seconds * rate)

    def st(num):
        return media.decode(_file(num), sample_rate_hz=rate, channels=2)[:, :n]

    def mono(num):
        return st(num).mean(axis=0)

    a, c, d = st("01"), st("17"), st("08")
    m = min(x.shape[-1] for x in (a, c, d, mono("04"), mono("09")))
    a, c, d = a[:, :m], c[:, :m], d[:, :m]
    rows = {"FL": a[0], "FR": a[1], "FC": mono("04")[:m], "BL": c[0], "BR": c[1], "SL": d[0], "SR": d[1],
            "BC": mono("09")[:m], "LFE": _lowpass(a.mean(axis=0), rate, 120.0)}
    from ratecontrol.media import layout_channels

    out = {"stereo": _write(tmp / "music_stereo.flac", a, rate, "stereo")}
    for lay in LAYOUTS:
        names = layout_channels(lay)
        out[lay] = _write(tmp / f"music_{lay}.flac", np.stack([rows[c] for c in names]), rate, lay)
    return out


def ladder_scores(path: Path, preset) -> list[dict]:
    opts = Options(cache=False, sample_share=1.0, jobs=1)
    s = open_session(path, preset, opts)
    try:
        pr = s.prober(preset)
        rows = []
        for i, r in enumerate(pr.rungs):
            p = pr.probe(i, 0.0)
            rows.append({"rung": r.label, "kbps": r.nominal_kbps, "p10": round(p.pooled_mos, 3),
                         "actual_kbps": round(p.actual_kbps, 1)})
        return rows
    finally:
        s.close()


def lfe_scores(path: Path, preset, rungs: list[str], scorers) -> list[dict]:
    """Scores of the LFE channel's windows alone (encode of the 5.1 track at each rung)."""
    s = open_session(path, preset, Options(cache=False, sample_share=1.0, jobs=1))
    try:
        t = s.track
        lfe = lfe_indices(t.layout)[0]
        from ratecontrol._resample import resample

        ref = resample(t.src, t.rate_hz, 44_100)
        ref_w, idx = cut_windows(ref, channels=[lfe])
        keep = ~is_digital_silence(ref_w)
        out = []
        for label in rungs:
            rung = preset.rung(label, t.channels)
            deg = resample(media.roundtrip(t.src, t.rate_hz, preset, rung), t.rate_hz, 44_100)
            deg_w, _ = cut_windows(deg, starts=idx.start_sample, channels=[lfe])
            row = {"rung": label}
            for sc in scorers:
                v = sc.score(sc.prepare(ref_w[keep]), deg_w[keep])
                row[sc.name] = {"p10": round(pool(v, "p10"), 3), "mean": round(float(np.mean(v)), 3)}
            ideal = sc.score(sc.prepare(ref_w[keep]), ref_w[keep])
            row["identity_" + sc.name] = round(float(np.mean(ideal)), 3)
            out.append(row)
        return out
    finally:
        s.close()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--visqol", action="store_true", help="also score the LFE windows with exact ViSQOL")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--lfe-only", action="store_true", help="only the LFE measurement (no ladders)")
    args = ap.parse_args(argv)
    t0 = time.time()
    res: dict = {"ladders": {}, "lfe": {}}
    scorers = [get_scorer("learned")] + ([get_scorer("visqol")] if args.visqol else [])
    with tempfile.TemporaryDirectory() as td:
        files = music_files(Path(td), args.seconds)
        for name in args.presets.split(","):
            p = load_preset(name)
            if not args.lfe_only:
                res["ladders"][name] = {"music": {lay: ladder_scores(f, p) for lay, f in files.items()},
                                        "testbench": {lay: ladder_scores(_file(num), p)
                                                      for lay, num in TESTBENCH.items()}}
            top, mid, low = (r.label for r in (p.rungs_for(6)[-1], p.rungs_for(6)[len(p.rungs_for(6)) // 2],
                                                p.rungs_for(6)[0]))
            res["lfe"][name] = {"testbench 41": lfe_scores(_file("41"), p, [low, mid, top], scorers),
                                "music 5.1 (LFE = music < 120 Hz)": lfe_scores(files["5.1"], p, [low, mid, top],
                                                                               scorers)}
            print(name, json.dumps(res["lfe"][name]), flush=True)
    res["seconds"] = round(time.time() - t0, 1)
    text = json.dumps(res, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    for name, d in res["ladders"].items():
        for kind, lays in d.items():
            for lay, rows in lays.items():
                print(f"{name:7s} {kind:9s} {lay:6s} " + " ".join(f"{r['rung']}:{r['p10']:.2f}" for r in rows))
    print(f"{res['seconds']} s")


if __name__ == "__main__":
    main()
