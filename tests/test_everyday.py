"""Everyday use (issue 18): what a user sees is true, tidy and unsurprising."""
from __future__ import annotations

import json
import subprocess
import warnings
from pathlib import Path

import pytest
from conftest import run_cli
import soundfile as sf

import ratecontrol
from ratecontrol import errors, media

SR = 48_000


@pytest.fixture(scope="module")
def music(shared_audio, tmp_path_factory):
    d = tmp_path_factory.mktemp("everyday")
    x = media.decode(shared_audio / "flac-test-files/17 - all fixed orders.flac", sample_rate_hz=SR, channels=2)
    p = d / "music.wav"
    sf.write(p, x[:, : 5 * SR].T, SR, subtype="PCM_16")
    return p


def _ffmpeg(*args):
    subprocess.run([media.ffmpeg_path(), "-hide_banner", "-v", "error", "-y", *map(str, args)], check=True)


def test_lossy_source_is_never_encoded_above_its_bitrate(music, tmp_path):
    """encode follows batch's rule: the ladder stops at a lossy source's bitrate."""
    src = tmp_path / "src.mp3"
    _ffmpeg("-i", music, "-c:a", "libmp3lame", "-b:a", "96k", src)
    res = ratecontrol.encode(src, tmp_path / "o.mp3", target_mos=4.6, codec="mp3", best_effort=True, cache=False)
    assert res.bitrate_kbps <= 96 + 1e-9
    assert any("ladder stops at its bitrate" in n for n in res.search.notes)
    more = ratecontrol.encode(src, tmp_path / "o2.mp3", target_mos=4.6, codec="mp3", best_effort=True,
                              above_source=True, cache=False)
    assert more.bitrate_kbps > 96


@pytest.mark.parametrize("codec", ["opus", "mp3", "aac"])
def test_users_comment_tag_is_kept(music, tmp_path, codec):
    src = tmp_path / "tagged.flac"
    _ffmpeg("-i", music, "-metadata", "comment=my own words", "-metadata", "title=T", src)
    res = ratecontrol.encode(src, tmp_path / f"o{ratecontrol.load_preset(codec).extension}", target_mos=4.0,
                             codec=codec, cache=False)
    tags = {k.lower(): v for k, v in media.inspect(res.output_path).tags.items()}
    assert tags.get("title") == "T"
    assert "my own words" in tags.get("comment", "")
    ours = tags.get("ratecontrol") or tags.get("comment", "")
    assert f"preset={codec}" in ours


def test_auto_probe_lines_name_the_preset_and_probe_table_is_printed_once(music, capsys, tmp_path):
    rc, out, err = run_cli(["encode", str(music), "--target-mos", "4.74", "--codec", "opus", "-o",
                            str(tmp_path / "x.opus"), "--no-cache"], capsys)
    assert rc == errors.TargetNotReachable.exit_code
    lines = [ln for ln in err.splitlines() if ln.strip().startswith("probe ")]
    assert lines and all(" opus " in ln for ln in lines)
    assert len(lines) == len(set(lines)), "each probe printed once"


def test_ladder_writes_into_its_folder_and_never_creates_it(music, tmp_path):
    """One rule with encode's -o (docs/reliability.md "Class 1"): the folder must exist."""
    out = tmp_path / "new" / "ladder"
    with pytest.raises(errors.OutputError, match="folder does not exist"):
        ratecontrol.encode_ladder(music, out, targets=[3.5, 4.0], codec="opus", cache=False)
    assert not (tmp_path / "new").exists()
    out.mkdir(parents=True)
    res = ratecontrol.encode_ladder(music, out, targets=[3.5, 4.0], codec="opus", cache=False)
    assert all(Path(r.output_path).parent == out for r in res)


def test_output_extension_must_match_the_container(music, tmp_path, capsys):
    rc, _, err = run_cli(["encode", str(music), "--target-mos", "4", "-o", str(tmp_path / "x.mp3")], capsys)
    assert rc == errors.OutputError.exit_code and "use x.opus" in err
    rc, _, err = run_cli(["encode", str(music), "--target-mos", "4", "--codec", "aac", "-o",
                          str(tmp_path / "x.aac")], capsys)
    assert rc == errors.OutputError.exit_code and "x.m4a" in err
    res = ratecontrol.encode(music, tmp_path / "noext", target_mos=4.0, cache=False)
    assert res.output_path.endswith("noext.opus") and Path(res.output_path).exists()


def test_score_warns_on_unrelated_files(music, tmp_path, synth):
    other = tmp_path / "other.wav"
    sf.write(other, synth.noise(SR, 2, 5.0, 0.2).T, SR)
    with pytest.warns(errors.RatecontrolWarning, match="do not look like the same audio"):
        ratecontrol.score(music, other)
    enc = tmp_path / "low.opus"
    _ffmpeg("-i", music, "-c:a", "libopus", "-b:a", "12k", enc)
    with warnings.catch_warnings():
        warnings.simplefilter("error", errors.RatecontrolWarning)
        ratecontrol.score(music, enc)  # a low-rate encode of the same music is related


def test_json_summary_carries_margin_and_uncertainty(music, tmp_path, capsys):
    rc, out, _ = run_cli(["encode", str(music), "--target-mos", "4.0", "-o", str(tmp_path / "m.opus"), "--json",
                          "--no-cache"], capsys)
    assert rc == 0
    s = json.loads(out)["search"]
    assert s["margin_mos"] == pytest.approx(0.03)  # the learned scorer's default
    assert s["scorer_uncertainty_mos"] == pytest.approx(0.028)
    rc, out, _ = run_cli(["encode", str(music), "--target-mos", "4.0", "-o", str(tmp_path / "m2.opus"), "--json",
                          "--no-cache", "--margin", "0"], capsys)
    assert json.loads(out)["search"]["margin_mos"] == 0


def test_margin_raises_the_bar(music, tmp_path):
    lo = ratecontrol.select_bitrate(music, target_mos=4.0, margin_mos=0.0, cache=False)
    hi = ratecontrol.select_bitrate(music, target_mos=4.0, margin_mos=0.3, cache=False)
    assert hi.chosen.pooled_mos >= 4.3 and hi.chosen.bitrate_kbps >= lo.chosen.bitrate_kbps
    assert all(p.passed == (p.pooled_mos >= 4.3) for p in hi.probes)


def test_readme_library_example_runs(music, tmp_path, monkeypatch):
    """The README's Python block, run with its file names pointing at real files."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## Library", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "music").mkdir()
    import shutil

    shutil.copy(music, tmp_path / "song.flac")  # a WAV under a .flac name decodes the same
    shutil.copy(music, tmp_path / "music" / "a.wav")
    _ffmpeg("-i", music, "-c:a", "libmp3lame", "-b:a", "128k", tmp_path / "deg.mp3")
    shutil.copy(music, tmp_path / "ref.wav")
    # a film: a small video stream and two audio streams (the README re-encodes both)
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=5", "-i", music, "-map", "0:v", "-map", "1:a",
            "-map", "1:a", "-shortest", "-c:v", "mpeg4", "-c:a", "flac", tmp_path / "film.mkv")
    audio_array = sf.read(music, dtype="float32")[0]  # soundfile's [samples, channels]
    exec(compile(block, "README.md", "exec"), {"audio_array": audio_array, "print": lambda *a: None})


def test_encode_sweeps_a_killed_runs_temp_files_but_not_a_live_ones(music, tmp_path):
    """Issue 15 item 5: the next run on a folder removes what a killed run left there."""
    import os

    from ratecontrol import fsutil

    dead_pid = 2 ** 22 + 12345  # above Linux's pid_max default: never a live process
    live = fsutil.temp_sibling(tmp_path / "other.opus")  # ours: this process is alive
    dead = tmp_path / live.name.replace(f".{os.getpid()}.", f".{dead_pid}.")
    dead.write_bytes(b"half an encode")
    ratecontrol.encode(music, tmp_path / "o.opus", target_mos=3.5, cache=False)
    assert not dead.exists() and live.exists()


def test_a_250_byte_output_name_works_and_a_256_byte_one_is_refused_up_front(music, tmp_path, monkeypatch):
    """Issue 15 item 7: the temp name beside a long output name used to be too long,
    after the whole search."""
    name = "n" * (250 - len(".opus")) + ".opus"
    res = ratecontrol.encode(music, tmp_path / name, target_mos=3.5, cache=False)
    assert Path(res.output_path).name == name and Path(res.output_path).exists()
    monkeypatch.setattr(media, "roundtrip_info", lambda *a, **k: pytest.fail("searched before refusing"))
    with pytest.raises(errors.OutputError, match="255"):
        ratecontrol.encode(music, tmp_path / ("m" * 251 + ".opus"), target_mos=3.5, cache=False)


def test_codec_auto_counts_every_presets_probes(music, tmp_path, capsys):
    rc, out, err = run_cli(["encode", str(music), "--target-mos", "4.0", "--codec", "auto", "-o",
                            str(tmp_path / "auto"), "--no-cache"], capsys)
    assert rc == 0, err
    lines = [ln for ln in err.splitlines() if ln.strip().startswith("probe ")]
    presets = {ln.split()[1] for ln in lines}
    assert len(presets) >= 3, "each probe line names its preset"
    assert f"; {len(lines)} probes," in out, "the summary counts all presets' probes"


def test_batch_takes_a_list_of_targets_one_tree_each(music, tmp_path, capsys):
    import shutil

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(music, src / "a.wav")
    rc, out, err = run_cli(["batch", str(src), str(tmp_path / "out"), "--target-mos", "3.5,4.2", "-j", "1",
                            "--no-cache", "--json-report", str(tmp_path / "r.json")], capsys)
    assert rc == 0, err
    for t in ("3.5", "4.2"):
        assert (tmp_path / "out" / f"mos{t}" / "a.opus").exists()
        rep = json.loads((tmp_path / f"r.mos{t}.json").read_text())
        assert rep["records"][0]["status"] == "encoded"


def test_demo_says_what_it_encodes(tmp_path):
    """Issue 26: in a fresh clone (no ../shared/audio) the demo encoded a generated tone
    while the README said "a real track"; now it says so, and takes the user's file."""
    import os
    import shutil

    root = Path(__file__).resolve().parents[1]
    clone = tmp_path / "clone"  # no ../shared/audio beside it
    (clone / "scripts").mkdir(parents=True)
    shutil.copy(root / "scripts" / "demo.sh", clone / "scripts" / "demo.sh")
    fake = tmp_path / "bin"  # the commands the demo runs, echoed instead of run
    fake.mkdir()
    (fake / "ratecontrol").write_text('#!/bin/sh\necho "ran: ratecontrol $*"\n')
    (fake / "ratecontrol").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}", "DEMO_OUT": str(tmp_path / "out")}
    r = subprocess.run(["bash", str(clone / "scripts" / "demo.sh")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "generated 8-s test signal" in r.stdout and "not music" in r.stdout
    assert "bash scripts/demo.sh YOUR_FILE" in r.stdout
    assert f"ran: ratecontrol encode {tmp_path / 'out' / 'generated.wav'}" in r.stdout
    r = subprocess.run(["bash", str(clone / "scripts" / "demo.sh"), "/music/mine.flac"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0 and "encoding your file /music/mine.flac" in r.stdout
    assert "ran: ratecontrol encode /music/mine.flac" in r.stdout
