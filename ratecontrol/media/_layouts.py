"""Channel layouts for inputs above two channels: which layout a track is coded in.

One table for every preset that carries surround (Opus, AAC, Vorbis): the Vorbis I
channel mappings (Vorbis spec section 4.3.9), which Opus mapping family 1 reuses
(RFC 7845 section 5.1.1.2). Measured with ffmpeg 9.0 (docs/scoring.md, "Surround"):

- libopus (``-mapping_family 1`` or the default -1) takes exactly these layouts for
  3..8 channels and refuses every other one ("Invalid channel layout 5.1(side) for
  specified mapping family 1"): 4.0, 5.0(side), 5.1(side), 6.1(back), 7.1(wide), 2.1,
  hexagonal;
- native aac takes them all, but writes a 6.1 input as 6.1(back) with SL/SR in the BL/BR
  slots (so decoding it "as 6.1" mixes both pairs into BC): 7-channel AAC tracks are
  coded as 6.1(back), the same channels by position;
- libvorbis takes any layout *by count* and relabels it to these (a 4.0 input came out
  as quad: its centre written as back left), so it must be given these.

A track of 3..8 channels is therefore decoded into ``canonical_layout`` (swresample
maps channels by name: SL/SR onto BL/BR of 5.1 at gain 1, a pure relabel; channels the
target lacks, e.g. the BC of 4.0, are mixed in by ffmpeg's standard matrix), and the
same layout is declared to the encoder and asked of every decode of an output, so
reference and decode line up channel by channel. Mono and stereo are untouched.
"""
from __future__ import annotations

import functools

from ._ffmpeg import ffmpeg_path, run_args

__all__ = ["CANONICAL_LAYOUTS", "canonical_layout", "layout_channels", "lfe_indices", "target_layout"]

#: channel count -> the layout a track of that many channels is coded in
CANONICAL_LAYOUTS = {3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
#: per-encoder exceptions (see the module docstring)
_ENCODER_LAYOUTS = {"aac": {7: "6.1(back)"}}


def canonical_layout(channels: int, encoder: str | None = None) -> str | None:
    """The layout a ``channels``-channel track is coded in for ``encoder`` (None for
    mono/stereo: left as ffmpeg gives them)."""
    n = int(channels)
    return _ENCODER_LAYOUTS.get(encoder or "", {}).get(n) or CANONICAL_LAYOUTS.get(n)


@functools.lru_cache(maxsize=8)
def _decompositions(exe: str) -> dict[str, tuple[str, ...]]:
    out, _ = run_args(["-hide_banner", "-layouts"], exe=exe)
    table: dict[str, tuple[str, ...]] = {}
    in_std = False
    for line in out.decode("utf-8", "replace").splitlines():
        if line.startswith("Standard channel layouts"):
            in_std = True
            continue
        parts = line.split()
        if in_std and len(parts) == 2 and parts[0] != "NAME":
            table[parts[0]] = tuple(parts[1].split("+"))
    return table


def layout_channels(layout: str) -> tuple[str, ...] | None:
    """Channel names of a layout word ffmpeg prints ("5.1" -> FL FR FC LFE BL BR;
    "3 channels (FL+FR+LFE)" -> FL FR LFE); None when ffmpeg gives no order."""
    text = (layout or "").strip()
    if not text:
        return None
    named = _decompositions(ffmpeg_path()).get(text)
    if named:
        return named
    if "(" in text and text.endswith(")"):
        inner = text[text.index("(") + 1 : -1]
        if "+" in inner or inner.isupper():
            return tuple(inner.split("+"))
    if "+" in text:
        return tuple(text.split("+"))
    return None


def lfe_indices(layout: str | None) -> tuple[int, ...]:
    """Positions of the LFE channels of ``layout`` (none for mono/stereo/unknown)."""
    names = layout_channels(layout) if layout else None
    return tuple(i for i, c in enumerate(names or ()) if c.startswith("LFE"))


def target_layout(in_layout: str, in_channels: int, encoder: str | None = None) -> tuple[str, str | None]:
    """(layout to code a track of ``in_channels`` (3..8) in, a note or None).

    Same channel count as the input, except that an input with an LFE whose count's
    layout has none (2.1, 3.1, 4.1) goes to 5.1 so its LFE is kept (the added channels
    are digital silence: not scored, nearly free to code)."""
    n = int(in_channels)
    names = layout_channels(in_layout)
    target = canonical_layout(n, encoder)
    has_lfe = bool(names) and any(c.startswith("LFE") for c in names)
    if has_lfe and not lfe_indices(target):
        target = canonical_layout(6, encoder)
    if in_layout == target:
        return target, None
    if names is None:
        return target, (f"input has {n} channels without a channel layout ({in_layout or 'none'}): "
                        f"taken as ffmpeg's default order and coded as {target}")
    tnames = layout_channels(target) or ()
    if sorted(map(_kind, names)) == sorted(map(_kind, tnames)):
        return target, f"input layout {in_layout} stored as {target} (same channels, the layout Opus/AAC/Vorbis take)"
    return target, (f"input layout {in_layout} mapped to {target} (the layout Opus/AAC/Vorbis take; "
                    "ffmpeg's standard matrix moves the channels it lacks)")


def _kind(name: str) -> str:
    """Side and back surrounds are one pair for a relabel (5.1(side) -> 5.1: swresample
    moves SL/SR onto BL/BR at gain 1 when the target has no sides)."""
    return {"BL": "SL", "BR": "SR"}.get(name, name)
