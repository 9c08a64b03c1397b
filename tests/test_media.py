"""ratecontrol.media against the real ffmpeg: discovery, probe, decode, encode, round trip."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import butter, resample_poly, sosfiltfilt

from ratecontrol import media
from ratecontrol.align import estimate_delay
from ratecontrol.errors import (
    EmptyAudioError,
    FFmpegError,
    FFmpegNotFoundError,
    InputNotFoundError,
    NotAudioError,
    OutputError,
    UsageError,
)
from ratecontrol.media import _ffmpeg
from ratecontrol.presets import load_preset

# 16-bit PCM quantisation step; a WAV written and read back is exact to half of it
Q16 = 1.0 / 32768


def _write(path: Path, audio: np.ndarray, sr: int, subtype: str = "PCM_16") -> Path:
    sf.write(str(path), audio.T, sr, subtype=subtype)
    return path


def _encode_source(src, out, preset, rung, metadata=None, duration_s=None):
    """``src`` decoded and encoded through media.encode_array (the one encode path),
    keeping its tags and cover art (``tags_from``)."""
    x = media.decode(src, duration_s=duration_s)
    return media.encode_array(x, media.inspect(src).sample_rate_hz, preset, rung, out, metadata=metadata,
                              tags_from=src)


# --------------------------------------------------------------------------- ffmpeg


def test_ffmpeg_discovery():
    path = media.ffmpeg_path()
    assert Path(path).is_file() and os.access(path, os.X_OK)
    assert re.match(r"^\d+(\.\d+)+$|^N-", media.ffmpeg_version())
    enc = media.available_encoders()
    assert {"libopus", "libmp3lame", "aac", "libvorbis", "flac"} <= enc
    assert "not-an-encoder" not in enc


def test_ratecontrol_ffmpeg_env_that_does_not_work_is_an_error(monkeypatch, tmp_path):
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("RATECONTROL_FFMPEG", str(fake))
    _ffmpeg.clear_cache()
    try:
        with pytest.raises(FFmpegNotFoundError, match="RATECONTROL_FFMPEG"):
            media.ffmpeg_path()
    finally:
        monkeypatch.delenv("RATECONTROL_FFMPEG")
        _ffmpeg.clear_cache()
    assert Path(media.ffmpeg_path()).is_file()


def test_ratecontrol_ffmpeg_env_wins(monkeypatch):
    real = media.ffmpeg_path()
    monkeypatch.setenv("RATECONTROL_FFMPEG", real)
    _ffmpeg.clear_cache()
    try:
        assert media.ffmpeg_path() == real
    finally:
        monkeypatch.delenv("RATECONTROL_FFMPEG")
        _ffmpeg.clear_cache()


def test_ffmpeg_error_carries_command_and_stderr_tail(tmp_path, synth):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nencoder: libopus\nformat: ogg\nextension: .opus\n"
        "rungs:\n  - {label: x, nominal_kbps: 64, options: {\"b:a\": 64k, "
        "\"frame_duration\": 7}}\n"
    )
    with pytest.raises(FFmpegError) as ei:
        media.encode_array(synth.tone(48000), 48000, str(bad), 0, tmp_path / "o.opus")
    assert ei.value.cmd and ei.value.cmd[0] == media.ffmpeg_path()
    assert ei.value.stderr
    assert "\n" not in str(ei.value)


# --------------------------------------------------------------- probe and decode


@pytest.mark.parametrize("sr", [22050, 44100, 48000, 96000])
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_probe_and_decode_wav(tmp_path, synth, sr, channels):
    x = 0.9 * synth.noise(sr, channels, duration_s=0.5, amplitude=0.3)
    f = _write(tmp_path / "x.wav", x, sr)
    info = media.inspect(f)
    assert info.sample_rate_hz == sr
    assert info.channels == channels
    assert info.codec == "pcm_s16le" and info.lossless and info.bits_per_sample == 16
    assert info.duration_s == pytest.approx(0.5, abs=0.011)
    assert not info.has_cover_art
    y = media.decode(f)
    assert y.dtype == np.float32 and y.shape == x.shape
    # channel order and values survive: 16-bit quantisation error only
    assert np.max(np.abs(y - x)) <= Q16


def test_decode_resamples_without_shifting(tmp_path, synth):
    # band-limited to 16 kHz (zero-phase) so the comparison is not about how each
    # resampler treats the last few kHz below Nyquist, where their cutoffs differ
    sos = butter(8, 16000, fs=44100, output="sos")
    x = sosfiltfilt(sos, synth.transients(44100, 2, duration_s=1.0), axis=1)
    x = x.astype(np.float32)
    f = _write(tmp_path / "x.wav", x, 44100, subtype="FLOAT")
    y = media.decode(f, sample_rate_hz=48000)
    assert y.shape == (2, 48000)
    ref = resample_poly(x, 160, 147, axis=1)
    assert estimate_delay(ref, y, 200) == 0
    # same signal up to resampler differences (both are high-quality sincs): -40 dB
    err = np.sqrt(np.mean((ref[:, 500:-500] - y[:, 500:-500]) ** 2))
    assert err < 0.01 * np.sqrt(np.mean(ref**2))


def test_decode_channel_mixing(tmp_path, synth):
    x = synth.noise(44100, 6, duration_s=0.25)
    f = _write(tmp_path / "x6.wav", x, 44100, subtype="FLOAT")
    assert media.decode(f).shape == (6, x.shape[1])
    assert media.decode(f, channels=2).shape == (2, x.shape[1])
    st = _write(tmp_path / "st.wav", synth.noise(44100, 2, duration_s=0.25), 44100, "FLOAT")
    mono = media.decode(st, channels=1)
    assert mono.shape == (1, x.shape[1])
    full = media.decode(st)
    # ffmpeg's standard stereo -> mono matrix: (L + R) * 0.7071 (centre mix -3 dB), not
    # the plain average
    lr = full.sum(axis=0)
    gain = float(np.dot(mono[0], lr) / np.dot(lr, lr))
    assert gain == pytest.approx(np.sqrt(0.5), abs=0.01)
    assert np.max(np.abs(mono[0] - gain * lr)) < 1e-4


def test_decode_span_is_sample_accurate(tmp_path, synth):
    x = synth.noise(48000, 2, duration_s=2.0)
    f = _write(tmp_path / "x.wav", x, 48000, subtype="FLOAT")
    y = media.decode(f, start_s=0.5, duration_s=1.0)
    assert y.shape == (2, 48000)
    assert np.array_equal(y, x[:, 24000:72000])


def test_decode_bytes(tmp_path, synth):
    x = synth.tone(44100, 2, duration_s=0.3)
    f = _write(tmp_path / "x.flac", x, 44100)
    y = media.decode(f.read_bytes())
    assert y.shape == x.shape and np.max(np.abs(y - x)) <= Q16


def test_decode_argument_errors(tmp_path, synth):
    f = _write(tmp_path / "x.wav", synth.tone(8000), 8000)
    with pytest.raises(UsageError):
        media.decode(f, sample_rate_hz=0)
    with pytest.raises(UsageError):
        media.decode(f, channels=0)
    with pytest.raises(EmptyAudioError):
        media.decode(f, start_s=5.0)  # past the end: nothing to decode


@pytest.mark.parametrize("name", ["a:b.wav", "-dash.wav", "spaced name é.wav"])
def test_awkward_file_names(tmp_path, synth, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    x = synth.tone(16000, 1, 0.2)
    _write(Path(name), x, 16000)
    assert media.inspect(name).sample_rate_hz == 16000
    assert media.decode(name).shape == x.shape
    out = "c:d.mp3" if ":" in name else "-out.mp3"
    _encode_source(name, out, "mp3", 0)
    assert media.inspect(out).codec == "mp3"


# ------------------------------------------------------------------- bad inputs


def test_missing_file(tmp_path):
    for fn in (media.inspect, media.decode):
        with pytest.raises(InputNotFoundError, match="not found"):
            fn(tmp_path / "nope.flac")


def test_directory(tmp_path):
    for fn in (media.inspect, media.decode):
        with pytest.raises(InputNotFoundError, match="directory"):
            fn(tmp_path)


def test_text_file(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("these are not the samples you are looking for\n" * 20)
    for fn in (media.inspect, media.decode):
        with pytest.raises(NotAudioError, match="notes.txt") as ei:
            fn(f)
        assert "\n" not in str(ei.value)


def test_image_without_audio(tmp_path):
    f = tmp_path / "img.png"
    # a real PNG written by ffmpeg itself (no audio stream)
    _ffmpeg.run_args(["-hide_banner", "-f", "lavfi", "-i", "color=c=red:s=16x16",
                      "-frames:v", "1", "-y", str(f)])
    for fn in (media.inspect, media.decode):
        with pytest.raises(NotAudioError, match="no audio stream"):
            fn(f)


def test_audio_codec_without_decoder(tmp_path, synth):
    f = _write(tmp_path / "x.wav", synth.tone(8000), 8000)
    data = bytearray(f.read_bytes())
    assert data[12:16] == b"fmt " and data[20:22] == b"\x01\x00"  # WAVE_FORMAT_PCM
    data[20:22] = b"\x34\x12"  # a format tag no decoder knows
    f.write_bytes(bytes(data))
    for fn in (media.inspect, media.decode):
        with pytest.raises(NotAudioError, match=r"no decoder .*0x1234.*/x\.wav"):
            fn(f)


def test_zero_length_file(tmp_path):
    f = tmp_path / "empty.wav"
    f.write_bytes(b"")
    for fn in (media.inspect, media.decode):
        with pytest.raises(EmptyAudioError, match="empty"):
            fn(f)


@pytest.mark.parametrize("ext,cut", [("wav", 44), ("flac", 200), ("flac", 4)])
def test_truncated_to_header(tmp_path, synth, ext, cut):
    full = _write(tmp_path / f"full.{ext}", synth.noise(44100, 2, 1.0), 44100)
    f = tmp_path / f"cut.{ext}"
    f.write_bytes(full.read_bytes()[:cut])
    for fn in (media.inspect, media.decode):
        with pytest.raises(EmptyAudioError, match="cut"):
            fn(f)


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_truncated_mid_stream_is_refused_unless_allowed(tmp_path, synth, ext):
    from ratecontrol.errors import RatecontrolWarning, TruncatedInputError

    x = synth.noise(44100, 2, 1.0)
    full = _write(tmp_path / f"full.{ext}", x, 44100)
    f = tmp_path / f"half.{ext}"
    f.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(TruncatedInputError, match=r"half\.%s.*allow_partial=True" % ext):
        media.decode(f)
    with pytest.warns(RatecontrolWarning, match="allow_partial"):
        y = media.decode(f, allow_partial=True)
    assert 0.3 * x.shape[1] < y.shape[1] < 0.7 * x.shape[1]
    assert np.max(np.abs(y - x[:, : y.shape[1]])) <= Q16


# -------------------------------------------------------------- shared FLAC files


def _flac_files():
    from conftest import SHARED_AUDIO

    d = SHARED_AUDIO / "flac-test-files"
    return sorted(d.glob("*.flac")) if d.is_dir() else []


@pytest.mark.parametrize("path", _flac_files(), ids=lambda p: p.name[:2])
def test_every_shared_flac_file_probes_and_decodes(path):
    # All 51 files of the FLAC decoder testbench decode with this ffmpeg (none is
    # refused); ~0.1-0.3 s each.
    info = media.inspect(path)
    assert info.codec == "flac" and info.lossless
    x = media.decode(path)
    assert x.shape[0] == info.channels
    assert x.shape[1] / info.sample_rate_hz == pytest.approx(info.duration_s, abs=0.011)
    assert 0.01 < float(np.max(np.abs(x))) <= 1.0
    num = int(path.name[:2])
    expect = {19: 35467, 20: 39000, 21: 22050, 28: 96000, 37: 96000}
    if num in expect:
        assert info.sample_rate_hz == expect[num]
    expect_ch = {38: 3, 39: 4, 40: 5, 41: 6, 42: 7, 43: 8, 60: 1}
    if num in expect_ch:
        assert info.channels == expect_ch[num]
    expect_bits = {22: 12, 23: 8, 28: 24, 37: 20, 62: 20, 63: 24}
    if num in expect_bits:
        assert info.bits_per_sample == expect_bits[num]
    if num in (56, 57, 58):
        assert info.has_cover_art


def test_flac_without_total_samples_gets_duration_from_decoding(shared_audio):
    f = shared_audio / "flac-test-files" / "45 - no total number of samples set.flac"
    info = media.inspect(f)
    x = media.decode(f)
    assert info.duration_s == pytest.approx(x.shape[1] / info.sample_rate_hz, abs=1e-3)


def test_downmix_surround_to_stereo(shared_audio):
    f = shared_audio / "flac-test-files" / "41 - 6 channels (5.1).flac"
    assert media.decode(f, channels=2).shape[0] == 2


# ------------------------------------------------------------------------ encode


def test_encode_keeps_tags_and_cover_art(shared_audio, tmp_path):
    src = shared_audio / "flac-test-files" / "56 - JPG PICTURE.flac"
    note = "ratecontrol opus 96k; mos=4.31"
    for name in ("mp3", "aac", "opus"):
        p = load_preset(name)
        out = tmp_path / f"out{p.extension}"
        res = _encode_source(src, out, p, p.rungs[2], metadata={"title": "Jpg test", "comment": note})
        assert res.path == out and res.size_bytes == out.stat().st_size
        info = media.inspect(out)
        assert info.tags.get("title") == "Jpg test"
        assert info.tags.get("comment") == note
        # mp3 (ID3 APIC), m4a (covr) and Ogg (METADATA_BLOCK_PICTURE) keep the picture
        assert info.has_cover_art
        assert info.cover_art_codec == "mjpeg"
    assert sorted(os.listdir(tmp_path)) == ["out.m4a", "out.mp3", "out.opus"]


def _parse_picture_block(block: bytes) -> dict:
    """A FLAC PICTURE block body (RFC 9639 section 8.8) as a dict."""
    import struct

    ptype, mlen = struct.unpack(">II", block[:8])
    pos = 8 + mlen
    mime = block[8:pos].decode("ascii")
    (dlen,) = struct.unpack(">I", block[pos:pos + 4])
    desc = block[pos + 4:pos + 4 + dlen]
    pos += 4 + dlen
    width, height, depth, colours, size = struct.unpack(">IIIII", block[pos:pos + 20])
    data = block[pos + 20:pos + 20 + size]
    assert len(data) == size
    return {"type": ptype, "mime": mime, "description": desc, "width": width,
            "height": height, "depth": depth, "colours": colours, "data": data}


def _flac_picture(path: Path) -> dict:
    """The first PICTURE metadata block of a FLAC file, read without ffmpeg."""
    d = path.read_bytes()
    assert d[:4] == b"fLaC"
    pos = 4
    while True:
        head, n = d[pos], int.from_bytes(d[pos + 1:pos + 4], "big")
        if head & 0x7F == 6:
            return _parse_picture_block(d[pos + 4:pos + 4 + n])
        pos += 4 + n
        assert not head & 0x80, f"{path} has no PICTURE block"


def _ogg_comments(path: Path) -> list[bytes]:
    """The Vorbis comments of the (single) stream of an Ogg file, read without ffmpeg:
    the second packet is OpusTags (RFC 7845 5.2) or the Vorbis comment header."""
    d = path.read_bytes()
    packets, cur, pos = [], [], 0
    while pos < len(d) and len(packets) < 2:
        assert d[pos:pos + 4] == b"OggS"
        nseg = d[pos + 26]
        lacing = d[pos + 27:pos + 27 + nseg]
        pos += 27 + nseg
        for lace in lacing:
            cur.append(d[pos:pos + lace])
            pos += lace
            if lace < 255:  # a lacing value under 255 ends the packet (RFC 3533)
                packets.append(b"".join(cur))
                cur = []
    tags = packets[1]
    for magic in (b"OpusTags", b"\x03vorbis"):
        if tags.startswith(magic):
            pos = len(magic)
            break
    else:
        raise AssertionError(f"no comment header in {path}: {tags[:16]!r}")
    vendor_len = int.from_bytes(tags[pos:pos + 4], "little")
    pos += 4 + vendor_len
    count = int.from_bytes(tags[pos:pos + 4], "little")
    pos += 4
    out = []
    for _ in range(count):
        n = int.from_bytes(tags[pos:pos + 4], "little")
        out.append(tags[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


def _ogg_picture(path: Path) -> dict:
    import base64

    pics = [c.split(b"=", 1)[1] for c in _ogg_comments(path)
            if c.split(b"=", 1)[0].upper() == b"METADATA_BLOCK_PICTURE"]
    assert len(pics) == 1, f"{len(pics)} METADATA_BLOCK_PICTURE comments in {path}"
    return _parse_picture_block(base64.b64decode(pics[0], validate=True))


def _flac_with_png_cover(tmp_path: Path, synth, side_px: int) -> Path:
    """A 1-s FLAC whose attached picture is a random-noise PNG (incompressible, so the
    PNG is about side_px**2 * 3 bytes), attached by ffmpeg."""
    import ffmpeg
    from PIL import Image

    pixels = np.random.default_rng(7).integers(0, 256, (side_px, side_px, 3), np.uint8)
    png = tmp_path / "cover.png"
    Image.fromarray(pixels).save(png, compress_level=1)
    wav = _write(tmp_path / "src.wav", synth.tone(44100, 2, 1.0), 44100)
    src = tmp_path / "src.flac"
    a, v = ffmpeg.input(str(wav)), ffmpeg.input(str(png))
    _ffmpeg.run(ffmpeg.output(a["a:0"], v["v:0"], str(src), acodec="flac", vcodec="copy",
                              **{"disposition:v:0": "attached_pic"}), what="test cover")
    return src


@pytest.mark.parametrize("source", ["56 - JPG PICTURE.flac", "57 - PNG PICTURE.flac",
                                    "synth-png-500k"])
def test_ogg_outputs_keep_cover_as_metadata_block_picture(source, shared_audio, tmp_path,
                                                          synth):
    if source.startswith("synth"):
        # 410 x 410 noise = ~505 KB PNG: a large cover must survive too
        src = _flac_with_png_cover(tmp_path, synth, 410)
    else:
        src = shared_audio / "flac-test-files" / source
    want = _flac_picture(src)
    if source.startswith("synth"):
        assert len(want["data"]) > 480_000
    assert want["mime"] in ("image/jpeg", "image/png")
    for name in ("opus", "vorbis"):
        p = load_preset(name)
        out = tmp_path / f"out{p.extension}"
        _encode_source(src, out, p, p.rungs[1], duration_s=1.0, metadata={"title": "with cover"})
        got = _ogg_picture(out)
        assert got["type"] == 3  # front cover
        assert got["data"] == want["data"]  # copied, not re-encoded
        assert got["mime"] == want["mime"]
        assert (got["width"], got["height"]) == (want["width"], want["height"])
        assert got["depth"] == 24 and got["description"] == b""
        # ffmpeg (like players) reads it back as the file's cover; other tags intact
        info = media.inspect(out)
        assert info.has_cover_art and info.tags["title"] == "with cover"


def test_ogg_cover_from_gif_becomes_png(shared_audio, tmp_path):
    src = shared_audio / "flac-test-files" / "58 - GIF PICTURE.flac"
    out = tmp_path / "out.opus"
    _encode_source(src, out, "opus", "64k", duration_s=1.0)
    got = _ogg_picture(out)
    assert got["type"] == 3 and got["mime"] == "image/png"
    assert got["data"].startswith(b"\x89PNG\r\n\x1a\n")
    assert (got["width"], got["height"]) == (1920, 1080)


def test_ogg_output_without_cover_has_no_picture_tag(tmp_path, synth):
    src = _write(tmp_path / "src.wav", synth.tone(44100, 2, 1.0), 44100)
    out = tmp_path / "out.ogg"
    _encode_source(src, out, "vorbis", 0)
    assert not [c for c in _ogg_comments(out) if c.upper().startswith(b"METADATA_BLOCK")]
    assert not media.inspect(out).has_cover_art


def test_encode_copies_source_tags(tmp_path, synth):
    src = tmp_path / "src.flac"
    x = synth.tone(44100, 2, 1.0)
    # write a FLAC with tags through ffmpeg itself
    media.encode_array(x, 44100, _flac_preset(tmp_path), 0, src,
                       metadata={"artist": "Some Artist", "album": "A=B;C#D",
                                 "COMMENT": "line one\nline two"})
    assert media.inspect(src).tags["comment"] == "line one\nline two"
    out = tmp_path / "out.mp3"
    _encode_source(src, out, "mp3", "128k")
    tags = media.inspect(out).tags
    assert tags["artist"] == "Some Artist" and tags["album"] == "A=B;C#D"
    assert tags["comment"] == "line one\nline two"
    # our metadata overrides a source tag of the same name (keys are case-insensitive)
    _encode_source(src, out, "opus", "64k", metadata={"comment": "ratecontrol"})
    tags = media.inspect(out).tags
    assert tags["artist"] == "Some Artist"
    assert [v for k, v in tags.items() if k.lower() == "comment"] == ["ratecontrol"]


def _flac_preset(tmp_path: Path):
    f = tmp_path / "flac.yaml"
    f.write_text("name: flac\nencoder: flac\nformat: flac\nextension: .flac\n"
                 "rungs:\n  - {label: lossless, nominal_kbps: 1000, options: {}}\n")
    return load_preset(f)


def test_encode_failure_leaves_no_file(tmp_path, synth):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nencoder: libopus\nformat: ogg\nextension: .opus\n"
        "rungs:\n  - {label: x, nominal_kbps: 64, options: {\"b:a\": 64k, "
        "\"frame_duration\": 7}}\n"
    )
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(FFmpegError):
        media.encode_array(synth.tone(48000), 48000, str(bad), 0, out_dir / "o.opus")
    assert list(out_dir.iterdir()) == []


def test_encode_replaces_existing_output_atomically(tmp_path, synth):
    out = tmp_path / "o.mp3"
    out.write_bytes(b"old")
    media.encode_array(synth.tone(44100, 2), 44100, "mp3", "64k", out)
    assert media.inspect(out).codec == "mp3"
    assert [p.name for p in tmp_path.iterdir()] == ["o.mp3"]


def test_encode_output_errors(tmp_path, synth):
    x = synth.tone(44100)
    src = _write(tmp_path / "x.wav", x, 44100)
    with pytest.raises(OutputError, match="is an input of this run"):
        media.encode_array(x, 44100, "mp3", 0, src, tags_from=src)
    with pytest.raises(OutputError, match="does not exist"):
        media.encode_array(x, 44100, "mp3", 0, tmp_path / "no" / "x.mp3")


def test_media_writes_check_outputs_by_the_publish_rule(tmp_path, synth):
    """media's writes check their output where every output is checked
    (fsutil.claim_output): the same refusals, word for word, a hard link to the
    source included, and a claimed Destination keeps its rule to the final move."""
    from ratecontrol import fsutil

    x = synth.tone(44100)
    src = _write(tmp_path / "x.wav", x, 44100)
    link = tmp_path / "link.wav"
    os.link(src, link)
    folder = tmp_path / "d.mp3"
    folder.mkdir()
    for bad in (link, folder, tmp_path / "no" / "x.mp3"):
        with pytest.raises(OutputError) as rule:
            fsutil.claim_output(bad, overwrite=True, inputs=(src,))
        with pytest.raises(OutputError) as got:
            media.encode_array(x, 44100, "mp3", 0, bad, tags_from=src)
        assert str(got.value) == str(rule.value)
    out = tmp_path / "o.mp3"
    dest = fsutil.claim_output(out, overwrite=False)
    with media.StreamedEncode(x, 44100, "mp3", 0, dest, decode_back=False) as job:
        out.write_bytes(b"another run's file")  # appeared while this encode ran
        with pytest.raises(OutputError, match="appeared"):
            job.finish()
    assert out.read_bytes() == b"another run's file"


def test_encode_array_channels_and_rate(tmp_path, synth):
    out = tmp_path / "o.opus"
    media.encode_array(synth.noise(44100, 2, 1.0)[:1], 44100, "opus", "64k", out)
    info = media.inspect(out)
    assert info.channels == 1 and info.sample_rate_hz == 48000
    assert info.duration_s == pytest.approx(1.0, abs=0.03)
    # the array's rate (the rate the search probed at); a preset's forced rate wins
    x = synth.noise(32000, 2, 0.5)
    out2 = tmp_path / "o.m4a"
    media.encode_array(x, 32000, "aac", "96k", out2)
    assert media.inspect(out2).sample_rate_hz == 32000
    media.encode_array(x, 32000, "opus", "64k", out)
    assert media.inspect(out).sample_rate_hz == 48000


def test_encode_surround_with_every_encoder(shared_audio, tmp_path):
    # FLAC 5.1 decodes as "5.1(side)", which libopus refuses: decoded into the layout the
    # encoder takes (as probing/track.py does); MP3 gets the six channels and downmixes
    src = shared_audio / "flac-test-files" / "41 - 6 channels (5.1).flac"
    info = media.inspect(src)
    for name, ch in (("opus", 6), ("vorbis", 6), ("aac", 6), ("mp3", 2)):
        p = load_preset(name)
        out = tmp_path / f"o{p.extension}"
        layout = media.target_layout(info.channel_layout, 6, p.encoder)[0] if p.max_channels > 2 else None
        x = media.decode(src, duration_s=1.0, layout=layout)
        media.encode_array(x, info.sample_rate_hz, p, 0, out)
        assert media.inspect(out).channels == ch


def test_encode_array_rejects_bad_audio(tmp_path):
    out = tmp_path / "o.mp3"
    with pytest.raises(UsageError):
        media.encode_array(np.zeros((44100, 2), np.float32), 44100, "mp3", 0, out)
    with pytest.raises(UsageError):
        media.encode_array(np.full((1, 100), np.nan, np.float32), 44100, "mp3", 0, out)
    with pytest.raises(EmptyAudioError):
        media.encode_array(np.zeros((1, 0), np.float32), 44100, "mp3", 0, out)
    assert not out.exists()


@pytest.mark.parametrize("name,rung", [("mp3", "128k"), ("mp3-vbr", "V5"), ("opus", "64k"),
                                       ("vorbis", "q3"), ("aac", "96k")])
def test_probe_lossy_outputs(tmp_path, synth, name, rung):
    p = load_preset(name)
    res = media.encode_array(synth.transients(44100, 2, 3.0), 44100, p, rung,
                             tmp_path / f"o{p.extension}")
    info = media.inspect(res.path)
    assert not info.lossless and info.bits_per_sample is None
    assert info.channels == 2 and info.duration_s == pytest.approx(3.0, abs=0.03)
    assert info.sample_rate_hz == (p.sample_rate_hz or 44100)
    # what probe reports is what the file spends (within container overhead)
    assert info.bitrate_kbps == pytest.approx(res.bitrate_kbps, rel=0.1)


# --------------------------------------------------------------------- roundtrip


def test_roundtrip_shape_size_and_sanity(synth):
    x = synth.transients(44100, 2, 1.0)
    y, size = media.roundtrip(x, 44100, "opus", "128k", return_size=True)
    assert y.shape == x.shape and y.dtype == np.float32
    # 128 kbps VBR for one second: order of 16 kB (VBR spends more on noise bursts)
    assert 4_000 < size < 40_000
    # a high rung reproduces the waveform (Opus codes noise perceptually, so the
    # sample-level match on noise bursts is ~8 dB SNR, i.e. correlation ~0.9, not more)
    assert np.corrcoef(x.ravel(), y.ravel())[0, 1] > 0.85
    info = media.roundtrip_info(x, 44100, "opus", "16k")
    assert info.audio.shape == x.shape
    assert info.size_bytes < size
    assert info.bitrate_kbps == pytest.approx(info.size_bytes * 8 / 1000, rel=1e-9)


def test_roundtrip_mono_and_short_input(synth):
    x = synth.transients(48000, 1, 0.2)
    for name in ("mp3", "aac", "vorbis"):
        y = media.roundtrip(x, 48000, name, 0)
        assert y.shape == x.shape


def test_decode_aligned_matches_a_finished_encode(tmp_path, synth):
    x = synth.transients(44100, 2, 1.5)
    for name in ("opus", "mp3", "aac"):
        p = load_preset(name)
        out = tmp_path / f"o{p.extension}"
        media.encode_array(x, 44100, p, "128k", out)
        y = media.decode_aligned(out, p, 44100, 2, x.shape[1])
        assert y.shape == x.shape and y.dtype == np.float32
        assert abs(estimate_delay(x, y, 3000)) <= 1, name


@pytest.mark.parametrize("extra_s", [-0.3, 0.0, 0.7])
def test_decode_aligned_blocks_equal_the_whole_decode(tmp_path, synth, extra_s):
    # streamed in blocks (flat memory for the full-track check) and bit-identical to the
    # one-shot decode, for MP4/AAC too (where seeking would not be sample-accurate);
    # n_samples shorter or longer than the file cuts or zero-pads like decode_aligned
    x = synth.transients(44100, 2, 2.5)
    src = _write(tmp_path / "src.wav", x, 44100, subtype="FLOAT")
    n = x.shape[1] + int(extra_s * 44100)
    for name in ("aac", "opus"):
        p = load_preset(name)
        out = tmp_path / f"o{p.extension}"
        media.encode_array(x, 44100, p, "96k", out)
        whole = media.decode_aligned(out, p, 44100, 2, n)
        blocks = list(media.decode_aligned_blocks(out, p, 44100, 2, n, 10_000))
        assert max(b.shape[1] for b in blocks) <= 10_000
        np.testing.assert_array_equal(np.concatenate(blocks, axis=1), whole)
    with pytest.raises(InputNotFoundError):
        list(media.decode_aligned_blocks(src.with_name("nope.m4a"), p, 44100, 2, n, 10_000))
    bad = tmp_path / "bad.m4a"
    bad.write_bytes(b"\x00" * 4096)  # exists, but no decoder can read it
    with pytest.raises(FFmpegError):
        list(media.decode_aligned_blocks(bad, p, 44100, 2, n, 10_000))


@pytest.mark.parametrize("sr", [22050, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_decode_to_disk_matches_decode_and_leaves_nothing_behind(tmp_path, synth, sr, channels):
    f = _write(tmp_path / "x.wav", 0.5 * synth.chirp(sr, channels, duration_s=1.5), sr)
    spool = tmp_path / "spool"
    spool.mkdir()
    y = media.decode_to_disk(f, 44100, channels, directory=spool)
    assert y.shape == (channels, media.decode(f, sample_rate_hz=44100, channels=channels).shape[1])
    assert np.array_equal(y, media.decode(f, sample_rate_hz=44100, channels=channels))
    assert list(spool.iterdir()) == [], "the temp file is unlinked once mapped"
    with pytest.raises(ValueError):  # read-only: a caller must copy before changing it
        y[0, 0] = 1.0


def test_decode_to_disk_errors(tmp_path, synth):
    spool = tmp_path / "spool"
    spool.mkdir()
    txt = tmp_path / "notes.txt"
    txt.write_text("not audio\n" * 50)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    head = _write(tmp_path / "head.wav", synth.tone(44100), 44100)
    head.write_bytes(head.read_bytes()[:44])
    with pytest.raises(NotAudioError, match="notes.txt"):
        media.decode_to_disk(txt, 44100, 2, directory=spool)
    for f in (empty, head):
        with pytest.raises(EmptyAudioError):
            media.decode_to_disk(f, 44100, 2, directory=spool)
    with pytest.raises(InputNotFoundError):
        media.decode_to_disk(tmp_path / "missing.wav", 44100, 2, directory=spool)
    assert list(spool.iterdir()) == []


def test_inspect_reuses_nothing_once_the_file_changed(tmp_path, synth):
    """inspect() answers a repeat call on an unchanged file from memory (one ffmpeg run
    fewer per encode), but a file rewritten under the same name -- same size and mtime
    put back, even -- is inspected again, and a failure is never remembered."""
    p = tmp_path / "a.wav"
    sf.write(p, synth.tone(44_100, 2, 1.0).T, 44_100)
    first = media.inspect(p)
    assert media.inspect(p) == first
    first.tags["title"] = "changed by a caller"
    assert "title" not in media.inspect(p).tags  # callers get their own tags dict
    st = p.stat()
    sf.write(p, synth.tone(48_000, 1, 1.0).T[: int(44_100 * 2 * 1.0 / 2)], 48_000)  # other rate and layout
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = media.inspect(p)
    assert (again.sample_rate_hz, again.channels) == (48_000, 1)
    p.write_bytes(b"not audio at all" * 100)
    with pytest.raises(NotAudioError):
        media.inspect(p)
    with pytest.raises(NotAudioError):  # the failure is not remembered as an answer either
        media.inspect(p)
