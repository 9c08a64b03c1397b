"""How short an input can be and still get a meaningful score (issue 23 class 4): the
figures behind ``contract.MIN_INPUT_S`` in docs/scoring.md ("Shortest input").

    python -m bench.bench_short_clips [--out FILE.json] [--no-visqol]

Material (real recordings in ../shared/audio, read in place): FLAC testbench 01 and 17
(stereo music) and the sms-tools cello phrase (mono), each cut at 2 s into the file to
lengths 0.2 .. 2 s. Each cut is scored by ``api.score`` (what ``ratecontrol score``
runs: alignment, 1-s windows, a clip under 1 s zero-padded to 1 s, p10) against

- ``identity``: itself;
- ``silence``: digital silence of the same length (the issue's case: 4.727 at 0.2 s);
- ``lowpass``: itself low-passed at 3.5 kHz (4th-order Butterworth, zero phase), a
  degradation every listener hears;

with the learned scorer and (unless ``--no-visqol``) exact ViSQOL. A length is
meaningful when silence scores far below identity and the low-passed copy scores
clearly below identity.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

from ratecontrol import api, media

AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio"
CLIPS = {"tb01": "flac-test-files/01 - blocksize 4096.flac", "tb17": "flac-test-files/17 - all fixed orders.flac",
         "cello": "sms-tools/cello-phrase.wav"}
DURATIONS_S = (0.2, 0.3, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0, 1.25, 1.5, 2.0)
OFFSET_S = 2.0
RATE = 44_100


def _lowpass(x: np.ndarray, hz: float = 3500.0) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    return sosfiltfilt(butter(4, hz, fs=RATE, output="sos"), x, axis=-1).astype(np.float32)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--no-visqol", action="store_true")
    args = ap.parse_args(argv)
    scorers = ["learned"] + ([] if args.no_visqol else ["visqol"])
    rows = []
    for name, rel in CLIPS.items():
        full = media.decode(AUDIO / rel, sample_rate_hz=RATE)
        for d in DURATIONS_S:
            ref = full[:, int(OFFSET_S * RATE):int((OFFSET_S + d) * RATE)]
            degs = {"identity": ref.copy(), "silence": np.zeros_like(ref), "lowpass": _lowpass(ref)}
            for sc in scorers:
                row = {"clip": name, "duration_s": d, "scorer": sc}
                t0 = time.perf_counter()
                for kind, deg in degs.items():
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        r = api.score(ref, deg, sample_rate_hz=RATE, scorer=sc)
                    row[kind] = round(r.pooled_mos, 3)
                row["seconds"] = round(time.perf_counter() - t0, 1)
                rows.append(row)
                print(f"{name:6} {d:5.2f} s {sc:8} identity {row['identity']:.3f}  silence {row['silence']:.3f}  "
                      f"lowpass {row['lowpass']:.3f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
