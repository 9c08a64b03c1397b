"""The C allocator: the settings of ratecontrol's own processes (the CLI, and the batch
workers it starts: loky processes inherit ``ENV``; a library caller's process is left
alone), and ``trim_heap``, which gives free heap pages back (the full-track check, after
each minute). One handle on glibc for both.

Why (issue 25, docs/performance.md "Cost, round 4"): an encode allocates and frees
arrays of one to tens of MB all the time (a minute of decoded audio, its resampled
copy, the scorer's batches), and glibc hands such blocks back to the kernel on free
(mmap'd blocks above its dynamic threshold; per-thread arenas; the heap top past the
trim threshold). Every new block is then faulted in and zeroed again: a 4-minute Opus
encode took ~170k page faults and 2.4-3.4 s of system time in the Python process
(perf: 13 % of all samples in ``exc_page_fault`` -> ``folio_zero_user``, transparent
huge pages). One arena, blocks up to 32 MB from the heap and a heap that is trimmed only
when asked (``trim_heap`` still returns the free pages after each minute
of the check, so memory stays flat): ~105k faults, 0.6-1.2 s less system time, peak RSS
60 MB lower (3 runs each, paired).

glibc only (``mallopt``); elsewhere nothing is changed.
"""
from __future__ import annotations

import ctypes
import functools
import os

__all__ = ["ENV", "trim_heap", "tune_allocator", "tune_if_asked"]

#: set by the CLI for its own child processes (the batch's loky workers): "1" tunes
ENV = "RATECONTROL_TUNED_MALLOC"

# glibc <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
#: glibc's largest mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX, 4 * 1024 * 1024 * sizeof(long))
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
#: the heap is trimmed from its top only past this (explicit ``malloc_trim`` calls still trim)
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024

_done = False


@functools.cache
def _glibc():
    """The process's own C library when it is glibc (``mallopt`` and ``malloc_trim``),
    else None (musl, macOS, Windows). ``CDLL(None)``: the symbols already loaded, with no
    ``find_library`` (it runs ``ldconfig``, ~3 ms)."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, TypeError, AttributeError):
        return None


def tune_allocator() -> bool:
    """Apply the settings above to this process once; True if glibc took them. Call only
    in a process ratecontrol owns (the CLI's, a worker it started)."""
    global _done
    libc = _glibc()
    if not _done and libc is not None:
        _done = all(libc.mallopt(k, v) == 1 for k, v in ((_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
                                                        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)))
    return _done


def tune_if_asked() -> bool:
    """In a worker: tune when the CLI that started this process asked for it (``ENV``)."""
    return os.environ.get(ENV) == "1" and tune_allocator()


def trim_heap() -> None:
    """Return the free pages inside the C heap to the OS (glibc ``malloc_trim(0)``).

    Why: the full-track check keeps each minute's prepared reference (~6 KB per window,
    small arrays that land in the heap) between one minute's transient arrays (windows,
    the scorer's batches: tens of MB each, in the heap once glibc's dynamic mmap
    threshold has risen). glibc returns heap memory only from its top, so the kept
    pieces pinned the freed space around them: anonymous memory grew ~3.5 MB per minute
    of input (714 MB for 10 minutes, 890 MB for 60; bench/bench_memory.py) for ~0.7 MB
    of features. ``malloc_trim(0)`` also releases free pages in the middle of the heap."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
