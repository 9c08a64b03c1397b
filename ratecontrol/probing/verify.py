"""Write the chosen rung and score the written file (the reported score is its own)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ratecontrol import fsutil, media
from ratecontrol.cache import pcm_digest
from ratecontrol.presets import Preset
from ratecontrol.results import EncodeResult, SearchResult
from ratecontrol.scoring.pooling import pool as pool_scores
from ratecontrol.probing import steps
from ratecontrol.probing.prober import Prober
from ratecontrol.probing.session import CHECK_CHUNK_S, Session
from ratecontrol.probing.source import ForwardReader
from ratecontrol.probing.track import Track

if TYPE_CHECKING:
    from ratecontrol.probing.request import EncodeRequest, LadderRequest


#: the tag ratecontrol writes its settings under (ID3v2 TXXX:RATECONTROL, a Vorbis
#: comment RATECONTROL=...). The user's own tags, ``comment`` included, are kept.
TAG_KEY = "RATECONTROL"


def our_tags(preset: Preset, rung, result: SearchResult, track: "Track") -> dict[str, str]:
    from ratecontrol import __version__

    ours = (f"ratecontrol {__version__} preset={preset.name} rung={rung.label} "
            f"target_mos={result.target_mos:g} pool={result.pool} scorer={result.scorer}")
    if preset.format in ("ipod", "mp4", "mov"):
        # MP4 has no free-form keys without -movflags use_metadata_tags (which rewrites
        # every tag as an mdta key that many players skip): append to the comment
        theirs = (track.info.tags.get("comment") if track.info else None) or ""
        return {"comment": f"{theirs}\n{ours}" if theirs else ours}
    return {TAG_KEY: ours}


def finish_encode(req: "EncodeRequest | LadderRequest", session: Session, preset: Preset, result: SearchResult,
                  input_path: Path, out: "Path | fsutil.Destination") -> EncodeResult:
    """Write the chosen setting, then decode the written file and score it: the reported
    score is the shipped file's own; a miss steps up (a rung on a ladder, a small step
    sized from the miss on the knob: steps.step_up). On the knob, ``options.step_down``
    (default on) then tries lower writes (``_step_down``): after a sampled search whose
    first check passed well above the bar (steps.step_down; 20 Wesnoth tracks, Opus 4.3:
    bits -3.6 %, written over the whole-track crossing +8.4 % -> +4.4 %, CPU +10-21 %;
    docs/performance.md "The written file against the whole track's curve"), or between
    a check that missed and one that passed well above (steps.step_down_after_up).

    ``req``: the call (its metadata, ``options.verify``, ``t0_s``); ``session``,
    ``preset``, ``result``: the search's; ``input_path``: what was decoded (the input,
    or one of its audio streams copied out); ``out``: where the file goes.

    The output is made by the one encode path the probes took (media.StreamedEncode
    from the decoded track, ENCODER_INPUT): when a probe encoded the whole input at this
    rung its packets are stream-copied into the output with the input's tags and cover
    art (media.remux), else the track is encoded again the same way.
    """
    w = _Writer(session, session.prober(preset), preset, result, input_path, req.metadata)
    prober = w.prober
    rungs = prober.rungs
    i = result.chosen.rung_index
    notes = list(result.notes)
    checked = None
    windows = None  # the check's per-window scores of the written file
    bar = w.bar
    check = req.options.verify and not prober.all_silent
    knob = bool(result.knob_option)
    stepped_up = stepped_down = 0
    miss = None  # (setting, score) of the last check that missed
    tmp = fsutil.temp_sibling(out)
    try:
        while True:
            rung = rungs[i]
            checked, windows = w.write(i, tmp, check)
            if not check:
                break
            nxt = None if checked >= bar else steps.step_up(prober, i, bar - checked, knob, stepped_up)
            if nxt is None:
                if checked < bar:
                    notes.append(f"output check: {rung.label} scores {checked:.3f} < target even at the top "
                                 + ("setting" if knob else "rung"))
                break
            # on the knob a small step sized from the miss (steps.step_up), on a ladder a rung
            notes.append(f"output check: {rung.label} scored {checked:.3f} < {bar:g}; stepped up "
                         + (f"to {rungs[nxt].label}" if knob else "one rung"))
            miss = (i, checked)
            i, stepped_up = nxt, stepped_up + 1
        if check and knob and req.options.step_down and checked is not None and checked >= bar:
            i, checked, windows, stepped_down = _step_down(w, i, checked, windows, miss, out, tmp, notes)
        # the publish rule: a file that appeared at ``out`` during the run (another
        # encode's) is never replaced; ``out`` a plain path is our own temp file
        fsutil.publish(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return _encode_result(w, out, rungs[i], checked, windows, notes, stepped_up, req.t0_s, stepped_down)


def _step_down(w: "_Writer", i: int, checked: float, windows, miss: tuple[int, float] | None, out, tmp: Path,
               notes: list[str]):
    """After the file at knob setting ``i`` (in ``tmp``) passed its check with
    ``checked``: up to ``steps.STEP_DOWN_WRITES`` lower writes, each shipped instead (moved
    into ``tmp``) when it passes and is smaller. The first goes where the sample's curve,
    moved by the check's offset, crosses the bar (steps.step_down) when no check has
    missed yet; once one has (``miss``: a step up's, or a step down's that failed), where
    the two whole-track checks around the crossing put it (steps.step_down_after_up).
    Returns the shipped ``(i, checked, windows, stepped_down)``, ``stepped_down`` the
    number of lower files shipped."""
    bar = w.bar
    rungs = w.prober.rungs
    stepped = 0
    for _ in range(steps.STEP_DOWN_WRITES):
        if miss is None:
            if stepped:
                break  # no failure below to bracket the crossing with: the moved sample curve was used
            j = steps.step_down(w.prober, i, checked, bar)
        else:
            j = steps.step_down_after_up(w.prober, miss[0], miss[1], i, checked, bar)
        if j is None:
            break
        down = fsutil.temp_sibling(out)
        try:
            got, got_w = w.write(j, down, True)
            if got >= bar and down.stat().st_size < tmp.stat().st_size:
                notes.append(f"output check: {rungs[i].label} scored {checked:.3f}; stepped down to "
                             f"{rungs[j].label} ({got:.3f})")
                os.replace(down, tmp)
                i, checked, windows, stepped = j, got, got_w, stepped + 1
                continue
            notes.append(f"output check: {rungs[i].label} scored {checked:.3f}; {rungs[j].label} scored {got:.3f}"
                         + (f" < {bar:g}" if got < bar else " but is no smaller") + f", kept {rungs[i].label}")
            if got >= bar:
                break  # passed but larger (libopus surround): nothing below to bracket
            miss = (j, got)
        finally:
            down.unlink(missing_ok=True)
    return i, checked, windows, stepped


@dataclass(frozen=True)
class _Writer:
    """What every write of one encode's output shares (the first, a step up, a step
    down): the search's session, prober, preset and result, the decoded input and the
    caller's tags."""

    session: Session
    prober: Prober
    preset: Preset
    result: SearchResult
    input_path: Path
    metadata: dict | None

    @property
    def bar(self) -> float:
        """What a written file's check must reach: the target plus the search's margin."""
        return self.result.target_mos + self.result.margin_mos

    def write(self, i: int, tmp: Path, check: bool):
        """Write rung ``i`` to ``tmp`` and, when ``check``, score the written file:
        ``(pooled, (window_mos, window_start_s, window_channel))``, ``(None, None)``
        unchecked. A probe's own encode of the whole input is stream-copied and its scores
        reused when the file decodes to the samples it scored; else the track is encoded."""
        session, prober, preset, input_path = self.session, self.prober, self.preset, self.input_path
        track = session.track
        rung = prober.rungs[i]
        tags = {**our_tags(preset, rung, self.result, track), **(self.metadata or {})}
        checked = windows = None
        if i in prober.encodes:
            same = track.info is not None and Path(track.info.path) == Path(input_path)
            media.remux(prober.encodes[i], tmp, preset, rung, metadata=tags, tags_from=input_path,
                        tags_info=track.info if same else None, duration_s=track.duration_s)
            if check:
                n = track.src.shape[1]
                deg = media.decode_aligned(tmp, preset, track.rate_hz, track.channels, n)
                if pcm_digest(deg, track.rate_hz) == prober.decode_digests.get(i):
                    # the written file decodes to the very samples the probe scored:
                    # its scores are the file's (tests/test_oneencode.py checks both ways)
                    probe = prober.probes[i]
                    scores = np.asarray(probe.window_mos, dtype=np.float64)
                    index = prober.source.index
                    checked = pool_scores(scores[~np.isnan(scores)], session.pool)
                    windows = (scores, index.start_s(), index.channel)
                else:
                    checked, windows = score_written(session, prober, deg)
        else:
            # one ffmpeg writes the file and decodes its packets back: the check
            # scores each minute while the next is being encoded
            with media.StreamedEncode(track.src, track.rate_hz, preset, rung, tmp, metadata=tags,
                                      tags_from=input_path,
                                      block_samples=int(CHECK_CHUNK_S * track.rate_hz)) as job:
                if check:
                    checked, windows = score_written(session, prober, job.blocks())
                job.finish()
        return checked, windows


def _encode_result(w: "_Writer", out: "Path | fsutil.Destination", rung, checked: float | None, windows,
                   notes: list[str], stepped_up: int, t0: float, stepped_down: int = 0) -> EncodeResult:
    """The EncodeResult of the published file: its checked score when there is one,
    else the search's estimate (and a note saying so)."""
    track, preset, result, input_path, bar = w.session.track, w.preset, w.result, w.input_path, w.bar
    knob = bool(result.knob_option)
    if checked is None:
        notes.append("output not checked (--no-verify): the score is the search's estimate")
    final_mos = checked if checked is not None else result.chosen.pooled_mos
    met = not np.isnan(final_mos) and final_mos >= bar if checked is not None else result.reached
    result = replace(result, notes=tuple(notes))
    w_mos, w_start, w_chan = windows if windows is not None else ((), (), ())
    return EncodeResult(
        input_path=str(input_path),
        output_path=str(out),
        search=result,
        rung_label=rung.label,
        bitrate_kbps=float(rung.nominal_kbps),
        pooled_mos=final_mos,
        output_bytes=os.stat(out).st_size,
        input_bytes=input_path.stat().st_size,
        best_effort=not met,
        seconds=time.perf_counter() - t0,
        full_track_mos=checked,
        stepped_up=stepped_up,
        stepped_down=stepped_down,
        preset=preset.name,
        knob_value=preset.knob_value(rung) if knob else None,
        actual_kbps=os.stat(out).st_size * 8 / 1000 / track.duration_s if track.duration_s > 0 else None,
        verified=checked is not None,
        output_window_mos=tuple(float(v) for v in w_mos),
        output_window_start_s=tuple(float(v) for v in w_start),
        output_window_channel=tuple(int(v) for v in w_chan),
    )


def score_written(session: Session, prober: Prober, deg) -> tuple[float, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Pooled score of the written file's decode (``deg``: the aligned decode as an
    array, or as a stream of aligned blocks) against the input, and its per-window
    scores over the whole track: ``(pooled, (window_mos, window_start_s,
    window_channel))``, nan where both sides are digital silence."""
    track = session.track
    n = track.src.shape[1]
    if not prober.source.sampled:
        # the probe source is the whole track: its prepared reference windows serve
        if not isinstance(deg, np.ndarray):
            deg = np.concatenate(list(deg), axis=1)
        deg_w, index = prober.source.windows(deg)
        scores = prober.window_scores(deg_w)
        starts, chans = index.start_s(), index.channel
    else:
        if isinstance(deg, np.ndarray):
            deg = iter([deg])
        scores, starts, chans = session.full_track_scores(ForwardReader(deg, track.channels, n), with_index=True)
    return pool_scores(scores[~np.isnan(scores)], session.pool), (scores, starts, chans)
