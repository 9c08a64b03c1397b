"""What is scored is what is shipped (issue 12).

For every available preset, the pooled score ``encode`` reports equals the score of
the file it wrote (``ratecontrol score INPUT OUTPUT``) within 0.01 MOS, for 16-bit,
24-bit and float inputs, on real music and on quiet synthetic material. Before the
fix the output was encoded from the source file (s16 for a 16-bit WAV) while probes
fed float: Opus on quiet material then reported ~0.8 MOS more than it shipped.

Also: a whole-track probe reused as the output by stream copy decodes to exactly the
samples of a direct encode (length and alignment included), for every preset.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ratecontrol import media
from ratecontrol.api import encode, score
from ratecontrol.presets import list_presets, load_preset

PRESETS = [p.name for p in list_presets() if media.encoder_available(p)]
SUBTYPES = {"s16": "PCM_16", "s24": "PCM_24", "float": "FLOAT"}
MUSIC = "flac-test-files/17 - all fixed orders.flac"  # real stereo music, 44.1 kHz
#: a real recording turned down 20 dB and stored at 48 kHz (no resampling before the
#: encoder): the case where an s16-fed libopus shipped 4.14 for a reported 4.52
QUIET_MUSIC = "sms-tools/cello-phrase.wav"


def _quiet(synth, seconds=4.0, rate=48_000):
    """A quiet passage (-45..-35 dBFS): where libopus's LSB-depth decision matters."""
    tone = synth.tone(rate, 2, seconds, 220.0, 0.01)
    return np.clip(tone + synth.noise(rate, 2, seconds, 0.002), -1, 1)


@pytest.fixture(scope="module")
def music(shared_audio):
    x = media.decode(shared_audio / MUSIC, sample_rate_hz=44_100, channels=2)
    return x[:, : 4 * 44_100]


@pytest.fixture(scope="module")
def quiet_music(shared_audio):
    x = media.decode(shared_audio / QUIET_MUSIC, sample_rate_hz=48_000, channels=2)
    return 0.1 * x[:, : 4 * 48_000]


def _write(tmp_path: Path, x: np.ndarray, rate: int, fmt: str) -> Path:
    path = tmp_path / f"in-{fmt}.wav"
    sf.write(path, x.T, rate, subtype=SUBTYPES[fmt])
    return path


def _assert_claim(src: Path, out: Path, preset: str, target: float):
    res = encode(src, out, target_mos=target, codec=preset, best_effort=True, cache=False)
    assert res.verified
    shipped = score(src, out)
    assert abs(res.pooled_mos - shipped.pooled_mos) <= 0.01, (
        f"{preset}: reported {res.pooled_mos:.3f}, the written file scores {shipped.pooled_mos:.3f}")
    return res


@pytest.mark.parametrize("fmt", list(SUBTYPES))
@pytest.mark.parametrize("preset", PRESETS)
def test_reported_score_is_the_outputs_own_music(music, tmp_path, preset, fmt):
    src = _write(tmp_path, music, 44_100, fmt)
    _assert_claim(src, tmp_path / f"out{load_preset(preset).extension}", preset, 4.2)


@pytest.mark.parametrize("fmt", list(SUBTYPES))
@pytest.mark.parametrize("preset", PRESETS)
def test_reported_score_is_the_outputs_own_quiet_music(quiet_music, tmp_path, preset, fmt):
    src = _write(tmp_path, quiet_music, 48_000, fmt)
    _assert_claim(src, tmp_path / f"out{load_preset(preset).extension}", preset, 4.3)


@pytest.mark.parametrize("fmt", list(SUBTYPES))
@pytest.mark.parametrize("preset", PRESETS)
def test_reported_score_is_the_outputs_own_quiet(synth, tmp_path, preset, fmt):
    src = _write(tmp_path, _quiet(synth), 48_000, fmt)
    _assert_claim(src, tmp_path / f"out{load_preset(preset).extension}", preset, 4.0)


def test_sampled_search_reports_the_outputs_own_score(shared_audio, tmp_path):
    """A long input probed on segments: the reported score is the whole output's."""
    x = media.decode(shared_audio / MUSIC, sample_rate_hz=44_100, channels=2)
    reps = int(np.ceil(32 * 44_100 / x.shape[1]))
    src = _write(tmp_path, np.tile(x, reps)[:, : 32 * 44_100], 44_100, "s16")
    res = _assert_claim(src, tmp_path / "out.opus", "opus", 4.2)
    assert res.search.sampled_s is not None


def test_cli_score_agrees_with_encode_json(music, tmp_path):
    import json

    from click.testing import CliRunner

    from ratecontrol.cli import cli

    src = _write(tmp_path, music, 44_100, "s16")
    out = tmp_path / "o.opus"
    r = CliRunner().invoke(cli, ["encode", str(src), "--target-mos", "4.2", "-o", str(out), "--json", "--no-cache"])
    assert r.exit_code == 0, r.output
    reported = json.loads(r.stdout)["pooled_mos"]
    r2 = CliRunner().invoke(cli, ["score", str(src), str(out), "--json"])
    assert r2.exit_code == 0, r2.output
    assert abs(json.loads(r2.stdout)["pooled_mos"] - reported) <= 0.01


@pytest.mark.parametrize("preset", PRESETS)
def test_reused_probe_decodes_like_a_direct_encode(music, tmp_path, preset):
    """The chosen probe's packets stream-copied with tags and cover = a direct encode."""
    from ratecontrol.presets import load_preset

    p = load_preset(preset)
    rate = p.sample_rate_hz or 44_100
    x = media.decode(_write(tmp_path, music, 44_100, "s16"), sample_rate_hz=rate, channels=2)
    rung = p.rungs_for(2)[len(p.rungs_for(2)) // 2]
    direct = tmp_path / f"direct{p.extension}"
    media.encode_array(x, rate, p, rung, direct, metadata={"title": "t"})
    rt = media.roundtrip_info(x, rate, p, rung, keep=True)
    try:
        remuxed = tmp_path / f"remux{p.extension}"
        media.remux(rt.encoded_path, remuxed, p, rung, metadata={"title": "t", "RATECONTROL": "x"})
    finally:
        rt.encoded_path.unlink(missing_ok=True)
    a = media.decode(direct, sample_rate_hz=rate, channels=2)
    b = media.decode(remuxed, sample_rate_hz=rate, channels=2)
    assert a.shape == b.shape, f"{preset}: decoded length {b.shape[1]} after remux vs {a.shape[1]} direct"
    assert np.array_equal(a, b), f"{preset}: remuxed audio differs from a direct encode"
    # and aligned with the source like every probe (priming removed)
    al = media.decode_aligned(remuxed, p, rate, 2, x.shape[1])
    assert np.array_equal(al, rt.audio)


def test_kept_probe_encodes_are_cleaned(music, tmp_path):
    """The whole-track probes' files (kept for reuse) are gone after encode returns."""
    from ratecontrol import fsutil

    src = _write(tmp_path, music, 44_100, "s16")
    before = set(fsutil.run_temp_dir().iterdir())
    encode(src, tmp_path / "o.opus", target_mos=4.2, cache=False)
    assert set(fsutil.run_temp_dir().iterdir()) == before
    assert not [q for q in tmp_path.iterdir() if fsutil.is_temp_name(q.name)]


@pytest.mark.parametrize("preset", PRESETS)
def test_streamed_check_reads_what_a_decode_of_the_file_reads(music, tmp_path, preset):
    """The loopback decode the check scores while encoding = a decode of the written file."""
    from ratecontrol.presets import load_preset

    p = load_preset(preset)
    rate = p.sample_rate_hz or 44_100
    x = media.decode(_write(tmp_path, music, 44_100, "s16"), sample_rate_hz=rate, channels=2)
    out = tmp_path / f"s{p.extension}"
    rung = p.rungs_for(2)[3]
    with media.StreamedEncode(x, rate, p, rung, out, block_samples=rate) as job:
        streamed = np.concatenate(list(job.blocks()), axis=1)
        job.finish()
    assert streamed.shape == x.shape
    assert np.array_equal(streamed, media.decode_aligned(out, p, rate, 2, x.shape[1]))


def test_an_abandoned_streamed_encode_leaves_nothing(music, tmp_path):
    """Leaving the encode part-way (a failed check, an error, a cancel) kills ffmpeg and
    removes its temp file: no output, no litter."""
    from ratecontrol import fsutil

    x = np.tile(music, (1, 8))
    out = tmp_path / "o.opus"
    with pytest.raises(RuntimeError):
        with media.StreamedEncode(x, 44_100, "aac", "128k", tmp_path / "o.m4a", block_samples=44_100) as job:
            next(iter(job.blocks()))
            proc = job._proc
            raise RuntimeError("cancel")
    assert proc.poll() is not None
    assert not out.exists() and not (tmp_path / "o.m4a").exists()
    assert not [q for q in tmp_path.iterdir() if fsutil.is_temp_name(q.name)]


def test_a_reused_probe_is_verified_by_its_decode_and_scored_when_it_differs(music, tmp_path, monkeypatch):
    """A remuxed probe whose decode matches the probe's carries the probe's scores; when
    the decode differs (forced here) the file is scored afresh: same figure either way."""
    import ratecontrol.probing.verify as verify

    src = _write(tmp_path, music, 44_100, "s16")
    same = encode(src, tmp_path / "a.opus", target_mos=4.2, cache=False)
    monkeypatch.setattr(verify, "pcm_digest", lambda *a: "never-equal")
    rescored = encode(src, tmp_path / "b.opus", target_mos=4.2, cache=False)
    assert same.rung_label == rescored.rung_label
    # float noise only: the probe's windows and the fresh decode's are scored in batches
    # of other sizes, and BLAS (one thread since the scoped limit, issue 25) blocks a
    # matmul by its size, so sums round in another order (seen: 5e-6 MOS); the claim is
    # to 0.001, the 4 decimals every report prints
    assert abs(same.pooled_mos - rescored.pooled_mos) < 1e-4
    assert np.allclose(same.output_window_mos, rescored.output_window_mos, atol=1e-4, equal_nan=True)
