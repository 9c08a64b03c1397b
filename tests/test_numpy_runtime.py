"""The learned scorer's numpy runtime (issue 13): the same scores as the torch model, a
CPU encode that never imports torch, the runtime choice and its override, and the
shipped default.npz in step with default.pt."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import Synth

SR = 44_100
#: the largest per-window difference allowed between the runtimes (measured: ~5e-4 worst)
TOL_MOS = 1e-3


def _lowpass(x: np.ndarray, cutoff_hz: float) -> np.ndarray:
    spec = np.fft.rfft(x, axis=-1)
    spec[..., np.fft.rfftfreq(x.shape[-1], 1 / SR) > cutoff_hz] = 0
    return np.fft.irfft(spec, n=x.shape[-1], axis=-1).astype(np.float32)


def _references() -> np.ndarray:
    rows = []
    for i in range(4):
        s = Synth(100 + i)
        rows += [s.notes(SR)[0], s.music(SR)[0], s.transients(SR)[0], s.pad(SR, hard_at=(0,))[0],
                 0.005 * s.notes(SR)[0]]  # a quiet one: the patch search's case
    return np.stack(rows).astype(np.float32)


def _degradations(ref: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    rms = np.sqrt((ref.astype(np.float64) ** 2).mean(1, keepdims=True))
    out = {"identity": ref.copy(), "shift_100ms": np.roll(ref, SR // 10, axis=1),
           "quantised_6bit": (np.round(ref * 32) / 32).astype(np.float32), "gain_-12dB": 0.25 * ref}
    for fc in (3_000, 8_000, 15_000):
        out[f"lowpass_{fc}"] = _lowpass(ref, fc)
    for rel in (0.003, 0.03, 0.3, 1.0):
        out[f"noise_{rel}"] = (ref + rel * rms * rng.standard_normal(ref.shape)).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def runtimes():
    from ratecontrol.scoring.learned import LearnedScorer

    np_scorer, torch_scorer = LearnedScorer(runtime="numpy"), LearnedScorer(runtime="torch", device="cpu")
    assert (np_scorer.runtime, torch_scorer.runtime) == ("numpy", "torch")
    return np_scorer, torch_scorer


def test_numpy_scores_equal_torch_scores_per_window(runtimes):
    np_scorer, torch_scorer = runtimes
    ref = _references()
    p_np, p_t = np_scorer.prepare(ref), torch_scorer.prepare(ref)
    low = 0
    for name, deg in _degradations(ref).items():
        a, b = np_scorer.score(p_np, deg), torch_scorer.score(p_t, deg)
        assert a.dtype == b.dtype == np.float64 and a.shape == (len(ref),)
        assert np.abs(a - b).max() < TOL_MOS, (name, np.abs(a - b).max())
        low += int((b < 3.5).sum())
    assert low > 20  # degraded enough that the patch search ran for some windows


def test_numpy_runtime_on_real_music_through_a_codec(runtimes, shared_audio):
    from ratecontrol import media
    from ratecontrol.windows import MODEL_SAMPLE_RATE_HZ

    np_scorer, torch_scorer = runtimes
    f = sorted((shared_audio / "flac-test-files").glob("0[1-4]*.flac"))[0]
    x = media.decode(f, sample_rate_hz=MODEL_SAMPLE_RATE_HZ, channels=2)[:, : 6 * SR]
    ref = x.reshape(2, -1, SR).reshape(-1, SR)
    for codec, rung in (("opus", "32k"), ("aac", "64k")):
        from ratecontrol.presets import load_preset

        preset = load_preset(codec)
        y = media.roundtrip(x, MODEL_SAMPLE_RATE_HZ, preset, preset.rung(rung))
        deg = y[:, : x.shape[1]].reshape(2, -1, SR).reshape(-1, SR)
        a = np_scorer.score(np_scorer.prepare(ref), deg)
        b = torch_scorer.score(torch_scorer.prepare(ref), deg)
        assert np.abs(a - b).max() < TOL_MOS, (codec, np.abs(a - b).max())


def _fresh(code: str, **env) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k != "RATECONTROL_RUNTIME"}
    e["CUDA_VISIBLE_DEVICES"] = ""  # as on a machine without a GPU, whatever this one has
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=e)


_MODULES = "print('modules=' + ','.join(m for m in ('torch', 'torchaudio', 'scipy.signal') if m in sys.modules))\n"


def test_a_fresh_learned_scoring_never_imports_torch():
    code = ("import sys, numpy as np\n"
            "from ratecontrol.scoring.base import get_scorer\n"
            "s = get_scorer('learned')\n"
            "x = (0.1 * np.random.default_rng(0).standard_normal((3, 44100))).astype(np.float32)\n"
            "assert s.runtime == 'numpy' and '-np' in s.version, s.version\n"
            "assert (s.score(s.prepare(x), x) > 4.6).all()\n" + _MODULES)
    r = _fresh(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "modules="


def test_a_fresh_encode_of_a_48k_wav_never_imports_torch(tmp_path):
    import soundfile as sf

    src = tmp_path / "five.wav"
    sf.write(src, Synth(5).music(48_000, channels=2, duration_s=5.0).T, 48_000)
    out = tmp_path / "five.opus"
    code = ("import sys\n"
            f"sys.argv = ['ratecontrol', 'encode', {str(src)!r}, '--target-mos', '4.0', '--codec', 'opus',\n"
            f"            '--no-cache', '-o', {str(out)!r}]\n"
            "from ratecontrol.cli import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n" + _MODULES)
    r = _fresh(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "modules=", r.stdout
    assert out.stat().st_size > 0


def test_the_environment_forces_the_runtime(monkeypatch):
    from ratecontrol.errors import UsageError
    from ratecontrol.scoring import learned
    from ratecontrol.fsutil import file_digest
    from ratecontrol.scoring.learned import LearnedScorer, choose_runtime, default_model_path

    monkeypatch.setattr(learned, "_gpu_may_be_present", lambda: False)
    monkeypatch.delenv("RATECONTROL_RUNTIME", raising=False)
    assert choose_runtime() == "numpy"
    monkeypatch.setattr(learned, "_gpu_may_be_present", lambda: True)
    assert choose_runtime() == "torch"  # a GPU may be there: torch, as before
    monkeypatch.setenv("RATECONTROL_RUNTIME", "numpy")
    assert choose_runtime() == "numpy" and LearnedScorer().runtime == "numpy"
    monkeypatch.setattr(learned, "_gpu_may_be_present", lambda: False)
    monkeypatch.setenv("RATECONTROL_RUNTIME", "torch")
    s = LearnedScorer()
    # the torch path keeps its cache key: the one the probe cache had before session 8
    assert s.runtime == "torch" and s.version == f"learned-nsimnet-v1-r2-{file_digest(default_model_path())[:12]}"
    monkeypatch.setenv("RATECONTROL_RUNTIME", "Tensorflow")
    with pytest.raises(UsageError, match="RATECONTROL_RUNTIME"):
        choose_runtime()
    monkeypatch.delenv("RATECONTROL_RUNTIME")
    # a user's .pt model runs on torch; the env var is about the packaged model only
    assert choose_runtime(model_path="mine.pt") == "torch" and choose_runtime(model_path="mine.npz") == "numpy"
    assert choose_runtime(device="cuda") == "torch" and choose_runtime(device="cpu") == "numpy"
    with pytest.raises(UsageError, match="npz"):
        choose_runtime(model_path="mine.pt", runtime="numpy")
    with pytest.raises(UsageError, match="runtime"):
        choose_runtime(runtime="jax")


def test_gpu_detection_imports_nothing_and_honours_cuda_visible_devices(monkeypatch):
    from ratecontrol.scoring.learned import _gpu_may_be_present

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert _gpu_may_be_present() is False
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert _gpu_may_be_present() is False


def test_shipped_npz_is_plain_arrays_in_step_with_default_pt(tmp_path):
    from ratecontrol.scoring.numpy_model import content_digest, load_numpy_model
    from ratecontrol.fsutil import file_digest
    from ratecontrol.scoring.learned import default_model_path, default_numpy_model_path
    from trainer.export import export_numpy

    with np.load(default_numpy_model_path(), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert all(a.dtype != object for a in arrays.values())
    _, meta = load_numpy_model(default_numpy_model_path())
    assert meta["source_digest"] == file_digest(default_model_path())[:12], "re-run `python -m trainer export-numpy`"
    # the exporter reproduces the shipped content exactly
    res = export_numpy(default_model_path(), str(tmp_path / "again.npz"))
    with np.load(res.path, allow_pickle=False) as z:
        again = {k: z[k] for k in z.files}
    assert content_digest(again) == content_digest(arrays) == meta["digest"]


def test_a_stale_npz_falls_back_to_torch_with_a_warning(tmp_path, monkeypatch):
    from ratecontrol.errors import ModelError, RatecontrolWarning
    from ratecontrol.scoring import learned

    with np.load(learned.default_numpy_model_path(), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["source_digest"] = np.array("000000000000")
    stale = tmp_path / "default.npz"
    with open(stale, "wb") as fh:
        np.savez(fh, **arrays)
    monkeypatch.setattr(learned, "default_numpy_model_path", lambda: str(stale))
    monkeypatch.setattr(learned, "_gpu_may_be_present", lambda: False)
    monkeypatch.delenv("RATECONTROL_RUNTIME", raising=False)
    with pytest.warns(RatecontrolWarning, match="export-numpy"):
        assert learned.LearnedScorer().runtime == "torch"
    monkeypatch.setenv("RATECONTROL_RUNTIME", "numpy")
    with pytest.raises(ModelError, match="export-numpy"):
        learned.LearnedScorer()
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="junk.npz"):
        learned.LearnedScorer(model_path=str(tmp_path / "junk.npz"))
