"""Batch mode: a mixed tree end to end (real ffmpeg, real ViSQOL), resume, kill, Dask.

The tree mixes trimmed real files from ../shared/audio (cover-art FLAC, 22.05 kHz FLAC,
mono FLAC, an sms-tools wav), generated files (a tagged FLAC, a.flac + a.wav colliding
on a.opus, a 128 kbps MP3, an 8 kbps MP3 below Opus' lowest rung), a corrupt FLAC, an
empty WAV, a macOS ._ file, a text file, a fake JPEG and nested folders. Clips are 1.5 s so one exact
ViSQOL search costs a few seconds.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ratecontrol import media
from ratecontrol.batch import MANIFEST_NAME, BatchReport, FileRecord, transcode_folder
from ratecontrol.batch._manifest import load_manifest, Manifest
from ratecontrol.batch._plan import plan_names, walk
from ratecontrol.cli.batch import batch_command
from ratecontrol.errors import InputNotFoundError, OutputError, RatecontrolError, UsageError

TARGET = 3.6  # low enough that short clips settle on low rungs after few probes
CLIP_S = 1.5

FLAC_YAML = """\
name: flactest
description: test-only FLAC, used to trim real files and write tagged inputs
encoder: flac
format: flac
extension: .flac
sample_rate_hz: null
mono: {policy: same}
rungs:
  - {label: flac, nominal_kbps: 1000, options: {}}
"""
# 8 kbps stereo MP3 at 8 kHz: below Opus' lowest stereo rung (16 kbps), so it is kept
LOW_MP3_YAML = """\
name: mp3low
description: test-only 8 kbps MP3
encoder: libmp3lame
format: mp3
extension: .mp3
sample_rate_hz: 8000
mono: {policy: same}
rungs:
  - {label: 8k, nominal_kbps: 8, options: {"b:a": 8k}}
"""

# what every input of the tree must end up as: (status, output or None)
EXPECTED = {
    "gen/._a.flac": ("copied", "gen/._a.flac"),  # macOS AppleDouble junk: not a failure
    "flac/56 - JPG PICTURE.flac": ("encoded", "flac/56 - JPG PICTURE.opus"),
    "flac/odd/21 - samplerate 22050Hz.flac": ("encoded", "flac/odd/21 - samplerate 22050Hz.opus"),
    "flac/odd/60 - mono audio.flac": ("encoded", "flac/odd/60 - mono audio.opus"),
    "gen/a.flac": ("encoded", "gen/a.opus"),
    "gen/a.wav": ("encoded", "gen/a.wav.opus"),
    "gen/broken.flac": ("failed", None),
    "gen/cover.jpg": ("copied", "gen/cover.jpg"),
    "gen/deep/er/tagged.flac": ("encoded", "gen/deep/er/tagged.opus"),
    "gen/empty.wav": ("failed", None),
    "gen/low.mp3": ("kept", "gen/low.mp3"),
    "gen/mp3-128k.mp3": ("encoded", "gen/mp3-128k.opus"),
    "gen/notes.txt": ("copied", "gen/notes.txt"),
    "sms/flute-A4.wav": ("encoded", "sms/flute-A4.opus"),
}
AUDIO_OUT = {k: v for k, v in EXPECTED.items() if v[0] in ("encoded", "kept")}


def _tone_pair(seconds: float, sr: int = 44100) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)
                     + 0.02 * np.random.default_rng(7).standard_normal(t.size)]).T


def build_tree(root: Path, shared: Path, presets: Path) -> Path:
    """Write the mixed test tree under root (copies/trims of shared files, never the repo)."""
    presets.mkdir(parents=True, exist_ok=True)
    flac = presets / "flactest.yaml"
    flac.write_text(FLAC_YAML)
    low = presets / "mp3low.yaml"
    low.write_text(LOW_MP3_YAML)
    fl = shared / "flac-test-files"
    for name, sub in [("56 - JPG PICTURE.flac", "flac"), ("21 - samplerate 22050Hz.flac", "flac/odd"),
                      ("60 - mono audio.flac", "flac/odd")]:
        (root / sub).mkdir(parents=True, exist_ok=True)
        clip = media.decode(fl / name, start_s=1.0, duration_s=CLIP_S)
        media.encode_array(clip, media.inspect(fl / name).sample_rate_hz, flac, "flac", root / sub / name,
                           tags_from=fl / name)
    (root / "sms").mkdir()
    x, sr = sf.read(shared / "sms-tools" / "flute-A4.wav")
    sf.write(root / "sms" / "flute-A4.wav", x[: int(CLIP_S * sr)], sr, subtype="PCM_16")

    gen = root / "gen"
    (gen / "deep" / "er").mkdir(parents=True)
    pair = _tone_pair(CLIP_S)
    sf.write(gen / "a.wav", pair, 44100, subtype="PCM_16")
    sf.write(gen / "a.flac", pair[:, ::-1].copy(), 44100, subtype="PCM_16")
    x = media.decode(gen / "a.wav")
    media.encode_array(x, 44100, flac, "flac", gen / "deep" / "er" / "tagged.flac",
                       metadata={"title": "Tone Pair", "artist": "Batch Test"})
    media.encode_array(x, 44100, "mp3", "128k", gen / "mp3-128k.mp3")
    media.encode_array(x, 44100, low, "8k", gen / "low.mp3")
    (gen / "broken.flac").write_bytes(b"fLaC" + bytes(range(256)) * 16)  # corrupt
    (gen / "empty.wav").write_bytes(b"")
    (gen / "._a.flac").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " * 4)
    (gen / "notes.txt").write_text("liner notes\n")
    (gen / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    return root


def _manifest_lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / MANIFEST_NAME).read_text().splitlines() if x.strip()]


# ------------------------------------------------------------------ pure logic


def test_plan_names_resolves_collisions_deterministically():
    rels = ["x/a.flac", "x/a.opus", "x/a.wav", "x/b.flac", "x/b.wav", "x/cover.flac", "x/cover.jpg",
            "x/song", "y/a.wav"]
    planned, coll = plan_names(rels, ".opus")
    assert planned["x/a.flac"] == "x/a.flac.opus"  # a.opus is an input's own name
    assert planned["x/a.opus"] == "x/a.opus"
    assert planned["x/a.wav"] == "x/a.wav.opus"
    assert planned["x/b.flac"] == "x/b.opus"  # first in sorted order keeps the plain name
    assert planned["x/b.wav"] == "x/b.wav.opus"
    assert planned["x/cover.flac"] == "x/cover.opus"  # audio extensions choose first
    assert planned["x/song"] == "x/song.opus"
    assert planned["y/a.wav"] == "y/a.opus"  # other folder: no clash
    assert len(set(planned.values())) == len(planned)
    by_input = {c.input: c for c in coll}
    assert by_input["x/b.wav"].wanted == "x/b.opus" and by_input["x/b.wav"].taken_by == "x/b.flac"
    assert by_input["x/a.flac"].taken_by == "x/a.opus"
    # same input, same answer
    assert plan_names(list(rels), ".opus") == (planned, coll)


def test_plan_names_never_reuses_a_name_even_with_many_clashes():
    rels = ["a.flac", "a.flac.opus", "a.wav", "a.wav.opus", "a.aiff", "a.opus"]
    planned, _ = plan_names(rels, ".opus")
    outs = list(planned.values())
    assert len(set(outs)) == len(outs)
    # no input's planned output is another input's own name
    for rel, out in planned.items():
        assert out == rel or out not in rels


def test_walk_is_sorted_and_skips_out_dir_inside_input(tmp_path):
    for p in ["b/z.wav", "b/a.wav", "a/c.wav", "m.wav", "out/x.opus"]:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).write_bytes(b"x")
    rels = walk(tmp_path, (tmp_path / "out").resolve())
    assert rels == ["m.wav", "a/c.wav", "b/a.wav", "b/z.wav"]


def test_manifest_survives_a_line_cut_by_a_kill(tmp_path):
    path = tmp_path / MANIFEST_NAME
    good = FileRecord(input="a.wav", status="encoded", output="a.opus", output_bytes=10)
    m = Manifest(path, fresh=False)
    m.append(good, {"k": 1})
    m.close()
    with open(path, "ab") as fh:
        fh.write(b'{"input": "b.wav", "status": "enc')  # killed mid-write
    m = Manifest(path, fresh=False)
    m.append(FileRecord(input="c.wav", status="failed", reason="bad"), {"k": 1})
    m.close()
    last = load_manifest(path)
    assert set(last) == {"a.wav", "c.wav"}
    assert FileRecord.from_dict(last["a.wav"]).output == "a.opus"
    assert last["c.wav"]["reason"] == "bad"


def test_bad_arguments_are_one_line_errors(tmp_path):
    (tmp_path / "in").mkdir()
    with pytest.raises(InputNotFoundError, match="not found"):
        transcode_folder(tmp_path / "missing", tmp_path / "o", target_mos=4, progress=False)
    with pytest.raises(OutputError, match="contains the input"):
        transcode_folder(tmp_path / "in", tmp_path / "in", target_mos=4, progress=False)
    with pytest.raises(OutputError, match="contains the input"):
        transcode_folder(tmp_path / "in", tmp_path, target_mos=4, progress=False)
    with pytest.raises(UsageError, match="outside"):
        transcode_folder(tmp_path / "in", tmp_path / "o", target_mos=6, progress=False)
    with pytest.raises(UsageError, match="backend"):
        transcode_folder(tmp_path / "in", tmp_path / "o", target_mos=4, backend="spark", progress=False)
    with pytest.raises(OutputError, match="report folder"):
        transcode_folder(tmp_path / "in", tmp_path / "o", target_mos=4, json_report=tmp_path / "no" / "r.json",
                         progress=False)
    with pytest.raises(UsageError, match="one codec"):
        transcode_folder(tmp_path / "in", tmp_path / "o", target_mos=4, codec="auto", progress=False)
    with pytest.raises(UsageError, match="scorer"):
        transcode_folder(tmp_path / "in", tmp_path / "o", target_mos=4, scorer="nope", progress=False)


def test_options_carry_the_settings_the_manifest_held_before(tmp_path):
    """One Options from the caller to the worker (issue 27); the manifest's settings dict
    is derived from it and stays what earlier versions wrote, so their files resume."""
    import pickle

    from ratecontrol.batch._settings import BatchOptions, run_options, run_settings
    from ratecontrol.batch._task import Task
    from ratecontrol.options import Options
    from ratecontrol.presets import load_preset

    run = BatchOptions(video="keep")
    opts = run_options(Options(scorer="visqol", best_effort=True), run,
                       {"sample_share": 0.5, "allow_partial": True, "cache": tmp_path})
    assert opts.cache == str(tmp_path)  # a folder travels as text
    settings = run_settings(4, load_preset("opus"), "opus", opts, run.video)
    # the bytes of a manifest line written before Options (key order included)
    assert json.dumps(settings) == json.dumps({
        "target_mos": 4.0, "codec": "opus", "codec_ref": "opus", "scorer": "visqol", "pool": "p10", "hop_s": 1.0,
        "best_effort": True, "sample_share": 0.5, "verify": True, "allow_partial": True, "video": "keep"})
    default = run_settings(4.2, load_preset("opus"), "opus", run_options(None, run, {}), "audio")
    assert list(default) == ["target_mos", "codec", "codec_ref", "scorer", "pool", "hop_s", "best_effort",
                             "sample_share", "verify", "video"]
    # the step down (on by default) is recorded only when off
    off = run_settings(4.2, load_preset("opus"), "opus", run_options(None, run, {"step_down": False}), "audio")
    assert off["step_down"] is False and list(off)[-2:] == ["step_down", "video"]
    # what a loky or Dask worker receives pickles, Options included
    task = Task(rel="a.wav", in_path=str(tmp_path / "a.wav"), out_root=str(tmp_path), out_rel="a.opus",
                collision="", target_mos=4.0, codec_ref="opus", options=opts, settings=settings, video="keep",
                copy_other=False, prior=None)
    assert pickle.loads(pickle.dumps(task)) == task


def test_options_object_and_keywords_are_one_set_of_settings(tmp_path):
    from ratecontrol.options import Options

    (tmp_path / "in").mkdir()
    with pytest.raises(UsageError, match="unknown option"):
        transcode_folder(tmp_path / "in", tmp_path / "o", 4, "opus", Options(), progress=False, scorers="x")
    for bad in (Options(ladder=True), Options(jobs=2), Options(max_kbps=96)):
        with pytest.raises(UsageError, match="batch does not take"):
            transcode_folder(tmp_path / "in", tmp_path / "o", 4, "opus", bad, progress=False)
    with pytest.raises(UsageError, match="video='audio'"):
        transcode_folder(tmp_path / "in", tmp_path / "o", 4, options=Options(all_audio_streams=True), video="audio")
    with pytest.raises(UsageError, match="jobs must be"):
        transcode_folder(tmp_path / "in", tmp_path / "o", 4, jobs=0)
    assert not (tmp_path / "o").exists()
    # the Options and a keyword together: the keyword wins, as in encode
    rep = transcode_folder(tmp_path / "in", tmp_path / "o", 4, "opus", Options(pool="mean"), pool="p5",
                           progress=False)
    assert rep.pool == "p5" and rep.n_files == 0


def test_tree_without_audio_needs_no_scorer_and_exits_zero(tmp_path):
    from click.testing import CliRunner

    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "readme.txt").write_text("hi")
    res = CliRunner().invoke(batch_command, [str(src), str(tmp_path / "out"), "--target-mos", "4",
                                             "--copy-other", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "sub" / "readme.txt").read_text() == "hi"
    assert "1 files" in res.output and "0 failed" in res.output


# ------------------------------------------------------------------ the mixed tree


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, shared_audio):
    base = tmp_path_factory.mktemp("batch")
    src = build_tree(base / "in", shared_audio, base / "presets")
    out = base / "out"
    report = transcode_folder(src, out, target_mos=TARGET, codec="opus", scorer="visqol", jobs=2,
                              copy_other=True, json_report=base / "r.json", csv_report=base / "r.csv",
                              progress=False)
    return base, src, out, report


def test_mixed_tree_report(mixed_run):
    base, src, out, rep = mixed_run
    assert isinstance(rep, BatchReport)
    got = {r.input: (r.status, r.output) for r in rep.records}
    assert got == EXPECTED, {r.input: r.reason for r in rep.records}
    # walk order: per folder, files sorted, then its sub-folders sorted
    order = [r.input for r in rep.records]
    assert order.index("gen/notes.txt") < order.index("gen/deep/er/tagged.flac") < order.index("sms/flute-A4.wav")
    assert order[:3] == ["flac/56 - JPG PICTURE.flac", "flac/odd/21 - samplerate 22050Hz.flac",
                         "flac/odd/60 - mono audio.flac"]
    assert rep.n_failed == 2 and not rep.ok
    by = {r.input: r for r in rep.records}
    assert "cannot read" in by["gen/broken.flac"].reason and "\n" not in by["gen/broken.flac"].reason
    assert "empty" in by["gen/empty.wav"].reason
    assert "below the lowest opus rung" in by["gen/low.mp3"].reason
    # lossy 128 kbps source: never above its own bitrate
    assert by["gen/mp3-128k.mp3"].bitrate_kbps <= 128
    for rel, (status, _) in EXPECTED.items():
        r = by[rel]
        if status == "encoded":
            assert r.reached and r.pooled_mos >= TARGET, (rel, r.pooled_mos)
            assert r.rung_label and r.n_probes >= 1 and r.input_sha256
    # the collision is reported, exactly once, and nothing else is
    assert [(c.input, c.wanted, c.output) for c in rep.collisions] == [("gen/a.wav", "gen/a.opus", "gen/a.wav.opus")]
    assert by["gen/a.wav"].collision
    # the cover reaches the Ogg output (METADATA_BLOCK_PICTURE), so no "not kept" note
    jpg = by["flac/56 - JPG PICTURE.flac"]
    assert not any("cover art" in n for n in jpg.notes)
    assert media.inspect(out / jpg.output).has_cover_art
    # totals are the sums of the parts
    audio = [r for r in rep.records if r.status in ("encoded", "kept")]
    assert rep.input_bytes == sum(r.input_bytes for r in audio)
    assert rep.output_bytes == sum((out / r.output).stat().st_size for r in audio)
    assert 0.5 < rep.saving_fraction < 1
    scores = [r.pooled_mos for r in rep.records if r.status == "encoded"]
    assert rep.min_mos == pytest.approx(min(scores)) and rep.mean_mos == pytest.approx(np.mean(scores))
    # output_bytes are whole files: the 56 file's cover (a 432 KB JPEG, base64 in the Opus
    # comment header, so x4/3) rides along; mean_kbps is the audio alone, so it must not
    # count the cover (whole files: over 700 kbps here)
    from ratecontrol.media._ffmpeg import run_args

    pic, _ = run_args(["-i", str(src / jpg.input), "-map", "0:v:0", "-c", "copy",
                       "-f", "image2pipe", "-"])
    dur_s = sum(r.duration_s for r in audio if r.duration_s)
    cover_kbps = len(pic) * 4 / 3 * 8 / 1000 / dur_s
    whole_kbps = rep.output_bytes * 8 / 1000 / dur_s
    assert 4 < rep.mean_kbps < 100
    assert rep.mean_kbps < whole_kbps - cover_kbps
    assert by[jpg.input].audio_kbps < 1.5 * by[jpg.input].bitrate_kbps < by[jpg.input].output_kbps
    text = "\n".join(rep.summary_lines())
    assert "14 files" in text and "2 failed" in text and "gen/a.wav.opus" in text


def test_mixed_tree_outputs_are_valid_and_keep_tags(mixed_run):
    base, src, out, rep = mixed_run
    for rel, (_, o) in AUDIO_OUT.items():
        info = media.inspect(out / o)
        assert info.duration_s == pytest.approx(media.inspect(src / rel).duration_s, abs=0.1), rel
        if o.endswith(".opus"):
            assert info.codec == "opus"
    assert (out / "gen/low.mp3").read_bytes() == (src / "gen/low.mp3").read_bytes()
    assert (out / "gen/notes.txt").read_text() == "liner notes\n"
    tags = {k.lower(): v for k, v in media.inspect(out / "gen/deep/er/tagged.opus").tags.items()}
    assert tags.get("title") == "Tone Pair" and tags.get("artist") == "Batch Test"
    # nothing for the failed files, no temp files left anywhere
    assert not (out / "gen" / "broken.opus").exists() and not (out / "gen" / "empty.opus").exists()
    assert not [p for p in out.rglob("*") if p.name.endswith(".part") or p.name.startswith((".ffmeta", ".rc-tmp"))]


def test_mixed_tree_json_and_csv_reports(mixed_run):
    base, src, out, rep = mixed_run
    js = json.loads((base / "r.json").read_text())
    assert js["summary"]["files"] == 14 and js["summary"]["failed"] == 2
    assert js["summary"]["input_bytes"] == rep.input_bytes and js["summary"]["output_bytes"] == rep.output_bytes
    assert {r["input"]: r["status"] for r in js["records"]} == {k: v[0] for k, v in EXPECTED.items()}
    assert js["collisions"][0]["output"] == "gen/a.wav.opus"
    with open(base / "r.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["input"] for r in rows] == [r.input for r in rep.records]
    row = next(r for r in rows if r["input"] == "gen/a.flac")
    assert row["status"] == "encoded" and float(row["pooled_mos"]) >= TARGET and float(row["output_kbps"]) > 0


def test_rerun_skips_done_files_and_redoes_damaged_ones(mixed_run, tmp_path):
    base, src, out, rep = mixed_run
    # work on a copy so the other tests keep their tree
    out2 = tmp_path / "out"
    shutil.copytree(out, out2)
    n_lines = len(_manifest_lines(out2))
    rep2 = transcode_folder(src, out2, target_mos=TARGET, codec="opus", scorer="visqol", jobs=2,
                            copy_other=True, progress=False)
    by = {r.input: r for r in rep2.records}
    assert {k: (r.status, r.output) for k, r in by.items()} == EXPECTED
    # every finished file came from the manifest; only the two failures were tried again
    assert {k for k, r in by.items() if not r.resumed} == {"gen/broken.flac", "gen/empty.wav"}
    lines = _manifest_lines(out2)
    assert len(lines) == n_lines + 2
    # change one output (truncate: no longer the file batch wrote), delete another: the
    # deleted one is redone, the changed one is a conflict and left exactly as it is
    victim, gone = out2 / "gen/a.opus", out2 / "sms/flute-A4.opus"
    victim.write_bytes(victim.read_bytes()[:100])
    changed = victim.read_bytes()
    gone.unlink()
    rep3 = transcode_folder(src, out2, target_mos=TARGET, codec="opus", scorer="visqol", jobs=2,
                            copy_other=True, progress=False)
    redone = {r.input for r in rep3.records if not r.resumed}
    assert redone == {"gen/a.flac", "sms/flute-A4.wav", "gen/broken.flac", "gen/empty.wav"}
    by3 = {r.input: r for r in rep3.records}
    assert by3["gen/a.flac"].status == "conflict" and by3["gen/a.flac"].options == {"overwrite": True}
    assert by3["gen/a.flac"].reason.endswith("(overwrite=True)")  # the library's words; the CLI spells flags
    assert victim.read_bytes() == changed
    assert gone.exists() and by3["sms/flute-A4.wav"].status == "encoded"
    # --overwrite replaces it, and says so
    rep4 = transcode_folder(src, out2, target_mos=TARGET, codec="opus", scorer="visqol", jobs=2,
                            copy_other=True, progress=False, overwrite=True)
    by4 = {r.input: r for r in rep4.records}
    assert by4["gen/a.flac"].status == "encoded" and by4["gen/a.flac"].replaced
    assert media.inspect(victim).duration_s == pytest.approx(CLIP_S, abs=0.1)
    assert any("replaced: gen/a.opus" in x for x in rep4.summary_lines())
    # each encode is in the manifest once, plus the two redone ones
    enc = [r for r in _manifest_lines(out2) if r["status"] == "encoded"]
    assert len(enc) == 8 + 2


def test_cli_exit_code_says_something_failed(mixed_run, tmp_path):
    from click.testing import CliRunner

    base, src, out, rep = mixed_run
    out2 = tmp_path / "out"
    shutil.copytree(out, out2)
    res = CliRunner().invoke(batch_command, [str(src), str(out2), "--target-mos", str(TARGET), "--codec", "opus",
                                             "--scorer", "visqol", "--copy-other", "-j", "2", "--no-progress",
                                             "--json-report", str(tmp_path / "r.json")])
    assert res.exit_code == RatecontrolError.exit_code, res.output  # some file failed
    assert "failed: gen/broken.flac" in res.output
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["failed"] == 2


# ------------------------------------------------------------------ kill and resume


def _cli_argv() -> list[str]:
    return [sys.executable, "-m", "ratecontrol"]


@pytest.mark.slow
def test_sigkill_part_way_then_rerun_completes_without_reencoding(tmp_path, shared_audio):
    src = build_tree(tmp_path / "in", shared_audio, tmp_path / "presets")
    out = tmp_path / "out"
    argv = _cli_argv() + ["batch", str(src), str(out), "--target-mos", str(TARGET), "--codec", "opus",
                          "--scorer", "visqol", "-j", "2", "--copy-other", "--no-progress"]
    proc = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    manifest = out / MANIFEST_NAME
    deadline = time.monotonic() + 600
    try:
        # kill once a few encodes are recorded and others are still to do
        while time.monotonic() < deadline and proc.poll() is None:
            if manifest.exists() and sum('"encoded"' in x for x in manifest.read_text().splitlines()) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run finished before it could be killed; make the tree bigger"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    first = _manifest_lines(out)
    done_first = {r["input"] for r in first if r["status"] == "encoded"}
    assert 2 <= len(done_first) < 8

    res = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert res.returncode == RatecontrolError.exit_code, res.stderr  # the corrupt and empty files fail, on purpose
    assert "14 files" in res.stdout
    lines = _manifest_lines(out)
    encoded = [r["input"] for r in lines if r["status"] == "encoded"]
    # no file encoded twice, every audio file encoded once
    assert sorted(encoded) == sorted(set(encoded))
    assert set(encoded) == {k for k, v in EXPECTED.items() if v[0] == "encoded"}
    # the rerun's own lines are only for files the first run had not finished
    second = lines[len(first):]
    assert not done_first & {r["input"] for r in second if r["status"] == "encoded"}
    # the final tree is complete and valid, with no temp files
    final = {r["input"]: r for r in lines}
    for rel, (status, o) in EXPECTED.items():
        assert final[rel]["status"] == status, (rel, final[rel].get("reason"))
        if status in ("encoded", "kept"):
            assert media.inspect(out / o).duration_s > 1.0
            assert (out / o).stat().st_size == final[rel]["output_bytes"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]


# ------------------------------------------------------------------ Dask


@pytest.mark.slow
def test_dask_backend_gives_the_same_outputs_as_local(tmp_path, shared_audio):
    distributed = pytest.importorskip("distributed")
    src = tmp_path / "in"
    (src / "d").mkdir(parents=True)
    x, sr = sf.read(shared_audio / "sms-tools" / "speech.wav")
    sf.write(src / "speech.wav", x[: int(CLIP_S * sr)], sr, subtype="PCM_16")
    sf.write(src / "d" / "pair.wav", _tone_pair(CLIP_S), 44100, subtype="PCM_16")
    sf.write(src / "d" / "pair.flac", _tone_pair(CLIP_S)[:, ::-1].copy(), 44100, subtype="PCM_16")
    (src / "d" / "junk.flac").write_bytes(b"not audio at all" * 64)
    # no probe cache: the Dask run must score for itself, not replay the local run's probes
    kw = dict(target_mos=TARGET, codec="opus", scorer="visqol", progress=False, cache=False)
    local = transcode_folder(src, tmp_path / "local", jobs=2, **kw)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster:
        dask = transcode_folder(src, tmp_path / "dask", backend="dask", scheduler=cluster.scheduler_address, **kw)
        assert len(cluster.workers) == 2
    assert dask.backend == "dask" and dask.jobs == 2
    for a, b in zip(local.records, dask.records, strict=True):
        assert (a.input, a.status, a.output, a.rung_label, a.reason) == (b.input, b.status, b.output, b.rung_label, b.reason)
        if a.pooled_mos is not None:
            assert a.pooled_mos == pytest.approx(b.pooled_mos, abs=1e-6)
        if a.output:
            # same audio (Ogg pages carry a random serial number, so compare decodes, not bytes)
            da = media.decode(tmp_path / "local" / a.output)
            db = media.decode(tmp_path / "dask" / b.output)
            assert da.shape == db.shape and np.abs(da - db).max() < 1e-4
    assert dask.n_failed == local.n_failed == 1


def test_dask_path_smoke_on_a_tree_without_encodes(tmp_path):
    """The Dask plumbing (cluster, joblib's dask backend, records back, manifest) in seconds;
    the slow test above compares real encodes against the local backend."""
    distributed = pytest.importorskip("distributed")
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "readme.txt").write_text("hi")
    (src / "broken.flac").write_bytes(b"fLaC" + bytes(range(256)) * 4)
    kw = dict(target_mos=4.0, codec="opus", copy_other=True, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster:
        rep = transcode_folder(src, tmp_path / "dask", backend="dask", scheduler=cluster.scheduler_address, **kw)
    local = transcode_folder(src, tmp_path / "local", jobs=1, **kw)
    assert rep.backend == "dask" and rep.jobs == 2
    assert [(r.input, r.status, r.output, r.reason) for r in rep.records] == \
        [(r.input, r.status, r.output, r.reason.replace("/local/", "/dask/")) for r in local.records]
    assert [r.status for r in rep.records] == ["failed", "copied"]
    assert (tmp_path / "dask" / "sub" / "readme.txt").read_text() == "hi"
    assert {x["input"] for x in _manifest_lines(tmp_path / "dask")} == {"broken.flac", "sub/readme.txt"}


def test_stale_temps_of_a_killed_run_are_removed_and_nothing_else(tmp_path):
    from ratecontrol.batch._manifest import clean_stale_temps

    d = tmp_path / "sub"
    d.mkdir()
    stale = [".a b.opus.x1y2.part",                 # media temp of the output itself
             ".a b.opus.rc-tmp.opus",               # encode()'s checked intermediate
             "..a b.opus.rc-tmp.opus.k3j4.part",    # media temp of that intermediate
             ".ffmeta.abc.txt"]
    keep = ["a b.opus", ".other.opus.x.part", "notes.txt", ".a b.opus.keep"]
    for n in stale + keep:
        (d / n).write_bytes(b"x")
    assert clean_stale_temps(tmp_path, ["sub/a b.opus"]) == len(stale)
    assert sorted(p.name for p in d.iterdir()) == sorted(keep)
