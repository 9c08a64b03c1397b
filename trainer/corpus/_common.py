"""What every corpus stage shares: the recipe's config, the manifest records, the
bandwidth measure and the audio/JSON-lines file helpers."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ratecontrol import fsutil

__all__ = [
    "KINDS",
    "CORPUS_EXTENSIONS",
    "CorpusConfig",
    "SourceRecord",
    "CorpusSummary",
    "spectral_bandwidth",
    "read_audio",
    "write_flac",
    "write_jsonl",
    "read_manifest",
]

KINDS = ("music", "render", "drums", "speech")
#: which files of the installed packages become corpus sources: deliberately narrower
#: than ratecontrol.contract.AUDIO_EXTENSIONS (a wider list would change the corpus,
#: and with it every label of the committed cache)
CORPUS_EXTENSIONS = (".ogg", ".oga", ".flac", ".wav", ".mp3", ".opus", ".aiff", ".aif")


@dataclass(frozen=True)
class CorpusConfig:
    """Gates and amounts of the default recipe. Defaults give ~14 h of audio in all."""

    #: Vorbis bitrate floor (stereo-equivalent). 96 kbps is Vorbis q2; the packages are
    #: mostly q3-q4 (110-160 kbps, measured), so this keeps the bulk and drops the low ones.
    min_bitrate_kbps: float = 96.0
    #: the -60 dB spectral rolloff must reach this: encoders low-pass narrow files
    #: (Vorbis q0 cuts ~11 kHz), and a narrow reference would teach the model that a
    #: low-pass costs nothing. 15 kHz keeps q2+ Vorbis (lowpass >= 15.5 kHz, libvorbis).
    min_rolloff_hz: float = 15000.0
    #: music shorter than this is a sound effect, not music
    min_music_duration_s: float = 20.0
    render_hours: float = 2.0
    drum_minutes: float = 50.0
    espeak_minutes: float = 30.0
    speech_passage_s: float = 60.0
    seed: int = 0


@dataclass(frozen=True)
class SourceRecord:
    """One kept source file (a line of manifest.jsonl)."""

    id: str
    path: str  # relative to the corpus folder
    kind: str
    package: str
    licence: str
    duration_s: float
    sample_rate_hz: int
    channels: int
    bitrate_kbps: float | None
    bandwidth_995_hz: float  # frequency under which 99.5 % of the spectral energy lies
    rolloff_60db_hz: float  # highest frequency within 60 dB of the spectral peak
    sha1: str
    note: str = ""


@dataclass(frozen=True)
class CorpusSummary:
    out_dir: Path
    files: int
    hours_by_kind: dict
    rejected: int


def spectral_bandwidth(audio: np.ndarray, sample_rate_hz: int, max_seconds: float = 120.0
                       ) -> tuple[float, float]:
    """(bandwidth_995_hz, rolloff_60db_hz) of the long-term spectrum of `audio` [C, N] or [N].

    bandwidth_995_hz: the frequency below which 99.5 % of the energy lies (music is
    bass-heavy, so this is 5-12 kHz even for full-band material);
    rolloff_60db_hz: the highest frequency whose Welch power is within 60 dB of the
    spectrum's peak -- a codec low-pass shows as a cliff of 60+ dB, so this finds it.
    Long inputs are measured on up to `max_seconds` taken evenly across the file.
    """
    from scipy.signal import welch

    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=0)
    limit = int(max_seconds * sample_rate_hz)
    if x.size > limit:  # 12 evenly spaced excerpts
        n = limit // 12
        starts = np.linspace(0, x.size - n, 12).astype(int)
        x = np.concatenate([x[s:s + n] for s in starts])
    if x.size < 4096 or not np.any(x):
        return 0.0, 0.0
    freqs, psd = welch(x, fs=sample_rate_hz, nperseg=4096)
    cum = np.cumsum(psd)
    bw = float(freqs[np.searchsorted(cum, 0.995 * cum[-1])])
    db = 10 * np.log10(psd + 1e-30)
    above = np.nonzero(db >= db.max() - 60.0)[0]
    return bw, float(freqs[above[-1]])


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """[C, N] float32 via libsndfile (reads Vorbis/FLAC/WAV/AIFF; decoding here is only
    for measuring and arranging -- the dataset builder decodes through ratecontrol.media)."""
    import soundfile as sf

    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return data.T.copy(), int(sr)


def write_flac(path: Path, audio: np.ndarray, sample_rate_hz: int) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    with fsutil.atomic_output(path) as tmp:
        sf.write(str(tmp), np.clip(audio.T, -1, 1), sample_rate_hz, format="FLAC", subtype="PCM_16")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    fsutil.atomic_write(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def read_manifest(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
