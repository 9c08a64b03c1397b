"""One options object for library and CLI (issue 13), and library misuse answered
inside the error tree (issue 15 item 9): every bad value is one UsageError/InputError
naming it, before any work."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf

import ratecontrol
from ratecontrol import Options, errors, media
from ratecontrol.api import select_bitrate

SR = 48_000


@pytest.fixture(autouse=True)
def _no_probe(monkeypatch):
    """Misuse must be refused before anything is encoded."""
    monkeypatch.setattr(media, "roundtrip_info", lambda *a, **k: pytest.fail("probed despite a bad argument"))


@pytest.fixture
def audio(synth):
    return synth.noise(SR, 2, 1.0, 0.1)


@pytest.mark.parametrize("bad", ["abc", None, [4.2], math.nan, math.inf, 0.5, 5.5, True])
def test_bad_targets_are_usage_errors(audio, bad):
    with pytest.raises(errors.UsageError, match="target MOS"):
        select_bitrate(audio, sample_rate_hz=SR, target_mos=bad)


@pytest.mark.parametrize("field,value", [("hop_s", 0), ("hop_s", -1), ("hop_s", math.nan), ("jobs", "x"),
                                         ("jobs", 0), ("jobs", 1.5), ("sample_share", 0), ("sample_share", 2),
                                         ("max_kbps", -3), ("margin_mos", math.nan), ("margin_mos", -0.1),
                                         ("pool", "p200"), ("on_probe", 3), ("scorer", 3)])
def test_bad_option_values_name_the_field(audio, field, value):
    with pytest.raises(errors.UsageError):
        select_bitrate(audio, sample_rate_hz=SR, target_mos=4.0, **{field: value})


def test_unknown_option_is_named(audio):
    with pytest.raises(errors.UsageError, match="unknown option.*hopp"):
        select_bitrate(audio, sample_rate_hz=SR, target_mos=4.0, hopp=1)


@pytest.mark.parametrize("rate", [-48000, 0, 1, 7999, 48000.5, "48k", math.nan, 10**9])
def test_bad_sample_rates(audio, rate):
    with pytest.raises(errors.UsageError, match="sample_rate_hz"):
        select_bitrate(audio, sample_rate_hz=rate, target_mos=4.0)


@pytest.mark.parametrize("arr", [np.ones((2, SR), complex), np.ones((2, SR), bool), np.array([["a"] * 10] * 2)])
def test_non_real_arrays_are_refused(arr):
    with pytest.raises(errors.UsageError, match="dtype"):
        select_bitrate(arr, sample_rate_hz=SR, target_mos=4.0)


def test_integer_pcm_is_scaled_and_both_layouts_are_taken():
    from ratecontrol.probing.track import as_array

    x = (np.sin(np.arange(SR) / 10) * 0.5).astype(np.float32)
    i16 = np.round(x * 32767).astype(np.int16)
    got = as_array(np.stack([i16, i16]), "a")
    assert np.abs(got).max() == pytest.approx(0.5, abs=1e-3), "int16 scaled by 32768, not clipped"
    sf_layout = as_array(np.stack([x, x]).T, "a")  # soundfile: [samples, channels]
    assert sf_layout.shape == (2, SR)
    assert np.array_equal(sf_layout, as_array(np.stack([x, x]), "a"))
    u8 = as_array(np.full((1, 100), 128, np.uint8), "a")
    assert np.all(u8 == 0)
    with pytest.raises(errors.InputError, match="channels"):
        as_array(np.zeros((20, 30)), "a")


def test_nan_file_is_an_input_error(tmp_path):
    x = np.zeros((SR, 2), np.float32)
    x[100] = np.nan
    p = tmp_path / "nan.wav"
    sf.write(p, x, SR, subtype="FLOAT")
    with pytest.raises(errors.InputError, match="NaN"):
        select_bitrate(p, target_mos=4.0)
    with pytest.raises(errors.InputError, match="NaN"):
        ratecontrol.score(p, p)


def test_options_round_trip_library_and_cli(tmp_path, monkeypatch, capsys):
    """The CLI builds the same Options a library caller would."""
    seen = []

    def spy(source, output=None, *, target_mos, codec, options, overwrite, report=None, **kw):
        seen.append(options)
        raise errors.TargetNotReachable("stop here")

    monkeypatch.setattr("ratecontrol.api.encode", spy)
    src = tmp_path / "a.wav"
    sf.write(src, np.zeros((SR, 2), np.float32), SR)
    from ratecontrol.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["encode", str(src), "--target-mos", "4.2", "--pool", "mean", "--hop", "0.5",
              "--sample-share", "0.3", "--margin", "0.02", "--allow-partial", "--best-effort",
              "--no-verify", "--no-step-down", "--no-cache", "-j", "1", "--json"])
    assert exc.value.code == errors.TargetNotReachable.exit_code
    # --json on error: one JSON object on stdout (issue 18 item 8)
    assert json.loads(capsys.readouterr().out) == {"error": "TargetNotReachable", "message": "stop here",
                                                   "exit_code": errors.TargetNotReachable.exit_code}
    got = seen[0]
    want = Options(pool="mean", hop_s=0.5, sample_share=0.3, margin_mos=0.02, allow_partial=True, best_effort=True,
                   verify=False, step_down=False, jobs=1)
    d = got.to_dict()
    assert {k: v for k, v in d.items() if k not in ("cache", "on_probe")} == \
        {k: v for k, v in want.to_dict().items() if k not in ("cache", "on_probe")}
    assert d["cache"] is False
    assert Options.merge(want, pool="p10").pool == "p10" and want.pool == "mean"  # frozen, merged copies


# --- issue 23 class 4: a switch is a bool, a number a number (not a bool), every type checked
SWITCHES = ("above_source", "best_effort", "verify", "allow_partial", "all_audio_streams", "audio_only", "ladder",
            "step_down")


@pytest.mark.parametrize("field", SWITCHES)
@pytest.mark.parametrize("bad", ["false", "no", "True", 0, 1, None, [True]])
def test_switches_take_only_bools(field, bad):
    with pytest.raises(errors.UsageError, match=f"{field} must be True or False"):
        Options(**{field: bad})


@pytest.mark.parametrize("kw,field", [({"pool": 10}, "pool"), ({"pool": None}, "pool"), ({"cache": 5}, "cache"),
                                      ({"hop_s": 10 ** 400}, "hop_s"), ({"jobs": True}, "jobs"),
                                      ({"audio_stream": False}, "audio_stream"), ({"max_kbps": "64"}, "max_kbps")])
def test_wrong_types_are_usage_errors_naming_the_field(kw, field):
    with pytest.raises(errors.UsageError, match=field):
        Options(**kw)


def test_numpy_bools_are_bools():
    assert Options(verify=np.False_).verify is False


def test_allow_partial_false_string_does_not_encode_a_cut_file(tmp_path, synth):
    """allow_partial="false" was taken as True: 0.56 s of a 7-s file encoded "successfully"."""
    full = tmp_path / "full.flac"
    sf.write(full, synth.noise(SR, 2, 7.0, 0.1).T, SR)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 12])
    out = tmp_path / "out.opus"
    with pytest.raises(errors.UsageError, match="allow_partial must be True or False"):
        ratecontrol.encode(cut, out, target_mos=4.0, allow_partial="false")
    assert not out.exists()


@pytest.mark.parametrize("call", [
    lambda p, o: ratecontrol.encode(p, o / "x.opus", target_mos=4.0, overwrite="no"),
    lambda p, o: ratecontrol.encode(p, o / "x.opus", target_mos=4.0, best_effort="no"),
    lambda p, o: ratecontrol.encode(p, o / "x.opus", target_mos=4.0, verify="no"),
    lambda p, o: ratecontrol.encode_ladder(p, o, targets=[4.0], overwrite="no"),
    lambda p, o: select_bitrate(p, target_mos=4.0, allow_partial="false"),
    lambda p, o: ratecontrol.score(p, p, allow_partial="no"),
    lambda p, o: ratecontrol.score(p, p, align_signals="no"),
    lambda p, o: ratecontrol.transcode_folder(p.parent, o, target_mos=4.0, allow_partial="false"),
    lambda p, o: ratecontrol.transcode_folder(p.parent, o, target_mos=4.0, resume="no"),
    lambda p, o: ratecontrol.transcode_folder(p.parent, o, target_mos=4.0, overwrite="no"),
    lambda p, o: ratecontrol.transcode_folder(p.parent, o, target_mos=4.0, pool=10),
], ids=["encode-overwrite", "encode-best_effort", "encode-verify", "ladder-overwrite", "select-allow_partial",
        "score-allow_partial", "score-align", "batch-allow_partial", "batch-resume", "batch-overwrite", "batch-pool"])
def test_public_functions_refuse_a_wrong_type_before_any_work(tmp_path, call, monkeypatch):
    src = tmp_path / "in" / "a.wav"
    src.parent.mkdir()
    sf.write(src, np.zeros((SR, 2), np.float32), SR)
    monkeypatch.setattr(media, "decode", lambda *a, **k: pytest.fail("decoded despite a bad argument"))
    with pytest.raises(errors.UsageError, match="must be"):
        call(src, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
