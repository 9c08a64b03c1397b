"""The nsimnet model's fixed frontend (``ratecontrol.scoring.model`` describes the
model): ViSQOL's gammatone band energies from an STFT (step 1 there), and the labelling
path's subsonic clean-up (mean removal + 20-Hz zero-phase high-pass) done by FFT."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ratecontrol.contract import SUBSONIC_CUTOFF_HZ, SUBSONIC_ORDER
from ratecontrol.contract import MODEL_SAMPLE_RATE_HZ as SAMPLE_RATE_HZ
from ratecontrol.contract import WINDOW_SAMPLES
# ViSQOL v3 audio mode constants (visqol/visqol_manager.py, analysis_window.py, nsim.py)
from ratecontrol.contract import VISQOL_SAMPLE_RATE_HZ as _VISQOL_RATE_HZ

__all__ = ["gammatone_band_matrix", "GammatoneFrontend", "subsonic_power_response", "SubsonicHighpass", "flush_tiny"]


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
    return flush_tiny((resp * side / float(n_fft) ** 2).T.astype(np.float32))


def flush_tiny(matrix):
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
    """Band mean-square energies [B, n_bands, frames] of 1-s windows (see module doc).
    Built by NsimNet, whose arguments (and their defaults, which checkpoints record) it takes."""

    def __init__(self, n_fft: int, hop_length: int, n_bands: int, fmin_hz: float, first_frame: int, n_frames: int,
                 design: bool = True):
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
