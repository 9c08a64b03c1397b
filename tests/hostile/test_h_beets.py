"""Issue 26 item 2 (and issue 23 class 1's beets case) on a real temporary beets
library: records per (item, destination, codec), one file per item when path formats
collide, and a destination inside the library never replaces an item's own file."""
from __future__ import annotations

import pytest

pytest.importorskip("beets")
sf = pytest.importorskip("soundfile")

from beets import config, ui  # noqa: E402
from beets.library import Item  # noqa: E402

from ratecontrol import fsutil  # noqa: E402
from test_beets import _run, beets_lib  # noqa: E402,F401  (the fixture: a real library)


def _sums(folder):
    return {p: fsutil.file_digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _no_litter(folder):
    assert not [p for p in folder.rglob("*") if fsutil.is_temp_name(p.name)]


@pytest.mark.timeout(300)
def test_two_destinations_keep_their_own_records(beets_lib, capsys):
    """README workflow: an MP3 copy for the car, the Opus copy for the phone, both
    kept up to date; neither run takes the other's file for a stranger's."""
    lib, tmp = beets_lib
    mp3 = tmp / "mp3"
    _run(lib, "-c", "mp3-vbr", "-d", str(mp3), "-t", "3.5", "title:Tone One")
    _run(lib, "title:Tone One")  # the config's opus destination
    assert "1 encoded, 0 skipped, 0 failed" in capsys.readouterr().out
    opus_file = tmp / "encoded" / "Artist A" / "Album X" / "01 Tone One.opus"
    mp3_file = mp3 / "Artist A" / "Album X" / "01 Tone One.mp3"
    assert opus_file.is_file() and mp3_file.is_file()
    # each destination again: skipped, not "exists and was not written by rcconvert"
    _run(lib, "-c", "mp3-vbr", "-d", str(mp3), "-t", "3.5", "title:Tone One")
    assert "0 encoded, 1 skipped, 0 failed" in capsys.readouterr().out
    _run(lib, "title:Tone One")
    assert "0 encoded, 1 skipped, 0 failed" in capsys.readouterr().out


@pytest.mark.timeout(300)
def test_items_whose_paths_collide_get_one_file_each(beets_lib, capsys, synth):
    """Untagged items (``beet import -A``) share one path-format path: each gets its
    own file (``name.1.opus``, ...), its own rc_path, and keeps it on later runs."""
    lib, tmp = beets_lib
    for k in range(3):
        p = tmp / "src" / f"untagged{k}.flac"
        sf.write(p, synth.music(44100, channels=1, duration_s=2.0, f0_hz=200.0 + 50 * k).T, 44100)
        item = Item.from_path(str(p))
        item.update({"title": "", "artist": "", "album": "", "track": 0})
        lib.add(item)
    _run(lib, "path::untagged")
    out = capsys.readouterr().out
    assert "3 encoded, 0 skipped, 0 failed" in out, out
    items = list(lib.items("path::untagged"))
    paths = {it["rc_path"] for it in items}
    assert len(paths) == 3, paths
    files = _sums(tmp / "encoded")
    assert len(files) == 3 and len(set(files.values())) == 3, "three different files"
    # again: every item finds its own file
    _run(lib, "path::untagged")
    assert "0 encoded, 3 skipped, 0 failed" in capsys.readouterr().out
    # --force: each rewrites its own file, never another item's
    _run(lib, "-f", "path::untagged")
    assert "3 encoded, 0 skipped, 0 failed" in capsys.readouterr().out
    assert {it["rc_path"] for it in lib.items("path::untagged")} == paths
    assert len(_sums(tmp / "encoded")) == 3
    _no_litter(tmp / "encoded")


@pytest.mark.timeout(300)
def test_a_destination_in_the_library_never_replaces_an_items_own_file(beets_lib, capsys, synth):
    """`beet rcconvert -d <library dir> -f` where a path-format path is another item's
    own Opus file: that file is kept; the encode goes to ``name.1.opus``."""
    lib, tmp = beets_lib
    music = tmp / "music"
    theirs = music / "Artist A" / "Album X" / "01 Tone One.opus"
    theirs.parent.mkdir(parents=True)
    (tmp / "enc").mkdir()
    sf.write(tmp / "enc" / "x.wav", synth.music(44100, channels=2, duration_s=2.0).T, 44100)
    import subprocess

    from ratecontrol import media

    subprocess.run([media.ffmpeg_path(), "-v", "error", "-i", str(tmp / "enc" / "x.wav"), "-c:a", "libopus",
                    str(theirs)], check=True)
    other = Item.from_path(str(theirs))
    other.update({"title": "Another song", "artist": "Someone", "album": "Else", "track": 9})
    lib.add(other)
    before = fsutil.file_digest(theirs)
    _run(lib, "-d", str(music), "-f", "title:Tone One")
    out = capsys.readouterr().out
    assert "1 encoded, 0 skipped, 0 failed" in out and "library item's own file" in out, out
    assert fsutil.file_digest(theirs) == before
    it = next(iter(lib.items("title:Tone One")))
    assert it["rc_path"] == str(theirs.with_name("01 Tone One.1.opus"))
    _no_litter(music)


@pytest.mark.timeout(120)
def test_a_stray_file_is_refused_without_force(beets_lib, capsys):
    lib, tmp = beets_lib
    stray = tmp / "encoded" / "Artist A" / "Album X" / "01 Tone One.opus"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"the user's own file")
    with pytest.raises(ui.UserError, match="1 of 1 items failed"):
        _run(lib, "title:Tone One")
    assert "was not written by rcconvert for this item; --force replaces it" in capsys.readouterr().out
    assert stray.read_bytes() == b"the user's own file"
    assert config["ratecontrol"]["dest"].get()  # the fixture's destination was used


@pytest.mark.timeout(300)
def test_items_left_sharing_one_file_by_an_older_version_get_one_each(beets_lib, capsys, synth):
    """Before records per output, `-f` left three untagged items with one rc_path: a
    rerun gives each its own file and the records stop sharing."""
    lib, tmp = beets_lib
    shared = tmp / "encoded" / "__" / "00.opus"  # the path format of an untagged item
    shared.parent.mkdir(parents=True)
    shared.write_bytes(b"written three times")
    for k in range(3):
        p = tmp / "src" / f"old{k}.flac"
        sf.write(p, synth.music(44100, channels=1, duration_s=2.0, f0_hz=300.0 + 40 * k).T, 44100)
        item = Item.from_path(str(p))
        item.update({"title": "", "artist": "", "album": "", "track": 0, "rc_path": str(shared),
                     "rc_settings": "an older version's"})
        lib.add(item)
    _run(lib, "path::old")
    assert "3 encoded, 0 skipped, 0 failed" in capsys.readouterr().out
    paths = [it["rc_path"] for it in lib.items("path::old")]
    assert len(set(paths)) == 3 and str(shared) in paths
    _run(lib, "path::old")
    assert "0 encoded, 3 skipped, 0 failed" in capsys.readouterr().out
    assert sorted(it["rc_path"] for it in lib.items("path::old")) == sorted(paths)
