"""What each probe encodes, how windows are cut from it, and how they are scored."""
from __future__ import annotations

import functools
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ratecontrol._malloc import trim_heap
from ratecontrol._resample import resample
from ratecontrol.cache import pcm_digest
from ratecontrol.scoring.base import Scorer
from ratecontrol.windows import MODEL_SAMPLE_RATE_HZ, WindowIndex, cut_windows, is_digital_silence
from ratecontrol.probing.sampling import CONTEXT_S
from ratecontrol.probing.track import Track


#: ffmpeg processes per sampled probe (its pieces split between them). Fixed, not
#: os.cpu_count(): the split is part of what a probe measured, so results and cache
#: keys must not depend on the machine
PROBE_PROCESSES = 2

@dataclass(frozen=True)
class Piece:
    offset: int  # where the piece starts in the probe array (track-rate samples)
    start: int  # where its scored segment starts in the track
    length: int  # scored length
    before: int  # context before the segment inside the piece
    after: int  # context after


class ProbeSource:
    """What each probe encodes, and how windows are cut from its decode."""

    def __init__(self, track: Track, segments: list[tuple[int, int]] | None, hop_s: float):
        self.track, self.hop_s = track, hop_s
        n = track.src.shape[1]
        if segments is None:
            self.pieces = (Piece(0, 0, n, 0, 0),)
            self.audio = track.src
        else:
            ctx = int(CONTEXT_S * track.rate_hz)
            pieces, chunks, off = [], [], 0
            for start, length in segments:
                b0, e1 = max(0, start - ctx), min(n, start + length + ctx)
                pieces.append(Piece(off, start, length, start - b0, e1 - start - length))
                chunks.append(track.src[:, b0:e1])
                off += e1 - b0
            # one segment (the full-track check's minutes) stays a view of the track: a
            # copy per minute, kept by the check's prepared reference, was a second copy
            # of the whole input (1.3 GB per hour)
            self.pieces = tuple(pieces)
            self.audio = chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=1)
        self.sampled = segments is not None
        #: the prepared reference per scorer (``reference``): one preparation shared by
        #: every prober of this source (codec=auto probes several presets on it) and by
        #: the full-track check, which takes these windows' rows instead of preparing
        #: them again (issue 25 lever 2)
        self._refs: dict[int, tuple[Scorer, Future]] = {}
        self._refs_lock = threading.Lock()

    @functools.cached_property
    def window_piece(self) -> np.ndarray:
        """int [W]: the piece each window of ``windows()`` comes from (windows are cut
        piece by piece, so each piece's windows are one run)."""
        rate = self.track.rate_hz
        starts = np.array([int(round(p.start * MODEL_SAMPLE_RATE_HZ / rate)) for p in self.pieces])
        return np.searchsorted(starts, self.index.start_sample, side="right") - 1

    def subset(self, pieces) -> "ProbeSource":
        """A source of only these pieces (indices into ``pieces``), each cut with the
        same codec context as here: its windows are these pieces' windows, in order."""
        return ProbeSource(self.track, [(self.pieces[k].start, self.pieces[k].length) for k in sorted(pieces)],
                           self.hop_s)

    @functools.cached_property
    def ref_silent(self) -> np.ndarray:
        """bool [W]: reference windows that are digital silence (never prepared)."""
        return is_digital_silence(self.ref_w)

    def reference(self, scorer: Scorer, background: bool = False) -> Future:
        """The scorer-prepared non-silent reference windows (a Future of the prepared
        object, or of None when all are silence), prepared once per scorer.
        ``background``: start the preparation in a thread of its own (a probe's first
        encode runs meanwhile) instead of in the first caller's thread."""
        with self._refs_lock:
            hit = self._refs.get(id(scorer))
            if hit is not None:
                return hit[1]
            fut: Future = Future()
            self._refs[id(scorer)] = (scorer, fut)  # the scorer kept alive: its id stays its own

        def run():
            try:
                live = ~self.ref_silent
                fut.set_result(scorer.prepare(self.ref_w[live]) if live.any() else None)
            except BaseException as exc:  # the waiting probe raises it
                fut.set_exception(exc)

        if background:
            ex = ThreadPoolExecutor(1)
            ex.submit(run)
            ex.shutdown(wait=False)
        else:
            run()
        return fut

    def prepared_rows(self, scorer: Scorer) -> dict[tuple[int, int], tuple[object, int]] | None:
        """``{(channel, start_sample): (prepared, row)}`` of this source's prepared
        non-silent reference windows for ``scorer`` when it has been prepared (or is being
        prepared) and the scorer can take rows out of it (``gather``), else None."""
        hit = self._refs.get(id(scorer))
        if hit is None or not hasattr(scorer, "gather"):
            return None
        try:
            prep = hit[1].result()
        except Exception:
            return None
        if prep is None:
            return None
        live = np.flatnonzero(~self.ref_silent)
        idx = self.index
        return {(int(idx.channel[j]), int(idx.start_sample[j])): (prep, r) for r, j in enumerate(live)}

    # windows and digest are computed on first use: the full-track check builds
    # sources per minute and keeps only their geometry once the reference is prepared
    @functools.cached_property
    def _ref(self) -> tuple[np.ndarray, WindowIndex]:
        return self.windows(self.audio)

    @property
    def ref_w(self) -> np.ndarray:
        return self._ref[0]

    @property
    def index(self) -> WindowIndex:
        return self._ref[1]

    def drop_windows(self) -> None:
        """Free the windows (the check's per-minute sources keep only their geometry and
        prepared reference) and give the freed heap pages back to the OS."""
        self.__dict__.pop("_ref", None)
        trim_heap()

    @functools.cached_property
    def digest(self) -> str:
        return pcm_digest(self.audio, self.track.rate_hz)

    def encode_spans(self) -> list[tuple[int, int]]:
        """Where a probe's audio is cut into independent encodes, at piece boundaries.

        Sampled pieces each carry their own codec context, so they can be encoded by
        ``PROBE_PROCESSES`` ffmpeg processes at once (about halving a probe's wall
        time on 2 cores); a whole-track probe stays one stream.
        """
        n = self.audio.shape[1]
        k = min(PROBE_PROCESSES, len(self.pieces)) if self.sampled else 1
        if k < 2:
            return [(0, n)]
        cuts = [0]
        for j in range(1, k):
            goal = j * n / k  # the piece start nearest to an equal share
            cuts.append(min((p.offset for p in self.pieces[1:]), key=lambda o: abs(o - goal)))
        cuts = sorted(set(cuts)) + [n]
        return list(zip(cuts[:-1], cuts[1:]))

    def warm_up(self, offset: int, n: int) -> np.ndarray | None:
        """Up to ``n`` samples of the track just before the encoded region of the piece
        that starts at ``offset`` in ``audio`` (the first piece of an encode span), or
        None where there is none (that region starts the track, or ``n`` is 0): what a
        span's encoder is run in on before the piece (prober.WARM_UP_S)."""
        if n <= 0:
            return None
        piece = next((p for p in self.pieces if p.offset == offset), None)
        if piece is None:
            raise ValueError(f"no piece starts at {offset} of the probe audio")
        b0 = piece.start - piece.before  # where the piece's encoded region starts in the track
        if b0 <= 0:
            return None
        return self.track.src[:, max(0, b0 - n) : b0]

    @staticmethod
    def cut_like(source: "ProbeSource", x: np.ndarray) -> tuple[np.ndarray, WindowIndex]:
        """Windows of ``x``, which must be shaped like ``source.audio``."""
        if x.shape != source.audio.shape:
            raise ValueError(f"degraded audio {x.shape} does not match the probe source {source.audio.shape}")
        return source.windows(x)

    @property
    def scored_s(self) -> float:
        return sum(p.length for p in self.pieces) / self.track.rate_hz

    def windows(self, x: np.ndarray) -> tuple[np.ndarray, WindowIndex]:
        """Windows of ``x`` (shaped like ``self.audio``) with absolute track positions."""
        rate = self.track.rate_hz
        ws, chans, starts = [], [], []
        for p in self.pieces:
            piece = x[:, p.offset : p.offset + p.before + p.length + p.after]
            # resample the whole piece (context included) so filter edges stay outside
            p44 = resample(piece, rate, MODEL_SAMPLE_RATE_HZ)
            b = int(round(p.before * MODEL_SAMPLE_RATE_HZ / rate))
            core = p44[:, b : b + int(round(p.length * MODEL_SAMPLE_RATE_HZ / rate))]
            w, idx = cut_windows(core, hop_s=self.hop_s, channels=self.track.scored_channels)  # no LFE
            ws.append(w)
            chans.append(idx.channel)
            starts.append(idx.start_sample + int(round(p.start * MODEL_SAMPLE_RATE_HZ / rate)))
        index = WindowIndex(np.concatenate(chans), np.concatenate(starts),
                            int(round(self.track.src.shape[1] * MODEL_SAMPLE_RATE_HZ / rate)))
        return np.concatenate(ws), index


def prepare_windows(scorer: Scorer, ref_w: np.ndarray):
    """(digital-silence mask, scorer-prepared non-silent reference windows or None)."""
    silent = is_digital_silence(ref_w)
    return silent, (scorer.prepare(ref_w[~silent]) if (~silent).any() else None)


def score_windows(scorer: Scorer, silent: np.ndarray, prep, ref_windows: Callable[[], np.ndarray],
                   deg_w: np.ndarray) -> np.ndarray:
    """MOS per window against a prepared reference; nan where both sides are silence.

    A window whose reference is digital silence but whose decode is not (the codec put
    something there) is scored too, against ``ref_windows()`` fetched only then.
    """
    scores = np.full(len(deg_w), np.nan)
    if prep is not None:
        scores[~silent] = scorer.score(prep, deg_w[~silent])
    odd = silent & ~is_digital_silence(deg_w)
    if odd.any():
        scores[odd] = scorer.score(scorer.prepare(ref_windows()[odd]), deg_w[odd])
    return scores

class ForwardReader:
    """``x[:, lo:hi]`` over a stream of [C, k] blocks, for ranges moving forward.

    The full-track check reads its minute-long pieces (plus 1 s of context either side)
    in order; this keeps only the blocks still needed, so a decoded hour never sits in
    memory at once.
    """

    def __init__(self, blocks, channels: int, n_samples: int):
        self._blocks = iter(blocks)
        self.shape = (channels, n_samples)
        self._buf = np.zeros((channels, 0), np.float32)
        self._start = 0  # track position of _buf[:, 0]

    def __getitem__(self, key):
        rows, cols = key
        if rows != slice(None) or cols.step not in (None, 1):
            raise IndexError("only x[:, lo:hi] is supported")
        lo, hi = cols.start or 0, min(cols.stop, self.shape[1])
        if lo < self._start:
            raise IndexError(f"range {lo}:{hi} starts before the retained data ({self._start})")
        parts, end = [self._buf], self._start + self._buf.shape[1]
        while end < hi:  # read on (through any gap) until the range is covered
            b = next(self._blocks)
            parts.append(b)
            end += b.shape[1]
        buf = np.concatenate(parts, axis=1) if len(parts) > 1 else self._buf
        # drop what no later range needs: ranges only move forward
        self._buf, self._start = buf[:, lo - self._start :], lo
        return self._buf[:, : hi - lo]
