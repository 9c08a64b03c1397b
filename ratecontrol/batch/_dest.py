"""Where a worker writes: whether an output path may be written (batch's own file, a
foreign one, a folder, an input of the run), and the worker's temp folder next to it."""
from __future__ import annotations

import os
import shutil
import stat as stat_mod
from pathlib import Path

from ratecontrol import fsutil
from ratecontrol.batch._manifest import is_owned
from ratecontrol.batch._task import Task
from ratecontrol.errors import RatecontrolError


def write_problem(path, exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return f"cannot write {path}: permission denied (make the folder writable)"
    return f"cannot write {path}: {(exc.strerror or str(exc)).lower()}"


class Conflict(Exception):
    """An output path is taken by something batch must not replace. ``str()`` is the
    record's reason (the options, e.g. ``overwrite=True``, at its end, in the library's
    words); ``options`` go into the record as they are."""

    def __init__(self, text: str, options: dict | None = None):
        self.options = dict(options or {})
        super().__init__(text + RatecontrolError.options_text(self.options))


def dest_problem(task: Task, out_rel: str) -> tuple[Conflict | None, bool]:
    """(why ``out_rel`` must not be written, or None; whether writing replaces a foreign file)."""
    dst = Path(task.out_root) / out_rel
    if task.protected and out_rel in task.protected:
        return Conflict(task.protected[out_rel]), False
    try:
        st = os.lstat(dst)
    except FileNotFoundError:
        return None, False
    except NotADirectoryError:
        return Conflict(f"{dst}: a file is in the way of its folder: not replaced; move it away"), False
    except OSError as exc:  # a link loop in OUT_DIR (ELOOP), a folder that cannot be searched (EACCES)
        return Conflict(f"{dst} cannot be checked ({(exc.strerror or str(exc)).lower()}): nothing written; "
                        "fix that path in the output folder"), False
    if stat_mod.S_ISDIR(st.st_mode):
        return Conflict(f"{dst} is a folder: not replaced; move it away or rename it"), False
    if is_owned((task.owned or {}).get(out_rel), st):
        return None, False
    if task.overwrite:
        return None, True
    return Conflict(f"{dst} already exists and batch did not write it (or it changed since): "
                    "not replaced; move it away, or let batch replace it", {"overwrite": True}), False


def check_dest(task: Task, out_rel: str) -> None:
    problem, _ = dest_problem(task, out_rel)
    if problem:
        raise problem


def check_name_fits(task: Task, out_rel: str) -> None:
    """The output's name fits the file system's name limit (only ``<stem><ext>`` can be
    too long: renames are cut to fit when they are planned)."""
    n = len(Path(out_rel).name.encode())
    if n > fsutil.NAME_MAX_BYTES:
        raise WriteError(f"cannot write {Path(task.out_root) / out_rel}: its name would be {n} bytes, over the "
                          f"{fsutil.NAME_MAX_BYTES}-byte limit for a file name; give the input a shorter name")


class WorkDir:
    """A worker's temp folder next to the task's outputs (created on first use).

    Named by fsutil (``.rc-tmp.<host>.<pid>.<token>.batch``): while this process lives no
    cleanup removes it; once it is gone the next run does. Everything encode and ffmpeg
    write (their own temp files included) stays inside it until the driver moves the
    finished file into place."""

    def __init__(self, task: Task):
        self.folder = (Path(task.out_root) / task.rel).parent
        self.path: Path | None = None

    def file(self, name: str) -> Path:
        if self.path is None:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise Conflict(f"a file is in the way of the output folder {self.folder}: "
                               "nothing written; move it away") from None
            except OSError as exc:
                raise WriteError(write_problem(self.folder, exc)) from None
            try:
                tmp = fsutil.temp_dir_sibling(self.folder / "batch")
            except OSError as exc:
                raise WriteError(write_problem(self.folder, exc)) from None
            self.path = tmp
        return self.path / name

    def discard(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


class WriteError(Exception):
    """Writing the output failed (message: one line)."""
