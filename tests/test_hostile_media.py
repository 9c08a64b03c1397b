"""Inputs and environments that used to get the wrong words (issue #15 items 3, 4, 8):
cut-off files, a broken ffmpeg, non-regular files, unlabelled multichannel audio,
awkward names. Real ffmpeg on small generated files; the shared recordings when present."""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import Synth
from ratecontrol import errors, media
from ratecontrol.errors import (FFmpegNotFoundError, InputError, InputNotFoundError, RatecontrolWarning,
                                TruncatedInputError)

SR = 44100
LEN_S = 7.0


@pytest.fixture(scope="module")
def full_files(tmp_path_factory):
    """A 7.00-s stereo noise track as WAV, FLAC, MP3, Opus, Vorbis and M4A (faststart)."""
    d = tmp_path_factory.mktemp("full")
    wav = d / "full.wav"
    x = Synth(7).noise(SR, channels=2, duration_s=LEN_S)
    sf.write(str(wav), x.T, SR, subtype="PCM_16")
    out = {"wav": wav}
    sf.write(str(d / "full.flac"), x.T, SR, subtype="PCM_16")
    out["flac"] = d / "full.flac"
    for ext, args in [("mp3", ["-c:a", "libmp3lame", "-b:a", "128k"]),
                      ("opus", ["-c:a", "libopus", "-b:a", "64k"]),
                      ("ogg", ["-c:a", "libvorbis", "-q:a", "3"]),
                      ("m4a", ["-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart"])]:
        subprocess.run([media.ffmpeg_path(), "-hide_banner", "-v", "error", "-i", str(wav), *args, "-y",
                        str(d / f"full.{ext}")], check=True, capture_output=True)
        out[ext] = d / f"full.{ext}"
    return out


def _cut(src: Path, dest: Path, share=1 / 3) -> Path:
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * share)])
    return dest


@contextlib.contextmanager
def _strict():
    """Context in which any RatecontrolWarning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RatecontrolWarning)
        yield


# ------------------------------------------------------------- truncated input


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3", "opus", "ogg", "m4a"])
def test_complete_files_decode_without_complaint(full_files, ext):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RatecontrolWarning)
        x = media.decode(full_files[ext])
        y = media.decode_to_disk(full_files[ext], SR, 2)
    assert abs(x.shape[1] / (48000 if ext == "opus" else SR) - LEN_S) < 0.1
    assert abs(y.shape[1] / SR - LEN_S) < 0.1


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3", "opus", "ogg", "m4a"])
def test_first_third_of_a_file_is_refused(full_files, tmp_path, ext):
    cut = _cut(full_files[ext], tmp_path / f"cut.{ext}")
    for fn in (lambda: media.decode(cut), lambda: media.decode_to_disk(cut, SR, 2)):
        with pytest.raises(InputError) as ei:
            fn()
        msg = str(ei.value)
        assert "\n" not in msg and "cut." in msg and ei.value.exit_code == errors.InputError.exit_code
        if ext == "m4a":  # faststart: the index is there, the samples are not
            assert isinstance(ei.value, TruncatedInputError)
        if isinstance(ei.value, TruncatedInputError):
            assert "allow_partial=True" in msg and "truncated" in msg and "--" not in msg  # the library's words
            if ext in ("wav", "flac", "mp3", "m4a"):  # these containers state the length
                assert "of the 7.00 s" in msg
                assert re.search(r"decoded 2\.\d\d s", msg)


def test_brief_case_flac_first_third(full_files, tmp_path):
    cut = _cut(full_files["flac"], tmp_path / "song.flac")
    with pytest.raises(TruncatedInputError, match=r"song\.flac is truncated: decoded [12]\.\d+ s of the 7\.00 s"):
        media.decode(cut, sample_rate_hz=48000, channels=2)


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3", "opus"])
def test_allow_partial_warns_once_and_returns_what_decodes(full_files, tmp_path, ext):
    cut = _cut(full_files[ext], tmp_path / f"cut.{ext}")
    whole = media.decode(full_files[ext])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        part = media.decode(cut, allow_partial=True)
    msgs = [str(m.message) for m in w if issubclass(m.category, RatecontrolWarning)]
    assert len(msgs) == 1 and "\n" not in msgs[0] and "allow_partial" in msgs[0]
    assert 0.1 * whole.shape[1] < part.shape[1] < 0.5 * whole.shape[1]
    if ext in ("wav", "flac"):  # lossless: the part is the start of the whole, exactly
        n = part.shape[1] - 4096  # a damaged last frame may be dropped or garbled
        assert np.array_equal(part[:, :n], whole[:, :n])
    with pytest.warns(RatecontrolWarning, match="truncated"):
        media.decode_to_disk(cut, SR, 2, allow_partial=True)


def test_damage_in_the_middle_is_reported(full_files, tmp_path):
    data = bytearray(full_files["flac"].read_bytes())
    mid = len(data) // 2
    data[mid:mid + 3000] = bytes(3000)
    f = tmp_path / "damaged.flac"
    f.write_bytes(bytes(data))
    with pytest.raises(TruncatedInputError, match=r"damaged\.flac is damaged: ffmpeg reported \d+ decode error"):
        media.decode(f)


def test_wav_cut_on_a_frame_boundary(full_files, tmp_path):
    data = full_files["wav"].read_bytes()
    assert data[36:40] == b"data"
    f = tmp_path / "blk.wav"
    f.write_bytes(data[: 44 + 4 * SR * 2])  # exactly 2.00 s of 16-bit stereo frames
    with pytest.raises(TruncatedInputError, match=r"decoded 2\.00 s of the 7\.00 s its WAV data chunk"):
        media.decode(f)


def _ogg_page_starts(data: bytes) -> list[int]:
    out, i = [], 0
    while 0 <= i < len(data):
        assert data[i:i + 4] == b"OggS"
        out.append(i)
        nseg = data[i + 26]
        i += 27 + nseg + sum(data[i + 27:i + 27 + nseg])
    return out


def test_ogg_cut_on_a_page_boundary(full_files, tmp_path):
    # every remaining page is whole and checks out: only the missing end-of-stream flag tells
    data = full_files["opus"].read_bytes()
    pages = _ogg_page_starts(data)
    assert data[pages[-1] + 5] & 4 and not data[pages[-2] + 5] & 4
    f = tmp_path / "pages.opus"
    f.write_bytes(data[: pages[len(pages) // 2]])
    with pytest.raises(TruncatedInputError, match="no end-of-stream page"):
        media.decode(f)


def test_span_inside_the_intact_part_is_fine(full_files, tmp_path):
    cut = _cut(full_files["flac"], tmp_path / "cut.flac")
    with _strict():
        assert media.decode(cut, start_s=0.5, duration_s=1.0).shape[1] == SR
    with pytest.raises(TruncatedInputError, match=r"asked for from 1\.00 s"):
        media.decode(cut, start_s=1.0, duration_s=3.0)


def test_truncated_bytes_input(full_files):
    data = full_files["flac"].read_bytes()
    with pytest.raises(TruncatedInputError, match="<bytes input>"):
        media.decode(data[: len(data) // 3])
    with _strict():
        assert media.decode(data).shape[1] == int(SR * LEN_S)


def test_flac_without_total_samples_is_not_truncated(shared_audio):
    f = shared_audio / "flac-test-files" / "45 - no total number of samples set.flac"
    with _strict():
        x = media.decode(f)
    assert x.shape[1] > 0


def _shared_files():
    from conftest import SHARED_AUDIO

    out = []
    for sub, pattern in (("flac-test-files", "*.flac"), ("sms-tools", "**/*.wav")):
        d = SHARED_AUDIO / sub
        if d.is_dir():
            out += sorted(d.glob(pattern))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("path", _shared_files(), ids=lambda p: f"{p.parent.name[:4]}-{p.name[:12]}")
def test_every_shared_file_decodes_without_partial_warning(path):
    # the FLAC testbench (incl. 45: no total sample count) and the sms-tools WAVs are
    # all complete files: none may be called truncated or damaged
    with _strict():
        x = media.decode(path)
    assert x.shape[1] > 0


# ---------------------------------------------------------------- broken ffmpeg


@pytest.fixture
def tone_wav(tmp_path, synth):
    f = tmp_path / "song.wav"
    sf.write(str(f), synth.noise(SR, channels=2, duration_s=0.5).T, SR)
    return f


@pytest.mark.parametrize("binary", ["/bin/false", "/nonexistent/ffmpeg", "script"])
def test_broken_ffmpeg_is_never_blamed_on_the_input(monkeypatch, tmp_path, tone_wav, binary):
    if binary == "script":
        fake = tmp_path / "ffmpeg"
        fake.write_text("#!/bin/sh\necho 'not ffmpeg at all'\n")
        fake.chmod(0o755)
        binary = str(fake)
    elif not Path(binary).exists() and binary == "/bin/false":
        pytest.skip("no /bin/false")
    monkeypatch.setenv("RATECONTROL_FFMPEG", binary)
    calls = [lambda: media.inspect(tone_wav), lambda: media.decode(tone_wav),
             lambda: media.decode_to_disk(tone_wav, SR, 2),
             lambda: media.inspect(tmp_path / "missing.wav")]  # not even a missing input is blamed
    for call in calls:
        with pytest.raises(FFmpegNotFoundError) as ei:
            call()
        msg = str(ei.value)
        assert msg.startswith(f"RATECONTROL_FFMPEG={binary} is not a working ffmpeg (")
        assert "unset it or point it at" in msg and "\n" not in msg and "song.wav" not in msg
        assert ei.value.exit_code == errors.FFmpegError.exit_code
    monkeypatch.delenv("RATECONTROL_FFMPEG")
    assert media.inspect(tone_wav).channels == 2  # a good ffmpeg again: no stale answer


def test_binary_check_reasons_and_caching(tmp_path):
    # white-box: the reason of each broken binary (media has no public name for it; the
    # tests above check the words users get)
    from ratecontrol.media._ffmpeg import binary_problem

    assert binary_problem(media.ffmpeg_path()) is None
    assert "no such file" in binary_problem(str(tmp_path / "nope"))
    if Path("/bin/false").exists():
        assert "exited with 1" in binary_problem("/bin/false")
    plain = tmp_path / "plain"
    plain.write_text("x")
    if os.geteuid() != 0:
        assert "not executable" in binary_problem(str(plain))
    counter = tmp_path / "count"
    fake = tmp_path / "fake"
    fake.write_text(f"#!/bin/sh\necho run >> {counter}\nexit 3\n")
    fake.chmod(0o755)
    for _ in range(3):
        assert "exited with 3" in binary_problem(str(fake))
    assert counter.read_text().count("run") == 1  # checked once per path


def test_cli_broken_ffmpeg_exit_6(monkeypatch, tone_wav, tmp_path, capsys):
    from ratecontrol import cli

    monkeypatch.setenv("RATECONTROL_FFMPEG", "/bin/false" if Path("/bin/false").exists() else "/nonexistent")
    with pytest.raises(SystemExit) as ei:
        cli.main(["encode", str(tone_wav), "--target-mos", "4", "--codec", "opus", "-o", str(tmp_path / "o.opus")])
    err = capsys.readouterr().err.strip().splitlines()
    assert ei.value.code == errors.FFmpegError.exit_code, err
    assert "not a working ffmpeg" in err[-1] and "song.wav" not in err[-1]


def test_cli_truncated_input_exit_3(full_files, tmp_path, capsys):
    from ratecontrol import cli

    cut = _cut(full_files["flac"], tmp_path / "song.flac")
    with pytest.raises(SystemExit) as ei:
        cli.main(["encode", str(cut), "--target-mos", "4", "--codec", "opus", "-o", str(tmp_path / "o.opus"),
                  "--no-cache"])
    err = capsys.readouterr().err.strip().splitlines()
    assert ei.value.code == errors.InputError.exit_code, err
    assert "truncated" in err[-1] and "--allow-partial" in err[-1]
    assert not (tmp_path / "o.opus").exists()


# ------------------------------------------------------------ wrong words (D)


def test_32_unlabelled_channels_say_what_is_wrong(tmp_path, synth):
    f = tmp_path / "ch32.wav"
    sf.write(str(f), synth.noise(SR, channels=32, duration_s=0.5).T, SR, subtype="PCM_16")
    assert media.inspect(f).channels == 32
    assert media.decode(f).shape[0] == 32  # kept as they are: fine
    for call in (lambda: media.decode(f, channels=2), lambda: media.decode_to_disk(f, SR, 2)):
        with pytest.raises(InputError, match=r"32 channels with no channel layout.*cannot downmix") as ei:
            call()
        assert "empty" not in str(ei.value) and "truncated" not in str(ei.value)


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_non_regular_files_are_refused(tmp_path, kind):
    if kind == "fifo":
        f = tmp_path / "pipe.wav"
        os.mkfifo(f)  # opening it for reading would block until a writer came
    else:
        f = Path("/dev/zero")
        if not f.exists():
            pytest.skip("no /dev/zero")
    for call in (lambda: media.inspect(f), lambda: media.decode(f), lambda: media.decode_to_disk(f, SR, 2)):
        with pytest.raises(InputError, match="not a regular file") as ei:
            call()
        assert "0 bytes" not in str(ei.value) and str(f) in str(ei.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permission bits say")
def test_unreadable_file(tmp_path, tone_wav):
    tone_wav.chmod(0)
    try:
        for call in (lambda: media.inspect(tone_wav), lambda: media.decode(tone_wav)):
            with pytest.raises(InputError, match="cannot read .*permission denied") as ei:
                call()
            assert ei.value.exit_code == errors.InputError.exit_code
    finally:
        tone_wav.chmod(0o644)


@pytest.mark.parametrize("name", ["new\nline.wav", "Input #0, wav, from 'x':.wav", "  Duration: 00:00:09.00.wav"])
def test_names_that_look_like_ffmpeg_output(tmp_path, name, synth):
    # ffmpeg prints the input's path verbatim in its stream dump; a newline used to end
    # the dump early ("no audio stream")
    f = tmp_path / name
    sf.write(str(f), synth.noise(22050, channels=2, duration_s=1.5).T, 22050)
    info = media.inspect(f)
    assert (info.sample_rate_hz, info.channels, info.codec) == (22050, 2, "pcm_s16le")
    assert info.duration_s == pytest.approx(1.5, abs=0.01)
    with _strict():
        assert media.decode(f).shape == (2, int(22050 * 1.5))


def test_symlink_to_a_file_is_fine_and_broken_link_is_not_found(tmp_path, tone_wav):
    link = tmp_path / "link.wav"
    link.symlink_to(tone_wav)
    assert media.inspect(link).channels == 2
    dead = tmp_path / "dead.wav"
    dead.symlink_to(tmp_path / "gone.wav")
    with pytest.raises(InputNotFoundError, match="not found"):
        media.inspect(dead)


def test_decode_to_disk_temp_names_and_cleanup(tmp_path, full_files):
    spool = tmp_path / "spool"
    spool.mkdir()
    media.decode_to_disk(full_files["wav"], SR, 2, directory=spool)
    with pytest.raises(TruncatedInputError):
        media.decode_to_disk(_cut(full_files["wav"], tmp_path / "cut.wav"), SR, 2, directory=spool)
    assert list(spool.iterdir()) == []


def test_a_full_disk_is_an_output_error_and_leaves_nothing(tmp_path, synth):
    """Issue 15 item 7: a 100 %-full output disk is 'the disk is full' (exit 4), not an
    ffmpeg failure or an internal error, and leaves no file behind. Needs a small
    tmpfs: skipped where this process cannot mount one (not root)."""
    import ratecontrol
    from ratecontrol.errors import OutputError

    full = tmp_path / "full"
    full.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        src = tmp_path / "in.wav"
        sf.write(src, synth.noise(48_000, 2, 8.0, 0.1).T, 48_000)
        with pytest.raises(OutputError, match="disk is full") as ei:
            ratecontrol.encode(src, full / "o.opus", target_mos=4.0, cache=False)
        assert "o.opus" in str(ei.value) and ".rc-tmp" not in str(ei.value)
        assert list(full.iterdir()) == []
    finally:
        subprocess.run(["umount", str(full)], capture_output=True)


def test_batch_fails_a_truncated_file_or_notes_it_with_allow_partial(tmp_path, synth):
    """Issue 15 item 3, batch side: a cut FLAC is a failed record (its reason says how
    to go on), or with allow_partial an encoded one whose notes carry the warning."""
    import soundfile as sf

    from ratecontrol.batch import transcode_folder

    src = tmp_path / "in"
    src.mkdir()
    full = tmp_path / "full.flac"
    sf.write(full, synth.noise(44_100, 2, 6.0, 0.1).T, 44_100, format="FLAC")
    (src / "cut.flac").write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    rep = transcode_folder(src, tmp_path / "out", target_mos=3.5, codec="opus", jobs=1, cache=False,
                           progress=False)
    (rec,) = rep.records
    assert rec.status == "failed" and "allow_partial=True" in rec.reason
    rep = transcode_folder(src, tmp_path / "out2", target_mos=3.5, codec="opus", jobs=1, cache=False,
                           progress=False, allow_partial=True)
    (rec,) = rep.records
    assert rec.status == "encoded" and any("warning:" in n for n in rec.notes)
