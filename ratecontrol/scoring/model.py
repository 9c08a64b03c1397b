"""The compact full-reference quality model, shared by the library and ``trainer/``.

Input: reference and degraded mono 1-s windows at 44.1 kHz (float32 [B, 44100]).
Output: MOS on the ViSQOL v3 audio-mode scale, bounded to [1, 4.75] (identity scores
~4.73 under visqol-python 3.8).

Two architectures live here and are compared in docs/model.md:

``nsimnet`` (the default) follows ViSQOL v3 audio mode's own structure, computed
analytically so that it runs batched on a CPU or GPU:

1. ViSQOL's gammatone spectrogram (32 ERB-spaced bands from 50 Hz, Slaney's filters
   designed for 48 kHz, RMS of each band over 80-ms Hann frames every 20 ms) is
   obtained from an STFT: by Parseval, the mean square of a filtered frame is the
   frame's power spectrum weighted by the filter's squared magnitude response. At
   44.1 kHz the 80/20-ms framing is 3528/882 samples and gives the same 47 frames a
   1-s window has at 48 kHz; band dB values match visqol-python's IIR filterbank
   within 0.25 dB from 180 Hz up (tests/test_model.py). The three lowest bands
   (50..140 Hz) differ by up to ~1.3 dB at onsets: visqol restarts its IIR filters cold
   in every frame and their ~30-ms responses are cut by the 80-ms frame.
2. ViSQOL's comparison preprocessing: the degraded signal is scaled to the reference's
   sound pressure level; 10*log10(band RMS); an absolute floor of -45 dB and a floor
   45 dB below each frame's loudest band (of either signal); shift so the minimum is 0
   (visqol/gammatone.py ``prepare_spectrograms_for_comparison``).
3. NSIM (visqol/nsim.py): 3x3 Gaussian local means/variances with edge replication,
   intensity x structure map, over ViSQOL's one 30-frame patch of a 1-s window
   (frames 14..43; visqol/patch_creator.py puts the first patch at frame
   patch_size//2 - 1). Like visqol/patch_selector.py, the reference patch is matched
   against the degraded spectrogram at every frame offset (zero-padded past the end)
   and the best offset wins; like its fine realignment, the pair re-normalised on its
   own is kept when it is at least as similar. The search runs only for windows whose
   aligned patch scores under ``search_below`` (0.8): above that the aligned patch
   nearly always wins, and real codec output rarely goes under it. Without the search, 6 % of dev pairs (quiet or noisy ones, where
   ViSQOL picks a patch 0.3-0.9 s away) were off by up to 3.7 MOS; with it, ViSQOL's
   own SVR on these features gives RMSE 0.079 / Pearson 0.998 against visqol-python.
4. Per-band statistics (mean NSIM = ViSQOL's ``fvnsim``, mean intensity and structure
   terms, NSIM spread, degraded level) go to a small learned MLP that replaces
   ViSQOL's SVR; MOS = 1 + 3.75 * sigmoid(.).

Only the MLP learns; the frontend is fixed ViSQOL arithmetic, so the model retrains from
any labelled pair set (e.g. the public dataset) while costing one STFT per window.
The reference branch (band energies and level) is computed once per track with
``reference_features`` and reused for every degraded candidate.

``melcnn`` is the generic baseline: log-mel spectrograms of both signals (level
matched), stacked with their difference, into a small CNN.

Checkpoints (``save_checkpoint`` / ``load_checkpoint``) are plain dicts of tensors and
primitive types so that ``torch.load(weights_only=True)`` can read them.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from ratecontrol.errors import ModelError
from ratecontrol.scoring._bounded import bounded_mos
from ratecontrol.scoring._frontend import (
    GammatoneFrontend, SubsonicHighpass, flush_tiny, gammatone_band_matrix, subsonic_power_response,
)
from ratecontrol.scoring._melcnn import MelCnn
from ratecontrol.scoring._nsimnet import NsimNet

__all__ = [
    "FORMAT_VERSION",
    "SAMPLE_RATE_HZ",
    "WINDOW_SAMPLES",
    "ARCHITECTURES",
    "NsimNet",
    "MelCnn",
    "build_model",
    "gammatone_band_matrix",
    "checkpoint_dict",
    "save_checkpoint",
    "load_checkpoint",
    "index_features",
    "subsonic_power_response",
    "bounded_mos",
    "GammatoneFrontend",
    "SubsonicHighpass",
    "CODE_REVISION",
]

# the checkpoint layout version and the code revision (part of the learned scorer's
# version, hence of probe cache keys) live in a torch-free module for the numpy runtime;
# a change to what the model computes (_frontend.py, _nsimnet.py, _melcnn.py, _bounded.py)
# must bump CODE_REVISION there (and re-export default.npz, whose runtime in
# numpy_model.py mirrors them); trainer/export.py imports CODE_REVISION from here
from ratecontrol.scoring._meta import CODE_REVISION, FORMAT_VERSION  # noqa: E402
from ratecontrol.contract import MODEL_SAMPLE_RATE_HZ as SAMPLE_RATE_HZ  # noqa: E402
from ratecontrol.contract import WINDOW_SAMPLES  # noqa: E402

# the names defined in the private modules keep this module as their home, as before the
# split (httpx's __init__ does the same): pickles, reprs and help() say
# ratecontrol.scoring.model.NsimNet
for _obj in (NsimNet, MelCnn, GammatoneFrontend, SubsonicHighpass, gammatone_band_matrix, subsonic_power_response,
             bounded_mos):
    _obj.__module__ = __name__


ARCHITECTURES: dict[str, type[nn.Module]] = {"nsimnet": NsimNet, "melcnn": MelCnn}


def build_model(arch: str, kwargs: Mapping[str, Any] | None = None, design: bool = True) -> nn.Module:
    """A fresh model. ``design=False`` skips designing fixed frontend tensors (they come
    from the checkpoint's state dict), so loading does not import visqol."""
    if arch not in ARCHITECTURES:
        raise ModelError(f"unknown model architecture {arch!r}; this ratecontrol knows {sorted(ARCHITECTURES)}")
    try:
        return ARCHITECTURES[arch](**dict(kwargs or {}), design=design)
    except TypeError as exc:
        raise ModelError(f"bad arguments for architecture {arch!r}: {exc}") from exc


def index_features(feats: Mapping[str, Tensor], index) -> dict[str, Tensor]:
    """Slice every tensor of a reference-feature dict along the batch axis."""
    return {k: v[index] for k, v in feats.items()}


def _plain(obj: Any) -> Any:
    """Tensors and primitive containers only, as ``torch.load(weights_only=True)`` wants."""
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    # exact builtin types: subclasses (torch.__version__ is a TorchVersion) are globals
    # the weights_only unpickler refuses
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    return str(obj)


def checkpoint_dict(
    model: nn.Module,
    *,
    frontend: Mapping[str, Any] | None = None,
    training_data: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The library checkpoint layout (format version ``FORMAT_VERSION``)."""
    return _plain(
        {
            "format_version": FORMAT_VERSION,
            "arch": model.arch,
            "kwargs": model.config,
            "state_dict": model.state_dict(),
            "frontend": dict(frontend or {"sample_rate_hz": SAMPLE_RATE_HZ, "window_samples": WINDOW_SAMPLES}),
            "training_data": dict(training_data or {}),
            "metrics": dict(metrics or {}),
            **dict(extra or {}),
        }
    )


def save_checkpoint(obj: Mapping[str, Any], path: str | os.PathLike) -> None:
    """torch.save to a temp file in the same folder, then rename (no half-written files)."""
    path = os.fspath(path)
    from ratecontrol import fsutil

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with fsutil.atomic_output(path) as tmp:  # readable like a plain file: a packaged model
        torch.save(dict(obj), tmp)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, checkpoint dict) from a library checkpoint; ModelError if the
    file is missing, unreadable, or of another format version."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelError(f"model checkpoint {path} not found; pass an existing .pt file (or reinstall ratecontrol for the default)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt/foreign files
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        reason = next((ln for ln in lines if "error" in ln.lower() and len(ln) < 300), lines[0] if lines else "")
        raise ModelError(f"cannot read model checkpoint {path} ({type(exc).__name__}: {reason[:240]}); re-export it with `python -m trainer export`") from exc
    if not isinstance(ckpt, dict) or "format_version" not in ckpt:
        raise ModelError(f"{path} is not a ratecontrol model checkpoint (no format_version); export one with `python -m trainer export`")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise ModelError(
            f"{path} has model format version {ckpt['format_version']!r}, this ratecontrol reads version {FORMAT_VERSION}; "
            "use a matching ratecontrol or re-export the model"
        )
    for key in ("arch", "kwargs", "state_dict"):
        if key not in ckpt:
            raise ModelError(f"model checkpoint {path} lacks {key!r}; re-export it with `python -m trainer export`")
    model = build_model(ckpt["arch"], ckpt["kwargs"], design=False)
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ModelError(f"model checkpoint {path} does not fit architecture {ckpt['arch']!r}: {str(exc).splitlines()[0][:200]}") from exc
    frontend = getattr(model, "frontend", None)
    if frontend is not None and hasattr(frontend, "band_matrix"):
        with torch.no_grad():
            flush_tiny(frontend.band_matrix)
    model.eval()
    return model.to(map_location), ckpt
