"""Version numbers of the learned model's files and code, importable without torch
(``ratecontrol.scoring.model`` imports torch; the numpy runtime and the scorer's
``version`` string need these too)."""
from __future__ import annotations

__all__ = ["FORMAT_VERSION", "CODE_REVISION", "NUMPY_FORMAT_VERSION", "NUMPY_RUNTIME_REVISION", "NSIM_C1", "NSIM_C3",
           "DB_EPS"]

#: version of the library checkpoint layout written by ``model.checkpoint_dict``
FORMAT_VERSION = 1
#: bumped whenever the model code changes what a checkpoint computes (part of the learned
#: scorer's version, hence of probe cache keys). 2: subsonic pre-filter (SubsonicHighpass)
CODE_REVISION = 2
#: layout of the numpy export (``ratecontrol/weights/default.npz``, trainer/export.py)
NUMPY_FORMAT_VERSION = 1
#: bumped whenever ``numpy_model`` changes its arithmetic (part of the numpy runtime's
#: scorer version, hence of its probe cache keys). 2: BLAS limited to one thread in the
#: scorer's calls (issue 25); OpenBLAS's sgemm rounds differently with one thread than
#: with two (~5e-7 relative), <= 5.3e-5 MOS per window on real music
NUMPY_RUNTIME_REVISION = 2

#: the arithmetic both runtimes share (model.py on torch, numpy_model.py on numpy), kept
#: in one place so they cannot drift: visqol/nsim.py's stabilisers, and the floor added
#: to band power before the dB conversion
NSIM_C1 = 0.01**2
NSIM_C3 = 0.03**2 / 2.0
DB_EPS = 1e-20
