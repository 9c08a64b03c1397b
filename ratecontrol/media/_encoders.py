"""What a preset may pass to ffmpeg: an allow-list read from ffmpeg itself.

A preset's ``options`` become ffmpeg arguments (``-KEY VALUE``). ffmpeg reads its own
command-line options first, and a *flag* among them takes no value, so ``shortest:
/path`` made ``/path`` a second output that ``-y`` overwrote; ``progress``, ``stats``,
``bitexact`` did the same, and ``hls``/``segment`` muxers write files named by their
options (issue 23 class 2). A deny-list cannot keep up with ffmpeg, so a key passes only
if it is

- one of the preset encoder's own AVOptions, as ``ffmpeg -h encoder=NAME`` lists them;
- one of the preset container's muxer AVOptions (``ffmpeg -h muxer=FORMAT``: ``movflags``,
  ``write_xing``, ``id3v2_version``), without a stream specifier; the container itself is
  one of the audio formats ratecontrol writes (``contract.CONTAINER_EXTENSIONS``);
- one of the few generic audio-encoder settings in ``GENERIC_AUDIO_OPTIONS`` (``b:a``,
  ``q:a``, ``profile:a``, ...), which ffmpeg lists only in the 1.3 MB ``-h full``;

and never one of ffmpeg's own command-line option names (``ffmpeg -h long``) apart from
those generic ones, since ffmpeg would read such a key itself. Each value is checked
against its option's listed type (int/float with their ranges, flags and enums by their
named constants, booleans by ffmpeg's words); other types (binary, dict, rational, ...)
are not for presets. Every listing is one ffmpeg run per binary, cached.
"""
from __future__ import annotations

import functools
import math
import re
import reprlib
from dataclasses import dataclass

from ..contract import CONTAINER_EXTENSIONS
from ..errors import PresetError
from ._ffmpeg import ffmpeg_path, run_args

__all__ = ["AVOption", "GENERIC_AUDIO_OPTIONS", "encoder_options", "muxer_options", "ffmpeg_cli_options",
           "parse_help", "check_option_value", "check_preset_options"]


@dataclass(frozen=True)
class AVOption:
    """One option as ``ffmpeg -h encoder=/muxer=`` lists it."""

    name: str
    #: ffmpeg's type word: int, int64, uint64, float, double, boolean, flags, string, ...
    type: str
    #: the listed range ("from X to Y"), None where ffmpeg lists none
    min_value: float | None = None
    max_value: float | None = None
    #: named constants (enum values, flag names)
    constants: frozenset[str] = frozenset()


_INT32 = (-2.0 ** 31, 2.0 ** 31 - 1)
#: generic settings of every audio encoder (libavcodec's AVCodecContext options marked
#: E...A, and ffmpeg's -q/-qscale/-aq), with the types ffmpeg lists for them. ``profile``
#: names (aac_he, aac_he_v2) come from each codec's descriptor, which no listing shows.
GENERIC_AUDIO_OPTIONS: dict[str, AVOption] = {o.name: o for o in (
    AVOption("b", "int64", 0, 2.0 ** 63 - 1),
    AVOption("ab", "int64", 0, 2.0 ** 31 - 1),
    AVOption("maxrate", "int64", 0, 2.0 ** 31 - 1),
    AVOption("minrate", "int64", *_INT32),
    AVOption("bufsize", "int", *_INT32),
    AVOption("q", "float"),
    AVOption("qscale", "float"),
    AVOption("aq", "float"),
    AVOption("global_quality", "int", *_INT32),
    AVOption("compression_level", "int", *_INT32),
    AVOption("cutoff", "int", *_INT32),
    AVOption("frame_size", "int", 0, 2.0 ** 31 - 1),
    AVOption("profile", "profile", *_INT32),
    AVOption("level", "int", *_INT32),
    AVOption("threads", "int", 0, 2.0 ** 31 - 1),
)}

#: ffmpeg's printed range limits
_LIMITS = {"INT_MIN": -2.0 ** 31, "INT_MAX": 2.0 ** 31 - 1, "UINT32_MAX": 2.0 ** 32 - 1, "I64_MIN": -2.0 ** 63,
           "I64_MAX": 2.0 ** 63 - 1, "UINT64_MAX": 2.0 ** 64 - 1, "FLT_MAX": 3.4028234663852886e38,
           "-FLT_MAX": -3.4028234663852886e38, "FLT_MIN": 1.1754943508222875e-38, "DBL_MAX": math.inf,
           "-DBL_MAX": -math.inf}
#: "  -application       <int>        E...A...... Intended application type (from 2048 to 2051) (default audio)"
_OPTION_RE = re.compile(r"^  -(?P<name>\S+)\s+<(?P<type>[\w ]+)>\s+(?P<flags>[A-Z.]{6,})(?:\s+(?P<help>.*))?$")
#: "     voip            2048         E...A...... Favor ..." (the value column is absent for flag names)
_CONST_RE = re.compile(r"^ {4,}(?P<name>\S+)(?:\s+(?P<value>-?[\w.]+))?\s+(?P<flags>[A-Z.]{6,})(?:\s|$)")
_RANGE_RE = re.compile(r"\(from (\S+) to (\S+)\)")


def _limit(token: str) -> float | None:
    if token in _LIMITS:
        return _LIMITS[token]
    try:
        return float(token)
    except ValueError:
        return None


def parse_help(text: str) -> dict[str, AVOption]:
    """The AVOptions of one ``ffmpeg -h encoder=/muxer=`` listing, by name."""
    found: dict[str, dict] = {}
    last = None
    for line in text.splitlines():
        m = _OPTION_RE.match(line)
        if m:
            rng = _RANGE_RE.search(m.group("help") or "")
            last = found.setdefault(m.group("name"), {
                "name": m.group("name"), "type": m.group("type").strip(), "constants": set(),
                "min_value": _limit(rng.group(1)) if rng else None, "max_value": _limit(rng.group(2)) if rng else None})
            continue
        c = _CONST_RE.match(line)
        if c and last is not None:
            last["constants"].add(c.group("name"))
        elif line.strip() and not line.startswith("    "):
            last = None  # a section header ends the constants of the option above
    return {k: AVOption(**{**v, "constants": frozenset(v["constants"])}) for k, v in found.items()}


def encoder_options(encoder: str) -> dict[str, AVOption]:
    """The encoder's own AVOptions (``ffmpeg -h encoder=NAME``), by name; {} for an
    encoder this ffmpeg lacks. One ffmpeg run per binary and encoder, cached."""
    return _listing(ffmpeg_path(), "encoder", encoder)


def muxer_options(format: str) -> dict[str, AVOption]:
    """The muxer's AVOptions (``ffmpeg -h muxer=FORMAT``), by name; cached like
    :func:`encoder_options`."""
    return _listing(ffmpeg_path(), "muxer", format)


@functools.lru_cache(maxsize=64)
def _listing(exe: str, kind: str, name: str) -> dict[str, AVOption]:
    # the name was allow-listed by the preset parser (letters, digits, _ . + -); a "="
    # or "," would make -h read a second topic
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
        return {}
    out, _ = run_args(["-hide_banner", "-h", f"{kind}={name}"], exe=exe)
    return parse_help(out.decode("utf-8", "replace"))


def ffmpeg_cli_options() -> frozenset[str]:
    """Names of ffmpeg's own command-line options (``ffmpeg -h long``): a preset key
    with one of these names would be read by ffmpeg itself, not by the encoder."""
    return _cli_of(ffmpeg_path())


@functools.lru_cache(maxsize=8)
def _cli_of(exe: str) -> frozenset[str]:
    out, _ = run_args(["-hide_banner", "-h", "long"], exe=exe)
    names = set()
    for line in out.decode("utf-8", "replace").splitlines():
        m = re.match(r"^--?([A-Za-z0-9_]+)", line)  # "-shortest  ...", "-stats_enc_pre[:<stream_spec>] ..."
        if m:
            names.add(m.group(1))
    return frozenset(names)


#: a number as ffmpeg reads one (av_strtod): optional SI prefix, "i" for powers of 2
_NUMBER_RE = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?P<si>[kKMGT]i?)?$")
_SI = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_BOOL_WORDS = frozenset("true false yes no y n on off enable disable enabled disabled auto".split())


def _as_number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            v = float(value)
        except OverflowError:
            return None
        return v if math.isfinite(v) else None
    text = str(value).strip()
    m = _NUMBER_RE.match(text)
    if not m:
        return None
    si = m.group("si") or ""
    num = float(text[: len(text) - len(si)])
    if si.endswith("i"):  # "Ki": powers of 1024
        num *= 1024.0 ** ("KMGT".index(si[0].upper()) + 1)
    elif si:
        num *= _SI[si]
    return num if math.isfinite(num) else None


#: values and names as an error shows them: one line, cut short
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlong = 30


def _names(constants) -> str:
    shown = sorted(constants)
    text = ", ".join(_REPR.repr(c)[1:-1] for c in shown[:24]) + (", ..." if len(shown) > 24 else "")
    return text.replace("\n", " ")


def check_option_value(option: AVOption, value) -> str | None:
    """Why ``value`` is not a valid value of ``option`` (one phrase), or None if it is."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return f"must be a string or a number, not {type(value).__name__}"
    text = str(value)
    kind = option.type
    if kind in ("int", "int64", "uint64", "float", "double", "profile"):
        if option.constants and text in option.constants:
            return None
        if kind == "profile" and re.fullmatch(r"[a-z][a-z0-9_]{0,31}", text):
            return None  # a profile name of the codec (aac_he); ffmpeg checks it against the codec
        num = _as_number(value)
        if num is None:
            named = f" or one of {_names(option.constants)}" if option.constants else ""
            return f"must be a number{named}, got {_REPR.repr(value)}"
        lo = option.min_value if option.min_value is not None else -math.inf
        hi = option.max_value if option.max_value is not None else math.inf
        if not lo <= num <= hi:
            return f"must be from {lo:g} to {hi:g}, got {_REPR.repr(value)}"
        return None
    if kind == "boolean":
        if text.lower() in _BOOL_WORDS or text in ("0", "1", "-1"):
            return None
        return f"must be true/false (or 1/0), got {_REPR.repr(value)}"
    if kind == "flags":
        if _as_number(value) is not None and float(_as_number(value)).is_integer():
            return None
        parts = [p for p in re.split(r"[+-]", text) if p]
        unknown = [p for p in parts if p not in option.constants]
        if not parts or unknown:
            return f"must be flags joined by + or - from {_names(option.constants)}, got {_REPR.repr(value)}"
        return None
    if kind == "string":
        if len(text) > 256 or not text.isprintable():
            return "must be printable text of at most 256 characters"
        return None
    return f"is a {_REPR.repr(kind)[1:-1]} option, which a preset does not set"


def _where(preset) -> str:
    return str(preset.source_path) if getattr(preset, "source_path", None) else f"preset '{preset.name}'"


def check_preset_options(preset) -> None:
    """Raise PresetError (naming the file and the key) unless the preset's container is
    one ratecontrol writes and every option of the preset and of its rungs is on the
    allow-list above, with a value of its type. Runs before any decode or probe
    (``require_encoder`` calls it)."""
    src = _where(preset)
    if not isinstance(preset.format, str) or preset.format not in CONTAINER_EXTENSIONS:
        raise PresetError(f"{src}: key 'format' must be one of the audio containers ratecontrol writes "
                          f"({', '.join(sorted(CONTAINER_EXTENSIONS))}), got {_REPR.repr(preset.format)}")
    if not isinstance(preset.extension, str) or preset.extension not in CONTAINER_EXTENSIONS[preset.format]:
        raise PresetError(f"{src}: key 'extension' must be one of "
                          f"{', '.join(sorted(CONTAINER_EXTENSIONS[preset.format]))} for format {preset.format}, "
                          f"got {_REPR.repr(preset.extension)}")
    enc = encoder_options(preset.encoder)
    mux = muxer_options(preset.format)
    cli = ffmpeg_cli_options()
    groups = [("options", preset.options)]
    groups += [(f"rungs[{r.index}].options", r.options) for r in preset.rungs]
    groups += [(f"mono.rungs[{r.index}].options", r.options) for r in preset.mono.rungs]
    for where, opts in groups:
        if not isinstance(opts, dict):  # a Preset built in code, not by the parser
            raise PresetError(f"{src}: key '{where}' must be a mapping of option names to values")
        for key, value in opts.items():
            _check_one(src, f"{where}.{str(key)[:40]}", preset, key, value, enc, mux, cli)


def _check_one(src, here, preset, key, value, enc, mux, cli) -> None:
    name, _, spec = str(key).partition(":")
    if spec and not re.fullmatch(r"a(:\d+)?", spec):
        raise PresetError(f"{src}: key '{here}' has the stream specifier ':{spec[:20]}'; an audio preset's "
                          "options take none or ':a'")
    if name in GENERIC_AUDIO_OPTIONS:
        option = GENERIC_AUDIO_OPTIONS[name]
    elif name in cli:
        raise PresetError(f"{src}: key '{here}' is an option of the ffmpeg command line, not of encoder "
                          f"{preset.encoder} or muxer {preset.format}; a preset sets only those (ffmpeg -h "
                          f"encoder={preset.encoder}, -h muxer={preset.format})")
    elif name in enc:
        option = enc[name]
    elif name in mux and not spec:
        option = mux[name]
    else:
        known = sorted(set(enc) | set(mux))
        shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
        raise PresetError(f"{src}: key '{here}' is not an option of encoder {preset.encoder} or muxer "
                          f"{preset.format} (they take {shown or 'none'}; and b:a, q:a, profile:a)")
    why = check_option_value(option, value)
    if why:
        owner = "ffmpeg" if name in GENERIC_AUDIO_OPTIONS else preset.encoder if name in enc else preset.format
        raise PresetError(f"{src}: key '{here}' ({option.type} option of {owner}) {why}")
