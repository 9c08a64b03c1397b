"""The continuous knob (issue 24): search_knob on fake curves (pure logic), the presets'
knob declarations and their mono / surround scaling. The real encode path is in
test_api.py / test_everyday.py."""
import math

import numpy as np
import pytest

from ratecontrol.errors import PresetError
from ratecontrol.presets import load_preset, parse_preset
from ratecontrol.search import KNOB_TOLERANCE_MOS, search_knob

LO, HI = math.log(16), math.log(256)


def kbps_snap(x):
    return math.log(max(1, round(math.exp(x))))


def linear(a, b):
    """MOS linear in ln kbps from ``a`` at 16 kbps, ``b`` MOS per unit ln kbps, capped at 4.75."""
    return lambda x: min(4.75, a + b * (x - LO))


def test_a_crossing_between_two_rungs_lands_within_tolerance():
    # the case: the curve crosses 4.2 at ~87 kbps, between the 80k and 96k rungs;
    # the ladder takes 96k (+10 %), the knob lands on a setting that passes by at most the
    # tolerance, i.e. within ~3 % of the crossing
    f = linear(3.0, 0.7)
    cross = LO + (4.2 - 3.0) / 0.7
    assert 80 < math.exp(cross) < 96
    out = search_knob(f, 4.2, LO, HI, snap=kbps_snap, first_x=math.log(80))
    assert out.reached
    s = f(out.chosen)
    assert 4.2 <= s <= 4.2 + KNOB_TOLERANCE_MOS + 1e-9
    assert math.exp(out.chosen) < 96
    # within the tolerance in MOS is within tolerance / slope in ln kbps (0.03 / 0.7: 4.4 %)
    assert math.exp(out.chosen - cross) - 1 <= math.exp(KNOB_TOLERANCE_MOS / 0.7) - 1 + 1e-9
    assert len(out.probes) <= 4


def test_smooth_curves_median_three_probes_and_a_few_percent_over_the_crossing(rng):
    counts, over = [], []
    for _ in range(300):
        a, b = rng.uniform(1.5, 3.0), rng.uniform(0.4, 0.9)
        f = linear(a, b)
        target = float(rng.uniform(3.6, 4.6))
        cross = LO + (target - a) / b
        if not LO < cross < HI:
            continue
        out = search_knob(f, target, LO, HI, snap=kbps_snap, first_x=math.log(80))
        assert out.reached and f(out.chosen) >= target, "never a failing setting"
        counts.append(len(out.probes))
        over.append(math.exp(out.chosen - cross) - 1)
    assert np.median(counts) <= 3
    assert 0 <= np.mean(over) < 0.03 and max(over) < 0.08


def test_a_dip_below_a_near_miss_is_found():
    # a mode switch: the curve is higher at 40-55 kbps than at 60-75 kbps; the bracket
    # ends on a near miss at ~70k with nothing probed for a rung below it: the recheck
    # a rung lower finds the cheap side
    def f(x):
        k = math.exp(x)
        if 40 <= k <= 55:
            return 4.25
        if 55 < k < 76:
            return 4.17
        return linear(3.0, 0.7)(x)

    out = search_knob(f, 4.2, LO, HI, snap=kbps_snap, first_x=math.log(80))
    assert out.reached and f(out.chosen) >= 4.2
    assert math.exp(out.chosen) <= 55, [(round(math.exp(x)), s) for x, s in out.probes]
    mono = search_knob(f, 4.2, LO, HI, snap=kbps_snap, first_x=math.log(80), rule="monotone")
    assert math.exp(mono.chosen) > 55, "without the recheck the dip is missed (the test has teeth)"


def test_a_clear_miss_is_not_rechecked():
    f = linear(3.0, 0.7)
    out = search_knob(f, 4.2, LO, HI, snap=kbps_snap, first_x=math.log(32))
    xs = sorted(x for x, _ in out.probes)
    # the only probe more than a rung below the choice is the first guess, a clear miss
    assert all(f(x) < 4.2 - 0.08 for x in xs if x < out.chosen - math.log(1.22))


def test_bounds_unreachable_target_probes_the_top_and_reports_none():
    f = linear(2.0, 0.3)  # 2.83 at 256k
    out = search_knob(f, 4.0, LO, HI, snap=kbps_snap)
    assert out.chosen is None and not out.reached
    assert HI in dict(out.probes) and len(out.probes) <= 5


def test_bounds_a_target_below_the_floor_takes_the_floor():
    f = linear(4.3, 0.2)
    out = search_knob(f, 3.5, LO, HI, snap=kbps_snap)
    assert out.chosen == LO
    assert len(out.probes) <= 3


def test_margin_raises_the_bar_and_nan_never_passes():
    f = linear(3.0, 0.7)
    out = search_knob(f, 4.2, LO, HI, snap=kbps_snap, margin=0.05)
    assert f(out.chosen) >= 4.25
    out = search_knob(lambda x: float("nan"), 3.0, LO, HI, snap=kbps_snap)
    assert out.chosen is None


def test_the_cheapest_passing_setting_by_actual_bits_wins():
    # libopus surround: a higher setting can spend fewer actual bits (issue 24: 100k passed
    # at 44.6 kbps actual, 80k took 80.4)
    scores = {64: 4.0, 80: 4.25, 100: 4.3, 128: 4.5}
    actual = {64: 64.0, 80: 80.4, 100: 44.6, 128: 130.0}

    def snap(x):
        return math.log(min(scores, key=lambda k: abs(math.log(k) - x)))

    out = search_knob(lambda x: scores[round(math.exp(x))], 4.2, math.log(64), math.log(128), snap=snap,
                      first_x=math.log(80), cost=lambda x: actual[round(math.exp(x))], tolerance=0.0)
    probed = {round(math.exp(x)) for x, _ in out.probes}
    if 100 in probed:
        assert round(math.exp(out.chosen)) == 100
    else:
        assert round(math.exp(out.chosen)) == 80


def test_known_points_are_used_without_probing():
    f = linear(3.0, 0.7)
    first = search_knob(f, 4.2, LO, HI, snap=kbps_snap)
    calls = []

    def g(x):
        calls.append(x)
        return f(x)

    again = search_knob(g, 4.2, LO, HI, snap=kbps_snap, known=dict(first.probes))
    assert calls == [] and again.chosen == first.chosen


def test_every_probe_is_snapped_and_none_repeats(rng):
    for _ in range(100):
        f = linear(rng.uniform(1.5, 3.0), rng.uniform(0.3, 1.2))
        out = search_knob(f, float(rng.uniform(3.0, 4.7)), LO, HI, snap=kbps_snap)
        xs = [x for x, _ in out.probes]
        assert len(xs) == len(set(xs))
        assert all(abs(x - kbps_snap(x)) < 1e-12 and LO - 1e-12 <= x <= HI + 1e-12 for x in xs)


# ---------------------------------------------------------------- round 2: fewer probes (issue 24)


def test_the_second_probe_lands_on_the_crossing_by_the_slope_prior():
    # a first guess 10 % below the crossing (round 2's prior offset) on a curve as steep as
    # the slope prior: the step up by the prior lands inside the tolerance band, so the
    # search ends on its second probe
    slope = 1.0
    f = linear(2.5, slope)
    cross = LO + (4.2 - 2.5) / slope
    out = search_knob(f, 4.2, LO, HI, snap=kbps_snap, first_x=cross - 0.1, slope_prior=slope)
    assert len(out.probes) == 2, [(round(math.exp(x)), round(s, 3)) for x, s in out.probes]
    assert 4.2 <= f(out.chosen) <= 4.2 + KNOB_TOLERANCE_MOS


def test_a_bracket_within_the_stop_width_needs_no_more_probes():
    # fail at 100k, pass at 104k (4 %, within a 7 % bracket_x: round 2's value) far above
    # the bar: a step in the curve; a third probe could save at most 4 % of the bits, so
    # none is made
    bracket_x = math.log(1.07)
    calls = []

    def f(x):
        calls.append(x)
        return 4.0 if math.exp(x) < 103.5 else 4.4

    known = {math.log(100): 4.0, math.log(104): 4.4}
    out = search_knob(f, 4.2, LO, HI, snap=kbps_snap, known=known, bracket_x=bracket_x)
    assert calls == [] and round(math.exp(out.chosen)) == 104
    wide = search_knob(f, 4.2, LO, HI, snap=kbps_snap, known={math.log(90): 4.0, math.log(104): 4.4},
                       bracket_x=bracket_x)
    assert wide.probes, "a wider bracket is searched (the test has teeth)"


def test_the_near_miss_threshold_decides_the_recheck():
    # a failure 0.06 under the bar with nothing probed a rung below it: rechecked at the
    # default (0.08, as on the ladder), not at round 2's 0.04 (measured, not kept:
    # docs/performance.md, "Round 2")
    from ratecontrol.search import KNOB_NEAR_MISS_MOS, NEAR_MISS_MOS, RECHECK_X

    assert KNOB_NEAR_MISS_MOS == NEAR_MISS_MOS > 0.06

    def f(x):  # a step at 100k: 0.06 under the bar below it, passing above
        return 4.14 if math.exp(x) < 100 else 4.22 + 0.5 * (x - math.log(100))

    out = search_knob(f, 4.2, LO, HI, snap=kbps_snap, first_x=math.log(130), near_miss=0.04)
    assert 100 <= round(math.exp(out.chosen)) <= 105
    assert not any(x < math.log(99) - RECHECK_X * 0.99 for x, _ in out.probes)
    default = search_knob(f, 4.2, LO, HI, snap=kbps_snap, first_x=math.log(130))
    assert any(x < math.log(99) - RECHECK_X * 0.99 for x, _ in default.probes), "0.08 rechecks"


def test_reference_features_and_the_prior_on_real_audio(shared_audio):
    # cheap features of real recordings: a busy orchestra excerpt is more complex than a
    # solo flute note, so its first guess is higher; the guess rises with the target
    import soundfile as sf

    from ratecontrol.guess import prior_x, reference_features
    from ratecontrol.windows import cut_windows, to_model_rate

    def feats(name):
        x, sr = sf.read(shared_audio / "sms-tools" / name, dtype="float32", always_2d=True)
        w, _ = cut_windows(to_model_rate(x.T, sr))
        return reference_features(w)

    orch, flute = feats("orchestra.wav"), feats("flute-A4.wav")
    assert orch.complexity > flute.complexity > 0
    assert -60 < flute.rms_dbfs < 0 and 1000 < orch.bandwidth_hz < 22050
    for preset in ("opus", "aac"):
        assert prior_x(preset, 4.33, orch) > prior_x(preset, 4.33, flute)
        assert prior_x(preset, 4.53, orch) > prior_x(preset, 4.03, orch)
    assert prior_x("vorbis", 4.33, orch) is None  # no prior: the caller's rung rule


@pytest.mark.parametrize("name, codec", [("sms-tools/orchestra.wav", "opus"), ("flac-test-files/01 - blocksize 4096.flac",
                                                                              "aac"),
                                         ("flac-test-files/01 - blocksize 4096.flac", "vorbis")])
def test_first_guess_on_real_audio_rung_by_default_prior_when_asked(shared_audio, name, codec, monkeypatch):
    from ratecontrol import guess
    from ratecontrol.options import Options
    from ratecontrol.presets import load_preset as lp
    from ratecontrol.probing.searching import FIRST_GUESS_RUNGS_BELOW_MIDDLE, first_guess_x, resolve_margin
    from ratecontrol.probing.session import open_session

    preset = lp(codec)
    s = open_session(shared_audio / name, preset, Options(scorer="learned", cache=False))
    pr = s.prober(preset)
    ax = pr.axis
    mid = pr.ladder[len(pr.ladder) // 2 - FIRST_GUESS_RUNGS_BELOW_MIDDLE]
    rung_x = ax.x_of(preset.knob_value(mid))
    assert not guess.FIRST_GUESS_FROM_PRIOR
    assert first_guess_x(pr, 4.2) == pytest.approx(rung_x)  # the default: the first release's rule
    monkeypatch.setattr(guess, "FIRST_GUESS_FROM_PRIOR", True)
    x = first_guess_x(pr, 4.2)
    assert ax.lo_x <= x <= ax.hi_x
    level = 4.2 + resolve_margin(None, pr.scorer)
    p = guess.prior_x(codec, level, guess.reference_features(pr.source.ref_w))
    if p is None:
        assert x == pytest.approx(rung_x)  # no prior for the preset: the rung rule
    else:
        ratio = np.median([r.nominal_kbps for r in preset.rungs_for(s.track.channels)]) / np.median(
            [r.nominal_kbps for r in preset.rungs_for(2)])
        assert (s.track.channels == 1) == (ratio < 1)
        assert x == pytest.approx(min(max(p + math.log(ratio), ax.lo_x), ax.hi_x))
        assert x != pytest.approx(rung_x)
    s.close()


# ---------------------------------------------------------------- presets


def test_presets_declare_a_knob_except_mp3_cbr():
    assert load_preset("mp3").knob is None
    assert load_preset("opus").knob.option == "b:a" and load_preset("aac").knob.option == "b:a"
    vbr = load_preset("mp3-vbr").knob
    assert vbr.option == "q:a" and vbr.direction == "down"
    assert load_preset("vorbis").knob.option == "q:a"


@pytest.mark.parametrize("channels,expect_kbps", [(2, 87), (1, 44), (6, 218)])
def test_knob_rung_scales_like_the_rungs(channels, expect_kbps):
    # a bitrate knob is the stereo value x the ladder's scale for that channel count
    # (mono 0.5, 5.1 2.5 for Opus): 87k stereo is ~44k mono, ~218k 5.1
    p = load_preset("opus")
    scale = p.rungs_for(channels)[-1].nominal_kbps / p.rungs[-1].nominal_kbps
    r = p.knob_rung(87 * scale, channels)
    assert r.options["b:a"] == f"{expect_kbps}k" and r.label == f"{expect_kbps}k"
    assert r.nominal_kbps == expect_kbps and r.options["vbr"] if "vbr" in r.options else True
    lo, hi = p.knob_bounds(channels)
    assert lo <= p.rungs_for(channels)[0].nominal_kbps and hi >= p.rungs_for(channels)[-1].nominal_kbps


def test_quality_knob_nominal_kbps_runs_between_the_rungs():
    p = load_preset("mp3-vbr")
    r = p.knob_rung(4.35)
    assert r.options["q:a"] == 4.35 and r.label == "V4.35"
    assert 130 < r.nominal_kbps < 165  # between V5 (130) and V4 (165)
    mono = p.knob_rung(4.35, 1)
    assert mono.options["q:a"] == 4.35 and mono.nominal_kbps == pytest.approx(r.nominal_kbps / 2, abs=0.1)
    v = load_preset("vorbis")
    assert 160 < v.knob_rung(5.5).nominal_kbps < 192


def test_knob_keys_are_checked():
    base = {"name": "x", "encoder": "libopus", "format": "ogg", "extension": ".opus",
            "rungs": [{"label": "64k", "nominal_kbps": 64, "options": {"b:a": "64k"}}]}
    ok = parse_preset({**base, "knob": {"option": "b:a", "min": 6, "max": 510, "resolution": 1}})
    assert ok.knob.min_value == 6
    for bad in ({"option": "b:a", "min": 6, "max": 510},  # no resolution
                {"option": "ar", "min": 6, "max": 510, "resolution": 1},
                {"option": "b:a", "min": 100, "max": 510, "resolution": 1},  # the 64k rung is outside
                {"option": "b:a", "min": 6, "max": 510, "resolution": 1, "step": 2},
                {"option": "b:a", "min": 6, "max": 510, "resolution": 1, "direction": "sideways"}):
        with pytest.raises(PresetError):
            parse_preset({**base, "knob": bad})


# ---------------------------------------------------------------- the real encode path
# (real ffmpeg / libopus and the exact scorer on 3 s of synthetic music)

SR = 44100


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    import soundfile as sf

    from conftest import Synth

    p = tmp_path_factory.mktemp("knob") / "song.wav"
    sf.write(p, Synth(0).music(SR, channels=2, duration_s=3.0, amplitude=0.3).T, SR, subtype="PCM_16")
    return p


def test_ladder_option_reproduces_the_ladder_search_and_the_knob_pays_no_more(song):
    from ratecontrol import select_bitrate
    from ratecontrol.options import Options
    from ratecontrol.search import search_ladder

    lad = select_bitrate(song, target_mos=4.3, codec="opus", scorer="visqol", options=Options(ladder=True))
    labels = [r.label for r in load_preset("opus").rungs]
    assert lad.knob_option == "" and lad.chosen.rung_label in labels
    assert all(p.rung_label in labels for p in lad.probes)
    # the same choice as the ladder search replayed on the same scores (today's search)
    by = {p.rung_index: p.pooled_mos for p in lad.probes}
    replay = search_ladder(len(labels), lambda i: by[i], 4.3, parallel=2)
    assert replay.chosen == lad.chosen.rung_index
    knob = select_bitrate(song, target_mos=4.3, codec="opus", scorer="visqol")
    assert knob.knob_option == "b:a" and knob.chosen.pooled_mos >= 4.3
    assert knob.chosen.rung_label == f"{knob.chosen.knob_value:g}k"
    assert knob.chosen.bitrate_kbps <= lad.chosen.bitrate_kbps * 1.05


def test_knob_target_unreachable_and_below_the_floor(song):
    from ratecontrol import errors, select_bitrate

    with pytest.raises(errors.TargetNotReachable) as exc:
        select_bitrate(song, target_mos=4.74, codec="opus", scorer="visqol")
    top = exc.value.result.probes
    assert max(p.bitrate_kbps for p in top) == 256 and not any(p.passed for p in top)
    low = select_bitrate(song, target_mos=1.5, codec="opus", scorer="visqol")
    assert low.reached and low.chosen.bitrate_kbps == 16  # the floor: the ladder's bottom


def test_max_kbps_bounds_the_knob(song):
    from ratecontrol import select_bitrate

    res = select_bitrate(song, target_mos=4.74, codec="opus", scorer="visqol", max_kbps=100, best_effort=True)
    assert not res.reached and res.chosen.bitrate_kbps == 100  # the cap, not the rung below it (96k)


def test_encode_json_shows_the_setting_nominal_and_actual(song, tmp_path, capsys):
    import json

    from conftest import run_cli

    out = tmp_path / "o.opus"
    rc, stdout, _ = run_cli(["encode", str(song), "--target-mos", "4.0", "--scorer", "visqol", "-o", str(out),
                             "--json"], capsys)
    assert rc == 0
    d = json.loads(stdout)
    assert d["search"]["knob_option"] == "b:a"
    assert d["rung_label"] == f"{d['knob_value']:g}k" and d["bitrate_kbps"] == d["knob_value"]
    size_kbps = out.stat().st_size * 8 / 1000 / d["search"]["duration_s"]
    assert d["actual_kbps"] == pytest.approx(size_kbps, rel=1e-6)
    assert all("knob_value" in p and "actual_kbps" in p for p in d["search"]["probes"])
    rc, stdout, _ = run_cli(["encode", str(song), "--target-mos", "4.0", "--scorer", "visqol", "-o", str(out),
                             "--json", "--ladder", "--overwrite"], capsys)
    d = json.loads(stdout)
    assert d["search"]["knob_option"] == "" and d["rung_label"] in [r.label for r in load_preset("opus").rungs]


def test_a_check_miss_steps_the_knob_by_a_small_step(song):
    from ratecontrol.options import Options
    from ratecontrol.presets import load_preset as lp
    from ratecontrol.probing.steps import CHECK_STEP_X, step_up
    from ratecontrol.probing.session import open_session

    opus = lp("opus")
    s = open_session(song, opus, Options(scorer="visqol", cache=False))
    pr = s.prober(opus)
    i = pr.setting(87)
    assert pr.rungs[i].label == "87k" and pr.setting(87.2) == i  # snapped to 1 kbps, one index per setting
    j = step_up(pr, i, 0.01, knob=True)
    # a miss of 0.01 MOS on the prior slope (0.65 per ln kbps) asks for ~3 %, not a rung (87k -> 96k)
    assert math.exp(CHECK_STEP_X) * 87 - 1 <= pr.rungs[j].nominal_kbps < 96
    assert step_up(pr, pr.setting(256), 0.01, knob=True) is None  # the top of the range
    assert step_up(pr, 7, 0.01, knob=False) == 8  # a ladder steps a rung
    s.close()


def test_a_check_miss_steps_at_least_six_percent_and_doubles_after_a_vain_step(song):
    """Whole-track p10 rises slower than the probes' near the crossing: 3 % steps took a
    second write on 3 of 7 Wesnoth tracks, and a flat stretch (main_menu 61k-87k) took
    five writes at a fixed floor (docs/performance.md, "Check step-ups")."""
    from ratecontrol.options import Options
    from ratecontrol.presets import load_preset as lp
    from ratecontrol.probing.session import open_session

    from ratecontrol.probing.steps import step_up

    opus = lp("opus")
    s = open_session(song, opus, Options(scorer="visqol", cache=False))
    pr = s.prober(opus)
    i = pr.setting(100)
    kbps = [pr.rungs[step_up(pr, i, 0.0, knob=True, steps_taken=n)].nominal_kbps for n in range(3)]
    assert kbps[0] >= 106 and kbps[1] >= 112 and kbps[2] >= 126  # floors 6 %, 12.4 %, 26.2 % (ln kbps doubled)
    assert step_up(pr, 7, 0.01, knob=False, steps_taken=3) == 8  # a ladder still steps a rung
    s.close()


def test_the_cache_key_carries_the_knob_value():
    from ratecontrol.cache import preset_fingerprint

    opus = load_preset("opus")
    a, b = opus.knob_rung(87), opus.knob_rung(88)
    assert preset_fingerprint(opus, a) != preset_fingerprint(opus, b)
    assert preset_fingerprint(opus, opus.knob_rung(80)) == preset_fingerprint(opus, opus.rung("80k"))
