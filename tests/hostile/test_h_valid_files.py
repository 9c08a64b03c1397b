"""Valid files that were refused (issue 23 class 5): audio that starts later than 0
(Matroska/MP4, a film whose audio is delayed), and a WAV written to a pipe (its sizes
are the "unknown" sentinel). Real ffmpeg, real recordings, the learned scorer."""
from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

import ratecontrol
from conftest import run_cli
from ratecontrol import media
from ratecontrol.errors import RatecontrolWarning, TruncatedInputError


def _ff(*args) -> None:
    subprocess.run([media.ffmpeg_path(), "-hide_banner", "-v", "error", "-nostdin", "-y", *map(str, args)],
                   check=True, capture_output=True)


@pytest.fixture(scope="module")
def clip(shared_audio, tmp_path_factory) -> Path:
    """6 s of the sms-tools cello phrase (a real recording), 16-bit WAV."""
    src = shared_audio / "sms-tools" / "cello-phrase.wav"
    out = tmp_path_factory.mktemp("clip") / "cello.wav"
    _ff("-i", src, "-t", "6", "-c:a", "pcm_s16le", out)
    return out


def _strict_decode(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RatecontrolWarning)
        return media.decode(path, **kw)


@pytest.mark.parametrize("ext,codec", [("mka", "flac"), ("webm", "libopus"), ("nut", "flac"), ("m4a", "alac"),
                                       ("mp4", "aac"), ("opus", "libopus")])
def test_audio_that_starts_late_decodes_its_own_samples(clip, tmp_path, ext, codec):
    late = tmp_path / f"late.{ext}"
    _ff("-itsoffset", "3", "-i", clip, "-c:a", codec, late)
    a = _strict_decode(late, sample_rate_hz=44100)
    want = _strict_decode(clip).shape[1]
    # the stream's own samples: nothing inserted for the 3-s delay (codec priming and
    # padding aside: AAC 2112 samples at most)
    assert abs(a.shape[1] - want) < 0.05 * 44100, (ext, a.shape[1], want)
    if codec in ("flac", "alac"):
        assert np.array_equal(a, _strict_decode(clip))


def test_a_cut_late_starting_mka_is_still_truncated(clip, tmp_path):
    late = tmp_path / "late.mka"
    _ff("-itsoffset", "3", "-i", clip, "-c:a", "flac", late)
    cut = tmp_path / "cut.mka"
    cut.write_bytes(late.read_bytes()[: late.stat().st_size // 2])
    with pytest.raises(TruncatedInputError, match=r"of the 6\.00 s its Matroska header states"):
        media.decode(cut)


def test_encode_of_a_late_starting_mka_succeeds_and_score_agrees(clip, tmp_path, capsys):
    late = tmp_path / "late.mka"
    _ff("-itsoffset", "3", "-i", clip, "-c:a", "flac", late)
    res = ratecontrol.encode(late, tmp_path / "out.opus", target_mos=4.0, codec="opus", cache=False)
    assert res.verified and res.pooled_mos >= 4.0
    code, out, _ = run_cli(["score", str(late), res.output_path, "--json"], capsys)
    assert code == 0
    import json

    assert abs(json.loads(out)["pooled_mos"] - res.pooled_mos) <= 0.01


def test_encode_of_a_film_with_delayed_audio_succeeds_and_score_agrees(clip, tmp_path, capsys):
    """An MP4 film whose audio starts 3 s in: refused as "truncated ... its matroska
    header" (the stream copied out to a temp .mka) before."""
    film = tmp_path / "film.mp4"
    _ff("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:d=9", "-itsoffset", "3", "-i", clip,
        "-map", "0:v", "-map", "1:a", "-c:v", "mpeg4", "-c:a", "aac", "-b:a", "192k", film)
    res = ratecontrol.encode(film, tmp_path / "out.mp4", target_mos=4.0, codec="aac", cache=False)
    assert res.verified and res.pooled_mos >= 4.0
    audio = [s for s in media.inspect(res.output_path).streams if s.kind == "audio"]
    assert abs(audio[0].start_s - 3.0) < 0.05  # still delayed against the video
    code, out, _ = run_cli(["score", str(film), res.output_path, "--json"], capsys)
    import json

    assert code == 0 and abs(json.loads(out)["pooled_mos"] - res.pooled_mos) <= 0.02


def test_a_damaged_stream_of_a_film_names_the_cli_flag_on_the_cli(clip, tmp_path, capsys):
    """The error of a copied-out stream kept its options as text: the CLI printed
    "(allow_partial=True)"; now the CLI says --allow-partial and the library keeps
    allow_partial=True."""
    mka = tmp_path / "a.mka"
    _ff("-i", clip, "-c:a", "flac", mka)
    data = bytearray(mka.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 3000] = bytes(3000)
    damaged = tmp_path / "damaged.mka"
    damaged.write_bytes(bytes(data))
    film = tmp_path / "film.mkv"
    _ff("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:d=6", "-i", damaged, "-map", "0", "-map", "1",
        "-c:v", "mpeg4", "-c:a", "copy", film)
    code, _, err = run_cli(["encode", str(film), "--target-mos", "4", "--codec", "opus", "-o",
                            str(tmp_path / "out.mkv"), "--no-cache"], capsys)
    assert code == 3
    line = err.strip().splitlines()[-1]
    assert f"{film} (audio stream 0)" in line and "--allow-partial" in line and "allow_partial=" not in line
    assert ".rc-tmp" not in line and "Matroska header" not in line
    with pytest.raises(TruncatedInputError) as exc:
        ratecontrol.encode(film, tmp_path / "out2.mkv", target_mos=4.0, codec="opus", cache=False)
    assert exc.value.options == {"allow_partial": True} and str(exc.value).endswith("(allow_partial=True)")


def _piped(src: Path, dest: Path, *args) -> Path:
    """``ffmpeg -i SRC -f wav - | cat > DEST``: a WAV whose sizes say "unknown"."""
    ff = subprocess.run([media.ffmpeg_path(), "-v", "error", "-nostdin", "-i", str(src), *args, "-f", "wav", "-"],
                        check=True, capture_output=True)
    dest.write_bytes(ff.stdout)
    return dest


@pytest.mark.parametrize("args", [(), ("-c:a", "pcm_s24le", "-ac", "2")], ids=["s16-mono", "s24-stereo"])
def test_a_wav_written_to_a_pipe_is_accepted(clip, tmp_path, args):
    piped = _piped(clip, tmp_path / "piped.wav", *args)
    assert piped.read_bytes()[4:8] == b"\xff\xff\xff\xff"  # RIFF size unknown; data's too
    a = _strict_decode(piped)
    b = _strict_decode(clip, channels=a.shape[0])
    assert a.shape == b.shape and np.allclose(a, b, atol=1e-4)
    d = media.decode_to_disk(piped, 44100, a.shape[0])
    assert d.shape == a.shape


def test_a_piped_wav_cut_inside_a_frame_is_still_damaged(clip, tmp_path):
    piped = _piped(clip, tmp_path / "piped.wav")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(piped.read_bytes()[:-1])  # half a 16-bit sample at the end
    with pytest.raises(TruncatedInputError, match="is damaged"):
        media.decode(cut)


def test_encode_of_a_piped_wav_succeeds(clip, tmp_path):
    piped = _piped(clip, tmp_path / "piped.wav")
    res = ratecontrol.encode(piped, tmp_path / "out.opus", target_mos=4.0, codec="opus", cache=False)
    assert res.verified and res.pooled_mos >= 4.0
