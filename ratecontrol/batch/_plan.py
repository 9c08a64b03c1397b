"""Before any file is read: the walk of IN_DIR, the output name of every input (and the
collisions), and which output paths are never written."""
from __future__ import annotations

import errno
import os
import stat as stat_mod
from pathlib import Path

from ratecontrol import fsutil
from ratecontrol.errors import (
    InputError,
    InputNotFoundError,
    OutputError,
)
from ratecontrol.batch._manifest import LOCK_NAME, MANIFEST_NAME
from ratecontrol.batch._records import Collision
from ratecontrol.contract import AUDIO_EXTENSIONS


def check_dirs(in_dir, out_dir) -> tuple[Path, Path, Path | None]:
    src = Path(in_dir)
    if not src.exists():
        raise InputNotFoundError(f"input folder not found: {src} (check the path)")
    if not src.is_dir():
        raise InputNotFoundError(f"input is a file, not a folder: {src} (use `ratecontrol encode` for one file)")
    dst = Path(out_dir)
    if dst.exists() and not dst.is_dir():
        raise OutputError(f"output {dst} exists and is not a folder; choose another OUT_DIR")
    rs, rd = src.resolve(), dst.resolve()
    if rs == rd or rs.is_relative_to(rd):
        raise OutputError(f"output folder {dst} contains the input folder {src}; choose an OUT_DIR outside it")
    try:
        dst.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {dst} ({exc.strerror}); choose another OUT_DIR") from None
    if not os.access(dst, os.W_OK):
        raise OutputError(f"output folder {dst} is not writable; choose another OUT_DIR")
    # absolute: Dask workers on other machines do not share this process's cwd
    return Path(os.path.abspath(src)), Path(os.path.abspath(dst)), (rd if rd.is_relative_to(rs) else None)


def walk(in_dir: Path, prune: Path | None, ids: dict | None = None) -> list[str]:
    """Relative '/'-paths of every regular file under ``in_dir`` (``scan``'s first part)."""
    return scan(in_dir, prune, ids)[0]


def scan(in_dir: Path, prune: Path | None, ids: dict | None = None
         ) -> tuple[list[str], dict[str, str], list[str]]:
    """(files, left out, order) of the walk of ``in_dir``: sorted per folder, files first,
    then the sub-folders, depth first.

    ``files``: relative '/'-paths of the regular files (links to regular files count),
    the inputs. ``left out``: path -> why, for what is there but is not read: a FIFO, a
    device or a link to one (``/dev/zero``), a dangling or looping link, a link to a
    folder (never followed: a loop or a link to a parent would repeat the walk), a
    folder that cannot be listed. Batch reports each as ``skipped`` with that reason
    instead of leaving it out silently. ``order``: both, in walk order (the records').
    ``prune`` (OUT_DIR inside IN_DIR) is not entered. Our own temp files and lock file
    are not inputs. ``ids``, when given, is filled with (st_dev, st_ino) -> relative path."""
    files: list[str] = []
    left_out: dict[str, str] = {}
    order: list[str] = []

    def unlisted(exc: OSError) -> None:
        folder = Path(exc.filename or in_dir)
        if folder == in_dir:
            raise InputError(f"cannot list the input folder {in_dir} ({(exc.strerror or str(exc)).lower()}); "
                             "check its permissions") from None
        rel = folder.relative_to(in_dir).as_posix() + "/"
        left_out[rel] = (f"cannot list this folder ({(exc.strerror or str(exc)).lower()}): nothing under it "
                         "was transcoded; check its permissions")
        order.append(rel)

    for root, dirs, names in os.walk(in_dir, onerror=unlisted):
        rootp = Path(root)
        # os.walk lists a link to a folder among the folders and, not following links,
        # never enters it: it is reported here, with the files
        linked = [d for d in dirs if (rootp / d).is_symlink()]
        dirs[:] = sorted(d for d in dirs if d not in linked and not fsutil.is_temp_name(d)
                         and (prune is None or (rootp / d).resolve() != prune))
        for name in sorted(names + linked):
            if fsutil.is_temp_name(name) or name == LOCK_NAME:
                continue
            p = rootp / name
            rel = p.relative_to(in_dir).as_posix()
            try:
                st = p.stat()
            except OSError as exc:
                left_out[rel] = _unreadable_entry(p, exc)
                order.append(rel)
                continue
            if stat_mod.S_ISREG(st.st_mode):
                files.append(rel)
                order.append(rel)
                if ids is not None:
                    ids[(st.st_dev, st.st_ino)] = rel
            else:
                left_out[rel] = _not_regular(p, st)
                order.append(rel)
    return files, left_out, order


def _link_text(p: Path) -> str:
    try:
        return f"a link to {os.readlink(p)}"
    except OSError:
        return "a link"


def _not_regular(p: Path, st: os.stat_result) -> str:
    kind = fsutil.file_kind(st.st_mode)
    if stat_mod.S_ISDIR(st.st_mode):  # only a link gets here: os.walk enters real folders
        return (f"not a regular file: {_link_text(p)}, a folder; batch does not follow links to folders (a loop "
                "or a link to a parent would repeat the walk): nothing under it was transcoded; give that folder "
                "a batch run of its own")
    what = f"{_link_text(p)}, {kind}" if p.is_symlink() else kind
    return f"not a regular file: {what}; save the audio to a file to transcode it"


def _unreadable_entry(p: Path, exc: OSError) -> str:
    if p.is_symlink():
        if exc.errno == errno.ENOENT:
            return f"not a regular file: {_link_text(p)}, which does not exist (a dangling link)"
        return f"not a regular file: {_link_text(p)} that cannot be followed ({(exc.strerror or str(exc)).lower()})"
    return f"not a regular file: cannot read what it is ({(exc.strerror or str(exc)).lower()})"


def plan_names(rels: list[str], extension: str) -> tuple[dict[str, str], list[Collision]]:
    """Output name per input (relative to OUT_DIR); see the module docstring for the rule.

    Planned before anything is probed, so it cannot depend on probe results: inputs with
    an audio extension (AUDIO_EXTENSIONS) choose first, then the others, each group in
    sorted order. ``cover.jpg`` therefore never takes ``cover.opus`` from ``cover.flac``.
    """
    by_dir: dict[str, list[str]] = {}
    for rel in rels:
        parent, _, name = rel.rpartition("/")
        by_dir.setdefault(parent, []).append(name)
    planned: dict[str, str] = {}
    collisions: list[Collision] = []
    for parent, names in by_dir.items():
        prefix = f"{parent}/" if parent else ""
        # every input's own name is reserved: a kept or copied file keeps its name
        owner = {n: n for n in names}
        if not parent:
            owner[MANIFEST_NAME] = "(the manifest)"
            owner[LOCK_NAME] = "(the lock file)"
        order = [n for n in names if _suffix(n) in AUDIO_EXTENSIONS] + [n for n in names if _suffix(n) not in AUDIO_EXTENSIONS]
        for name in order:
            stem = name[: -len(_suffix(name))] if _suffix(name) else name
            wanted = stem + extension
            # a rename must still be a valid name: its stem is cut to NAME_MAX, keeping the
            # input's extension, ".k" and the output's (a 250-byte-stem a.wav next to a.flac
            # would otherwise ask for a 259-byte a.wav.opus). ``wanted`` itself is never cut:
            # too long, it fails that file with its reason (_dest.check_name_fits).
            own = name[len(stem):]
            candidates = [wanted, _fit(stem, own + extension)] + [_fit(stem, f"{own}.{k}{extension}")
                                                                 for k in range(2, 10_000)]
            for cand in candidates:
                if owner.get(cand, name) == name:
                    break
            owner[cand] = name
            planned[prefix + name] = prefix + cand
            if cand != wanted:
                collisions.append(Collision(prefix + name, prefix + wanted, prefix + cand, prefix + owner[wanted]))
    return planned, collisions


def _fit(name: str, tail: str) -> str:
    """``name + tail``, ``name`` cut (at a character boundary) so that the whole fits NAME_MAX bytes."""
    room = fsutil.NAME_MAX_BYTES - len(tail.encode())
    return name.encode()[:room].decode("utf-8", "ignore") + tail


def _suffix(name: str) -> str:
    """Lower-case extension with the dot ('' for none; a leading dot does not count)."""
    return Path(name).suffix.lower()


# --------------------------------------------------------------------------- manifest


def foreign_files(out_dir: Path, owned: dict[str, set], also_ours: set[Path]) -> list[str]:
    """Files under OUT_DIR (relative) that are not batch's: not an output the manifest
    records, not the manifest, the lock, a report of this run or a temp file."""
    found: list[str] = []
    for root, dirs, files in os.walk(out_dir):
        dirs[:] = sorted(d for d in dirs if not fsutil.is_temp_name(d))
        for name in sorted(files):
            p = Path(root) / name
            rel = p.relative_to(out_dir).as_posix()
            if rel in (MANIFEST_NAME, LOCK_NAME) or rel in owned or fsutil.is_temp_name(name):
                continue
            if p in also_ours:
                continue
            found.append(rel)
    return found


def protected_outputs(dst: Path, cands: set[str], input_ids: dict) -> dict[str, str]:
    """Candidate outputs that are (resolve to) input files of this run."""
    out = {}
    for c in cands:
        try:
            st = os.stat(dst / c)
        except OSError:
            continue
        rel = input_ids.get((st.st_dev, st.st_ino))
        if rel is not None:
            out[c] = (f"{dst / c} is the input file {rel} (a link or shared folder): never replaced, "
                      "not even with overwrite; choose another OUT_DIR")
    return out
