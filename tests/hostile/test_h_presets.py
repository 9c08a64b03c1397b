"""Issue 23 classes 2 and 6 (preset parts): a preset file is data, never a way to make
ffmpeg write elsewhere or to spend the machine. Each case is a PresetError (exit 5)
naming the file, one short line, before any decode or probe."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ratecontrol import errors
from ratecontrol.cli import main
from ratecontrol.presets import MAX_PRESET_BYTES, load_preset

OPUS = (Path(__file__).resolve().parents[2] / "ratecontrol" / "presets" / "opus.yaml").read_text()
VORBIS = (Path(__file__).resolve().parents[2] / "ratecontrol" / "presets" / "vorbis.yaml").read_text()

#: the 558-byte bomb of the issue: 9 levels of 9 aliases each, 9**9 strings once expanded
ALIAS_BOMB = OPUS.replace("name: opus", "name: opus\nx: *i").replace("# Opus", "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{b}: &{b} [{', '.join(['*' + a] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi")]) + "\n# Opus", 1)


def _cli(args, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as ei:
        main(args)
    return ei.value.code, capsys.readouterr().err


@pytest.fixture
def wav(tmp_path):
    p = tmp_path / "in.wav"
    sf.write(p, np.zeros((4800, 2), np.float32), 48_000)
    return p


CASES = [
    ("alias-bomb", ALIAS_BOMB.encode(), "anchors and aliases"),
    ("anchor", OPUS.replace("rungs:\n", "rungs: &r\n").encode(), "anchors and aliases"),
    ("not-utf8", OPUS.replace("description: Opus", "description: \udcffOpus").encode("utf-8", "surrogateescape"),
     "not UTF-8"),
    ("latin1", OPUS.replace("description: Opus", "description: Opus \u00e9t\u00e9").encode("latin-1"), "not UTF-8"),
    ("ext-slash", OPUS.replace("extension: .opus", "extension: ../../x/.opus").encode(), "'extension'"),
    ("ext-other", OPUS.replace("extension: .opus", "extension: .sh").encode(), "'extension'"),
    ("too-big", (OPUS + "#" + "x" * MAX_PRESET_BYTES + "\n").encode(), "at most 64 KB"),
    ("deep", ("name: " + "[" * 20000 + "]" * 20000 + "\n").encode(), "nested deeper"),
    ("huge-int", OPUS.replace("sample_rate_hz: 48000", "sample_rate_hz: " + "9" * 5000).encode(), "invalid YAML"),
    ("bad-date", OPUS.replace("sample_rate_hz: 48000", "sample_rate_hz: 2020-13-45").encode(), "invalid YAML"),
    ("nul-value", OPUS.replace("application: audio", 'application: "au\\0dio"').encode(), "options.application"),
    ("name-path", OPUS.replace("name: opus", "name: ../../evil").encode(), "'name'"),
    ("max-channels", OPUS.replace("max_channels: 8", "max_channels: 64").encode(), "'max_channels'"),
    ("nominal-overflow", OPUS.replace("nominal_kbps: 16,", "nominal_kbps: " + "9" * 400 + ",").encode(),
     "'rungs[0].nominal_kbps'"),
    # the knob (issue 24): a label that would allocate a GB or raise AttributeError, numbers past float
    ("knob-label-width", OPUS.replace("resolution: 1}", 'resolution: 1, label: "{:>999999999}"}').encode(),
     "'knob.label'"),
    ("knob-label-attr", OPUS.replace("resolution: 1}", 'resolution: 1, label: "{0.real.x}"}').encode(),
     "'knob.label'"),
    ("knob-overflow", OPUS.replace("max: 510", "max: " + "9" * 400).encode(), "'knob.max'"),
    ("knob-q-not-a-number", VORBIS.replace('{"q:a": 0}', '{"q:a": zero}').encode(), "q:a"),
]


@pytest.mark.parametrize("case,text,says", CASES, ids=[c[0] for c in CASES])
def test_hostile_preset_file_is_exit_5_naming_the_file(tmp_path, wav, capsys, case, text, says):
    preset = tmp_path / f"{case}.yaml"
    preset.write_bytes(text)
    out = tmp_path / "out.opus"
    t0 = time.monotonic()
    code, err = _cli(["encode", str(wav), "--target-mos", "4", "--codec", str(preset), "-o", str(out),
                      "--no-cache"], capsys)
    assert time.monotonic() - t0 < 10
    assert code == errors.PresetError.exit_code, err
    line = [ln for ln in err.splitlines() if "error" in ln.lower() or str(preset) in ln]
    assert line and str(preset) in line[-1] and says in line[-1], err
    assert len(err) < 1000, "never the whole structure"
    assert not out.exists()


def test_alias_bomb_costs_nothing(tmp_path):
    """Was 41.7 s, 2.9 GB and a ~700 MB error message."""
    f = tmp_path / "bomb.yaml"
    f.write_text(ALIAS_BOMB)
    assert len(f.read_bytes()) < MAX_PRESET_BYTES
    t0 = time.monotonic()
    with pytest.raises(errors.PresetError) as ei:
        load_preset(f)
    assert time.monotonic() - t0 < 2
    assert len(str(ei.value)) < 300 and "\n" not in str(ei.value)


def test_errors_never_print_a_whole_structure(tmp_path):
    big = "[" + ", ".join(["1"] * 5000) + "]"
    f = tmp_path / "list.yaml"
    f.write_text(OPUS.replace("description: Opus", f"description: {big}\n#"))
    with pytest.raises(errors.PresetError, match="'description'") as ei:
        load_preset(f)
    assert len(str(ei.value)) < 300


def test_the_extension_must_belong_to_the_container(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(OPUS.replace("extension: .opus", "extension: .mp3"))
    with pytest.raises(errors.PresetError, match="'extension' must be one of .oga, .ogg, .opus"):
        load_preset(f)
    f.write_text(OPUS.replace("extension: .opus", "extension: .ogg"))
    assert load_preset(f).extension == ".ogg"


# --- class 2: only the encoder's and the container's own options reach ffmpeg --------------

#: each attack of the issue: (preset text edit, where the file would have gone)
ATTACKS = {
    # flag options of ffmpeg's command line: the value became a second output (-y)
    "shortest": lambda t, v: t.replace("application: audio}", f'application: audio, shortest: "{v}"}}'),
    "bitexact": lambda t, v: t.replace("application: audio}", f'application: audio, bitexact: "{v}"}}'),
    "stats": lambda t, v: t.replace("application: audio}", f'application: audio, stats: "{v}"}}'),
    "progress": lambda t, v: t.replace("application: audio}", f'application: audio, progress: "{v}"}}'),
    "rung-shortest": lambda t, v: t.replace('{"b:a": 16k}', f'{{"b:a": 16k, shortest: "{v}"}}'),
    # muxers that write files named by their options
    "hls": lambda t, v: t.replace("format: ogg", "format: hls").replace(
        "application: audio}", f'application: audio, hls_segment_filename: "{v}"}}'),
    "segment": lambda t, v: t.replace("format: ogg", "format: segment").replace(
        "application: audio}", f'application: audio, segment_list: "{v}"}}'),
}


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_preset_options_cannot_make_ffmpeg_write_elsewhere(tmp_path, synth, capsys, attack):
    """Was exit 0 with the victim file written (and the rung mislabelled: "64k" at 118 kbps)."""
    run = tmp_path / "run"
    run.mkdir()
    src = run / "in.wav"
    sf.write(src, synth.noise(48_000, 2, 1.0, 0.1).T, 48_000)
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir()
    preset = run / "evil.yaml"
    preset.write_text(ATTACKS[attack](OPUS, victim))
    before = _files(tmp_path)
    code, err = _cli(["encode", str(src), "--target-mos", "3", "--codec", str(preset), "-o", str(run / "out.opus"),
                      "--no-cache", "--no-verify"], capsys)
    assert code == errors.PresetError.exit_code, err
    assert str(preset) in err and "Traceback" not in err
    assert not victim.exists()
    assert _files(tmp_path) == before, "nothing written anywhere"


@pytest.mark.parametrize("edit,says", [
    (lambda t: t.replace('vbr: "on"', "vbr: maybe"), "options.vbr"),
    (lambda t: t.replace('vbr: "on"', "vbr: 7"), "from 0 to 2"),
    (lambda t: t.replace("application: audio", "application: music"), "options.application"),
    (lambda t: t.replace("application: audio", "apply_phase_inv: perhaps"), "true/false"),
    (lambda t: t.replace("application: audio", "frame_duration: 500"), "from 2.5 to 120"),
    (lambda t: t.replace('{"b:a": 16k}', '{"b:a": "16q"}'), "rungs[0].options.b:a"),
    (lambda t: t.replace('{"b:a": 16k}', '{"b:a": 16k, "vbr:v": "on"}'), "stream specifier"),
    (lambda t: t.replace("application: audio", "nosuch_option: 1"), "not an option of encoder libopus"),
    (lambda t: t.replace("application: audio", "serial_offset: 1, \"serial_offset:a\": 2"), "serial_offset:a"),
])
def test_option_values_are_checked_against_ffmpegs_listing(tmp_path, edit, says):
    from ratecontrol import media

    f = tmp_path / "p.yaml"
    f.write_text(edit(OPUS))
    with pytest.raises(errors.PresetError) as ei:
        media.require_encoder(load_preset(f))
    assert str(f) in str(ei.value) and says in str(ei.value), str(ei.value)
    assert "\n" not in str(ei.value)


def test_muxer_options_and_generic_settings_pass(tmp_path):
    from ratecontrol import media

    f = tmp_path / "p.yaml"
    f.write_text(OPUS.replace("application: audio", 'application: lowdelay, page_duration: 20000, fec: "true", dtx: 0, '
                              'packet_loss: 5, "b:a": 64k, "compression_level:a": 10'))
    media.require_encoder(load_preset(f))
    aac = load_preset("aac")
    assert aac.options == {"movflags": "+faststart"}
    media.require_encoder(aac)  # a muxer flag by name


def test_a_preset_object_built_in_code_is_checked_too():
    """The check is at use (media.require_encoder), not only in the YAML parser."""
    from dataclasses import replace

    from ratecontrol import media

    opus = load_preset("opus")
    with pytest.raises(errors.PresetError, match="'format'"):
        media.require_encoder(replace(opus, format="hls"))
    with pytest.raises(errors.PresetError, match="options.shortest"):
        media.require_encoder(replace(opus, options={"shortest": "/tmp/x"}))


def test_the_listing_is_one_ffmpeg_run_per_binary_and_encoder(monkeypatch):
    from ratecontrol.media import _encoders

    calls = []
    real = _encoders.run_args
    monkeypatch.setattr(_encoders, "run_args", lambda args, **kw: calls.append(args) or real(args, **kw))
    _encoders._listing.cache_clear()
    for _ in range(3):
        assert "vbr" in _encoders.encoder_options("libopus")
        assert "write_xing" in _encoders.muxer_options("mp3")
    assert calls == [["-hide_banner", "-h", "encoder=libopus"], ["-hide_banner", "-h", "muxer=mp3"]]


HELP = """\
Encoder libopus [libopus Opus]:
    General capabilities: dr1 delay small
libopus AVOptions:
  -application       <int>        E...A...... Intended application type (from 2048 to 2051) (default audio)
     voip            2048         E...A...... Favor improved speech intelligibility
     audio           2049         E...A...... Favor faithfulness to the input
  -frame_duration    <float>      E...A...... Duration of a frame in milliseconds (from 2.5 to 120) (default 20)
  -movflags          <flags>      E.......... MOV muxer flags (default 0)
     faststart                    E.......... Run a second pass
  -bufsize           <int>        E..VA...... (from INT_MIN to INT_MAX) (default 0)
"""


def test_parse_help_reads_types_ranges_and_constants():
    from ratecontrol.media._encoders import check_option_value, parse_help

    got = parse_help(HELP)
    assert set(got) == {"application", "frame_duration", "movflags", "bufsize"}
    app = got["application"]
    assert (app.type, app.min_value, app.max_value, app.constants) == ("int", 2048, 2051, {"voip", "audio"})
    assert got["movflags"].constants == {"faststart"} and got["bufsize"].max_value == 2 ** 31 - 1
    assert check_option_value(app, "audio") is None and check_option_value(app, 2049) is None
    assert "from 2048 to 2051" in check_option_value(app, 1)
    assert check_option_value(got["movflags"], "+faststart") is None
    assert check_option_value(got["movflags"], "+faststart+nope")
    assert check_option_value(got["frame_duration"], "2.5") is None
    assert check_option_value(got["frame_duration"], float("nan"))


@pytest.mark.parametrize("attack", ["shortest", "hls"])
def test_batch_refuses_the_same_presets_before_any_work(tmp_path, synth, capsys, attack):
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.wav", synth.noise(48_000, 2, 1.0, 0.1).T, 48_000)
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir()
    preset = tmp_path / "evil.yaml"
    preset.write_text(ATTACKS[attack](OPUS, victim))
    before = _files(tmp_path)
    code, err = _cli(["batch", str(src), str(tmp_path / "out"), "--target-mos", "3", "--codec", str(preset)], capsys)
    assert code == errors.PresetError.exit_code, err
    assert str(preset) in err and not victim.exists()
    assert _files(tmp_path) == before
