#!/usr/bin/env bash
# Encode one real track to a quality target as a user would: the default (learned)
# scorer, then the exact ViSQOL scorer for comparison.
# Uses ../shared/audio when present, else a generated 8-s test track.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${DEMO_OUT:-$(mktemp -d)}
mkdir -p "$out"
src="$here/../shared/audio/flac-test-files/01 - blocksize 4096.flac"
if [ ! -f "$src" ]; then
  src="$out/generated.wav"
  python - "$src" <<'PY'
import sys, numpy as np, soundfile as sf
sr = 44100; t = np.arange(8 * sr) / sr; rng = np.random.default_rng(0)
x = sum(0.1 * np.sin(2 * np.pi * f * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) for f in (220, 330, 440, 660))
x = x + 0.05 * rng.standard_normal(t.size) * np.exp(-((t * 4) % 1.0) * 20)
sf.write(sys.argv[1], np.stack([x, np.roll(x, 300)], 1).astype("float32"), sr, subtype="PCM_16")
PY
fi
set -x
ratecontrol doctor
ratecontrol encode "$src" --target-mos 4.2 --codec opus -o "$out/demo.opus" --overwrite
ratecontrol encode "$src" --target-mos 4.2 --codec opus --scorer visqol -o "$out/demo-exact.opus" --overwrite
