"""``--report out.png``: per-window MOS over time.

With the finished encode (``encode_result``) the plot shows the shipped rung's own
window scores over the whole track (the output check's), one line per channel, and
the probed rungs' scores on the segments they scored, shaded when the search sampled
the track; lines are never drawn across the gaps between probed segments.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ratecontrol import fsutil
from ratecontrol.errors import UsageError
from ratecontrol.results import EncodeResult, SearchResult
from ratecontrol.windows import MODEL_SAMPLE_RATE_HZ, WINDOW_SAMPLES

__all__ = ["render_report", "report_path_for", "channel_names", "gap_broken_lines", "segment_spans"]

#: a window is drawn this far (s) right of its start: its centre
_HALF_WINDOW_S = 0.5 * WINDOW_SAMPLES / MODEL_SAMPLE_RATE_HZ


def report_path_for(report: str | os.PathLike, target_mos: float) -> Path:
    """The report of one target of a ladder: ``plot.png`` -> ``plot.mos4.2.png``."""
    p = Path(report)
    suffix = p.suffix or ".png"
    return p.with_name(f"{p.stem if p.suffix else p.name}.mos{target_mos:g}{suffix}")


def channel_names(n_channels: int, layout: tuple[str, ...] | None = None) -> list[str]:
    """Names of the plotted channels: the layout's own when given, L/R for stereo,
    "mono" for one channel, "ch N" otherwise."""
    if layout and len(layout) == n_channels:
        return list(layout)
    if n_channels == 1:
        return ["mono"]
    if n_channels == 2:
        return ["L", "R"]
    return [f"ch {k}" for k in range(n_channels)]


def _hop_s(starts: np.ndarray) -> float:
    """The windows' hop: the commonest step between consecutive starts of a channel."""
    d = np.diff(np.unique(starts))
    d = d[d > 1e-9]
    if not d.size:
        return 1.0
    return float(np.median(d))


def gap_broken_lines(start_s, channel, mos, hop_s: float | None = None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per channel, (x, y) arrays for one matplotlib line each: x the window centres in
    time order, y the scores, with a nan inserted wherever two consecutive windows are
    more than one hop apart (a gap between probed segments), so no line crosses it.

    ``hop_s``: the windows' hop; None infers it from the starts (the median step).
    """
    t = np.asarray(start_s, dtype=float)
    ch = np.asarray(channel, dtype=int)
    y = np.asarray(mos, dtype=float)
    if not (len(t) == len(ch) == len(y)):
        raise ValueError(f"start_s, channel and mos differ in length ({len(t)}, {len(ch)}, {len(y)})")
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for k in np.unique(ch):
        sel = ch == k
        order = np.argsort(t[sel], kind="stable")
        tk, yk = t[sel][order], y[sel][order]
        hop = _hop_s(tk) if hop_s is None else float(hop_s)
        if len(tk) > 1:
            # more than one hop apart (with slack for rounding to samples): a gap
            cut = np.where(np.diff(tk) > hop * 1.01 + 1e-6)[0] + 1
            tk = np.insert(tk, cut, np.nan)
            yk = np.insert(yk, cut, np.nan)
        out[int(k)] = (tk + _HALF_WINDOW_S, yk)
    return out


def segment_spans(start_s, hop_s: float | None = None) -> list[tuple[float, float]]:
    """The stretches of the track the windows cover, as (start, end) in s: one per
    run of windows no more than one hop apart (the probed segments)."""
    t = np.unique(np.asarray(start_s, dtype=float))
    if not t.size:
        return []
    hop = _hop_s(t) if hop_s is None else float(hop_s)
    window_s = WINDOW_SAMPLES / MODEL_SAMPLE_RATE_HZ
    cut = np.where(np.diff(t) > hop * 1.01 + 1e-6)[0] + 1
    return [(float(run[0]), float(run[-1] + window_s)) for run in np.split(t, cut)]


def _pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - matplotlib is a dependency
        raise UsageError(f"the report plot needs matplotlib ({exc}); pip install matplotlib") from exc
    return plt


def _neighbours(result: SearchResult) -> tuple:
    """The indexes of the probes drawn beside the chosen one: (below, chosen, above)."""
    c = result.chosen.rung_index
    below, above = c - 1, c + 1
    if result.knob_option:
        # a knob search's settings are indexed in probe order: the neighbours are the
        # probes nearest below and above in bits
        kb = result.chosen.bitrate_kbps
        below = max((p for p in result.probes if p.bitrate_kbps < kb), key=lambda p: p.bitrate_kbps,
                    default=None)
        above = min((p for p in result.probes if p.bitrate_kbps > kb), key=lambda p: p.bitrate_kbps,
                    default=None)
        below, above = (below.rung_index if below else None), (above.rung_index if above else None)
    return below, c, above


#: line styles of the channels, in order (a channel's colour is its rung's)
_STYLES = ["-", ":", "-.", "--"]


def _plot_lines(ax, result: SearchResult, enc: EncodeResult | None, shipped: bool, names: list[str]) -> list[float]:
    """The shaded probed segments, the shipped rung's lines and the probes' lines; the
    lowest score of each line (with the target: the y axis keeps them all in view)."""
    t = np.asarray(result.window_start_s, dtype=float)
    ch = np.asarray(result.window_channel, dtype=int)
    hop = _hop_s(t)
    by_rung = {p.rung_index: p for p in result.probes}
    below, c, above = _neighbours(result)
    shown = [i for i in (below, c, above) if i in by_rung]
    colours = {below: "tab:red", c: "tab:blue", above: "tab:green"}
    lows = [result.target_mos]
    if result.sampled_s is not None:
        for k, (a, b) in enumerate(segment_spans(t, hop)):
            ax.axvspan(a, b, color="0.85", alpha=0.5, lw=0, zorder=0,
                       label=f"probed segments ({result.sampled_s:.0f} s of {result.duration_s:.0f} s)" if k == 0 else None)
    if shipped:
        lines = gap_broken_lines(enc.output_window_start_s, enc.output_window_channel, enc.output_window_mos)
        for k, (x, y) in lines.items():
            ax.plot(x, y, lw=1.1, ls=_STYLES[k % len(_STYLES)], color="black" if k == 0 else "0.35", zorder=3,
                    label=f"shipped {enc.rung_label}, whole track ({enc.pooled_mos:.2f} {result.pool})"
                          + (f" {names[k]}" if len(lines) > 1 else ""))
            if np.isfinite(y).any():
                lows.append(float(np.nanmin(y)))
    for i in shown:
        p = by_rung[i]
        lines = gap_broken_lines(t, ch, p.window_mos, hop)
        for k, (x, y) in lines.items():
            ax.plot(x, y, marker="o" if k == 0 else "s", ms=3, lw=0.8, ls=_STYLES[k % len(_STYLES)], color=colours[i],
                    zorder=4, label=f"probe {p.rung_label} ({p.pooled_mos:.2f} {result.pool})"
                                    + (f" {names[k]}" if len(lines) > 1 else ""))
            if np.isfinite(y).any():
                lows.append(float(np.nanmin(y)))
    return lows


def _circle_worst(ax, result: SearchResult, enc: EncodeResult | None, shipped: bool, n_worst: int) -> None:
    """Circle the ``n_worst`` windows of the shipped rung (else of the chosen probe)."""
    t = np.asarray(result.window_start_s, dtype=float)
    if shipped:
        w_mos = np.asarray(enc.output_window_mos, dtype=float)
        w_t = np.asarray(enc.output_window_start_s, dtype=float) + _HALF_WINDOW_S
        worst_of = f"shipped {enc.rung_label}"
    else:
        w_mos = np.asarray(result.chosen.window_mos, dtype=float)
        w_t = t + _HALF_WINDOW_S
        worst_of = result.chosen.rung_label
    valid = np.where(~np.isnan(w_mos))[0]
    worst = valid[np.argsort(w_mos[valid], kind="stable")[:n_worst]]
    if worst.size:
        ax.scatter(w_t[worst], w_mos[worst], s=120, facecolors="none", edgecolors="black", lw=1.5, zorder=5,
                   label=f"worst {len(worst)} windows ({worst_of})")


def _finish_axes(ax, result: SearchResult, enc: EncodeResult | None, shipped: bool, lows: list[float],
                 title: str | None) -> None:
    """The target lines, the axes' labels and limits, the title, grid and legend."""
    t = np.asarray(result.window_start_s, dtype=float)
    ax.axhline(result.target_mos, color="black", ls="--", lw=1, label=f"target {result.target_mos:g}")
    if result.margin_mos:
        ax.axhline(result.target_mos + result.margin_mos, color="tab:purple", ls="--", lw=0.8,
                   label=f"target + margin {result.target_mos + result.margin_mos:g}")
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"MOS ({result.scorer})")
    ax.set_ylim(max(1.0, min(lows) - 0.2), 4.85)  # the target line is always in view
    t_end = max([result.duration_s, float(t.max()) + 2 * _HALF_WINDOW_S]
                + ([float(max(enc.output_window_start_s)) + 2 * _HALF_WINDOW_S] if shipped else []))
    ax.set_xlim(0, t_end)
    ax.set_title(_title(result, enc) if title is None else title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _title(result: SearchResult, enc: EncodeResult | None) -> str:
    if enc is None:
        return f"{result.preset}: chosen {result.chosen.rung_label} for target {result.target_mos:g}"
    steps = [f"stepped up {enc.stepped_up}"] if enc.stepped_up else []
    steps += ["stepped down"] if enc.stepped_down else []
    step = f" ({', '.join(steps)})" if steps else ""
    return (f"{Path(enc.input_path).name}: {result.preset} {enc.rung_label}{step} for target "
            f"{result.target_mos:g}, {result.pool} MOS {enc.pooled_mos:.2f}"
            + ("" if enc.verified else " (search estimate, not verified)"))


def render_report(result: SearchResult, path: "str | os.PathLike | fsutil.Destination", encode_result: EncodeResult | None = None,
                  title: str | None = None, n_worst: int = 5) -> Path:
    """Write a PNG: window MOS against time.

    Without ``encode_result``: the chosen rung and the probed rungs next to it on the
    windows the search scored. With it: also the shipped rung's whole-track window
    scores (the output check's), and the input's file name in the title. The target
    (and target + margin) are lines, the ``n_worst`` windows of the shipped rung (else
    of the chosen probe) are circled, probed segments of a sampled search are shaded.

    Written to a temp file and renamed. Needs matplotlib (a dependency of ratecontrol).
    """
    plt = _pyplot()
    # a Destination (encode's --report, checked before the search) is kept as claimed; a
    # plain path is checked where every output is, and the caller's to replace
    out = fsutil.check_output_path(path, what="report")
    if result.chosen is None or not result.chosen.window_mos:
        raise UsageError("nothing to plot: the search scored no windows (silent input?)")
    enc = encode_result
    shipped = enc is not None and len(enc.output_window_mos) > 0
    ch = np.asarray(result.window_channel, dtype=int)
    n_ch = int(max(ch.max(initial=0), max(enc.output_window_channel, default=0) if shipped else 0)) + 1
    names = channel_names(max(n_ch, result.channels))
    fig, ax = plt.subplots(figsize=(13, 4.4), dpi=110)
    lows = _plot_lines(ax, result, enc, shipped, names)
    _circle_worst(ax, result, enc, shipped, n_worst)
    _finish_axes(ax, result, enc, shipped, lows, title)
    fig.tight_layout()
    try:
        with fsutil.atomic_output(out) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return out.path
