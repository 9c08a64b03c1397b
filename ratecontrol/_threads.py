"""Thread limits scoped to one call (threadpoolctl), shared by the scorer and the resampler.

OpenBLAS (numpy's and scipy's wheels) runs one worker per core, and its idle workers spin
after every matrix product. The learned scorer's band matmuls and the resampler's
polyphase products (``_resample.resample``) are small and many, so on a 2-core machine
doing ffmpeg's work beside them the spinning cost CPU for no wall time: issue 25 measured
``OPENBLAS_NUM_THREADS=1`` saving ~2.3 CPU-s of a 4-minute encode, and
docs/performance.md "Scoped thread limits" (the scorer) and "Cost, round 4" (the
resampler: 0.91x CPU) the parts. ``scoped`` applies such a limit for the body only:
the caller's process state is back when the body returns or raises
(tests/test_thread_limits.py).
"""
from __future__ import annotations

import threading
from contextlib import ExitStack, contextmanager

__all__ = ["scoped", "BLAS_THREADS"]

#: BLAS threads inside ratecontrol's own numeric calls (the numpy scorer's and the
#: resampler's matrix products); None leaves the caller's setting
BLAS_THREADS: int | None = 1

# The limits are process state shared with the caller and with the other threads that
# score at once (probing.Prober scores a round's rungs in threads; OpenBLAS's pthreads
# build, in numpy's and scipy's wheels, has one process-wide pool). So one thread at a
# time holds a change of each kind: it applies the limit only where the value it finds
# differs, and restores what it found when its own call ends; threads that enter
# meanwhile run as they find the pool (limited while the holder scores). No thread ever
# restores a value that another one set. threadpoolctl >= 3.8 adds its own rule for
# OpenBLAS's shared pool: one Python thread controls it until its limits end, and other
# threads' limits are ignored; a limit found ignored (another thread of the caller's
# holds it) is left alone here too.
_scope_lock = threading.Lock()
_holders: dict[str, threading.Thread] = {}


def _limit_blas(n: int):
    """Limit every loaded BLAS to n threads; return the undo, or None if nothing changed.
    threadpoolctl's cached controller: building a ThreadpoolController (as
    ``threadpool_limits`` does on every call) scans the loaded libraries, 3.1 ms per call
    on this machine against 0.04 ms for a controller's ``limit``; the cache is rebuilt
    when a module has been imported since."""
    from threadpoolctl import get_cached_controller

    blas = get_cached_controller().select(user_api="blas")
    if all(lib.num_threads == n for lib in blas.lib_controllers):
        return None
    limiter = blas.limit(limits=n)
    stack = ExitStack()
    stack.enter_context(limiter)  # on close: restores, then ends this thread's control of OpenBLAS
    if not all(lib.num_threads == n for lib in blas.lib_controllers):
        # another thread controls OpenBLAS's pool: its setting stands (and a library
        # that did take the limit, e.g. MKL beside it, gets its own value back now)
        stack.close()
        return None
    return stack.close


def _limit_torch(n: int):
    import torch

    before = torch.get_num_threads()
    if before == n:
        return None
    torch.set_num_threads(n)
    return lambda: torch.set_num_threads(before)


@contextmanager
def scoped(kind: str, n: int | None):
    """Run the body with at most n threads of ``kind`` ("blas" or "torch"; n None: no
    limit); the caller's setting is back when the body returns or raises (see above)."""
    undo = None
    if n:
        with _scope_lock:
            if kind not in _holders:
                undo = (_limit_blas if kind == "blas" else _limit_torch)(int(n))
                if undo is not None:
                    _holders[kind] = threading.current_thread()
    try:
        yield
    finally:
        if undo is not None:
            with _scope_lock:
                try:
                    undo()
                finally:
                    del _holders[kind]
