"""Sampled probes, the probe cache, --codec auto, target ladders and the report image.

Real ffmpeg and real scorers (exact ViSQOL, or the default learned model where a test is
about the machinery); inputs are short so this stays fast.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ratecontrol import media
from ratecontrol.api import encode, encode_ladder, select_bitrate
from ratecontrol.cache import ProbeCache
from ratecontrol.errors import UsageError
from ratecontrol.options import Options
from ratecontrol.probing import session as session_module
from ratecontrol.probing import track as track_module
from ratecontrol.probing.sampling import pick_segments
from ratecontrol.probing.session import open_session
from ratecontrol.probing.source import ForwardReader
from ratecontrol.probing.track import Track

SR = 44_100


@pytest.fixture
def count_encodes(monkeypatch):
    calls = []
    real = media.roundtrip_info

    def spy(*a, **k):
        calls.append(a[3])
        return real(*a, **k)

    monkeypatch.setattr(media, "roundtrip_info", spy)
    return calls


def test_cache_serves_another_target_and_pool_without_encoding(synth, tmp_path, count_encodes):
    audio = synth.pad(SR, 2, 3)
    cache = ProbeCache(tmp_path / "c")
    first = select_bitrate(audio, sample_rate_hz=SR, target_mos=4.0, codec="opus", scorer="visqol", cache=cache)
    n_first = len(count_encodes)
    assert n_first == len(first.probes) and cache.misses == n_first and cache.hits == 0
    again = select_bitrate(audio, sample_rate_hz=SR, target_mos=4.0, codec="opus", scorer="visqol", pool="mean",
                           cache=ProbeCache(tmp_path / "c"))
    assert len(count_encodes) == n_first, "cached probes must not encode again"
    # same window scores, pooled differently
    assert again.probes[0].window_mos == first.probes[0].window_mos
    # another target: only rungs never probed before are encoded
    other = select_bitrate(audio, sample_rate_hz=SR, target_mos=4.4, codec="opus", scorer="visqol", cache=cache)
    # a setting is its label (a knob setting's index is its place in its own search)
    seen = {p.rung_label for p in first.probes} | {p.rung_label for p in again.probes}
    new = {p.rung_label for p in other.probes} - seen
    assert len(count_encodes) == n_first + len(new)
    # different audio misses
    n = len(count_encodes)
    select_bitrate(synth.pad(SR, 2, 3, hard_at=[1]), sample_rate_hz=SR, target_mos=4.0, codec="opus", scorer="visqol", cache=cache)
    assert len(count_encodes) > n


def test_no_cache_always_encodes(synth, count_encodes):
    audio = synth.pad(SR, 2, 2)
    for _ in range(2):
        select_bitrate(audio, sample_rate_hz=SR, target_mos=3.5, codec="opus", scorer="visqol", cache=False)
    assert len(count_encodes) % 2 == 0 and len(count_encodes) >= 2


def test_cache_size_cap(tmp_path):
    cache = ProbeCache(tmp_path / "c", max_mb=0.001)  # 1 kB: every write evicts
    for i in range(3):
        cache.get_or_compute({"k": i}, lambda: {"window_mos": list(range(500))})
    size = sum(f.stat().st_size for f in (tmp_path / "c").rglob("*") if f.is_file())
    assert size < 20_000


def _covered(segs):
    return sorted({s // SR + k for s, n in segs for k in range(n // SR)})


def test_hardest_segments_pick_the_dense_passages(synth):
    track = Track(None, synth.pad(SR, 2, 60, hard_at=[7, 8, 41, 42, 43]), SR, None, ())
    covered = _covered(pick_segments(track, 0.2, strategy="hardest"))
    assert {7, 8, 41, 42, 43} <= set(covered)
    assert 12 <= len(covered) <= 15  # 20% of 60 s, in 3-s segments


def test_level_segments_span_quiet_to_loud_and_skip_silence(rng):
    # 20 3-s slots at 20 levels from -50 to -2 dBFS, then 30 s of digital silence
    levels_db = np.linspace(-50, -2, 20)
    slots = [10 ** (db / 20) * rng.standard_normal(3 * SR) for db in rng.permutation(levels_db)]
    x = np.concatenate(slots + [np.zeros(30 * SR)]).astype(np.float32)
    track = Track(None, np.stack([x, x]), SR, None, ())
    segs = pick_segments(track, 0.2, strategy="level")
    assert len(segs) == 6 and all(n == 3 * SR for _, n in segs)  # 20% of 90 s
    assert all(a < 60 * SR for a, _ in segs)  # never the silence
    got = sorted(20 * np.log10(np.sqrt(np.mean(x[a : a + n] ** 2))) for a, n in segs)
    # evenly spaced ranks of the 20 live slots: the quietest picked is among the 4
    # quietest, the loudest among the 4 loudest, and the levels are spread out
    assert got[0] < -39 and got[-1] > -13 and np.all(np.diff(got) > 5)


def test_spread_segments_are_evenly_spaced(synth):
    track = Track(None, synth.pad(SR, 2, 60), SR, None, ())
    starts = [a // SR for a, _ in pick_segments(track, 0.2, strategy="spread")]
    assert len(starts) == 4 and set(np.diff(starts)) == {15}


def test_short_tracks_and_bad_strategies(synth):
    assert pick_segments(Track(None, synth.pad(SR, 2, 20), SR, None, ()), 0.2) is None  # short: whole track
    assert pick_segments(Track(None, synth.pad(SR, 2, 60), SR, None, ()), 1.0) is None
    with pytest.raises(UsageError):
        pick_segments(Track(None, synth.pad(SR, 2, 60), SR, None, ()), 0.2, strategy="loudest")


def test_sampled_encode_checks_the_whole_track(synth, tmp_path, count_encodes):
    src = tmp_path / "long.wav"
    # mono and just over the 30-s sampling threshold: the full-track check is 31 windows
    sf.write(src, synth.pad(SR, 1, 31, hard_at=[5, 20])[0], SR, subtype="PCM_16")
    res = encode(src, tmp_path / "long.opus", target_mos=4.0, codec="opus", cache=False)  # default: learned
    s = res.search
    assert s.sampled_s is not None and s.sampled_s < 20
    assert len(s.chosen.window_mos) == int(s.sampled_s)
    assert res.full_track_mos is not None and res.full_track_mos >= 4.0 - 1e-9 or res.stepped_up > 0
    assert any("spread over it" in n for n in s.notes)
    # every probe encoded only the sampled segments with context, never the whole 31 s
    assert all(c is not None for c in count_encodes)


def test_target_ladder_reuses_one_probe_curve(synth, tmp_path, count_encodes):
    src = tmp_path / "x.wav"
    sf.write(src, synth.pad(SR, 2, 3, hard_at=[1]).T, SR, subtype="PCM_16")
    results = encode_ladder(src, tmp_path, targets=[4.5, 3.0, 4.0], codec="opus", scorer="visqol", cache=False)
    assert [r.search.target_mos for r in results] == [3.0, 4.0, 4.5]
    kbps = [r.bitrate_kbps for r in results]
    assert kbps == sorted(kbps), "a higher target never gets a cheaper rung"
    rungs_probed = {r.search.chosen.rung_index for r in results} | {p.rung_index for r in results for p in r.search.probes}
    assert len(count_encodes) == len(rungs_probed), "each rung encoded at most once across targets"
    for r in results:
        assert Path(r.output_path).exists()
    # targets that land on one rung share one file (issue 18: no identical copies)
    by_rung = {}
    for r in results:
        by_rung.setdefault(r.rung_label, set()).add(r.output_path)
    assert all(len(paths) == 1 for paths in by_rung.values())
    assert len({r.output_path for r in results}) == len(by_rung)


def test_codec_auto_picks_the_smallest(synth, tmp_path):
    audio = synth.pad(SR, 1, 2, hard_at=[0])
    res = select_bitrate(audio, sample_rate_hz=SR, target_mos=3.8, codec="auto", scorer="visqol", cache=False)
    note = next(n for n in res.notes if n.startswith("codec auto"))
    assert f"chose {res.preset}" in note
    # the winner's measured size is the smallest among the presets that reached the target
    sizes = {}
    for part in note.split(": ", 1)[1].split("; chose")[0].split(", "):
        name, *rest = part.split()
        if "unreachable" not in part:
            sizes[name] = float(rest[1].lstrip("~"))
    assert sizes[res.preset] == min(sizes.values())


def test_report_png(synth, tmp_path):
    src = tmp_path / "r.wav"
    sf.write(src, synth.pad(SR, 2, 4, hard_at=[2]).T, SR, subtype="PCM_16")
    png = tmp_path / "report.png"
    res = encode(src, tmp_path / "r.opus", target_mos=4.0, codec="opus", scorer="visqol", report=png, cache=False)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    # the report shows the settings probed just below and just above the chosen one
    # (in bits: a knob setting's index is its place in the search, issue 24)
    kb = res.search.chosen.bitrate_kbps
    assert any(p.bitrate_kbps < kb for p in res.search.probes) or res.search.chosen.rung_index == 0
    assert any(p.bitrate_kbps > kb for p in res.search.probes), "the report shows the setting above the chosen one too"


def test_full_track_check_streams_in_chunks_with_the_same_scores(rng, synth):
    audio = synth.pad(SR, 1, 5, hard_at=[2])
    s = open_session(audio, None, Options(scorer="visqol", pool="p10", hop_s=1.0, sample_share=1.0, cache=False), SR)
    deg = audio + 0.003 * rng.standard_normal(audio.shape).astype(np.float32)
    whole = s.full_track_scores(deg, chunk_s=60)
    chunked = s.full_track_scores(deg, chunk_s=2)
    assert len(whole) == len(chunked) == 5
    np.testing.assert_allclose(chunked, whole, atol=0.02)


def test_full_track_check_reuses_its_prepared_reference_with_the_same_scores(rng, synth):
    # a step-up rescores against the pieces prepared by the first check: the very
    # scores of preparing each piece on the spot; silence in the middle included
    audio = synth.pad(SR, 2, 8, hard_at=[2])
    audio[:, 3 * SR : 5 * SR] = 0
    s = open_session(audio, None, Options(scorer="learned", pool="p10", hop_s=1.0, sample_share=1.0, cache=False), SR)
    deg = audio + 0.003 * rng.standard_normal(audio.shape).astype(np.float32)
    deg[0, 3 * SR : 4 * SR] = 0  # one silent window stays silent, the other gets noise
    first = s.full_track_scores(deg, chunk_s=3)
    kept = s._check_ref
    assert len(kept) == 3 and all("_ref" not in piece.__dict__ for piece, _, _ in kept.values())  # no windows kept
    real, sizes = s.scorer.prepare, []
    s.scorer.prepare = lambda w: sizes.append(len(w)) or real(w)
    again = s.full_track_scores(deg, chunk_s=3)
    # only windows whose silent reference got noise are prepared again, never a whole
    # 3-s piece (6 windows over 2 channels)
    assert all(n < 6 for n in sizes)
    assert len(again) == 16 and np.isnan(again).sum() == 1
    np.testing.assert_allclose(again, first, atol=1e-6)


def test_forward_reader_serves_overlapping_forward_ranges_from_blocks():
    x = np.arange(2 * 1000, dtype=np.float32).reshape(2, 1000)
    blocks = (x[:, i : i + 64] for i in range(0, 1000, 64))
    r = ForwardReader(blocks, 2, 1000)
    assert r.shape == (2, 1000)
    for lo, hi in [(0, 300), (250, 600), (700, 800), (750, 1000), (900, 1200)]:  # overlaps and a gap
        np.testing.assert_array_equal(r[:, lo:hi], x[:, lo:min(hi, 1000)])
        assert r._buf.shape[1] <= hi - lo + 64  # only what is still needed is kept
    with pytest.raises(IndexError):
        r[:, 100:200]  # behind the retained data


def test_one_stream_ladder_probes_run_two_rungs_at_once_and_keep_the_search_invariant(synth, monkeypatch):
    # the knob search goes one setting at a time (test_api, docs/performance.md "Short
    # inputs: one probe at a time"); a ladder search takes two rungs a round
    import threading
    import time as _time

    audio = synth.pad(SR, 2, 6, hard_at=[2, 4])
    live, peak, lock = [0], [0], threading.Lock()
    real = media.roundtrip_info

    def spy(*a, **k):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        try:
            _time.sleep(0.05)  # let a concurrent probe start before this one ends
            return real(*a, **k)
        finally:
            with lock:
                live[0] -= 1

    monkeypatch.setattr(media, "roundtrip_info", spy)
    results = {}
    for jobs in (None, 1):
        peak[0] = 0
        r = select_bitrate(audio, sample_rate_hz=SR, target_mos=4.3, codec="opus", cache=False, jobs=jobs,
                           ladder=True)
        results[jobs] = (r, peak[0])
        assert r.chosen.pooled_mos >= 4.3, "the chosen setting passed its own probe"
        below = [p for p in r.probes if p.bitrate_kbps < r.chosen.bitrate_kbps]
        if below:
            assert max(below, key=lambda p: p.bitrate_kbps).pooled_mos < 4.3, "and the one below failed"
    assert results[None][1] == 2 and results[1][1] == 1  # jobs=1 (batch workers) stays sequential


def test_long_inputs_decode_to_a_mapped_file_with_the_same_decisions(synth, tmp_path, monkeypatch):
    f = tmp_path / "long.flac"
    sf.write(str(f), synth.pad(SR, 2, 40, hard_at=[5, 17, 31]).T, SR)
    runs = {}
    real = media.decode_to_disk
    for name, min_s in (("memory", 1e9), ("disk", 5.0)):
        calls = []
        monkeypatch.setattr(media, "decode_to_disk", lambda *a, _c=calls, **k: _c.append(a) or real(*a, **k))
        monkeypatch.setattr(track_module, "DISK_DECODE_MIN_S", min_s)
        runs[name] = encode(f, tmp_path / f"{name}.opus", target_mos=4.2, codec="opus", cache=False)
        assert bool(calls) == (name == "disk")
    a, b = runs["memory"], runs["disk"]
    assert a.search.sampled_s and a.rung_label == b.rung_label
    assert [p.window_mos for p in a.search.probes] == [p.window_mos for p in b.search.probes]
    assert a.full_track_mos == b.full_track_mos


def test_default_sample_is_capped_for_long_tracks_but_an_explicit_share_is_not(synth, monkeypatch):
    track = Track(None, synth.pad(SR, 2, 300), SR, None, ())  # 5 min: 20 % would be 60 s
    monkeypatch.setattr(session_module, "SAMPLE_MAX_S", 30.0)
    capped = pick_segments(track, 0.2, max_s=30.0)
    free = pick_segments(track, 0.2)
    assert sum(n for _, n in capped) == 30 * SR and sum(n for _, n in free) == 60 * SR
    # still spread over the whole track
    assert capped[0][0] < 30 * SR and capped[-1][0] > 240 * SR
    # sessions: the cap only applies to the default share
    s_default = open_session(track.src, None, Options(scorer="visqol", pool="p10", hop_s=1.0, sample_share=None, cache=False), SR)
    s_explicit = open_session(track.src, None, Options(scorer="visqol", pool="p10", hop_s=1.0, sample_share=0.2, cache=False), SR)
    assert s_default.source().scored_s == 30.0 and s_explicit.source().scored_s == 60.0
