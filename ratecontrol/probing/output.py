"""The output path of an encode, checked before any work (one place for every entry point)."""
from __future__ import annotations

from pathlib import Path

from ratecontrol import media
from ratecontrol.contract import CONTAINER_EXTENSIONS
from ratecontrol.errors import OutputError
from ratecontrol.presets import Preset

__all__ = ["check_output", "default_output"]


def default_output(input_path: Path, preset: Preset, suffix: str = "") -> Path:
    """``<stem><suffix><ext>`` beside the input; ``<stem><suffix>.rc<ext>`` if that is the input."""
    out = input_path.with_name(f"{input_path.stem}{suffix}{preset.extension}")
    if out.resolve() == input_path.resolve():
        out = input_path.with_name(f"{input_path.stem}{suffix}.rc{preset.extension}")
    return out


def check_output(input_path: Path, output: Path, overwrite: bool, preset: Preset | None = None) -> Path:
    """The output path, checked: a folder that exists, not the input, an extension
    that matches the container (none: the preset's is added), not an existing file
    unless ``overwrite``, a name the file system can hold with our temp prefix."""
    if len(output.name.encode()) > 255:
        raise OutputError(f"output name is {len(output.name.encode())} bytes; file systems allow 255: {output.name[:40]}...")
    output = media.check_output_path(output, input_path)
    if preset is not None:
        if not output.suffix:
            output = media.check_output_path(output.with_name(output.name + preset.extension), input_path)
        ok = CONTAINER_EXTENSIONS.get(preset.format)
        if ok is not None and output.suffix.lower() not in ok:
            raise OutputError(f"output {output} has the extension {output.suffix} but preset '{preset.name}' writes "
                              f"{preset.format} data; use {output.with_suffix(preset.extension).name}")
    if output.exists() and not overwrite:
        raise OutputError(f"output {output} already exists; choose another path or replace it",
                          options={"overwrite": True})
    return output
