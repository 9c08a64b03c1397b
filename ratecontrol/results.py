"""Result types returned by the library (frozen; units in the names)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Probe", "SearchResult", "EncodeResult", "ScoreResult", "jsonable"]


@dataclass(frozen=True)
class Probe:
    """One candidate encode at one rung, scored against the reference."""

    rung_index: int
    rung_label: str
    bitrate_kbps: float  # the rung's nominal bitrate for this channel count
    pooled_mos: float
    window_mos: tuple[float, ...]
    passed: bool
    seconds: float  # wall time of encode + decode + score
    encoded_bytes: int | None = None
    #: measured bitrate of the probe encode (bytes * 8 / duration), when known
    actual_kbps: float | None = None
    #: the preset this probe encoded with
    preset: str = ""
    #: the knob's value at this probe (kbps for ``b:a``, the quality for ``q:a``; the
    #: preset's ``knob``), None for a preset without a knob
    knob_value: float | None = None

    @property
    def worst_mos(self) -> float:
        return min(self.window_mos) if self.window_mos else math.nan


@dataclass(frozen=True)
class SearchResult:
    """Outcome of searching one preset's ladder for one target."""

    preset: str
    target_mos: float
    pool: str
    scorer: str
    channels: int
    duration_s: float
    #: the probe of the chosen rung; None when no rung met the target
    chosen: Probe | None
    #: every probe, in the order they ran
    probes: tuple[Probe, ...]
    reached: bool
    n_windows: int
    #: human-readable notes (silent input, lossy source, best effort, downmix...)
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: where each entry of ``Probe.window_mos`` sits in the track (s) and its channel
    window_start_s: tuple[float, ...] = field(default_factory=tuple)
    window_channel: tuple[int, ...] = field(default_factory=tuple)
    #: seconds of the track the probes scored when the search sampled it, else None
    sampled_s: float | None = None
    #: a rung passed when its pooled score was >= target_mos + margin_mos
    margin_mos: float = 0.0
    #: every probe this search ran; for codec="auto" all presets' (``probes`` holds the
    #: chosen preset's); 0 = len(probes)
    probes_total: int = 0
    #: the scorer's measured error on a track's pooled score vs exact ViSQOL (RMSE);
    #: None for the exact scorer
    scorer_uncertainty_mos: float | None = None
    #: the layout a 3+ channel track was coded in ("5.1", "7.1", ...); "" for mono/stereo
    channel_layout: str = ""
    #: the input's channel count when it was downmixed to stereo (MP3 takes at most 2;
    #: also in ``notes``), else None
    downmixed_from_channels: int | None = None
    #: channels left out of ``window_mos`` and the pool (the LFE: docs/scoring.md)
    unscored_channels: tuple[int, ...] = ()
    #: the encoder option the search set to any value (``b:a``, ``q:a``; issue 24);
    #: "" when it chose among the preset's rungs (``ladder=True``, or no knob)
    knob_option: str = ""

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))


@dataclass(frozen=True)
class EncodeResult:
    """A finished encode: where it went, which rung, what it scored."""

    input_path: str
    output_path: str
    search: SearchResult
    rung_label: str
    bitrate_kbps: float
    pooled_mos: float
    output_bytes: int
    input_bytes: int
    best_effort: bool
    seconds: float
    #: pooled score of the written file itself (decoded and scored after writing);
    #: None with verify=False. ``pooled_mos`` is this score whenever it exists
    full_track_mos: float | None = None
    #: steps up (a rung, or a knob step) after the full-track check missed the target
    stepped_up: int = 0
    #: how many lower settings were written after the check passed, whose own checks
    #: passed too (a sampled search's sample read the track low, or a step up landed
    #: well above the bar; at most probing.steps.STEP_DOWN_WRITES): the last is shipped
    stepped_down: int = 0
    preset: str = ""
    #: the written file was decoded and scored (``pooled_mos`` is its own score)
    verified: bool = False
    #: the output check's per-window scores of the written file over the whole track
    #: (nan where both sides are digital silence), where each window starts (s) and its
    #: channel; empty when not verified
    output_window_mos: tuple[float, ...] = ()
    output_window_start_s: tuple[float, ...] = ()
    output_window_channel: tuple[int, ...] = ()
    #: which audio stream of a several-stream input this is (position among its audio
    #: streams, ``-map 0:a:N``); None for a plain audio file
    audio_stream: int | None = None
    #: the knob's value of the shipped setting (``search.knob_option``), None on a ladder
    knob_value: float | None = None
    #: the written file's own bitrate (its size x 8 / duration), next to the nominal
    #: ``bitrate_kbps`` the setting asks for
    actual_kbps: float | None = None
    #: one result per re-encoded audio stream of a several-stream input (each its own
    #: search, rung and score; the fields above are the default or first one); empty for a
    #: plain audio file
    streams: tuple["EncodeResult", ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))


@dataclass(frozen=True)
class ScoreResult:
    """Per-window and pooled scores of a degraded file against its reference."""

    scorer: str
    pool: str
    pooled_mos: float
    window_mos: tuple[float, ...]
    window_start_s: tuple[float, ...]
    window_channel: tuple[int, ...]
    delay_samples: int  # delay found and removed (at 44.1 kHz), positive = degraded lags

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))


def jsonable(obj: Any) -> Any:
    """Plain JSON types: nan/inf -> None, Paths -> str, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None  # JSON has no nan/inf
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy scalar
        return obj.item()
    return obj
