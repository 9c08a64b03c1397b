"""The output paths of an encode (the audio and the report), checked before any work,
one place for every entry point, under the publish rule (``fsutil.claim_output``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from ratecontrol.contract import CONTAINER_EXTENSIONS
from ratecontrol.errors import OutputError
from ratecontrol.fsutil import Destination, claim_output
from ratecontrol.presets import Preset

__all__ = ["OutputPlan", "check_output", "claim_report", "default_output", "plan_outputs"]


def default_output(input_path: Path, preset: Preset, suffix: str = "") -> Path:
    """``<stem><suffix><ext>`` beside the input; ``<stem><suffix>.rc<ext>`` if that is the input."""
    out = input_path.with_name(f"{input_path.stem}{suffix}{preset.extension}")
    if out.resolve() == input_path.resolve():
        out = input_path.with_name(f"{input_path.stem}{suffix}.rc{preset.extension}")
    return out


def _fits(output: Path, preset: Preset) -> bool:
    ok = CONTAINER_EXTENSIONS.get(preset.format)
    return ok is None or output.suffix.lower() in ok


def check_output(input_path: Path, output: Path, overwrite: bool, preset: Preset | None = None,
                 *, suffix_if_none: str = "", outputs: Sequence = ()) -> Destination:
    """The output path, checked (``fsutil.claim_output``: a folder that exists, not the
    input, not another of this run's ``outputs``, not an existing file unless
    ``overwrite``), with an extension that matches the preset's container (none: the
    preset's is added, or ``suffix_if_none`` without a preset: ffmpeg picks the
    container by the extension), and a name the file system can hold with our temp
    prefix."""
    output = Path(output)
    if len(output.name.encode()) > 255:
        raise OutputError(f"output name is {len(output.name.encode())} bytes; file systems allow 255: {output.name[:40]}...")
    if not output.suffix and not output.is_dir():
        add = preset.extension if preset is not None else suffix_if_none
        if not add:
            raise OutputError(f"output {output} has no extension, which ffmpeg needs to choose the container; "
                              "add one (e.g. .mkv)")
        output = output.with_name(output.name + add)
    if preset is not None and not _fits(output, preset):
        claim_output(output, overwrite=True, inputs=(input_path,))  # the input named as the output: say so first
        raise OutputError(f"output {output} has the extension {output.suffix} but preset '{preset.name}' writes "
                          f"{preset.format} data; use {output.with_suffix(preset.extension).name}")
    return claim_output(output, overwrite=overwrite, inputs=(input_path,), outputs=outputs)


def claim_report(report, input_path: Path, overwrite: bool, outputs: Sequence = ()) -> Destination:
    """A ``report`` PNG path under the publish rule: not the input, not the audio (or
    another report) of this run, an existing file only with ``overwrite``."""
    return claim_output(Path(report), overwrite=overwrite, inputs=(input_path,), outputs=outputs, what="report")


@dataclass(frozen=True)
class OutputPlan:
    """Every output of one encode, checked before any work: the audio's Destination for
    each preset it may be written with (one, or each of codec auto's), and the report's."""

    audio: Mapping[str, Destination] = field(default_factory=dict)
    report: Destination | None = None

    def for_preset(self, preset: Preset) -> Destination:
        """The audio Destination of the preset the search chose."""
        try:
            return self.audio[preset.name]
        except KeyError:  # the search only tries the presets planned here
            raise OutputError(f"no output was planned for preset '{preset.name}'") from None


def plan_outputs(input_path: Path, output, overwrite: bool, presets: Sequence[Preset], report=None) -> OutputPlan:
    """The outputs of one encode with any of ``presets`` (codec auto: every available
    one), checked now so that no search runs for a path that cannot be written. An
    ``output`` whose extension no preset writes is refused; presets whose container
    does not take it are left out of the plan (codec auto then searches the others)."""
    audio: dict[str, Destination] = {}
    fitting = [p for p in presets if output is None or not Path(output).suffix or _fits(Path(output), p)]
    if len(presets) == 1:
        fitting = list(presets)  # check_output names the one preset's extension
    if not fitting:
        exts = sorted({p.extension for p in presets})
        raise OutputError(f"output {output} has the extension {Path(output).suffix}, which none of "
                          f"{', '.join(p.name for p in presets)} writes; use one of {', '.join(exts)}")
    for p in fitting:
        out = Path(output) if output is not None else default_output(input_path, p)
        audio[p.name] = check_output(input_path, out, overwrite, p)
    rep = claim_report(report, input_path, overwrite, outputs=tuple(audio.values())) if report else None
    return OutputPlan(audio, rep)
