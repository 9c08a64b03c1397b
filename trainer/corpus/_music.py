"""Stage music: game music from Debian packages, gated on length, rate, bitrate and
bandwidth; duplicates dropped."""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import zipfile
from pathlib import Path

from ratecontrol import fsutil
from trainer.corpus._common import (CORPUS_EXTENSIONS, CorpusConfig, SourceRecord, read_audio,
                                    spectral_bandwidth)
from trainer.corpus._packages import copyright_path, fetch_package, licence_for

__all__ = ["MUSIC_PACKAGES", "stage_music"]

log = logging.getLogger("trainer.corpus")  # one logger for every stage: corpus.log gets them all

# Debian bookworm packages with game music (all Vorbis). Sizes (apt-cache show, 2024):
# 36 MB (drascula) .. 228 MB (freedroidrpg); 1.3 GB in all.
MUSIC_PACKAGES = (
    "ufoai-music", "wesnoth-1.16-music", "hedgewars-data", "nexuiz-music",
    "supertux-data", "singularity-music", "colobot-common-sounds", "hyperrogue-music",
    "flare-game", "freedroidrpg-data", "drascula-music",
)


def _measure_music(path: Path, cfg: CorpusConfig) -> dict:
    """Measure one candidate music file; returns a row with keep/reason."""
    import soundfile as sf

    info = sf.info(str(path))
    row = {"duration_s": round(float(info.duration), 3), "sample_rate_hz": int(info.samplerate),
           "channels": int(info.channels)}
    row["bitrate_kbps"] = round(path.stat().st_size * 8 / max(info.duration, 1e-3) / 1000, 1)
    # stereo-equivalent: a mono file at 64 kbps is as generous as stereo at 128
    eq_kbps = row["bitrate_kbps"] * (2 / info.channels if info.channels == 1 else 1)
    if info.duration < cfg.min_music_duration_s:
        return {**row, "keep": False, "reason": f"shorter than {cfg.min_music_duration_s} s"}
    if info.samplerate < 44100:
        return {**row, "keep": False, "reason": "sample rate < 44.1 kHz"}
    audio, sr = read_audio(path)
    bw, roll = spectral_bandwidth(audio, sr)
    row.update(bandwidth_995_hz=round(bw), rolloff_60db_hz=round(roll))
    if eq_kbps < cfg.min_bitrate_kbps:
        return {**row, "keep": False, "reason": f"bitrate < {cfg.min_bitrate_kbps} kbps"}
    if roll < cfg.min_rolloff_hz:
        return {**row, "keep": False, "reason": f"rolloff_60db < {cfg.min_rolloff_hz} Hz"}
    return {**row, "keep": True, "reason": ""}


def stage_music(out: Path, cfg: CorpusConfig, n_jobs: int) -> tuple[list[dict], list[dict]]:
    from joblib import Parallel, delayed

    candidates = []  # (package, installed relpath, file to measure)
    for pkg in MUSIC_PACKAGES:
        root = fetch_package(pkg, out)
        for f in sorted(root.rglob("*")):
            if f.is_symlink() or not f.is_file():
                continue
            rel = str(f.relative_to(root))
            if f.suffix.lower() in CORPUS_EXTENSIONS:
                candidates.append((pkg, rel, f))
            elif f.suffix.lower() == ".pk3":  # zip archives (ufoai, nexuiz)
                unz = out / "extract" / f"{pkg}.pk3" / f.stem
                with zipfile.ZipFile(f) as z:
                    for m in z.namelist():
                        if Path(m).suffix.lower() in CORPUS_EXTENSIONS:
                            dst = unz / m
                            if not dst.exists():
                                dst.parent.mkdir(parents=True, exist_ok=True)
                                fsutil.atomic_write(dst, z.read(m))
                            candidates.append((pkg, rel + "/" + m, dst))
    log.info("music: %d candidate files", len(candidates))
    rows = Parallel(n_jobs=n_jobs)(delayed(_measure_music)(f, cfg) for _, _, f in candidates)
    kept, rejected, seen = [], [], set()
    for (pkg, rel, f), row in zip(candidates, rows):
        digest = fsutil.file_digest(f, "sha1")
        base = {"package": pkg, "installed_path": rel, **row}
        if not row["keep"]:
            rejected.append({**base, "kind": "music"})
            continue
        if digest in seen:
            rejected.append({**base, "kind": "music", "keep": False, "reason": "duplicate"})
            continue
        seen.add(digest)
        cpath = copyright_path(out / "extract" / pkg, pkg)
        ctext = cpath.read_text(errors="replace") if cpath else None
        dst = out / "audio" / "music" / pkg / rel.replace("/", "__")
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(f, dst)
            except OSError:
                shutil.copyfile(f, dst)
        kept.append(dataclasses.asdict(SourceRecord(
            id=f"music/{pkg}/{Path(rel).stem}-{digest[:8]}", path=str(dst.relative_to(out)),
            kind="music", package=pkg, licence=licence_for(pkg, ctext, rel),
            duration_s=row["duration_s"], sample_rate_hz=row["sample_rate_hz"],
            channels=row["channels"], bitrate_kbps=row["bitrate_kbps"],
            bandwidth_995_hz=row["bandwidth_995_hz"], rolloff_60db_hz=row["rolloff_60db_hz"],
            sha1=digest, note="Vorbis from " + rel)))
    return kept, rejected
