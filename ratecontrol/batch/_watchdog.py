"""A local worker stops when its driver is gone (even by SIGKILL), and takes its ffmpeg
children with it."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time


_WATCHDOG: threading.Thread | None = None


def _kill_children() -> None:
    """SIGKILL this process's children (ffmpeg) before it exits."""
    me = os.getpid()
    try:
        import psutil

        for child in psutil.Process(me).children(recursive=True):
            with contextlib.suppress(Exception):
                child.kill()
        return
    except ImportError:
        pass
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                fields_ = fh.read().rsplit(b")", 1)[1].split()
            if int(fields_[1]) == me:
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, IndexError, ValueError):
            pass


def _watch_driver(driver_pid: int) -> None:
    while True:
        time.sleep(0.25)
        if os.getppid() != driver_pid:
            # the driver died (even by SIGKILL): nothing this worker writes could be
            # placed or recorded any more, so stop now; the temp folder is left to the
            # next run's cleanup (its pid is ours, dead in a moment)
            _kill_children()
            os._exit(3)


def start_watchdog(driver_pid: int | None) -> None:
    global _WATCHDOG
    if driver_pid is None or _WATCHDOG is not None or os.getpid() == driver_pid:
        return  # dask, already watching, or running in the driver itself (-j 1)
    if os.getppid() != driver_pid:
        return  # not a direct child (some other pool): do not guess
    _WATCHDOG = threading.Thread(target=_watch_driver, args=(driver_pid,), name="ratecontrol-driver-watch",
                                 daemon=True)
    _WATCHDOG.start()
