"""The probe cache: nothing read from it runs, damaged entries are misses, LRU cap,
sharing between objects / threads / processes, trust and folder errors."""
from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import stat
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ratecontrol import cache as cache_mod
from ratecontrol.cache import ENTRY_DIR, ProbeCache, canonical_key
from ratecontrol.errors import OutputError, RatecontrolWarning, UsageError

VALUE = {"window_mos": [4.1, 3.9, float("nan")], "encoded_bytes": 1234}


def _key(i=0):
    return {"v": 2, "pcm": "ab" * 32, "spans": [(0, 48000)], "rate": 48000, "i": i,
            "codec": {"encoder": "libopus", "rung_options": [("b:a", "64k")]}}


def _same(a: dict, b: dict) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _entry(c: ProbeCache, key) -> Path:
    return c._entry_path(hashlib.sha256(canonical_key(key).encode()).hexdigest())


class _Marker:
    """Unpickling this creates the marker file: proof that a pickle was executed."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


class _Counter:
    def __init__(self, value=VALUE):
        self.n, self.value = 0, value
        self._lock = threading.Lock()

    def __call__(self):
        with self._lock:
            self.n += 1
        return dict(self.value)


# ------------------------------------------------------------- nothing executes


def test_planted_pickles_never_run(tmp_path):
    d, marker = tmp_path / "c", tmp_path / "EXECUTED"
    evil = pickle.dumps(_Marker(marker))
    ProbeCache(d).get_or_compute(_key(), _Counter())
    # an attacker (or an old joblib cache) puts pickles everywhere: in place of every
    # file the cache wrote, and where joblib kept its outputs
    for f in [p for p in d.rglob("*") if p.is_file()]:
        if f.name not in ("func_code.py", "metadata.json"):  # joblib's own bookkeeping
            f.write_bytes(evil)
    old = d / "joblib" / "ratecontrol" / "cache" / "_compute" / ("0" * 32)
    old.mkdir(parents=True)
    (old / "output.pkl").write_bytes(evil)
    (d / "probes.sqlite3").write_bytes(evil)
    compute = _Counter()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = ProbeCache(d).get_or_compute(_key(), compute)
    assert not marker.exists(), "a pickle from the cache folder was executed"
    assert compute.n == 1 and _same(out, VALUE)
    msgs = [str(x.message) for x in w if issubclass(x.category, RatecontrolWarning)]
    assert len(msgs) == 1 and "does not parse" in msgs[0] and "\n" not in msgs[0]


@pytest.mark.parametrize("kind", ["symlink", "fifo", "huge", "other_key", "not_a_dict", "wrong_format"])
def test_hostile_entries_are_misses(tmp_path, kind):
    c = ProbeCache(tmp_path / "c")
    c.get_or_compute(_key(), _Counter())
    e = _entry(c, _key())
    e.unlink()
    if kind == "symlink":
        e.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(e)
    elif kind == "huge":
        with open(e, "wb") as fh:
            fh.truncate(cache_mod.MAX_ENTRY_BYTES + 10)
    elif kind == "other_key":  # a valid entry of another key copied under this name
        other = ProbeCache(tmp_path / "c")
        other.get_or_compute(_key(1), _Counter({"window_mos": [1.0], "encoded_bytes": 1}))
        e.write_bytes(_entry(other, _key(1)).read_bytes())
    elif kind == "not_a_dict":
        e.write_text(json.dumps({"format": cache_mod.ENTRY_FORMAT, "key": canonical_key(_key()), "value": [1]}))
    else:
        e.write_text(json.dumps({"format": "something/9", "key": canonical_key(_key()), "value": VALUE}))
    compute = _Counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RatecontrolWarning)
        out = ProbeCache(tmp_path / "c").get_or_compute(_key(), compute)  # returns, never hangs
    assert compute.n == 1 and _same(out, VALUE)


def test_corrupt_entry_is_recomputed_and_rewritten(tmp_path):
    c = ProbeCache(tmp_path / "c")
    c.get_or_compute(_key(), _Counter())
    e = _entry(c, _key())
    e.write_bytes(e.read_bytes()[: e.stat().st_size // 2])  # a half-written / damaged file
    c2 = ProbeCache(tmp_path / "c")
    compute = _Counter()
    with pytest.warns(RatecontrolWarning, match="does not parse"):
        assert _same(c2.get_or_compute(_key(), compute), VALUE)
    assert compute.n == 1 and (c2.hits, c2.misses) == (0, 1)
    assert _same(c2.get_or_compute(_key(), compute), VALUE)  # rewritten: now a hit
    assert compute.n == 1 and (c2.hits, c2.misses) == (1, 1)


# ------------------------------------------------------------------ behaviour


def test_hits_misses_and_key_canonical_form(tmp_path):
    c = ProbeCache(tmp_path / "c")
    compute = _Counter()
    first = c.get_or_compute(_key(), compute)
    assert (c.hits, c.misses, compute.n) == (0, 1, 1)
    # the same key with lists for tuples, numpy ints and another dict order is the same entry
    same = {k: _key()[k] for k in reversed(list(_key()))}
    same["rate"] = np.int64(48000)
    same["spans"] = [[0, 48000]]
    again = c.get_or_compute(same, compute)
    assert (c.hits, c.misses, compute.n) == (1, 1, 1)
    assert _same(first, again) and math.isnan(again["window_mos"][2])
    c.get_or_compute(_key(1), compute)
    assert (c.hits, c.misses, compute.n) == (1, 2, 2)


def test_two_caches_on_one_folder_share_entries(tmp_path):
    a, b = ProbeCache(tmp_path / "c"), ProbeCache(tmp_path / "c")
    a.get_or_compute(_key(), _Counter())
    compute = _Counter()
    assert _same(b.get_or_compute(_key(), compute), VALUE) and compute.n == 0 and b.hits == 1


def test_another_process_sees_the_entries(tmp_path):
    code = ("import sys; from ratecontrol.cache import ProbeCache; "
            "c = ProbeCache(sys.argv[1]); "
            "c.get_or_compute({'k': 1}, lambda: {'window_mos': [2.5], 'encoded_bytes': 7}); "
            "print(c.misses)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "1", r.stderr
    c = ProbeCache(tmp_path / "c")
    out = c.get_or_compute({"k": 1}, lambda: pytest.fail("recomputed"))
    assert out == {"window_mos": [2.5], "encoded_bytes": 7} and c.hits == 1


def test_threads_share_one_cache(tmp_path):
    c = ProbeCache(tmp_path / "c")
    compute = {i: _Counter({"window_mos": [float(i)], "encoded_bytes": i}) for i in range(4)}
    errors, results = [], []

    def work(t):
        try:
            for rep in range(5):
                i = (t + rep) % 4
                results.append((i, c.get_or_compute(_key(i), compute[i])))
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 40 and all(r["encoded_bytes"] == i for i, r in results)
    assert c.hits + c.misses == 40
    # each key is computed at least once, and at most by every thread that raced for it
    assert all(1 <= compute[i].n <= 8 for i in range(4)) and c.misses == sum(x.n for x in compute.values())
    assert len(list((tmp_path / "c" / ENTRY_DIR).rglob("*.json"))) == 4
    assert not [p for p in (tmp_path / "c").rglob("*") if p.name.startswith(".rc-tmp.")]


def test_lru_cap_keeps_the_recently_used(tmp_path):
    probe = ProbeCache(tmp_path / "size")
    big = {"window_mos": [0.123456789] * 400, "encoded_bytes": 1}
    probe.get_or_compute(_key(), lambda: big)
    one = _entry(probe, _key()).stat().st_size
    c = ProbeCache(tmp_path / "c", max_mb=3.5 * one / 1e6)
    for i in range(3):
        c.get_or_compute(_key(i), lambda: big)
    ages = {i: 1_000_000 + i for i in range(3)}  # k0 oldest, k2 newest
    for i, t in ages.items():
        os.utime(_entry(c, _key(i)), (t, t))
    c.get_or_compute(_key(0), lambda: pytest.fail("k0 was cached"))  # a hit marks k0 used now
    c.get_or_compute(_key(3), lambda: big)  # over the cap: the least recently used goes
    present = {i for i in range(4) if _entry(c, _key(i)).exists()}
    assert present == {0, 2, 3}
    total = sum(p.stat().st_size for p in (tmp_path / "c").rglob("*") if p.is_file())
    assert total <= 3.5 * one


def test_clear_removes_only_entries(tmp_path):
    d = tmp_path / "c"
    c = ProbeCache(d)
    for i in range(3):
        c.get_or_compute(_key(i), _Counter())
    (d / "notes.txt").write_text("mine")
    (d / ENTRY_DIR / "README").write_text("mine too")
    c.clear()
    assert not list((d / ENTRY_DIR).rglob("*.json"))
    assert (d / "notes.txt").exists() and (d / ENTRY_DIR / "README").exists()
    compute = _Counter()
    c.get_or_compute(_key(0), compute)
    assert compute.n == 1


def test_disabled_cache_touches_nothing(tmp_path):
    c = ProbeCache(tmp_path / "c", enabled=False)
    compute = _Counter()
    c.get_or_compute(_key(), compute)
    c.get_or_compute(_key(), compute)
    assert compute.n == 2 and c.misses == 2 and not (tmp_path / "c").exists()


def test_cache_pickles_into_a_worker(tmp_path):
    c = ProbeCache(tmp_path / "c")
    c.get_or_compute(_key(), _Counter())
    c2 = pickle.loads(pickle.dumps(c))
    assert _same(c2.get_or_compute(_key(), lambda: pytest.fail("miss")), VALUE)


# ------------------------------------------------------------ arguments, folders


@pytest.mark.parametrize("bad", [-1, -0.001, float("nan"), "big", None, True])
def test_bad_max_mb_is_a_usage_error(tmp_path, bad):
    with pytest.raises(UsageError, match="max_mb"):
        ProbeCache(tmp_path / "c", max_mb=bad)


@pytest.mark.parametrize("ok", [0, 0.5, float("inf")])
def test_max_mb_edge_values(tmp_path, ok):
    c = ProbeCache(tmp_path / "c", max_mb=ok)
    compute = _Counter()
    c.get_or_compute(_key(), compute)
    c.get_or_compute(_key(), compute)
    assert compute.n == (2 if ok == 0 else 1)  # a 0-MB cap keeps nothing


def test_cache_dir_that_is_a_file(tmp_path):
    f = tmp_path / "c"
    f.write_text("x")
    with pytest.raises(OutputError, match=r"is a file, not a folder") as ei:
        ProbeCache(f)
    assert "\n" not in str(ei.value) and "--" not in str(ei.value)
    assert ei.value.options == {"cache_dir": "DIR", "cache": False}
    with pytest.raises(OutputError, match="cannot create"):
        ProbeCache(f / "sub")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only (0555) folders anyway")
def test_read_only_cache_dir(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="read-only"):
            ProbeCache(d)
        with pytest.raises(OutputError, match="cannot create"):
            ProbeCache(d / "sub")
    finally:
        d.chmod(0o755)


def test_world_writable_folder_is_not_used(tmp_path):
    d = tmp_path / "open"
    d.mkdir()
    ProbeCache(d).get_or_compute(_key(), _Counter())  # a valid entry, before the chmod
    d2 = tmp_path / "open2"  # the check is once per folder per process: use a new one
    d.rename(d2)
    d2.chmod(0o777)
    with pytest.warns(RatecontrolWarning, match=r"not used .*writable by group or others"):
        c = ProbeCache(d2)
    compute = _Counter()
    c.get_or_compute(_key(), compute)
    c.get_or_compute(_key(), compute)
    assert compute.n == 2 and c.hits == 0 and not c.usable


def test_sticky_world_writable_folder_is_used(tmp_path):
    d = tmp_path / "sticky"
    d.mkdir()
    d.chmod(0o1777)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RatecontrolWarning)
        c = ProbeCache(d)
        c.get_or_compute(_key(), _Counter())
        compute = _Counter()
        c.get_or_compute(_key(), compute)
    assert compute.n == 0 and c.usable


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a folder to another user")
def test_folder_or_entry_of_another_user_is_not_read(tmp_path):
    d = tmp_path / "theirs"
    d.mkdir()
    os.chown(d, 54321, -1)
    with pytest.warns(RatecontrolWarning, match=r"owned by uid 54321"):
        c = ProbeCache(d)
    assert not c.usable
    # a trusted folder with one entry file of another user: that entry is refused
    mine = tmp_path / "mine"
    ProbeCache(mine).get_or_compute(_key(), _Counter())
    e = _entry(ProbeCache(mine), _key())
    os.chown(e, 54321, -1)
    compute = _Counter()
    with pytest.warns(RatecontrolWarning, match="owned by uid 54321"):
        ProbeCache(mine).get_or_compute(_key(), compute)
    assert compute.n == 1


def test_cli_cache_dir_errors_are_one_line(tmp_path, capsys):
    from ratecontrol import cli

    wav = tmp_path / "a.wav"
    sf.write(str(wav), np.zeros((4410, 1), dtype=np.float32), 44100)
    notdir = tmp_path / "file"
    notdir.write_text("x")
    for args, code, words in [(["--cache-dir", str(notdir)], 4, "is a file"),
                              (["--cache-max-mb", "-5"], 2, "max_mb")]:
        with pytest.raises(SystemExit) as ei:
            cli.main(["encode", str(wav), "--target-mos", "4", "--codec", "opus",
                      "-o", str(tmp_path / "o.opus"), *args])
        err = capsys.readouterr().err.strip()
        assert ei.value.code == code, err
        assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err
        if code == 4:  # the library names its options; the CLI spells them as flags
            assert err.endswith("(--cache-dir DIR or --no-cache)"), err


def test_folders_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0o002)  # user-private-group systems (Debian, Ubuntu)
    try:
        c = ProbeCache(tmp_path / "new" / "c")
        c.get_or_compute(_key(), _Counter())
    finally:
        os.umask(old)
    for d in (tmp_path / "new" / "c", tmp_path / "new" / "c" / ENTRY_DIR, _entry(c, _key()).parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    with warnings.catch_warnings():
        warnings.simplefilter("error", RatecontrolWarning)
        assert ProbeCache(tmp_path / "new" / "c").get_or_compute(_key(), lambda: pytest.fail("miss"))
