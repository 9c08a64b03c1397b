"""The recipe: the stages in order into one folder, then its manifest and licences."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ratecontrol.errors import UsageError
from trainer.corpus._common import KINDS, CorpusConfig, CorpusSummary, read_manifest, write_jsonl
from trainer.corpus._drums import stage_drums
from trainer.corpus._music import stage_music
from trainer.corpus._packages import copyright_path, ensure_tools
from trainer.corpus._render import stage_render
from trainer.corpus._speech import stage_speech

__all__ = ["STAGES", "build_corpus"]

log = logging.getLogger("trainer.corpus")  # one logger for every stage: corpus.log gets them all

STAGES = ("music", "render", "drums", "speech")


def build_corpus(out: Path, config: CorpusConfig = CorpusConfig(), n_jobs: int = 2,
                 stages: tuple[str, ...] = STAGES) -> CorpusSummary:
    """Run the default corpus recipe into `out` (resumable); returns hours per kind."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts = out / "parts"
    parts.mkdir(exist_ok=True)
    handler = logging.FileHandler(out / "corpus.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        for stage in stages:
            if stage not in STAGES:
                raise UsageError(f"unknown corpus stage {stage!r}; choose from {', '.join(STAGES)}")
            part = parts / f"{stage}.jsonl"
            if part.exists():
                log.info("stage %s already done (%s)", stage, part)
                continue
            log.info("stage %s", stage)
            if stage == "music":
                kept, rejected = stage_music(out, config, n_jobs)
                write_jsonl(parts / "music.rejected.jsonl", rejected)
            elif stage == "render":
                ensure_tools()
                kept = stage_render(out, config, n_jobs)
            elif stage == "drums":
                kept = stage_drums(out, config)
            else:
                ensure_tools()
                kept = stage_speech(out, config)
            write_jsonl(part, kept)
        rows, rejected = [], []
        for stage in STAGES:
            if (parts / f"{stage}.jsonl").exists():
                rows += read_manifest(parts / f"{stage}.jsonl")
        if (parts / "music.rejected.jsonl").exists():
            rejected = read_manifest(parts / "music.rejected.jsonl")
        write_jsonl(out / "manifest.jsonl", rows)
        write_jsonl(out / "rejected.jsonl", rejected)
        lic_dir = out / "licences"
        lic_dir.mkdir(exist_ok=True)
        for pkg_root in sorted((out / "extract").glob("*")):
            c = copyright_path(pkg_root, pkg_root.name)
            if c and pkg_root.is_dir():
                shutil.copyfile(c, lic_dir / f"{pkg_root.name}.copyright")
        hours = {k: round(sum(r["duration_s"] for r in rows if r["kind"] == k) / 3600, 3)
                 for k in KINDS}
        summary = CorpusSummary(out_dir=out, files=len(rows), hours_by_kind=hours,
                                rejected=len(rejected))
        log.info("corpus: %d files, hours %s, %d rejected", len(rows), hours, len(rejected))
        return summary
    finally:
        log.removeHandler(handler)
        handler.close()
