"""Lean ffmpeg processes (issue 25 lever 3): the PCM ffmpeg hands back is regrouped into
big frames (``asetnsamples``, media._ffmpeg.OUT_FRAME_SAMPLES) and read through a 1-MiB
pipe, and an input is decoded by one decoder thread (DECODER_THREADS); none of it may
change a sample or a packet.

Each comparison runs the same job with the levers on and off (all three 0 is the
command before issue 25): decodes of real FLACs with odd block sizes, resampled and
not; the loopback decode of every preset's streamed encode, whose packets (ffmpeg's
per-packet MD5s) must be the same too.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ratecontrol import media
from ratecontrol.media import _ffmpeg
from ratecontrol.presets import list_presets, load_preset

PRESETS = [p.name for p in list_presets() if media.encoder_available(p)]
#: real music with block sizes that are no divisor of the 64-Ki-sample frames (725, 16)
ODD_BLOCKS = ["flac-test-files/07 - blocksize 725.flac", "flac-test-files/03 - blocksize 16.flac"]
MUSIC = "flac-test-files/17 - all fixed orders.flac"  # real stereo music, 44.1 kHz


@pytest.fixture
def unbatched(monkeypatch):
    """Run the body with the lever off: the ffmpeg commands as they were before."""
    def off():
        monkeypatch.setattr(_ffmpeg, "OUT_FRAME_SAMPLES", 0)
        monkeypatch.setattr(_ffmpeg, "PIPE_BYTES", 0)
        monkeypatch.setattr(_ffmpeg, "DECODER_THREADS", 0)
    return off


def _packet_md5s(path) -> list[str]:
    """ffmpeg's per-packet MD5 lines of the audio stream (timestamps, sizes, payload)."""
    out = subprocess.run([media.ffmpeg_path(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:a:0",
                          "-c", "copy", "-f", "framemd5", "-"], capture_output=True, check=True).stdout
    return [ln for ln in out.decode().splitlines() if ln and not ln.startswith("#")]


@pytest.mark.parametrize("name", ODD_BLOCKS)
@pytest.mark.parametrize("rate,channels", [(None, None), (48_000, 2), (44_100, 1)])
def test_decode_is_the_same_batched(shared_audio, unbatched, name, rate, channels):
    path = shared_audio / name
    batched = media.decode(path, sample_rate_hz=rate, channels=channels)
    unbatched()
    plain = media.decode(path, sample_rate_hz=rate, channels=channels)
    assert batched.shape == plain.shape and batched.shape[1] > 0
    np.testing.assert_array_equal(batched, plain)


def test_decode_span_and_disk_are_the_same_batched(shared_audio, unbatched, tmp_path):
    path = shared_audio / MUSIC
    span = media.decode(path, sample_rate_hz=48_000, channels=2, start_s=0.37, duration_s=1.9)
    disk = np.array(media.decode_to_disk(path, 48_000, 2, directory=tmp_path))
    unbatched()
    np.testing.assert_array_equal(span, media.decode(path, sample_rate_hz=48_000, channels=2, start_s=0.37,
                                                      duration_s=1.9))
    np.testing.assert_array_equal(disk, np.array(media.decode_to_disk(path, 48_000, 2, directory=tmp_path)))


def _streamed(audio, rate, preset, out, block_samples):
    with media.StreamedEncode(audio, rate, preset, 3, out, block_samples=block_samples) as job:
        blocks = list(job.blocks())
        job.finish()
    return blocks


@pytest.mark.parametrize("preset", PRESETS)
def test_streamed_encode_is_the_same_batched(shared_audio, unbatched, tmp_path, preset):
    """Same packets written, same decode read back (44.1-kHz music: Opus resamples in the
    loopback too), block for block at the caller's block size."""
    rate = 44_100
    audio = media.decode(shared_audio / MUSIC, sample_rate_hz=rate, channels=2)[:, : int(7.3 * rate)]
    a = _streamed(audio, rate, preset, tmp_path / f"a{load_preset(preset).extension}", rate)
    unbatched()
    b = _streamed(audio, rate, preset, tmp_path / f"b{load_preset(preset).extension}", rate)
    assert [x.shape for x in a] == [x.shape for x in b]
    assert sum(x.shape[1] for x in a) == audio.shape[1]
    np.testing.assert_array_equal(np.concatenate(a, axis=1), np.concatenate(b, axis=1))
    ext = load_preset(preset).extension
    assert _packet_md5s(tmp_path / f"a{ext}") == _packet_md5s(tmp_path / f"b{ext}")


def test_roundtrip_of_a_short_clip_is_the_same_batched(synth, unbatched):
    """Fewer samples than one batched frame: nothing padded, nothing lost."""
    x = synth.music(48_000, channels=2, duration_s=0.25)
    a = media.roundtrip_info(x, 48_000, "opus", 2)
    unbatched()
    b = media.roundtrip_info(x, 48_000, "opus", 2)
    assert a.audio.shape == b.audio.shape == x.shape
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.size_bytes == b.size_bytes


def test_the_loopback_decode_is_batched_and_read_through_a_wide_pipe(synth, tmp_path):
    """The property the lever rests on: the decode comes back in OUT_FRAME_SAMPLES frames
    through a PIPE_BYTES pipe (before issue 25: the decoder's own 960-sample frames
    through 64 KiB, one write and one wake-up of the reader per 20 ms of audio)."""
    x = synth.music(48_000, channels=2, duration_s=0.5)
    with media.StreamedEncode(x, 48_000, "opus", 2, tmp_path / "o.opus") as job:
        graph = job._cmd[job._cmd.index("-filter_complex") + 1]
        assert f"asetnsamples=n={_ffmpeg.OUT_FRAME_SAMPLES}:p=0" in graph
        if sys.platform.startswith("linux"):
            import fcntl

            assert fcntl.fcntl(job._proc.stdout.fileno(), 1032) >= _ffmpeg.PIPE_BYTES  # F_GETPIPE_SZ
        job.finish()


def test_widen_pipe_is_only_a_speed_up(monkeypatch):
    """A refused F_SETPIPE_SZ (EPERM past a lowered pipe-max-size), a platform without
    it, and the off switch: no error, the pipe is left as it was."""
    import errno
    import os

    fcntl = pytest.importorskip("fcntl")
    r, w = os.pipe()
    try:
        with os.fdopen(r, "rb", closefd=False) as fh:
            before = fcntl.fcntl(r, 1032)  # F_GETPIPE_SZ

            def refuse(*a):
                raise OSError(errno.EPERM, "Operation not permitted")

            with monkeypatch.context() as m:
                m.setattr(fcntl, "fcntl", refuse)
                _ffmpeg.widen_pipe(fh)
            monkeypatch.setattr(_ffmpeg, "PIPE_BYTES", 0)
            _ffmpeg.widen_pipe(fh)
            _ffmpeg.widen_pipe(None)
            assert fcntl.fcntl(r, 1032) == before
    finally:
        os.close(r)
        os.close(w)


def test_an_input_is_decoded_by_one_decoder_thread_in_big_frames(shared_audio):
    """The decode command: ``-threads 1`` before ``-i`` (FLAC decodes frame-threaded by
    default, one thread per core) and the batching filter last in its chain."""
    import ffmpeg

    from ratecontrol.media._decode import _decode_input, _pcm_output

    src, *_ = _decode_input(shared_audio / MUSIC, 0.5, 1.0)
    cmd = ffmpeg.compile(_pcm_output(src, 48_000, 2, "wav"))
    assert cmd[cmd.index("-threads") + 1] == "1" and cmd.index("-threads") < cmd.index("-i")
    assert cmd[cmd.index("-af") + 1].endswith(f"asetnsamples=n={_ffmpeg.OUT_FRAME_SAMPLES}:p=0")
