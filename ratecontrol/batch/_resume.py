"""Resume: whether the manifest's last record of an input still holds for this run."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from ratecontrol import fsutil
from ratecontrol.batch._manifest import is_owned
from ratecontrol.batch._records import DONE, ENCODED, KEPT, SKIPPED, FileRecord
from ratecontrol.batch._task import Task
from ratecontrol.errors import RatecontrolError


def still_done(task: Task, prior: dict, st: os.stat_result) -> FileRecord | None:
    """The prior record if it still holds for this run (input unchanged, output intact)."""
    from ratecontrol import media

    status = prior.get("status")
    if status not in DONE or prior.get("input_bytes") != st.st_size:
        return None
    if status == SKIPPED and task.copy_other:
        return None  # now asked to copy it
    if status in (ENCODED, KEPT) and not _same_settings(prior, task.settings):
        return None
    rec = FileRecord.from_dict(prior)
    if status == ENCODED and rec.output != (task.rel if rec.audio_stream is not None else task.out_rel):
        return None  # the tree changed and this input's planned name with it (--video keep: its own name)
    if prior.get("input_mtime_ns") != st.st_mtime_ns and fsutil.file_digest(task.in_path) != prior.get("input_sha256"):
        return None
    if rec.output:
        out = Path(task.out_root) / rec.output
        try:
            ost = out.stat()
        except OSError:
            return None
        if not is_owned({(rec.output_bytes, rec.output_mtime_ns or None)}, ost):
            return None
        if status in (ENCODED, KEPT):
            try:
                if not (media.inspect(out).duration_s or 0) > 0:
                    return None
            except RatecontrolError:
                return None
    return replace(rec, resumed=True)


def _same_settings(prior: dict, settings: dict) -> bool:
    """The prior record was made with these settings; video counts only for files
    that have video and all_audio_streams only for files with several audio streams
    (changing either does not redo a music library). step_down never counts: with or
    without it the file met the target by its own check; it only says how hard the run
    tried to make the file smaller, so turning it off to finish a library sooner keeps
    the files already done."""
    old, new = dict(prior.get("settings") or {}), dict(settings)
    old.pop("step_down", None)
    new.pop("step_down", None)
    if not prior.get("other_streams"):
        old.pop("video", None)
        new.pop("video", None)
    else:
        old.setdefault("video", "audio")  # manifests older than --video keep
    if (prior.get("input_audio_streams") or 1) <= 1:  # all_audio_streams changes nothing there
        old.pop("all_audio_streams", None)
        new.pop("all_audio_streams", None)
    return old == new
