"""What batch says (issue 23, class 7): no rename reported that was not done (`--video
keep` writes the input's own name), every entry of IN_DIR accounted for (a FIFO, a link
to /dev/zero, a dangling or looping link, a link to a folder: `skipped` with the reason
in the records, the summary and the JSON report), and the `--overwrite` hint only where
`--overwrite` would help. Real ffmpeg, 1-s inputs, the learned scorer."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from ratecontrol import media
from ratecontrol.batch import transcode_folder
from ratecontrol.batch._plan import scan
from ratecontrol.cli._common import spell_flag
from ratecontrol.cli.batch import batch_command

KW = dict(target_mos=3.6, codec="opus", scorer="learned", jobs=1, progress=False)


def _wav(path: Path, freq: float = 440.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(44100) / 44100
    x = 0.3 * np.sin(2 * np.pi * freq * t)
    sf.write(path, np.stack([x, 0.6 * x]).T, 44100)
    return path


def _film(path: Path) -> Path:
    import subprocess

    subprocess.run([media.ffmpeg_path(), "-hide_banner", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=64x48:rate=5:d=1", "-f", "lavfi", "-i", "sine=f=330:d=1", "-c:v", "mpeg4",
                    "-c:a", "flac", "-shortest", str(path)], check=True, capture_output=True)
    return path


# ------------------------------------------------------------------ --video keep: no rename it did not do


@pytest.mark.parametrize("video", ["keep", "audio"])
def test_a_rename_is_reported_only_when_the_output_was_written_under_it(tmp_path, video):
    """film.flac takes film.opus; film.mkv plans film.mkv.opus. --video keep writes
    film.mkv in place: no rename to report. --video audio writes film.mkv.opus: reported."""
    src, out = tmp_path / "in", tmp_path / "out"
    _wav(src / "film.flac")
    _film(src / "film.mkv")
    rep = transcode_folder(src, out, video=video, **KW)
    rec = {r.input: r for r in rep.records}["film.mkv"]
    assert rec.status == "encoded", rec.reason
    renames = [ln for ln in rep.summary_lines() if ln.startswith("renamed:")]
    if video == "keep":
        assert rec.output == "film.mkv" and (out / "film.mkv").is_file()
        assert rec.collision == "" and not rep.collisions and not renames, renames
        assert rep.to_dict()["collisions"] == []
    else:
        assert rec.output == "film.mkv.opus" and (out / "film.mkv.opus").is_file()
        assert rec.collision and [c.output for c in rep.collisions] == ["film.mkv.opus"]
        assert renames == ["renamed: film.mkv -> film.mkv.opus (film.opus is taken by film.flac)"]


# ------------------------------------------------------------------ entries the walk does not read


@pytest.fixture
def odd_tree(tmp_path) -> Path:
    src = tmp_path / "in"
    _wav(src / "a.wav")
    os.mkfifo(src / "pipe.wav")
    (src / "zero.wav").symlink_to("/dev/zero")
    (src / "gone.flac").symlink_to(tmp_path / "missing.flac")
    (src / "loop.wav").symlink_to(src / "loop.wav")
    elsewhere = tmp_path / "elsewhere"
    _wav(elsewhere / "b.wav", freq=330)
    (src / "linked").symlink_to(elsewhere)
    (src / "sub").mkdir()
    (src / "sub" / "song.wav").symlink_to(src / "a.wav")  # a link to a regular file is an input
    return src


REASONS = {
    "pipe.wav": "not a regular file: a named pipe (FIFO)",
    "zero.wav": "not a regular file: a link to /dev/zero, a character device",
    "gone.flac": "which does not exist (a dangling link)",
    "loop.wav": "that cannot be followed",
    "linked": "batch does not follow links to folders",
}


def test_scan_accounts_for_every_entry_in_walk_order(odd_tree):
    files, left_out, order = scan(odd_tree, None)
    assert files == ["a.wav", "sub/song.wav"]
    assert set(left_out) == set(REASONS)
    for rel, text in REASONS.items():
        assert text in left_out[rel], (rel, left_out[rel])
    assert order == ["a.wav", "gone.flac", "linked", "loop.wav", "pipe.wav", "zero.wav", "sub/song.wav"]


def test_entries_that_are_not_read_are_skipped_records_with_reasons(odd_tree, tmp_path):
    out = tmp_path / "out"
    rep = transcode_folder(odd_tree, out, json_report=tmp_path / "r.json", **KW)
    recs = {r.input: r for r in rep.records}
    assert [r.input for r in rep.records] == ["a.wav", "gone.flac", "linked", "loop.wav", "pipe.wav", "zero.wav",
                                              "sub/song.wav"]
    assert recs["a.wav"].status == recs["sub/song.wav"].status == "encoded"
    for rel, text in REASONS.items():
        assert recs[rel].status == "skipped" and text in recs[rel].reason
    assert rep.ok and rep.n_skipped == len(REASONS) and rep.n_files == 7
    lines = rep.summary_lines()
    assert "5 skipped (5 not regular files or folder links, not read)" in lines[0]
    for rel in REASONS:
        assert any(ln.startswith(f"skipped: {rel}: not a regular file") for ln in lines), rel
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["summary"]["skipped"] == 5
    assert {r["input"]: r["status"] for r in data["records"]}["zero.wav"] == "skipped"
    # nothing was read from them and nothing of theirs written
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a.opus", "sub"]
    # a rerun resumes the files and reports the same entries again
    again = transcode_folder(odd_tree, out, **KW)
    assert again.n_resumed == 2 and again.n_skipped == 5


def test_a_folder_that_cannot_be_listed_is_reported(tmp_path, monkeypatch):
    """Simulated (root lists any folder): os.walk's error for a sub-folder is a skipped
    entry; for IN_DIR itself an InputError."""
    from ratecontrol.batch import _plan
    from ratecontrol.errors import InputError

    src = tmp_path / "in"
    _wav(src / "a.wav")
    (src / "locked").mkdir()
    _wav(src / "locked" / "b.wav")
    real = os.scandir

    def scandir(path="."):
        if Path(path).name == "locked" or (Path(path) == tmp_path / "in2"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(_plan.os, "scandir", scandir)
    files, left_out, _ = scan(src, None)
    assert files == ["a.wav"]
    assert left_out == {"locked/": "cannot list this folder (permission denied): nothing under it was transcoded; "
                                   "check its permissions"}
    (tmp_path / "in2").mkdir()
    with pytest.raises(InputError, match="cannot list the input folder"):
        scan(tmp_path / "in2", None)


# ------------------------------------------------------------------ the --overwrite hint


def _cli(*args: str):
    return CliRunner().invoke(batch_command, [*args, "--target-mos", "3.6", "--codec", "opus", "--scorer", "learned",
                                              "-j", "1", "--no-progress"])


def test_the_overwrite_hint_shows_only_where_overwrite_would_help(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _wav(src / "a.wav")
    _wav(src / "b.wav", freq=330)
    (out / "a.opus").mkdir(parents=True)  # a folder: never replaced, not even with --overwrite
    (out / "b.opus").write_bytes(b"the user's own file")
    res = _cli(str(src), str(out))
    assert res.exit_code == 1, res.output
    assert "1 file(s) not replaced" in res.output and "--overwrite replaces them" in res.output
    res = _cli(str(src), str(out), "--overwrite")
    assert res.exit_code == 1, res.output  # the folder is still a conflict
    assert "conflict: a.wav" in res.output and "replaced: b.opus" in res.output
    assert "--overwrite replaces them" not in res.output
    assert spell_flag("overwrite", True) == "--overwrite"


def test_a_link_loop_in_out_dir_is_a_conflict_with_its_reason_not_an_internal_error(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _wav(src / "sub" / "a.wav")
    out.mkdir()
    (out / "sub").symlink_to("sub")  # sub -> sub: every path through it loops
    rep = transcode_folder(src, out, **KW)
    (rec,) = rep.records
    assert rec.status == "conflict", rec.reason
    assert "internal error" not in rec.reason and "too many levels of symbolic links" in rec.reason
    assert (out / "sub").is_symlink()
