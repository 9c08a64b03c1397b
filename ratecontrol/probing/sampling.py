"""Which parts of a long track the probes encode (bench/bench_sampling.py)."""
from __future__ import annotations


import numpy as np

from ratecontrol.errors import UsageError
from ratecontrol.windows import window_complexity
from ratecontrol.probing.track import Track


#: Sampled search defaults. Inputs shorter than SAMPLE_MIN_DURATION_S are probed whole.
#: Longer ones are probed on SEGMENT_S-second segments covering DEFAULT_SAMPLE_SHARE of
#: the track (at least SAMPLE_MIN_S seconds), each encoded with CONTEXT_S of audio either
#: side (Opus/AAC/MP3 settle within ~50 ms; 1 s is generous).
DEFAULT_SAMPLE_SHARE = 0.2
SAMPLE_MIN_DURATION_S = 30.0
SAMPLE_MIN_S = 12.0
#: With the default share, probes score at most this much of a track (60 segments of 3 s):
#: what a spread sample estimates well depends on its number of segments, not on the
#: share (docs/performance.md: 6-13 segments at share 0.1 chose the full track's rung in
#: 63 of 93 cases, 12-26 at 0.2 in 81, 18-39 at 0.3 in 83), and without a cap a probe of
#: an hour-long input scored 12 minutes at once (~1.3 GB of working memory, growing with
#: the input). An explicit --sample-share is taken as given.
SAMPLE_MAX_S = 180.0
SEGMENT_S = 3.0
CONTEXT_S = 1.0

SAMPLE_STRATEGIES = ("hardest", "spread", "level")
#: Which segments (bench/bench_sampling.py, docs/performance.md): against full-track
#: scores of 11 long inputs x opus/aac/mp3 x 3 targets (93 cases, share 0.2), evenly
#: spread segments chose the full track's rung in 81 cases (never 2+ rungs off),
#: loudness-stratified ones in 76, the data builder's "hardest" (complexity) segments
#: in 60 with 9 cases 2+ rungs too low: ViSQOL's worst windows are quiet passages,
#: not dense ones, and the hardest segments overestimated the track's p10 by 0.06 MOS.
DEFAULT_SAMPLE_STRATEGY = "spread"

def pick_segments(track: Track, share: float, strategy: str | None = None,
                   max_s: float | None = None) -> list[tuple[int, int]] | None:
    """``SEGMENT_S`` segments covering ``share`` of the track (at most ``max_s`` seconds),
    or None (= probe it all).

    Strategies (``bench/bench_sampling.py`` measures them against full-track scores):

    * ``hardest``: the segments with the highest mean ``window_complexity`` (the data
      builder's spectral flux x bandwidth), greedily, never overlapping.
    * ``spread``: evenly spaced over the track (systematic sampling).
    * ``level``: stratified by loudness: segments sorted by level, taken at evenly
      spaced ranks, so quiet and loud passages are probed in proportion.

    Digital silence is never picked. Returns (start, length) in samples at the track's
    rate, sorted by time.
    """
    strategy = strategy or DEFAULT_SAMPLE_STRATEGY
    if strategy not in SAMPLE_STRATEGIES:
        raise UsageError(f"unknown sampling strategy {strategy!r}; use one of {', '.join(SAMPLE_STRATEGIES)}")
    dur = track.duration_s
    if share >= 1.0 or dur < SAMPLE_MIN_DURATION_S:
        return None
    rate = track.rate_hz
    seg = int(SEGMENT_S)
    n_slots = int(dur) // seg
    want = max(SAMPLE_MIN_S, share * dur)
    if max_s is not None:
        want = min(want, max(max_s, SAMPLE_MIN_S))
    n_seg = min(int(np.ceil(want / seg)), n_slots)
    if n_seg >= n_slots * 0.9:
        return None  # nearly everything: probe the whole track
    if strategy == "hardest":
        n_sec = int(dur)
        # a minute at a time: the track may be a mapped file (DISK_DECODE_MIN_S)
        hard = np.concatenate([
            window_complexity(track.src[:, a * rate : min(a + 60, n_sec) * rate].mean(axis=0).reshape(-1, rate),
                              sample_rate_hz=rate).score
            for a in range(0, n_sec, 60)])
        seg_score = np.convolve(hard, np.ones(seg) / seg, mode="valid")  # start k covers k..k+seg-1
        taken = np.zeros(n_sec, bool)
        starts: list[int] = []
        for k in np.argsort(-seg_score, kind="stable"):
            if len(starts) >= n_seg:
                break
            if not taken[k : k + seg].any():
                taken[k : k + seg] = True
                starts.append(int(k))
        return [(k * rate, seg * rate) for k in sorted(starts)]
    # slots: the track cut into consecutive SEGMENT_S pieces; energy per slot, loudest
    # channel, 20 slots (a minute) at a time: no copy of the track (a float64 square of
    # it was 2.8 GB per hour of 48 kHz stereo), and a mapped track is read once in order
    ms = np.empty(n_slots)
    for k in range(0, n_slots, 20):
        k1 = min(n_slots, k + 20)
        block = np.ascontiguousarray(track.src[:, k * seg * rate : k1 * seg * rate]).reshape(
            track.channels, k1 - k, seg * rate)
        ms[k:k1] = np.einsum("csn,csn->cs", block, block).max(axis=0)
    live = np.flatnonzero(ms > 0)
    if live.size <= n_seg:
        return None
    if strategy == "spread":
        picks = live[np.round((np.arange(n_seg) + 0.5) * live.size / n_seg - 0.5).astype(int)]
    else:  # level
        order = live[np.argsort(ms[live], kind="stable")]
        picks = order[np.round((np.arange(n_seg) + 0.5) * live.size / n_seg - 0.5).astype(int)]
    return [(int(k) * seg * rate, seg * rate) for k in sorted(set(picks.tolist()))]
