"""Containers with video or several streams (issue 17 part 2): the chosen audio stream
(or every one) is re-encoded in place and meets its target; the video, the other audio
streams, subtitles, chapters, languages and dispositions are stream-copied unchanged;
a container that cannot hold the pair is one clear error before any work."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import ratecontrol
from ratecontrol import errors, media
from ratecontrol.cli import main

SRT = "1\n00:00:00,500 --> 00:00:02,000\nHello\n\n2\n00:00:02,500 --> 00:00:03,500\nWorld\n"


def _ff(*args) -> bytes:
    import subprocess

    return subprocess.run([media.ffmpeg_path(), "-hide_banner", "-v", "error", "-y", *map(str, args)],
                          check=True, capture_output=True).stdout


def _make(path: Path, acodec: str, scodec: str) -> Path:
    """4 s of testsrc video (H.264 or MPEG-4 part 2), two audio streams (a beeping
    sine, English, default; pink noise, French "Commentary", comment), one English
    subtitle stream and a chapter."""
    srt = path.with_suffix(".srt")
    srt.write_text(SRT)
    meta = path.with_suffix(".ffmeta")
    meta.write_text(";FFMETADATA1\ntitle=Film\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=2000\ntitle=One\n")
    venc = "libx264" if "libx264" in media.available_encoders() else "mpeg4"
    _ff("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:d=4", "-f", "lavfi", "-i", "sine=f=440:beep_factor=4:d=4",
        "-f", "lavfi", "-i", "anoisesrc=d=4:c=pink:a=0.2:seed=7", "-i", srt, "-i", meta,
        "-map", "0", "-map", "1", "-map", "2", "-map", "3", "-map_metadata", "4", "-map_chapters", "4",
        "-c:v", venc, "-c:a", acodec, "-b:a", "192k", "-c:s", scodec,
        "-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=fra", "-metadata:s:a:1", "title=Commentary",
        "-metadata:s:s:0", "language=eng", "-disposition:a:0", "default", "-disposition:a:1", "comment", path)
    return path


@pytest.fixture(scope="module")
def films(tmp_path_factory):
    d = tmp_path_factory.mktemp("films")
    return {".mp4": _make(d / "film.mp4", "aac", "mov_text"), ".mkv": _make(d / "film.mkv", "flac", "srt")}


def _hash(path: Path, spec: str) -> bytes:
    """MD5 of one stream's packets, by stream copy (bit-identical packets, same hash)."""
    return _ff("-i", path, "-map", spec, "-c", "copy", "-f", "md5", "-")


def _streams(path: Path):
    return media.inspect(path).streams


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_audio_stream_n_is_re_encoded_and_everything_else_is_copied(films, tmp_path, ext):
    src = films[ext]
    out = tmp_path / f"small{ext}"
    res = ratecontrol.encode(src, out, target_mos=4.0, codec="opus", cache=False, audio_stream=1)
    assert res.audio_stream == 1 and [s.audio_stream for s in res.streams] == [1]
    assert res.verified and res.pooled_mos >= 4.0
    before, after = _streams(src), _streams(out)
    assert [(s.kind, s.language, s.dispositions, s.title) for s in after] == \
        [(s.kind, s.language, s.dispositions, s.title) for s in before]
    assert [s.codec for s in after] == [s.codec if s.audio_index != 1 else "opus" for s in before]
    for spec in ("0:v", "0:a:0", "0:s"):  # video, the other audio stream, subtitles: the same packets
        assert _hash(out, spec) == _hash(src, spec), spec
    assert media.inspect(out).tags.get("title") == "Film"
    assert "Chapter #0:0" in _ff_dump(out)
    # the chosen stream's own score, read back from the file
    extracted = tmp_path / "a1.mka"
    media.extract_audio(out, 1, extracted)
    ref = tmp_path / "r1.mka"
    media.extract_audio(src, 1, ref)
    assert abs(ratecontrol.score(ref, extracted).pooled_mos - res.pooled_mos) <= 0.01


def _ff_dump(path: Path) -> str:
    import subprocess

    return subprocess.run([media.ffmpeg_path(), "-hide_banner", "-i", str(path)], capture_output=True,
                          text=True).stderr


def test_all_audio_streams_each_gets_its_own_search(films, tmp_path, capsys):
    src = films[".mkv"]
    out = tmp_path / "all.mkv"
    main(["encode", str(src), "--target-mos", "4.0", "--codec", "opus", "--all-audio-streams", "--no-cache",
          "-o", str(out), "--json"])
    import json

    d = json.loads(capsys.readouterr().out)
    assert [s["audio_stream"] for s in d["streams"]] == [0, 1]
    assert all(s["verified"] and s["pooled_mos"] >= 4.0 for s in d["streams"])
    # two different signals, two searches: the beep needs far less than the noise
    assert d["streams"][0]["bitrate_kbps"] < d["streams"][1]["bitrate_kbps"]
    assert [s.codec for s in _streams(out) if s.kind == "audio"] == ["opus", "opus"]
    assert _hash(out, "0:v") == _hash(src, "0:v") and _hash(out, "0:s") == _hash(src, "0:s")


def test_default_stream_default_name_and_audio_only(films, tmp_path):
    src = tmp_path / "film.mp4"
    shutil.copy(films[".mp4"], src)
    res = ratecontrol.encode(src, target_mos=3.8, codec="aac", cache=False)
    assert Path(res.output_path).name == "film.aac.mp4" and res.audio_stream == 0  # the default-disposition one
    assert _hash(res.output_path, "0:a:1") == _hash(src, "0:a:1")
    res = ratecontrol.encode(src, tmp_path / "a.opus", target_mos=3.8, codec="opus", cache=False, audio_only=True,
                             audio_stream=1)
    info = media.inspect(res.output_path)
    assert info.other_streams == 0 and info.audio_streams == 1 and res.audio_stream == 1
    assert Path(res.input_path) == src


@pytest.mark.parametrize("codec,ext,what", [("vorbis", ".mp4", "Vorbis"), ("mp3-vbr", ".webm", "")])
def test_a_container_that_cannot_hold_the_pair_is_one_usage_error(films, tmp_path, codec, ext, what, capsys):
    out = tmp_path / f"x{ext}"
    with pytest.raises(SystemExit) as exc:
        main(["encode", str(films[".mp4"]), "--target-mos", "3.8", "--codec", codec, "--no-cache", "-o", str(out)])
    assert exc.value.code == errors.UsageError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    line = next(ln for ln in err if ln.startswith("error"))
    assert "cannot hold" in line and "--audio-only" in line and what in line
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".rc-tmp")]


def test_a_subtitle_the_container_cannot_take_is_named(films, tmp_path):
    with pytest.raises(errors.UsageError, match=r"subtitle stream 0:3 \(mov_text\).*NAME\.mp4.*audio_only=True"):
        ratecontrol.encode(films[".mp4"], tmp_path / "x.mkv", target_mos=3.8, codec="opus", cache=False)


def test_stream_options_are_checked(films, tmp_path):
    with pytest.raises(errors.UsageError, match="2 audio stream.*no audio stream 5"):
        ratecontrol.encode(films[".mkv"], tmp_path / "x.mkv", target_mos=3.8, audio_stream=5, cache=False)
    with pytest.raises(errors.UsageError, match="exclude"):
        ratecontrol.Options(audio_stream=1, all_audio_streams=True)
    with pytest.raises(errors.UsageError, match="audio_stream"):
        ratecontrol.Options(audio_stream=-1)
    with pytest.raises(errors.UsageError, match="options of encode"):  # refused, never silently ignored
        ratecontrol.select_bitrate(films[".mkv"], target_mos=3.8, audio_stream=1)


def test_batch_keeps_video_by_default_and_reports_each_mode(films, tmp_path):
    from ratecontrol.batch import transcode_folder

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(films[".mkv"], src / "film.mkv")
    kw = dict(target_mos=3.6, codec="opus", jobs=1, cache=False, progress=False)
    rep = transcode_folder(src, tmp_path / "out", **kw)
    (rec,) = rep.records
    assert rec.status == "encoded" and rec.output == "film.mkv" and rec.audio_stream == 0 and rec.other_streams == 2
    out = tmp_path / "out" / "film.mkv"
    assert _hash(out, "0:v") == _hash(src / "film.mkv", "0:v")
    assert _hash(out, "0:a:1") == _hash(src / "film.mkv", "0:a:1")
    assert any("video files: 1: 1 re-encoded in place" in ln for ln in rep.summary_lines())
    again = transcode_folder(src, tmp_path / "out", **kw)  # resumes: the output is its own name
    assert again.records[0].resumed
    rep = transcode_folder(src, tmp_path / "out2", video="audio", **kw)
    (rec,) = rep.records
    assert rec.status == "encoded" and rec.output == "film.opus" and any("video='audio'" in n for n in rec.notes)
    rep = transcode_folder(src, tmp_path / "out3", video="skip", **kw)
    (rec,) = rep.records
    assert rec.status == "skipped" and rec.options == {"video": "keep"} and "--" not in rec.reason
    assert any("1 skipped (video='skip')" in ln for ln in rep.summary_lines())
    from ratecontrol.cli._common import spell_flag

    assert any("1 skipped (--video skip)" in ln for ln in rep.summary_lines(spell=spell_flag))
    assert any(ln.endswith("(--video keep)") for ln in [rec.reason_as(spell_flag)])
    with pytest.raises(errors.UsageError):
        transcode_folder(src, tmp_path / "out4", video="copy", **kw)


def test_batch_re_encodes_every_audio_stream_when_asked(films, tmp_path):
    from ratecontrol.batch import transcode_folder

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(films[".mkv"], src / "film.mkv")
    kw = dict(target_mos=3.6, codec="opus", jobs=1, cache=False, progress=False)
    rep = transcode_folder(src, tmp_path / "out", all_audio_streams=True, **kw)
    (rec,) = rep.records
    assert rec.status == "encoded" and rec.output == "film.mkv", rec.reason
    assert rec.encoded_streams == (0, 1) and rec.audio_stream == 0 and rec.input_audio_streams == 2
    out = tmp_path / "out" / "film.mkv"
    assert [s.codec for s in _streams(out) if s.kind == "audio"] == ["opus", "opus"]
    assert _hash(out, "0:v") == _hash(src / "film.mkv", "0:v") and _hash(out, "0:s") == _hash(src / "film.mkv", "0:s")
    per = [n for n in rec.notes if n.startswith("audio stream ")]
    assert len(per) == 2 and all("MOS" in n for n in per)
    assert all(float(n.rsplit("MOS ", 1)[1]) >= 3.6 for n in per)
    # same settings: resumed; without all_audio_streams the film is redone (its output differs)
    assert transcode_folder(src, tmp_path / "out", all_audio_streams=True, **kw).records[0].resumed
    assert not transcode_folder(src, tmp_path / "out", **kw).records[0].resumed
    with pytest.raises(errors.UsageError, match="all_audio_streams"):
        transcode_folder(src, tmp_path / "out5", all_audio_streams=True, video="audio", **kw)


def test_batch_cli_refuses_all_audio_streams_without_keep_in_its_own_flags(films, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(films[".mkv"], src / "film.mkv")
    with pytest.raises(SystemExit) as exc:
        main(["batch", str(src), str(tmp_path / "out"), "--target-mos", "3.6", "--codec", "opus",
              "--all-audio-streams", "--video", "audio", "--no-cache", "--no-progress"])
    assert exc.value.code == errors.UsageError.exit_code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.endswith("(--video keep)") and "Traceback" not in err, err


SURROUND = ("aevalsrc=0.3*sin(440*2*PI*t)|0.3*sin(550*2*PI*t)|0.3*sin(660*2*PI*t)|0.3*sin(50*2*PI*t)"
            "|0.2*random(0)-0.1|0.2*random(1)-0.1:c=5.1:d=4:s=48000")
NOISE_VIDEO = "nullsrc=s=160x120:r=10:d=4,geq=random(1)*255:128:128"  # ~1 Mbps of MPEG-4 at q 2


def test_batch_lossy_rule_uses_the_audio_streams_own_bitrate_and_channels(tmp_path):
    """A film's container bitrate is mostly video and its audio may be 5.1: the lossy
    rule (never above the source's bitrate; copied when even the lowest rung for its
    channels is above it) reads the re-encoded stream itself."""
    from ratecontrol.batch import transcode_folder

    src = tmp_path / "in"
    src.mkdir()
    _ff("-f", "lavfi", "-i", NOISE_VIDEO, "-f", "lavfi", "-i", "anoisesrc=d=4:c=pink:a=0.2:seed=7",
        "-map", "0", "-map", "1", "-c:v", "mpeg4", "-q:v", "2", "-c:a", "aac", "-b:a", "64k", "-ac", "2", src / "film.mkv")
    # 5.1 Opus at 36 kbps: above the stereo ladder's lowest rung (16k), below the 5.1 one's (40k)
    _ff("-f", "lavfi", "-i", NOISE_VIDEO, "-f", "lavfi", "-i", SURROUND, "-map", "0", "-map", "1",
        "-c:v", "mpeg4", "-q:v", "2", "-c:a", "libopus", "-b:a", "36k", src / "film51.mkv")
    _ff("-f", "lavfi", "-i", SURROUND, "-c:a", "libopus", "-b:a", "36k", src / "music51.opus")
    info = media.inspect(src / "film.mkv")
    assert info.bitrate_kbps is None  # Matroska gives no stream figure; the container's is the video's
    rep = transcode_folder(src, tmp_path / "out", target_mos=3.6, codec="opus", jobs=1, cache=False, progress=False)
    by = {r.input: r for r in rep.records}
    film = by["film.mkv"]
    assert film.status == "encoded", film.reason
    assert 50 < film.input_kbps < 80 and film.bitrate_kbps <= 64 and not film.lossless
    for name, which in (("film51.mkv", "audio stream 0, "), ("music51.opus", "")):
        r = by[name]
        assert r.status == "kept" and f"({which}opus, 6 ch, ~" in r.reason and "for 6 channels" in r.reason, r.reason
        assert (tmp_path / "out" / name).read_bytes() == (src / name).read_bytes()


def test_audio_delayed_against_the_video_stays_delayed(tmp_path):
    src = tmp_path / "late.mkv"
    _ff("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:d=4", "-itsoffset", "0.5", "-f", "lavfi", "-i",
        "sine=f=440:beep_factor=4:d=3", "-map", "0", "-map", "1", "-c:v", "mpeg4", "-c:a", "flac", src)
    assert [s.start_s for s in _streams(src)] == [0.0, 0.5]
    res = ratecontrol.encode(src, tmp_path / "out.mkv", target_mos=3.8, codec="opus", cache=False)
    video, audio = _streams(res.output_path)
    assert audio.codec == "opus" and abs((audio.start_s - video.start_s) - 0.5) <= 0.01


def test_the_default_disposition_picks_the_stream():
    from ratecontrol.media._inspect import _parse_streams

    dump = ("Input #0, matroska,webm, from '<input>':\n"
            "  Stream #0:0: Video: h264 (High), yuv420p, 1920x1080, 24 fps (default)\n"
            "  Stream #0:1(eng): Audio: ac3, 48000 Hz, 5.1(side), fltp, 448 kb/s\n"
            "    Metadata:\n      title           : Director's commentary\n"
            "  Stream #0:2(deu): Audio: aac (LC), 48000 Hz, stereo, fltp, start 0.021000 (default) (hearing impaired)\n"
            "  Stream #0:3: Attachment: ttf\n")
    streams = _parse_streams(dump)
    assert [(s.kind, s.audio_index, s.language) for s in streams] == [
        ("video", None, None), ("audio", 0, "eng"), ("audio", 1, "deu"), ("attachment", None, None)]
    assert streams[1].title == "Director's commentary" and streams[2].start_s == 0.021
    assert streams[2].dispositions == ("default", "hearing_impaired")
    info = media.MediaInfo(path=Path("x"), duration_s=1.0, sample_rate_hz=48000, channels=2, codec="ac3",
                           bitrate_kbps=448.0, lossless=False, format_name="matroska", bits_per_sample=None,
                           has_cover_art=False, streams=streams)
    assert media.default_audio_stream(info) == 1


def test_audio_only_checks_its_output_once(films, tmp_path, monkeypatch):
    """issue 27 item 3: the output of an audio_only encode is claimed once, before the
    copy-out, not again by encode_audio after it (a spy on the real claim; the encode is
    real)."""
    from ratecontrol.probing import output as output_mod

    claims: list[Path] = []
    real = output_mod.claim_output

    def spy(path, **kw):
        claims.append(Path(path))
        return real(path, **kw)

    monkeypatch.setattr(output_mod, "claim_output", spy)
    src = tmp_path / "film.mkv"
    shutil.copy(films[".mkv"], src)
    res = ratecontrol.encode(src, tmp_path / "a.opus", target_mos=3.8, codec="opus", cache=False, audio_only=True)
    assert Path(res.output_path) == tmp_path / "a.opus" and res.audio_stream == 0
    assert claims == [tmp_path / "a.opus"]
