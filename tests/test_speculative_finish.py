"""The speculative finish (issue 25 lever 5).

While the knob search probes a setting it may end on, the final encode and full-track
check of that setting run beside the probe (verify.Speculator). The speculative file is
used only when its setting is the one chosen, is never published otherwise, leaves no
temp file when called off, and the reported score is still the shipped file's own.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
import scipy.io.wavfile

from ratecontrol import api, fsutil, media
from ratecontrol.options import Options
from ratecontrol.presets import load_preset
from ratecontrol.probing import encode as encode_mod
from ratecontrol.probing import searching, verify
from ratecontrol.probing.request import EncodeRequest
from ratecontrol.probing.searching import run_search
from ratecontrol.probing.session import open_session

MUSIC = ["flac-test-files/17 - all fixed orders.flac", "flac-test-files/01 - blocksize 4096.flac",
         "sms-tools/cello-phrase.wav"]
RATE = 48_000


@pytest.fixture(scope="module")
def music_wav(shared_audio, tmp_path_factory):
    """~40 s of real stereo music at 48 kHz (long enough to be probed on segments)."""
    parts = [media.decode(shared_audio / m, sample_rate_hz=RATE, channels=2) for m in MUSIC]
    x = np.concatenate(parts * 4, axis=1)[:, : 40 * RATE]
    path = tmp_path_factory.mktemp("spec") / "music.wav"
    scipy.io.wavfile.write(path, RATE, np.ascontiguousarray(x.T).astype(np.float32))
    return path


def _own_score(session, out):
    """The pooled score of the written file, decoded afresh and scored in full."""
    t = session.track
    pr = session.prober(load_preset("opus"))
    deg = media.decode_aligned(out, load_preset("opus"), t.rate_hz, t.channels, t.src.shape[1])
    return verify.score_written(session, pr, deg)[0]


def _temps(folder):
    return [p.name for p in folder.iterdir() if fsutil.is_temp_name(p.name)]


def _searched(path):
    opts = Options(cache=False)
    session = open_session(path, load_preset("opus"), opts, keep_encodes=True)
    pr = session.prober(load_preset("opus"))
    assert pr.source.sampled
    return session, run_search(pr, 4.3, opts), opts


def _writes(monkeypatch):
    """Record the thread of every _write_rung call."""
    calls: list[str] = []
    real = verify._write_rung

    def spy(*a, **k):
        calls.append(threading.current_thread().name)
        return real(*a, **k)
    monkeypatch.setattr(verify, "_write_rung", spy)
    return calls


def test_the_finish_takes_the_speculation_of_the_chosen_setting(music_wav, tmp_path, monkeypatch):
    session, res, opts = _searched(music_wav)
    preset = load_preset("opus")
    out = tmp_path / "o.opus"
    req = EncodeRequest.build(music_wav, out, 4.3, preset, opts, False)
    calls = _writes(monkeypatch)
    spec = verify.Speculator(session, preset, 4.3, music_wav, None, out)
    spec.start(res.chosen.rung_index)
    try:
        enc = verify.finish_encode(req, session, preset, res, music_wav, out, speculation=spec)
        assert spec.used == 1 and spec.live is None
        # the chosen setting was encoded once, by the speculation; the finish only wrote step-ups
        assert calls[0] == "ratecontrol-speculative"
        assert calls[1:] == ["MainThread"] * enc.stepped_up
        assert enc.rung_label == res.chosen.rung_label or enc.stepped_up > 0
        assert enc.full_track_mos == enc.pooled_mos
        assert abs(_own_score(session, out) - enc.pooled_mos) < 1e-6  # the shipped file's own score
        assert _temps(tmp_path) == []
    finally:
        session.close()


def test_a_speculation_of_another_setting_is_dropped_unpublished(music_wav, tmp_path, monkeypatch):
    session, res, opts = _searched(music_wav)
    preset = load_preset("opus")
    pr = session.prober(preset)
    out = tmp_path / "o.opus"
    req = EncodeRequest.build(music_wav, out, 4.3, preset, opts, False)
    other = pr.setting(res.chosen.knob_value * 0.8)
    calls = _writes(monkeypatch)
    spec = verify.Speculator(session, preset, 4.3, music_wav, None, out)
    spec.start(other)
    try:
        enc = verify.finish_encode(req, session, preset, res, music_wav, out, speculation=spec)
        assert spec.used == 0 and spec.live is None
        assert calls[0] == "ratecontrol-speculative" and "MainThread" in calls
        assert enc.knob_value != preset.knob_value(pr.rungs[other])
        assert abs(_own_score(session, out) - enc.pooled_mos) < 1e-6
        assert sorted(p.name for p in tmp_path.iterdir()) == ["o.opus"]  # no temp file left
    finally:
        session.close()


def test_a_dropped_speculation_leaves_nothing(music_wav, tmp_path):
    session = open_session(music_wav, load_preset("opus"), Options(cache=False), keep_encodes=True)
    preset = load_preset("opus")
    out = tmp_path / "o.opus"
    try:
        spec = verify.Speculator(session, preset, 4.3, music_wav, None, out)
        spec.start(session.prober(preset).setting(96.0))
        assert spec.live is not None and _temps(tmp_path)  # its temp file is claimed at once
        spec.drop()
        assert spec.live is None
        assert list(tmp_path.iterdir()) == []  # called off mid-encode: no temp file, nothing published
        spec.start(session.prober(preset).setting(80.0))
        spec.live.result()  # finished, then not taken
        spec.close()
        assert list(tmp_path.iterdir()) == []
    finally:
        session.close()


def test_encode_speculates_and_reports_the_probes_it_made(music_wav, tmp_path, monkeypatch):
    """api.encode with the lever on (speculating beside every probe after the first): the
    on_probe calls are the result's probes, the output is the chosen setting's, its score
    the file's own, and no temp file is left whatever the speculations' fate."""
    monkeypatch.setattr(searching, "SPECULATE_ON", "any")
    log: list[tuple[str, int]] = []
    real_start, real_take = verify.Speculator.start, verify.Speculator.take

    def start(self, i):
        log.append(("start", i))
        real_start(self, i)

    def take(self, i):
        got = real_take(self, i)
        log.append(("take", i if got is not None else -1))
        return got
    monkeypatch.setattr(verify.Speculator, "start", start)
    monkeypatch.setattr(verify.Speculator, "take", take)
    monkeypatch.setattr(encode_mod, "SPECULATE", True)
    seen = []
    out = tmp_path / "o.opus"
    enc = api.encode(music_wav, out, target_mos=4.3, codec="opus", cache=False, on_probe=seen.append)
    assert [p.rung_label for p in seen] == [p.rung_label for p in enc.search.probes]
    assert [p.pooled_mos for p in seen] == [p.pooled_mos for p in enc.search.probes]
    assert any(k == "start" for k, _ in log)
    session = open_session(music_wav, load_preset("opus"), Options(cache=False))
    try:
        assert abs(_own_score(session, out) - enc.pooled_mos) < 1e-6
    finally:
        session.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.opus"]


def test_no_speculation_for_a_batch_worker_or_without_the_check(music_wav, tmp_path, monkeypatch):
    monkeypatch.setattr(encode_mod, "SPECULATE", True)
    made = []
    real = verify.Speculator.__init__

    def init(self, *a, **k):
        made.append(1)
        real(self, *a, **k)
    monkeypatch.setattr(verify.Speculator, "__init__", init)
    api.encode(music_wav, tmp_path / "a.opus", target_mos=4.3, codec="opus", cache=False, jobs=1)
    api.encode(music_wav, tmp_path / "b.opus", target_mos=4.3, codec="opus", cache=False, verify=False)
    assert made == []
