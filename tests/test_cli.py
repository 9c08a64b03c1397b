"""Every bad input gets one clear line and the right exit code, never a traceback."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ratecontrol import errors
from conftest import run_cli
import soundfile as sf



@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    p = tmp_path_factory.mktemp("cli") / "tone.wav"
    t = np.arange(44100 * 2) / 44100
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.02 * np.random.default_rng(0).standard_normal(t.size)
    sf.write(p, np.stack([x, x], 1).astype(np.float32), 44100, subtype="PCM_16")
    return p


def _bad_inputs(tmp):
    text = tmp / "notes.txt"
    text.write_text("not audio at all\n" * 50)
    empty = tmp / "empty.wav"
    empty.write_bytes(b"")
    return {"missing": (tmp / "nope.flac", 3), "directory": (tmp, 3), "text": (text, 3), "empty": (empty, 3)}


@pytest.mark.parametrize("case", ["missing", "directory", "text", "empty"])
def test_bad_input_files(case, tmp_path, capsys):
    path, code = _bad_inputs(tmp_path)[case]
    rc, out, err = run_cli(["encode", str(path), "--target-mos", "4", "--scorer", "visqol", "-o", str(tmp_path / "o.opus")], capsys)
    assert rc == code
    # validate, then announce (issue 26): the error line alone, no "searching" line before it
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err


def test_truncated_file(wav, tmp_path, capsys):
    cut = tmp_path / "cut.wav"
    cut.write_bytes(wav.read_bytes()[:30])  # header only, no samples
    rc, _, err = run_cli(["encode", str(cut), "--target-mos", "4", "--scorer", "visqol", "-o", str(tmp_path / "o.opus")], capsys)
    assert rc == errors.InputError.exit_code and "error:" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (["--target-mos", "7"], 2, "outside"),
        (["--target-mos", "0.2"], 2, "outside"),
        (["--target-mos", "4", "--codec", "no-such-codec"], 5, "no-such-codec"),
        (["--target-mos", "4", "--codec", "fdk-he-aac"], 5, "libfdk_aac"),
        (["--target-mos", "4", "--pool", "median"], 2, "pooling"),
        (["--target-mos", "4", "--scorer", "nonsense"], 2, "scorer"),
    ],
)
def test_bad_arguments(wav, tmp_path, capsys, args, code, needle):
    rc, _, err = run_cli(["encode", str(wav), "-o", str(tmp_path / "o.opus"), *args], capsys)
    assert rc == code, err
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err  # no "searching ..." line before the error


@pytest.mark.parametrize("case", ["exists", "no-folder", "report-is-input"])
def test_output_errors_are_the_error_line_alone(wav, tmp_path, capsys, case):
    """Issue 26 item 3 (validate, then announce): an output the run may not write is
    refused before any work, and without a "searching ..." line before the error."""
    out = tmp_path / "o.opus"
    args = ["encode", str(wav), "--target-mos", "4", "--codec", "opus", "--no-cache"]
    if case == "exists":
        out.write_bytes(b"mine")
        args += ["-o", str(out)]
    elif case == "no-folder":
        args += ["-o", str(tmp_path / "nodir" / "o.opus")]
    else:
        args += ["-o", str(out), "--report", str(wav)]
    before = wav.read_bytes()
    rc, _, err = run_cli(args, capsys)
    assert rc == errors.OutputError.exit_code, err
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert wav.read_bytes() == before
    if case == "exists":
        assert out.read_bytes() == b"mine"


def test_text_file_named_flac_gets_the_same_words_from_encode_and_batch(tmp_path, capsys):
    """Issue 26: encode said "cannot tell the sample rate / channels ...; convert it to
    WAV or FLAC first" where batch said "ffmpeg cannot read ... as audio"."""
    folder = tmp_path / "in"
    folder.mkdir()
    fake = folder / "song.flac"
    fake.write_text("hello\n")  # ffmpeg guesses FLAC for it: 'flac, 0 channels'
    rc, _, err = run_cli(["encode", str(fake), "--target-mos", "4", "-o", str(tmp_path / "o.opus")], capsys)
    assert rc == errors.NotAudioError.exit_code
    assert err.startswith(f"error: ffmpeg cannot read {fake} as audio ("), err
    assert "WAV or FLAC" not in err
    rc, out, err = run_cli(["batch", str(folder), str(tmp_path / "out"), "--target-mos", "4", "--codec", "opus"],
                           capsys)
    assert f"ffmpeg cannot read {fake} as audio (" in out + err


def test_help_shows_percent_signs_once(capsys):
    rc, out, _ = run_cli(["encode", "--help"], capsys)
    assert rc == 0 and "99.8 % of" in " ".join(out.split()) and "%%" not in out


def test_lossy_cap_that_makes_the_target_unreachable_says_so(wav, tmp_path, capsys):
    """Issue 26: the error names the lossy source's bitrate and --above-source; the
    library's words (above_source=True) never reach the command line."""
    from ratecontrol import media

    src = tmp_path / "low.mp3"
    subprocess.run([media.ffmpeg_path(), "-v", "error", "-y", "-i", str(wav), "-c:a", "libmp3lame", "-b:a", "32k",
                    str(src)], check=True)
    args = ["encode", str(src), "--target-mos", "4.72", "--codec", "opus", "--no-cache", "-o", str(tmp_path / "o.opus")]
    rc, _, err = run_cli(args, capsys)
    assert rc == errors.TargetNotReachable.exit_code, err
    line = err.strip().splitlines()[-1]
    assert "lossy source's ~32 kbps" in line and "--above-source" in line and "--best-effort" in line, line
    assert "above_source" not in err
    rc, out, err = run_cli(args + ["--best-effort"], capsys)
    assert rc == 0 and "lossy" in err and "above_source" not in out + err
    import ratecontrol

    for codec in ("opus", "mp3"):  # the knob search and the ladder search
        with pytest.raises(errors.TargetNotReachable) as exc:  # the library names its own option
            ratecontrol.select_bitrate(src, target_mos=4.72, codec=codec, cache=False)
        assert exc.value.options == {"best_effort": True, "above_source": True}
        assert "lossy source's ~32 kbps" in str(exc.value)
        assert str(exc.value).endswith("(best_effort=True or above_source=True)")


def test_unwritable_and_same_output(wav, tmp_path, capsys):
    rc, _, err = run_cli(["encode", str(wav), "--target-mos", "4", "-o", str(tmp_path / "no" / "dir" / "o.opus")], capsys)
    assert rc == errors.OutputError.exit_code and "does not exist" in err
    rc, _, err = run_cli(["encode", str(wav), "--target-mos", "4", "-o", str(wav)], capsys)
    assert rc == errors.OutputError.exit_code and "input" in err
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        import os

        if os.access(ro, os.W_OK):  # root ignores permissions
            pytest.skip("running as root: permissions are not enforced")
        rc, _, err = run_cli(["encode", str(wav), "--target-mos", "4", "-o", str(ro / "o.opus")], capsys)
        assert rc == errors.OutputError.exit_code and "not writable" in err
    finally:
        ro.chmod(0o700)


def test_bad_preset_yaml_names_file_and_key(wav, tmp_path, capsys):
    y = tmp_path / "mine.yaml"
    y.write_text("name: mine\nencoder: libopus\nbogus_key: 1\n")
    rc, _, err = run_cli(["encode", str(wav), "--target-mos", "4", "--codec", str(y), "-o", str(tmp_path / "o.x")], capsys)
    assert rc == errors.PresetError.exit_code and "mine.yaml" in err and "bogus_key" in err


def test_presets_and_doctor(capsys):
    rc, out, _ = run_cli(["presets", "--json"], capsys)
    rows = json.loads(out)
    names = {r["name"] for r in rows}
    assert {"opus", "aac", "mp3", "mp3-vbr", "vorbis"} <= names
    rc, out, _ = run_cli(["doctor"], capsys)
    assert rc == 0 and "ffmpeg" in out and "libopus" in out


def test_score_json(wav, capsys):
    rc, out, _ = run_cli(["score", str(wav), str(wav), "--scorer", "visqol", "--json"], capsys)
    assert rc == 0
    d = json.loads(out)
    assert d["pooled_mos"] > 4.6 and len(d["window_mos"]) == 4


def _pair(tmp_path, rate: int, delay: int, seconds: float = 3.0):
    """A noisy reference at ``rate`` and the same audio ``delay`` samples later."""
    rng = np.random.default_rng(5)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    x = (0.2 * np.sin(2 * np.pi * 330 * t) + 0.1 * rng.standard_normal(n)).astype(np.float32)
    ref, deg = tmp_path / f"ref{rate}.wav", tmp_path / f"deg{rate}.wav"
    sf.write(ref, x, rate)
    sf.write(deg, np.concatenate([np.zeros(delay, np.float32), x[: n - delay]]), rate)
    return ref, deg


def test_score_prints_the_worst_windows_and_the_delay_in_the_inputs_terms(tmp_path, capsys):
    """Issue 26: not one line per window (159 for 78 s), and a 96-kHz file's delay in
    96-kHz samples, not "at 44.1 kHz"."""
    ref, deg = _pair(tmp_path, 96_000, 96, seconds=8.0)  # 1 ms late
    rc, out, _ = run_cli(["score", str(ref), str(deg)], capsys)
    assert rc == 0
    lines = out.rstrip("\n").splitlines()
    assert len(lines) == 6 and all(l.startswith("  worst: ch0") for l in lines[:5]), out
    assert "over 8 windows" in lines[-1] and "--windows" in lines[-1]
    assert "delay 1.0 ms (96 samples at 96 kHz)" in lines[-1] and "44.1" not in lines[-1]
    rc, out, _ = run_cli(["score", str(ref), str(deg), "--windows"], capsys)
    assert rc == 0 and len(out.strip().splitlines()) == 9


def test_encode_json_end_to_end(wav, tmp_path, capsys):
    out_path = tmp_path / "x.opus"
    rc, out, _ = run_cli(["encode", str(wav), "--target-mos", "4.0", "--scorer", "visqol", "-o", str(out_path), "--json"], capsys)
    assert rc == 0
    d = json.loads(out)
    assert d["output_path"] == str(out_path) and out_path.exists()
    assert d["search"]["chosen"]["pooled_mos"] >= 4.0


def test_module_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "ratecontrol", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "encode" in r.stdout
