"""trainer.data / train / evaluate / export on tiny shards written here in the public
dataset's format (KEY.original.wav, KEY.degraded.wav, KEY.score.txt, KEY.json)."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import webdataset as wds
from scipy.signal import butter, sosfilt

from ratecontrol.errors import DatasetError, UsageError

SR = 44_100
REPO = Path(__file__).resolve().parents[1]


def _wav(x: np.ndarray, rate: int = SR) -> bytes:
    b = io.BytesIO()
    sf.write(b, np.clip(x, -1, 1 - 2**-15), rate, subtype="PCM_16", format="WAV")
    return b.getvalue()


def _pair(rng: np.random.Generator, cutoff_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Music-like reference (harmonic tones + noise bursts) and its low-passed copy."""
    t = np.arange(SR) / SR
    x = np.zeros(SR)
    for _ in range(2):
        f0 = 110 * 2 ** rng.uniform(0, 3)
        for k in (1, 2, 3, 5, 8, 13, 21, 34, 55, 89):  # sparse harmonics up to ~20 kHz
            if f0 * k < 20000:
                x += np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k**0.7
    x += 0.3 * rng.standard_normal(SR) * (np.sin(2 * np.pi * 3 * t) > 0.7)
    x = 0.3 * x / np.max(np.abs(x))
    y = sosfilt(butter(8, cutoff_hz, fs=SR, output="sos"), x)
    return x, y


def write_shards(folder: Path, n_shards: int, per_shard: int, seed: int = 0, corrupt: bool = False,
                 odd_rate_key: str | None = None) -> list[str]:
    """Tiny shards; label = a smooth function of the low-pass cutoff (not ViSQOL: these
    tests check the training machinery, not the model's fidelity)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(n_shards):
        path = folder / f"shard-{s:06d}.tar"
        with wds.TarWriter(str(path)) as w:
            for i in range(per_shard):
                cutoff = float(rng.uniform(1500, 20000))
                x, y = _pair(rng, cutoff)
                score = (cutoff - 1500) / 18500 * 0.9 + 0.02  # 0.02 .. 0.92
                key = f"s{s:02d}_{i:03d}"
                sample = {"__key__": key, "original.wav": _wav(x), "degraded.wav": _wav(y),
                          "score.txt": f"{score:.6f}".encode(), "json": json.dumps({"cutoff_hz": cutoff}).encode()}
                if key == odd_rate_key:  # stereo 22.05 kHz: must come out mono 44.1 kHz
                    x2 = np.stack([x[::2], x[::2]], axis=1)
                    y2 = np.stack([y[::2], y[::2]], axis=1)
                    sample["original.wav"], sample["degraded.wav"] = _wav(x2, 22050), _wav(y2, 22050)
                w.write(sample)
            if corrupt:
                w.write({"__key__": f"s{s:02d}_bad", "original.wav": b"not a wav", "degraded.wav": b"x",
                         "score.txt": b"0.5"})
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("shards")
    write_shards(d, n_shards=4, per_shard=24, seed=1, corrupt=True, odd_rate_key="s00_001")
    return d


def _tiny_config(**over):
    cfg = {
        "seed": 7,
        "model": {"arch": "nsimnet", "kwargs": {"hidden": 16}},
        "data": {"batch_size": 8, "samples_per_epoch": 48, "shuffle_buffer": 16, "num_workers": 0, "val_batch_size": 16},
        "optim": {"lr": 0.01},
        "schedule": {"warmup_steps": 2},
        "epochs": 4,
        "early_stopping": {"patience": 50},
    }
    cfg.update(over)
    return cfg


# ----------------------------------------------------------------------------- data
def test_resolve_brace_pattern_and_missing_shard(shards):
    from trainer.data import resolve_shards

    urls = resolve_shards(str(shards / "shard-{000000..000003}.tar"))
    assert [os.path.basename(u) for u in urls] == [f"shard-{i:06d}.tar" for i in range(4)]
    assert resolve_shards(str(shards)) == urls  # a folder means all its shards
    with pytest.raises(DatasetError, match="shard-000008.tar not found"):
        resolve_shards(str(shards / "shard-{000008..000009}.tar"))


def test_validation_pass_reads_every_pair_once_and_counts_failures(shards):
    from trainer.data import PairDataset, make_loader, resolve_shards

    urls = resolve_shards(str(shards))
    ds = PairDataset(urls, train=False, batch_size=10)
    keys, skipped, mos = [], 0, []
    for b in make_loader(ds, num_workers=0):
        keys += b["keys"]
        skipped += b["skipped"]
        mos.append(b["mos"].numpy())
        if len(b["keys"]):
            assert b["ref"].shape == (len(b["keys"]), SR) and b["deg"].dtype == torch.float32
    assert len(keys) == len(set(keys)) == 4 * 24
    assert keys[:3] == ["s00_000", "s00_001", "s00_002"]  # ordered single pass
    assert skipped == 4  # one corrupt sample per shard: skipped AND counted
    m = np.concatenate(mos)
    assert m.min() >= 1.0 and m.max() <= 4.7  # MOS = 4 * score + 1


def test_odd_rate_stereo_sample_is_resampled_and_downmixed(shards):
    from trainer.data import decode_pair

    for s in wds.WebDataset(str(shards / "shard-000000.tar"), shardshuffle=False):
        if s["__key__"] == "s00_001":
            ref, deg, _ = decode_pair(s)
            assert ref.shape == deg.shape == (SR,)
            # a 22.05-kHz signal upsampled: nothing above 11.025 kHz, energy below
            spec = np.abs(np.fft.rfft(ref))
            assert spec[12000:].max() < 0.05 * spec[:11000].max()
            break
    else:
        pytest.fail("sample not found")


def test_ranks_read_disjoint_shards(shards, monkeypatch):
    from trainer.data import PairDataset, resolve_shards

    urls = resolve_shards(str(shards))
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        ds = PairDataset(urls, train=False, batch_size=50)
        seen.append({k for b in ds for k in b["keys"]})
    assert seen[0] and seen[1] and not (seen[0] & seen[1])
    assert len(seen[0] | seen[1]) == 96


def test_training_stream_replays_per_epoch_and_changes_between_epochs(shards):
    from trainer.data import PairDataset, resolve_shards

    ds = PairDataset(resolve_shards(str(shards)), train=True, batch_size=8, seed=3, shuffle_buffer=20, samples_per_epoch=32)

    def keys(epoch):
        ds.epoch = epoch
        return [k for b in ds for k in b["keys"]]

    a, b, c = keys(0), keys(0), keys(1)
    assert len(a) == 32 and a == b and a != c


def test_manifest_layout_of_build_dataset(tmp_path, shards):
    from trainer.data import read_manifest, resolve_shards

    man = {"format": "ratecontrol-pairs-v1", "shards": [
        {"name": str(shards / "shard-000000.tar"), "split": "train", "pairs": 24},
        {"name": str(shards / "shard-000001.tar"), "split": "val", "pairs": 24}]}
    p = tmp_path / "manifest.json"
    p.write_text(json.dumps(man))
    splits = read_manifest(str(p))
    assert splits["train"] == [str(shards / "shard-000000.tar")] and splits["val"] == [str(shards / "shard-000001.tar")]
    assert resolve_shards(f"{p}#val") == splits["val"]
    with pytest.raises(DatasetError, match="no split 'test'"):
        resolve_shards(f"{p}#test")


def test_augment_same_shift_and_gain_on_both_signals_and_deterministic():
    from trainer.data import BatchAugment

    rng = np.random.default_rng(0)
    ref = torch.from_numpy(rng.standard_normal((4, 1000)).astype(np.float32))
    deg = 0.5 * ref  # deg is a fixed function of ref: must stay so after augmentation
    aug = BatchAugment(shift=True, gain_db=(-6.0, 6.0))
    r1, d1 = aug(ref, deg, aug.generator(1, 0, torch.device("cpu")))
    r2, d2 = aug(ref, deg, aug.generator(1, 0, torch.device("cpu")))
    r3, _ = aug(ref, deg, aug.generator(1, 1, torch.device("cpu")))
    assert torch.equal(r1, r2) and torch.equal(d1, d2)
    assert not torch.equal(r1, r3)
    assert torch.allclose(d1, 0.5 * r1, atol=1e-6)
    assert not torch.allclose(r1, ref)
    assert BatchAugment().reverse_p == 0.0 and not BatchAugment().active


# ----------------------------------------------------------------------------- train / evaluate / export
@pytest.fixture(scope="module")
def trained(shards, tmp_path_factory):
    from trainer.train import fit

    out = tmp_path_factory.mktemp("run")
    res = fit(_tiny_config(), [str(shards / "shard-{000000..000002}.tar")], str(out),
              val_data=[str(shards / "shard-000003.tar")], device="cpu")
    return out, res


def _log_rows(out: Path) -> list[dict]:
    with open(out / "log.csv") as fh:
        return list(csv.DictReader(fh))


def test_fit_loss_falls_and_writes_checkpoints(trained):
    out, res = trained
    rows = _log_rows(out)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < 0.7 * losses[0], losses
    assert float(rows[-1]["val_rmse"]) < float(rows[0]["val_rmse"])
    assert int(rows[0]["skipped"]) >= 0 and int(rows[0]["val_skipped"]) == 1  # the corrupt val sample
    assert os.path.exists(res.best_checkpoint) and os.path.exists(res.last_checkpoint)
    ck = torch.load(res.last_checkpoint, weights_only=True)  # training checkpoints are weights_only too
    assert ck["train_state"]["epoch"] == 3 and ck["arch"] == "nsimnet"


def test_fit_resumes_from_last_checkpoint(trained, shards):
    from trainer.train import fit

    out, _ = trained
    fit(_tiny_config(epochs=5), [str(shards / "shard-{000000..000002}.tar")], str(out),
        val_data=[str(shards / "shard-000003.tar")], device="cpu")
    rows = _log_rows(out)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3, 4]  # continued at 4, not restarted


def test_export_then_learned_scorer_round_trips(trained, tmp_path, shards):
    from ratecontrol.scoring.base import get_scorer
    from ratecontrol.scoring.model import load_checkpoint
    from trainer.data import decode_pair
    from trainer.export import export_checkpoint

    out, res = trained
    dst = tmp_path / "weights" / "model.pt"
    info = export_checkpoint(res.best_checkpoint, str(dst), note="test", extra_metrics={"realmusic": {"rmse": 0.5}})
    assert info.size_bytes < 5 * 1024 * 1024
    ck = torch.load(dst, weights_only=True)
    assert ck["format_version"] == 1 and ck["arch"] == "nsimnet" and "train_state" not in ck
    assert ck["exported"]["note"] == "test" and ck["training_data"]["train_shards"] == 3
    assert ck["metrics"]["realmusic"]["rmse"] == 0.5 and "val" in ck["metrics"]
    pairs = [decode_pair(s) for s in wds.WebDataset(str(shards / "shard-000003.tar"), shardshuffle=False).slice(6)]
    ref = np.stack([p[0] for p in pairs])
    deg = np.stack([p[1] for p in pairs])
    model, _ = load_checkpoint(res.best_checkpoint)
    with torch.no_grad():
        expect = model(torch.from_numpy(ref), torch.from_numpy(deg)).numpy()
    scorer = get_scorer("learned", model_path=str(dst), device="cpu", batch_size=4)  # 2 chunks
    got = scorer.score(scorer.prepare(ref), deg)
    assert got.dtype == np.float64 and got.shape == (6,)
    np.testing.assert_allclose(got, expect, atol=1e-5)
    assert scorer.version.startswith("learned-nsimnet-v1-")
    # the numpy runtime's export is written beside it and scores alike
    ns = get_scorer("learned", model_path=str(dst.with_suffix(".npz")), batch_size=4)
    assert ns.runtime == "numpy" and "-np" in ns.version
    np.testing.assert_allclose(ns.score(ns.prepare(ref), deg), expect, atol=1e-3)


def test_evaluate_writes_metrics_and_scatter(trained, tmp_path, shards):
    from trainer.evaluate import evaluate_checkpoint

    _, res = trained
    r = evaluate_checkpoint(res.best_checkpoint, str(shards / "shard-000003.tar"), num_workers=0, out_dir=str(tmp_path))
    assert r.n_pairs == 24 and r.skipped == 1
    m = json.loads(Path(r.metrics_path).read_text())
    assert {"pearson", "spearman", "rmse", "high", "bins"} <= set(m)
    assert sum(b["n"] for b in m["bins"]) == 24
    assert Path(r.scatter_path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compute_metrics_values():
    from trainer.evaluate import compute_metrics

    label = np.array([1.5, 2.5, 3.5, 4.1, 4.5])
    m = compute_metrics(label + 0.1, label)
    assert m["rmse"] == pytest.approx(0.1) and m["pearson"] == pytest.approx(1.0) and m["bias"] == pytest.approx(0.1)
    assert m["high"]["n"] == 2 and m["high"]["rmse"] == pytest.approx(0.1)
    # 0.05-score bins are 0.2 MOS wide: 4.1 and 4.5 fall in different bins
    assert len(m["bins"]) == 5 and m["bins"][0]["mos_lo"] == pytest.approx(1.4)


def test_config_unknown_key_is_refused(tmp_path):
    from trainer.train import load_config

    p = tmp_path / "bad.yaml"
    p.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(UsageError, match="lrr"):
        load_config(str(p))


def test_shipped_configs_load():
    from trainer.train import load_config

    for p in sorted((REPO / "trainer" / "configs").glob("*.yaml")):
        if p.name.startswith(("nsimnet", "melcnn")):
            cfg = load_config(str(p))
            assert cfg["model"]["arch"] in ("nsimnet", "melcnn")


def test_fit_without_data_is_a_dataset_error(tmp_path):
    from trainer.train import fit

    with pytest.raises(DatasetError):
        fit(_tiny_config(), [str(tmp_path / "nothing-{000000..000001}.tar")], str(tmp_path / "out"))


@pytest.mark.slow
def test_torchrun_ddp_two_cpu_processes(shards, tmp_path):
    """torchrun with 2 processes on CPU (gloo): both ranks train, rank 0 writes."""
    cfg = tmp_path / "tiny.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(_tiny_config(epochs=2)))
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "trainer", "fit", "--config", str(cfg), "--data", str(shards / "shard-{000000..000002}.tar"),
           "--val-data", str(shards / "shard-000003.tar"), "--out", str(out), "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _log_rows(out)
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    # gathered validation covers every val pair once across the two ranks
    assert all(int(r["val_pairs"]) == 24 for r in rows)
    assert torch.load(out / "last.pt", weights_only=True)["training_data"]["train_shards"] == 3


def test_fit_streaming_path_with_augmentation(shards, tmp_path):
    """Augmentation forces the streaming path (raw pairs through the whole model)."""
    from trainer.train import fit

    cfg = _tiny_config(epochs=3, augment={"shift": False, "gain_db": [-1.0, 1.0]})
    cfg["data"] = dict(cfg["data"], samples_per_epoch=32)
    res = fit(cfg, [str(shards / "shard-{000000..000002}.tar")], str(tmp_path),
              val_data=[str(shards / "shard-000003.tar")], device="cpu")
    rows = _log_rows(tmp_path)
    assert len(rows) == 3 and all(np.isfinite(float(r["train_loss"])) for r in rows)
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert not list(tmp_path.glob("stats-*.pt"))  # nothing precomputed
    assert torch.load(res.last_checkpoint, weights_only=True)["training_data"]["precomputed_statistics"] is False
