"""The figure of one comparison: each timed pair's ratio (OTHER / BASE median) with its
bootstrap interval, on a log axis (×2 and ×0.5 equally far from 1), one panel per
implementation, coloured by verdict, the threshold band shaded. Drawn on the Agg canvas
directly (no pyplot state), like bench.report.plots.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from bench.compare.stats import FASTER, NOT_TESTED, SLOWER, UNCHANGED

PREFIX = "ratios-"
COLOURS = {SLOWER: "tab:red", FASTER: "tab:green", UNCHANGED: "tab:gray", NOT_TESTED: "black"}
NICE_TICKS = (0.1, 0.2, 0.25, 0.5, 0.67, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 10.0)
INCHES_PER_CASE = 0.2


def file_name(label: str) -> str:
    return PREFIX + re.sub(r"[^A-Za-z0-9._-]+", "_", label) + ".png"


def _panels(comparison, case_label) -> dict[str, list]:
    """impl -> [(label, timing)] of its timed pairs with a ratio, largest effect on top."""
    panels: dict[str, list] = {}
    for pair in comparison.timed:
        if pair.timing.ratio is not None:
            panels.setdefault(pair.named["impl"], []).append(
                (f"{pair.named['phase']} · {case_label(pair.named)}", pair.timing))
    for rows in panels.values():
        rows.sort(key=lambda row: abs(math.log(row[1].ratio)))
    return panels


def _ticks(ax, low: float, high: float, threshold: float) -> None:
    from matplotlib.ticker import NullLocator

    marks = (1.0, threshold, 1 / threshold)
    # a round tick this close to a threshold mark would print over it
    nice = [t for t in NICE_TICKS if all(abs(math.log(t / m)) > 0.04 for m in marks)]
    ticks = sorted({t for t in (*nice, *marks) if low <= t <= high})
    ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())


def _draw(ax, impl: str, rows: list, threshold: float, limits: tuple[float, float]) -> None:
    ax.axvspan(1 / threshold, threshold, color="tab:blue", alpha=0.08, linewidth=0)
    ax.axvline(1.0, color="black", linewidth=0.8)
    for y, (_, timing) in enumerate(rows):
        colour = COLOURS[timing.verdict]
        if timing.low is not None:
            ax.plot([timing.low, timing.high], [y, y], color=colour, linewidth=2, alpha=0.7)
        ax.plot([timing.ratio], [y], marker="o", linestyle="", color=colour, markersize=5,
                markerfacecolor="none" if timing.verdict == NOT_TESTED else colour)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=7)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xscale("log")
    ax.set_xlim(*limits)
    _ticks(ax, *limits, threshold)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(impl, fontsize=9, loc="left")


def _limits(panels: dict, threshold: float) -> tuple[float, float]:
    values = [v for rows in panels.values() for _, t in rows for v in (t.ratio, t.low, t.high) if v]
    low, high = min([*values, 1 / threshold]), max([*values, threshold])
    return low / 1.05, high * 1.05


def plot_comparison(comparison, out_dir: Path, case_label) -> Path | None:
    """plots/ratios-<OTHER>.png, or None when no pair has a ratio."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    panels = _panels(comparison, case_label)
    if not panels:
        return None
    threshold = comparison.settings.threshold
    sizes = [len(rows) for rows in panels.values()]
    fig = Figure(figsize=(10, 1.4 + INCHES_PER_CASE * sum(sizes) + 0.5 * len(sizes)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=[n + 1.5 for n in sizes])[:, 0]
    limits = _limits(panels, threshold)
    for ax, (impl, rows) in zip(axes, panels.items()):
        _draw(ax, impl, rows, threshold, limits)
    axes[-1].set_xlabel(f"ratio = {comparison.other.label} median / {comparison.base.label} median "
                        "(> 1: slower),\nwith its bootstrap interval")
    handles = [Line2D([], [], marker="o", linestyle="-", color=COLOURS[v], label=v)
               for v in (SLOWER, FASTER, UNCHANGED)]
    handles += [Line2D([], [], marker="o", linestyle="", color="black", markerfacecolor="none",
                       label=NOT_TESTED),
                Patch(color="tab:blue", alpha=0.15, label=f"within ×{threshold:g} (threshold)")]
    # loc given explicitly: an implicit "best" search is slow over many artists, and warns
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), fontsize=8)
    path = Path(out_dir) / file_name(comparison.other.label)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")  # long case labels: nothing cut off
    return path
