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
              "--no-verify", "--no-cache", "-j", "1", "--json"])
    assert exc.value.code == errors.TargetNotReachable.exit_code
    # --json on error: one JSON object on stdout (issue 18 item 8)
    assert json.loads(capsys.readouterr().out) == {"error": "TargetNotReachable", "message": "stop here",
                                                   "exit_code": errors.TargetNotReachable.exit_code}
    got = seen[0]
    want = Options(pool="mean", hop_s=0.5, sample_share=0.3, margin_mos=0.02, allow_partial=True, best_effort=True,
                   verify=False, jobs=1)
    d = got.to_dict()
    assert {k: v for k, v in d.items() if k not in ("cache", "on_probe")} == \
        {k: v for k, v in want.to_dict().items() if k not in ("cache", "on_probe")}
    assert d["cache"] is False
    assert Options.merge(want, pool="p10").pool == "p10" and want.pool == "mean"  # frozen, merged copies
