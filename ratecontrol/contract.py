"""The audio and score contract every module shares: one definition each.

Scale (ViSQOL v3 audio mode, MOS-LQO): the scale is defined on [1, 5]; an identical
copy scores 4.732 under visqol-python 3.8 after the subsonic clean-up
(scoring/visqol.py), so no encode can score above ``MOS_CEILING``.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

from ratecontrol.errors import UsageError

__all__ = [
    "AUDIO_EXTENSIONS",
    "CONTAINER_EXTENSIONS",
    "MODEL_SAMPLE_RATE_HZ",
    "VISQOL_SAMPLE_RATE_HZ",
    "WINDOW_SAMPLES",
    "check_target_mos",
    "mos_to_score",
    "score_to_mos",
    "MOS_MIN",
    "MOS_MAX",
    "MOS_IDENTITY",
    "MOS_CEILING",
    "MODEL_MOS_MAX",
    "MIN_INPUT_S",
    "SUBSONIC_CUTOFF_HZ",
    "SUBSONIC_ORDER",
]

#: the model's convention: mono 1-s windows at 44.1 kHz, one per channel
MODEL_SAMPLE_RATE_HZ = 44_100
WINDOW_SAMPLES = MODEL_SAMPLE_RATE_HZ
#: ViSQOL audio mode's own rate: every window is resampled to it for the exact scorer
VISQOL_SAMPLE_RATE_HZ = 48_000
#: the labelling path's subsonic clean-up: a Butterworth high-pass of this order and
#: cut-off, run forward and backward (ratecontrol.scoring.visqol.resample_to_visqol)
SUBSONIC_CUTOFF_HZ = 20.0
SUBSONIC_ORDER = 2

#: extensions that promise audio (batch: such a file that ffmpeg cannot read is a
#: failure, not a non-audio file to skip; the trainer: source files to pick up)
AUDIO_EXTENSIONS = frozenset(
    ".flac .wav .wave .w64 .aif .aiff .aifc .caf .au .snd .mp3 .mp2 .mpa .m4a .m4b .aac "
    ".adts .ogg .oga .opus .spx .wma .wv .ape .tta .tak .alac .mka .ac3 .eac3 .dts .amr "
    ".dsf .dff .mpc .webm".split()
)

#: file extensions that name each container (ffmpeg's muxer name, a preset's
#: ``format``) an output may be written in; anything else is refused: Ogg data in a
#: .mp3 or MP4 in a .aac is a file players misread
CONTAINER_EXTENSIONS = {
    "ogg": frozenset({".ogg", ".oga", ".opus"}), "opus": frozenset({".opus", ".ogg", ".oga"}),
    "ipod": frozenset({".m4a", ".m4b", ".mp4"}), "mp4": frozenset({".mp4", ".m4a", ".m4b"}),
    "mov": frozenset({".mov", ".mp4", ".m4a"}), "mp3": frozenset({".mp3"}), "adts": frozenset({".aac"}),
    "matroska": frozenset({".mka", ".mkv"}), "webm": frozenset({".webm"}), "flac": frozenset({".flac"}),
    "wav": frozenset({".wav"}),
}

#: the shortest input that is scored or encoded: one full 1-s window. A shorter clip is
#: zero-padded to 1 s and the padding pulls every score to identity whatever was done to
#: the audio. Measured (bench/bench_short_clips.py, docs/scoring.md "Shortest input"; 3
#: real recordings, p10 of ``ratecontrol score``): at 0.2 s both a 3.5-kHz low-passed
#: copy and pure silence score 4.727 (learned; exact ViSQOL 4.732 for the low-pass); at
#: 0.5 s the low-pass scores 3.6-4.1 and at 0.75 s 2.2-3.1, against 1.4-2.2 from 0.95 s on
MIN_INPUT_S = 1.0

#: the MOS-LQO scale's own bounds (a target is checked against them); MOS_MIN is also the
#: learned model's lowest output, but its highest is MODEL_MOS_MAX, not MOS_MAX
MOS_MIN, MOS_MAX = 1.0, 5.0
#: what an identical copy scores (visqol-python 3.8, 48 kHz, subsonic clean-up)
MOS_IDENTITY = 4.732
#: the highest target worth searching for: identity, rounded up (a target above it is
#: refused at once instead of being searched to the top rung and failing)
MOS_CEILING = 4.75
#: the learned model's output bound, MOS = MOS_MIN + (MODEL_MOS_MAX - MOS_MIN) * sigmoid:
#: a little above identity so its sigmoid is not pinned at the top (scoring/_bounded.py's
#: bounded_mos, which trainer/train/_fit.py uses; export writes it into default.npz as ``mos_max``). Equal to
#: MOS_CEILING today, but a different promise: changing it changes the model's outputs
MODEL_MOS_MAX = 4.75


def check_target_mos(target_mos: Any) -> float:
    """A target MOS as a float, or one UsageError saying what is wrong with it."""
    if isinstance(target_mos, bool) or not isinstance(target_mos, numbers.Real):
        raise UsageError(f"target MOS must be a number, got {target_mos!r}")
    t = float(target_mos)
    if not math.isfinite(t) or not (MOS_MIN <= t <= MOS_MAX):
        raise UsageError(f"target MOS {target_mos!r} is outside the MOS scale [{MOS_MIN:g}, {MOS_MAX:g}]")
    if t > MOS_CEILING:
        raise UsageError(f"target MOS {t:g} is above what any encode can score: an identical copy scores "
                         f"~{MOS_IDENTITY:g} on the ViSQOL v3 audio scale; choose a target up to {MOS_CEILING:g}")
    return t


def mos_to_score(mos):
    """The seed dataset's score in [0, 1] for a MOS (``mos = 4 * score + 1``)."""
    return (mos - 1.0) / 4.0


def score_to_mos(score):
    """The MOS for a seed-dataset score (``mos = 4 * score + 1``)."""
    return 4.0 * score + 1.0
