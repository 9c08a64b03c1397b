"""Reading what ffmpeg prints on stderr: the stream dump of an opened input and its
error lines (shared by _inspect and _decode; there is no ffprobe next to the
imageio-ffmpeg binary)."""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import EmptyAudioError, FFmpegError, InputError, NotAudioError
from ._ffmpeg import channel_layouts, ff_path, stderr_tail

_DURATION_RE = re.compile(
    r"^\s*Duration:\s*(?P<dur>N/A|\d+:\d+:\d+(?:\.\d+)?)"
    r"(?:,\s*start:\s*(?P<start>[-\d.]+))?(?:,\s*bitrate:\s*(?P<br>N/A|[\d.]+)\s*kb/s)?"
)
_STREAM_START_RE = re.compile(r",\s*start (-?\d+(?:\.\d+)?)")
_STREAM_RE = re.compile(r"^\s*Stream #0:(?P<idx>\d+)\S*:\s*(?P<kind>\w+):\s*(?P<rest>.*)$")
_INPUT_RE = re.compile(r"^Input #0, (?P<fmt>.+?), from ")
_META_ENTRY_RE = re.compile(r"^(?P<indent>\s*)(?P<key>[^:]*?)\s*:\s(?P<val>.*)$")



def unquote_path(stderr: str, p: Path) -> str:
    """ffmpeg's stderr with the input's path replaced by ``<input>``.

    ffmpeg prints the path verbatim (``Input #0, wav, from '/a/b\nc.wav':``), so a
    name with a newline splits the dump's first line and a name that looks like a dump
    line could be read as one; the path is known, so take it out before parsing."""
    full = ff_path(p)
    return stderr.replace(full, "<input>") if full else stderr


def hms_to_s(text: str) -> float:
    h, m, s = text.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def parse_dump(stderr: str) -> dict:
    """Parse ffmpeg's ``Input #0`` dump into plain values (no validation)."""
    out: dict = {"format_name": "", "duration": None, "container_kbps": None,
                 "audio": None, "has_cover_art": False,
                 "cover_stream": None, "cover_codec": None, "global_tags": {},
                 "audio_tags": {}, "has_video": False, "start_s": None, "audio_start_s": None, "other_streams": 0, "audio_streams": 0,
                 "duration_estimated": "Estimating duration from bitrate" in stderr}
    in_input = False
    # which tag dict the current "Metadata:" block feeds, and the indent of its entries
    target: dict | None = None
    meta_indent = -1
    last_key: str | None = None
    current_stream_is_first_audio = False
    for line in stderr.splitlines():
        m = _INPUT_RE.match(line)
        if m:
            in_input = True
            out["format_name"] = m.group("fmt")
            target, meta_indent, last_key = None, -1, None
            continue
        if not in_input:
            continue
        if line and not line.startswith(" "):
            # "Stream mapping:", "Output #0", "[in#0 @ ...]" -- input dump is over
            if line.startswith("["):
                continue  # a demuxer/decoder warning interleaved with the dump
            break
        indent = len(line) - len(line.lstrip(" "))
        stripped = line.strip()
        if stripped == "Metadata:":
            if indent <= 2:
                target = out["global_tags"]
            elif current_stream_is_first_audio:
                target = out["audio_tags"]
            else:
                target = None  # tags of a cover-art / data stream: not the track's
            meta_indent = indent + 2
            last_key = None
            continue
        if target is not None and indent >= meta_indent:
            me = _META_ENTRY_RE.match(line)
            if me:
                key, val = me.group("key").strip(), me.group("val")
                if key == "" and last_key is not None:
                    # a multi-line value continues as "              : next line"
                    target[last_key] += "\n" + val
                elif key:
                    target[key] = val
                    last_key = key
            continue
        target, meta_indent, last_key = None, -1, None
        md = _DURATION_RE.match(line)
        if md:
            if md.group("dur") != "N/A":
                out["duration"] = hms_to_s(md.group("dur"))
            if md.group("start"):
                out["start_s"] = float(md.group("start"))
            br = md.group("br")
            if br and br != "N/A":
                out["container_kbps"] = float(br)
            continue
        ms = _STREAM_RE.match(line)
        if ms:
            kind, rest = ms.group("kind"), ms.group("rest")
            current_stream_is_first_audio = False
            if kind == "Audio":
                out["audio_streams"] += 1
            elif not (kind == "Video" and "(attached pic)" in rest):
                out["other_streams"] += 1  # video, subtitles, data, attachments
            if kind == "Audio" and out["audio"] is None:
                out["audio"] = rest
                current_stream_is_first_audio = True
                mst = _STREAM_START_RE.search(rest)
                if mst:
                    out["audio_start_s"] = float(mst.group(1))
            elif kind == "Video" and "(attached pic)" not in rest:
                out["has_video"] = True
            elif kind == "Video" and "(attached pic)" in rest and not out["has_cover_art"]:
                out["has_cover_art"] = True
                out["cover_stream"] = int(ms.group("idx"))
                out["cover_codec"] = rest.split(",")[0].split()[0]
    return out


def split_top_level(text: str) -> list[str]:
    """Split ``a (b, c), d`` on commas that are not inside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if cur:
        parts.append("".join(cur).strip())
    return parts


def parse_audio_stream(rest: str) -> dict:
    """``flac, 44100 Hz, stereo, s16 (24 bit), 1411 kb/s (default)`` -> fields."""
    parts = split_top_level(rest)
    codec = parts[0].split()[0] if parts and parts[0] else ""
    info: dict = {"codec": codec, "sample_rate_hz": None, "channels": None,
                  "layout": "", "bits": None, "kbps": None}
    layouts = channel_layouts()
    for i, part in enumerate(parts[1:], start=1):
        m = re.fullmatch(r"(\d+) Hz", part)
        if m:
            info["sample_rate_hz"] = int(m.group(1))
            # the layout is the field right after the rate, the sample format after it
            if i + 1 < len(parts):
                lay = parts[i + 1]
                info["layout"] = lay
                mc = re.fullmatch(r"(\d+) channels(?: \(.*\))?", lay)
                if mc:
                    info["channels"] = int(mc.group(1))
                elif lay in layouts:
                    info["channels"] = layouts[lay]
                elif "(" in lay and lay.split("(")[0] in layouts:
                    info["channels"] = layouts[lay.split("(")[0]]
                else:
                    # explicit layouts like "FL+FR+LFE" or "3 channels (FL+BL+BR)"
                    inner = re.search(r"([A-Z0-9]+(?:\+[A-Z0-9]+)+)", lay)
                    if inner:
                        info["channels"] = len(inner.group(1).split("+"))
            if i + 2 < len(parts):
                fmt = parts[i + 2]
                mb = re.search(r"\((\d+) bit\)", fmt)
                if mb:
                    info["bits"] = int(mb.group(1))
                else:
                    mf = re.fullmatch(r"([us])(\d+)p?", fmt.strip())
                    if mf:
                        info["bits"] = int(mf.group(2))
            continue
        mk = re.match(r"([\d.]+) kb/s", part)
        if mk:
            info["kbps"] = float(mk.group(1))
    return info


#: seconds decoded by inspect() to prove the file has samples


def nothing_decoded(stderr: str) -> bool:
    """ffmpeg's stderr says the output got no samples (empty/truncated input)."""
    return "Output file is empty" in stderr or "received no packets" in stderr


def no_decoder(stderr: str) -> bool:
    return bool(re.search(r"Decoder \(codec [^)]*\) not found|"
                          r"Decoding requested, but no decoder", stderr))


def no_decoder_message(path, stderr: str) -> str:
    m = (re.search(r"no decoder found for: (\S+)", stderr)
         or re.search(r"Decoder \(codec (\S+?)\)", stderr))
    codec = m.group(1) if m else "unknown"
    tag = re.search(r"Audio: \S+ \(.*?(0x[0-9a-fA-F]+)\)", stderr)
    if tag:
        codec += f", tag {tag.group(1)}"
    return (f"this ffmpeg has no decoder for the audio codec '{codec}' of {path}; convert "
            "it with another tool or use an ffmpeg build that decodes it")


def open_error(path: Path, stderr: str, exc: FFmpegError | None = None) -> Exception:
    """The error for an input ffmpeg could not open (one line, with ffmpeg's reason).

    ffmpeg that printed nothing at all did not get as far as reading the file: that is
    the ffmpeg's failure (``exc`` itself), not the input's."""
    if not stderr.strip():
        return exc if exc is not None else FFmpegError(
            f"ffmpeg failed on {path} without printing anything; check the ffmpeg binary "
            "(ratecontrol doctor)")
    if re.search(r"Permission denied", stderr):
        return InputError(f"cannot read {path}: permission denied (check the file's permissions)")
    if "moov atom not found" in stderr:
        return EmptyAudioError(
            f"{path} is truncated or unfinished: its MP4 index (moov atom) is missing, so "
            "nothing can be decoded; re-export or re-copy the file")
    m = re.search(r"Error opening input(?: file)?: (.+)", stderr)
    reason = m.group(1).strip() if m else stderr_tail(stderr, 2)
    if reason == "End of file":
        return EmptyAudioError(
            f"{path} is truncated: ffmpeg reached the end of the file while reading its "
            "header; re-export or re-copy the file"
        )
    return NotAudioError(
        f"ffmpeg cannot read {path} as audio ({reason}); check that it is an audio file "
        "and not damaged, or convert it with another tool first"
    )
