"""The corpus recipe's pure parts: bandwidth measure, licence parsing, drum arranging.

Fetching Debian packages needs apt and the network, so build_corpus itself is not run
here (docs/data.md has the command and its figures).
"""
from __future__ import annotations

import numpy as np
import pytest

from trainer import corpus as C


def test_spectral_bandwidth_finds_a_codec_lowpass(synth):
    from scipy.signal import butter, sosfiltfilt

    sr = 44100
    x = synth.noise(sr, channels=2, duration_s=3.0)
    # pink-ish tilt like music, then a steep 16-kHz low-pass like a Vorbis q2 encode
    from scipy.signal import lfilter

    tilted = lfilter([1.0], [1.0, -0.9], x, axis=1).astype(np.float32)
    cut = sosfiltfilt(butter(16, 16000, fs=sr, output="sos"), tilted, axis=1)
    bw_full, roll_full = C.spectral_bandwidth(tilted, sr)
    bw_cut, roll_cut = C.spectral_bandwidth(cut, sr)
    assert roll_full > 20000
    assert 15000 < roll_cut < 17500
    assert bw_cut <= bw_full < sr / 2
    assert C.spectral_bandwidth(np.zeros((1, sr)), sr) == (0.0, 0.0)


DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: game

Files: *
Copyright: 2002 Team
License: GPL-2+

Files: debian/*
Copyright: 2013 Maintainer
License: GPL-2+

Files:
 base/music/David01.ogg
 base/music/David02.ogg
Copyright: David
License: CC-BY-3.0

Files: base/music/Psy*.ogg
Copyright: Psy
License: CC-BY-SA-3.0
"""


@pytest.mark.parametrize("installed,expected", [
    ("usr/share/games/game/base/0music.pk3/music/David02.ogg", "CC-BY-3.0"),
    ("usr/share/games/game/music/PsymongN1.ogg", "CC-BY-SA-3.0"),
    ("usr/share/games/game/music/Other.ogg", "GPL-2+"),
])
def test_licence_for_matches_dep5_stanzas_against_installed_paths(installed, expected):
    assert C.licence_for("game-music", DEP5, installed) == expected


def test_licence_for_uses_the_hand_table_and_says_when_unknown():
    assert C.licence_for("nexuiz-music", None, "x.ogg") == "GPL-2+"
    assert C.licence_for("nopkg", None, "x.ogg").startswith("unknown")


def test_drum_categories():
    from trainer.corpus._drums import _drum_category

    assert _drum_category("Kick Hard") == "kick"
    assert _drum_category("Snare Rock") == "snare"
    assert _drum_category("Closed HH") == "hat"
    assert _drum_category("Crash Jazz") == "cymbal"
    assert _drum_category("Cowbell") == "perc"


def test_arrange_pattern_is_seeded_and_not_a_loop_of_one_bar(synth):
    sr = 44100
    shots = {c: [synth.transients(sr, 2, 0.3, n_events=1)] for c in ("kick", "snare", "hat")}
    shots["perc"] = [synth.noise(sr, 2, 0.05)]
    a = C.arrange_pattern(shots, np.random.default_rng(1), 8.0, 120.0)
    b = C.arrange_pattern(shots, np.random.default_rng(1), 8.0, 120.0)
    c = C.arrange_pattern(shots, np.random.default_rng(2), 8.0, 120.0)
    assert a.shape == (2, 8 * sr) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert 0.5 < np.abs(a).max() <= 0.9
    bar = int(sr * 2.0)  # one 4/4 bar at 120 bpm
    assert not np.allclose(a[:, :bar], a[:, bar:2 * bar], atol=1e-3)
