"""Audio of video files re-encoded in place (issue 17 part 2): the video (and every
other stream) is stream-copied bit for bit, the audio meets its target."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import ratecontrol
from ratecontrol import errors, media

MUSIC = "flac-test-files/17 - all fixed orders.flac"


def _ff(*args) -> bytes:
    return subprocess.run([media.ffmpeg_path(), "-hide_banner", "-v", "error", "-y", *map(str, args)],
                          check=True, capture_output=True).stdout


@pytest.fixture(scope="module")
def video(shared_audio, tmp_path_factory):
    """A small real-music video: testsrc H.264 (or MPEG-4 part 2) + AAC, 5 s, in MP4."""
    d = tmp_path_factory.mktemp("video")
    out = d / "clip.mp4"
    venc = "libx264" if "libx264" in media.available_encoders() else "mpeg4"
    _ff("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-i", shared_audio / MUSIC, "-t", "5",
        "-map", "0:v", "-map", "1:a", "-c:v", venc, "-c:a", "aac", "-b:a", "256k", "-shortest", out)
    return out


def _video_md5(path: Path) -> bytes:
    return _ff("-i", path, "-map", "0:v", "-c", "copy", "-f", "md5", "-")


@pytest.mark.parametrize("codec,ext", [("aac", ".mp4"), ("opus", ".mkv"), ("opus", ".mp4")])
def test_video_is_kept_bit_for_bit_and_the_audio_meets_its_target(video, tmp_path, codec, ext):
    out = tmp_path / f"small{ext}"
    res = ratecontrol.encode(video, out, target_mos=4.0, codec=codec, cache=False)
    info = media.inspect(out)
    assert info.other_streams == 1 and info.codec == codec
    assert _video_md5(out) == _video_md5(video)
    assert res.verified and res.pooled_mos >= 4.0
    assert abs(ratecontrol.score(video, out).pooled_mos - res.pooled_mos) <= 0.01


def test_default_name_and_audio_only(video, tmp_path):
    import shutil

    src = tmp_path / "clip.mp4"
    shutil.copy(video, src)
    res = ratecontrol.encode(src, target_mos=3.8, codec="opus", cache=False)
    assert Path(res.output_path).name == "clip.opus.mp4"
    res = ratecontrol.encode(src, tmp_path / "a.opus", target_mos=3.8, codec="opus", cache=False, audio_only=True)
    assert media.inspect(res.output_path).other_streams == 0


def test_a_container_that_cannot_hold_the_codec_is_a_clear_error(video, tmp_path):
    with pytest.raises(errors.OutputError, match="cannot hold"):
        ratecontrol.encode(video, tmp_path / "x.webm", target_mos=3.8, codec="mp3", cache=False)
    assert not (tmp_path / "x.webm").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".rc-tmp")]


def test_batch_reports_video_files_and_skips_them_when_asked(video, tmp_path):
    import shutil

    from ratecontrol.batch import transcode_folder

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(video, src / "clip.mp4")
    rep = transcode_folder(src, tmp_path / "out", target_mos=3.6, codec="opus", jobs=1, cache=False, progress=False)
    (rec,) = rep.records
    assert rec.status == "encoded" and any("video/other stream" in n for n in rec.notes)
    rep = transcode_folder(src, tmp_path / "out2", target_mos=3.6, codec="opus", jobs=1, cache=False,
                           progress=False, video="skip")
    (rec,) = rep.records
    assert rec.status == "skipped" and "--video skip" in rec.reason
    with pytest.raises(errors.UsageError):
        transcode_folder(src, tmp_path / "out3", target_mos=3.6, codec="opus", video="keep")
