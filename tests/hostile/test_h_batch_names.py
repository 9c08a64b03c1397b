"""Batch output names near the 255-byte limit (issue 23, class 6): a collision rename is
cut to fit instead of failing as an internal error; an output name that cannot fit is
that file's one clear reason. Real encodes of 1-s tones, the learned scorer."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from ratecontrol.batch import transcode_folder
from ratecontrol.batch._plan import plan_names

KW = dict(target_mos=3.6, codec="opus", scorer="learned", jobs=1, progress=False)


def _wav(path, freq=440.0):
    t = np.arange(44100) / 44100
    x = 0.3 * np.sin(2 * np.pi * freq * t)
    sf.write(path, np.stack([x, 0.7 * x]).T, 44100)


def test_plan_cuts_a_collision_rename_to_the_name_limit():
    stem = "a" * 250
    planned, coll = plan_names([f"{stem}.flac", f"{stem}.wav", f"d/{'é' * 125}.flac", f"d/{'é' * 125}.wav"], ".opus")
    assert planned[f"{stem}.flac"] == f"{stem}.opus"
    renamed = planned[f"{stem}.wav"]
    assert renamed == "a" * 246 + ".wav.opus"  # the stem cut, the input's extension kept
    assert renamed != planned[f"{stem}.flac"]
    # a 2-byte character is never cut in half
    r2 = planned[f"d/{'é' * 125}.wav"].split("/")[1]
    assert len(r2.encode()) <= 255 and r2.endswith(".wav.opus") and r2.startswith("é" * 120)
    assert {c.input for c in coll} == {f"{stem}.wav", f"d/{'é' * 125}.wav"}
    assert len(set(planned.values())) == len(planned)


def test_plan_never_repeats_a_cut_name_with_many_long_clashes():
    stem = "b" * 250
    rels = [f"{stem}{ext}" for ext in (".flac", ".wav", ".aiff", ".mp3", ".ogg")]
    planned, _ = plan_names(rels, ".opus")
    assert len(set(planned.values())) == len(rels)
    assert all(len(v.encode()) <= 255 for v in planned.values())


def test_a_long_collision_is_encoded_under_a_cut_name_and_reported(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    stem = "a" * 250
    _wav(src / f"{stem}.flac")
    _wav(src / f"{stem}.wav", freq=330.0)
    rep = transcode_folder(src, out, **KW)
    assert rep.ok, [r.reason for r in rep.records]
    assert rep.n_encoded == 2
    outs = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert len(outs) == 2 and all(len(n.encode()) <= 255 for n in outs)
    (c,) = rep.collisions
    assert c.input == f"{stem}.wav" and (out / c.output).is_file()
    assert any(line.startswith(f"renamed: {stem}.wav -> ") for line in rep.summary_lines())


def test_an_output_name_over_the_limit_fails_that_file_with_a_clear_reason(tmp_path):
    """A 251-byte stem: `.wav` fits (255 bytes), `.opus` would not (256)."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    long = "c" * 251 + ".wav"
    _wav(src / long)
    _wav(src / "short.wav", freq=330.0)
    rep = transcode_folder(src, out, **KW)
    rec = {r.input: r for r in rep.records}
    assert rec["short.wav"].status == "encoded"
    bad = rec[long]
    assert bad.status == "failed" and "internal error" not in bad.reason
    assert "256 bytes" in bad.reason and "shorter name" in bad.reason
    assert not [p for p in out.iterdir() if p.name.startswith(".rc-tmp")]
