"""One ``api.encode`` (or ``api.encode_ladder``) call as a frozen record, built once at
the front door and handed down the probe pipeline (streams.py -> encode.py -> verify.py)
instead of a chain of positional arguments (issue 27 item 3)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from ratecontrol import media
from ratecontrol.contract import check_target_mos
from ratecontrol.errors import OutputError, UsageError
from ratecontrol.options import Options
from ratecontrol.presets import Preset
from ratecontrol.probing.auto import AUTO_CODEC
from ratecontrol.probing.session import resolve_preset

__all__ = ["EncodeRequest", "LadderRequest"]


@dataclass(frozen=True)
class EncodeRequest:
    """What one encode was asked for, checked once.

    input_path: the input file (never overwritten). output: the output as given (None:
    the default name beside the input); the Destination is claimed once, by the stage
    that knows the preset. target_mos: checked (``contract.check_target_mos``). preset:
    None for codec auto. info: the input inspected once (``media.inspect``). t0_s: the
    ``time.perf_counter()`` reading when the call began (the result's ``seconds``)."""

    input_path: Path
    output: str | os.PathLike | None
    target_mos: float
    preset: Preset | None
    options: Options
    overwrite: bool
    info: media.MediaInfo
    metadata: Mapping[str, str] | None = None
    report: str | os.PathLike | None = None
    t0_s: float = field(default_factory=time.perf_counter)

    @classmethod
    def build(cls, source, output, target_mos: float, codec: str | Preset, options: Options, overwrite: bool,
              metadata=None, report=None, t0_s: float | None = None) -> "EncodeRequest":
        """Inspect the input (one clear error for a missing / non-audio / empty input),
        check the target, resolve the preset, in that order (the order the errors came
        in before this record existed)."""
        input_path = Path(source)
        info = media.inspect(input_path)
        target = check_target_mos(target_mos)
        preset = None if codec == AUTO_CODEC else resolve_preset(codec)
        return cls(input_path, output, target, preset, options, overwrite, info, metadata, report,
                   time.perf_counter() if t0_s is None else t0_s)


@dataclass(frozen=True)
class LadderRequest:
    """What one ladder (``api.encode_ladder``) was asked for, checked once.

    input_path: the input file. out_dir: the folder the outputs go to (the input's
    when none was given), checked to exist; the outputs in it are claimed once, by
    ``encode.encode_targets``. targets_mos: the distinct targets, checked, ascending.
    info: the input inspected once. t0_s: as ``EncodeRequest``'s."""

    input_path: Path
    out_dir: Path
    targets_mos: tuple[float, ...]
    preset: Preset
    options: Options
    overwrite: bool
    info: media.MediaInfo
    report: str | os.PathLike | None = None
    t0_s: float = field(default_factory=time.perf_counter)

    @property
    def metadata(self) -> None:
        """The caller's tags for the output: a ladder takes none (``EncodeRequest.metadata``)."""
        return None

    @classmethod
    def build(cls, source, out_dir, targets: Sequence[float], codec: str | Preset, options: Options, overwrite: bool,
              report=None, t0_s: float | None = None) -> "LadderRequest":
        """Inspect the input, check the targets, resolve the preset, check the folder,
        in that order (the order the errors came in before this record existed)."""
        input_path = Path(source)
        info = media.inspect(input_path)
        if isinstance(targets, (str, bytes)) or not isinstance(targets, Sequence):
            raise UsageError(f"targets must be a list of MOS values, got {targets!r}")
        ts = sorted({check_target_mos(t) for t in targets})
        if not ts:
            raise UsageError("give at least one target MOS")
        preset = resolve_preset(codec)
        folder = Path(out_dir) if out_dir else input_path.parent
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"output folder {folder} is a file; give a folder for a ladder")
        if not folder.is_dir():  # one rule with encode's output file: folders are never created
            raise OutputError(f"output folder does not exist: {folder} (create it first)")
        return cls(input_path, folder, tuple(ts), preset, options, overwrite, info, report,
                   time.perf_counter() if t0_s is None else t0_s)
