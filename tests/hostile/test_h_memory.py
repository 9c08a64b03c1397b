"""A long input's decode does not stay resident (issue 23 class 9): README said memory
does not grow with the input's length, but every page of the mapped decode that a step
read stayed in the process (RSS 1.0 GB for 10 minutes, 2.25 GB for 60). Pages are now
dropped after every media._decode.RELEASE_BYTES sliced out; the whole-encode figures
are bench/bench_memory.py's (docs/performance.md)."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from ratecontrol import media
from ratecontrol.media._decode import RELEASE_BYTES


def _resident_mb() -> float:
    """This process's file-backed + shared resident memory (MB): where a mapped file's
    pages count (RssShmem when the temp folder is a tmpfs)."""
    kb = 0
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("RssFile", "RssShmem"):
                kb += int(rest.split()[0])
    return kb / 1024


@pytest.fixture(scope="module")
def six_minutes(tmp_path_factory):
    """6 minutes of 44.1-kHz stereo pink noise as FLAC (127 MB once decoded to float32)."""
    f = tmp_path_factory.mktemp("long") / "long.flac"
    subprocess.run([media.ffmpeg_path(), "-hide_banner", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
                    "anoisesrc=d=360:c=pink:a=0.3:seed=3", "-ac", "2", "-ar", "44100", "-c:a", "flac", str(f)],
                   check=True, capture_output=True)
    return f


@pytest.mark.skipif(not hasattr(__import__("mmap"), "MADV_DONTNEED"), reason="no madvise on this platform")
def test_reading_a_mapped_decode_through_keeps_it_out_of_the_process(six_minutes):
    a = media.decode_to_disk(six_minutes, 44_100, 2)
    total_mb = a.nbytes / 2 ** 20
    assert total_mb > 120
    first = np.array(a[:, :44_100])
    before = _resident_mb()
    grew = 0.0
    step = 44_100 * 30  # 30 s at a time, as require_finite and the check read a track
    for i in range(0, a.shape[1], step):
        assert np.isfinite(a[:, i:i + step]).all()
        grew = max(grew, _resident_mb() - before)
    # before: every page read stayed (+127 MB); now at most RELEASE_BYTES and the slice
    # being read (10 MB) stay
    assert grew < RELEASE_BYTES / 2 ** 20 + 30, (grew, total_mb)
    # the samples read again after their pages were dropped are the same
    assert np.array_equal(a[:, :44_100], first)


@pytest.mark.skipif(not hasattr(__import__("mmap"), "MADV_DONTNEED"), reason="no madvise on this platform")
def test_encoding_a_mapped_decode_keeps_it_out_of_the_process(six_minutes, tmp_path):
    """The final encode fed the whole mapped track to ffmpeg through a plain-array view
    (every page stayed) after a whole-track np.isfinite (a bool copy of it)."""
    import threading
    import time

    a = media.decode_to_disk(six_minutes, 44_100, 2)
    before = _resident_mb()
    peak = [0.0]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], _resident_mb() - before)
            time.sleep(0.01)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    try:
        out = media.encode_array(a, 44_100, "opus", "64k", tmp_path / "o.opus")
    finally:
        done.set()
        th.join()
    assert out.duration_s == pytest.approx(360, abs=0.1)
    assert peak[0] < RELEASE_BYTES / 2 ** 20 + 30, peak[0]
