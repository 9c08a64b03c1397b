"""The degradations a pair can have: codec settings of the packaged presets (rates below
their ladders too) and MUSHRA-style low-pass anchors."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ratecontrol.contract import MODEL_SAMPLE_RATE_HZ as SAMPLE_RATE_HZ

__all__ = ["Setting", "default_settings", "lowpass", "degrade"]


@dataclass(frozen=True)
class Setting:
    """One degradation: a codec preset with rung options, or a low-pass anchor."""

    name: str  # unique, e.g. "opus-voip-8k"
    family: str  # opus | aac | mp3-cbr | mp3-vbr | vorbis | lowpass
    preset: str | None  # ratecontrol preset name (None for low-pass)
    options: tuple = ()  # ffmpeg output options of the rung, as sorted (key, value) pairs
    nominal_kbps: float = 0.0
    lowpass_hz: float | None = None


def _codec(family, preset, label, kbps, **opts) -> Setting:
    return Setting(name=f"{family}-{label}", family=family, preset=preset,
                   options=tuple(sorted(opts.items())), nominal_kbps=float(kbps))


def default_settings() -> tuple[Setting, ...]:
    """Every codec family the packaged presets offer, plus MUSHRA-style low-pass anchors.

    Rates reach below the presets' ladders (Opus 6-12 kbps, its voip and lowdelay
    applications) because the low score bins need them; MP3 stays >= 32 kbps (the
    MPEG-1 Layer III minimum at 44.1 kHz). Low-pass anchors: 3.5 and 7 kHz (ITU-R
    BS.1534 MUSHRA anchors) and steps between and above.
    """
    s = []
    for k in (6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128):
        s.append(_codec("opus", "opus", f"{k}k", k, **{"b:a": f"{k}k", "application": "audio"}))
    for k in (6, 8, 10, 12, 16, 24, 32):
        s.append(_codec("opus", "opus", f"voip-{k}k", k, **{"b:a": f"{k}k", "application": "voip"}))
    for k in (12, 16, 24, 32, 48, 64):
        s.append(_codec("opus", "opus", f"lowdelay-{k}k", k,
                        **{"b:a": f"{k}k", "application": "lowdelay"}))
    for k in (16, 24, 32, 48, 64, 80, 96, 128, 160, 192, 256):
        s.append(_codec("aac", "aac", f"{k}k", k, **{"b:a": f"{k}k"}))
    for k in (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 256, 320):
        s.append(_codec("mp3-cbr", "mp3", f"{k}k", k, **{"b:a": f"{k}k"}))
    vbr_kbps = {9: 65, 8: 85, 7: 100, 6: 115, 5: 130, 4: 165, 3: 175, 2: 190, 1: 225, 0: 245}
    for q, k in vbr_kbps.items():
        s.append(_codec("mp3-vbr", "mp3-vbr", f"V{q}", k, **{"q:a": q}))
    for q, k in ((-1, 48), (0, 64), (1, 80), (2, 96), (3, 112), (4, 128), (5, 160), (6, 192)):
        s.append(_codec("vorbis", "vorbis", f"q{q}", k, **{"q:a": q}))
    for hz in (3500, 4500, 5500, 7000, 9000, 11000, 14000):
        s.append(Setting(name=f"lowpass-{hz}", family="lowpass", preset=None, lowpass_hz=hz))
    return tuple(s)


def lowpass(audio: np.ndarray, cutoff_hz: float, sample_rate_hz: int = SAMPLE_RATE_HZ
            ) -> np.ndarray:
    """Zero-phase low-pass anchor (8th-order Butterworth run forward and back, so the
    output lines up with the input sample for sample; -3 dB at the cutoff, >= 90 dB down
    an octave above)."""
    from scipy.signal import butter, sosfiltfilt

    sos = butter(8, cutoff_hz, fs=sample_rate_hz, output="sos")
    return sosfiltfilt(sos, audio, axis=-1).astype(np.float32)


def degrade(audio: np.ndarray, setting: Setting, sample_rate_hz: int = SAMPLE_RATE_HZ
            ) -> tuple[np.ndarray, float | None]:
    """(degraded [C, N] aligned with ``audio``, bitrate_kbps or None) for one setting."""
    if setting.family == "lowpass":
        return lowpass(audio, setting.lowpass_hz, sample_rate_hz), None
    from ratecontrol.media import roundtrip_info
    from ratecontrol.presets import Rung

    rung = Rung(index=0, label=setting.name, nominal_kbps=setting.nominal_kbps,
                options=dict(setting.options))
    rt = roundtrip_info(audio, sample_rate_hz, setting.preset, rung)
    return rt.audio, rt.bitrate_kbps
