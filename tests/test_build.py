"""The dataset builder end to end on synthesized sources: real ffmpeg, codecs and ViSQOL.

One tiny build (2 score bins, a handful of settings) is shared by the module; it takes a
few seconds of labelling after ViSQOL's one-off JIT.
"""
from __future__ import annotations

import io
import json
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import Synth
from ratecontrol.errors import DatasetError, UsageError
from ratecontrol.windows import window_complexity
from trainer import dataset as B
from trainer.dataset import builder, rounds

# both halves of the score range are reachable with these: 3.5-kHz low-pass and Opus at
# 6 kbps land far below MOS 3 on noise/transients; MP3 at 128 kbps near identity.
TINY_SETTINGS = tuple(s for s in B.default_settings()
                      if s.name in ("lowpass-3500", "opus-6k", "opus-voip-8k", "mp3-cbr-128k",
                                    "aac-64k", "vorbis-q4", "lowpass-7000"))
TINY = dict(pairs=8, seed=3, val_fraction=0.25, n_jobs=1, score_range=(0.0, 1.0),
            bin_width=0.5, settings=TINY_SETTINGS, pairs_per_shard=2, progress=False)


def _write_sources(root: Path) -> Path:
    """Four 7-s sources (wav + flac, mono + stereo) of different content."""
    s = Synth(7)
    src = root / "src"
    src.mkdir(parents=True)
    sr = 44100
    sig = {
        "noise_bursts.flac": s.transients(sr, channels=2, duration_s=7.0),
        "chirp.wav": s.chirp(sr, channels=1, duration_s=7.0, f0_hz=100, f1_hz=16000),
        "tones_noise.flac": (s.tone(sr, 2, 7.0, 440.0, 0.3) + s.noise(sr, 2, 7.0, 0.08)),
        "sub/noise.wav": s.noise(sr, 1, 7.0, 0.2),
    }
    for name, x in sig.items():
        p = src / name
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(p), np.clip(x, -1, 1).T, sr)
    return src


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    src = _write_sources(root)
    out = root / "out"
    result = B.build_dataset([src], out, **TINY)
    return src, out, result


def _members(shard: Path) -> dict:
    with tarfile.open(shard) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


def test_tiny_build_verifies_and_is_balanced(tiny):
    src, out, result = tiny
    rep = B.verify(out)
    assert rep.ok, rep.problems
    # 8 pairs: val 2 (1 per bin), train 6 (3 per bin)
    assert rep.pairs_by_split == {"train": 6, "val": 2}
    assert rep.histogram["train"] == {"0.00": 3, "0.50": 3}
    assert rep.histogram["val"] == {"0.00": 1, "0.50": 1}
    man = json.loads((out / "manifest.json").read_text())
    assert [s["split"] for s in man["shards"]] == ["train"] * 3 + ["val"]
    assert man["pool_pairs"] >= 8


def test_shards_load_with_plain_webdataset(tiny):
    import webdataset as wds

    _, out, _ = tiny
    urls = [str(p) for p in sorted(out.glob("shard-*.tar"))]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode())
    assert len(samples) == 8
    for s in samples:
        assert {"original.wav", "degraded.wav", "score.txt", "json"} <= set(s)
        for k in ("original.wav", "degraded.wav"):
            x, sr = sf.read(io.BytesIO(s[k]), dtype="int16")
            info = sf.info(io.BytesIO(s[k]))
            assert (sr, x.ndim, x.shape[0], info.subtype) == (44100, 1, 44100, "PCM_16")
        score = float(s["score.txt"])
        prov = s["json"]
        assert score == pytest.approx((prov["visqol_mos"] - 1) / 4, abs=1e-6)
        assert {"source_id", "licence", "offset_s", "codec", "setting"} <= set(prov)
        # the degraded clip really is degraded/aligned: a low score means a different clip
        ref = sf.read(io.BytesIO(s["original.wav"]))[0]
        deg = sf.read(io.BytesIO(s["degraded.wav"]))[0]
        assert np.abs(ref).max() > 0.01
        if score > 0.9:
            assert np.corrcoef(ref, deg)[0, 1] > 0.9


def test_splits_are_disjoint_by_source(tiny):
    _, out, _ = tiny
    rep = B.verify(out)
    train, val = set(rep.sources_by_split["train"]), set(rep.sources_by_split["val"])
    assert train and val and not train & val
    man = json.loads((out / "manifest.json").read_text())
    assert not set(man["sources"]["train"]) & set(man["sources"]["val"])


def test_same_seed_same_keys_audio_and_scores(tiny, tmp_path):
    src, out, _ = tiny
    again = tmp_path / "again"
    B.build_dataset([src], again, **TINY)
    a = sorted(out.glob("shard-*.tar"))
    b = sorted(again.glob("shard-*.tar"))
    assert [p.name for p in a] == [p.name for p in b]
    for x, y in zip(a, b):
        mx, my = _members(x), _members(y)
        assert sorted(mx) == sorted(my)
        for k in mx:
            if k.endswith(".json"):
                # ViSQOL's float MOS can differ in the 14th digit between processes
                # (measured: 1.558658940732621 vs 1.5586589407326557); all else is exact
                jx, jy = json.loads(mx[k]), json.loads(my[k])
                assert jx.pop("visqol_mos") == pytest.approx(jy.pop("visqol_mos"), abs=1e-9)
                assert jx.pop("score") == pytest.approx(jy.pop("score"), abs=1e-9)
                assert jx == jy
            else:  # the audio and score.txt (6 decimals) are identical
                assert mx[k] == my[k], k


def test_resume_rebuilds_only_the_missing_shard(tiny, tmp_path, monkeypatch):
    src, out, _ = tiny
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    victim = copy / "shard-000001.tar"
    before = victim.read_bytes()
    victim.unlink()
    others = {p.name: p.stat().st_mtime_ns for p in copy.glob("shard-*.tar")}

    def no_labelling(*a, **k):
        raise AssertionError("resume relabelled the pool")

    monkeypatch.setattr(rounds, "run_job", no_labelling)
    B.build_dataset([src], copy, **TINY)
    assert victim.read_bytes() == before
    assert {p.name: p.stat().st_mtime_ns for p in copy.glob("shard-*.tar")
            if p.name != victim.name} == others


def test_changed_arguments_are_refused(tiny):
    src, out, _ = tiny
    with pytest.raises(DatasetError, match="different arguments"):
        B.build_dataset([src], out, **{**TINY, "seed": 4})


def test_verify_catches_a_wrong_score(tiny, tmp_path):
    _, out, _ = tiny
    copy = tmp_path / "bad"
    shutil.copytree(out, copy)
    shard = copy / "shard-000000.tar"
    members = _members(shard)
    key = next(k for k in members if k.endswith(".score.txt"))
    members[key] = b"0.123456"
    with tarfile.open(shard, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    rep = B.verify(copy)
    assert not rep.ok
    assert any("(MOS-1)/4" in p for p in rep.problems)


# ----------------------------------------------------------------- pure pieces
def test_window_complexity_ranks_busy_above_quiet_and_gates_silence(synth):
    sr = 44100
    busy = synth.transients(sr, duration_s=1.0)[0] + 0.2 * synth.noise(sr, duration_s=1.0)[0]
    tone = synth.tone(sr, duration_s=1.0, amplitude=0.5)[0]
    quiet = 0.001 * synth.noise(sr, duration_s=1.0)[0]  # ~ -67 dBFS
    c = window_complexity(np.stack([busy, tone, quiet]))
    assert c.score[0] > c.score[1] > 0
    assert c.score[2] == 0
    lp = B.lowpass(synth.noise(sr, duration_s=1.0), 4000)[0]
    wide = synth.noise(sr, duration_s=1.0)[0]
    bw = window_complexity(np.stack([lp, wide])).bandwidth_hz
    assert bw[0] < 4500 < 15000 < bw[1]


def test_lowpass_anchor_is_zero_phase(synth):
    x = synth.transients(44100, duration_s=1.0)
    y = B.lowpass(x, 7000)
    lag = np.argmax(np.correlate(y[0], x[0], mode="full")) - (x.shape[1] - 1)
    assert lag == 0 and y.shape == x.shape


def test_default_settings_cover_every_family():
    s = B.default_settings()
    fams = {x.family for x in s}
    assert fams == {"opus", "aac", "mp3-cbr", "mp3-vbr", "vorbis", "lowpass"}
    names = {x.name for x in s}
    assert {"opus-6k", "opus-voip-6k", "opus-lowdelay-12k", "lowpass-3500",
            "lowpass-7000", "mp3-vbr-V0"} <= names
    assert len(names) == len(s)
    from ratecontrol.presets import load_preset

    for p in {x.preset for x in s if x.preset}:
        load_preset(p)


def test_score_bins():
    e = B.bin_edges((0.10, 0.95))
    assert len(e) == 18
    assert B.score_bin(0.05, e) == -1
    assert B.score_bin(0.10, e) == 0
    assert B.score_bin(0.9325, e) == 16
    assert B.score_bin(0.95, e) == 17


def test_split_sources_by_kind_and_fraction():
    srcs = [B.Source(id=f"{k}/{i}", path="/x", kind=k) for k in ("music", "speech")
            for i in range(10)]
    d = [60.0] * 20
    splits = B.split_sources(srcs, d, 0.2, seed=0)
    for k in ("music", "speech"):
        val = [s.id for s, sp in zip(srcs, splits) if sp == "val" and s.kind == k]
        assert len(val) == 2
    assert splits == B.split_sources(srcs, d, 0.2, seed=0)
    assert splits != B.split_sources(srcs, d, 0.2, seed=1)


def test_scan_sources_reads_a_corpus_manifest(tmp_path):
    (tmp_path / "a.flac").write_bytes(b"")
    (tmp_path / "manifest.jsonl").write_text(json.dumps(
        {"id": "music/x", "path": "a.flac", "kind": "music", "licence": "CC0"}) + "\n")
    (s,) = B.scan_sources([tmp_path])
    assert (s.id, s.kind, s.licence) == ("music/x", "music", "CC0")
    with pytest.raises(DatasetError, match="not found"):
        B.scan_sources([tmp_path / "nope"])


def test_build_status_reads_the_checkpoints(tiny, tmp_path):
    from click.testing import CliRunner

    from trainer.cli.build import verify_command

    _, out, result = tiny
    st = B.build_status(out)
    assert st["pool_pairs"] == result.pool_pairs
    assert st["filled"] == st["needed"] == 8
    assert st["target_per_bin"] == {"train": 3, "val": 1}
    # an unfinished build (no manifest yet): verify reports progress and fails
    copy = tmp_path / "unfinished"
    shutil.copytree(out / "work", copy / "work")
    r = CliRunner().invoke(verify_command, [str(copy)])
    assert r.exit_code != 0 and "unfinished build: 8/8" in r.output
    assert isinstance(r.exception, DatasetError)


def test_snapshot_writes_a_balanced_set_from_the_pool_without_touching_it(tiny, tmp_path):
    src, out, _ = tiny
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*"))
    dest = tmp_path / "snap"
    r = B.build_dataset([src], out, **TINY, snapshot=dest)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    rep = B.verify(dest)
    assert rep.ok, rep.problems
    assert rep.pairs_by_split == r.pairs_by_split == {"train": 6, "val": 2}
    man = json.loads((dest / "manifest.json").read_text())
    assert man["snapshot_of"]["out"] == str(out)
    with pytest.raises(Exception, match="not empty"):
        B.build_dataset([src], out, **TINY, snapshot=dest)


def test_label_cache_rebuilds_the_same_set_without_labelling(tiny, tmp_path, monkeypatch):
    src, out, _ = tiny
    cache_path = tmp_path / "labels.npz"
    cache = B.export_labels([out], cache_path)
    pool = sum(len(j["mos"]) for p in sorted((out / "work" / "pool").glob("round-*.json"))
               for j in json.loads(p.read_text())["jobs"])
    assert len(cache) == pool > 0
    import ratecontrol.scoring.visqol as V

    def no_labelling(*a, **k):
        raise AssertionError("a cached pair was labelled again")

    monkeypatch.setattr(V, "visqol_mos", no_labelling)
    again = tmp_path / "again"
    B.build_dataset([src], again, label_cache=cache_path, **TINY)
    a, b = sorted(out.glob("shard-*.tar")), sorted(again.glob("shard-*.tar"))
    assert [p.name for p in a] == [p.name for p in b]
    for x, y in zip(a, b):
        mx, my = _members(x), _members(y)
        for k in mx:
            if k.endswith(".json"):
                assert json.loads(mx[k])["visqol_mos"] == pytest.approx(
                    json.loads(my[k])["visqol_mos"], abs=1e-9)
            else:
                assert mx[k] == my[k], k
    # merging the rebuilt pool adds nothing new
    assert len(B.export_labels([again], cache_path)) == len(cache)


def test_label_cache_is_keyed_by_content_and_version(tmp_path):
    rng = np.random.default_rng(0)
    ref = rng.integers(-3000, 3000, B.CLIP_SAMPLES).astype(np.int16)
    deg = ref.copy()
    k = B.pair_key(ref, deg)
    deg[100] += 1  # one sample differs: another pair, another key
    assert B.pair_key(ref, deg) != k and len(k) == 16
    path = tmp_path / "c.npz"
    B.LabelCache({k: 4.5}, visqol_version="0.0-other").save(path)
    loaded = B.LabelCache.load(path)
    assert loaded.labels == {k: 4.5} and not loaded.usable()
    from trainer.dataset.jobs import worker_labels

    assert worker_labels(str(path)) == {}  # another version's labels are not used
    with pytest.raises(DatasetError, match="visqol-python 0.0-other"):
        B.export_labels([tmp_path], path)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a cache")
    with pytest.raises(DatasetError, match="unreadable"):
        B.LabelCache.load(bad)


def test_quiet_jobs_play_the_segment_at_a_quiet_passage_level(tiny):
    _, out, _ = tiny
    audio = {}
    quiet = loud = 0
    for js in sorted((out / "work" / "pool").glob("round-*.json")):
        rm = json.loads(js.read_text())
        a = np.load(js.with_suffix(".npy"))
        for job in rm["jobs"]:
            for j in range(len(job["mos"])):
                ref = a[job["first"] + j, 0].astype(np.float64) / 32768
                dbfs = 20 * np.log10(np.sqrt(np.mean(ref ** 2)) + 1e-12)
                if job["gain_db"] < 0:
                    quiet += 1
                    # the loudest chosen clip (mono) lands in QUIET_RMS_DBFS; one channel
                    # of a stereo source may sit a few dB off the mono level
                    assert dbfs <= B.QUIET_RMS_DBFS[1] + 4, (job, dbfs)
                else:
                    loud += 1
    assert quiet and loud
    # and the shards say so
    shard = sorted(out.glob("shard-*.tar"))[0]
    prov = [json.loads(v) for k, v in _members(shard).items() if k.endswith(".json")]
    assert all("gain_db" in p for p in prov)


def test_prescreen_skips_clips_predicted_far_from_every_needed_bin(tiny):
    from ratecontrol.scoring.learned import default_model_path

    src, _, _ = tiny
    settings = {s.name: s for s in TINY_SETTINGS}
    job = B.Job(segment=0, split="train", setting="mp3-cbr-128k", source=0,
                path=str(src / "chirp.wav"), channels=1, start_s=0.0,
                clip_offsets_s=(1.5, 2.5, 3.5), channel=0)
    base = B.run_job(job, settings)
    assert len(base.mos) == 3 and min(base.mos) > 4.0  # transparent MP3 on a chirp
    assert base.ref.shape == base.deg.shape == (3, B.CLIP_SAMPLES) and base.ref.dtype == np.int16
    # only scores under 0.2 (MOS < 1.8) are still needed: nothing here is worth labelling
    far = B.run_job(replace(job, need=((0.0, 0.2),), prescreen=default_model_path()), settings)
    assert far.mos == () and len(far.skipped_pred) == 3 and len(far.ref) == 0
    assert all(p > 4.0 for p in far.skipped_pred), far.skipped_pred
    # the bin the clips really land in is needed: all are labelled, same labels
    near = B.run_job(replace(job, need=((0.6, 0.95),), prescreen=default_model_path()), settings)
    assert near.skipped_pred == () and near.mos == pytest.approx(base.mos, abs=1e-9)


def test_build_copies_its_prescreen_model_once(tiny, tmp_path):
    _, out, _ = tiny
    copy = out / "work" / "prescreen.pt"
    assert copy.is_file()
    from ratecontrol.scoring.learned import default_model_path

    assert copy.read_bytes() == open(default_model_path(), "rb").read()
    with pytest.raises(Exception, match="not found"):
        builder.prescreen_copy(tmp_path / "new", tmp_path / "missing.pt")


def test_export_labels_command(tiny, tmp_path):
    from click.testing import CliRunner

    from trainer.cli import cli

    _, out, _ = tiny
    dest = tmp_path / "labels" / "l.npz"
    r = CliRunner().invoke(cli, ["export-labels", str(out), "--to", str(dest)])
    assert r.exit_code == 0, r.output
    assert f"in {dest}" in r.output and len(B.LabelCache.load(dest)) > 0
    r = CliRunner().invoke(cli, ["export-labels", str(tmp_path), "--to", str(dest)])
    assert r.exit_code != 0 and "no labelled pool" in str(r.exception or r.output)


def test_build_config_checks_its_arguments_once(tmp_path):
    cfg = B.BuildConfig([tmp_path], tmp_path / "out", 8)
    assert cfg.sources == (tmp_path,) and cfg.settings == B.default_settings()
    assert cfg.split_pairs == {"train": 7, "val": 1}
    for bad, word in (({"pairs": 0}, "--pairs"), ({"val_fraction": 1.0}, "val_fraction"),
                      ({"quiet_share": 1.5}, "quiet_share")):
        with pytest.raises(UsageError, match=word):
            B.BuildConfig([tmp_path], tmp_path / "out", **{"pairs": 8, **bad})


BUILD_MODULES = ["trainer.dataset", "trainer.dataset.config", "trainer.dataset.settings",
                 "trainer.dataset.sources", "trainer.dataset.jobs", "trainer.dataset.labels",
                 "trainer.dataset.pool", "trainer.dataset.rounds", "trainer.dataset.selection",
                 "trainer.dataset.shards", "trainer.dataset.builder",
                 "trainer.dataset.verify", "trainer.cli", "trainer.cli.build",
                 "trainer.corpus", "trainer.corpus._common", "trainer.corpus._packages", "trainer.corpus._music",
                 "trainer.corpus._render", "trainer.corpus._drums", "trainer.corpus._speech",
                 "trainer.corpus._recipe", "trainer.cli.corpus", "trainer.train", "trainer.train._config",
                 "trainer.train._dist", "trainer.train._precompute", "trainer.train._runlog", "trainer.train._fit"]


@pytest.mark.parametrize("name", BUILD_MODULES)
def test_all_lists_exactly_the_public_names(name):
    """As strict as tests/test_exported_members.py: __all__ names what exists and every
    public class or function a module defines (the package: every one it re-exports)."""
    import importlib
    import inspect

    mod = importlib.import_module(name)
    assert len(set(mod.__all__)) == len(mod.__all__)
    assert not [n for n in mod.__all__ if not hasattr(mod, n)]
    package = hasattr(mod, "__path__")
    public = {n for n, v in vars(mod).items() if not n.startswith("_")
              and (inspect.isclass(v) or inspect.isfunction(v))
              and (package or v.__module__ == name)}
    assert not public - set(mod.__all__), sorted(public - set(mod.__all__))


def test_trainer_library_modules_hold_no_click():
    """lhotse style: the commands live in trainer/cli/, the library holds no click."""
    import ast

    root = Path(__file__).resolve().parents[1] / "trainer"
    for path in sorted(root.rglob("*.py")):
        if "cli" in path.relative_to(root).parts:
            continue
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "click" not in names, path


def test_bin_targets_split_the_pairs_over_the_bins(tmp_path):
    from trainer.dataset.pool import BinTargets, PoolState

    bins = BinTargets.for_config(B.BuildConfig([tmp_path], tmp_path / "out", 40, score_range=(0.0, 1.0),
                                               bin_width=0.25))
    assert bins.n_bins == 4 and bins.target == {"train": 9, "val": 1} and bins.total == 40
    assert bins.bins([1.0, 2.9, 5.0]) == [0, 1, 4]  # MOS 5 is above the last bin
    state = PoolState(n_bins=4, n_settings=1)
    state.add("train", 0, 0, [0] * 12 + [1])
    assert bins.filled(state) == 10 and list(bins.deficit(state)["train"]) == [0, 8, 9, 9]
    with pytest.raises(UsageError, match="too small"):
        BinTargets.for_config(B.BuildConfig([tmp_path], tmp_path / "out", 3, score_range=(0.0, 1.0),
                                            bin_width=0.25))


def test_selection_keeps_the_same_count_in_every_bin_and_is_seeded(tmp_path):
    from trainer.dataset.pool import BinTargets
    from trainer.dataset.selection import select

    bins = BinTargets(edges=np.array([0.0, 0.5, 1.0]), target={"train": 3, "val": 1})
    metas = [{"round": 0, "jobs": [{"split": "train", "first": 0, "mos": [1.5, 1.5, 1.5, 4.5]},
                                   {"split": "train", "first": 4, "mos": [4.5, 1.2]},
                                   {"split": "val", "first": 6, "mos": [1.1, 4.9]}]}]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = select(tmp_path / "a", metas, bins, seed=5)
    assert a == select(tmp_path / "b", metas, bins, seed=5)
    assert a["per_bin"] == {"train": 2, "val": 1}  # the upper train bin holds only 2
    assert a["starved"] == {"train": {"0.50": 2}}
    assert len(a["pairs"]["train"]) == 4 and sorted(a["pairs"]["val"]) == [[0, 6], [0, 7]]
