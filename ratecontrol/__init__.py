"""ratecontrol: encode audio at the lowest bitrate that meets a perceptual quality target.

    >>> import ratecontrol
    >>> res = ratecontrol.encode("song.flac", target_mos=4.2, codec="opus")
    >>> res.output_path, res.bitrate_kbps, res.pooled_mos

Scores are ViSQOL v3 audio-mode MOS-LQO (1 .. ~4.73 for identical signals).
"""
from ratecontrol.errors import (
    DatasetError,
    EmptyAudioError,
    EncoderNotAvailableError,
    FFmpegError,
    FFmpegNotFoundError,
    InputError,
    InputNotFoundError,
    ModelError,
    NotAudioError,
    OutputError,
    PresetError,
    RatecontrolError,
    RatecontrolWarning,
    TargetNotReachable,
    TruncatedInputError,
    UsageError,
)
from ratecontrol.options import Options
from ratecontrol.presets import Preset, Rung, list_presets, load_preset
from ratecontrol.results import EncodeResult, Probe, ScoreResult, SearchResult
from ratecontrol.scoring import DEFAULT_POOL, available_scorers, get_scorer, register_scorer

__version__ = "0.1.0"

#: names loaded on first use: the pipeline pulls in scipy.signal, the scorer and joblib
#: (~1-3 s), which `ratecontrol --help`, `presets` and `doctor` never need (PEP 562)
_LAZY = {
    "encode": "ratecontrol.api",
    "encode_ladder": "ratecontrol.api",
    "score": "ratecontrol.api",
    "select_bitrate": "ratecontrol.api",
    "transcode_folder": "ratecontrol.batch",
    "BatchReport": "ratecontrol.batch",
    "FileRecord": "ratecontrol.batch",
    "ProbeCache": "ratecontrol.cache",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ratecontrol' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "__version__",
    # library entry points
    "encode",
    "encode_ladder",
    "select_bitrate",
    "score",
    "transcode_folder",
    "BatchReport",
    "FileRecord",
    "ProbeCache",
    "Options",
    # results
    "EncodeResult",
    "SearchResult",
    "ScoreResult",
    "Probe",
    # presets
    "Preset",
    "Rung",
    "load_preset",
    "list_presets",
    # scoring backends
    "get_scorer",
    "register_scorer",
    "available_scorers",
    "DEFAULT_POOL",
    # errors
    "RatecontrolError",
    "UsageError",
    "InputError",
    "InputNotFoundError",
    "NotAudioError",
    "EmptyAudioError",
    "OutputError",
    "PresetError",
    "EncoderNotAvailableError",
    "FFmpegError",
    "FFmpegNotFoundError",
    "TargetNotReachable",
    "TruncatedInputError",
    "RatecontrolWarning",
    "ModelError",
    "DatasetError",
]
