"""One ``api.encode`` call as a frozen record, built once at the front door and handed
down the probe pipeline (streams.py -> encode.py -> verify.py) instead of a chain of
positional arguments (issue 27 item 3)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from ratecontrol import media
from ratecontrol.contract import check_target_mos
from ratecontrol.options import Options
from ratecontrol.presets import Preset
from ratecontrol.probing.auto import AUTO_CODEC
from ratecontrol.probing.session import resolve_preset

__all__ = ["EncodeRequest"]


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
