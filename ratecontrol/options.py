"""One frozen options object for every entry point (select_bitrate, encode,
encode_ladder, transcode_folder, the CLI).

``Options`` holds how a search and an encode run; the per-call things (input, output,
target, codec) stay arguments. Every field is checked once, here, so a bad value from a
library caller or a flag is one UsageError naming the field (never a torch or numpy
error three layers down). ``Options.merge(options, **overrides)`` is how the keyword
arguments of the public functions become one object.
"""
from __future__ import annotations

import math
import numbers
import os
import reprlib
from dataclasses import dataclass, fields, replace
from typing import Any, Callable

import numpy as np

from ratecontrol.errors import UsageError
from ratecontrol.scoring.pooling import DEFAULT_POOL, validate_pool

__all__ = ["Options", "check_flag"]

#: the Options fields that are switches: a bool and nothing else (a string "false" or
#: "no" is truthy, and was taken as True: allow_partial="false" encoded 8 % of a file)
_FLAGS = ("above_source", "best_effort", "verify", "allow_partial", "all_audio_streams", "audio_only", "ladder",
          "step_down")


def check_flag(name: str, value: Any) -> bool:
    """``value`` as a bool, or one UsageError naming ``name``: only True/False (and
    numpy's bools) are switches; "false", "no", 0 or None are refused, not guessed."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise UsageError(f"{name} must be True or False, got {_shown(value)}")


def _shown(value: Any) -> str:
    """A value for a one-line message: its repr, cut so a huge object never floods it."""
    text = reprlib.repr(value)
    return f"{text} ({type(value).__name__})" if not isinstance(value, str) else text


def _number(name: str, value: Any, *, lo: float | None = None, lo_open: bool = False,
            hi: float | None = None, integer: bool = False) -> float | int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise UsageError(f"{name} must be a number, got {_shown(value)}")
    try:
        v = float(value)
    except OverflowError:  # an int past float's range (10**400) is out of every range here
        raise UsageError(f"{name} is out of range, got {_shown(value)}") from None
    if not math.isfinite(v):
        raise UsageError(f"{name} must be finite, got {value!r}")
    if integer and v != int(v):
        raise UsageError(f"{name} must be a whole number, got {value!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise UsageError(f"{name} must be {'>' if lo_open else '>='} {lo:g}, got {value!r}")
    if hi is not None and v > hi:
        raise UsageError(f"{name} must be <= {hi:g}, got {value!r}")
    return int(v) if integer else v


@dataclass(frozen=True)
class Options:
    """How a search (and the encode after it) runs.

    scorer: a registered name ("learned", "visqol") or a Scorer; None = the default.
    pool: pooling of window scores (p10, mean, min, pN, worstN).
    hop_s: window hop in seconds (> 0, at most 1).
    sample_share: share of a long (>= 30 s) input the probes score, in (0, 1];
        None = the default (0.2, at most 180 s scored); 1.0 probes everything.
    jobs: processes for the scorer (None = its own choice).
    cache: a ProbeCache, a folder, True/None (the default folder) or False (none).
    max_kbps: cut the ladder above this nominal bitrate.
    above_source: allow rungs above a lossy input's own bitrate (by default the ladder
        stops there, in encode as in batch).
    best_effort: when even the top rung misses, use it instead of raising.
    verify: decode and score the written file (the reported score is its own).
    allow_partial: encode what decodes of a truncated input (one warning) instead of
        refusing it.
    margin_mos: search for target + margin_mos (a guard against the learned scorer's
        error); None = the scorer's own default (learned 0.03, from the oracle bench in
        docs/performance.md; visqol 0).
    on_probe: called with each Probe as it finishes, one call at a time (probes of one
        round run on threads of their own; the calls never overlap).
    audio_stream: for an input with several audio streams, which one is scored and
        re-encoded: its position among the audio streams (0 = the first, as ffmpeg's
        ``-map 0:a:N``); None = the one marked default, else the first.
    all_audio_streams: search and re-encode every audio stream, each on its own (each
        gets its own rung); not with audio_stream or audio_only.
    audio_only: for an input with video or other streams, write the chosen audio
        stream alone (default: keep every other stream by stream copy).
    ladder: choose among the preset's standard rungs (64k, 80k, 96k ...) as the first
        releases did, instead of setting its knob to the lowest value that meets the
        target (issue 24; presets without a knob, MP3 CBR, always use their rungs).
    step_down: after a sampled knob search, when the written file's check passes well
        above the bar, write and check the setting where the sample's curve, moved by the
        check's offset, crosses it, and ship that smaller file when its own check passes
        (default on: 20 real tracks, Opus, bits -3.6 % for CPU +10-21 %; docs/performance.md
        "The written file against the whole track's curve"). False saves that CPU.
    """

    scorer: Any = None
    pool: str = DEFAULT_POOL
    hop_s: float = 1.0
    sample_share: float | None = None
    jobs: int | None = None
    cache: Any = None
    max_kbps: float | None = None
    above_source: bool = False
    best_effort: bool = False
    verify: bool = True
    allow_partial: bool = False
    margin_mos: float | None = None
    on_probe: Callable | None = None
    audio_stream: int | None = None
    all_audio_streams: bool = False
    audio_only: bool = False
    ladder: bool = False
    step_down: bool = True

    def __post_init__(self):
        for name in _FLAGS:
            object.__setattr__(self, name, check_flag(name, getattr(self, name)))
        if not isinstance(self.pool, str):
            raise UsageError(f"pool must be a pooling name such as 'p10' or 'mean', got {_shown(self.pool)}")
        object.__setattr__(self, "pool", validate_pool(self.pool))
        object.__setattr__(self, "hop_s", _number("hop_s", self.hop_s, lo=0.0, lo_open=True, hi=1.0))
        if self.sample_share is not None:
            object.__setattr__(self, "sample_share",
                               _number("sample_share", self.sample_share, lo=0.0, lo_open=True, hi=1.0))
        if self.jobs is not None:
            object.__setattr__(self, "jobs", _number("jobs", self.jobs, lo=1, integer=True))
        if self.max_kbps is not None:
            object.__setattr__(self, "max_kbps", _number("max_kbps", self.max_kbps, lo=0.0, lo_open=True))
        if self.margin_mos is not None:
            object.__setattr__(self, "margin_mos", _number("margin_mos", self.margin_mos, lo=0.0, hi=1.0))
        if self.audio_stream is not None:
            object.__setattr__(self, "audio_stream", _number("audio_stream", self.audio_stream, lo=0, integer=True))
        if self.all_audio_streams and self.audio_stream is not None:
            raise UsageError("re-encoding every audio stream and choosing one of them exclude each other; give one",
                             options={"all_audio_streams": True, "audio_stream": "N"})
        if self.all_audio_streams and self.audio_only:
            raise UsageError("all audio streams and the audio alone exclude each other: several audio streams "
                             "need their container; drop audio_only, or choose one stream",
                             options={"audio_stream": "N"})
        if self.on_probe is not None and not callable(self.on_probe):
            raise UsageError(f"on_probe must be callable, got {_shown(self.on_probe)}")
        if self.scorer is not None and not isinstance(self.scorer, str) and not hasattr(self.scorer, "score"):
            raise UsageError(f"scorer must be a scorer name or a Scorer, got {_shown(self.scorer)}")
        # a ProbeCache is recognised by its method, not its class: importing cache.py
        # here would make every Options load the cache module
        if not (self.cache is None or isinstance(self.cache, (bool, str, os.PathLike))
                or hasattr(self.cache, "get_or_compute")):
            raise UsageError(f"cache must be a ProbeCache, a folder, True/None (the default folder) or "
                             f"False (none), got {_shown(self.cache)}")

    @classmethod
    def merge(cls, options: "Options | None" = None, **overrides: Any) -> "Options":
        """``options`` (or the defaults) with ``overrides`` applied; None overrides are
        ignored only for fields whose default is None."""
        base = options if options is not None else cls()
        if not isinstance(base, Options):
            raise UsageError(f"options must be a ratecontrol.Options, got {type(base).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise UsageError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return replace(base, **overrides) if overrides else base

    def to_dict(self) -> dict[str, Any]:
        """The options as plain values (a Scorer/ProbeCache/callable by its name)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "scorer" and v is not None and not isinstance(v, str):
                v = getattr(v, "name", type(v).__name__)
            elif f.name == "cache" and v is not None and not isinstance(v, (bool, str)):
                v = str(getattr(v, "directory", v)) if getattr(v, "enabled", True) else False
            elif f.name == "on_probe":
                v = None if v is None else getattr(v, "__name__", "callable")
            out[f.name] = v
        return out
