"""The search's first round is encoded while the scorer loads (issue 13, start-up off the
critical path): the probes take those encodes, score the same, and nothing is left behind."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from ratecontrol import fsutil, media
from ratecontrol.options import Options
from ratecontrol.presets import load_preset
from ratecontrol.probing import session as session_module
from ratecontrol.probing.prober import run_search
from ratecontrol.probing.session import open_session
from ratecontrol.scoring import get_scorer
from ratecontrol.search import first_probes

SR = 48_000


def _music(seconds=4.0, seed=1):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = sum(0.06 * np.sin(2 * np.pi * f * t) for f in (196, 247, 294, 392))
    x = x + 0.02 * rng.standard_normal(t.size) * (np.sin(2 * np.pi * 2 * t) > 0)
    return np.stack([x, np.roll(x, 80)]).astype(np.float32)


@pytest.fixture
def roundtrips(monkeypatch):
    calls = []
    real = media.roundtrip_info

    def spy(*a, **k):
        calls.append((a[3].label if hasattr(a[3], "label") else a[3], time.perf_counter()))
        return real(*a, **k)

    monkeypatch.setattr(media, "roundtrip_info", spy)
    return calls


def _opts():
    return Options(scorer="learned", pool="p10", hop_s=1.0, sample_share=1.0, cache=False)


def test_prefetched_first_round_is_taken_by_the_probes_with_the_same_scores(roundtrips):
    audio, preset, scorer = _music(), load_preset("opus"), get_scorer("learned")
    plain = open_session(audio, preset, _opts(), SR, scorer=scorer)
    want = run_search(plain.prober(preset), 4.2, best_effort=True)
    n_plain = len(roundtrips)
    roundtrips.clear()

    s = open_session(audio, preset, _opts(), SR, scorer=scorer)
    s.prefetch(preset)
    first = first_probes(len(s.prober(preset).rungs), s.prober(preset).parallel)
    got = run_search(s.prober(preset), 4.2, best_effort=True)
    assert len(roundtrips) == n_plain, "a prefetched rung is not encoded twice"
    assert {p.rung_index for p in got.probes[: len(first)]} == set(first)
    assert [(p.rung_index, p.window_mos) for p in got.probes] == [(p.rung_index, p.window_mos) for p in want.probes]
    assert s.prober(preset).prefetched == {}, "every prefetched encode was taken"
    s.close()
    plain.close()


def test_prefetch_nobody_takes_leaves_no_file_behind(roundtrips):
    before = set(fsutil.run_temp_dir().iterdir())
    preset = load_preset("opus")
    s = open_session(_music(), preset, _opts(), SR, scorer=get_scorer("learned"), keep_encodes=True)
    s.prefetch(preset, threading.Event())  # a scorer that never loads: every speculation runs
    s.close()  # e.g. every first-round rung was a probe-cache hit
    assert len(roundtrips) == 2 + session_module.SPECULATE_MAX
    assert set(fsutil.run_temp_dir().iterdir()) == before


def test_open_session_encodes_the_first_round_while_the_scorer_loads(roundtrips, monkeypatch):
    loaded = threading.Event()
    real = session_module.resolve_scorer

    def slow(*a, **k):
        time.sleep(1.5)  # what torch's import costs a fresh process
        sc = real(*a, **k)
        loaded.set()
        return sc

    monkeypatch.setattr(session_module, "resolve_scorer", slow)
    t0 = time.perf_counter()
    preset = load_preset("opus")
    s = open_session(_music(), preset, _opts(), SR)
    t_loaded = time.perf_counter()
    assert loaded.is_set() and s.scorer is not None
    assert roundtrips and all(t < t_loaded for _, t in roundtrips), "the encodes started before the scorer was ready"
    res = run_search(s.prober(preset), 4.2, best_effort=True)
    assert res.chosen is not None and len(res.probes) >= 1
    stats = s.prefetch_stats()
    n_first = len(first_probes(len(s.prober(preset).rungs), s.prober(preset).parallel))
    # the first round and some speculations next to it were encoded while loading
    assert n_first < stats["prefetched"] <= n_first + session_module.SPECULATE_MAX
    assert n_first <= stats["taken"] <= min(stats["prefetched"], len(res.probes))
    s.close()
    assert t_loaded - t0 >= 1.5


def test_speculation_stops_once_the_scorer_is_ready(roundtrips):
    loaded = threading.Event()
    loaded.set()  # the scorer is already there: only the first round is encoded
    preset = load_preset("opus")
    s = open_session(_music(), preset, _opts(), SR, scorer=get_scorer("learned"))
    s.prefetch(preset, loaded)
    run_search(s.prober(preset), 4.2, best_effort=True)
    assert s.prefetch_stats()["prefetched"] == len(first_probes(len(s.prober(preset).rungs), s.prober(preset).parallel))
    s.close()


def test_first_probes_is_what_the_search_probes_first():
    from ratecontrol.search import search_ladder

    for n in (1, 2, 5, 13):
        for k in (1, 2):
            calls = []

            def ev(i):
                calls.append(i)
                return 5.0

            search_ladder(n, ev, 4.0, parallel=k, evaluate_many=lambda idx: [ev(i) for i in idx])
            assert calls[: len(first_probes(n, k))] == first_probes(n, k)
