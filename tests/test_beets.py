"""The beets plugin (beetsplug/ratecontrol.py) against a real, temporary beets library:
`rcconvert` writes path-format destinations with the codec's extension and the
database's tags, records rc_* flexible attributes, reports a broken item in one line
and fails at the end, and a second run does nothing (resumable)."""
from __future__ import annotations

import pytest

pytest.importorskip("beets")
sf = pytest.importorskip("soundfile")

import mediafile  # noqa: E402  (a beets dependency)
from beets import config, plugins, ui  # noqa: E402
from beets.library import Item, Library  # noqa: E402

TRACKS = [
    # (file, title, artist, album, track, base frequency)
    ("a.flac", "Tone One", "Artist A", "Album X", 1, 220.0),
    ("b.flac", "Tone Two", "Artist B", "Album Y", 2, 330.0),
]


@pytest.fixture
def beets_lib(tmp_path, monkeypatch, synth):
    """A real beets library and config in tmp_path with the ratecontrol plugin loaded."""
    monkeypatch.setenv("BEETSDIR", str(tmp_path / "beetsdir"))
    monkeypatch.setenv("HOME", str(tmp_path))
    config.clear()
    config.read(user=False, defaults=True)
    config["plugins"] = ["ratecontrol"]
    config["directory"] = str(tmp_path / "music")
    config["library"] = str(tmp_path / "library.db")
    # the items are singletons (no album rows); both formats say the same
    config["paths"] = {"default": "$artist/$album/$track $title", "singleton": "$artist/$album/$track $title"}
    config["ratecontrol"]["dest"] = str(tmp_path / "encoded")
    config["ratecontrol"]["cache"] = False
    config["ratecontrol"]["formats"] = {"opus": {"target_mos": 3.5}}
    plugins.BeetsPlugin.listeners.clear()
    plugins._instances.clear()
    import inspect

    if inspect.signature(plugins.load_plugins).parameters:  # beets < 2.4 took the names
        plugins.load_plugins(["ratecontrol"])
    else:
        plugins.load_plugins()
    assert [p.name for p in plugins.find_plugins()] == ["ratecontrol"], "beetsplug.ratecontrol did not load (reinstall: pip install -e .)"
    lib = Library(config["library"].as_filename(), config["directory"].as_filename())
    src = tmp_path / "src"
    src.mkdir()
    for name, title, artist, album, track, f0 in TRACKS:
        sf.write(src / name, synth.music(44100, channels=2, duration_s=3.0, f0_hz=f0).T, 44100)
        item = Item.from_path(str(src / name))
        item.update({"title": title, "artist": artist, "album": album, "track": track})
        lib.add(item)
    try:
        yield lib, tmp_path
    finally:
        lib._close()
        plugins.BeetsPlugin.listeners.clear()
        plugins._instances.clear()
        config.clear()


def _run(lib, *argv: str):
    cmd = {c.name: c for c in plugins.commands()}["rcconvert"]
    opts, args = cmd.parse_args(list(argv))
    cmd.func(lib, opts, args)


@pytest.mark.timeout(240)
def test_rcconvert_encodes_tags_records_and_resumes(beets_lib, capsys, synth):
    lib, tmp = beets_lib
    # a third item whose file is not audio any more: one line, the others still run
    bad = tmp / "src" / "c.flac"
    sf.write(bad, synth.music(44100, channels=2, duration_s=1.0, f0_hz=440.0).T, 44100)
    item = Item.from_path(str(bad))
    item.update({"title": "Broken", "artist": "Artist C", "album": "Album Z", "track": 3})
    lib.add(item)
    bad.write_bytes(b"not audio at all" * 100)

    with pytest.raises(ui.UserError, match="1 of 3 items failed"):
        _run(lib, "--codec", "opus")
    out = capsys.readouterr().out
    fail_lines = [ln for ln in out.splitlines() if "failed" in ln and "c.flac" in ln]
    assert len(fail_lines) == 1, out
    assert "2 encoded, 0 skipped, 1 failed" in out, out

    for name, title, artist, album, track, _ in TRACKS:
        dest = tmp / "encoded" / artist / album / f"{track:02d} {title}.opus"
        assert dest.is_file(), (dest, out)
        tags = mediafile.MediaFile(str(dest))
        assert (tags.title, tags.artist, tags.album, tags.track) == (title, artist, album, track)
        it = next(i for i in lib.items() if i.title == title)
        assert it["rc_codec"] == "opus"
        assert it["rc_target"] == pytest.approx(3.5)
        assert it["rc_path"] == str(dest)
        assert it["rc_rung"] and it["rc_kbps"] > 0
        assert isinstance(it["rc_mos"], float) and it["rc_mos"] >= 3.5 - 1e-3
    assert not list((tmp / "encoded").rglob(".*")), "a temp file was left behind"
    assert not (tmp / "encoded" / "Artist C").exists()
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp / "encoded").rglob("*.opus")}

    # second run: the two done items are skipped, the broken one fails again
    with pytest.raises(ui.UserError):
        _run(lib)
    out = capsys.readouterr().out
    assert "0 encoded, 2 skipped, 1 failed" in out, out
    assert {p: p.stat().st_mtime_ns for p in (tmp / "encoded").rglob("*.opus")} == mtimes

    # a query for the good items only: nothing to do, no error
    _run(lib, "album:Album X", ",", "album:Album Y")
    assert "0 encoded, 2 skipped, 0 failed" in capsys.readouterr().out

    # other settings re-encode (a different target is a different result)
    _run(lib, "--target-mos", "3.6", "album:Album X")
    assert "1 encoded, 0 skipped, 0 failed" in capsys.readouterr().out
    it = next(i for i in lib.items() if i.title == "Tone One")
    assert it["rc_target"] == pytest.approx(3.6)


def test_step_down_config_reaches_the_options_and_is_no_redo_key(beets_lib):
    """``step_down: false`` turns the check's step down off (Options.step_down); the
    redo key stays the same, so items done with it on are not re-encoded; a value that
    is not a bool is one UserError line."""
    from types import SimpleNamespace

    lib, _ = beets_lib
    plugin = plugins.find_plugins()[0]
    flags = SimpleNamespace(target_mos=None, codec=None, dest=None)
    on = plugin.settings(flags)
    config["ratecontrol"]["step_down"] = False
    off = plugin.settings(flags)
    assert on["options"].step_down is True and off["options"].step_down is False
    assert on["key"] == off["key"]
    config["ratecontrol"]["step_down"] = "no"
    with pytest.raises(ui.UserError, match="step_down must be True or False"):
        plugin.settings(flags)
