"""A decoded input ready for probing: its rate, channels and notes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ratecontrol import media
from ratecontrol._resample import python_can_resample, resample
from ratecontrol.contract import MIN_INPUT_S
from ratecontrol.errors import InputError, UsageError
from ratecontrol.media import layout_channels, lfe_indices, target_layout
from ratecontrol.presets import Preset


#: inputs at least this long are decoded to a mapped temp file (media.decode_to_disk),
#: not into process memory: 10 minutes of 48 kHz stereo is 230 MB of float32, an hour
#: 1.4 GB, and every later step reads the track a segment or a minute at a time
DISK_DECODE_MIN_S = 600.0

def output_rate(preset: Preset, source_rate_hz: int) -> int:
    """Sample rate of the encoded output (and therefore of every probe).

    A preset may force one (Opus is always 48 kHz). Otherwise 44.1 and 48 kHz sources
    keep their rate; anything above 48 kHz is brought to 48 kHz (lossy codecs spend bits
    on content above 20 kHz otherwise, and MP3 cannot store > 48 kHz); odd low rates
    (22.05, 35.467, 39 kHz) go to 44.1 kHz, a rate every preset's encoder supports.
    """
    if preset.sample_rate_hz:
        return int(preset.sample_rate_hz)
    if source_rate_hz in (44_100, 48_000):
        return source_rate_hz
    return 48_000 if source_rate_hz > 48_000 else 44_100


@dataclass(frozen=True)
class Track:
    """A decoded input ready for probing."""

    path: Path | None
    src: np.ndarray  # float32 [C, N] at rate_hz: what probes encode
    rate_hz: int
    info: media.MediaInfo | None
    notes: tuple[str, ...]
    #: the channel layout the rows of ``src`` are in, for 3+ channels (the one the
    #: encoder is fed and every decode of an output is read in); "" for mono/stereo
    layout: str = ""
    #: the input's channel count when it was downmixed to stereo (MP3), else None
    downmixed_from_channels: int | None = None

    @property
    def channels(self) -> int:
        return int(self.src.shape[0])

    @property
    def duration_s(self) -> float:
        return self.src.shape[1] / self.rate_hz

    @property
    def scored_channels(self) -> list[int] | None:
        """Channels whose windows are scored and pooled: all but the LFE (None: all).

        The LFE is coded band-limited on purpose (AAC's LFE element, libopus's LFE
        stream keep < ~120-200 Hz), and ViSQOL's bands start at 50 Hz: its LFE windows
        score ~1-2 MOS at every rung, measured in docs/scoring.md ("Surround")."""
        lfe = lfe_indices(self.layout)
        return [c for c in range(self.channels) if c not in lfe] if lfe else None


#: the most channels an array input may have (the layouts ffmpeg names go to 7.1 = 8)
MAX_ARRAY_CHANNELS = 8
#: sample rates an array input may declare (ffmpeg's resampler and every codec here)
ARRAY_RATE_RANGE_HZ = (8_000, 768_000)


def check_rate(sample_rate_hz, what: str = "sample_rate_hz") -> int:
    if isinstance(sample_rate_hz, bool) or not isinstance(sample_rate_hz, (int, np.integer, float)):
        raise UsageError(f"{what} must be a whole number of Hz, got {sample_rate_hz!r}")
    r = float(sample_rate_hz)
    lo, hi = ARRAY_RATE_RANGE_HZ
    if not np.isfinite(r) or r != int(r) or not lo <= r <= hi:
        raise UsageError(f"{what} must be a whole number of Hz in [{lo}, {hi}], got {sample_rate_hz!r}")
    return int(r)


def as_array(audio, what: str) -> np.ndarray:
    """float32 ``[channels, samples]`` from what a caller may hold.

    Accepted: float arrays in [-1, 1]; integer PCM, scaled by its type (int16 /
    32768, int32 / 2**31, uint8 centred on 128) as soundfile and wave give it;
    ``[channels, samples]`` (torchaudio's layout) or ``[samples, channels]``
    (soundfile's) when the channel axis is unambiguous (<= 8 and shorter than the
    other). Refused with a UsageError: complex, bool and object arrays, NaN/inf."""
    a = np.asarray(audio)
    if a.dtype.kind in "cbOUSV":
        raise UsageError(f"{what}: audio must be real numbers (float or integer PCM), got dtype {a.dtype}")
    if a.dtype.kind == "u":
        bits = a.dtype.itemsize * 8
        a = (a.astype(np.float64) - 2 ** (bits - 1)) / 2 ** (bits - 1)
    elif a.dtype.kind == "i":
        a = a.astype(np.float64) / 2 ** (a.dtype.itemsize * 8 - 1)
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.size == 0:
        raise InputError(f"{what}: expected audio shaped [channels, samples] with samples > 0, got {a.shape}")
    if a.shape[0] > a.shape[1]:
        if a.shape[1] <= MAX_ARRAY_CHANNELS:
            a = np.ascontiguousarray(a.T)  # soundfile's [samples, channels]
        else:
            raise InputError(f"{what}: got a {a.shape[0]} x {a.shape[1]} array; pass [channels, samples] "
                             "(or [samples, channels] with at most 8 channels)")
    if a.shape[0] > MAX_ARRAY_CHANNELS:
        raise InputError(f"{what}: {a.shape[0]} channels x {a.shape[1]} samples; pass [channels, samples] with at "
                         f"most {MAX_ARRAY_CHANNELS} channels")
    if not np.all(np.isfinite(a)):
        raise InputError(f"{what}: audio contains NaN or infinity")
    return a


#: how far below MIN_INPUT_S an input may be: ffmpeg prints durations to 10 ms, and a
#: 0.99-s clip scored as 1.00 s within 0.001 MOS in the measurement behind MIN_INPUT_S
#: (the padding is 1 % of its window)
SHORT_SLACK_S = 0.01


def check_long_enough(duration_s: float | None, what: str) -> None:
    """An InputError, before any search or scoring, when ``what`` lasts less than
    ``contract.MIN_INPUT_S`` (None: unknown, not checked)."""
    if duration_s is None or duration_s >= MIN_INPUT_S - SHORT_SLACK_S:
        return
    raise InputError(f"{what} is {duration_s:.2f} s long: ratecontrol needs at least {MIN_INPUT_S:g} s of audio "
                     f"(one full 1-s window; a shorter clip is zero-padded and scores near identity whatever "
                     f"was done to it); pass a clip of {MIN_INPUT_S:g} s or more")


def _wav_bytes(a: np.ndarray, rate: int) -> bytes:
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, a.T, rate, subtype="FLOAT", format="WAV")
    return buf.getvalue()


def require_finite(a: np.ndarray, what: str) -> np.ndarray:
    """``a`` unchanged, or an InputError if it holds NaN/inf (checked a minute of 48 kHz
    at a time: ``a`` may be a mapped hour)."""
    step = 48_000 * 60
    for i in range(0, a.shape[-1], step):
        if not np.isfinite(a[..., i : i + step]).all():
            raise InputError(f"{what} contains NaN or infinite samples (a damaged float file?); "
                             "nothing to encode faithfully")
    return a


def track_channels(info: media.MediaInfo, preset: Preset | None) -> tuple[int, str, str | None]:
    """(channels, coding layout or "", note or None) a file input is decoded to for ``preset``.

    Mono and stereo as they are. 3..8 channels are kept for a preset that carries them
    (``max_channels``: Opus, AAC, Vorbis), in the layout its encoder takes
    (media/_layouts.py); a preset of at most 2 (MP3) gets ffmpeg's standard stereo
    downmix, and says so. ``preset`` None: stereo, as every input above two channels was
    before surround was kept."""
    n = int(info.channels)
    max_ch = preset.max_channels if preset is not None else 2
    if n <= 2:
        return n, "", None
    if max_ch <= 2 or n > 8:
        why = (f"preset '{preset.name}' ({preset.encoder}) carries at most {max_ch}" if max_ch <= 2 and preset
               else "more than 8 channels have no Opus/AAC/Vorbis layout")
        return 2, "", f"input has {n} channels: downmixed to stereo by ffmpeg's standard matrix ({why})"
    layout, note = target_layout(info.channel_layout, min(n, max_ch), preset.encoder)
    return len(layout_channels(layout) or ()) or n, layout, note


def load_track(source, rate_for: Callable[[int], int], sample_rate_hz: int | None,
                allow_partial: bool = False, preset: Preset | None = None) -> Track:
    """Decode ``source`` once at ``rate_for(source rate)``, with the channels
    ``track_channels`` gives for ``preset``."""
    notes: list[str] = []
    if isinstance(source, np.ndarray):
        if sample_rate_hz is None:
            raise UsageError("pass sample_rate_hz together with an audio array")
        in_rate = check_rate(sample_rate_hz)
        a = as_array(source, "input array")
        check_long_enough(a.shape[1] / in_rate, "input array")
        if a.shape[0] > 2:
            raise InputError(f"input array has {a.shape[0]} channels; pass mono or stereo")
        rate = rate_for(in_rate)
        if python_can_resample(in_rate, rate):
            return Track(None, resample(a, in_rate, rate), rate, None, ())
        # an odd rate (35467 Hz...): ffmpeg's resampler, exactly as a file at that rate
        return Track(None, media.decode(_wav_bytes(a, in_rate), sample_rate_hz=rate), rate, None, ())
    path = Path(source)
    info = media.inspect(path)
    check_long_enough(info.duration_s, str(path))  # before the decode: the container's figure
    channels, layout, note = track_channels(info, preset)
    if note:
        notes.append(note)
    downmixed = info.channels if info.channels > channels and not layout else None
    rate = rate_for(info.sample_rate_hz)
    if info.duration_s and info.duration_s >= DISK_DECODE_MIN_S:
        src = media.decode_to_disk(path, rate, channels, allow_partial=allow_partial, layout=layout or None)
    else:
        src = media.decode(path, sample_rate_hz=rate, channels=channels, allow_partial=allow_partial,
                           layout=layout or None)
    check_long_enough(src.shape[1] / rate, str(path))  # what decoded
    require_finite(src, str(path))
    if not info.lossless and info.bitrate_kbps:
        notes.append(f"input is lossy ({info.codec}, ~{info.bitrate_kbps:.0f} kbps): scores are relative to the decoded input")
    return Track(path, src, rate, info, tuple(notes), layout, downmixed)

class _NoRate:
    sample_rate_hz = None


NO_RATE = _NoRate()
