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
from pathlib import Path

from ._preset_ladder import SURROUND_GROUPS, Knob, MonoPolicy, Preset, Rung, SurroundRule
from ._preset_schema import parse_preset
from ._preset_yaml import MAX_PRESET_BYTES, parse_yaml
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

# the names defined in the private modules keep this module as their home, as before the
# split (httpx's __init__ does the same): pickles, reprs and help() say ratecontrol.presets.Preset
for _obj in (Rung, MonoPolicy, SurroundRule, Preset, Knob, parse_preset, parse_yaml):
    _obj.__module__ = __name__

#: the packaged presets (``package-data: presets/*.yaml`` in pyproject.toml)
PRESET_DIR = Path(__file__).resolve().parent / "presets"


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
