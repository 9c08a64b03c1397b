"""Issue 2's acceptance table: for each available preset, search a real track for a
target with the exact scorer and print the chosen rung, its score, and the rung below.

    python bench/check_ladders.py [FILE] [--target 4.3]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ratecontrol import media
from ratecontrol.api import select_bitrate
from ratecontrol.errors import TargetNotReachable
from ratecontrol.presets import list_presets

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared/audio/flac-test-files/01 - blocksize 4096.flac"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file", nargs="?", default=str(DEFAULT))
    ap.add_argument("--target", type=float, default=4.3)
    ap.add_argument("--scorer", default="visqol")
    a = ap.parse_args()
    print(f"{Path(a.file).name}: target {a.target} ({a.scorer}, p10)")
    print(f"{'preset':<10} {'chosen':>7} {'MOS':>6} {'below':>7} {'MOS':>6} {'probes':>6} {'s':>6}")
    for p in list_presets():
        if not media.encoder_available(p):
            print(f"{p.name:<10} encoder {p.encoder} not available")
            continue
        t0 = time.perf_counter()
        try:
            r = select_bitrate(a.file, target_mos=a.target, codec=p, scorer=a.scorer)
        except TargetNotReachable as exc:
            print(f"{p.name:<10} not reachable: {exc}")
            continue
        probed = {q.rung_index: q for q in r.probes}
        below = probed.get(r.chosen.rung_index - 1)
        print(f"{p.name:<10} {r.chosen.rung_label:>7} {r.chosen.pooled_mos:6.3f} "
              f"{below.rung_label if below else '-':>7} {below.pooled_mos if below else float('nan'):6.3f} "
              f"{len(r.probes):>6} {time.perf_counter() - t0:6.1f}")


if __name__ == "__main__":
    main()
