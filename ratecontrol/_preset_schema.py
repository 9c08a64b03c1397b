"""parse_preset: a loaded YAML mapping checked key by key (unknown keys, types, ranges,
names, options, the ladder's order, the knob) and built into a Preset; each error one
line naming the file and the key (``ratecontrol.presets`` has the schema)."""
from __future__ import annotations

import math
import re
from pathlib import Path

from ._preset_ladder import SURROUND_GROUPS, Knob, MonoPolicy, Preset, Rung, SurroundRule, parse_kbps, short_repr
from .contract import CONTAINER_EXTENSIONS
from .errors import PresetError

__all__ = ["parse_preset"]

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
_OPTION_VALUE = (str, int, float)
#: no audio codec's rung is above this (8 channels of 768 kHz float PCM is ~200,000)
_MAX_KBPS = 1e6
#: the audio rates an output may be forced to (as Options' sample_rate_hz)
_RATE_RANGE_HZ = (8_000, 768_000)
#: names that end up in file names and ffmpeg arguments: letters, digits, _ . + -
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
#: longest label / option string a preset may hold (longer is no setting, and would
#: flood a one-line error)
_MAX_TEXT = 256


def _key(key) -> str:
    """A mapping key as a message names it: the text itself, escaped and cut short."""
    text = key if isinstance(key, str) else repr(key)
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(t) -> str:
    ts = t if isinstance(t, tuple) else (t,)
    return " or ".join("null" if x is type(None) else x.__name__ for x in ts)


def _check_type(src, key, val, t):
    # bool is an int subclass; a YAML "yes" where a number is expected is still wrong
    if isinstance(val, bool) and bool not in (t if isinstance(t, tuple) else (t,)):
        raise PresetError(f"{src}: key '{key}' must be {_type_name(t)}, got a boolean")
    if not isinstance(val, t):
        raise PresetError(
            f"{src}: key '{key}' must be {_type_name(t)}, got {type(val).__name__} {short_repr(val)}"
        )


def _check_keys(src, prefix: str, raw: dict, keys: dict, required: tuple = ()) -> None:
    """Every key of ``raw`` known (``keys``: name -> type), the ``required`` ones present,
    each value of its type, in that order; ``prefix`` ("mono.", "" at the top level) is how
    the messages name the keys."""
    for k in raw:
        if k not in keys:
            raise PresetError(f"{src}: unknown key '{prefix}{_key(k)}' (allowed: {', '.join(keys)})")
    for k in required:
        if k not in raw:
            raise PresetError(f"{src}: missing key '{prefix}{k}'")
    for k, v in raw.items():
        _check_type(src, f"{prefix}{k}", v, keys[k])


def _real(src, key, val, lo: float, hi: float) -> float:
    """A YAML number as a finite float in [lo, hi], or a PresetError naming the key."""
    try:
        v = float(val)
    except (OverflowError, TypeError, ValueError):
        v = math.nan
    if isinstance(val, bool) or not math.isfinite(v) or not lo <= v <= hi:
        raise PresetError(f"{src}: key '{key}' must be a number in [{lo:g}, {hi:g}], got {short_repr(val)}")
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
                f"got {short_repr(v)}"
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
                              f"characters, got {short_repr(v)}")
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
            raise PresetError(f"{src}: key '{here}.label' must be a non-empty printable name, got {short_repr(label)}")
        if "b:a" in item["options"]:
            try:
                kbps = parse_kbps(item["options"]["b:a"])
            except ValueError:
                kbps = math.nan
            if not 0 < kbps <= _MAX_KBPS:  # also NaN
                raise PresetError(f"{src}: key '{here}.options.b:a' is not a bitrate from 1 bit/s to "
                                  f"{_MAX_KBPS:g} kbps: {short_repr(item['options']['b:a'])}") from None
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
        raise PresetError(f"{src}: key '{where}' has duplicate labels {short_repr(twice)}")
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
                              f"(at most 64), got {short_repr(data[key])}")
    fmt, ext = data["format"], data["extension"]
    if fmt not in CONTAINER_EXTENSIONS:
        raise PresetError(f"{src}: key 'format' must be one of the audio containers ratecontrol writes "
                          f"({', '.join(sorted(CONTAINER_EXTENSIONS))}), got {short_repr(fmt)}")
    if ext not in CONTAINER_EXTENSIONS[fmt]:
        raise PresetError(f"{src}: key 'extension' must be one of {', '.join(sorted(CONTAINER_EXTENSIONS[fmt]))} "
                          f"for format {fmt}, got {short_repr(ext)}")


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
                          f"{_RATE_RANGE_HZ[1]} Hz (or null: keep the input's), got {short_repr(sr)}")
    max_ch = data.get("max_channels", 8)
    # surround ladders are defined for the layouts of up to 8 channels (SURROUND_GROUPS)
    if not 1 <= max_ch <= max(SURROUND_GROUPS):
        raise PresetError(f"{src}: key 'max_channels' must be from 1 to {max(SURROUND_GROUPS)}, got {short_repr(max_ch)}")
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
    _check_keys(src, "", data, _TOP_KEYS, _REQUIRED_TOP)


def _parse_mono(src, mono_raw) -> MonoPolicy:
    """``mono: {policy: scale | same | rungs, scale, valid_kbps, min_kbps, rungs}``."""
    _check_keys(src, "mono.", mono_raw, _MONO_KEYS)
    policy = mono_raw.get("policy", "scale")
    if policy not in ("scale", "same", "rungs"):
        raise PresetError(f"{src}: key 'mono.policy' must be scale, same or rungs, got "
                          f"{short_repr(policy)}")
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
    _check_keys(src, "surround.", sur_raw, _SURROUND_KEYS)
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
                          f"{_RATE_RANGE_HZ[1]} Hz, got {short_repr(delay_rate)}")
    if abs(delay) > _RATE_RANGE_HZ[1]:  # a second at the highest rate: no codec delays that long
        raise PresetError(f"{src}: key 'decoder_delay_samples' must be within +-{_RATE_RANGE_HZ[1]}, "
                          f"got {short_repr(delay)}")
    return delay, delay_rate


def _parse_knob(src, raw, rungs) -> Knob | None:
    """``knob: {option: "b:a", min: 6, max: 510, resolution: 1}`` (``direction``: up |
    down, ``label``: a format for one number). Every rung must set the option, in range."""
    if raw is None:
        return None
    _check_keys(src, "knob.", raw, _KNOB_KEYS, ("option", "min", "max", "resolution"))
    if raw["option"] not in ("b:a", "q:a"):
        raise PresetError(f"{src}: key 'knob.option' must be b:a or q:a, got {short_repr(raw['option'])}")
    lo, hi, res = (_real(src, f"knob.{k}", raw[k], -_MAX_KBPS, _MAX_KBPS) for k in ("min", "max", "resolution"))
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi and 0 < res <= hi - lo):
        raise PresetError(f"{src}: key 'knob' needs min < max and 0 < resolution <= max - min")
    direction = raw.get("direction", "up")
    if direction not in ("up", "down"):
        raise PresetError(f"{src}: key 'knob.direction' must be up or down, got {short_repr(direction)}")
    label = raw.get("label", "{:g}k" if raw["option"] == "b:a" else "q{:g}")
    # one plain replacement field of a small width: "{:>999999999}" would allocate a GB,
    # "{0.x}" / "{0[0]}" raise AttributeError / TypeError
    if not _KNOB_LABEL_RE.match(label):
        raise PresetError(f"{src}: key 'knob.label' must format one number, like '{{:g}}k', got {short_repr(label)}")
    try:
        label.format(1.5)
    except (IndexError, KeyError, ValueError):
        raise PresetError(f"{src}: key 'knob.label' must format one number, like '{{:g}}k'") from None
    knob = Knob(option=raw["option"], min_value=lo, max_value=hi, resolution=res, direction=direction, label=label)
    for r in rungs:
        if knob.option not in r.options:
            raise PresetError(f"{src}: rung {r.label} does not set the knob's option {knob.option}")
        try:
            v = parse_kbps(r.options[knob.option]) if knob.option == "b:a" else float(r.options[knob.option])
        except (ValueError, OverflowError):  # q:a: "x" or a 400-digit int
            raise PresetError(f"{src}: rung {r.label} sets {knob.option} to {short_repr(r.options[knob.option])}, "
                              "not a number") from None
        if not lo <= v <= hi:
            raise PresetError(f"{src}: rung {r.label} sets {knob.option} outside the knob's [{lo:g}, {hi:g}]")
    return knob
