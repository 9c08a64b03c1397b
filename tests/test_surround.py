"""Surround kept (issue 17): layouts, ladders, LFE out of the pool, MP3's downmix note.

Real ffmpeg, real codecs, the real scorer. Layout files: the FLAC testbench in
../shared/audio (mono 60, stereo 01, 3.0 38, 4.0 39, 5.1(side) 41, 7.1 43; skipped when
absent), plus layouts generated here (5.1(side), 2.1) so the suite covers odd layouts
without it.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ratecontrol import media
from ratecontrol.align import estimate_delay
from ratecontrol.media._layouts import canonical_layout, lfe_indices, target_layout
from ratecontrol.presets import SURROUND_GROUPS, load_preset
from ratecontrol.probing.track import load_track, output_rate

TESTBENCH = {"mono": "60", "stereo": "01", "3.0": "38", "4.0": "39", "5.1": "41", "7.1": "43"}
#: what each testbench layout is coded in (any preset that carries surround)
CODED = {"mono": "mono", "stereo": "stereo", "3.0": "3.0", "4.0": "quad", "5.1": "5.1", "7.1": "7.1"}


def _testbench(shared_audio: Path, layout: str) -> Path:
    hits = sorted((shared_audio / "flac-test-files").glob(f"{TESTBENCH[layout]} *.flac"))
    if not hits:
        pytest.skip(f"testbench file {TESTBENCH[layout]} not present")
    return hits[0]


def _generated(tmp_path: Path, layout: str, seconds: float = 2.0) -> Path:
    """A FLAC of ``layout``: independent pink noise per channel (a swapped channel shows)."""
    n = len(media._layouts.layout_channels(layout))
    srcs = "".join(f"anoisesrc=d={seconds}:r=44100:c=pink:a=0.2:seed={k + 1}[s{k}];" for k in range(n))
    ins = "".join(f"[s{k}]" for k in range(n))
    out = tmp_path / f"gen_{layout.replace('(', '_').replace(')', '')}.flac"
    subprocess.run([media.ffmpeg_path(), "-hide_banner", "-loglevel", "error", "-y", "-filter_complex",
                    f"{srcs}{ins}join=inputs={n}:channel_layout={layout}[a]", "-map", "[a]", "-c:a", "flac",
                    str(out)], check=True)
    return out


# ------------------------------------------------------------------ no ffmpeg runs

def test_stereo_and_mono_ladders_unchanged():
    for name in ("opus", "aac", "vorbis", "mp3", "mp3-vbr"):
        p = load_preset(name)
        assert p.rungs_for(2) == p.rungs
        assert [r.label for r in p.rungs_for(2)] == [r.label for r in p.rungs]


def test_surround_ladders_follow_the_yaml_rule():
    opus, aac = load_preset("opus"), load_preset("aac")
    # 5.1 = 2 pairs + centre + LFE: 2.5 x the stereo rung with pair 1, single 0.5, lfe 0
    assert SURROUND_GROUPS[6] == (2, 1, 1)
    assert [r.bitrate_kbps for r in opus.rungs_for(6)][:3] == [40.0, 60.0, 80.0]
    assert aac.rungs_for(6)[-1].bitrate_kbps == 800.0
    assert opus.rungs_for(8)[-1].bitrate_kbps == 896.0
    v = load_preset("vorbis")
    assert [r.options for r in v.rungs_for(6)] == [r.options for r in v.rungs]  # q:a kept
    assert v.rungs_for(6)[0].nominal_kbps > v.rungs[0].nominal_kbps * 3
    assert load_preset("mp3").rungs_for(6) == load_preset("mp3").rungs  # max_channels 2


def test_layout_mapping_notes():
    assert target_layout("5.1", 6) == ("5.1", None)
    lay, note = target_layout("5.1(side)", 6)
    assert lay == "5.1" and "stored as 5.1" in note
    lay, note = target_layout("4.0", 4)
    assert lay == "quad" and "mapped to quad" in note
    assert target_layout("2.1", 3)[0] == "5.1"  # keeps its LFE
    assert target_layout("6.1", 7, "aac")[0] == "6.1(back)"
    assert canonical_layout(2) is None and canonical_layout(8) == "7.1"
    assert lfe_indices("5.1") == (3,) and lfe_indices("7.1") == (3,) and lfe_indices("quad") == ()


# ------------------------------------------------------------- real encodes

def _check_roundtrip(path: Path, preset_name: str, expect_layout: str):
    """The track decoded for the preset, encoded at a middle rung, the file inspected and
    decoded back: channel count, layout, zero delay and the channels in place."""
    p = load_preset(preset_name)
    tr = load_track(path, lambda r: output_rate(p, r), None, preset=p)
    rung = p.rungs_for(tr.channels)[len(p.rungs_for(tr.channels)) // 2]
    rt = media.roundtrip_info(tr.src, tr.rate_hz, p, rung, keep=True)
    try:
        info = media.inspect(rt.encoded_path)
        assert info.channels == tr.channels == (len(media._layouts.layout_channels(expect_layout)))
        assert info.channel_layout == expect_layout, (preset_name, info.channel_layout)
    finally:
        rt.encoded_path.unlink(missing_ok=True)
    assert rt.audio.shape == tr.src.shape
    lfe = lfe_indices(tr.layout)
    for c in range(tr.channels):
        ref, deg = tr.src[c], rt.audio[c]
        if c in lfe or np.abs(ref).max() < 1e-3:
            continue
        assert estimate_delay(ref[None], deg[None], 2000) == 0, (preset_name, expect_layout, c)
        r = float(np.dot(ref, deg) / np.sqrt(np.dot(ref, ref) * np.dot(deg, deg)))
        assert r > 0.8, (preset_name, expect_layout, c, r)  # this channel, not a neighbour
    return tr


@pytest.mark.parametrize("layout", list(TESTBENCH))
@pytest.mark.parametrize("preset", ["opus", "aac", "vorbis"])
def test_testbench_layout_kept(shared_audio, layout, preset):
    _check_roundtrip(_testbench(shared_audio, layout), preset, CODED[layout])


@pytest.mark.parametrize("layout,coded", [("5.1(side)", "5.1"), ("2.1", "5.1"), ("6.1", "6.1")])
@pytest.mark.parametrize("preset", ["opus", "aac", "vorbis"])
def test_generated_odd_layouts(tmp_path, layout, coded, preset):
    if preset == "aac" and coded == "6.1":
        coded = "6.1(back)"
    tr = _check_roundtrip(_generated(tmp_path, layout), preset, coded)
    if layout != coded:
        assert any("layout" in n for n in tr.notes)


def test_mp3_downmixes_and_says_so(tmp_path, capsys):
    from conftest import run_cli

    src = _generated(tmp_path, "5.1(side)", seconds=2.0)
    out = tmp_path / "o.mp3"
    args = ["encode", str(src), "--target-mos", "3.5", "--codec", "mp3", "-o", str(out), "--no-cache",
            "--best-effort"]
    code, stdout, _ = run_cli(args + ["--json"], capsys)
    assert code == 0, stdout
    d = json.loads(stdout)
    assert d["search"]["downmixed_from_channels"] == 6
    assert d["search"]["channels"] == 2
    assert any("downmixed to stereo" in n for n in d["search"]["notes"])
    assert media.inspect(out).channels == 2
    code, _, stderr = run_cli(args + ["--overwrite"], capsys)
    assert code == 0 and "downmixed to stereo" in stderr


def test_opus_51_encode_keeps_layout_and_score_reproduces(tmp_path):
    import ratecontrol

    src = _generated(tmp_path, "5.1(side)", seconds=2.0)
    out = tmp_path / "o.opus"
    r = ratecontrol.encode(src, out, target_mos=4.0, codec="opus", cache=False, best_effort=True)
    info = media.inspect(out)
    assert (info.channels, info.channel_layout) == (6, "5.1")
    s = r.search
    assert s.channel_layout == "5.1" and s.downmixed_from_channels is None and s.unscored_channels == (3,)
    assert 3 not in set(s.window_channel) and set(s.window_channel) == {0, 1, 2, 4, 5}
    assert r.verified
    sc = ratecontrol.score(src, out)
    assert 3 not in set(sc.window_channel)
    assert abs(sc.pooled_mos - r.pooled_mos) < 0.02


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["opus", "aac", "vorbis", "mp3"])
def test_real_51_encode_every_preset(shared_audio, tmp_path, preset):
    import ratecontrol

    src = _testbench(shared_audio, "5.1")
    p = load_preset(preset)
    out = tmp_path / f"o{p.extension}"
    r = ratecontrol.encode(src, out, target_mos=4.0, codec=preset, cache=False, best_effort=True)
    info = media.inspect(out)
    assert info.channels == (2 if preset == "mp3" else 6)
    assert abs(ratecontrol.score(src, out).pooled_mos - r.pooled_mos) < 0.02


def test_codec_auto_on_surround_skips_mp3(tmp_path):
    import ratecontrol

    src = _generated(tmp_path, "5.1(side)", seconds=1.5)
    r = ratecontrol.encode(src, tmp_path / "o", target_mos=3.5, codec="auto", cache=False, best_effort=True)
    assert r.preset != "mp3" and media.inspect(r.output_path).channels == 6
    assert any("not tried on 6 channels" in n and "mp3" in n for n in r.search.notes)
