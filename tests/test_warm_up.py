"""Sampled probes that encode as the full-track encode does (prober.WARM_UP_S;
docs/performance.md "Cold encoders in sampled probes").

A sampled probe encodes its pieces (each segment with 1 s of codec context) in
PROBE_PROCESSES ffmpeg processes. ffmpeg's native aac adapts its rate control over
seconds, so a span that started cold in the middle of a track coded its first pieces
worse than the full-track encode does at the same place (0.38 MOS on one piece of a
real track). Each span is now run in on the 20 s of the track before its first piece,
and that part of the decode is dropped.
"""
from __future__ import annotations

import numpy as np
import pytest

from ratecontrol import media
from ratecontrol.cache import ProbeCache
from ratecontrol.options import Options
from ratecontrol.presets import load_preset
from ratecontrol.probing import prober as P
from ratecontrol.probing.source import ForwardReader, ProbeSource
from ratecontrol.probing.session import open_session

RATE = 48_000


@pytest.fixture
def track_music(synth):
    """90 s of synthetic stereo music: sampled in 3-s segments (share 0.2)."""
    x = synth.music(RATE, channels=2, duration_s=90.0)
    return np.ascontiguousarray(x, dtype=np.float32)


def _session(x, codec):
    return open_session(x, load_preset(codec), Options(cache=False), RATE)


def test_warm_up_is_the_track_just_before_a_span_s_first_piece(track_music):
    ses = _session(track_music, "aac")
    src = ses.source()
    assert src.sampled and len(src.encode_spans()) == 2
    n = int(P.WARM_UP_S["aac"] * RATE)
    for a, _ in src.encode_spans():
        piece = next(p for p in src.pieces if p.offset == a)
        b0 = piece.start - piece.before
        pre = src.warm_up(a, n)
        assert b0 > 0 and pre is not None
        # the samples that lead into the piece's encoded region, at most n of them
        assert pre.shape == (2, min(n, b0))
        np.testing.assert_array_equal(pre, ses.track.src[:, b0 - pre.shape[1] : b0])
    assert src.warm_up(src.encode_spans()[1][0], 0) is None
    with pytest.raises(ValueError):
        src.warm_up(1, n)  # no piece starts there
    # a piece whose encoded region starts the track has nothing to warm up on
    first = ProbeSource(ses.track, [(0, 3 * RATE), (60 * RATE, 3 * RATE)], 1.0)
    assert first.warm_up(0, n) is None


def test_sampled_probes_warm_up_per_encoder_and_their_cache_keys_say_so(track_music):
    ses = _session(track_music, "aac")
    aac, opus, mp3 = (ses.prober(load_preset(c)) for c in ("aac", "opus", "mp3"))
    assert P.warm_up_samples(aac.source, aac.preset) == int(P.WARM_UP_S["aac"] * RATE) > 0
    # libopus and LAME: their pieces read as the full-track encode's (measured)
    assert P.warm_up_samples(opus.source, opus.preset) == P.warm_up_samples(mp3.source, mp3.preset) == 0
    assert aac.cache_key(0)["warm_up"] == int(P.WARM_UP_S["aac"] * RATE)
    assert "warm_up" not in opus.cache_key(0)  # the keys of their earlier probes stay valid
    whole = ProbeSource(ses.track, None, 1.0)
    assert P.warm_up_samples(whole, aac.preset) == 0  # a whole-track probe starts at the start


def test_a_warmed_span_decodes_to_its_own_samples_in_place(track_music):
    """The warm-up's decode is dropped exactly: what comes back is the span, aligned."""
    ses = _session(track_music, "aac")
    src = ses.source()
    preset = load_preset("aac")
    rung = preset.knob_rung(256.0, 2)
    rts = P.encode_rung(src, preset, rung)
    spans = src.encode_spans()
    assert len(rts) == len(spans)
    for rt, (a, b) in zip(rts, spans):
        assert rt.audio.shape == (2, b - a)
        ref = src.audio[:, a:b].astype(np.float64)
        err = rt.audio.astype(np.float64) - ref
        snr = 10 * np.log10((ref ** 2).sum() / (err ** 2).sum())
        assert snr > 15, snr  # shifted by the warm-up's length it would be ~0 dB
    # bytes: the span's share, not the warm-up's too (a 256k encode of ~40 s each)
    secs = [(b - a) / RATE for a, b in spans]
    for rt, s in zip(rts, secs):
        assert 0.6 * 256 < rt.size_bytes * 8 / 1000 / s < 1.4 * 256


@pytest.mark.slow
def test_warmed_aac_spans_read_the_full_track_encode_s_windows_closer(shared_audio, tmp_path):
    """On real music: the windows of each span's first pieces, probed with and without
    the warm-up, against the full-track encode's windows at the same setting."""
    names = ["flac-test-files/17 - all fixed orders.flac", "flac-test-files/01 - blocksize 4096.flac",
             "sms-tools/cello-phrase.wav", "flac-test-files/10 - blocksize 2304.flac"]
    parts = [media.decode(shared_audio / m, sample_rate_hz=RATE, channels=2) for m in names]
    x = np.ascontiguousarray(np.concatenate(parts * 8, axis=1)[:, : 150 * RATE])
    preset = load_preset("aac")
    ses = open_session(x, preset, Options(cache=False), RATE)
    pr = ses.prober(preset)
    rung = pr.rungs[pr.setting(96.0)]
    with media.StreamedEncode(x, RATE, preset, rung, tmp_path / f"full{preset.extension}") as job:
        full, starts, chans = ses.full_track_scores(ForwardReader(job.blocks(), 2, x.shape[1]), with_index=True)
        job.finish()
    key = {(int(c), round(float(s), 3)): float(v) for v, s, c in zip(full, starts, chans)}
    src = pr.source
    truth = np.array([key[(int(c), round(float(s), 3))] for s, c in zip(src.index.start_s(), src.index.channel)])
    # the first two pieces of each span: where a cold encoder is still settling
    firsts = [next(j for j, p in enumerate(src.pieces) if p.offset == a) for a, _ in src.encode_spans()]
    at = np.isin(src.window_piece, [j + d for j in firsts for d in (0, 1)])
    err = {}
    saved = dict(P.WARM_UP_S)
    try:
        for w in (0.0, saved["aac"]):
            P.WARM_UP_S["aac"] = w
            p = P.Prober(src, preset, ses.scorer, ses.pool, ProbeCache(enabled=False))
            got = np.asarray(p.probe(p.setting(96.0), 4.3).window_mos)
            err[w] = float(np.abs(got[at] - truth[at]).mean())
    finally:
        P.WARM_UP_S.update(saved)
    assert err[saved["aac"]] < err[0.0], err



@pytest.mark.parametrize("codec", ["aac", "opus"])
def test_a_lead_in_is_encoded_first_and_left_out_of_the_decode(synth, codec):
    """media.roundtrip_info(lead_in=...): the same stream as the two fed together (no
    copy of them is made), the decode of the audio only, its bytes less the lead-in's."""
    x = synth.music(RATE, channels=2, duration_s=6.0).astype(np.float32)
    lead, body = x[:, : 2 * RATE], x[:, 2 * RATE :]
    preset = load_preset(codec)
    rung = preset.knob_rung(96.0, 2)
    got = media.roundtrip_info(body, RATE, preset, rung, lead_in=lead)
    whole = media.roundtrip_info(x, RATE, preset, rung)
    assert got.audio.shape == body.shape
    np.testing.assert_array_equal(got.audio, whole.audio[:, 2 * RATE :])
    assert got.size_bytes == round(whole.size_bytes * body.shape[1] / x.shape[1])
    with pytest.raises(ValueError):
        media.roundtrip_info(body, RATE, preset, rung, lead_in=lead[:1])
