"""PNG figures of a run, drawn from its results frame alone (bench.results.load_run) into
DIR/plots/. Each plot function returns the paths it wrote, and writes nothing when the run
lacks what it needs (one batch size only, no torch to compare with, no accuracy rows).
Which rows a figure shows comes from bench.report.selection, as for the report's tables,
so a figure and the table beside it always show the same rows.

One colour per implementation, the same in every figure and every run; hollow markers are
noisy medians (IQR / median > 10 %). matplotlib is imported inside functions, and figures
are drawn on the Agg canvas directly (no pyplot: no global state, no GUI backend).
"""
from __future__ import annotations

import math
import warnings
import zlib
from pathlib import Path

from bench.report.selection import (SHORT, SIZE_DIMS, STRUCTURE_DIMS, TIMING_PHASES, baseline_for,
                                    cells_in, impl_order, matching, ok_timing, plot_rep,
                                    representative, size_label, slice_along, speedups,
                                    structure_label, structures_in)

# Fixed palette slots: the registered and planned implementations keep their colour
# whichever subset a run holds; any other name hashes into a second palette.
PALETTE_ORDER = ("numpy", "torch", "numba", "torchscript", "torch_compile", "onnx_fp32",
                 "onnx_int8", "cupy", "onnx_native", "torch_cuda")
PHASE_MARKERS = {"forward": "o", "backward": "s", "train_step": "^"}
# heat-maps per row of the speed-up figure: 3 x 4.6 inches at 110 dpi is ~1,500 px, a page
HEATMAP_COLUMNS = 3
CELL_MARKERS = {"rnn_tanh": "o", "lstm": "D", "gru": "v"}
AXIS_LABELS = {"batch_size": "batch size B (sequences)", "seq_len": "sequence length T (steps)",
               "hidden_size": "hidden size H (units)", "input_size": "input size I (features)"}
# file-name prefix -> the report's heading for those figures (the report embeds them in
# this order; make_plots removes only files with these prefixes)
FIGURES = (("phases", "Throughput per phase (a single size)"),
           ("cells", "Cells: what the gates cost"),
           ("structures", "Structures: what more layers and a second direction cost"),
           ("throughput_", "Throughput"),
           ("speedup_", "Speed-up over the torch baseline"),
           ("pct_peak", "Percent of peak"), ("memory", "Memory"),
           ("compile_", "First call (compile) time"), ("accuracy", "Accuracy vs throughput"))
PLOT_PREFIXES = tuple(prefix for prefix, _ in FIGURES)


# ---------------------------------------------------------------- figures

def impl_color(name: str):
    import matplotlib

    if name in PALETTE_ORDER:
        return matplotlib.colormaps["tab10"](PALETTE_ORDER.index(name))
    return matplotlib.colormaps["Dark2"](zlib.crc32(name.encode()) % 8)


def _figure(panels: int = 1, width: float = 5.2, height: float = 4.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * panels, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    return fig, list(axes)


def _grid(panels: int, columns: int = 3, width: float = 4.6, height: float = 3.8):
    """Panels in rows of at most `columns` (a figure that reads at page width, not one strip
    of a dozen panels); the unused slots of the last row are hidden."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = max(1, min(columns, panels))
    rows = math.ceil(panels / columns)
    fig = Figure(figsize=(width * columns, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(rows, columns, squeeze=False).flat)
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes[:panels], axes


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _size_axis(ax, values, axis: str = "x") -> None:
    """Log base 2 (sizes are powers of two or close), ticked at the measured values."""
    from matplotlib.ticker import NullLocator

    values = sorted(set(int(v) for v in values))
    getattr(ax, f"set_{axis}scale")("log", base=2)
    getattr(ax, f"set_{axis}ticks")(values, [str(v) for v in values])
    getattr(ax, f"{axis}axis").set_minor_locator(NullLocator())


def _log_axis(ax, axis: str = "y") -> None:
    """Log scale labelled in plain numbers (30000, 0.004, not 3x10^4); minor ticks are
    labelled too when the axis spans little (all of them under 3x, at 2 and 5 under 100x)
    so that an axis never shows a single number, nor a crowd of them."""
    from matplotlib.ticker import FuncFormatter

    getattr(ax, f"set_{axis}scale")("log")
    target = getattr(ax, f"{axis}axis")

    def minor(value, _):
        low, high = target.get_view_interval()
        span = high / max(low, 1e-300)
        if value <= 0 or span > 100:
            return ""
        mantissa = round(value / 10 ** math.floor(math.log10(value)), 6)
        return f"{value:g}" if span <= 3 or mantissa in (2, 5) else ""
    target.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    target.set_minor_formatter(FuncFormatter(minor))


def _series(ax, x, y, noisy, color, marker="o", label=None) -> None:
    """A line with filled markers, hollow where the median was noisy."""
    ax.plot(x, y, color=color, label=label, alpha=0.9)
    # Two marker artists per series, not one per point: the legend's "best" placement scans
    # every artist, and a sweep has hundreds of points.
    for hollow in (False, True):
        points = [(xi, yi) for xi, yi, ni in zip(x, y, noisy) if bool(ni) == hollow]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker=marker, linestyle="", color=color, markersize=6,
                    markerfacecolor="none" if hollow else color)


def _finish(ax, xlabel: str, ylabel: str, title: str, noisy_any: bool, extra=(), size=9) -> None:
    """Labels, title, grid and a legend (the impls, `extra` proxies, the noisy marker)."""
    from matplotlib.lines import Line2D

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=size)
    ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    for handle, label in extra:
        handles.append(handle)
        labels.append(label)
    if noisy_any:
        handles.append(Line2D([], [], marker="o", linestyle="", color="grey", markerfacecolor="none"))
        labels.append("hollow: noisy (IQR/median > 10 %)")
    # loc given explicitly: matplotlib warns when an implicit "best" search is slow, and the
    # report turns plot warnings into skipped plots.
    ax.legend(handles, labels, fontsize=8, loc="best")


def _noisy(rows) -> list[bool]:
    return list(rows["noisy"].eq(True))


def plot_throughput(frame, out_dir: Path) -> list[Path]:
    """Per phase, sequences/s vs batch, hidden size and seq_len (one panel each, the
    other dimensions at the representative size)."""
    rep, names, paths = plot_rep(frame), impl_order(frame), []
    for phase in TIMING_PHASES:
        rows = frame[frame["phase"] == phase]
        panels = [(dim, *slice_along(rows, dim, rep)) for dim in ("batch_size", "hidden_size", "seq_len")]
        panels = [p for p in panels if not p[1].empty]
        if not panels:
            continue
        fig, axes = _figure(len(panels))
        for ax, (dim, sub, fixed) in zip(axes, panels):
            for name in names:
                line = sub[sub["impl"] == name].sort_values(dim)
                if len(line):
                    _series(ax, list(line[dim]), list(line["seq_per_s"]), _noisy(line),
                            impl_color(name), label=name)
            _size_axis(ax, sub[dim])
            _log_axis(ax)
            _finish(ax, AXIS_LABELS[dim], "throughput (sequences/s, log)",
                    f"vs {SHORT[dim]}; fixed {size_label(fixed)}", any(_noisy(sub)))
        fig.suptitle(f"{phase}: throughput, higher is better")
        paths.append(_save(fig, out_dir / f"throughput_{phase}.png"))
    return paths


def _heatmap(ax, table, noisy, limit: float) -> object:
    """Speed-up cells coloured on a log2 scale centred on 1 (blue: faster than torch)."""
    import numpy as np

    image = ax.imshow(np.log2(table.to_numpy(dtype=float)), cmap="RdBu", vmin=-limit,
                      vmax=limit, aspect="auto")
    for i in range(table.shape[0]):
        for j in range(table.shape[1]):
            value = table.iat[i, j]
            if not math.isnan(value):
                ax.text(j, i, f"{value:.2f}×" + ("*" if noisy.iat[i, j] else ""), ha="center",
                        va="center", fontsize=9,
                        color="white" if abs(math.log2(value)) > 0.6 * limit else "black")
    ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns])
    ax.set_yticks(range(table.shape[0]), [str(i) for i in table.index])
    ax.set_xlabel(AXIS_LABELS["hidden_size"])
    ax.set_ylabel(AXIS_LABELS["batch_size"])
    return image


def plot_speedup(frame, out_dir: Path) -> list[Path]:
    """Per phase, a heat-map per implementation of its speed-up over torch eager (ratio of
    medians from the same run) over batch size x hidden size."""
    rep, paths = plot_rep(frame), []
    ratios, baseline = speedups(frame), baseline_for(frame)
    if ratios.empty:
        return []
    for phase in TIMING_PHASES:
        cut, fixed = slice_along(ratios[ratios["phase"] == phase], ("batch_size", "hidden_size"),
                                 rep, ok_only=False)
        if cut.empty:
            continue
        others = impl_order(cut)
        limit = max(1.0, max(abs(math.log2(v)) for v in cut["speedup"]))
        fig, axes, every_slot = _grid(len(others), columns=HEATMAP_COLUMNS)
        for ax, name in zip(axes, others):
            mine = cut[cut["impl"] == name].assign(any_noisy=lambda f: f["noisy"] | f["baseline_noisy"])
            table = mine.pivot_table(index="batch_size", columns="hidden_size", values="speedup")
            noisy = mine.pivot_table(index="batch_size", columns="hidden_size",
                                     values="any_noisy", aggfunc="max").reindex_like(table)
            image = _heatmap(ax, table, noisy.fillna(0).astype(bool), limit)
            ax.set_title(f"{name} vs {baseline}", color=impl_color(name))
        bar = fig.colorbar(image, ax=every_slot, shrink=0.9)
        ticks = list(range(-math.floor(limit), math.floor(limit) + 1))
        bar.set_ticks(ticks, labels=[f"{2.0 ** t:g}×" for t in ticks])
        bar.set_label("torch median ÷ impl median (>1: faster than torch)")
        fig.suptitle(f"{phase}: speed-up over {baseline} (ratio of medians, same run)\n"
                     f"at {size_label(fixed)}; * = a noisy median in the pair", fontsize=10)
        paths.append(_save(fig, out_dir / f"speedup_{phase}.png"))
    return paths


def plot_memory(frame, out_dir: Path) -> list[Path]:
    """train_step: measured peak RSS increase vs the analytic BPTT activations, vs seq_len."""
    rows = frame[frame["phase"] == "train_step"]
    sub, fixed = slice_along(rows, "seq_len", plot_rep(rows))
    sub = sub[sub["peak_mem_bytes"] > 0]  # 0: below the page resolution, not drawable on log
    if sub["seq_len"].nunique() < 2:
        return []
    fig, (ax,) = _figure(1, width=6.4, height=4.6)
    for name in impl_order(sub):
        line = sub[sub["impl"] == name].sort_values("seq_len")
        _series(ax, list(line["seq_len"]), list(line["peak_mem_bytes"] / 2**20),
                [False] * len(line), impl_color(name), label=f"{name}: measured")
    analytic = sub.groupby("seq_len")["analytic_mem_bytes"].first().dropna()
    ax.plot(analytic.index, analytic / 2**20, "k--", marker="x", label="analytic (formula)")
    _size_axis(ax, sub["seq_len"])
    _log_axis(ax)
    _finish(ax, AXIS_LABELS["seq_len"], "memory of one train step (MiB, log)",
            "train_step memory: measured RSS peak vs analytic BPTT activations\n"
            f"fixed {size_label(fixed)}", False, size=10)
    return [_save(fig, out_dir / "memory_train_step.png")]


def plot_pct_peak(frame, out_dir: Path) -> list[Path]:
    """% of the measured GEMM peak vs work per call, every ok case, marker per phase."""
    from matplotlib.lines import Line2D

    rows = ok_timing(frame).dropna(subset=["pct_peak", "gflops", "median_s"])
    rows = rows.assign(gflop=rows["gflops"] * rows["median_s"])
    if len(rows.drop_duplicates(list(SIZE_DIMS))) < 2:  # one size: nothing to plot against
        return []
    fig, (ax,) = _figure(1, width=6.8, height=4.8)
    for name in impl_order(rows):
        mine = rows[rows["impl"] == name]
        for phase, marker in PHASE_MARKERS.items():
            pts = mine[mine["phase"] == phase]
            for x, y, noisy in zip(pts["gflop"], pts["pct_peak"], _noisy(pts)):
                ax.plot([x], [y], marker=marker, linestyle="", color=impl_color(name),
                        markerfacecolor="none" if noisy else impl_color(name))
        ax.plot([], [], color=impl_color(name), linewidth=6, label=name)
    phases = [(Line2D([], [], marker=m, linestyle="", color="grey"), p)
              for p, m in PHASE_MARKERS.items() if p in set(rows["phase"])]
    _log_axis(ax, "x")
    _log_axis(ax, "y")
    _finish(ax, "work per call (GFLOP, analytic, log)", "% of measured GEMM peak (log)",
            "compute efficiency: achieved GFLOP/s as % of this machine's GEMM peak",
            any(_noisy(rows)), phases, size=10)
    return [_save(fig, out_dir / "pct_peak.png")]


def plot_accuracy(frame, out_dir: Path) -> list[Path]:
    """Test accuracy (accuracy rows) vs train_step throughput at a representative size."""
    acc = frame[(frame["phase"] == "accuracy") & (frame["status"] == "ok")].dropna(subset=["test_accuracy"])
    train = ok_timing(frame[frame["phase"] == "train_step"])
    rep = representative(train)
    if acc.empty or not rep:
        return []
    at = matching(train, rep)  # every cell at the representative size
    model = ["impl", "cell", *STRUCTURE_DIMS]  # at the representative (plain) structure
    points = acc[[*model, "test_accuracy"]].merge(at[[*model, "seq_per_s", "noisy"]], on=model)
    if points.empty:
        return []
    several = points["cell"].nunique() > 1
    fig, (ax,) = _figure(1, width=6.2, height=4.6)
    for _, p in points.iterrows():
        color, label = impl_color(p["impl"]), (f"{p['impl']} {p['cell']}" if several else p["impl"])
        ax.plot([p["seq_per_s"]], [100 * p["test_accuracy"]], marker=CELL_MARKERS.get(p["cell"], "o"),
                markersize=9, linestyle="", color=color, label=label,
                markerfacecolor="none" if p["noisy"] is True else color)
        ax.annotate(label, (p["seq_per_s"], 100 * p["test_accuracy"]),
                    textcoords="offset points", xytext=(6, 6), fontsize=8)
    _log_axis(ax, "x")
    ax.margins(x=0.3, y=0.3)
    dataset = ", ".join(acc["dataset"].dropna().unique()) or "the data set"
    _finish(ax, "train_step throughput (sequences/s, log)", f"test accuracy on {dataset} (%)",
            f"accuracy vs training speed (up and right is better)\nthroughput at {size_label(rep)}",
            any(_noisy(points)), size=10)
    return [_save(fig, out_dir / "accuracy_vs_throughput.png")]


def plot_compile(frame, out_dir: Path) -> list[Path]:
    """Per phase, the compile cost paid for each seq_len vs the steady-state call.

    A compiler pays once per graph, on whichever size of the sweep reaches it first (and
    a dynamic-shape graph then serves later batch or hidden sizes), so the cost at a
    seq_len is the LARGEST first-call time over that seq_len's rows, not the first-call time
    at one fixed size, which is ~0 once an earlier row has compiled. The steady-state
    median at the representative size is drawn beside it for scale."""
    from matplotlib.lines import Line2D

    rep = plot_rep(frame)
    rows = frame.dropna(subset=["compile_s"])
    rows = rows[rows["phase"].isin(TIMING_PHASES) & (rows["cell"] == rep.get("cell"))]
    rows = matching(rows, {k: rep[k] for k in STRUCTURE_DIMS if k in rep})  # a model's own graphs
    if rows.empty or rows["seq_len"].nunique() < 2:
        return []
    phases = [p for p in TIMING_PHASES if (rows["phase"] == p).any()]
    fig, axes = _figure(len(phases))
    for ax, phase in zip(axes, phases):
        sub = rows[rows["phase"] == phase]
        steady, fixed = slice_along(sub, "seq_len", rep)
        for name in impl_order(sub):
            paid = sub[sub["impl"] == name].groupby("seq_len")["compile_s"].max()
            _series(ax, list(paid.index), list(paid.values), [False] * len(paid),
                    impl_color(name), label=name)
            line = steady[steady["impl"] == name].sort_values("seq_len")
            ax.plot(line["seq_len"], line["median_s"], ":", color=impl_color(name))
        _size_axis(ax, sub["seq_len"])
        _log_axis(ax)
        styles = [(Line2D([], [], color="grey"), "compile: max first call at this T"),
                  (Line2D([], [], color="grey", linestyle=":"), f"steady-state median, {size_label(fixed)}")]
        _finish(ax, AXIS_LABELS["seq_len"], "seconds (log)", phase, False, styles)
    fig.suptitle("compile cost per sequence length (largest first call over the sweep's sizes) "
                 "vs a steady-state call")
    return [_save(fig, out_dir / "compile_time.png")]


def plot_cells(frame, out_dir: Path) -> list[Path]:
    """Per phase, each implementation's median at the representative size for every cell
    (rnn_tanh, lstm, gru): the price of the gates, side by side in one run."""
    rep = representative(frame)
    rows = matching(ok_timing(frame), rep) if rep else frame.iloc[:0]
    cells = cells_in(rows) if len(rows) else []
    if len(cells) < 2:
        return []
    phases = [p for p in TIMING_PHASES if (rows["phase"] == p).any()]
    fig, axes = _figure(len(phases), width=4.6)
    for ax, phase in zip(axes, phases):
        sub = rows[rows["phase"] == phase]
        for name in impl_order(sub):
            line = (sub[sub["impl"] == name].drop_duplicates("cell", keep="last").set_index("cell")
                    .reindex(cells).dropna(subset=["median_s"]))
            xs = [cells.index(c) for c in line.index]
            _series(ax, xs, list(line["median_s"] * 1e3), _noisy(line), impl_color(name), label=name)
        ax.set_xticks(range(len(cells)), cells)
        _log_axis(ax)
        _finish(ax, "cell", "median ms per call (log)", phase, any(_noisy(sub)))
    fig.suptitle(f"time per call by cell at {size_label(rep)}, lower is better")
    return [_save(fig, out_dir / "cells.png")]


def plot_structures(frame, out_dir: Path) -> list[Path]:
    """Per phase, each implementation's median at the representative size and cell for
    every structure the run has (layers, directions): what depth and a second direction
    cost, side by side in one run."""
    rep = plot_rep(frame)
    fixed = {k: v for k, v in rep.items() if k not in STRUCTURE_DIMS}
    rows = matching(ok_timing(frame), fixed) if rep else frame.iloc[:0]
    structures = structures_in(rows) if len(rows) else []
    if len(structures) < 2:
        return []
    labels = [structure_label(*s).replace(" ", "\n") for s in structures]
    phases = [p for p in TIMING_PHASES if (rows["phase"] == p).any()]
    fig, axes = _figure(len(phases), width=4.6)
    for ax, phase in zip(axes, phases):
        sub = rows[rows["phase"] == phase]
        for name in impl_order(sub):
            mine = sub[sub["impl"] == name].drop_duplicates(list(STRUCTURE_DIMS), keep="last")
            points = [(structures.index(s), r) for s in structures
                      for _, r in matching(mine, dict(zip(STRUCTURE_DIMS, s))).iterrows()]
            _series(ax, [i for i, _ in points], [r["median_s"] * 1e3 for _, r in points],
                    [r["noisy"] is True for _, r in points], impl_color(name), label=name)
        ax.set_xticks(range(len(structures)), labels)
        _log_axis(ax)
        _finish(ax, "layers and directions", "median ms per call (log)", phase, any(_noisy(sub)))
    fig.suptitle(f"time per call by structure at {size_label(fixed)}, lower is better")
    return [_save(fig, out_dir / "structures.png")]


def single_size(frame) -> bool:
    """The run timed one size only (whatever cells, structures and dtypes): no line plot
    along a size has two points, so plot_phases draws its bars instead."""
    rows = ok_timing(frame)
    return len(rows) > 0 and len(rows.drop_duplicates(list(SIZE_DIMS))) == 1


def plot_phases(frame, out_dir: Path) -> list[Path]:
    """A run of a single size: each implementation's throughput per phase as bars, one
    panel per cell (IQR as the error bar, hatched when noisy)."""
    if not single_size(frame):
        return []
    rep = representative(frame)
    rows = matching(ok_timing(frame), {k: v for k, v in rep.items() if k not in SIZE_DIMS})
    cells, names = cells_in(rows), impl_order(rows)
    phases = [p for p in TIMING_PHASES if (rows["phase"] == p).any()]
    fig, axes, _ = _grid(len(cells), columns=3, width=max(4.6, 1.1 * len(phases) * len(names) / 3 + 2))
    width = 0.8 / max(len(names), 1)
    # bars on a log axis: the bottom at a whole decade below the lowest, the same for every
    # panel, so a bar's height compares across panels and is not an artefact of autoscaling
    lowest = float((rows["batch_size"] / rows["median_s"]).min())
    bottom = 10.0 ** math.floor(math.log10(lowest * 0.5))
    for ax, cell in zip(axes, cells):
        sub = rows[rows["cell"] == cell]
        for k, name in enumerate(names):
            mine = sub[sub["impl"] == name].drop_duplicates("phase", keep="last").set_index("phase")
            here = [p for p in phases if p in mine.index]
            if not here:
                continue
            median, iqr = mine.loc[here, "median_s"], mine.loc[here, "iqr_s"].fillna(0.0)
            batch = mine.loc[here, "batch_size"]
            throughput = batch / median  # sequences/s; the error bar spans median -+ IQR/2
            low = throughput - batch / (median + iqr / 2)
            high = batch / (median - iqr / 2).clip(lower=median * 1e-3) - throughput
            xs = [phases.index(p) + (k - (len(names) - 1) / 2) * width for p in here]
            bars = ax.bar(xs, throughput, width, color=impl_color(name), label=name,
                          yerr=[low, high], capsize=2, error_kw={"elinewidth": 0.8})
            for bar, noisy in zip(bars, mine.loc[here, "noisy"].eq(True)):
                if noisy:
                    bar.set_hatch("//")
        ax.set_xticks(range(len(phases)), phases)
        _log_axis(ax)
        ax.set_ylim(bottom=bottom)
        ax.set_title(cell, fontsize=9)
        ax.set_ylabel("throughput (sequences/s, log)")
        ax.grid(True, axis="y", which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), fontsize=8)
    fig.suptitle(f"throughput per phase at {size_label(rep)}, higher is better "
                 "(bars: median, whiskers: IQR, hatched: noisy)", fontsize=10)
    return [_save(fig, out_dir / "phases.png")]


PLOTS = (plot_cells, plot_structures, plot_phases, plot_throughput, plot_speedup, plot_pct_peak, plot_memory, plot_compile,
         plot_accuracy)


def make_plots(frame, out_dir) -> list[Path]:
    """Every plot the frame has data for, into out_dir; earlier PNGs of ours removed first
    so a report never embeds a figure from an older run. A plot that fails is a warning,
    not a lost report."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):
        if old.name.startswith(PLOT_PREFIXES):
            old.unlink()
    paths = []
    for plot in PLOTS:
        try:
            paths += plot(frame, out_dir)
        except Exception as exc:  # one odd plot must not cost the whole report
            warnings.warn(f"{plot.__name__} skipped: {type(exc).__name__}: {exc}", stacklevel=2)
    return paths
