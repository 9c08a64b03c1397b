"""The check's step down (knob_search.step_down_x, probing.steps.step_down, Options.step_down):
after a sampled knob search, a written file whose whole-track check passes well above the
bar is followed by one write lower, where the sample's curve moved by the check's offset
crosses the bar; the lower file is shipped only when its own check passes.

20 real tracks (docs/performance.md, "The written file against the whole track's
curve"): the files written took 9.0 % more bits than where their whole-track p10 crosses
the bar; the sample read several of them 0.03-0.10 MOS low.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf

import ratecontrol
from ratecontrol import knob_search
from ratecontrol.knob_search import (STEP_DOWN_AIM_MOS, STEP_DOWN_MAX_X, STEP_DOWN_MIN_X, step_down_between,
                                     step_down_x)
from ratecontrol.probing import steps, verify

L = math.log
BAR = 4.33


def test_a_flat_sample_curve_read_low_steps_down_to_its_moved_crossing():
    # frantic-old (Opus 4.3): the sample crossed the bar at 103k; the whole track at
    # 103k scored 4.358, so the sample read 0.013 low and the moved curve crosses
    # bar + aim between 87k (4.342 moved) and 103k
    probes = [(L(52), 4.044), (L(64), 4.265), (L(75), 4.316), (L(87), 4.329), (L(103), 4.345)]
    x = step_down_x(probes, L(103), 4.358, BAR)
    assert x is not None and L(87) < x < L(103) - STEP_DOWN_MIN_X


def test_no_step_when_the_check_passes_near_the_bar_or_fails():
    probes = [(L(64), 4.20), (L(100), 4.34)]
    assert step_down_x(probes, L(100), BAR + 0.005, BAR) is None  # the moved curve crosses within 5 %
    assert step_down_x(probes, L(100), BAR - 0.01, BAR) is None   # a miss steps up, never down
    assert step_down_x(probes, L(90), 4.5, BAR) is None           # the written setting was not probed


def test_a_check_within_the_aim_of_the_bar_stays_even_with_one_probe():
    # AAC northern_mountains: the first probe passed within the sampled stop and was the
    # only one; its check passed by 0.012, under the step's aim: no step (this crashed
    # in PCHIP on one point before)
    assert step_down_x([(L(112), 4.338)], L(112), 4.342, BAR) is None
    assert step_down_x([(L(112), 4.338)], L(112), BAR + STEP_DOWN_AIM_MOS - 1e-6, BAR) is None


def test_never_below_a_probe_that_still_fails_when_moved():
    probes = [(L(60), 4.10), (L(80), 4.30), (L(100), 4.36)]
    # offset +0.04: 80k moves to 4.34 (< bar + aim 4.35), so the step stays above 80k
    x = step_down_x(probes, L(100), 4.40, BAR)
    assert x is None or x > L(80)
    # offset +0.10: 80k moves to 4.40 and passes, 60k to 4.20 fails: between them
    x = step_down_x(probes, L(100), 4.46, BAR)
    assert L(60) < x < L(80)


def test_every_lower_probe_passing_moved_extrapolates_by_the_prior_within_the_cap():
    # only the written setting was probed (the first guess passed within the stop):
    # the slope prior says how far the check's excess goes, never past STEP_DOWN_MAX_X
    x = step_down_x([(L(64), 4.385)], L(64), 4.40, BAR)
    want = L(64) - (4.40 - BAR - STEP_DOWN_AIM_MOS) / knob_search.KNOB_SLOPE_PRIOR_MOS_PER_X
    assert x == pytest.approx(want)
    x = step_down_x([(L(64), 4.385)], L(64), 4.70, BAR)
    assert x == pytest.approx(L(64) - STEP_DOWN_MAX_X)


def test_after_a_step_up_the_step_down_interpolates_between_the_two_checks():
    # main_menu (Opus 4.3): 82k scored 4.273, the doubled step up wrote 104k, 4.390;
    # the two whole-track checks cross bar + aim (4.35) near 96k
    to = step_down_between((L(82), 4.273), (L(104), 4.390), BAR)
    want = L(82) + (BAR + STEP_DOWN_AIM_MOS - 4.273) / (4.390 - 4.273) * (L(104) - L(82))
    assert to == pytest.approx(want) and L(95) < to < L(97)
    # a 6 % step up that passed by little: nothing to win
    assert step_down_between((L(100), 4.32), (L(106), 4.36), BAR) is None
    assert step_down_between((L(82), 4.273), (L(104), BAR + 0.01), BAR) is None  # passed within the aim
    assert step_down_between((L(82), BAR + 0.001), (L(104), 4.39), BAR) is None  # "miss" that passed


RATE = 48_000


@pytest.fixture(scope="module")
def track(tmp_path_factory):
    """45 s of stereo music-like signal at 48 kHz (sampled: >= 30 s)."""
    from conftest import Synth

    p = tmp_path_factory.mktemp("in") / "track.flac"
    sf.write(p, Synth(1234).music(RATE, channels=2, duration_s=45.0, amplitude=0.3).T, RATE, subtype="PCM_16")
    return p


def _encode(track, folder, name="a.opus", **kw):
    out = folder / name
    return ratecontrol.encode(track, out, target_mos=3.6, codec="opus", cache=False, **kw), out


def _scored(track, out):
    return ratecontrol.score(track, out).pooled_mos


def test_a_second_write_that_passes_is_shipped_with_its_own_score(track, tmp_path, monkeypatch):
    # a setting 1 kbps below the written one stands in for the predicted step, so that
    # its check passes (the signal and the encoder are deterministic): what is tested is
    # that the second file replaces the first, with its own score
    picked = []

    def lower(pr, i, checked, bar):
        j = pr.setting(pr.preset.knob_value(pr.rungs[i]) - 1)
        picked.append((pr.rungs[i].label, pr.rungs[j].label, checked))
        return j

    monkeypatch.setattr(steps, "step_down", lower)
    r, out = _encode(track, tmp_path)
    assert picked and r.stepped_down == 1 and r.stepped_up == 0
    assert r.rung_label == picked[0][1] != r.search.chosen.rung_label
    assert r.bitrate_kbps < r.search.chosen.bitrate_kbps and r.pooled_mos <= picked[0][2] + 0.02
    assert r.pooled_mos >= r.search.target_mos + r.search.margin_mos
    assert r.pooled_mos == pytest.approx(_scored(track, out), abs=1e-4)
    assert any("stepped down to" in n for n in r.search.notes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.opus"]  # no temp file left


def test_a_second_write_that_passes_but_is_no_smaller_is_dropped(track, tmp_path, monkeypatch):
    # libopus can spend fewer bits at a higher setting (5.1, issue 24): the smaller
    # passing file ships. A higher setting stands in here: larger, so the first stays
    monkeypatch.setattr(steps, "step_down",
                        lambda pr, i, checked, bar: pr.setting(pr.preset.knob_value(pr.rungs[i]) * 1.4))
    r, out = _encode(track, tmp_path)
    assert r.stepped_down == 0 and r.rung_label == r.search.chosen.rung_label
    assert any("no smaller, kept " + r.rung_label in n for n in r.search.notes)
    assert r.pooled_mos == pytest.approx(_scored(track, out), abs=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.opus"]


def test_a_second_write_that_fails_is_dropped(track, tmp_path, monkeypatch):
    monkeypatch.setattr(steps, "step_down", lambda pr, i, checked, bar: pr.setting(6.0))
    monkeypatch.setattr(steps, "step_down_after_up", lambda *a: None)  # no third write (the next test)
    r, out = _encode(track, tmp_path)
    assert r.stepped_down == 0 and r.rung_label == r.search.chosen.rung_label
    assert r.pooled_mos >= r.search.target_mos + r.search.margin_mos
    assert r.pooled_mos == pytest.approx(_scored(track, out), abs=1e-4)
    assert any("kept " + r.rung_label in n for n in r.search.notes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.opus"]


def test_a_step_down_that_fails_is_followed_by_one_between_the_two_checks(track, tmp_path, monkeypatch):
    # elvish-theme (Opus 4.3): 128k passed with 4.555, the moved sample curve's 117k
    # scored 4.285, and the whole track passes from 118k. Here the first step down is
    # made to fail (6k); the next write lies between 6k and the written setting, found
    # from the two whole-track checks, and ships when it passes
    seen = []
    real_between = steps.step_down_after_up

    def between(pr, miss_i, miss_mos, i, checked, bar):
        j = real_between(pr, miss_i, miss_mos, i, checked, bar)
        seen.append((pr.rungs[miss_i].nominal_kbps, None if j is None else pr.rungs[j].nominal_kbps,
                     pr.rungs[i].nominal_kbps))
        return j

    monkeypatch.setattr(steps, "step_down", lambda pr, i, checked, bar: pr.setting(6.0))
    monkeypatch.setattr(steps, "step_down_after_up", between)
    r, out = _encode(track, tmp_path)
    bar = r.search.target_mos + r.search.margin_mos
    assert seen and seen[0][0] == 6.0 and seen[0][2] == r.search.chosen.bitrate_kbps
    low, mid, high = seen[0]
    assert mid is not None and low < mid < high
    assert len(seen) <= steps.STEP_DOWN_WRITES - 1  # the failed first write counted
    assert any(n.endswith("< %g, kept %s" % (bar, r.search.chosen.rung_label)) for n in r.search.notes)
    if r.stepped_down:
        assert r.bitrate_kbps == mid and r.pooled_mos >= bar
    assert r.pooled_mos == pytest.approx(_scored(track, out), abs=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.opus"]


def test_a_step_up_that_lands_well_above_is_followed_by_one_write_between(track, tmp_path, monkeypatch):
    # the search's choice is cut by 20 % so that the first check misses, and the step up is
    # made to overshoot (1.3x the search's choice): the next write lies between the
    # two checks and ships, with its own score, as it passes (measured: 13k 2.79 ->
    # 21k 4.52 -> 16k 4.48, then 14k between 13k and 16k fails; the signal and the
    # encoder are deterministic)
    from dataclasses import replace

    from ratecontrol.probing import encode as encode_mod

    real_search, real_between, seen = encode_mod.run_search, steps.step_down_after_up, {}

    def cut(prober, target, opts):
        res = real_search(prober, target, opts)
        seen["chosen_kbps"] = res.chosen.bitrate_kbps
        return replace(res, chosen=replace(res.chosen, rung_index=prober.setting(res.chosen.bitrate_kbps * 0.8)))

    def overshoot(pr, i, miss, knob, taken=0):
        return pr.setting(seen["chosen_kbps"] * 1.3)

    def between(pr, miss_i, miss_mos, i, checked, bar):
        j = real_between(pr, miss_i, miss_mos, i, checked, bar)
        seen.setdefault("between", (pr.rungs[miss_i].nominal_kbps, None if j is None else pr.rungs[j].nominal_kbps,
                                    pr.rungs[i].nominal_kbps, miss_mos, checked))  # the first
        return j

    monkeypatch.setattr(encode_mod, "run_search", cut)
    monkeypatch.setattr(steps, "step_up", overshoot)
    monkeypatch.setattr(steps, "step_down_after_up", between)
    r, out = _encode(track, tmp_path)
    bar = r.search.target_mos + r.search.margin_mos
    assert r.stepped_up == 1
    low, mid, high, miss_mos, high_mos = seen["between"]
    assert miss_mos < bar <= high_mos
    assert high_mos >= bar + STEP_DOWN_AIM_MOS + 0.05 and mid is not None and low < mid < high
    assert r.stepped_down == 1 and r.bitrate_kbps == mid
    assert any(f"stepped down to {r.rung_label}" in n for n in r.search.notes)
    assert r.pooled_mos >= bar and r.pooled_mos == pytest.approx(_scored(track, out), abs=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.opus"]


def test_no_second_write_off_the_knob_or_with_step_down_off(track, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(steps, "step_down", lambda pr, *a: calls.append(a))
    r, _ = _encode(track, tmp_path, step_down=False)
    assert calls == [] and r.stepped_down == 0
    r, _ = _encode(track, tmp_path, "b.opus", ladder=True)
    assert calls == [] and r.stepped_down == 0
    r, _ = _encode(track, tmp_path, "c.opus")  # on by default: the same call asks for a step
    assert len(calls) == 1


def test_the_cli_and_batch_take_no_step_down(track, tmp_path, monkeypatch):
    """``--no-step-down`` reaches the encode (CLI) and every batch worker (its Options),
    and the manifest records it only when off; a rerun with or without it keeps the
    files already done (both met the target by their own check)."""
    import json

    from click.testing import CliRunner

    from ratecontrol.cli import cli

    seen = []
    real = verify._step_down

    def spy(*a, **k):
        seen.append(a)
        return real(*a, **k)

    monkeypatch.setattr(verify, "_step_down", spy)
    out = tmp_path / "cli.opus"
    res = CliRunner().invoke(cli, ["encode", str(track), "--target-mos", "3.6", "-o", str(out), "--no-cache",
                                   "--no-step-down", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["stepped_down"] == 0 and seen == []
    res = CliRunner().invoke(cli, ["encode", str(track), "--target-mos", "3.6", "-o", str(tmp_path / "on.opus"),
                                   "--no-cache", "--json"])
    assert res.exit_code == 0, res.output
    assert len(seen) == 1  # the default tries it

    seen.clear()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "t.flac").symlink_to(track)
    res = CliRunner().invoke(cli, ["batch", str(tmp_path / "in"), str(tmp_path / "out"), "--target-mos", "3.6",
                                   "--no-step-down", "--no-cache", "--no-progress", "-j", "1"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in (tmp_path / "out" / ".ratecontrol-manifest.jsonl").read_text().splitlines()]
    recs = [x for x in lines if x.get("settings")]
    assert recs and all(x["settings"]["step_down"] is False for x in recs)
    # the rerun with the step down on resumes the file instead of encoding it again
    res = CliRunner().invoke(cli, ["batch", str(tmp_path / "in"), str(tmp_path / "out"), "--target-mos", "3.6",
                                   "--no-cache", "--no-progress", "-j", "1"])
    assert res.exit_code == 0, res.output
    assert "1 already done" in res.output, res.output


def test_a_whole_track_probe_source_never_steps_down(synth):
    from ratecontrol.options import Options
    from ratecontrol.presets import load_preset
    from ratecontrol.probing.session import open_session

    x = np.ascontiguousarray(synth.music(RATE, channels=2, duration_s=12.0), dtype=np.float32)
    ses = open_session(x, load_preset("opus"), Options(cache=False), RATE)
    pr = ses.prober(load_preset("opus"))
    assert not pr.source.sampled
    i = pr.setting(64.0)
    pr.probe(i, BAR)
    assert steps.step_down(pr, i, 4.7, BAR) is None
    ses.close()
