"""Batch mode: transcode a whole folder tree, resumably, locally or on a Dask cluster.

``transcode_folder(IN_DIR, OUT_DIR, target_mos=..., codec=...)`` walks IN_DIR in sorted
order and mirrors it under OUT_DIR. Every file is probed (not judged by its extension):

* audio -> ``ratecontrol.api.encode`` at the cheapest rung that meets the target, with
  the preset's extension, tags and cover art kept (the media layer does that);
* a *lossy* source is never encoded above its own bitrate: the ladder is cut at the
  source's kbps (``max_kbps``); if no rung is that low, if no rung under it meets the
  target, or if the encode is not smaller than the source, the source itself is copied
  unchanged (status ``kept``, the reason in the report);
* a file ffmpeg cannot read as audio is ``skipped`` (or ``copied`` with
  ``copy_other``), unless its extension says it should have been audio (``song.flac``
  that does not decode): then it ``failed`` with ffmpeg's one-line reason.

Output names: ``<stem><preset extension>`` in the mirrored folder. Two inputs in one
folder that would get the same name (``a.flac`` and ``a.wav`` -> ``a.opus``), or an
output name that is already the name of another input file (``a.flac`` -> ``a.opus``
next to an input ``a.opus``), are resolved in sorted order: the first input keeps
``a.opus``, the next gets its full name plus the extension (``a.wav.opus``), then
``a.wav.2.opus``, ... Each rename is listed in the report (``collisions``).

What batch replaces: only a file its own manifest says it wrote, still with the size
and mtime recorded there. Any other file at an output path (the user's ``a.opus``, a
file batch wrote that was edited since, a folder) is left alone and the input becomes
a ``conflict`` record (exit status 1, like a failure), unless ``overwrite=True``
(``--overwrite``) asks to replace it (the record says so). A file that is an input of
the run (same inode) is never replaced, not even with ``--overwrite``. An OUT_DIR inside
IN_DIR is left out of the walk; if it holds files batch did not write the run is refused
(they would be neither read nor safe).

One run per OUT_DIR: ``OUT_DIR/.ratecontrol-batch.lock`` is held (``flock``) for the
whole run; a second run on the same OUT_DIR fails at once naming the first one's pid.

Resume: ``OUT_DIR/.ratecontrol-manifest.jsonl`` gets one JSON line per finished file
(input size, mtime, SHA-256; output, its size and mtime; rung, score, status; the
settings), written by the driver process as results come in, flushed and fsynced. A
rerun with the same settings skips a file whose input is unchanged and whose output
still has the recorded size and mtime and probes as audio; anything else (failed,
changed, missing or damaged output) is done again. A worker writes its output into a
temp folder of its own next to the final name (``fsutil`` names, owned by its pid); the
driver records the manifest line, then links or renames the file into place, so a
killed run never leaves a truncated file under a final name and never an output the
manifest does not know. Temp files whose process is gone are removed at the start of
the next run (``fsutil.clean_stale_temps``); a live run's never are.

Settings: how each file is searched and encoded is one ``Options`` (its fields also
accepted as keywords), carried unchanged from the caller to every worker; batch's own
knobs (jobs, backend, reports, video, ...) are one frozen ``BatchOptions``
(``_settings``), and the manifest's settings dict is derived from the two.

Parallelism: one task per file through joblib (``loky`` processes locally, or joblib's
``dask`` backend on a ``distributed`` cluster: the same code path). Inside a worker the
scorer runs with one job (file-level parallelism keeps every core busy without nested
pools), and is created once per worker process and reused for every file it gets.
"""
from __future__ import annotations

from ratecontrol.batch._driver import BatchInterrupted, default_jobs, transcode_folder
from ratecontrol.batch._manifest import LOCK_NAME, MANIFEST_NAME
from ratecontrol.batch._records import BatchReport, Collision, FileRecord
from ratecontrol.contract import AUDIO_EXTENSIONS

__all__ = [
    "default_jobs",
    "transcode_folder",
    "BatchReport",
    "FileRecord",
    "Collision",
    "MANIFEST_NAME",
    "LOCK_NAME",
    "AUDIO_EXTENSIONS",
    "BatchInterrupted",
]
