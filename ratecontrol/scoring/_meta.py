"""Version numbers of the learned model's files and code, importable without torch
(``ratecontrol.scoring.model`` imports torch; the numpy runtime and the scorer's
``version`` string need these too)."""
from __future__ import annotations

__all__ = ["FORMAT_VERSION", "CODE_REVISION", "NUMPY_FORMAT_VERSION", "NUMPY_RUNTIME_REVISION"]

#: version of the library checkpoint layout written by ``model.checkpoint_dict``
FORMAT_VERSION = 1
#: bumped whenever the model code changes what a checkpoint computes (part of the learned
#: scorer's version, hence of probe cache keys). 2: subsonic pre-filter (SubsonicHighpass)
CODE_REVISION = 2
#: layout of the numpy export (``ratecontrol/weights/default.npz``, trainer/export.py)
NUMPY_FORMAT_VERSION = 1
#: bumped whenever ``numpy_model`` changes its arithmetic (part of the numpy runtime's
#: scorer version, hence of its probe cache keys)
NUMPY_RUNTIME_REVISION = 1
