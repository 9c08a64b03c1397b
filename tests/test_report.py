"""``--report``: the shipped rung over the whole track, probed segments not bridged
(issue 18 item 6), one PNG per ladder target, and a report that cannot be written
never loses the audio."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from ratecontrol import media
from ratecontrol.api import encode, encode_ladder
from ratecontrol.errors import OutputError
from ratecontrol.report import render_report, channel_names, gap_broken_lines, report_path_for, segment_spans
from ratecontrol.scoring.pooling import pool

MUSIC = "flac-test-files/17 - all fixed orders.flac"  # real stereo music, 44.1 kHz
SR = 44_100
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def music(shared_audio):
    return media.decode(shared_audio / MUSIC, sample_rate_hz=SR, channels=2)


@pytest.fixture(scope="module")
def sampled(music, tmp_path_factory):
    """One sampled search (a 35-s input: the probes score segments) with its report."""
    d = tmp_path_factory.mktemp("sampled")
    reps = int(np.ceil(35 * SR / music.shape[1]))
    src = d / "long song.wav"
    sf.write(src, np.tile(music, reps)[:, : 35 * SR].T, SR, subtype="PCM_16")
    png = d / "plot.png"
    res = encode(src, d / "out.opus", target_mos=4.2, codec="opus", best_effort=True, cache=False, report=png)
    return res, png


def test_sampled_report_is_a_png(sampled):
    res, png = sampled
    assert res.search.sampled_s is not None, "a 35-s input is probed on segments"
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 20_000


def test_output_windows_cover_the_whole_track_and_pool_to_the_reported_score(sampled):
    res, _ = sampled
    mos = np.asarray(res.output_window_mos)
    starts = np.asarray(res.output_window_start_s)
    chans = np.asarray(res.output_window_channel)
    assert res.verified and len(mos) == len(starts) == len(chans)
    assert set(chans.tolist()) == {0, 1}
    assert abs(len(mos) - 35 * 2) <= 2  # one window a second per channel over 35 s
    assert starts.min() == 0 and starts.max() >= 33
    # the whole track, not the probed segments: more windows than the probes scored
    assert len(mos) > len(res.search.chosen.window_mos)
    assert abs(pool(mos[~np.isnan(mos)], "p10") - res.pooled_mos) <= 1e-6
    assert res.search.pool == "p10"


def test_probe_lines_break_at_the_gaps_between_segments(sampled):
    res, _ = sampled
    s = res.search
    spans = segment_spans(s.window_start_s)
    assert len(spans) >= 2, "the sampled search scored several segments"
    lines = gap_broken_lines(s.window_start_s, s.window_channel, s.chosen.window_mos)
    assert set(lines) == {0, 1}
    for x, y in lines.values():
        assert np.isnan(x).sum() == np.isnan(y[np.isnan(x)]).sum() == len(spans) - 1
        # no segment of the line is longer than a hop (+ the tail window's shift)
        steps = np.diff(x)
        assert np.nanmax(steps) <= 1.0 + 1e-6
    # the shipped file's windows are one unbroken line per channel (no silence here)
    whole = gap_broken_lines(res.output_window_start_s, res.output_window_channel, res.output_window_mos)
    assert all(not np.isnan(x).any() for x, _ in whole.values())


def test_gap_helper_inserts_nan_only_where_windows_are_more_than_a_hop_apart():
    starts = [0, 1, 2, 10, 11, 30, 0, 1, 2, 10, 11, 30]
    chans = [0] * 6 + [1] * 6
    mos = [4.0, 4.1, 4.2, 3.9, 3.8, 4.5] * 2
    lines = gap_broken_lines(starts, chans, mos)
    x, y = lines[0]
    np.testing.assert_array_equal(np.isnan(x), [0, 0, 0, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(y[~np.isnan(y)], [4.0, 4.1, 4.2, 3.9, 3.8, 4.5])
    np.testing.assert_allclose(x[~np.isnan(x)], np.array([0, 1, 2, 10, 11, 30]) + 0.5)
    # contiguous windows (a tail window closer than a hop included) stay one line
    x, _ = gap_broken_lines([0, 1, 2, 2.4], [0] * 4, [4.0] * 4)[0]
    assert not np.isnan(x).any()
    assert segment_spans([0, 1, 2, 10, 11]) == [(0.0, 3.0), (10.0, 12.0)]


def test_channel_names():
    assert channel_names(1) == ["mono"]
    assert channel_names(2) == ["L", "R"]
    assert channel_names(3) == ["ch 0", "ch 1", "ch 2"]
    assert channel_names(2, ("FL", "FR")) == ["FL", "FR"]


@pytest.fixture(scope="module")
def short(music, tmp_path_factory):
    d = tmp_path_factory.mktemp("short")
    src = d / "short.wav"
    sf.write(src, music[:, : 4 * SR].T, SR, subtype="PCM_16")
    return src


def test_ladder_report_one_png_per_target(short, tmp_path):
    png = tmp_path / "ladder.png"
    (tmp_path / "out").mkdir()
    res = encode_ladder(short, tmp_path / "out", targets=[3.8, 4.3], codec="opus", scorer="visqol", cache=False,
                        best_effort=True, report=png)
    assert len(res) == 2
    for t in (3.8, 4.3):
        p = report_path_for(png, t)
        assert p.name == f"ladder.mos{t:g}.png"
        assert p.read_bytes()[:8] == PNG
    assert not png.exists()


def test_report_that_cannot_be_written_keeps_the_audio(short, tmp_path):
    out = tmp_path / "o.opus"
    # a report path that can never be written is refused before any work (publish rule)
    bad = tmp_path / "is-a-folder.png"
    bad.mkdir()
    with pytest.raises(OutputError, match="report path is a folder"):
        encode(short, out, target_mos=4.0, codec="opus", scorer="visqol", cache=False, report=bad)
    with pytest.raises(OutputError, match=r"report folder does not exist: .*no \(create it first\)"):
        encode(short, out, target_mos=4.0, codec="opus", scorer="visqol", cache=False, report=tmp_path / "no" / "r.png")
    assert not out.exists()
    # one that fails after the audio is written (a file appeared there): the audio stays
    late = tmp_path / "late.png"

    def appear(probe):
        if not late.exists():
            late.write_bytes(b"someone else's")

    with pytest.raises(OutputError) as err:
        encode(short, out, target_mos=4.0, codec="opus", scorer="visqol", cache=False, report=late, on_probe=appear)
    msg = str(err.value)
    assert "\n" not in msg and str(late) in msg and "the audio was written" in msg and str(out) in msg
    assert out.stat().st_size > 0 and err.value.result.output_path == str(out)
    assert late.read_bytes() == b"someone else's"
    assert not list(tmp_path.glob(".*tmp*")), "no temp file left behind"


def test_render_report_checks_its_path_where_every_output_is(sampled, tmp_path):
    """A plain path given to render_report is checked by fsutil.claim_output (the one
    check of every output path): the same words, and a folder refused before drawing."""
    from ratecontrol import fsutil

    res, _ = sampled
    folder = tmp_path / "is-a-folder.png"
    folder.mkdir()
    for bad in (folder, tmp_path / "no" / "r.png"):
        with pytest.raises(OutputError) as rule:
            fsutil.claim_output(bad, overwrite=True, what="report")
        with pytest.raises(OutputError) as got:
            render_report(res.search, bad, encode_result=res)
        assert str(got.value) == str(rule.value)
    again = tmp_path / "r.png"
    again.write_bytes(b"old")
    assert render_report(res.search, again, encode_result=res) == again  # a library call replaces it
    assert again.read_bytes()[:8] == PNG
