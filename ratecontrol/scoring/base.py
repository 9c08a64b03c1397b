"""The Scorer protocol and the registry of scoring backends.

A scorer compares reference and degraded 1-s windows (float32 [W, 44100] at 44.1 kHz,
see ``ratecontrol.windows``) and returns one MOS per window on the ViSQOL v3 audio-mode
scale (1 .. ~4.73). Reference work (resampling, features) happens once in ``prepare``
and is reused for every degraded candidate the search probes.

Backends register under a name. Built-in backends are imported lazily, so importing
ratecontrol does not import torch or numba until a scorer is asked for.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from ratecontrol.errors import UsageError

__all__ = ["Scorer", "register_scorer", "get_scorer", "check_scorer", "available_scorers", "DEFAULT_SCORER"]


@runtime_checkable
class Scorer(Protocol):
    """A full-reference scorer of 1-s windows.

    Optional attribute ``compact_prepare`` (default False): True when ``prepare``'s
    result is much smaller than the windows, so a whole track's prepared reference may
    be kept (the full-track check then prepares it while ffmpeg encodes).

    Optional ``gather(parts) -> prepared``, where ``parts`` is a list of ``(prepared,
    rows)``: a prepared reference made of those rows of others, in order (a scorer
    whose prepared reference is per window). The full-track check then takes the
    windows the probes prepared instead of preparing them again.

    Optional ``default_margin_mos`` (default 0) and ``pooled_error_mos`` (default None):
    for a scorer that approximates exact ViSQOL, the search margin its decisions need
    and its measured error on a track's pooled score (reported with every result).
    """

    #: registry name, e.g. "visqol"
    name: str
    #: changes whenever scores could change (library/model version); used in cache keys
    version: str

    def prepare(self, ref_windows: np.ndarray) -> Any:
        """Do the reference-only work once per track."""

    def score(self, prepared: Any, deg_windows: np.ndarray) -> np.ndarray:
        """MOS float64 [W] for degraded windows aligned with the prepared reference."""


_REGISTRY: dict[str, Callable[..., Scorer]] = {}
# name -> module that registers it on import
_BUILTIN = {
    "visqol": "ratecontrol.scoring.visqol",
    "learned": "ratecontrol.scoring.learned",
}
#: the scorer used when none is asked for: the learned model (packaged weights, ~1 ms
#: of CPU per window against ~150 ms for visqol; agreement in docs/performance.md).
#: ``--scorer visqol`` is the exact reference.
DEFAULT_SCORER = "learned"


def register_scorer(name: str) -> Callable[[Callable[..., Scorer]], Callable[..., Scorer]]:
    """Class decorator: make a scorer factory available as ``name``."""

    def deco(factory: Callable[..., Scorer]) -> Callable[..., Scorer]:
        _REGISTRY[name] = factory
        return factory

    return deco


def available_scorers() -> list[str]:
    return sorted(set(_REGISTRY) | set(_BUILTIN))


def check_scorer(name: str | None = None) -> None:
    """Raise what constructing scorer ``name`` would raise about its name or runtime,
    without loading it (no torch import): an unknown name is a UsageError; the learned
    scorer asked for torch (RATECONTROL_RUNTIME=torch) where torch is missing is a
    ModelError naming the extra that installs it."""
    name = name or DEFAULT_SCORER
    if name not in available_scorers():
        raise UsageError(f"unknown scorer {name!r}; use one of {available_scorers()}")
    if name == "learned":
        import warnings

        from ratecontrol.scoring.learned import choose_runtime

        with warnings.catch_warnings():  # the scorer itself warns when it is built
            warnings.simplefilter("ignore")
            choose_runtime()


def get_scorer(name: str | None = None, **kwargs: Any) -> Scorer:
    """Instantiate a registered scorer; ``kwargs`` go to its constructor."""
    name = name or DEFAULT_SCORER
    if name not in _REGISTRY and name in _BUILTIN:
        try:
            importlib.import_module(_BUILTIN[name])
        except ModuleNotFoundError as exc:
            raise UsageError(f"scorer {name!r} is not available ({exc}); use one of {available_scorers()}") from exc
    if name not in _REGISTRY:
        raise UsageError(f"unknown scorer {name!r}; use one of {available_scorers()}")
    return _REGISTRY[name](**kwargs)
