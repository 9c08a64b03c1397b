"""Codec presets: an ffmpeg encoder + container + a ladder of rungs, cheapest first.

Presets live in YAML (``ratecontrol/presets/*.yaml`` are packaged; users may pass a path
to their own file). Schema (unknown keys are errors, so typos do not pass silently)::

    name: opus                      # required, str
    description: "..."              # optional, str
    encoder: libopus                # required, ffmpeg encoder name (-c:a)
    format: ogg                     # required, ffmpeg muxer (-f)
    extension: .opus                # required, output file extension
    sample_rate_hz: 48000           # optional, force the output rate (null: keep input)
    max_channels: 2                 # optional, more input channels are downmixed (default 8)
    options: {vbr: "on"}            # optional, ffmpeg output options shared by all rungs
    decoder_delay_samples: 0        # optional, residual delay after ffmpeg's own handling
    decoder_delay_rate_hz: 48000    #   ... counted at this rate (required if delay != 0)
    mono:                           # optional, how rungs_for(1) derives a mono ladder
      policy: scale                 #   scale | same | rungs
      scale: 0.5                    #   bitrate rungs: kbps x scale ...
      valid_kbps: [32, 40, ...]     #   ... snapped to the nearest valid value, deduplicated
      min_kbps: 6                   #   ... and never below this
      rungs: [...]                  #   policy "rungs": an explicit mono ladder
    surround:                       # optional, how rungs_for(3..8) scales the stereo ladder
      pair: 1.0                     #   x the stereo rung per channel pair (Opus coupled
      single: 0.5                   #   stream / AAC CPE), per other full-band channel
      lfe: 0.0                      #   (uncoupled stream / SCE), per LFE channel
    knob:                           # optional: the setting a search may set to any value
      option: "b:a"                 #   b:a (kbps, scaled for mono/surround like the rungs) or q:a
      min: 6                        #   the encoder's bounds (stereo kbps for b:a)
      max: 510
      resolution: 1                 #   the grid the search snaps to
      direction: up                 #   up: a higher value spends more bits; down: fewer (LAME -V)
      label: "{:g}k"                #   how a value is shown ("87k", "V4.35")
    rungs:                          # required, non-empty, nominal_kbps strictly increasing
      - label: 64k
        nominal_kbps: 64            # stereo nominal: for reports and "never above source"
        options: {"b:a": "64k"}     # ffmpeg output options of this rung

The knob (issue 24): the search looks for the lowest knob value that meets the target,
between the ladder's bottom and top rungs (or ``max_kbps``); the rungs stay as landmarks
(the first guess) and as the ``ladder=True`` choices. Every rung must set the knob's
option within its bounds.

Mono policy: bitrate rungs (those with a ``b:a`` option) are scaled; quality rungs
(``q:a``) keep their options because the encoder's quality scale already spends fewer
bits on one channel, only their ``nominal_kbps`` is scaled for reporting.

Surround (3..8 channels, coded in the Vorbis I layouts, media/_layouts.py): a rung's
kbps is the stereo rung's x ``pairs * pair + singles * single + lfes * lfe``, with the
channel groups of the layout (``SURROUND_GROUPS``: 5.1 = 2 pairs, the centre, the LFE;
the streams of Opus mapping family 1 and the elements of AAC). Without a ``surround``
key the factor is channels / 2 (the same bits per channel as stereo).
"""
from __future__ import annotations

import functools
import math
import re
import reprlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from .contract import CONTAINER_EXTENSIONS
from .errors import PresetError

__all__ = [
    "Rung",
    "MonoPolicy",
    "SurroundRule",
    "SURROUND_GROUPS",
    "Preset",
    "Knob",
    "load_preset",
    "list_presets",
    "preset_names",
    "PRESET_DIR",
    "MAX_PRESET_BYTES",
    "parse_preset",
    "parse_yaml",
]

#: the packaged presets (``package-data: presets/*.yaml`` in pyproject.toml)
PRESET_DIR = Path(__file__).resolve().parent / "presets"

_TOP_KEYS = {
    "name": str, "description": str, "encoder": str, "format": str, "extension": str,
    "sample_rate_hz": (int, type(None)), "max_channels": int, "options": dict,
    "decoder_delay_samples": int, "decoder_delay_rate_hz": (int, type(None)),
    "mono": dict, "rungs": list, "surround": dict, "knob": dict,
}
_REQUIRED_TOP = ("name", "encoder", "format", "extension", "rungs")
_RUNG_KEYS = {"label": str, "nominal_kbps": (int, float), "options": dict}
_MONO_KEYS = {"policy": str, "scale": (int, float), "valid_kbps": list,
              "min_kbps": (int, float), "rungs": list}
_KNOB_KEYS = {"option": str, "min": (int, float), "max": (int, float), "resolution": (int, float),
              "direction": str, "label": str}
#: a knob label: short text around one "{}" whose format spec is at most "<99.9g"
_KNOB_LABEL_RE = re.compile(r"^[^{}]{0,32}\{(:[<>^]?\d{0,2}(\.\d{1,2})?[a-zA-Z%]?)?\}[^{}]{0,32}$")
_SURROUND_KEYS = {"pair": (int, float), "single": (int, float), "lfe": (int, float)}

#: channel count -> (channel pairs, other full-band channels, LFE channels) of the layout
#: a track of that many channels is coded in (3.0, quad, 5.0, 5.1, 6.1, 7.1): Opus
#: mapping family 1's coupled / uncoupled streams (RFC 7845 5.1.1.2; the LFE is its own
#: uncoupled stream) and AAC's CPE / SCE / LFE elements
SURROUND_GROUPS = {3: (1, 1, 0), 4: (2, 0, 0), 5: (2, 1, 0), 6: (2, 1, 1), 7: (2, 2, 1), 8: (3, 1, 1)}
_OPTION_VALUE = (str, int, float)
#: no audio codec's rung is above this (8 channels of 768 kHz float PCM is ~200,000)
_MAX_KBPS = 1e6

#: a preset is a few KB of YAML (the packaged ones are 1-4 KB); the cap and the refusal
#: of anchors/aliases keep a hostile file from costing more than reading 64 KB (a
#: 558-byte alias bomb took 41.7 s and 2.9 GB, and printed a ~700 MB error)
MAX_PRESET_BYTES = 64 * 1024
#: nesting deeper than this is no preset (they nest 4 deep); PyYAML composes nodes
#: recursively, so 30,000 "[" would otherwise end in a RecursionError
_MAX_DEPTH = 16
#: the audio rates an output may be forced to (as Options' sample_rate_hz)
_RATE_RANGE_HZ = (8_000, 768_000)
#: names that end up in file names and ffmpeg arguments: letters, digits, _ . + -
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
#: longest label / option string a preset may hold (longer is no setting, and would
#: flood a one-line error)
_MAX_TEXT = 256


#: how values appear in errors: an error is one line, never a whole structure
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlong = 40


def _short(value) -> str:
    """``repr(value)`` cut to under a hundred characters (nested lists and mappings to
    their first few items)."""
    return _REPR.repr(value)


def _text(text: str) -> str:
    """Plain text (a YAML parser's complaint) for a one-line message: escaped, cut."""
    text = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 120 else text[:117] + "..."


def _key(key) -> str:
    """A mapping key as a message names it: the text itself, escaped and cut short."""
    text = key if isinstance(key, str) else repr(key)
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 40 else text[:37] + "..."


class _PresetLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases (``&a`` / ``*a``, also ``<<`` merge
    keys, which need them) and nesting deeper than ``_MAX_DEPTH``."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (& and *) are not allowed in a preset; write each value out",
                event.start_mark)
        self._depth += 1
        try:
            if self._depth > _MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {_MAX_DEPTH} levels", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


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
        return None if val is None else _parse_kbps(val)


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
        return _parse_kbps(val) if self.knob.option == "b:a" else float(val)

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
            f"preset '{self.name}' has no rung {_short(label_or_index)} for {channels} "
            f"channel(s); rungs are {', '.join(r.label for r in ladder)}"
        )


def _parse_kbps(val) -> float:
    """'64k' / '64000' / 64000 / '1.5M' -> kbps (ValueError for anything else)."""
    if isinstance(val, (int, float)):
        try:
            return float(val) / 1000.0
        except OverflowError:  # an int past float's range
            raise ValueError(f"not a bitrate: {_short(val)}") from None
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kKmM]?)\s*", str(val))
    if not m:
        raise ValueError(f"not a bitrate: {_short(val)}")
    num = float(m.group(1))
    unit = m.group(2).lower()
    return num if unit == "k" else num * 1000.0 if unit == "m" else num / 1000.0


def _type_name(t) -> str:
    ts = t if isinstance(t, tuple) else (t,)
    return " or ".join("null" if x is type(None) else x.__name__ for x in ts)


def _check_type(src, key, val, t):
    # bool is an int subclass; a YAML "yes" where a number is expected is still wrong
    if isinstance(val, bool) and bool not in (t if isinstance(t, tuple) else (t,)):
        raise PresetError(f"{src}: key '{key}' must be {_type_name(t)}, got a boolean")
    if not isinstance(val, t):
        raise PresetError(
            f"{src}: key '{key}' must be {_type_name(t)}, got {type(val).__name__} {_short(val)}"
        )


def _real(src, key, val, lo: float, hi: float) -> float:
    """A YAML number as a finite float in [lo, hi], or a PresetError naming the key."""
    try:
        v = float(val)
    except (OverflowError, TypeError, ValueError):
        v = math.nan
    if isinstance(val, bool) or not math.isfinite(v) or not lo <= v <= hi:
        raise PresetError(f"{src}: key '{key}' must be a number in [{lo:g}, {hi:g}], got {_short(val)}")
    return v


#: an encoder option is a name with an optional stream specifier (``b:a``, ``q:a``,
#: ``profile:a``, ``vbr``); these names would re-plumb the command instead (container,
#: inputs, mapping, filters, overwrite), which ratecontrol itself sets from the preset
_OPTION_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(:[av](:\d+)?)?$")
_RESERVED_OPTIONS = frozenset(
    "f format i y n map map_metadata map_chapters c codec acodec vcodec scodec filter af filter_complex "
    "lavfi ar ac ss sseof t to vn an sn dn dec stream_loop itsoffset metadata disposition".split())


def _check_options(src, where, opts):
    for k, v in opts.items():
        if not isinstance(k, str) or not isinstance(v, _OPTION_VALUE) or isinstance(v, bool):
            raise PresetError(
                f"{src}: key '{where}.{_key(k)}' must map an option name to a string or number, "
                f"got {_short(v)}"
            )
        if not _OPTION_NAME_RE.match(k) or k.split(":")[0] in _RESERVED_OPTIONS:
            raise PresetError(
                f"{src}: key '{where}.{_key(k)}' is not an encoder option ratecontrol passes on "
                f"(names like vbr, b:a, q:a, profile:a; the container, inputs, filters and channel "
                f"layout come from the preset's own keys)"
            )
        # a NUL cannot be an argument (subprocess raised ValueError: internal error);
        # other control characters and NaN are no encoder setting either
        if isinstance(v, str) and (len(v) > _MAX_TEXT or not v.isprintable()):
            raise PresetError(f"{src}: key '{where}.{k}' must be printable text of at most {_MAX_TEXT} "
                              f"characters, got {_short(v)}")
        if isinstance(v, float) and not math.isfinite(v):
            raise PresetError(f"{src}: key '{where}.{k}' must be a finite number, got {v!r}")


def _parse_rungs(src, where, raw) -> tuple[Rung, ...]:
    if not raw:
        raise PresetError(f"{src}: key '{where}' is empty; a ladder needs at least one rung")
    rungs: list[Rung] = []
    for i, item in enumerate(raw):
        here = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise PresetError(f"{src}: key '{here}' must be a mapping with label, "
                              "nominal_kbps, options")
        for k in item:
            if k not in _RUNG_KEYS:
                raise PresetError(f"{src}: unknown key '{here}.{_key(k)}' (allowed: "
                                  f"{', '.join(_RUNG_KEYS)})")
        for k, t in _RUNG_KEYS.items():
            if k not in item:
                raise PresetError(f"{src}: missing key '{here}.{k}'")
            _check_type(src, f"{here}.{k}", item[k], t)
        _check_options(src, f"{here}.options", item["options"])
        label = item["label"]
        if not label or len(label) > _MAX_TEXT or not label.isprintable():
            raise PresetError(f"{src}: key '{here}.label' must be a non-empty printable name, got {_short(label)}")
        if "b:a" in item["options"]:
            try:
                kbps = _parse_kbps(item["options"]["b:a"])
            except ValueError:
                kbps = math.nan
            if not 0 < kbps <= _MAX_KBPS:  # also NaN
                raise PresetError(f"{src}: key '{here}.options.b:a' is not a bitrate from 1 bit/s to "
                                  f"{_MAX_KBPS:g} kbps: {_short(item['options']['b:a'])}") from None
        nominal = _real(src, f"{here}.nominal_kbps", item["nominal_kbps"], 0.0, _MAX_KBPS)
        if nominal <= 0:
            raise PresetError(f"{src}: key '{here}.nominal_kbps' must be > 0, got {nominal}")
        if rungs and nominal <= rungs[-1].nominal_kbps:
            raise PresetError(
                f"{src}: key '{here}.nominal_kbps' ({nominal:g}) must be greater than the "
                f"previous rung's ({rungs[-1].nominal_kbps:g}); ladders go cheapest first"
            )
        rungs.append(Rung(index=i, label=item["label"], nominal_kbps=nominal,
                          options=dict(item["options"])))
    labels = [r.label for r in rungs]
    if len(set(labels)) != len(labels):
        twice = sorted({x for x in labels if labels.count(x) > 1})
        raise PresetError(f"{src}: key '{where}' has duplicate labels {_short(twice)}")
    return tuple(rungs)


def _check_names(src, data) -> None:
    """The keys that become file names and ffmpeg arguments: an allow-list each. The
    container must be one of the audio formats ratecontrol writes (contract.py), so
    ``format: hls`` or ``segment`` (muxers that write files of their own) never reach
    ffmpeg, and the extension one of that container's own (a ``/`` in it was an
    internal error, and an extension is no place for a path)."""
    for key in ("name", "encoder"):
        if not _NAME_RE.match(data[key]):
            raise PresetError(f"{src}: key '{key}' must be a name of letters, digits, '_', '.', '+' or '-' "
                              f"(at most 64), got {_short(data[key])}")
    fmt, ext = data["format"], data["extension"]
    if fmt not in CONTAINER_EXTENSIONS:
        raise PresetError(f"{src}: key 'format' must be one of the audio containers ratecontrol writes "
                          f"({', '.join(sorted(CONTAINER_EXTENSIONS))}), got {_short(fmt)}")
    if ext not in CONTAINER_EXTENSIONS[fmt]:
        raise PresetError(f"{src}: key 'extension' must be one of {', '.join(sorted(CONTAINER_EXTENSIONS[fmt]))} "
                          f"for format {fmt}, got {_short(ext)}")


def parse_preset(data, source: str | Path | None = None) -> Preset:
    """Validate a loaded YAML mapping and build a Preset (errors name file and key).
    The steps run in a fixed order, so a file with several faults is told its first."""
    src = str(source) if source is not None else "<preset>"
    _check_top(src, data)
    _check_names(src, data)
    opts = data.get("options") or {}
    _check_options(src, "options", opts)
    rungs = _parse_rungs(src, "rungs", data["rungs"])
    mono = _parse_mono(src, data.get("mono") or {})
    surround = _parse_surround(src, data.get("surround"))
    knob = _parse_knob(src, data.get("knob"), rungs)
    delay, delay_rate = _parse_delay(src, data)
    sr = data.get("sample_rate_hz")
    if sr is not None and not _RATE_RANGE_HZ[0] <= sr <= _RATE_RANGE_HZ[1]:
        raise PresetError(f"{src}: key 'sample_rate_hz' must be from {_RATE_RANGE_HZ[0]} to "
                          f"{_RATE_RANGE_HZ[1]} Hz (or null: keep the input's), got {_short(sr)}")
    max_ch = data.get("max_channels", 8)
    # surround ladders are defined for the layouts of up to 8 channels (SURROUND_GROUPS)
    if not 1 <= max_ch <= max(SURROUND_GROUPS):
        raise PresetError(f"{src}: key 'max_channels' must be from 1 to {max(SURROUND_GROUPS)}, got {_short(max_ch)}")
    return Preset(
        name=data["name"],
        description=data.get("description", ""),
        encoder=data["encoder"],
        format=data["format"],
        extension=data["extension"],
        sample_rate_hz=sr,
        rungs=rungs,
        mono=mono,
        max_channels=max_ch,
        options=dict(opts),
        decoder_delay_samples=int(delay),
        decoder_delay_rate_hz=delay_rate,
        source_path=Path(source) if source is not None else None,
        surround=surround,
        knob=knob,
    )


def _check_top(src, data) -> None:
    """The file is a mapping of known keys, the required ones present, each of its type."""
    if not isinstance(data, dict):
        raise PresetError(f"{src}: a preset file must be a YAML mapping, got "
                          f"{type(data).__name__}")
    for k in data:
        if k not in _TOP_KEYS:
            raise PresetError(f"{src}: unknown key '{_key(k)}' (allowed: {', '.join(_TOP_KEYS)})")
    for k in _REQUIRED_TOP:
        if k not in data:
            raise PresetError(f"{src}: missing key '{k}'")
    for k, v in data.items():
        _check_type(src, k, v, _TOP_KEYS[k])


def _parse_mono(src, mono_raw) -> MonoPolicy:
    """``mono: {policy: scale | same | rungs, scale, valid_kbps, min_kbps, rungs}``."""
    for k in mono_raw:
        if k not in _MONO_KEYS:
            raise PresetError(f"{src}: unknown key 'mono.{_key(k)}' (allowed: "
                              f"{', '.join(_MONO_KEYS)})")
    for k, v in mono_raw.items():
        _check_type(src, f"mono.{k}", v, _MONO_KEYS[k])
    policy = mono_raw.get("policy", "scale")
    if policy not in ("scale", "same", "rungs"):
        raise PresetError(f"{src}: key 'mono.policy' must be scale, same or rungs, got "
                          f"{_short(policy)}")
    if policy == "rungs" and "rungs" not in mono_raw:
        raise PresetError(f"{src}: missing key 'mono.rungs' (mono.policy is 'rungs')")
    valid = mono_raw.get("valid_kbps")
    if valid is not None and (not valid or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in valid)):
        raise PresetError(f"{src}: key 'mono.valid_kbps' must be a non-empty list of numbers")
    valid = [_real(src, f"mono.valid_kbps[{i}]", v, 0.0, _MAX_KBPS) for i, v in enumerate(valid or ())]
    scale = _real(src, "mono.scale", mono_raw.get("scale", 0.5), 0.0, 1.0)
    if not 0 < scale <= 1:
        raise PresetError(f"{src}: key 'mono.scale' must be in (0, 1], got {scale}")
    return MonoPolicy(
        policy=policy,
        scale=scale,
        valid_kbps=tuple(valid) if valid else None,
        min_kbps=_real(src, "mono.min_kbps", mono_raw.get("min_kbps", 0.0), 0.0, _MAX_KBPS),
        rungs=_parse_rungs(src, "mono.rungs", mono_raw["rungs"]) if policy == "rungs" else (),
    )


def _parse_surround(src, sur_raw) -> SurroundRule | None:
    """``surround:`` (optional): each of its known keys a number from 0 to 4."""
    if sur_raw is None:
        return None
    for k in sur_raw:
        if k not in _SURROUND_KEYS:
            raise PresetError(f"{src}: unknown key 'surround.{_key(k)}' (allowed: "
                              f"{', '.join(_SURROUND_KEYS)})")
    for k, v in sur_raw.items():
        _check_type(src, f"surround.{k}", v, _SURROUND_KEYS[k])
    return SurroundRule(**{k: _real(src, f"surround.{k}", v, 0.0, 4.0) for k, v in sur_raw.items()})


def _parse_delay(src, data) -> tuple:
    """``decoder_delay_samples`` and the rate it is counted at (needed when not 0)."""
    delay = data.get("decoder_delay_samples", 0)
    delay_rate = data.get("decoder_delay_rate_hz")
    if delay and not delay_rate:
        raise PresetError(f"{src}: missing key 'decoder_delay_rate_hz' "
                          "(decoder_delay_samples is not 0)")
    if delay_rate is not None and not _RATE_RANGE_HZ[0] <= delay_rate <= _RATE_RANGE_HZ[1]:
        raise PresetError(f"{src}: key 'decoder_delay_rate_hz' must be from {_RATE_RANGE_HZ[0]} to "
                          f"{_RATE_RANGE_HZ[1]} Hz, got {_short(delay_rate)}")
    if abs(delay) > _RATE_RANGE_HZ[1]:  # a second at the highest rate: no codec delays that long
        raise PresetError(f"{src}: key 'decoder_delay_samples' must be within +-{_RATE_RANGE_HZ[1]}, "
                          f"got {_short(delay)}")
    return delay, delay_rate


def _parse_knob(src, raw, rungs) -> Knob | None:
    """``knob: {option: "b:a", min: 6, max: 510, resolution: 1}`` (``direction``: up |
    down, ``label``: a format for one number). Every rung must set the option, in range."""
    if raw is None:
        return None
    for k in raw:
        if k not in _KNOB_KEYS:
            raise PresetError(f"{src}: unknown key 'knob.{_key(k)}' (allowed: {', '.join(_KNOB_KEYS)})")
    for k in ("option", "min", "max", "resolution"):
        if k not in raw:
            raise PresetError(f"{src}: missing key 'knob.{k}'")
    for k, v in raw.items():
        _check_type(src, f"knob.{k}", v, _KNOB_KEYS[k])
    if raw["option"] not in ("b:a", "q:a"):
        raise PresetError(f"{src}: key 'knob.option' must be b:a or q:a, got {_short(raw['option'])}")
    lo, hi, res = (_real(src, f"knob.{k}", raw[k], -_MAX_KBPS, _MAX_KBPS) for k in ("min", "max", "resolution"))
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi and 0 < res <= hi - lo):
        raise PresetError(f"{src}: key 'knob' needs min < max and 0 < resolution <= max - min")
    direction = raw.get("direction", "up")
    if direction not in ("up", "down"):
        raise PresetError(f"{src}: key 'knob.direction' must be up or down, got {_short(direction)}")
    label = raw.get("label", "{:g}k" if raw["option"] == "b:a" else "q{:g}")
    # one plain replacement field of a small width: "{:>999999999}" would allocate a GB,
    # "{0.x}" / "{0[0]}" raise AttributeError / TypeError
    if not _KNOB_LABEL_RE.match(label):
        raise PresetError(f"{src}: key 'knob.label' must format one number, like '{{:g}}k', got {_short(label)}")
    try:
        label.format(1.5)
    except (IndexError, KeyError, ValueError):
        raise PresetError(f"{src}: key 'knob.label' must format one number, like '{{:g}}k'") from None
    knob = Knob(option=raw["option"], min_value=lo, max_value=hi, resolution=res, direction=direction, label=label)
    for r in rungs:
        if knob.option not in r.options:
            raise PresetError(f"{src}: rung {r.label} does not set the knob's option {knob.option}")
        try:
            v = _parse_kbps(r.options[knob.option]) if knob.option == "b:a" else float(r.options[knob.option])
        except (ValueError, OverflowError):  # q:a: "x" or a 400-digit int
            raise PresetError(f"{src}: rung {r.label} sets {knob.option} to {_short(r.options[knob.option])}, "
                              "not a number") from None
        if not lo <= v <= hi:
            raise PresetError(f"{src}: rung {r.label} sets {knob.option} outside the knob's [{lo:g}, {hi:g}]")
    return knob


def _load_file(path: Path) -> Preset:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_PRESET_BYTES + 1)
    except OSError as exc:
        raise PresetError(f"{path}: cannot read preset file ({exc.strerror})") from None
    if len(raw) > MAX_PRESET_BYTES:
        raise PresetError(f"{path}: a preset file is at most {MAX_PRESET_BYTES // 1024} KB of YAML; "
                          "this one is larger (is it the right file?)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PresetError(f"{path}: not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r}); "
                          "save the preset as UTF-8") from None
    return parse_preset(parse_yaml(text, path), path)


def parse_yaml(text: str, source: str | Path | None = None):
    """The YAML mapping of a preset's text, through the loader that refuses anchors,
    aliases and deep nesting; any failure is a PresetError naming ``source``."""
    src = str(source) if source is not None else "<preset>"
    if len(text) > MAX_PRESET_BYTES:
        raise PresetError(f"{src}: a preset file is at most {MAX_PRESET_BYTES // 1024} KB of YAML")
    try:
        return yaml.load(text, Loader=_PresetLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        first = (str(exc).splitlines() or ["syntax error"])[0]
        problem = getattr(exc, "problem", None)
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise PresetError(f"{src}: invalid YAML{where}: {_text(problem or first)}") from None
    except (ValueError, OverflowError, RecursionError) as exc:
        # SafeLoader's own constructors: a 5000-digit int (Python's int-string limit),
        # a date like 2020-13-45
        raise PresetError(f"{src}: invalid YAML: {_text(str(exc))}") from None


@functools.lru_cache(maxsize=None)
def _packaged() -> dict[str, Preset]:
    presets: dict[str, Preset] = {}
    for f in sorted(PRESET_DIR.glob("*.yaml")):
        p = _load_file(f)
        if p.name in presets:
            raise PresetError(f"{f}: key 'name' {p.name!r} is already used by "
                              f"{presets[p.name].source_path}")
        presets[p.name] = p
    return presets


def preset_names() -> list[str]:
    """Names of the packaged presets."""
    return list(_packaged())


def list_presets() -> list[Preset]:
    """All packaged presets (including ones whose encoder this ffmpeg lacks)."""
    return list(_packaged().values())


def load_preset(name_or_path) -> Preset:
    """A packaged preset by name (``"opus"``), or a user's YAML file by path."""
    if isinstance(name_or_path, Preset):
        return name_or_path
    text = str(name_or_path)
    packaged = _packaged()
    if text in packaged:
        return packaged[text]
    path = Path(text).expanduser()
    looks_like_path = path.suffix.lower() in (".yaml", ".yml") or "/" in text or "\\" in text
    if looks_like_path:
        if not path.is_file():
            raise PresetError(f"preset file not found: {path} (check the path)")
        return _load_file(path)
    raise PresetError(
        f"unknown preset '{text}'; choose one of {', '.join(packaged)} or pass a path to "
        "a preset .yaml file"
    )
