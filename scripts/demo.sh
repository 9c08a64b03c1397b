#!/usr/bin/env bash
# Encode one track to MOS 4.2 as a user would: the default (learned) scorer, then the
# exact ViSQOL scorer for comparison.
#
#   bash scripts/demo.sh                 # a real recording from ../shared/audio, else a generated signal
#   bash scripts/demo.sh ~/Music/song.flac   # your own file (any format ffmpeg reads)
#
# Outputs go to $DEMO_OUT (default: a new temp folder), never beside the input.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${DEMO_OUT:-$(mktemp -d)}
mkdir -p "$out"
shared="$here/../shared/audio/flac-test-files/01 - blocksize 4096.flac"
if [ $# -ge 1 ]; then
  src=$1
  echo "demo: encoding your file $src"
elif [ -f "$shared" ]; then
  src=$shared
  echo "demo: encoding a real recording, $src (../shared/audio)"
else
  # a fresh clone has no ../shared/audio: say so, rather than pass a synthetic signal
  # off as music
  src="$out/generated.wav"
  echo "demo: ../shared/audio is not here, so this encodes a generated 8-s test signal (four tones"
  echo "      and noise bursts), not music; run it on your own file: bash scripts/demo.sh YOUR_FILE"
  python - "$src" <<'PY'
import sys, numpy as np, soundfile as sf
sr = 44100; t = np.arange(8 * sr) / sr; rng = np.random.default_rng(0)
x = sum(0.1 * np.sin(2 * np.pi * f * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) for f in (220, 330, 440, 660))
x = x + 0.05 * rng.standard_normal(t.size) * np.exp(-((t * 4) % 1.0) * 20)
sf.write(sys.argv[1], np.stack([x, np.roll(x, 300)], 1).astype("float32"), sr, subtype="PCM_16")
PY
fi
echo "demo: outputs in $out"
set -x
ratecontrol doctor
ratecontrol encode "$src" --target-mos 4.2 --codec opus -o "$out/demo.opus" --overwrite
ratecontrol encode "$src" --target-mos 4.2 --codec opus --scorer visqol -o "$out/demo-exact.opus" --overwrite
