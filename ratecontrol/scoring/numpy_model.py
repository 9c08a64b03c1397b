"""The shipped nsimnet model on numpy alone: the learned scorer's CPU runtime.

A fresh process that imports torch pays 1.7-2.8 s of CPU for it (issue 13), more than a
short encode's whole search. This module runs the packaged model
(``ratecontrol/weights/default.npz``, written from ``default.pt`` by
``python -m trainer export-numpy``; plain arrays, read with ``allow_pickle=False``) with
the arithmetic of ``ratecontrol.scoring.model.NsimNet``, step for step and in float32:
the subsonic pre-filter by FFT, the STFT band energies, ViSQOL's dB floors, NSIM with
its 3x3 Gaussian, the gated patch search, the MLP head with exact (erf) GELU. Only
numpy and scipy.fft are imported (math.erf for the GELU; scipy.fft because numpy.fft
took twice torch's time per window, ``_fft``). Scores agree with the torch
model by float rounding only (<= 1e-4 MOS per window on real codec output, <= 5e-4 on
harsh synthetic windows) (tests/test_numpy_runtime.py asserts < 1e-3).

Each function names the torch code it mirrors; a change there must be made here too
(``CODE_REVISION`` in ``_meta`` guards the pair: an export made under another code
revision is refused).
"""
from __future__ import annotations

import hashlib
import math
import os
from typing import Mapping

import numpy as np

from ratecontrol.errors import ModelError
from ratecontrol.scoring._meta import CODE_REVISION, DB_EPS, NSIM_C1, NSIM_C3, NUMPY_FORMAT_VERSION

__all__ = ["NumpyNsimNet", "load_numpy_model", "content_digest", "REQUIRED_ARRAYS"]

_F32 = np.float32
_EPS = _F32(DB_EPS)
_NSIM_C1 = _F32(NSIM_C1)
_NSIM_C3 = _F32(NSIM_C3)

#: the arrays an export holds besides the head's layers (``head.{0,2,4}.{weight,bias}``)
REQUIRED_ARRAYS = ("format_version", "code_revision", "arch", "source_digest", "n_fft", "hop_length", "n_bands",
                   "first_frame", "n_frames", "abs_floor_db", "rel_floor_db", "features", "search", "search_below",
                   "subsonic_prefilter", "prefilter_pad", "mos_min", "mos_max", "window", "band_matrix", "gauss",
                   "prefilter_gain")

_erf = np.frompyfunc(math.erf, 1, 1)


def _fft():
    """scipy.fft: float32 transforms vectorised across frames. Per 1-s window (one core):
    the 47 frames' rfft 0.56 ms against numpy.fft's 1.18 ms (torch/MKL: 0.64 ms), the
    pre-filter's rfft + irfft 0.25 ms against 0.44 ms (torch 0.34 ms); importing it
    costs 0.26-0.33 s of CPU, torch 1.4-2.8 s. scipy is a dependency anyway."""
    import scipy.fft

    return scipy.fft


def _gelu(x: np.ndarray) -> np.ndarray:
    """torch.nn.GELU() (approximate='none'): x * 0.5 * (1 + erf(x / sqrt(2))); erf in
    double precision per element (a 128-window chunk has 2 x 8,192 of them: ~3 ms)."""
    e = _erf((x.astype(np.float64) * (1.0 / math.sqrt(2.0))).ravel()).astype(np.float64).reshape(x.shape)
    return (x.astype(np.float64) * 0.5 * (1.0 + e)).astype(_F32)


def _mean_square(x: np.ndarray) -> np.ndarray:
    """model._mean_square: mean square after mean removal, [B] float32 (sums in float64)."""
    x64 = x.astype(np.float64)
    n = x.shape[-1]
    return np.maximum(np.einsum("ij,ij->i", x64, x64) / n - x64.mean(-1) ** 2, 0.0).astype(_F32)


def content_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """12 hex digits of sha256 over every array's name, dtype, shape and bytes, in name
    order: the same for the same content however the .npz file was zipped."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:12]


class NumpyNsimNet:
    """``model.NsimNet`` in eval mode, from a numpy export (``load_numpy_model``)."""

    arch = "nsimnet"

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        a = {k: np.asarray(v) for k, v in arrays.items()}
        self.n_fft, self.hop_length = int(a["n_fft"]), int(a["hop_length"])
        self.n_bands = int(a["n_bands"])
        self.first_frame, self.n_frames = int(a["first_frame"]), int(a["n_frames"])
        self.abs_floor_db, self.rel_floor_db = _F32(a["abs_floor_db"]), _F32(a["rel_floor_db"])
        self.features = tuple(str(f) for f in a["features"])
        self.search, self.search_below = bool(a["search"]), _F32(a["search_below"])
        self.subsonic_prefilter, self.pad = bool(a["subsonic_prefilter"]), int(a["prefilter_pad"])
        self.mos_min, self.mos_max = float(a["mos_min"]), float(a["mos_max"])
        self.window = a["window"].astype(_F32)
        self.band_matrix = np.ascontiguousarray(a["band_matrix"], dtype=_F32)
        g = a["gauss"].astype(_F32).reshape(3, 3)
        self._g_centre, self._g_edge, self._g_corner = g[1, 1], g[0, 1], g[0, 0]
        self.prefilter_gain = a["prefilter_gain"].astype(_F32)
        self.layers = [(a[f"head.{i}.weight"].astype(_F32).T.copy(), a[f"head.{i}.bias"].astype(_F32))
                       for i in (0, 2, 4)]
        from ratecontrol.contract import WINDOW_SAMPLES

        self.window_samples = WINDOW_SAMPLES
        self.total_frames = 1 + (WINDOW_SAMPLES - self.n_fft) // self.hop_length
        n_in = self.n_bands * len(self.features)
        if (self.layers[0][0].shape[0] != n_in or self.band_matrix.shape != (self.n_fft // 2 + 1, self.n_bands)
                or self.window.shape != (self.n_fft,)
                or self.prefilter_gain.shape != ((WINDOW_SAMPLES + 2 * self.pad) // 2 + 1,)):
            raise ModelError("the numpy model's arrays do not fit its configuration; re-export it with "
                             "`python -m trainer export-numpy`")

    # -- model.SubsonicHighpass.forward ------------------------------------------------
    def prefilter(self, x: np.ndarray) -> np.ndarray:
        if not self.subsonic_prefilter:
            return x
        p, n = self.pad, x.shape[-1]
        left = 2 * x[..., :1] - x[..., 1 : p + 1][..., ::-1]
        right = 2 * x[..., -1:] - x[..., -p - 1 : -1][..., ::-1]
        xp = np.concatenate([left, x, right], axis=-1)
        fft = _fft()
        spec = fft.rfft(xp, axis=-1)
        spec *= self.prefilter_gain
        y = fft.irfft(spec, n=xp.shape[-1], axis=-1)
        return np.ascontiguousarray(y[..., p : p + n], dtype=_F32)

    # -- model.GammatoneFrontend.frames ------------------------------------------------
    def frames(self, x: np.ndarray, first: int, n: int) -> np.ndarray:
        """Band mean squares of frames first .. first+n-1: [B, n_bands, n] float32."""
        from numpy.lib.stride_tricks import sliding_window_view

        start = first * self.hop_length
        seg = x[..., start : start + (n - 1) * self.hop_length + self.n_fft]
        fr = sliding_window_view(seg, self.n_fft, axis=-1)[..., :: self.hop_length, :] * self.window
        spec = _fft().rfft(fr, axis=-1)
        power = (spec.real * spec.real + spec.imag * spec.imag).astype(_F32, copy=False)
        # subnormal powers above a codec's cut-off made the matmul slow (model.py)
        np.maximum(power, _F32(1e-30), out=power)
        b = x.shape[0]
        bands = power.reshape(b * n, -1) @ self.band_matrix
        return bands.reshape(b, n, self.n_bands).transpose(0, 2, 1)

    # -- NsimNet.reference_features ------------------------------------------------------
    def reference_features(self, ref: np.ndarray) -> dict[str, np.ndarray]:
        ref = np.ascontiguousarray(ref, dtype=_F32)
        frames = self.total_frames if self.search else self.n_frames
        first = 0 if self.search else self.first_frame
        ref = self.prefilter(ref)
        return {"band_ms": np.ascontiguousarray(self.frames(ref, first, frames)), "ms": _mean_square(ref)}

    def _ref_patch(self, ref_feats: Mapping[str, np.ndarray]) -> np.ndarray:
        band = ref_feats["band_ms"]
        if band.shape[-1] == self.n_frames:
            return band
        return band[..., self.first_frame : self.first_frame + self.n_frames]

    # -- NsimNet._smooth, _to_db, _nsim, _stats -----------------------------------------
    def _smooth(self, x: np.ndarray) -> np.ndarray:
        p = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
        edges = p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]
        corners = p[..., :-2, :-2] + p[..., :-2, 2:] + p[..., 2:, :-2] + p[..., 2:, 2:]
        return self._g_centre * p[..., 1:-1, 1:-1] + self._g_edge * edges + self._g_corner * corners

    def _to_db(self, ref_ms: np.ndarray, deg_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ref_db = np.maximum(_F32(5.0) * np.log10(ref_ms + _EPS), self.abs_floor_db)
        deg_db = np.maximum(_F32(5.0) * np.log10(deg_ms + _EPS), self.abs_floor_db)
        peak = np.maximum(ref_db.max(-2, keepdims=True), deg_db.max(-2, keepdims=True))
        ref_db = np.maximum(ref_db, peak - self.rel_floor_db)
        deg_db = np.maximum(deg_db, peak - self.rel_floor_db)
        low = np.minimum(ref_db.min((-2, -1), keepdims=True), deg_db.min((-2, -1), keepdims=True))
        return ref_db - low, deg_db - low

    def _nsim(self, r, d, ref_terms=None):
        if ref_terms is None:
            mu_r = self._smooth(r)
            var_r = self._smooth(r * r) - mu_r * mu_r
        else:
            mu_r, var_r = ref_terms
        mu_d = self._smooth(d)
        var_d = self._smooth(d * d) - mu_d * mu_d
        cov = self._smooth(r * d) - mu_r * mu_d
        intensity = (2 * mu_r * mu_d + _NSIM_C1) / (mu_r * mu_r + mu_d * mu_d + _NSIM_C1)
        vprod = var_r * var_d
        root = np.where(vprod > 0, np.sqrt(np.maximum(vprod, _F32(0))), _F32(0))
        structure = (cov + _NSIM_C3) / (root + _NSIM_C3)
        return intensity, structure, intensity * structure

    def _stats(self, r, d):
        intensity, structure, sim = self._nsim(r, d)
        stats = {
            "nsim": lambda: sim.mean(-1),
            "intensity": lambda: intensity.mean(-1),
            "structure": lambda: structure.mean(-1),
            "nsim_std": lambda: sim.std(-1, ddof=1),
            "deg_db": lambda: d.mean(-1) / _F32(50.0),
            "ref_db": lambda: r.mean(-1) / _F32(50.0),
        }
        return np.stack([stats[name]() for name in self.features], axis=-1).astype(_F32), sim.mean((-2, -1))

    # -- NsimNet._searched ------------------------------------------------------------
    def _searched(self, ref_full, deg_full, stats_b, sim_b):
        from numpy.lib.stride_tricks import sliding_window_view

        first, n = self.first_frame, self.n_frames
        ref_db, deg_db = self._to_db(ref_full, deg_full)
        r = ref_db[..., first : first + n]
        padded = np.pad(deg_db, [(0, 0), (0, 0), (0, n - 1)])
        cands = sliding_window_view(padded, n, axis=-1).transpose(0, 2, 1, 3)  # [R, offsets, bands, n]
        mu_r = self._smooth(r)
        ref_terms = (mu_r[:, None], (self._smooth(r * r) - mu_r * mu_r)[:, None])
        _, _, sim = self._nsim(r[:, None], cands, ref_terms)
        best = sim.mean((-2, -1)).argmax(-1)  # the first maximum, like torch.argmax
        rows = np.arange(len(best))
        stats_a, sim_a = self._stats(r, cands[rows, best])
        deg_pad = np.pad(deg_full, [(0, 0), (0, 0), (0, n - 1)])
        gathered = sliding_window_view(deg_pad, n, axis=-1)[rows, :, best]  # [R, bands, n]
        r_b, d_b = self._to_db(ref_full[..., first : first + n], gathered)
        stats_r, sim_r = self._stats(r_b, d_b)
        out = np.where((sim_r >= sim_a)[:, None, None], stats_r, stats_a)
        natural = (best == first) & (sim_b >= sim_a)
        return np.where(natural[:, None, None], stats_b, out)

    # -- NsimNet.band_statistics ------------------------------------------------------
    def band_statistics(self, ref_feats: Mapping[str, np.ndarray], deg: np.ndarray) -> np.ndarray:
        deg = self.prefilter(np.ascontiguousarray(deg, dtype=_F32))
        deg_ms = _mean_square(deg)
        gain = ((ref_feats["ms"] + _EPS) / (deg_ms + _EPS)).astype(_F32)[:, None, None]
        deg_patch = self.frames(deg, self.first_frame, self.n_frames) * gain
        stats, sim = self._stats(*self._to_db(self._ref_patch(ref_feats), deg_patch))
        if not self.search or ref_feats["band_ms"].shape[-1] != self.total_frames:
            return stats
        rows = np.flatnonzero(sim < self.search_below)
        if rows.size == 0:
            return stats
        d, g = deg[rows], gain[rows]
        first, n, total = self.first_frame, self.n_frames, self.total_frames
        parts = [self.frames(d, 0, first) * g] if first > 0 else []
        parts.append(deg_patch[rows])
        if first + n < total:
            parts.append(self.frames(d, first + n, total - first - n) * g)
        deg_full = np.concatenate(parts, axis=-1)
        stats = stats.copy()
        stats[rows] = self._searched(ref_feats["band_ms"][rows], deg_full, stats[rows], sim[rows])
        return stats

    # -- NsimNet.predict_statistics, forward_from_reference -----------------------------
    def predict_statistics(self, stats: np.ndarray) -> np.ndarray:
        h = stats.reshape(stats.shape[0], -1).astype(_F32)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = _gelu(h)
        logit = h[:, 0].astype(np.float64)
        return (self.mos_min + (self.mos_max - self.mos_min) / (1.0 + np.exp(-logit))).astype(_F32)

    def forward_from_reference(self, ref_feats: Mapping[str, np.ndarray], deg: np.ndarray) -> np.ndarray:
        """MOS float32 [B] of degraded windows against prepared reference features."""
        return self.predict_statistics(self.band_statistics(ref_feats, deg))


def load_numpy_model(path: str | os.PathLike) -> tuple[NumpyNsimNet, dict]:
    """(model, meta) from a numpy export; meta: format_version, code_revision, arch,
    source_digest (of the .pt it was exported from) and digest (of its content).
    ModelError for a missing, unreadable or foreign file, or one made for other code."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError as exc:
        raise ModelError(f"numpy model {path} not found; export one with `python -m trainer export-numpy`") from exc
    except Exception as exc:  # zipfile / ValueError for corrupt or pickled content
        raise ModelError(f"cannot read numpy model {path} ({type(exc).__name__}: {str(exc)[:200]}); "
                         "re-export it with `python -m trainer export-numpy`") from exc
    missing = [k for k in REQUIRED_ARRAYS if k not in arrays]
    if missing:
        raise ModelError(f"{path} is not a ratecontrol numpy model (lacks {missing[:4]}); "
                         "export one with `python -m trainer export-numpy`")
    meta = {"format_version": int(arrays["format_version"]), "code_revision": int(arrays["code_revision"]),
            "arch": str(arrays["arch"]), "source_digest": str(arrays["source_digest"]),
            "digest": content_digest(arrays)}
    if meta["format_version"] != NUMPY_FORMAT_VERSION or meta["code_revision"] != CODE_REVISION:
        raise ModelError(f"{path} is numpy model format {meta['format_version']}, code revision {meta['code_revision']}; "
                         f"this ratecontrol runs format {NUMPY_FORMAT_VERSION}, revision {CODE_REVISION}: "
                         "re-export it with `python -m trainer export-numpy`")
    if meta["arch"] != NumpyNsimNet.arch:
        raise ModelError(f"the numpy runtime runs {NumpyNsimNet.arch!r} models, {path} holds {meta['arch']!r}")
    return NumpyNsimNet(arrays), meta
