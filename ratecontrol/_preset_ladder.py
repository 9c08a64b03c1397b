"""A preset as records (Preset, Rung, MonoPolicy, SurroundRule, Knob) and the ladder
arithmetic on them: the ladder for any channel count, a rung at any knob value
(``ratecontrol.presets`` describes the YAML they are read from)."""
from __future__ import annotations

import math
import re
import reprlib
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import PresetError

__all__ = ["Rung", "MonoPolicy", "SurroundRule", "SURROUND_GROUPS", "Preset", "Knob", "parse_kbps", "short_repr"]

#: channel count -> (channel pairs, other full-band channels, LFE channels) of the layout
#: a track of that many channels is coded in (3.0, quad, 5.0, 5.1, 6.1, 7.1): Opus
#: mapping family 1's coupled / uncoupled streams (RFC 7845 5.1.1.2; the LFE is its own
#: uncoupled stream) and AAC's CPE / SCE / LFE elements
SURROUND_GROUPS = {3: (1, 1, 0), 4: (2, 0, 0), 5: (2, 1, 0), 6: (2, 1, 1), 7: (2, 2, 1), 8: (3, 1, 1)}

#: how values appear in errors: an error is one line, never a whole structure
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlong = 40


def short_repr(value) -> str:
    """``repr(value)`` cut to under a hundred characters (nested lists and mappings to
    their first few items)."""
    return _REPR.repr(value)


@dataclass(frozen=True)
class Rung:
    """One step of a ladder."""

    index: int
    label: str
    #: stereo nominal bitrate (for reports and the "never above source bitrate" rule)
    nominal_kbps: float
    #: ffmpeg output options of this rung, e.g. {"b:a": "64k"} or {"q:a": 2}
    options: dict = field(default_factory=dict, hash=False, compare=True)

    @property
    def bitrate_kbps(self) -> float | None:
        """The ``b:a`` value in kbps for bitrate rungs, None for quality rungs."""
        val = self.options.get("b:a")
        return None if val is None else parse_kbps(val)


@dataclass(frozen=True)
class MonoPolicy:
    """How a stereo ladder becomes a mono ladder (see module docstring)."""

    policy: str = "scale"
    scale: float = 0.5
    valid_kbps: tuple[float, ...] | None = None
    min_kbps: float = 0.0
    rungs: tuple[Rung, ...] = ()


@dataclass(frozen=True)
class SurroundRule:
    """How a stereo ladder becomes a 3..8-channel ladder (see module docstring)."""

    pair: float = 1.0
    single: float = 0.5
    lfe: float = 0.5

    def factor(self, channels: int) -> float:
        pairs, singles, lfes = SURROUND_GROUPS[int(channels)]
        return pairs * self.pair + singles * self.single + lfes * self.lfe


@dataclass(frozen=True)
class Knob:
    """The encoder setting a search may set to any value in a range (issue 24).

    ``option`` is ``b:a`` (a bitrate: ``min_value``/``max_value``/``resolution`` in kbps,
    for a stereo track, scaled for mono and surround as the rungs are) or ``q:a`` (a
    quality value, the same for every channel count). ``direction`` "up": a higher value
    spends more bits; "down": fewer (LAME ``-V``). ``label`` formats a value for display
    ("{:g}k" -> "87k", "V{:g}" -> "V4.35").
    """

    option: str
    min_value: float
    max_value: float
    resolution: float
    direction: str = "up"
    label: str = "{:g}k"

    @property
    def unit(self) -> str:
        return "kbps" if self.option == "b:a" else "quality"

    def snap(self, value: float, bounds: tuple[float, float] | None = None) -> float:
        """The nearest value on the knob's grid, inside ``bounds`` (default: its own)."""
        lo, hi = bounds if bounds is not None else (self.min_value, self.max_value)
        v = round(round(float(value) / self.resolution) * self.resolution, 6)
        return min(max(v, lo), hi)

    def option_value(self, value: float) -> str | float:
        """What ffmpeg is given: "87k" for a bitrate, the float for a quality."""
        return f"{value:g}k" if self.option == "b:a" else float(f"{value:g}")


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    encoder: str
    format: str
    extension: str
    sample_rate_hz: int | None
    rungs: tuple[Rung, ...]
    mono: MonoPolicy = MonoPolicy()
    max_channels: int = 8
    #: ffmpeg output options shared by every rung (e.g. {"vbr": "on"})
    options: dict = field(default_factory=dict, hash=False)
    #: residual decoder delay left after ffmpeg's own priming removal, at the rate below
    decoder_delay_samples: int = 0
    decoder_delay_rate_hz: int | None = None
    source_path: Path | None = None
    #: None: a 3..8-channel ladder is the stereo one x channels / 2
    surround: SurroundRule | None = None
    #: the continuous setting the search moves (None: the ladder only, e.g. MP3 CBR)
    knob: Knob | None = None

    @property
    def is_bitrate_ladder(self) -> bool:
        return all(r.bitrate_kbps is not None for r in self.rungs)

    def rungs_for(self, channels: int) -> tuple[Rung, ...]:
        """The ladder to use for a source with ``channels`` channels.

        2 channels: the ladder as written. 1 channel: the mono policy. More than 2:
        bitrate rungs scale by the preset's surround rule for ``min(channels,
        max_channels)`` (``SurroundRule.factor``; without one, channels / 2); quality
        rungs keep their options, their nominal kbps scaled the same way.
        """
        if channels < 1:
            raise PresetError(f"preset '{self.name}': channels must be >= 1, got {channels}")
        eff = min(int(channels), self.max_channels)
        if eff == 2:
            return self.rungs
        if eff == 1:
            if self.mono.policy == "same":
                return self.rungs
            if self.mono.policy == "rungs":
                return self.mono.rungs
            return self._scaled(self.mono.scale, self.mono.valid_kbps, self.mono.min_kbps)
        factor = self.surround.factor(eff) if self.surround is not None else eff / 2.0
        return self._scaled(factor, self.mono.valid_kbps, 0.0)

    def _scaled(self, scale, valid, min_kbps) -> tuple[Rung, ...]:
        out: list[Rung] = []
        seen: set[float] = set()
        for r in self.rungs:
            br = r.bitrate_kbps
            if br is None:  # quality rung: same encoder setting, nominal scaled
                out.append(replace(r, index=len(out), nominal_kbps=round(r.nominal_kbps * scale, 1)))
                continue
            kbps = max(br * scale, min_kbps)
            if valid:
                kbps = min(valid, key=lambda v: (abs(v - kbps), v))
            kbps = float(round(kbps))
            if kbps in seen:
                continue
            seen.add(kbps)
            opts = dict(r.options)
            opts["b:a"] = f"{int(kbps)}k"
            out.append(Rung(index=len(out), label=f"{int(kbps)}k", nominal_kbps=kbps,
                            options=opts))
        return tuple(out)

    def knob_value(self, rung: Rung) -> float | None:
        """The knob's value at ``rung`` (its ``b:a`` in kbps, or its ``q:a``), None without a knob."""
        if self.knob is None or self.knob.option not in rung.options:
            return None
        val = rung.options[self.knob.option]
        return parse_kbps(val) if self.knob.option == "b:a" else float(val)

    def knob_bounds(self, channels: int) -> tuple[float, float]:
        """The knob's encoder bounds for ``channels`` (a bitrate knob scaled like the rungs)."""
        k = self.knob
        if k is None:
            raise PresetError(f"preset '{self.name}' has no knob")
        if k.unit != "kbps":
            return k.min_value, k.max_value
        ladder = self.rungs_for(channels)
        scale = ladder[-1].bitrate_kbps / self.rungs[-1].bitrate_kbps if ladder[-1].bitrate_kbps else 1.0
        res = k.resolution
        return (math.ceil(k.min_value * min(scale, 1.0) / res - 1e-9) * res,
                math.floor(k.max_value * scale / res + 1e-9) * res)

    def knob_rung(self, value: float, channels: int = 2, index: int = -1) -> Rung:
        """A rung at any knob value: the options of the ladder's nearest rung with the
        knob set to ``value`` (snapped), its nominal kbps the value (bitrate knobs) or
        interpolated along the ladder's nominal rates (quality knobs, monotone PCHIP in
        log kbps)."""
        k = self.knob
        if k is None:
            raise PresetError(f"preset '{self.name}' has no knob")
        ladder = self.rungs_for(channels)
        v = k.snap(value, self.knob_bounds(channels))
        near = min(ladder, key=lambda r: abs((self.knob_value(r) or 0.0) - v))
        opts = dict(near.options)
        opts[k.option] = k.option_value(v)
        nominal = v if k.unit == "kbps" else self.quality_nominal_kbps(v, channels)
        return Rung(index=index, label=k.label.format(v), nominal_kbps=float(round(nominal, 1)), options=opts)

    def quality_nominal_kbps(self, value: float, channels: int = 2) -> float:
        """A quality knob's nominal kbps at ``value``: the rungs' nominal rates joined by a
        monotone PCHIP in log kbps, and held flat beyond the ladder's ends' slope."""
        import numpy as np
        from scipy.interpolate import PchipInterpolator

        pts = sorted((self.knob_value(r), math.log(r.nominal_kbps)) for r in self.rungs_for(channels))
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        if len(xs) < 2:
            return math.exp(ys[0])
        f = PchipInterpolator(xs, ys, extrapolate=True)
        return float(np.exp(f(float(value))))

    def rung(self, label_or_index, channels: int = 2) -> Rung:
        """Look a rung up by label ("64k", "V2") or index in ``rungs_for(channels)``."""
        ladder = self.rungs_for(channels)
        if isinstance(label_or_index, int):
            if 0 <= label_or_index < len(ladder):
                return ladder[label_or_index]
        else:
            for r in ladder:
                if r.label == str(label_or_index):
                    return r
        raise PresetError(
            f"preset '{self.name}' has no rung {short_repr(label_or_index)} for {channels} "
            f"channel(s); rungs are {', '.join(r.label for r in ladder)}"
        )


def parse_kbps(val) -> float:
    """'64k' / '64000' / 64000 / '1.5M' -> kbps (ValueError for anything else)."""
    if isinstance(val, (int, float)):
        try:
            return float(val) / 1000.0
        except OverflowError:  # an int past float's range
            raise ValueError(f"not a bitrate: {short_repr(val)}") from None
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kKmM]?)\s*", str(val))
    if not m:
        raise ValueError(f"not a bitrate: {short_repr(val)}")
    num = float(m.group(1))
    unit = m.group(2).lower()
    return num if unit == "k" else num * 1000.0 if unit == "m" else num / 1000.0
