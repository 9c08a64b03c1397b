"""Peak memory of one `ratecontrol encode` against the input's length (issue 23 class 9):
the figures behind README's memory sentence and docs/performance.md ("Memory against
input length").

    python -m bench.bench_memory [--minutes 10 60] [--codec opus] [--target 4.3] [--out FILE.json]

Material: the Wesnoth soundtrack (/usr/share/games/wesnoth/1.16/data/core/music/*.ogg,
real orchestral music; used for benches only, never copied into the repo), decoded and
concatenated in name order, repeated to each length, written as 44.1-kHz stereo FLAC in
a temp folder. For each length, one `python -m ratecontrol encode IN --target-mos T
--codec C -o OUT --no-cache` (the default --sample-share) runs in a fresh process; this
script samples its /proc/PID/status every 50 ms:

- ``anon_peak_mb``: RssAnon, the process's own memory (heap, numpy arrays, the model);
- ``file_peak_mb``: RssFile, file-backed pages it has mapped in (the decoded input of a
  long track is a mapped temp file, media.decode_to_disk; the OS can drop them, but
  they count in RSS);
- ``rss_peak_mb``: VmHWM, the kernel's own peak of the two together (``ru_maxrss``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MUSIC = Path("/usr/share/games/wesnoth/1.16/data/core/music")
REPO = Path(__file__).resolve().parents[1]


def _ffmpeg() -> str:
    from ratecontrol import media

    return media.ffmpeg_path()


def make_input(minutes: float, dest: Path) -> Path:
    """``minutes`` of the soundtrack (in name order, repeated) as 44.1-kHz stereo FLAC."""
    files = sorted(MUSIC.glob("*.ogg"))
    if not files:
        raise SystemExit(f"no .ogg files in {MUSIC}")
    listing = dest.with_suffix(".txt")
    # ffmpeg's concat demuxer; 40 passes over ~90 minutes of music is more than enough
    listing.write_text("".join(f"file '{f}'\n" for _ in range(40) for f in files))
    subprocess.run([_ffmpeg(), "-hide_banner", "-v", "error", "-nostdin", "-y", "-f", "concat", "-safe", "0",
                    "-i", str(listing), "-t", f"{minutes * 60:.0f}", "-ar", "44100", "-ac", "2", "-c:a", "flac",
                    str(dest)], check=True, capture_output=True)  # the concat demuxer warns of dts at joins
    return dest


def _status(pid: int) -> dict[str, int]:
    """RssAnon, RssFile (+ RssShmem: a mapped file in a tmpfs), VmHWM, VmRSS in kB."""
    out = {"RssFile": 0}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("RssAnon", "VmHWM", "VmRSS"):
                out[key] = int(rest.split()[0])
            elif key in ("RssFile", "RssShmem"):
                out["RssFile"] += int(rest.split()[0])
    return out


def measure(inp: Path, out: Path, codec: str, target: float) -> dict:
    cmd = [sys.executable, "-m", "ratecontrol", "encode", str(inp), "--target-mos", f"{target:g}", "--codec", codec,
           "-o", str(out), "--no-cache", "--overwrite", "--json"]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    peak = {"RssAnon": 0, "RssFile": 0, "VmHWM": 0}
    timeline = []  # (s, anon MB, file MB) once a second: which step holds the peak
    done = threading.Event()

    def watch():
        last = -1.0
        while not done.is_set():
            try:
                st = _status(proc.pid)
            except (OSError, StopIteration):
                break
            for k in peak:
                peak[k] = max(peak[k], st.get(k, 0))
            t = time.perf_counter() - t0
            if t - last >= 1.0:
                timeline.append((round(t, 1), st.get("RssAnon", 0) // 1024, st.get("RssFile", 0) // 1024))
                last = t
            time.sleep(0.05)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    stdout, stderr = proc.communicate()
    done.set()
    th.join()
    if proc.returncode:
        raise SystemExit(f"encode failed ({proc.returncode}): {stderr[-2000:]}")
    res = json.loads(stdout)
    return {"anon_peak_mb": round(peak["RssAnon"] / 1024), "file_peak_mb": round(peak["RssFile"] / 1024),
            "rss_peak_mb": round(peak["VmHWM"] / 1024), "wall_s": round(time.perf_counter() - t0, 1),
            "rung": res.get("rung_label"), "pooled_mos": res.get("pooled_mos"), "timeline": timeline}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[10.0, 60.0])
    ap.add_argument("--codec", default="opus")
    ap.add_argument("--target", type=float, default=4.3)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--inputs", type=Path, help="keep the generated FLACs in this folder and reuse them")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="rc-bench-memory-") as tmp:
        for m in args.minutes:
            inp = (args.inputs or Path(tmp)) / f"music-{m:g}min.flac"
            if not inp.exists():
                make_input(m, inp)
            row = {"minutes": m, **measure(inp, Path(tmp) / f"out-{m:g}.{args.codec}", args.codec, args.target)}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "timeline"}), flush=True)
            if args.inputs is None:
                inp.unlink()
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
