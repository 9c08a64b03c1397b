"""NsimNet: ViSQOL v3 audio mode's comparison (dB floors, NSIM, the patch search) on the
fixed frontend, with a small learned head in place of ViSQOL's SVR
(``ratecontrol.scoring.model`` describes the model step by step)."""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ratecontrol.scoring._bounded import bounded_mos
from ratecontrol.scoring._frontend import GammatoneFrontend, SubsonicHighpass
from ratecontrol.scoring._meta import DB_EPS, NSIM_C1 as _NSIM_C1, NSIM_C3 as _NSIM_C3

__all__ = ["NsimNet"]

_NSIM_GAUSSIAN = (
    (0.0113033910173052, 0.0838251475442633, 0.0113033910173052),
    (0.0838251475442633, 0.619485845753726, 0.0838251475442633),
    (0.0113033910173052, 0.0838251475442633, 0.0113033910173052),
)


def _mean_square(x: Tensor) -> Tensor:
    """Mean square after mean removal: the labelling path removes each window's mean
    (and subsonics) before ViSQOL matches levels."""
    x = x.float()
    # norm^2/N - mean^2: 0.05 ms per 1-s window against 0.38 ms for Tensor.var (CPU)
    return (torch.linalg.vector_norm(x, dim=-1).square() / x.shape[-1] - x.mean(-1).square()).clamp_min(0.0)



class NsimNet(nn.Module):
    """ViSQOL-structured frontend + learned per-band-statistics head (module doc)."""

    arch = "nsimnet"
    FEATURES = ("nsim", "intensity", "structure", "nsim_std", "deg_db", "ref_db")

    def __init__(
        self,
        n_fft: int = 3528,
        hop_length: int = 882,
        n_bands: int = 32,
        fmin_hz: float = 50.0,
        first_frame: int = 14,
        n_frames: int = 30,
        abs_floor_db: float = -45.0,
        rel_floor_db: float = 45.0,
        features: tuple[str, ...] | list[str] = ("nsim", "intensity", "structure", "nsim_std", "deg_db"),
        hidden: int = 64,
        search: bool = True,
        search_below: float = 0.8,
        subsonic_prefilter: bool = True,
        design: bool = True,
    ):
        super().__init__()
        unknown = set(features) - set(self.FEATURES)
        if unknown:
            raise ValueError(f"unknown nsimnet features {sorted(unknown)}; known: {self.FEATURES}")
        self.config = dict(
            n_fft=n_fft, hop_length=hop_length, n_bands=n_bands, fmin_hz=fmin_hz,
            first_frame=first_frame, n_frames=n_frames, abs_floor_db=abs_floor_db,
            rel_floor_db=rel_floor_db, features=list(features), hidden=hidden,
            search=search, search_below=search_below, subsonic_prefilter=subsonic_prefilter,
        )
        # both signals as the labelling path sees them (checkpoints from before this
        # option lack the key and get the default, True)
        self.prefilter = SubsonicHighpass() if subsonic_prefilter else nn.Identity()
        self.frontend = GammatoneFrontend(n_fft, hop_length, n_bands, fmin_hz, first_frame, n_frames, design)
        self.features = tuple(features)
        self.abs_floor_db, self.rel_floor_db = abs_floor_db, rel_floor_db
        self.search, self.search_below = search, search_below
        self.register_buffer("gauss", torch.tensor(_NSIM_GAUSSIAN, dtype=torch.float32).view(1, 1, 3, 3))
        n_in = n_bands * len(self.features)
        self.head = nn.Sequential(
            nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1)
        )

    # -- reference branch -------------------------------------------------------------
    def reference_features(self, ref: Tensor) -> dict[str, Tensor]:
        """Per-window reference work, reusable for any number of degraded candidates:
        band energies of every frame (the patch search looks outside the patch) and
        the mean square (for ViSQOL's level matching)."""
        fe = self.frontend
        frames = fe.total_frames if self.search else fe.n_frames
        first = 0 if self.search else fe.first_frame
        ref = self.prefilter(ref)
        return {"band_ms": fe.frames(ref, first, frames), "ms": _mean_square(ref)}

    def _ref_patch(self, ref_feats: Mapping[str, Tensor]) -> Tensor:
        band = ref_feats["band_ms"]
        fe = self.frontend
        if band.shape[-1] == fe.n_frames:
            return band
        return band[..., fe.first_frame : fe.first_frame + fe.n_frames]

    # -- ViSQOL arithmetic ------------------------------------------------------------
    def _smooth(self, x: Tensor) -> Tensor:
        """3x3 Gaussian with edge replication over the last two axes (visqol/nsim.py
        ``_valid_2d_conv_with_boundary``), as shifted sums: a 1-channel conv2d costs
        several times more on a CPU."""
        g = self.gauss.view(3, 3)  # symmetric: centre, edge and corner weights
        p = torch.cat([x[..., :1], x, x[..., -1:]], -1)
        p = torch.cat([p[..., :1, :], p, p[..., -1:, :]], -2)
        edges = p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]
        corners = p[..., :-2, :-2] + p[..., :-2, 2:] + p[..., 2:, :-2] + p[..., 2:, 2:]
        return g[1, 1] * p[..., 1:-1, 1:-1] + g[0, 1] * edges + g[0, 0] * corners

    def _to_db(self, ref_ms: Tensor, deg_ms: Tensor) -> tuple[Tensor, Tensor]:
        """visqol/gammatone.py prepare_spectrograms_for_comparison on [B, bands, T]:
        10*log10(RMS) = 5*log10(mean square); -45 dB absolute floor; a floor 45 dB under
        each frame's loudest band of either signal; shift so the minimum is 0."""
        eps = DB_EPS
        ref_db = (5.0 * torch.log10(ref_ms + eps)).clamp_min(self.abs_floor_db)
        deg_db = (5.0 * torch.log10(deg_ms + eps)).clamp_min(self.abs_floor_db)
        peak = torch.maximum(ref_db.amax(-2, keepdim=True), deg_db.amax(-2, keepdim=True))
        ref_db = torch.maximum(ref_db, peak - self.rel_floor_db)
        deg_db = torch.maximum(deg_db, peak - self.rel_floor_db)
        low = torch.minimum(ref_db.amin((-2, -1), keepdim=True), deg_db.amin((-2, -1), keepdim=True))
        return ref_db - low, deg_db - low

    def _nsim(self, r: Tensor, d: Tensor, ref_terms: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """visqol/nsim.py: (intensity, structure, similarity) maps of [..., bands, T];
        ``ref_terms`` = (local mean, local variance) of ``r`` when already known."""
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
        structure = (cov + _NSIM_C3) / torch.where(vprod > 0, vprod.clamp_min(0).sqrt(), torch.zeros_like(vprod)).add(_NSIM_C3)
        return intensity, structure, intensity * structure

    def _stats(self, r: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        """([B, bands, n_features] statistics, [B] mean similarity) of a patch pair."""
        intensity, structure, sim = self._nsim(r, d)
        stats = {
            "nsim": lambda: sim.mean(-1),  # ViSQOL's fvnsim
            "intensity": lambda: intensity.mean(-1),
            "structure": lambda: structure.mean(-1),
            "nsim_std": lambda: sim.std(-1),
            # ViSQOL's fvdegenergy (mean dB above the floor), scaled to ~[0, 1]
            "deg_db": lambda: d.mean(-1) / 50.0,
            "ref_db": lambda: r.mean(-1) / 50.0,
        }
        return torch.stack([stats[name]() for name in self.features], dim=-1), sim.mean((-2, -1))

    def _searched(self, ref_full: Tensor, deg_full: Tensor, stats_b: Tensor, sim_b: Tensor) -> Tensor:
        """ViSQOL's patch search for the rows given (visqol/patch_selector.py): the
        reference patch is compared with the degraded spectrogram at every frame offset
        (zero-padded past the end, normalised over the whole window), the best offset
        wins; then, like its fine realignment, the patch pair re-normalised on its own
        is kept when that is at least as similar."""
        fe = self.frontend
        first, n = fe.first_frame, fe.n_frames
        ref_db, deg_db = self._to_db(ref_full, deg_full)
        r = ref_db[..., first : first + n]
        cands = F.pad(deg_db, (0, n - 1)).unfold(-1, n, 1)  # [R, bands, T, n]
        cands = cands.permute(0, 2, 1, 3)  # [R, T offsets, bands, n]
        mu_r = self._smooth(r)
        ref_terms = (mu_r[:, None], (self._smooth(r * r) - mu_r * mu_r)[:, None])  # same for every offset
        _, _, sim = self._nsim(r[:, None], cands, ref_terms)
        score = sim.mean((-2, -1))  # [R, T]
        best = score.argmax(-1)  # first maximum, as visqol's strict ">" scan
        rows = torch.arange(len(best), device=best.device)
        stats_a, sim_a = self._stats(r, cands[rows, best])
        # the same deg frames re-normalised with the reference patch alone ("realigned")
        deg_pad = F.pad(deg_full, (0, n - 1))
        idx = (best[:, None] + torch.arange(n, device=best.device)[None, :])[:, None, :].expand(-1, deg_full.shape[1], -1)
        r_b, d_b = self._to_db(ref_full[..., first : first + n], deg_pad.gather(-1, idx))
        stats_r, sim_r = self._stats(r_b, d_b)
        out = torch.where((sim_r >= sim_a)[:, None, None], stats_r, stats_a)
        # at the natural offset the realigned pair is the one computed already
        natural = (best == first)[:, None, None]
        return torch.where(natural & (sim_b >= sim_a)[:, None, None], stats_b, out)

    def band_statistics(self, ref_feats: Mapping[str, Tensor], deg: Tensor) -> Tensor:
        """[B, n_bands, n_features] per-band statistics (``features`` order)."""
        eps = DB_EPS
        fe = self.frontend
        deg = self.prefilter(deg)
        deg_ms = _mean_square(deg)
        # ViSQOL scales the degraded signal to the reference's SPL before anything else
        gain = ((ref_feats["ms"] + eps) / (deg_ms + eps))[:, None, None]
        deg_patch = fe(deg) * gain
        ref_patch = self._ref_patch(ref_feats)
        stats, sim = self._stats(*self._to_db(ref_patch, deg_patch))
        if not self.search or ref_feats["band_ms"].shape[-1] != fe.total_frames:
            return stats
        # the search only changes the outcome when the aligned patch is not already a
        # near-perfect match; searching just those rows keeps the common case cheap.
        # Measured (docs/model.md): on 420 real-music codec pairs 17 % of windows are
        # under 0.9 and 0.7 % under 0.8; the search changed no score there (RMSE 0.036
        # either way) but costs ~7 ms per searched window against ~1 ms. On 1,962
        # synthetic dev pairs the best offset moved for 128 windows, 73 of them under
        # 0.8 similarity (the ones that matter: quiet or very noisy); gating at 0.8
        # changed the features of 6 of 785 pairs by > 0.01 against searching all.
        rows = torch.nonzero(sim < self.search_below).squeeze(-1)
        if rows.numel() == 0:
            return stats
        d = deg[rows]
        g = gain[rows]
        first, n, total = fe.first_frame, fe.n_frames, fe.total_frames
        parts = [fe.frames(d, 0, first) * g] if first > 0 else []
        parts.append(deg_patch[rows])
        if first + n < total:
            parts.append(fe.frames(d, first + n, total - first - n) * g)
        deg_full = torch.cat(parts, dim=-1)
        searched = self._searched(ref_feats["band_ms"][rows], deg_full, stats[rows], sim[rows])
        return stats.index_copy(0, rows, searched)

    def predict_statistics(self, stats: Tensor) -> Tensor:
        """MOS from ``band_statistics`` output (the trainer precomputes those once: the
        frontend has no parameters)."""
        return bounded_mos(self.head(stats.flatten(1)).squeeze(-1).float())

    def forward_from_reference(self, ref_feats: Mapping[str, Tensor], deg: Tensor) -> Tensor:
        # the STFT, dB and NSIM arithmetic stay in float32 under CUDA autocast (NSIM
        # differences near 1.0 vanish in half precision); only the head may run in half
        with torch.autocast(device_type=deg.device.type, enabled=False):
            stats = self.band_statistics(ref_feats, deg)
        return self.predict_statistics(stats)

    def forward(self, ref: Tensor, deg: Tensor) -> Tensor:
        return self.forward_from_reference(self.reference_features(ref), deg)
