"""The learned scorer: the compact model of ``ratecontrol.scoring.model`` on 1-s windows.

Two runtimes run the same packaged model (docs/scoring.md "Runtimes"):

* **numpy** (``numpy_model``, weights ``ratecontrol/weights/default.npz``): the CPU
  runtime; a process that scores with it never imports torch (1.7-2.8 s of CPU saved
  per fresh process on a 2-core machine). Scores agree with torch's within ~1e-4 MOS.
* **torch** (``model.load_checkpoint``, ``ratecontrol/weights/default.pt`` or
  ``model_path``, ``torch.load(weights_only=True)``): used when a GPU may be present,
  for any user-supplied ``.pt`` model, and for ``device="cuda"``. On CUDA the head runs
  under float16 autocast (the frontend stays float32).

Which one (``runtime="auto"``, the default): ``RATECONTROL_RUNTIME=torch|numpy`` in the
environment forces one for the packaged model; otherwise torch when a GPU device node
or ``nvidia-smi`` is present (decided without importing torch), else numpy. An unknown
format version, a missing or corrupt file raise ModelError. Reference features are
computed once in ``prepare`` (about 6 KB per window, so an hour of stereo is ~45 MB);
``score`` streams windows through the model in chunks of ``batch_size`` so memory stays
flat for long inputs.

Thread limits are scoped to the scorer's own calls (``ratecontrol._threads.scoped``):
the numpy runtime's BLAS runs ``NUMPY_BLAS_THREADS`` threads inside ``prepare`` and
``score`` only, and ``threads=`` (torch intra-op threads, or numpy BLAS threads)
likewise; the caller's settings are back in force when each call returns or raises.
"""
from __future__ import annotations

import glob
import hashlib
import os
import shutil
import warnings
from dataclasses import dataclass
from importlib import resources

import numpy as np

from ratecontrol._threads import BLAS_THREADS, scoped
from ratecontrol.errors import ModelError, RatecontrolWarning, UsageError
from ratecontrol.scoring._meta import CODE_REVISION, FORMAT_VERSION, NUMPY_RUNTIME_REVISION
from ratecontrol.scoring.base import register_scorer

__all__ = ["LearnedScorer", "default_model_path", "default_numpy_model_path", "DEFAULT_MODEL_NAME",
           "RUNTIME_ENV", "GPU_EXTRA", "choose_runtime", "torch_installed", "NUMPY_BLAS_THREADS"]

DEFAULT_MODEL_NAME = "default.pt"
#: the numpy runtime's export of DEFAULT_MODEL_NAME (``python -m trainer export-numpy``)
DEFAULT_NUMPY_MODEL_NAME = "default.npz"
#: environment variable forcing the runtime of the packaged model: ``torch`` or ``numpy``
RUNTIME_ENV = "RATECONTROL_RUNTIME"
_RUNTIMES = ("auto", "torch", "numpy")
from ratecontrol.contract import WINDOW_SAMPLES  # noqa: E402

#: BLAS threads of the numpy runtime inside the scorer's calls (``threads=`` overrides;
#: None leaves the caller's). Its BLAS work is small matmuls (bands: [128 x 47, 1765] @
#: [1765, 32] per chunk; the 160-64-64-1 head), after each of which OpenBLAS's idle
#: workers spin. Measured on this 2-core machine (bench/bench_model.py threads, 8 rounds
#: A B A B, loaded): one thread scored 1.64x the windows/s for 0.70x the CPU per window;
#: preparing was a wash (0.97x CPU). Issue 25: OPENBLAS_NUM_THREADS=1 saved ~2.3 CPU-s of
#: a 4-minute encode at no wall cost. docs/performance.md "Scoped thread limits (issue 25)".
#: The same value as the resampler's (ratecontrol._threads.BLAS_THREADS, defined there once).
NUMPY_BLAS_THREADS: int | None = BLAS_THREADS



def default_model_path() -> str:
    """Path of the packaged default checkpoint (it may not exist in a source checkout)."""
    return str(resources.files("ratecontrol").joinpath("weights", DEFAULT_MODEL_NAME))


def default_numpy_model_path() -> str:
    """Path of the packaged default model's numpy export."""
    return str(resources.files("ratecontrol").joinpath("weights", DEFAULT_NUMPY_MODEL_NAME))


def _gpu_may_be_present() -> bool:
    """Whether torch might find a GPU, decided without importing torch (that import is
    what the numpy runtime saves): an NVIDIA or ROCm device node, WSL's GPU node, or
    ``nvidia-smi`` on PATH; CUDA_VISIBLE_DEVICES="" or "-1" hides them all, as for torch.
    A false positive costs only today's behaviour (torch, on the CPU if it finds none)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    if glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd") or os.path.exists("/dev/dxg"):
        return True
    return shutil.which("nvidia-smi") is not None


#: what installs torch for the learned scorer (torch and its CUDA wheels are ~5 GB, so a
#: plain install leaves them out: pyproject.toml)
GPU_EXTRA = "pip install 'ratecontrol[gpu]'"


def torch_installed() -> bool:
    """Whether ``import torch`` can be tried, decided without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # blocked (sys.modules["torch"] = None) or half-installed
        return False


def _why_torch(model_path: str | None, device: str, runtime: str | None) -> str:
    """Which argument asked for the torch runtime, as the error about a missing torch says it."""
    if model_path:
        return f"the model {os.fspath(model_path)} (a torch checkpoint)"
    if (runtime or "auto").strip().lower() == "torch":
        return "runtime='torch'"
    if os.environ.get(RUNTIME_ENV, "").strip().lower() == "torch":
        return f"{RUNTIME_ENV}=torch"
    return f"device {device!r}"


def choose_runtime(model_path: str | None = None, device: str = "auto", runtime: str | None = None) -> str:
    """"numpy" or "torch" for a LearnedScorer built with these arguments (module doc).
    A GPU found with device "auto" picks torch only where torch is installed (a plain
    install runs numpy on the CPU); every other path to torch needs it installed:
    ModelError naming the [gpu] extra, raised here so that a caller can check the
    arguments before any work (without importing torch)."""
    rt = _choose_runtime(model_path, device, runtime)
    if rt == "torch" and not torch_installed():
        raise _no_torch(model_path, device, runtime, "No module named 'torch'")
    return rt


def _no_torch(model_path: str | None, device: str, runtime: str | None, why: object) -> ModelError:
    return ModelError(f"{_why_torch(model_path, device, runtime)} needs the learned scorer's torch runtime, and torch "
                      f"cannot be imported ({why}); {GPU_EXTRA}, or leave the model, device and runtime at their "
                      "defaults to score with numpy on the CPU")


def _choose_runtime(model_path: str | None, device: str, runtime: str | None) -> str:
    asked = (runtime or "auto").strip().lower()
    if asked not in _RUNTIMES:
        raise UsageError(f"unknown learned-scorer runtime {runtime!r}; use one of {', '.join(_RUNTIMES)}")
    if model_path and os.fspath(model_path).endswith(".npz"):
        if asked == "torch":
            raise UsageError(f"{model_path} is a numpy export; the torch runtime reads .pt checkpoints")
        return "numpy"
    if model_path:
        if asked == "numpy":
            raise UsageError(f"the numpy runtime runs .npz exports, not {model_path}; "
                             "write one with `python -m trainer export-numpy MODEL.pt`")
        return "torch"
    if asked == "auto":
        env = os.environ.get(RUNTIME_ENV, "").strip().lower()
        if env not in ("", *_RUNTIMES):
            raise UsageError(f"{RUNTIME_ENV}={os.environ[RUNTIME_ENV]!r}: use torch or numpy (or leave it unset)")
        asked = env or "auto"
    if asked != "auto":
        if asked == "numpy" and device not in ("auto", "cpu"):
            raise UsageError(f"the numpy runtime runs on the CPU, not device {device!r}")
        return asked
    if device == "cpu":
        return "numpy"
    if device != "auto":
        return "torch"
    if not _gpu_may_be_present():
        return "numpy"
    if not torch_installed():
        # the GPU stays idle but the encode runs: numpy on the CPU is the plain install's runtime
        warnings.warn(RatecontrolWarning(f"a GPU is present but torch is not installed: the learned scorer runs "
                                         f"on the CPU ({GPU_EXTRA} to use the GPU)"), stacklevel=3)
        return "numpy"
    return "torch"


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def _check_windows(windows: np.ndarray, what: str) -> np.ndarray:
    w = np.asarray(windows)
    if w.ndim == 1:
        w = w[None, :]
    if w.ndim != 2 or w.shape[1] != WINDOW_SAMPLES:
        raise UsageError(f"learned scorer needs {what} windows shaped [W, {WINDOW_SAMPLES}] (1 s at 44.1 kHz), got {w.shape}")
    return np.ascontiguousarray(w, dtype=np.float32)


def _torch_index(rows):
    import torch

    return torch.as_tensor(np.asarray(rows, np.int64))


def _torch_cat(cols):
    import torch

    return torch.cat(cols)


@dataclass(frozen=True)
class _Prepared:
    #: reference features per window, on the CPU (dict of [W, ...] tensors, or numpy
    #: arrays for the numpy runtime)
    features: dict
    n_windows: int


@register_scorer("learned")
class LearnedScorer:
    """Fast learned approximation of the ViSQOL v3 audio-mode MOS per 1-s window."""

    name = "learned"
    #: prepare() keeps ~6 KB of features per window, not the window (see the module doc)
    compact_prepare = True
    #: learned minus exact ViSQOL on a track's p10, 1,194 (track, rung) pairs of the 52
    #: real recordings in ../shared/audio (bench/bench_oracle.py, docs/performance.md
    #: "Oracle bench"): bias -0.002, RMSE 0.028, 97th percentile +0.031, worst +0.083
    pooled_error_mos = 0.028
    #: the default search margin: with +0.03 the chosen rung met the target by exact
    #: ViSQOL in 99.8 % of 672 searches (51 of 52 tracks in all 15 of their searches;
    #: worst shortfall 0.006) for +2.3 % bits; with 0 it was 94.9 % (worst 0.027)
    default_margin_mos = 0.03

    def __init__(self, model_path: str | None = None, device: str = "auto", batch_size: int | None = None,
                 threads: int | None = None, runtime: str | None = None, **_: object):
        self.runtime = choose_runtime(model_path, device, runtime)
        asked = (runtime or "auto").strip().lower()
        forced = (asked if asked != "auto" else os.environ.get(RUNTIME_ENV, "").strip().lower()) == "numpy"
        if self.runtime == "numpy" and not self._init_numpy(model_path, forced):
            self.runtime = "torch"
        if self.runtime == "torch":
            self._init_torch(model_path, device, runtime)
        #: (kind, n): the thread limit in force inside prepare() and score() only
        #: (``ratecontrol._threads.scoped``); numpy: BLAS threads (NUMPY_BLAS_THREADS unless
        #: threads= says), torch: intra-op threads when threads= is given, else torch's own
        self.thread_limit = (("blas", int(threads) if threads else NUMPY_BLAS_THREADS) if self.runtime == "numpy"
                             else ("torch", int(threads) if threads else None))
        # CUDA: large batches keep the GPU busy (a 1-s pair is ~0.2 MB of float32 input);
        # CPU: 128 windows keep the STFT working set in cache
        self.batch_size = int(batch_size or (1024 if self.runtime == "torch" and self.device.type == "cuda" else 128))
        if self.batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {self.batch_size}")

    def _init_numpy(self, model_path: str | None, forced: bool) -> bool:
        """Load the numpy export; False (with a warning) when the packaged one is out of
        step with default.pt and the runtime was not forced: torch runs default.pt."""
        from ratecontrol.scoring.numpy_model import load_numpy_model

        path = os.fspath(model_path) if model_path else default_numpy_model_path()
        if not model_path and not os.path.isfile(path):
            if not forced and os.path.isfile(default_model_path()) and torch_installed():
                warnings.warn(RatecontrolWarning(f"no numpy export of the learned model at {path}; scoring with torch "
                                                 "(write it with `python -m trainer export-numpy`)"), stacklevel=3)
                return False
            raise ModelError(f"no packaged numpy model at {path} (a broken install? reinstall ratecontrol); "
                             f"set {RUNTIME_ENV}=torch, or use the exact scorer", options={"scorer": "visqol"})
        self.model, meta = load_numpy_model(path)
        if not model_path and os.path.isfile(default_model_path()):
            pt_digest = _file_digest(default_model_path())
            if meta["source_digest"] != pt_digest:
                msg = (f"{path} was exported from another default.pt (digest {meta['source_digest']}, "
                       f"packaged {pt_digest}); re-export it with `python -m trainer export-numpy`")
                if forced or not torch_installed():  # torch would run default.pt; without it, say so
                    raise ModelError(msg)
                warnings.warn(RatecontrolWarning(msg + "; scoring with torch"), stacklevel=3)
                return False
        self.model_path = path
        self.device = "cpu"
        self.arch = meta["arch"]
        self.metrics = {}
        # the source checkpoint's version plus the runtime and its export: the numpy
        # runtime's floats are not torch's (within ~1e-4 MOS), so its probes cache apart
        self.version = (f"learned-{self.arch}-v{FORMAT_VERSION}-r{CODE_REVISION}-{meta['source_digest']}"
                        f"-np{NUMPY_RUNTIME_REVISION}-{meta['digest']}")
        return True

    def _init_torch(self, model_path: str | None, device: str, runtime: str | None) -> None:
        try:
            import torch

            from ratecontrol.scoring.model import load_checkpoint
        except ImportError as exc:
            # a plain install has no torch (the [gpu] extra): one line, not a traceback
            raise _no_torch(model_path, device, runtime, exc) from None

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.device = torch.device(device)
        except RuntimeError as exc:
            raise UsageError(f"unknown device {device!r} for the learned scorer; use auto, cpu or cuda") from exc
        path = os.fspath(model_path) if model_path else default_model_path()
        if not model_path and not os.path.isfile(path):
            raise ModelError(f"no packaged default model at {path} (a broken install? reinstall ratecontrol); "
                             "pass a model file as LearnedScorer(model_path=...), or use the exact scorer",
                             options={"scorer": "visqol"})
        self.model_path = path
        self.model, ckpt = load_checkpoint(path, map_location=self.device)
        self.arch = ckpt["arch"]
        self.metrics = ckpt.get("metrics", {})
        self.version = f"learned-{self.arch}-v{ckpt['format_version']}-r{CODE_REVISION}-{_file_digest(path)}"

    def _chunks(self, n: int):
        for i in range(0, n, self.batch_size):
            yield slice(i, min(n, i + self.batch_size))

    def prepare(self, ref_windows: np.ndarray) -> _Prepared:
        ref = _check_windows(ref_windows, "reference")
        with scoped(*self.thread_limit):
            return self._prepare(ref)

    def _prepare(self, ref: np.ndarray) -> _Prepared:
        if self.runtime == "numpy":
            parts = [self.model.reference_features(ref[sl]) for sl in self._chunks(len(ref))]
            if not parts:
                parts = [{k: v[:0] for k, v in self.model.reference_features(np.zeros((1, WINDOW_SAMPLES), np.float32)).items()}]
            return _Prepared({k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, len(ref))
        import torch

        parts: list[dict] = []
        with torch.inference_mode():
            for sl in self._chunks(len(ref)):
                x = torch.from_numpy(ref[sl]).to(self.device, non_blocking=True)
                parts.append({k: v.float().cpu() for k, v in self.model.reference_features(x).items()})
        if parts:
            feats = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        else:
            with torch.inference_mode():
                probe = self.model.reference_features(torch.zeros(1, WINDOW_SAMPLES, device=self.device))
            feats = {k: v[:0].cpu() for k, v in probe.items()}
        return _Prepared(feats, len(ref))

    def gather(self, parts) -> _Prepared:
        """One prepared reference made of rows of others: ``parts`` is a list of
        ``(prepared, rows)`` (rows: int indices into that prepared), concatenated in
        order. The features are per window, so a window's rows score exactly as when it
        was prepared (the full-track check takes the probes' windows: issue 25)."""
        feats: dict = {}
        for k in parts[0][0].features:
            cols = [p.features[k][np.asarray(rows, np.intp)] if isinstance(p.features[k], np.ndarray)
                    else p.features[k][_torch_index(rows)] for p, rows in parts]
            feats[k] = np.concatenate(cols) if isinstance(cols[0], np.ndarray) else _torch_cat(cols)
        return _Prepared(feats, int(sum(len(rows) for _, rows in parts)))

    def score(self, prepared: _Prepared, deg_windows: np.ndarray) -> np.ndarray:
        deg = _check_windows(deg_windows, "degraded")
        if len(deg) != prepared.n_windows:
            raise UsageError(f"{len(deg)} degraded windows for {prepared.n_windows} prepared reference windows")
        with scoped(*self.thread_limit):
            return self._score(prepared, deg)

    def _score(self, prepared: _Prepared, deg: np.ndarray) -> np.ndarray:
        out = np.empty(len(deg), dtype=np.float64)
        if self.runtime == "numpy":
            for sl in self._chunks(len(deg)):
                out[sl] = self.model.forward_from_reference({k: v[sl] for k, v in prepared.features.items()}, deg[sl])
            return out
        import torch

        cuda = self.device.type == "cuda"
        with torch.inference_mode(), torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=cuda):
            for sl in self._chunks(len(deg)):
                feats = {k: v[sl].to(self.device, non_blocking=True) for k, v in prepared.features.items()}
                x = torch.from_numpy(deg[sl]).to(self.device, non_blocking=True)
                out[sl] = self.model.forward_from_reference(feats, x).float().cpu().numpy()
        return out
