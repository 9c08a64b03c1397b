"""End-to-end library behaviour with real ffmpeg, real codecs and real ViSQOL.

Signals are short (3 s) so each search costs a few seconds of ViSQOL.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

import ratecontrol
from conftest import Synth
from ratecontrol import errors
from ratecontrol.api import encode, score, select_bitrate

SR = 44_100


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    p = tmp_path_factory.mktemp("in") / "song.wav"
    sf.write(p, Synth(0).music(SR, channels=2, duration_s=3.0, amplitude=0.3).T, SR, subtype="PCM_16")
    return p


def test_identity_scores_near_top(song):
    res = score(song, song, scorer="visqol", pool="mean")
    assert res.pooled_mos > 4.6
    assert res.delay_samples == 0
    assert len(res.window_mos) == 6  # 3 windows x 2 channels


def test_score_recovers_delay_and_drops_with_degradation(synth, rng):
    ref = synth.music(SR, channels=1, duration_s=3.0, amplitude=0.3)
    delayed = np.concatenate([np.zeros((1, 1234), np.float32), ref[:, :-1234]], axis=1)
    res = score(ref, delayed, scorer="visqol", sample_rate_hz=SR, pool="mean")
    assert res.delay_samples == 1234
    noisy = ref + 0.05 * rng.standard_normal(ref.shape).astype(np.float32)
    worse = score(ref, noisy, scorer="visqol", sample_rate_hz=SR, pool="mean")
    assert worse.pooled_mos < res.pooled_mos - 0.3


def test_unrelated_signals_warn_at_the_callers_line(synth):
    music, noise = synth.music(SR, 1, 2.0, amplitude=0.3), synth.noise(SR, 1, 2.0)
    with pytest.warns(errors.RatecontrolWarning, match="do not look like the same audio") as rec:
        score(music, noise, scorer="visqol", sample_rate_hz=SR)
    assert [w.filename for w in rec] == [__file__]  # the caller's line, not the library's


def test_search_meets_target_and_rung_below_fails(song):
    res = select_bitrate(song, target_mos=4.3, codec="opus", scorer="visqol")
    assert res.reached and res.chosen.passed
    assert res.chosen.pooled_mos >= 4.3
    # the knob's nearest probe below the chosen setting failed (issue 24: settings are
    # indexed in probe order, so "below" is in bits)
    below = [p for p in res.probes if p.bitrate_kbps < res.chosen.bitrate_kbps]
    if below:
        assert not max(below, key=lambda p: p.bitrate_kbps).passed
    # MOS rises with bitrate across whatever was probed
    ordered = sorted(res.probes, key=lambda p: p.bitrate_kbps)
    assert ordered[0].pooled_mos < ordered[-1].pooled_mos


def test_array_input_matches_contract(synth):
    audio = synth.music(SR, channels=2, duration_s=2.0, amplitude=0.3)
    res = select_bitrate(audio, sample_rate_hz=SR, target_mos=3.5, codec="opus", scorer="visqol")
    assert res.chosen.pooled_mos >= 3.5
    with pytest.raises(errors.UsageError):
        select_bitrate(audio, target_mos=3.5, codec="opus", scorer="visqol")


def test_encode_writes_output_with_tag(song, tmp_path):
    out = tmp_path / "out.opus"
    res = encode(song, out, target_mos=4.0, codec="opus", scorer="visqol")
    assert out.exists() and res.output_bytes == out.stat().st_size
    from ratecontrol import media

    info = media.inspect(out)
    assert info.codec == "opus"
    assert "ratecontrol" in json.dumps(info.tags).lower()
    assert not list(tmp_path.glob("*.tmp*")), "no temp files left behind"
    # never overwrite without asking
    with pytest.raises(errors.OutputError):
        encode(song, out, target_mos=4.0, codec="opus", scorer="visqol")


def test_target_above_the_scale_ceiling_is_refused_before_any_probe(song, monkeypatch):
    from ratecontrol import media

    monkeypatch.setattr(media, "roundtrip_info", lambda *a, **k: pytest.fail("probed"))
    with pytest.raises(errors.UsageError, match="identical copy scores ~4.73"):
        select_bitrate(song, target_mos=4.9, codec="opus")


def test_unreachable_target_and_best_effort(song):
    # 4.74: under the ceiling (4.75) but above what even the top rung scores
    with pytest.raises(errors.TargetNotReachable) as exc:
        select_bitrate(song, target_mos=4.74, codec="opus", scorer="visqol")
    assert exc.value.result is not None and exc.value.result.probes
    res = select_bitrate(song, target_mos=4.74, codec="opus", scorer="visqol", best_effort=True)
    assert not res.reached and res.chosen.bitrate_kbps == max(p.bitrate_kbps for p in res.probes)
    assert any("best effort" in n for n in res.notes)


def test_silent_input_picks_lowest_rung(tmp_path):
    p = tmp_path / "silence.wav"
    sf.write(p, np.zeros((SR * 2, 2), np.float32), SR, subtype="PCM_16")
    res = select_bitrate(p, target_mos=4.5, codec="opus", scorer="visqol")
    assert res.chosen.rung_index == 0 and res.reached
    assert any("silence" in n for n in res.notes)


@pytest.mark.parametrize("target", [0.5, 5.5, float("nan")])
def test_target_out_of_range(song, target):
    with pytest.raises(errors.UsageError):
        select_bitrate(song, target_mos=target, codec="opus", scorer="visqol")


def test_public_names_are_exported():
    for name in ratecontrol.__all__:
        assert hasattr(ratecontrol, name), name
    for name in ("encode", "select_bitrate", "score", "RatecontrolError", "SearchResult", "EncodeResult"):
        assert name in ratecontrol.__all__


@pytest.mark.parametrize("codec, ladder", [("opus", True), ("auto", False)])
def test_on_probe_is_never_called_from_two_threads_at_once(tmp_path, codec, ladder):
    """The knob search probes two settings at a time on two cores (knob_search
    evaluate_many): the user's callback still runs one call at a time, so a printer or a
    callback that touches files needs no lock of its own (CI stop 29 failed on a
    callback that raced itself). The ladder search probes two rungs at once, codec auto
    searches two presets at once."""
    import threading
    import time

    src = tmp_path / "in.wav"
    sf.write(src, Synth(5).music(44_100, channels=2, duration_s=2.0, amplitude=0.3).T, 44_100, subtype="PCM_16")
    inside, most, calls = [0], [0], []
    guard = threading.Lock()

    def slow(probe):
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.3)  # long enough for a second probe thread to arrive
        calls.append(probe)
        with guard:
            inside[0] -= 1

    res = select_bitrate(src, target_mos=4.0, codec=codec, cache=False, jobs=2, on_probe=slow, ladder=ladder)
    assert len(calls) == (res.probes_total or len(res.probes)) >= 2
    assert most[0] == 1


def test_a_short_input_probes_the_knob_one_setting_at_a_time_and_a_ladder_two(tmp_path, monkeypatch):
    """Two knob settings at once cost 1.45x the CPU and 1.08x the wall on 10 short real
    items (docs/performance.md, "Short inputs: one probe at a time"): the knob search goes
    one at a time; a ladder search still takes two rungs a round."""
    import threading
    import time

    from ratecontrol.probing.prober import Prober

    src = tmp_path / "in.wav"
    sf.write(src, Synth(6).music(44_100, channels=2, duration_s=2.0, amplitude=0.3).T, 44_100, subtype="PCM_16")
    real, guard, inside, most = Prober.probe, threading.Lock(), [0], [0]

    def probe(self, *a, **k):
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            time.sleep(0.2)  # long enough for a second probe thread to arrive
            return real(self, *a, **k)
        finally:
            with guard:
                inside[0] -= 1

    monkeypatch.setattr(Prober, "probe", probe)
    select_bitrate(src, target_mos=4.0, codec="opus", cache=False, jobs=2)
    knob, most[0] = most[0], 0
    select_bitrate(src, target_mos=4.0, codec="opus", cache=False, jobs=2, ladder=True)
    assert (knob, most[0]) == (1, 2)
