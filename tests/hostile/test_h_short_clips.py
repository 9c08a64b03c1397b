"""Inputs too short for one full 1-s window (issue 23 class 4): a 0.2-s clip scored MOS
4.727 against pure silence and encode picked 16k "target met". Now `score` (either
file, or array), `encode` and batch refuse them with one line naming the minimum
(contract.MIN_INPUT_S, measured in bench/bench_short_clips.py), before any probe."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

import ratecontrol
from conftest import run_cli
from ratecontrol import media
from ratecontrol.contract import MIN_INPUT_S
from ratecontrol.errors import InputError

SR = 44_100


def _ff(*args) -> None:
    subprocess.run([media.ffmpeg_path(), "-hide_banner", "-v", "error", "-nostdin", "-y", *map(str, args)],
                   check=True, capture_output=True)


@pytest.fixture(scope="module")
def clips(shared_audio, tmp_path_factory) -> dict[str, Path]:
    """Cuts of the sms-tools cello phrase (a real recording) at 0.2, 0.99 and 3 s, and
    0.2 s / 3 s of digital silence."""
    d = tmp_path_factory.mktemp("short")
    src = shared_audio / "sms-tools" / "cello-phrase.wav"
    out = {}
    for name, t in (("c02", 0.2), ("c099", 0.99), ("c3", 3.0)):
        out[name] = d / f"{name}.wav"
        _ff("-ss", "1", "-i", src, "-t", t, "-c:a", "pcm_s16le", out[name])
    for name, t in (("s02", 0.2), ("s3", 3.0)):
        out[name] = d / f"{name}.wav"
        _ff("-f", "lavfi", "-i", f"anullsrc=r={SR}:cl=mono", "-t", t, "-c:a", "pcm_s16le", out[name])
    return out


def _says_minimum(text: str, name: str) -> None:
    assert f"{name} is 0.20 s long" in text and f"at least {MIN_INPUT_S:g} s" in text, text
    assert len(text.strip().splitlines()) == 1 and "Traceback" not in text


def test_minimum_is_one_window():
    assert MIN_INPUT_S == 1.0


@pytest.mark.parametrize("pair", [("c02", "s02"), ("c3", "c02"), ("c02", "c3")])
def test_score_refuses_a_short_file_either_side(clips, capsys, pair):
    ref, deg = (clips[p] for p in pair)
    short = next(clips[p] for p in pair if p in ("c02", "s02"))
    code, out, err = run_cli(["score", str(ref), str(deg)], capsys)
    assert code == 3 and out == ""
    _says_minimum(err.replace("error: ", ""), str(short))


def test_score_refuses_short_arrays(synth):
    x = synth.music(SR, 1, 0.2)
    with pytest.raises(InputError, match=r"the reference array is 0\.20 s long.*at least 1 s"):
        ratecontrol.score(x, np.zeros_like(x), sample_rate_hz=SR)
    long = synth.music(SR, 1, 2.0)
    with pytest.raises(InputError, match=r"the degraded array is 0\.20 s long"):
        ratecontrol.score(long, x, sample_rate_hz=SR)


def test_encode_refuses_a_short_input_before_any_probe(clips, tmp_path, capsys):
    probes = []
    with pytest.raises(InputError, match=r"c02\.wav is 0\.20 s long: ratecontrol needs at least 1 s"):
        ratecontrol.encode(clips["c02"], tmp_path / "o.opus", target_mos=4.0, codec="opus", cache=False,
                           on_probe=probes.append)
    assert probes == [] and not (tmp_path / "o.opus").exists()
    with pytest.raises(InputError, match=r"input array is 0\.20 s long"):
        ratecontrol.select_bitrate(np.zeros((2, int(0.2 * SR)), np.float32) + 0.1, target_mos=4.0, codec="opus",
                                   sample_rate_hz=SR, cache=False, on_probe=probes.append)
    assert probes == []
    code, out, err = run_cli(["encode", str(clips["c02"]), "--target-mos", "4", "-o", str(tmp_path / "o2.opus"),
                              "--json"], capsys)
    assert code == 3 and json.loads(out)["exit_code"] == 3
    _says_minimum(json.loads(out)["message"], str(clips["c02"]))


def test_a_clip_within_10_ms_of_the_minimum_is_scored(clips):
    r = ratecontrol.score(clips["c099"], clips["c099"])
    assert r.pooled_mos > 4.6


def test_batch_records_a_short_file_as_failed_and_goes_on(clips, tmp_path):
    from ratecontrol.batch import transcode_folder

    src = tmp_path / "in"
    src.mkdir()
    (src / "short.wav").write_bytes(clips["c02"].read_bytes())
    (src / "long.wav").write_bytes(clips["c3"].read_bytes())
    rep = transcode_folder(src, tmp_path / "out", target_mos=3.5, codec="opus", jobs=1, cache=False,
                           progress=False)
    by = {Path(r.input).name: r for r in rep.records}
    assert by["short.wav"].status == "failed"
    assert "is 0.20 s long" in by["short.wav"].reason and "at least 1 s" in by["short.wav"].reason
    assert by["long.wav"].status == "encoded"
