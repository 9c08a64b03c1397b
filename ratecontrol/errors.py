"""One exception tree for everything ratecontrol raises on purpose.

Only the CLI turns these into exit codes (see ``exit_code``); library callers catch
``RatecontrolError`` or a subclass. Every message is one line that says what went
wrong, which file, and what to do. The tree (exit code in brackets)::

    RatecontrolError [1]
    +-- UsageError [2]                 (also a ValueError) a bad argument or option value
    +-- InputError [3]                 the input cannot be used
    |   +-- InputNotFoundError         (also a FileNotFoundError)
    |   +-- NotAudioError              no audio stream ffmpeg can read
    |   +-- EmptyAudioError            an audio stream with no samples
    |   +-- TruncatedInputError        cut off or damaged (allow_partial encodes what decodes)
    +-- OutputError [4]                unwritable folder, same as input, wrong extension, disk full
    +-- PresetError [5]                unknown preset, invalid YAML (names file and key)
    |   +-- EncoderNotAvailableError   this ffmpeg lacks the preset's encoder
    +-- FFmpegError [6]                ffmpeg failed (carries the command and stderr)
    |   +-- FFmpegNotFoundError        no working ffmpeg binary
    +-- TargetNotReachable [7]         even the top rung misses (carries the SearchResult)
    +-- ModelError [8]                 a model checkpoint is missing or corrupt
    +-- DatasetError [9]               a shard set is missing or malformed

    RatecontrolWarning (a UserWarning): something the run survives, one line
"""
from __future__ import annotations

__all__ = [
    "RatecontrolError",
    "InputError",
    "InputNotFoundError",
    "NotAudioError",
    "EmptyAudioError",
    "TruncatedInputError",
    "OutputError",
    "PresetError",
    "EncoderNotAvailableError",
    "FFmpegError",
    "FFmpegNotFoundError",
    "TargetNotReachable",
    "UsageError",
    "ModelError",
    "DatasetError",
    "RatecontrolWarning",
]


class RatecontrolError(Exception):
    """Base of every error ratecontrol raises on purpose.

    ``options``: the options that would change the outcome, by their library names
    (``{"best_effort": True}``). The library never spells a command-line flag: the
    message ends with the options as a library caller passes them
    (``best_effort=True``); the CLI renders the same message with its own flags
    (``--best-effort``, ``ratecontrol.cli._common.FLAGS``) through ``message``.
    """

    #: process exit code the CLI uses for this class of error
    exit_code = 1

    def __init__(self, *args, options: dict | None = None):
        super().__init__(*args)
        self.options = dict(options or {})

    def message(self, spell=None) -> str:
        """The message with its options spelt by ``spell(name, value)`` (default: the
        library's ``name=value``); several options are alternatives ("or")."""
        return super().__str__() + self.options_text(self.options, spell)

    @staticmethod
    def options_text(options: dict, spell=None) -> str:
        """`` (name=value or ...)``, the suffix ``message`` puts after the text ('' for none)."""
        if not options:
            return ""
        spell = spell or (lambda name, value: f"{name}={value!r}")
        return f" ({' or '.join(spell(k, v) for k, v in options.items())})"

    def __str__(self) -> str:
        return self.message()


class UsageError(RatecontrolError, ValueError):
    """An argument is out of range or inconsistent (e.g. target MOS outside [1, 5])."""

    exit_code = 2


class InputError(RatecontrolError):
    """The input file cannot be used."""

    exit_code = 3


class InputNotFoundError(InputError, FileNotFoundError):
    """The input path does not exist or is a directory where a file was expected."""


class NotAudioError(InputError):
    """ffmpeg cannot find an audio stream in the file (or cannot read it at all)."""


class EmptyAudioError(InputError):
    """The file has an audio stream but no samples (zero length or truncated)."""


class TruncatedInputError(InputError):
    """The input decodes only in part: ffmpeg reported decode errors, or it decoded much
    less than the container's own stated length (a cut-off download or copy).
    ``allow_partial=True`` encodes what decodes instead."""


class OutputError(RatecontrolError):
    """The output cannot be written (unwritable folder, same as input, ...)."""

    exit_code = 4


class PresetError(RatecontrolError):
    """Unknown preset name or invalid preset YAML (the message names file and key)."""

    exit_code = 5


class EncoderNotAvailableError(PresetError):
    """The preset needs an ffmpeg encoder this ffmpeg build lacks (e.g. libfdk_aac)."""


class FFmpegError(RatecontrolError):
    """ffmpeg failed; carries the command line and the tail of its stderr."""

    exit_code = 6

    def __init__(self, message: str, cmd: list[str] | None = None, stderr: str = "", *, options: dict | None = None):
        super().__init__(message, options=options)
        self.cmd = list(cmd or [])
        self.stderr = stderr


class FFmpegNotFoundError(FFmpegError):
    """No usable ffmpeg binary (RATECONTROL_FFMPEG, PATH, imageio-ffmpeg)."""


class TargetNotReachable(RatecontrolError):
    """Even the top rung of the ladder misses the target (``best_effort`` takes the top rung)."""

    exit_code = 7

    def __init__(self, message: str, result=None, *, options: dict | None = None):
        super().__init__(message, options=options)
        #: the SearchResult with every probe, so callers can see how close it got
        self.result = result


class ModelError(RatecontrolError):
    """A model checkpoint is missing, corrupt, or of an unknown format version."""

    exit_code = 8


class DatasetError(RatecontrolError):
    """A dataset / shard set is missing or malformed."""

    exit_code = 9


class RatecontrolWarning(UserWarning):
    """Something worth one line on stderr that does not stop the run (a partial input
    decoded with allow_partial, a probe cache that is not used)."""
