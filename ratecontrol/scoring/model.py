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
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from ratecontrol.contract import SUBSONIC_CUTOFF_HZ, SUBSONIC_ORDER
from ratecontrol.errors import ModelError

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
]

# the checkpoint layout version and the code revision (part of the learned scorer's
# version, hence of probe cache keys) live in a torch-free module for the numpy runtime;
# a change to what this file computes must bump CODE_REVISION there (and re-export
# default.npz, whose runtime in numpy_model.py mirrors this file)
from ratecontrol.scoring._meta import CODE_REVISION, FORMAT_VERSION  # noqa: E402
from ratecontrol.contract import MODEL_SAMPLE_RATE_HZ as SAMPLE_RATE_HZ  # noqa: E402
from ratecontrol.contract import WINDOW_SAMPLES  # noqa: E402
# the output range [MOS_MIN, MODEL_MOS_MAX]: the scale's bottom, and a top a little above
# ViSQOL's identity score (4.73) so the sigmoid is not pinned there (not the scale's MOS_MAX)
from ratecontrol.contract import MODEL_MOS_MAX, MOS_MIN  # noqa: E402

# ViSQOL v3 audio mode constants (visqol/visqol_manager.py, analysis_window.py, nsim.py)
from ratecontrol.contract import VISQOL_SAMPLE_RATE_HZ as _VISQOL_RATE_HZ  # noqa: E402
_NSIM_GAUSSIAN = (
    (0.0113033910173052, 0.0838251475442633, 0.0113033910173052),
    (0.0838251475442633, 0.619485845753726, 0.0838251475442633),
    (0.0113033910173052, 0.0838251475442633, 0.0113033910173052),
)
from ratecontrol.scoring._meta import DB_EPS, NSIM_C1 as _NSIM_C1, NSIM_C3 as _NSIM_C3  # noqa: E402


def _mean_square(x: Tensor) -> Tensor:
    """Mean square after mean removal: the labelling path removes each window's mean
    (and subsonics) before ViSQOL matches levels."""
    x = x.float()
    # norm^2/N - mean^2: 0.05 ms per 1-s window against 0.38 ms for Tensor.var (CPU)
    return (torch.linalg.vector_norm(x, dim=-1).square() / x.shape[-1] - x.mean(-1).square()).clamp_min(0.0)


def _bounded_mos(logit: Tensor) -> Tensor:
    return MOS_MIN + (MODEL_MOS_MAX - MOS_MIN) * torch.sigmoid(logit)


def gammatone_band_matrix(
    n_fft: int,
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    n_bands: int = 32,
    fmin_hz: float = 50.0,
    design_rate_hz: int = _VISQOL_RATE_HZ,
    through_label_resampler: bool = True,
    subsonic_highpass: bool = True,
) -> np.ndarray:
    """[n_fft//2+1, n_bands] weights W so that (one-sided |STFT|^2) @ W = mean square of
    each gammatone band's output over the frame, bands ordered low to high.

    The filters are visqol-python's own (``visqol.gammatone.make_erb_filters``: Slaney's
    4-stage gammatone, ERB spacing from ``fmin_hz`` to Nyquist at ``design_rate_hz``),
    evaluated at the STFT bin frequencies of ``sample_rate_hz``. Designing at 48 kHz
    keeps ViSQOL's centre frequencies (top band 20.8 kHz); at 44.1 kHz the part of the
    top band above 22.05 kHz is absent, as it is in a 44.1-kHz signal resampled to 48.

    ``through_label_resampler`` also applies the power response of the resampler the
    labels go through (ratecontrol._resample, 44.1 -> 48 kHz, -6 dB at 20.9 kHz):
    without it the top band (centre 20.8 kHz) of noisy signals came out up to 0.8 NSIM
    off visqol-python's. ``subsonic_highpass`` applies the power response of the 20-Hz
    high-pass the labelling path runs forward and backward before resampling
    (ratecontrol.scoring.visqol: |H|^2 twice, so |H|^4 in power).
    """
    import scipy.signal
    from visqol.gammatone import make_erb_filters  # imported only when designing

    erb = make_erb_filters(design_rate_hz, n_bands, fmin_hz, design_rate_hz / 2.0)
    a0, a11, a12, a13, a14, a2, b0, b1, b2, gain = erb.filter_coeffs[:, ::-1]  # low -> high
    freqs_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate_hz)
    w = 2.0 * np.pi * freqs_hz / design_rate_hz
    resp = np.ones((n_bands, len(freqs_hz)))
    for b in range(n_bands):
        den = [b0[b], b1[b], b2[b]]
        for num in (
            [a0[b] / gain[b], a11[b] / gain[b], a2[b] / gain[b]],
            [a0[b], a12[b], a2[b]],
            [a0[b], a13[b], a2[b]],
            [a0[b], a14[b], a2[b]],
        ):
            _, h = scipy.signal.freqz(num, den, worN=w)
            resp[b] *= np.abs(h) ** 2
    if through_label_resampler and sample_rate_hz != design_rate_hz:
        resp *= _resampler_power_response(freqs_hz, sample_rate_hz, design_rate_hz)[None, :]
    if subsonic_highpass:
        from ratecontrol.scoring.visqol import subsonic_sos  # the labelling path's own filter

        _, h = scipy.signal.sosfreqz(subsonic_sos(), worN=freqs_hz, fs=sample_rate_hz)
        resp *= (np.abs(h) ** 4)[None, :]
    # Parseval: mean(y^2) over N samples = sum_k |Y_k|^2 / N^2 over the full spectrum;
    # one-sided bins other than DC (and Nyquist for even N) stand for two.
    side = np.full(len(freqs_hz), 2.0)
    side[0] = 1.0
    if n_fft % 2 == 0:
        side[-1] = 1.0
    return _flush_tiny((resp * side / float(n_fft) ** 2).T.astype(np.float32))


def _flush_tiny(matrix):
    """Zero weights more than 120 dB under their band's peak. The far skirts of the
    responses (a 50-Hz band at 20 kHz, through the resampler's stop band) are subnormal
    float32 numbers, and subnormals made the band matmul ~10x slower on a CPU."""
    peak = matrix.max(0, keepdims=True) if isinstance(matrix, np.ndarray) else matrix.amax(0, keepdim=True)
    matrix[matrix < 1e-12 * peak] = 0
    return matrix


def _resampler_power_response(freqs_hz: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """|H(f)|^2 of ratecontrol's resampler, measured with one 50-ms cosine per frequency:
    the amplitude of each output is fitted by least squares on cos/sin away from the
    edges (the kernel is ~1.5 ms long), which is exact for a pure tone."""
    from ratecontrol._resample import resample

    n_in = from_hz // 20
    t = np.arange(n_in) / from_hz
    y = resample(np.cos(2 * np.pi * freqs_hz[:, None] * t[None, :]), from_hz, to_hz, dtype=np.float64)
    edge = to_hz // 200  # 5 ms
    t_out = np.arange(y.shape[1])[edge:-edge] / to_hz
    y = y[:, edge:-edge]
    arg = 2 * np.pi * freqs_hz[:, None] * t_out[None, :]
    c, s = np.cos(arg), np.sin(arg)
    # 2x2 normal equations per frequency: [cc cs; cs ss] [a b]' = [cy sy]'
    cc, ss, cs = (c * c).sum(1), (s * s).sum(1), (c * s).sum(1)
    cy, sy = (c * y).sum(1), (s * y).sum(1)
    det = cc * ss - cs * cs
    safe = np.abs(det) > 1e-9 * np.maximum(cc * ss, 1e-30)
    a = np.where(safe, (ss * cy - cs * sy) / np.where(safe, det, 1.0), cy / np.maximum(cc, 1e-30))
    b = np.where(safe, (cc * sy - cs * cy) / np.where(safe, det, 1.0), 0.0)
    return np.clip(a * a + b * b, 0.0, 1.0)


class GammatoneFrontend(nn.Module):
    """Band mean-square energies [B, n_bands, frames] of 1-s windows (see module doc)."""

    def __init__(
        self,
        n_fft: int = 3528,
        hop_length: int = 882,
        n_bands: int = 32,
        fmin_hz: float = 50.0,
        first_frame: int = 14,
        n_frames: int = 30,
        design: bool = True,
    ):
        super().__init__()
        self.n_fft, self.hop_length, self.n_bands = n_fft, hop_length, n_bands
        self.first_frame, self.n_frames = first_frame, n_frames
        #: frames in a whole 1-s window (47 for ViSQOL's 80/20-ms framing)
        self.total_frames = 1 + (WINDOW_SAMPLES - n_fft) // hop_length
        if first_frame + n_frames > self.total_frames:
            raise ValueError(f"frames {first_frame}..{first_frame + n_frames - 1} do not fit a 1-s window")
        # ViSQOL's Hann is the symmetric one: 0.5 - 0.5 cos(2 pi n / (N - 1))
        self.register_buffer("window", torch.hann_window(n_fft, periodic=False), persistent=False)
        matrix = (
            torch.from_numpy(gammatone_band_matrix(n_fft, SAMPLE_RATE_HZ, n_bands, fmin_hz))
            if design
            else torch.zeros(n_fft // 2 + 1, n_bands)
        )
        # persistent: a checkpoint carries the filterbank, so loading never needs visqol
        self.register_buffer("band_matrix", matrix)

    def frames(self, x: Tensor, first: int, n: int) -> Tensor:
        """Frames first .. first+n-1 of each window: [B, n_bands, n]."""
        start = first * self.hop_length
        seg = x[..., start : start + (n - 1) * self.hop_length + self.n_fft].float()
        # frames -> rfft -> re^2 + im^2, kept [B, T, F] so the band matmul reads it in
        # order: 0.79 ms CPU per window (128-window batches, 1 thread) against 1.66 ms for
        # torchaudio.transforms.Spectrogram (|X| then ^2, [B, F, T] then transposed)
        spec = torch.fft.rfft(seg.unfold(-1, self.n_fft, self.hop_length) * self.window)
        re, im = spec.real, spec.imag
        power = (re * re).addcmul_(im, im)  # half the time of re.square() + im.square()
        # band-limited input (every codec low-passes) leaves ~1e-40 power above the
        # cutoff: subnormal floats made the band matmul 130x slower (391 vs 2.9 ms per
        # 128x14 frames); 1e-30 is -300 dB, far under ViSQOL's -45 dB floor
        power.clamp_min_(1e-30)
        return torch.matmul(power, self.band_matrix).transpose(-1, -2)

    def forward(self, x: Tensor) -> Tensor:
        """The patch frames (``first_frame`` .. + ``n_frames``)."""
        return self.frames(x, self.first_frame, self.n_frames)


def subsonic_power_response(freqs_hz: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """|H(f)|^2 of ``ratecontrol.scoring.visqol.subsonic_sos()`` (scipy's
    ``butter(SUBSONIC_ORDER, SUBSONIC_CUTOFF_HZ, "highpass", fs=...)``), in closed form.

    scipy designs a digital Butterworth by the bilinear transform of the analog
    prototype with the cut-off pre-warped, so its power response is exactly
    1 / (1 + (tan(pi fc / fs) / tan(pi f / fs))^(2N)) (0 at DC). Written out here so
    that loading the scorer does not import scipy.signal (0.8 s of a fresh process's
    ~3 s start-up); tests/test_model.py checks it against scipy's ``sosfreqz`` to 1e-9.
    """
    f = np.asarray(freqs_hz, dtype=np.float64)
    t = np.tan(np.pi * np.clip(f, 0.0, sample_rate_hz / 2) / sample_rate_hz)
    with np.errstate(divide="ignore"):
        ratio = np.where(t > 0, np.tan(np.pi * SUBSONIC_CUTOFF_HZ / sample_rate_hz) / np.where(t > 0, t, 1.0), np.inf)
    return 1.0 / (1.0 + ratio ** (2 * SUBSONIC_ORDER))


class SubsonicHighpass(nn.Module):
    """The labelling path's subsonic clean-up, batched: mean removal + 20-Hz zero-phase HP.

    ``ratecontrol.scoring.visqol.resample_to_visqol`` removes each window's mean and runs
    a 2nd-order 20-Hz Butterworth forward and backward (``sosfiltfilt``) before ViSQOL;
    this does the same by FFT (odd extension of ``pad`` samples at both ends, as
    sosfiltfilt pads, then the filter's zero-phase power response |H|^2): within PREFILTER_TOL
    of sosfiltfilt from 0.1 s to 0.9 s (tests/test_model.py), at ~1/5 of its CPU time.
    Why it matters: the band weights already carry |H|^2, but a drifting DC offset that a
    codec removes (libopus high-passes at 3 Hz) still leaks into the lowest bands through
    the frame window. On ../shared/audio flac-test-files "01", window 4-5 s, Opus 256k:
    ViSQOL 4.68 / 4.70, nsimnet without this 3.83 / 3.90, with it 4.69 / 4.70 (every other
    window of that file moved by <= 0.01).
    """

    def __init__(self, n_samples: int = WINDOW_SAMPLES, pad: int = 2526):
        # pad 2526 (57 ms, ~5 time constants of the 20-Hz filter) makes the FFT length
        # 49152 = 3 * 2^14: 0.28 ms per window for rfft + irfft against 0.41 ms at 52920
        super().__init__()
        self.n_samples, self.pad = n_samples, pad
        n = n_samples + 2 * pad
        gain = subsonic_power_response(np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE_HZ), SAMPLE_RATE_HZ)
        self.register_buffer("gain", torch.from_numpy(gain).float(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = x.float()
        if x.shape[-1] != self.n_samples:
            raise ValueError(f"expected {self.n_samples}-sample windows, got {x.shape[-1]}")
        p = self.pad
        # no explicit mean removal: |H(0)|^2 = 0 removes the mean exactly
        left = 2 * x[..., :1] - x[..., 1 : p + 1].flip(-1)
        right = 2 * x[..., -1:] - x[..., -p - 1 : -1].flip(-1)
        xp = torch.cat([left, x, right], dim=-1)
        y = torch.fft.irfft(torch.fft.rfft(xp) * self.gain, n=xp.shape[-1])
        return y[..., p : p + self.n_samples]


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
        return _bounded_mos(self.head(stats.flatten(1)).squeeze(-1).float())

    def forward_from_reference(self, ref_feats: Mapping[str, Tensor], deg: Tensor) -> Tensor:
        # the STFT, dB and NSIM arithmetic stay in float32 under CUDA autocast (NSIM
        # differences near 1.0 vanish in half precision); only the head may run in half
        with torch.autocast(device_type=deg.device.type, enabled=False):
            stats = self.band_statistics(ref_feats, deg)
        return self.predict_statistics(stats)

    def forward(self, ref: Tensor, deg: Tensor) -> Tensor:
        return self.forward_from_reference(self.reference_features(ref), deg)


class MelCnn(nn.Module):
    """Generic baseline: level-matched log-mel of both signals + difference -> small CNN."""

    arch = "melcnn"

    def __init__(
        self,
        n_fft: int = 2048,
        hop_length: int = 512,
        n_mels: int = 64,
        channels: tuple[int, ...] | list[int] = (16, 32, 64),
        hidden: int = 64,
        design: bool = True,
    ):
        super().__init__()
        self.config = dict(n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, channels=list(channels), hidden=hidden)
        self.mel = torchaudio.transforms.MelSpectrogram(
            SAMPLE_RATE_HZ, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, f_min=20.0, f_max=SAMPLE_RATE_HZ / 2, power=2.0
        )
        layers: list[nn.Module] = []
        c_in = 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.GELU(), nn.Conv2d(c, c, 3, padding=1), nn.GELU(), nn.MaxPool2d(2)]
            c_in = c
        self.cnn = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(2 * c_in, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def reference_features(self, ref: Tensor) -> dict[str, Tensor]:
        return {"logmel": 10 * torch.log10(self.mel(ref.float()) + 1e-10), "ms": ref.float().pow(2).mean(-1)}

    def forward_from_reference(self, ref_feats: Mapping[str, Tensor], deg: Tensor) -> Tensor:
        with torch.autocast(device_type=deg.device.type, enabled=False):
            x = self._pair_image(ref_feats, deg)
        h = self.cnn(x)
        h = torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1)
        return _bounded_mos(self.head(h).squeeze(-1).float())

    def _pair_image(self, ref_feats: Mapping[str, Tensor], deg: Tensor) -> Tensor:
        deg_ms = deg.float().pow(2).mean(-1)
        level = 10 * torch.log10((ref_feats["ms"] + 1e-20) / (deg_ms + 1e-20))
        r = ref_feats["logmel"]
        d = 10 * torch.log10(self.mel(deg.float()) + 1e-10) + level[:, None, None]
        top = torch.maximum(r.amax((1, 2), keepdim=True), d.amax((1, 2), keepdim=True))
        r, d = (r - top).clamp_min(-90.0) / 30.0, (d - top).clamp_min(-90.0) / 30.0
        return torch.stack([r, d, d - r], dim=1)

    def forward(self, ref: Tensor, deg: Tensor) -> Tensor:
        return self.forward_from_reference(self.reference_features(ref), deg)


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
            _flush_tiny(frontend.band_matrix)
    model.eval()
    return model.to(map_location), ckpt
