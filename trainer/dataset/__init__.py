"""Balanced, ViSQOL-labelled reference/degraded pairs in the public dataset's format.

    python -m trainer build-dataset --sources DIR... --out DIR --pairs N [--seed S] [-j N]
    python -m trainer verify DIR

Output (``OUT``)::

    shard-000000.tar ...   webdataset shards; each pair is KEY.original.wav,
                           KEY.degraded.wav (1 s, mono, 44.1 kHz, 16-bit PCM),
                           KEY.score.txt ((MOS - 1) / 4) and KEY.json (provenance)
    manifest.json          shards with split and pair counts, sources per split,
                           score histogram, settings, seed and arguments
    build.log              the log
    work/                  plan, labelled pool (checkpointed per round), selection

Method, step by step (each step is checkpointed, so rerunning the same command resumes):

1. Sources: every audio file under each ``--sources`` folder; a folder made by
   ``build-corpus`` has ``manifest.jsonl`` which supplies ids, kinds and licences.
2. Split by source file, per kind, by a seeded hash: no source is in two splits.
3. Plan: each source is decoded once (ratecontrol.media) and cut into 6-s segments on a
   3-s grid; the three 1-s clips in the middle of each segment (1.5 s of context on each
   side) are scored by ``ratecontrol.windows.window_complexity`` (spectral flux x bandwidth); near-silent
   clips are dropped and the most complex ``complexity_keep`` of each source kept.
4. Pool: a job is (segment, degradation setting, channel): the whole 6-s segment is
   encoded once (``ratecontrol.media.roundtrip_info``) or low-passed, its clips are cut
   afterwards (so codec start-up is not in them), quantised to 16 bit and labelled with
   ``ratecontrol.scoring.visqol.visqol_mos`` -- the project's one labelling path.
   A share of jobs (``quiet_share``) first turns the segment down to a quiet-passage
   level (ViSQOL's labels depend on level; see ``QUIET_RMS_DBFS``). Settings are drawn
   per round with weights that favour the score bins still short of their target,
   estimated from the scores each setting has produced so far: starved bins get more of
   what fills them, and no (segment, setting) is ever used twice. Once a bin is full,
   new clips are pre-screened by the learned scorer (``PRESCREEN_MARGIN_MOS``) and only
   those that may land in a needed bin are labelled; labels already in a
   :class:`LabelCache` are reused.
5. Balance: each split keeps the same count in every 0.05-wide score bin of
   ``score_range``; shards are written atomically (tmp + rename) and skipped if present.

One module per stage::

    config.py     the pair layout, measured defaults, BuildConfig (a build's arguments),
                  check_resume() (a resumed build has the same arguments)
    settings.py   Setting, default_settings(), degrade(), lowpass()
    sources.py    Source, scan_sources(), split_sources(), plan_source(); plan_build() -> Plan
    jobs.py       Job -> run_job() -> JobResult (in a worker process), round_record()
    labels.py     pair_key(), LabelCache, export_labels()
    pool.py       score bins and BinTargets, PoolState, the pool's round checkpoints
    rounds.py     fill_pool(): choose_jobs() per round, run them, checkpoint; load_pool()
    selection.py  select(): the balanced selection from the pool
    shards.py     write_shards() (tars of WAV/score/json members), manifest()
    builder.py    build(), build_dataset(): the stages above in order (Builder), snapshots
    verify.py     verify(), build_status(), format_histogram()

The click commands are in trainer/cli/build.py.
"""
from __future__ import annotations

from trainer.dataset.builder import BuildResult, build, build_dataset
from trainer.dataset.config import (
    CLIP_OFFSETS_S,
    CLIP_SAMPLES,
    DEFAULT_QUIET_SHARE,
    DEFAULT_SCORE_RANGE,
    PRESCREEN_MARGIN_MOS,
    QUIET_RMS_DBFS,
    SAMPLE_RATE_HZ,
    SCORE_BIN_WIDTH,
    SEGMENT_HOP_S,
    SEGMENT_S,
    BuildConfig,
)
from trainer.dataset.jobs import Job, JobResult, run_job
from trainer.dataset.labels import LabelCache, export_labels, pair_key
from trainer.dataset.pool import bin_edges, score_bin
from trainer.dataset.settings import Setting, default_settings, degrade, lowpass
from trainer.dataset.sources import Source, scan_sources, split_sources
from trainer.dataset.verify import VerifyReport, build_status, format_histogram, verify

__all__ = [
    "BuildConfig",
    "BuildResult",
    "CLIP_OFFSETS_S",
    "CLIP_SAMPLES",
    "DEFAULT_QUIET_SHARE",
    "DEFAULT_SCORE_RANGE",
    "Job",
    "JobResult",
    "LabelCache",
    "PRESCREEN_MARGIN_MOS",
    "QUIET_RMS_DBFS",
    "SAMPLE_RATE_HZ",
    "SCORE_BIN_WIDTH",
    "SEGMENT_HOP_S",
    "SEGMENT_S",
    "Setting",
    "Source",
    "VerifyReport",
    "bin_edges",
    "build",
    "build_dataset",
    "build_status",
    "default_settings",
    "degrade",
    "export_labels",
    "format_histogram",
    "lowpass",
    "pair_key",
    "run_job",
    "scan_sources",
    "score_bin",
    "split_sources",
    "verify",
]
