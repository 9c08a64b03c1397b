#!/usr/bin/env bash
# The install figures in the README ("What installs what"): for each NAME SPEC pair, a
# new venv, an empty pip cache (so downloads count, as on a user's first install), then
# `pip install -e SPEC` from a copy of this tree, timed; the venv's size after it.
#
#   bash scripts/measure_install.sh core . gpu ".[gpu]" test ".[test]"
#
# Work folder: $MEASURE_DIR (default: a new temp folder; each venv is left there to look
# into, e.g. du -sm VENV/lib/python*/site-packages/* | sort -n).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${MEASURE_DIR:-$(mktemp -d)}
mkdir -p "$work"
py=${PYTHON:-python3}
while [ $# -ge 2 ]; do
  name=$1; spec=$2; shift 2
  src="$work/src-$name"; venv="$work/venv-$name"; cache="$work/cache-$name"
  rm -rf "$src" "$venv" "$cache"
  # a copy: an editable install points at its source, which must not change meanwhile
  cp -r "$here" "$src"; rm -rf "$src/.git"
  "$py" -m venv "$venv"
  start=$(date +%s)
  (cd "$src" && PIP_CACHE_DIR="$cache" "$venv/bin/pip" install -q -e "$spec") > "$work/$name.log" 2>&1 \
    || { echo "$name: pip failed, see $work/$name.log"; continue; }
  end=$(date +%s)
  rm -rf "$cache"
  echo "$name ($spec): $((end - start)) s, venv $(du -sm "$venv" | cut -f1) MB"
done
