"""Debian packages: the tools the renders need, fetching and unpacking packages, and the
licence of each installed file."""
from __future__ import annotations

import fnmatch
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from ratecontrol.errors import DatasetError, UsageError

__all__ = ["HAND_LICENCES", "run_logged", "ensure_tools", "fetch_package", "copyright_path", "licence_for"]

log = logging.getLogger("trainer.corpus")  # one logger for every stage: corpus.log gets them all

# Packages whose copyright file is not machine-readable (DEP-5), read by hand (bookworm).
HAND_LICENCES = {
    "nexuiz-music": "GPL-2+",  # "either version 2 of the License, or (at your option) any later"
    "singularity-music": "CC-BY-SA",  # full Creative Commons BY-SA text under "License"
    "wesnoth-1.16-music": "GPL-2+",
    "fluid-soundfont-gm": "MIT",  # "I hereby release Fluid under the MIT license"
    "musescore-general-soundfont-lossless": "MIT",
    "espeak-ng": "GPL-3+",
}


def run_logged(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    log.info("run: %s", " ".join(cmd))
    return subprocess.run(cmd, check=False, capture_output=True, text=True, **kw)


def ensure_tools() -> None:
    """fluidsynth + espeak-ng from Debian (installed once; the recipe runs as root on Debian)."""
    missing = [t for t in ("fluidsynth", "espeak-ng") if shutil.which(t) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise UsageError(f"build-corpus needs {', '.join(missing)}: install them "
                         f"(Debian: apt-get install {' '.join(missing)}) and rerun")
    r = run_logged(["apt-get", "install", "-y", "-q", *missing])
    if r.returncode != 0:
        run_logged(["apt-get", "update", "-q"])
        r = run_logged(["apt-get", "install", "-y", "-q", *missing])
    if r.returncode != 0:
        raise UsageError(f"apt-get install {' '.join(missing)} failed: {r.stderr.strip()[-300:]}")


def fetch_package(name: str, out: Path) -> Path:
    """`apt-get download` NAME into out/debs and unpack it into out/extract/NAME (cached)."""
    target = out / "extract" / name
    if (target / ".done").exists():
        return target
    debs = out / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{name}_*.deb"))
    if not found:
        r = run_logged(["apt-get", "download", name], cwd=debs)
        if r.returncode != 0:  # package lists missing or stale
            run_logged(["apt-get", "update", "-q"])
            r = run_logged(["apt-get", "download", name], cwd=debs)
        found = sorted(debs.glob(f"{name}_*.deb"))
        if r.returncode != 0 or not found:
            raise DatasetError(f"apt-get download {name} failed: {r.stderr.strip()[-300:]}; "
                               "check the package name (apt-cache policy) and the network")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    r = run_logged(["dpkg-deb", "-x", str(found[-1]), str(target)])
    if r.returncode != 0:
        raise DatasetError(f"dpkg-deb -x {found[-1]} failed: {r.stderr.strip()[-300:]}")
    (target / ".done").write_text(found[-1].name)
    return target


def copyright_path(pkg_root: Path, name: str) -> Path | None:
    p = pkg_root / "usr/share/doc" / name / "copyright"
    if p.exists():
        return p
    hits = sorted(pkg_root.glob("usr/share/doc/*/copyright"))
    return hits[0] if hits else None


def _dep5_stanzas(text: str) -> list[tuple[list[str], str]]:
    """[(file patterns, licence short name)] of a DEP-5 copyright file, in file order."""
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        m_files = re.search(r"^Files:(.*(?:\n[ \t]+.*)*)", block, re.M)
        m_lic = re.search(r"^License:[ \t]*(\S.*)$", block, re.M)
        if m_files and m_lic:
            stanzas.append((m_files.group(1).split(), m_lic.group(1).strip()))
    return stanzas


def licence_for(package: str, copyright_text: str | None, installed_path: str) -> str:
    """Best licence for one installed file: the last DEP-5 stanza whose Files: pattern
    matches (patterns name source paths, so a pattern's trailing components are matched
    against the end of the installed path), else the hand table, else 'see copyright'."""
    if package in HAND_LICENCES:
        return HAND_LICENCES[package]
    if not copyright_text:
        return "unknown (no copyright file)"
    best = None
    for patterns, lic in _dep5_stanzas(copyright_text):
        for pat in patterns:
            parts = pat.split("/")
            tails = ["/".join(parts[k:]) for k in range(len(parts))
                     if parts[-1] != "*" or k == 0]
            if pat == "*" or any(fnmatch.fnmatch(installed_path, "*/" + t)
                                 or fnmatch.fnmatch(installed_path, t) for t in tails):
                best = lic
                break
    return best or "see copyright"
