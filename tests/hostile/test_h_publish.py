"""Issue 23 class 1 and the output checks of issue 26 item 3: one publish rule for every
file the tool writes (fsutil.claim_output before any work, fsutil.publish at the end).

Each case asserts what the user keeps (checksums of their files), the exit code, and
that no temp file is left behind."""
from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest
import soundfile as sf

import ratecontrol
from conftest import Synth, run_cli
from ratecontrol import errors, fsutil, media

SR = 44_100
OUTPUT = errors.OutputError.exit_code


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("publish-in") / "in.wav"
    sf.write(p, Synth(3).music(SR, channels=2, duration_s=2.0, amplitude=0.3).T, SR, subtype="PCM_16")
    return p


@pytest.fixture
def work(song, tmp_path) -> Path:
    """A folder holding a copy of the input (the run's input lives beside its outputs)."""
    (tmp_path / "in.wav").write_bytes(song.read_bytes())
    return tmp_path


def _sums(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (temp files included) and its checksum."""
    return {p.relative_to(folder).as_posix(): fsutil.file_digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _no_litter(folder: Path) -> None:
    left = [p.name for p in folder.rglob("*") if fsutil.is_temp_name(p.name)]
    assert not left, f"temp files left behind: {left}"


class _Probes:
    """on_probe that counts: a check 'before any work' means none ran."""

    def __init__(self):
        self.n = 0

    def __call__(self, probe):
        self.n += 1


def _cli(capsys, *args):
    return run_cli(["encode", *map(str, args), "--target-mos", "3.5", "--no-cache"], capsys)


# --------------------------------------------------------------------------- the report


def test_report_onto_the_input_is_refused_before_any_work(work, capsys):
    before = _sums(work)
    rc, _, err = _cli(capsys, work / "in.wav", "-o", work / "o.opus", "--report", work / "in.wav")
    assert rc == OUTPUT and [ln for ln in err.splitlines() if "error" in ln] == [
        f"error: report {work / 'in.wav'} is an input of this run: writing it would destroy the input; "
        "choose another path"], err
    assert _sums(work) == before, "the input is untouched and nothing was written"


def test_report_onto_the_audio_output_is_refused(work, capsys):
    before = _sums(work)
    rc, _, err = _cli(capsys, work / "in.wav", "-o", work / "same.opus", "--report", work / "same.opus")
    assert rc == OUTPUT and "also the output" in err, err
    assert _sums(work) == before


def test_an_existing_report_is_replaced_only_with_overwrite(work, capsys):
    plot = work / "plot.png"
    plot.write_bytes(b"my own picture")
    before = _sums(work)
    rc, _, err = _cli(capsys, work / "in.wav", "-o", work / "o.opus", "--report", plot)
    assert rc == OUTPUT and "plot.png already exists" in err and "--overwrite" in err, err
    assert _sums(work) == before, "no audio written either: the check comes before the work"
    rc, _, err = _cli(capsys, work / "in.wav", "-o", work / "o.opus", "--report", plot, "--overwrite")
    assert rc == 0, err
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (work / "o.opus").stat().st_size > 0
    _no_litter(work)


def test_ladder_reports_are_checked_before_any_work(work):
    (work / "out").mkdir()
    mine = work / "plot.mos4.png"
    mine.write_bytes(b"mine")
    probes = _Probes()
    with pytest.raises(errors.OutputError, match="plot.mos4.png already exists"):
        ratecontrol.encode_ladder(work / "in.wav", work / "out", targets=[3.5, 4.0], report=work / "plot.png",
                                  cache=False, on_probe=probes)
    assert probes.n == 0 and mine.read_bytes() == b"mine" and not list((work / "out").iterdir())


# --------------------------------------------------------------------------- the final move


def test_a_file_that_appears_at_the_output_during_the_run_is_kept(work):
    out = work / "o.opus"

    def appear(probe):  # the user (or another program) saves a file there mid-run
        if not out.exists():
            out.write_bytes(b"the user's file")

    with pytest.raises(errors.OutputError, match="appeared or changed while this run was writing it"):
        ratecontrol.encode(work / "in.wav", out, target_mos=3.5, cache=False, on_probe=appear)
    assert out.read_bytes() == b"the user's file"
    _no_litter(work)


def test_with_overwrite_only_the_file_found_at_the_start_is_replaced(work):
    out = work / "o.opus"
    out.write_bytes(b"old output")

    def rewrite(probe):  # replaced by another program during the run
        if out.read_bytes() == b"old output":
            tmp = work / "elsewhere"
            tmp.write_bytes(b"newer file")
            tmp.replace(out)

    with pytest.raises(errors.OutputError, match="appeared or changed"):
        ratecontrol.encode(work / "in.wav", out, target_mos=3.5, cache=False, overwrite=True, on_probe=rewrite)
    assert out.read_bytes() == b"newer file"
    _no_litter(work)
    # unchanged during the run: replaced, as asked
    res = ratecontrol.encode(work / "in.wav", out, target_mos=3.5, cache=False, overwrite=True)
    assert res.output_path == str(out) and media.inspect(out).duration_s > 1.5


def test_three_threads_encoding_to_one_output_one_wins(work):
    out = work / "o.opus"
    outcomes: list = []
    start = threading.Barrier(3)

    def one():
        start.wait()
        try:
            outcomes.append(ratecontrol.encode(work / "in.wav", out, target_mos=3.5, cache=False))
        except errors.RatecontrolError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wins = [o for o in outcomes if isinstance(o, ratecontrol.EncodeResult)]
    losses = [o for o in outcomes if isinstance(o, errors.OutputError)]
    assert len(wins) == 1 and len(losses) == 2, outcomes
    assert all(o.exit_code == OUTPUT and "\n" not in str(o) for o in losses)
    assert out.stat().st_size == wins[0].output_bytes
    _no_litter(work)


def test_publish_never_replaces_a_file_that_appeared(tmp_path):
    """The rule itself, without an encode: a claim of a free path, then a file there."""
    dest = fsutil.claim_output(tmp_path / "x.bin", overwrite=False)
    (tmp_path / "x.bin").write_bytes(b"theirs")
    tmp = fsutil.temp_sibling(tmp_path / "x.bin")
    tmp.write_bytes(b"ours")
    with pytest.raises(errors.OutputError, match="appeared"):
        fsutil.publish(tmp, dest)
    assert (tmp_path / "x.bin").read_bytes() == b"theirs" and tmp.exists()  # the caller removes its temp
    tmp.unlink()
    # a claim with overwrite of an existing file: replaced while it is that file
    again = fsutil.claim_output(tmp_path / "x.bin", overwrite=True)
    with fsutil.atomic_output(again) as t2:
        t2.write_bytes(b"ours")
    assert (tmp_path / "x.bin").read_bytes() == b"ours"
    _no_litter(tmp_path)


def test_claims_refuse_inputs_hard_links_and_other_outputs(tmp_path):
    a = tmp_path / "a.wav"
    a.write_bytes(b"input")
    os_link = tmp_path / "link.wav"
    os_link.hardlink_to(a)
    for bad in (a, os_link, tmp_path / "." / "a.wav"):
        with pytest.raises(errors.OutputError, match="is an input of this run"):
            fsutil.claim_output(bad, overwrite=True, inputs=[a])
    first = fsutil.claim_output(tmp_path / "o.opus", overwrite=False)
    with pytest.raises(errors.OutputError, match="also the output of this run"):
        fsutil.claim_output(tmp_path / "o.opus", overwrite=True, outputs=[first], what="report")


# --------------------------------------------------------------------------- checks before work


def test_codec_auto_checks_the_output_before_the_search(work, capsys):
    probes = _Probes()
    with pytest.raises(errors.OutputError, match=r"\.wav, which none of .* writes"):
        ratecontrol.encode(work / "in.wav", work / "x.wav", target_mos=3.5, codec="auto", cache=False,
                           on_probe=probes)
    (work / "taken.opus").write_bytes(b"mine")
    with pytest.raises(errors.OutputError, match="already exists"):
        ratecontrol.encode(work / "in.wav", work / "taken.opus", target_mos=3.5, codec="auto", cache=False,
                           on_probe=probes)
    with pytest.raises(errors.OutputError, match="folder does not exist"):
        ratecontrol.encode(work / "in.wav", work / "nodir" / "x.opus", target_mos=3.5, codec="auto", cache=False,
                           on_probe=probes)
    assert probes.n == 0, "no probe before the output check"
    assert (work / "taken.opus").read_bytes() == b"mine" and not (work / "nodir").exists()


def test_codec_auto_with_an_extension_searches_the_presets_that_write_it(work):
    """-o x.m4a: the AAC presets, not an Opus win that cannot be written there."""
    res = ratecontrol.encode(work / "in.wav", work / "x.m4a", target_mos=3.5, codec="auto", cache=False)
    assert ratecontrol.load_preset(res.preset).extension == ".m4a", res.search.notes
    assert Path(res.output_path) == work / "x.m4a" and "opus" not in res.search.notes[-1]


def test_codec_auto_to_an_extension_whose_presets_cannot_carry_the_track_probes_nothing(tmp_path):
    src = tmp_path / "surround.wav"
    sf.write(src, Synth(5).music(48_000, channels=6, duration_s=1.0, amplitude=0.2).T, 48_000, subtype="PCM_16")
    probes = _Probes()
    with pytest.raises(errors.OutputError, match="cannot carry 6 channels"):
        ratecontrol.encode(src, tmp_path / "x.mp3", target_mos=3.5, codec="auto", cache=False, on_probe=probes)
    assert probes.n == 0 and not (tmp_path / "x.mp3").exists()
    _no_litter(tmp_path)


def test_a_missing_output_folder_is_refused_for_one_file_and_for_a_ladder(work, capsys):
    """The one rule (docs/reliability.md "Class 1"): ratecontrol never creates the folder
    an encode's output goes into; batch's OUT_DIR tree is batch's own."""
    rc, _, err = _cli(capsys, work / "in.wav", "-o", work / "nodir" / "x.opus")
    assert rc == OUTPUT and "folder does not exist" in err and "create it first" in err, err
    rc, _, err = run_cli(["encode", str(work / "in.wav"), "--target-mos", "3.5,4.0", "-o", str(work / "nodir"),
                          "--no-cache"], capsys)
    assert rc == OUTPUT and "folder does not exist" in err and "create it first" in err, err
    assert not (work / "nodir").exists()


@pytest.fixture(scope="module")
def film(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("film")
    p = d / "film.mkv"
    subprocess.run([media.ffmpeg_path(), "-hide_banner", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=64x48:rate=5:d=2", "-f", "lavfi", "-i", "sine=f=440:beep_factor=4:d=2",
                    "-c:v", "mpeg4", "-c:a", "flac", str(p)], check=True)
    return p


def test_a_film_to_a_name_without_extension_gets_the_inputs_container(film, tmp_path):
    (tmp_path / "film.mkv").write_bytes(film.read_bytes())
    before = _sums(tmp_path)
    with pytest.raises(errors.OutputError, match="report .*film.mkv is an input of this run"):
        ratecontrol.encode(tmp_path / "film.mkv", tmp_path / "o.mkv", target_mos=3.5, cache=False,
                           report=tmp_path / "film.mkv")
    assert _sums(tmp_path) == before
    taken = tmp_path / "filmnoext.mkv"
    taken.write_bytes(b"mine")
    probes = _Probes()
    with pytest.raises(errors.OutputError, match="filmnoext.mkv already exists"):  # decided before any work
        ratecontrol.encode(tmp_path / "film.mkv", tmp_path / "filmnoext", target_mos=3.5, cache=False,
                           on_probe=probes)
    assert probes.n == 0 and taken.read_bytes() == b"mine"
    taken.unlink()
    res = ratecontrol.encode(tmp_path / "film.mkv", tmp_path / "filmnoext", target_mos=3.5, cache=False)
    assert res.output_path == str(taken)
    info = media.inspect(taken)
    assert info.audio_streams == 1 and info.other_streams == 1
    _no_litter(tmp_path)


# --------------------------------------------------------------------------- batch's reports


@pytest.fixture
def tree(song, tmp_path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.wav").write_bytes(song.read_bytes())
    return tmp_path


def _batch(capsys, tree: Path, *args):
    return run_cli(["batch", str(tree / "in"), str(tree / "out"), "--target-mos", "3.5", "--no-cache", "-j", "1",
                    "--no-progress", *map(str, args)], capsys)


@pytest.mark.parametrize("flag, where", [("--csv-report", "in/a.wav"), ("--json-report", "out/a.opus"),
                                         ("--json-report", "out/.ratecontrol-manifest.jsonl")])
def test_batch_reports_are_never_an_input_or_an_output_of_the_run(tree, capsys, flag, where):
    before = _sums(tree / "in")
    rc, out, err = _batch(capsys, tree, flag, tree / where)
    assert rc == OUTPUT, (out, err)
    line = [ln for ln in err.splitlines() if "error" in ln]
    assert len(line) == 1 and ("is an input of this run" in line[0] or "of this run" in line[0]), err
    assert _sums(tree / "in") == before
    assert not [p for p in (tree / "out").rglob("*") if p.is_file()], "nothing encoded: checked before any work"


def test_batch_reports_are_not_one_file_and_replace_only_their_own(tree, capsys):
    rc, _, err = _batch(capsys, tree, "--json-report", tree / "r.txt", "--csv-report", tree / "r.txt")
    assert rc == OUTPUT and "also the JSON report of this run" in err, err
    mine = tree / "notes.csv"
    mine.write_text("my,own,table\n")
    rc, _, err = _batch(capsys, tree, "--csv-report", mine)
    assert rc == OUTPUT and "already exists" in err and "--overwrite" in err, err
    assert mine.read_text() == "my,own,table\n"
    # a report batch wrote is replaced by a rerun of the same command, no flag needed
    rc, _, err = _batch(capsys, tree, "--csv-report", tree / "r.csv", "--json-report", tree / "r.json")
    assert rc == 0, err
    first = (tree / "r.json").read_text()
    rc, _, err = _batch(capsys, tree, "--csv-report", tree / "r.csv", "--json-report", tree / "r.json")
    assert rc == 0, err
    assert (tree / "r.json").read_text() != first and '"resumed": true' in (tree / "r.json").read_text()
    _no_litter(tree)
