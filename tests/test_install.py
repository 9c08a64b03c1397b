"""A plain install has no torch (issue 26): torch and its CUDA wheels are the [gpu]
extra, ~5 GB that a CPU encode never loads. These tests run ratecontrol in a subprocess
where ``import torch`` fails as it does without the extra, and check the wheel that
``pip install`` builds from this tree."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]

#: makes ``import torch`` (and torchaudio) fail as on a machine without the [gpu]
#: extra: a ModuleNotFoundError, the same error a missing package raises
NO_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchaudio"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _NoTorch())
"""

#: modules that need torch by design (the torch runtime of the learned scorer)
TORCH_MODULES = {"ratecontrol.scoring.model", "ratecontrol.scoring._frontend", "ratecontrol.scoring._nsimnet",
                 "ratecontrol.scoring._melcnn", "ratecontrol.scoring._bounded"}
#: runs the command line when imported
NOT_IMPORTED = TORCH_MODULES | {"ratecontrol.__main__"}


def _run(code: str, *, env: dict | None = None, cwd=None, timeout: int = 300) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "RATECONTROL_RUNTIME"}
    full_env.update({"PYTHONPATH": str(ROOT), **(env or {})})
    return subprocess.run([sys.executable, "-c", NO_TORCH + code], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)


def _cli(args: list[str], **kw) -> subprocess.CompletedProcess:
    return _run("from ratecontrol.cli import main\n"
                f"sys.argv = ['ratecontrol'] + {args!r}\n"
                "main()\n", **kw)


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("install") / "song.flac"
    t = np.arange(int(44100 * 2.5)) / 44100
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.02 * np.random.default_rng(0).standard_normal(t.size)
    sf.write(p, np.stack([x, np.roll(x, 100)], 1).astype(np.float32), 44100)
    return p


def test_blocker_blocks_torch():
    r = _run("try:\n    import torch\nexcept ModuleNotFoundError:\n    print('blocked')\n")
    assert r.stdout.strip() == "blocked", r.stderr


def test_every_cpu_module_imports_without_torch():
    """Every ratecontrol module but the torch runtime imports with torch missing."""
    code = f"""
import importlib, pkgutil, ratecontrol
names = [m.name for m in pkgutil.walk_packages(ratecontrol.__path__, "ratecontrol.")]
names = [n for n in names if n not in {NOT_IMPORTED!r}]
for n in names:
    importlib.import_module(n)
assert "torch" not in sys.modules
print(len(names))
"""
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) > 40  # the walk found the package


def test_encode_and_score_without_torch(song, tmp_path):
    """A real encode (learned scorer, numpy runtime) and score with torch missing."""
    out = tmp_path / "song.opus"
    env = {"CUDA_VISIBLE_DEVICES": ""}  # a GPU on the test machine must not change the runtime
    r = _cli(["encode", str(song), "--target-mos", "4", "--codec", "opus", "-o", str(out), "--no-cache"], env=env)
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 0 and "target met" in r.stdout
    r = _cli(["score", str(song), str(out)], env=env)
    assert r.returncode == 0, r.stderr
    assert "learned p10 MOS" in r.stdout


def test_runtime_torch_without_torch_is_one_line(song, tmp_path):
    r = _cli(["encode", str(song), "--target-mos", "4", "-o", str(tmp_path / "o.opus")],
             env={"RATECONTROL_RUNTIME": "torch"})
    assert r.returncode == 8, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: RATECONTROL_RUNTIME=torch needs"), r.stderr
    assert "pip install 'ratecontrol[gpu]'" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "o.opus").exists()


def test_batch_without_torch_is_one_error_before_any_file(song, tmp_path):
    """Not one failed record per file: the runtime is checked before the walk."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.flac").write_bytes(song.read_bytes())
    r = _cli(["batch", str(folder), str(tmp_path / "out"), "--target-mos", "4", "--codec", "opus"],
             env={"RATECONTROL_RUNTIME": "torch"})
    assert r.returncode == 8, r.stderr
    assert r.stderr.startswith("error: RATECONTROL_RUNTIME=torch needs") and len(r.stderr.splitlines()) == 1, r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kwargs,why", [({"model_path": "mine.pt"}, "the model mine.pt"),
                                        ({"device": "cuda"}, "device 'cuda'"),
                                        ({"runtime": "torch"}, "runtime='torch'")])
def test_library_paths_to_torch_name_the_extra(kwargs, why):
    code = f"""
from ratecontrol.errors import ModelError
from ratecontrol.scoring.learned import LearnedScorer
try:
    LearnedScorer(**{kwargs!r})
except ModelError as exc:
    print(exc)
"""
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(why) and "pip install 'ratecontrol[gpu]'" in r.stdout, r.stdout


def test_gpu_without_torch_runs_numpy(monkeypatch):
    """A GPU found but no torch: the plain install's numpy runtime, with one warning."""
    code = """
import warnings
from ratecontrol.scoring import learned
learned._gpu_may_be_present = lambda: True
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    print(learned.choose_runtime())
print(w[0].message)
"""
    r = _run(code)
    assert r.returncode == 0, r.stderr
    runtime, warning = r.stdout.strip().splitlines()
    assert runtime == "numpy" and "ratecontrol[gpu]" in warning


def test_trainer_without_torch_names_the_train_extra(tmp_path):
    r = _run("import runpy\nsys.argv = ['trainer', 'export-numpy', 'x.pt']\n"
             "runpy.run_module('trainer', run_name='__main__')\n", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == ("error: `python -m trainer export-numpy` needs torch, which is not installed; "
                                "pip install 'ratecontrol[train]'")


def test_doctor_says_runtime_and_extras():
    r = _cli(["doctor"], env={"CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr
    assert "learned scorer runtime: numpy (no GPU found)" in r.stdout
    # from the installed metadata: each extra present, or what it misses and the pip line
    extras = [l for l in r.stdout.splitlines() if l.startswith("extra")]
    assert extras and all(l.endswith(": present") or "pip install 'ratecontrol[" in l or l.startswith("extras: unknown")
                          for l in extras), r.stdout


def test_core_requirements_have_no_torch():
    """pyproject.toml: torch, torchaudio and webdataset only in extras; [test] has them
    (the suite tests the torch runtime and the trainer)."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = lambda reqs: {q.split(";")[0].split("[")[0].split(">")[0].split("=")[0].strip() for q in reqs}
    assert not names(project["dependencies"]) & {"torch", "torchaudio", "webdataset"}
    extras = project["optional-dependencies"]
    assert {"torch", "torchaudio"} <= names(extras["gpu"])
    assert "webdataset" in names(extras["train"]) and "ratecontrol[gpu]" in extras["train"]
    assert any(q.startswith("ratecontrol[") and "gpu" in q and "train" in q for q in extras["test"])


@pytest.mark.slow
def test_wheel_holds_weights_presets_and_no_core_torch(tmp_path):
    """The wheel pip builds from this tree holds the weights and presets, and its
    core requirements leave torch to the [gpu] extra."""
    import shutil

    # from a copy: an in-tree build leaves build/ behind, whose stale files a later wheel would carry
    src = tmp_path / "src"
    junk = shutil.ignore_patterns(".git", "*.egg-info", "__pycache__", ".pytest_cache")

    def ignore(folder, names):  # build/ and dist/ at the top only: trainer/build is a package
        return set(junk(folder, names)) | ({"build", "dist"} & set(names) if Path(folder) == ROOT else set())

    shutil.copytree(ROOT, src, ignore=ignore)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    (whl,) = tmp_path.glob("ratecontrol-*.whl")
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
        meta = next(z.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    for need in ("ratecontrol/weights/default.npz", "ratecontrol/weights/default.pt", "ratecontrol/presets/opus.yaml",
                 "ratecontrol/scoring/numpy_model.py", "trainer/configs/nsimnet.yaml", "beetsplug/ratecontrol.py"):
        assert need in names, need
    requires = [l.split(":", 1)[1].strip() for l in meta.splitlines() if l.startswith("Requires-Dist:")]
    core = [q for q in requires if "extra ==" not in q]
    assert not [q for q in core if q.split()[0].split("[")[0].split(">")[0] in ("torch", "torchaudio", "webdataset")]
    assert any(q.startswith("torch") and 'extra == "gpu"' in q for q in requires)
    # it installs and encodes on its own: a venv that sees this machine's packages
    # (no download) but imports ratecontrol from the wheel, with torch missing
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(whl)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    song = tmp_path / "song.wav"
    t = np.arange(44100 * 2) / 44100
    sf.write(song, np.stack([0.3 * np.sin(2 * np.pi * 440 * t)] * 2, 1).astype(np.float32), 44100)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RATECONTROL_RUNTIME")}
    code = NO_TORCH + ("import ratecontrol, ratecontrol.cli\n"
                       f"assert ratecontrol.__file__.startswith({str(venv)!r}), ratecontrol.__file__\n"
                       f"sys.argv = ['ratecontrol', 'encode', {str(song)!r}, '--target-mos', '4', '--no-cache']\n"
                       "ratecontrol.cli.main()\n")
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={**env, "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "song.opus").stat().st_size > 0
