"""The build's progress bars (the plan's and the pool's), one look for both."""
from __future__ import annotations

__all__ = ["progress"]


def progress(total, enabled, desc, iterable=None):
    """A tqdm bar; in a log file (nohup) it redraws every 30 s instead of on every pair."""
    import sys

    from tqdm import tqdm

    interval = 0.5 if sys.stderr.isatty() else 30.0
    if iterable is not None:
        return tqdm(iterable, desc=desc, disable=not enabled, mininterval=interval)
    return tqdm(total=total, desc=desc, disable=not enabled, smoothing=0.05,
                dynamic_ncols=True, mininterval=interval)
