"""Shared fixtures: a seeded RNG, the real recordings in ../shared/audio, synth signals.

Signals are float32 ``[channels, samples]`` in [-1, 1], like ``ratecontrol.media.decode``
returns. Use the ``synth`` fixture (seeded) rather than hand-rolling test audio::

    def test_x(synth):
        x = synth.transients(44100, channels=2, duration_s=1.0)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio"


@pytest.fixture(autouse=True, scope="session")
def _isolated_probe_cache(tmp_path_factory):
    """Tests never read or fill the user's probe cache."""
    import os

    old = os.environ.get("RATECONTROL_CACHE_DIR")
    os.environ["RATECONTROL_CACHE_DIR"] = str(tmp_path_factory.mktemp("probe-cache"))
    yield
    if old is None:
        os.environ.pop("RATECONTROL_CACHE_DIR", None)
    else:
        os.environ["RATECONTROL_CACHE_DIR"] = old


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def shared_audio() -> Path:
    if not SHARED_AUDIO.is_dir():
        pytest.skip("needs the real recordings in ../shared/audio, beside the clone (README \"Tests\")")
    return SHARED_AUDIO


class Synth:
    """Deterministic test signals; every method returns float32 [channels, N]."""

    def __init__(self, seed: int = 1234):
        self.rng = np.random.default_rng(seed)

    @staticmethod
    def _n(sample_rate_hz: int, duration_s: float) -> int:
        return int(round(sample_rate_hz * duration_s))

    def tone(self, sample_rate_hz: int, channels: int = 1, duration_s: float = 1.0,
             freq_hz: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
        """A sine; channel c is detuned by c * 1.5 % so channels are not identical."""
        t = np.arange(self._n(sample_rate_hz, duration_s)) / sample_rate_hz
        rows = [amplitude * np.sin(2 * np.pi * freq_hz * (1 + 0.015 * c) * t)
                for c in range(channels)]
        return np.asarray(rows, dtype=np.float32)

    def noise(self, sample_rate_hz: int, channels: int = 1, duration_s: float = 1.0,
              amplitude: float = 0.25) -> np.ndarray:
        """White Gaussian noise, independent per channel, clipped to [-1, 1]."""
        x = amplitude * self.rng.standard_normal((channels, self._n(sample_rate_hz,
                                                                     duration_s)))
        return np.clip(x, -1, 1).astype(np.float32)

    def chirp(self, sample_rate_hz: int, channels: int = 1, duration_s: float = 1.0,
              f0_hz: float = 50.0, f1_hz: float | None = None,
              amplitude: float = 0.5) -> np.ndarray:
        """Exponential sine sweep f0 -> f1 (default 0.45 * rate), same on all channels."""
        from scipy.signal import chirp as _chirp

        f1 = f1_hz if f1_hz is not None else 0.45 * sample_rate_hz
        t = np.arange(self._n(sample_rate_hz, duration_s)) / sample_rate_hz
        x = amplitude * _chirp(t, f0=f0_hz, t1=max(duration_s, 1e-9), f1=f1,
                               method="logarithmic")
        return np.repeat(x[None, :], channels, axis=0).astype(np.float32)

    def music(self, sample_rate_hz: int, channels: int = 1, duration_s: float = 1.0,
              f0_hz: float = 196.0, amplitude: float = 0.1) -> np.ndarray:
        """A music-like test signal: a harmonic tone (6 partials up to 12 x f0, falling
        1/k) with decaying noise bursts four times a second, so a codec has both tonal
        and transient content to get wrong. Channel c is delayed by c * 2 ms."""
        n = self._n(sample_rate_hz, duration_s)
        t = np.arange(n) / sample_rate_hz
        x = sum(amplitude * np.sin(2 * np.pi * f0_hz * m * t) / k
                for k, m in enumerate((1, 2, 3, 4, 6, 12), 1))
        x = x + 0.3 * amplitude * self.rng.standard_normal(n) * np.exp(-((t * 4) % 1.0) * 25)
        d = int(0.002 * sample_rate_hz)
        return np.stack([np.roll(x, c * d) for c in range(channels)]).astype(np.float32)

    def notes(self, sample_rate_hz: int, channels: int = 1, duration_s: float = 1.0, n_notes: int = 4,
              amplitude: float = 0.3) -> np.ndarray:
        """Broadband harmonic notes: ``n_notes`` onsets evenly spaced (every 0.2 s in 1 s),
        each at a random pitch (130 Hz x 2**U(0, 2.5)) with every harmonic up to 21 kHz
        (or 0.48 x rate) at 1/k and random phase, decaying exp(-3 t), plus a little noise;
        peak ``amplitude``. The signal for scorer tests that low-pass: there is content
        to lose at every cut-off. Channels are independent draws."""
        n = self._n(sample_rate_hz, duration_s)
        t = np.arange(n) / sample_rate_hz
        top = min(21_000.0, 0.48 * sample_rate_hz)
        rows = []
        for _ in range(channels):
            x = np.zeros(n)
            for j in range(n_notes):
                f0 = 130 * 2 ** self.rng.uniform(0, 2.5)
                on = j * (duration_s / (n_notes + 1))
                env = np.exp(-3 * np.clip(t - on, 0, None)) * (t >= on)
                for k in range(1, 40):
                    if f0 * k < top:
                        x += env * np.sin(2 * np.pi * f0 * k * t + self.rng.uniform(0, 6)) / k
            x += 0.01 * self.rng.standard_normal(n)
            rows.append(amplitude * x / np.max(np.abs(x)))
        return np.asarray(rows, dtype=np.float32)

    def pad(self, sample_rate_hz: int, channels: int = 1, duration_s: float = 1.0,
            hard_at: tuple[float, ...] | list[float] = (), amplitude: float = 0.08) -> np.ndarray:
        """A soft harmonic pad (220, 330, 440 Hz), with loud wide-band noise bursts (8 a
        second) only in the seconds listed in ``hard_at``: for tests of which passages
        are hard to code. Channel c is delayed by c * 100 samples."""
        n = self._n(sample_rate_hz, duration_s)
        t = np.arange(n) / sample_rate_hz
        x = sum(amplitude * np.sin(2 * np.pi * f * t) for f in (220, 330, 440))
        for s in hard_at:
            a, b = int(s * sample_rate_hz), min(n, int((s + 1) * sample_rate_hz))
            x[a:b] += 0.3 * self.rng.standard_normal(b - a) * np.exp(-((t[a:b] * 8) % 1.0) * 10)
        return np.stack([np.roll(x, 100 * c) for c in range(channels)]).astype(np.float32)

    def transients(self, sample_rate_hz: int, channels: int = 1, duration_s: float = 1.0,
                   n_events: int | None = None, amplitude: float = 0.6) -> np.ndarray:
        """Decaying noise bursts at random onsets over a quiet tone bed.

        Sharp onsets make cross-correlation peaks unambiguous (unlike pure tones), so
        this is the signal for delay / alignment checks.
        """
        n = self._n(sample_rate_hz, duration_s)
        events = n_events if n_events is not None else max(4, int(12 * duration_s))
        x = 0.05 * self.tone(sample_rate_hz, channels, duration_s, 330.0, 1.0).astype(
            np.float64)
        burst = max(16, int(0.015 * sample_rate_hz))  # 15 ms bursts, 3 ms decay
        env = np.exp(-np.arange(burst) / (0.003 * sample_rate_hz))
        for _ in range(events):
            start = int(self.rng.integers(0, max(1, n - burst)))
            seg = self.rng.standard_normal((channels, burst)) * env
            x[:, start:start + burst] += amplitude * seg[:, : n - start]
        return np.clip(x, -1, 1).astype(np.float32)


@pytest.fixture
def synth() -> Synth:
    return Synth(1234)


def run_cli(args, capsys):
    """Run ``ratecontrol ARGS`` in-process as the console script does: (exit code,
    stdout, stderr)."""
    from ratecontrol.cli import main

    with pytest.raises(SystemExit) as exc:
        main(list(args))
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def load_bench(name: str):
    """bench/NAME.py as a module (the benches are scripts, not a package), for tests of
    their pure helpers."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
