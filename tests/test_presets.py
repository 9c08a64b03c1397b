"""Preset loading, validation, mono/surround ladders, encoder availability."""
from __future__ import annotations

from pathlib import Path

import pytest

from ratecontrol import media

from ratecontrol.errors import EncoderNotAvailableError, PresetError
from ratecontrol.media import available_encoders
from ratecontrol.presets import Preset, Rung, list_presets, load_preset, preset_names

EXPECTED = {"opus", "aac", "mp3", "mp3-vbr", "vorbis", "fdk-he-aac", "fdk-he-aac-v2"}

GOOD = """\
name: mine
description: test preset
encoder: libopus
format: ogg
extension: .opus
sample_rate_hz: 48000
options: {vbr: "on"}
rungs:
  - {label: 32k, nominal_kbps: 32, options: {"b:a": 32k}}
  - {label: 64k, nominal_kbps: 64, options: {"b:a": 64k}}
"""


def _yaml(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    f = tmp_path / name
    f.write_text(text)
    return f


def test_packaged_presets():
    assert set(preset_names()) == EXPECTED
    for p in list_presets():
        assert isinstance(p, Preset)
        assert p.source_path is not None and p.source_path.suffix == ".yaml"
        assert p.extension.startswith(".") and p.rungs
        kbps = [r.nominal_kbps for r in p.rungs]
        assert kbps == sorted(set(kbps)), p.name
        assert [r.index for r in p.rungs] == list(range(len(p.rungs)))
        # every YAML opens with a comment saying where its numbers come from
        head = p.source_path.read_text().split("\nname:")[0]
        assert head.startswith("#") and ("http" in head or "ISO" in head), p.name


def test_records_keep_their_public_home():
    """presets.py is split into private modules (issue 27): a Preset still pickles (to a
    dask worker) under ratecontrol.presets and loads back equal."""
    import pickle

    p = load_preset("opus")
    blob = pickle.dumps(p)
    assert b"ratecontrol.presets" in blob and b"_preset_" not in blob
    assert pickle.loads(blob) == p and Preset.__module__ == "ratecontrol.presets"


def test_packaged_ladder_details():
    opus = load_preset("opus")
    assert opus.encoder == "libopus" and opus.sample_rate_hz == 48000
    assert opus.options == {"vbr": "on", "application": "audio"}
    assert [r.nominal_kbps for r in opus.rungs][:3] == [16, 24, 32]
    assert opus.rungs[-1].nominal_kbps == 256
    aac = load_preset("aac")
    assert (aac.encoder, aac.format, aac.extension) == ("aac", "ipod", ".m4a")
    assert aac.rungs[0].nominal_kbps == 32 and aac.rungs[-1].nominal_kbps == 320
    mp3 = load_preset("mp3")
    assert mp3.rungs[-1].options == {"b:a": "320k"}
    vbr = load_preset("mp3-vbr")
    assert [r.options["q:a"] for r in vbr.rungs] == list(range(9, -1, -1))
    assert not vbr.is_bitrate_ladder and mp3.is_bitrate_ladder
    v2 = load_preset("fdk-he-aac-v2")
    assert v2.options == {"profile:a": "aac_he_v2"}
    # parametric stereo needs 2 channels: the mono ladder switches to HE-AAC v1
    assert all(r.options["profile:a"] == "aac_he" for r in v2.rungs_for(1))


def test_fdk_presets_report_missing_encoder():
    assert "libfdk_aac" not in available_encoders()  # the imageio-ffmpeg build
    for name in ("fdk-he-aac", "fdk-he-aac-v2"):
        p = load_preset(name)
        assert not media.encoder_available(p)
        with pytest.raises(EncoderNotAvailableError) as ei:
            media.require_encoder(p)
        msg = str(ei.value)
        assert f"'{name}'" in msg and "libfdk_aac" in msg and "RATECONTROL_FFMPEG" in msg
        assert "\n" not in msg


def test_available_presets_pass_check():
    for name in ("opus", "aac", "mp3", "mp3-vbr", "vorbis"):
        media.require_encoder(load_preset(name))


def test_mono_ladders():
    opus1 = load_preset("opus").rungs_for(1)
    kb = [r.nominal_kbps for r in opus1]
    assert kb == sorted(set(kb)) and kb[0] == 12 and kb[-1] == 128
    assert all(r.options["b:a"] == f"{int(r.nominal_kbps)}k" for r in opus1)
    assert [r.index for r in opus1] == list(range(len(opus1)))
    # mp3 mono snaps to valid MPEG-1 bitrates and drops the duplicates
    valid = {32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320}
    mp31 = load_preset("mp3").rungs_for(1)
    assert {r.nominal_kbps for r in mp31} <= valid
    assert len(mp31) == len({r.nominal_kbps for r in mp31})
    assert mp31[0].nominal_kbps == 32 and mp31[-1].nominal_kbps == 160
    # quality rungs keep the encoder setting; only the reporting figure halves
    v = load_preset("vorbis")
    for a, b in zip(v.rungs, v.rungs_for(1)):
        assert a.options == b.options and b.nominal_kbps == a.nominal_kbps / 2


def test_surround_and_stereo_ladders():
    opus = load_preset("opus")
    assert opus.rungs_for(2) is opus.rungs
    six = opus.rungs_for(6)
    # the measured surround rule of opus.yaml: 5.1 = 2 pairs + centre (x 0.5) + LFE (x 0)
    assert [r.nominal_kbps for r in six][:2] == [40, 60]
    # mp3 cannot carry more than 2 channels: its surround ladder is the stereo one
    assert load_preset("mp3").rungs_for(6) == load_preset("mp3").rungs
    with pytest.raises(PresetError):
        opus.rungs_for(0)


def test_rung_lookup():
    p = load_preset("opus")
    assert p.rung("64k").nominal_kbps == 64
    assert p.rung(0) is p.rungs[0]
    assert p.rung("12k", channels=1).nominal_kbps == 12
    with pytest.raises(PresetError, match="no rung '65k'"):
        p.rung("65k")
    with pytest.raises(PresetError):
        p.rung(99)


def test_user_yaml_by_path(tmp_path):
    f = _yaml(tmp_path, GOOD)
    p = load_preset(f)
    assert p.name == "mine" and p.source_path == f
    assert load_preset(str(f)) == p
    assert p.rungs[1] == Rung(index=1, label="64k", nominal_kbps=64.0,
                              options={"b:a": "64k"})


def test_unknown_preset_name():
    with pytest.raises(PresetError, match="unknown preset 'opuss'") as ei:
        load_preset("opuss")
    assert "opus" in str(ei.value)  # lists the choices


def test_missing_preset_file(tmp_path):
    with pytest.raises(PresetError, match="not found"):
        load_preset(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "edit,key",
    [
        (lambda t: t + "bitrate_mode: vbr\n", "'bitrate_mode'"),  # unknown top key
        (lambda t: t.replace("encoder: libopus\n", ""), "'encoder'"),  # missing key
        (lambda t: t.replace("nominal_kbps: 64", "nominal_kbps: 32"),
         "'rungs[1].nominal_kbps'"),  # not strictly increasing
        (lambda t: t.replace("nominal_kbps: 64", "nominal_kbps: 16"),
         "'rungs[1].nominal_kbps'"),  # decreasing
        (lambda t: t.split("rungs:")[0] + "rungs: []\n", "'rungs'"),  # empty ladder
        (lambda t: t.replace("sample_rate_hz: 48000", "sample_rate_hz: fast"),
         "'sample_rate_hz'"),  # bad type
        (lambda t: t.replace("nominal_kbps: 32,", "nominal_kbps: yes,"),
         "'rungs[0].nominal_kbps'"),  # boolean where a number belongs
        (lambda t: t.replace("{label: 32k, ", "{label: 32k, bitrate: 1, "),
         "'rungs[0].bitrate'"),  # unknown rung key
        (lambda t: t.replace("{label: 32k, ", "{"), "'rungs[0].label'"),  # missing rung key
        (lambda t: t.replace('"b:a": 32k', '"b:a": fast'), "'rungs[0].options.b:a'"),
        (lambda t: t + "mono: {policy: half}\n", "'mono.policy'"),
        (lambda t: t + "mono: {scale: 2}\n", "'mono.scale'"),
        (lambda t: t + "mono: {policy: rungs}\n", "'mono.rungs'"),
        (lambda t: t + "decoder_delay_samples: 12\n", "'decoder_delay_rate_hz'"),
        (lambda t: t.replace("extension: .opus", "extension: opus"), "'extension'"),
    ],
)
def test_invalid_yaml_names_file_and_key(tmp_path, edit, key):
    f = _yaml(tmp_path, edit(GOOD), "broken.yaml")
    with pytest.raises(PresetError) as ei:
        load_preset(f)
    msg = str(ei.value)
    assert str(f) in msg and key in msg, msg
    assert "\n" not in msg


def test_invalid_yaml_syntax_and_shape(tmp_path):
    f = _yaml(tmp_path, "name: [unclosed\n", "syntax.yaml")
    with pytest.raises(PresetError, match="syntax.yaml: invalid YAML"):
        load_preset(f)
    f = _yaml(tmp_path, "- just\n- a list\n", "list.yaml")
    with pytest.raises(PresetError, match="list.yaml: a preset file must be a YAML mapping"):
        load_preset(f)


def test_explicit_mono_rungs(tmp_path):
    text = GOOD + (
        "mono:\n  policy: rungs\n  rungs:\n"
        "    - {label: m24, nominal_kbps: 24, options: {\"b:a\": 24k}}\n"
    )
    p = load_preset(_yaml(tmp_path, text))
    assert [r.label for r in p.rungs_for(1)] == ["m24"]
    assert [r.label for r in p.rungs_for(2)] == ["32k", "64k"]


def test_presets_are_frozen_and_hashable():
    p = load_preset("opus")
    with pytest.raises(Exception):
        p.name = "x"  # type: ignore[misc]
    assert hash(p) == hash(load_preset("opus"))
    assert len({r for r in p.rungs}) == len(p.rungs)


@pytest.mark.parametrize("key", ["f:", "f", "map", "y", "af", "ar:a", "i", "b a", "-b:a"])
def test_options_that_would_replumb_the_command_are_refused(tmp_path, key):
    """Issue 15 item 7: a preset option `f:` went to ffmpeg as `-f: x` (internal error)."""
    src = (Path(__file__).resolve().parents[1] / "ratecontrol" / "presets" / "opus.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(src.replace('options: {vbr: "on", application: audio}',
                               f'options: {{vbr: "on", application: audio, "{key}": x}}'))
    with pytest.raises(PresetError, match="not an encoder option"):
        load_preset(str(bad))
