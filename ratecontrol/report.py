"""``--report out.png``: per-window MOS over time for the chosen rung and its neighbours."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ratecontrol.errors import OutputError, UsageError
from ratecontrol.results import SearchResult

__all__ = ["render_report"]


def render_report(result: SearchResult, path: str | os.PathLike, title: str = "", n_worst: int = 5) -> Path:
    """Write a PNG: window MOS against time for the chosen rung and the probed rungs next
    to it, the target as a line, the ``n_worst`` windows of the chosen rung circled.

    Written to a temp file and renamed. Needs matplotlib (a dependency of ratecontrol).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - matplotlib is a dependency
        raise UsageError(f"--report needs matplotlib ({exc}); pip install matplotlib") from exc
    out = Path(path)
    if not out.parent.is_dir():
        raise OutputError(f"report folder {out.parent} does not exist; create it first")
    if result.chosen is None or not result.chosen.window_mos:
        raise UsageError("nothing to plot: the search scored no windows (silent input?)")
    t = np.asarray(result.window_start_s) + 0.5  # window centres
    ch = np.asarray(result.window_channel)
    by_rung = {p.rung_index: p for p in result.probes}
    c = result.chosen.rung_index
    shown = [i for i in (c - 1, c, c + 1) if i in by_rung]
    colours = {c - 1: "tab:red", c: "tab:blue", c + 1: "tab:green"}
    fig, ax = plt.subplots(figsize=(11, 4.2), dpi=110)
    for i in shown:
        p = by_rung[i]
        mos = np.asarray(p.window_mos, dtype=float)
        for k in np.unique(ch):
            sel = ch == k
            order = np.argsort(t[sel])
            ax.plot(t[sel][order], mos[sel][order], marker="o" if k == 0 else "s", ms=3, lw=0.8,
                    ls="-" if k == 0 else ":", color=colours[i],
                    label=f"{p.rung_label} ({p.pooled_mos:.2f} {result.pool})" + (f" ch{k}" if len(np.unique(ch)) > 1 else ""))
    chosen = np.asarray(result.chosen.window_mos, dtype=float)
    valid = np.where(~np.isnan(chosen))[0]
    worst = valid[np.argsort(chosen[valid])[:n_worst]]
    ax.scatter(t[worst], chosen[worst], s=120, facecolors="none", edgecolors="black", lw=1.5, zorder=5,
               label=f"worst {len(worst)} windows ({result.chosen.rung_label})")
    ax.axhline(result.target_mos, color="black", ls="--", lw=1, label=f"target {result.target_mos:g}")
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"MOS ({result.scorer})")
    lowest = min(result.target_mos, np.nanmin([np.nanmin(by_rung[i].window_mos) for i in shown]))
    ax.set_ylim(max(1.0, lowest - 0.2), 4.85)  # the target line is always in view
    ax.set_xlim(0, max(result.duration_s, float(t.max()) + 0.5))
    ax.set_title(title or f"{result.preset}: chosen {result.chosen.rung_label} for target {result.target_mos:g}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out
