"""Which rows a report shows, decided once for its tables and its plots alike: the ok
timing rows, the implementations in their order, the one representative size (and model
structure) the report quotes and the plots fix their other axes at, slices along a
dimension, and speed-ups (ratios of medians measured in the same run, of the same cell,
structure and size).

Works on the results frame alone (bench.results.load_run / load_runs), imports pandas
only inside functions and nothing that measures.
"""
from __future__ import annotations

import math

TIMING_PHASES = ("forward", "backward", "train_step")
BASELINE = "torch"  # torch eager: the article's PyTorch column, what every ratio divides by
GPU_BASELINE = "torch_cuda"  # a GPU-only run (the gpu preset): cuDNN's nn.RNN instead
SIZE_DIMS = ("batch_size", "seq_len", "input_size", "hidden_size")
SHORT = {"batch_size": "B", "seq_len": "T", "input_size": "I", "hidden_size": "H"}
CELL_ORDER = ("rnn_tanh", "lstm", "gru")  # the article's cell first: the one plots fix
STRUCTURE_DIMS = ("num_layers", "bidirectional")
PLAIN = (1, False)  # the article's model, one layer and one direction: the structure plots fix


def ok_timing(frame):
    """Rows with a measured median: status ok, a timing phase (not accuracy)."""
    return frame[(frame["status"] == "ok") & frame["phase"].isin(TIMING_PHASES)]


def case_keys(frame) -> list[str]:
    """What identifies one measured case; `run` too, so concatenated runs never pair."""
    return ((["run"] if "run" in frame.columns else [])
            + ["cell", *STRUCTURE_DIMS, *SIZE_DIMS, "dtype", "threads", "phase"])


def cells_in(frame) -> list[str]:
    """The cells the frame holds, the article's rnn_tanh first."""
    present = set(frame["cell"])
    return [c for c in CELL_ORDER if c in present] + sorted(present - set(CELL_ORDER))


def structures_in(frame) -> list[tuple[int, bool]]:
    """The (num_layers, bidirectional) the frame holds: one direction before two, fewer
    layers first, so the plain model leads."""
    present = {(int(n), bool(b)) for n, b in zip(frame["num_layers"], frame["bidirectional"])}
    return sorted(present, key=lambda s: (s[1], s[0]))


def structure_label(num_layers: int, bidirectional: bool) -> str:
    """'1-layer', '2-layer bidirectional'."""
    return f"{int(num_layers)}-layer" + (" bidirectional" if bidirectional else "")


def impl_order(frame) -> list[str]:
    """The implementations in the order they first appear (a sweep writes them in registry
    order case by case, and the report puts a run in that order first: in_run_order)."""
    return list(dict.fromkeys(frame["impl"]))


def in_run_order(frame, meta: dict):
    """The frame's rows with implementations in the order the run registered them (its
    meta.json), others after them in order of appearance; rows of one implementation keep
    their order. A resume appends rows it ran again at the end: this undoes that."""
    registered = list((meta or {}).get("implementations") or ())
    order = {name: i for i, name in enumerate(registered + [n for n in impl_order(frame)
                                                            if n not in registered])}
    return frame.sort_values("impl", key=lambda names: names.map(order), kind="stable")


def _upper_median(values):
    ordered = sorted(set(values))
    return ordered[len(ordered) // 2]


def representative(frame) -> dict:
    """The one size the report quotes and the plots fix the other axes at: float32 if run,
    the largest thread count, the plain model if run (else the simplest structure run),
    then the measured size nearest (in log distance) to the upper median of each dimension
    among the sizes that the most implementations ran. The cell is not part of it: tables
    quote every cell at this size; plots fix plot_cell()."""
    rows = ok_timing(frame)
    if rows.empty:
        return {}
    dtype = "float32" if "float32" in set(rows["dtype"]) else rows["dtype"].mode().iloc[0]
    rows = rows[rows["dtype"] == dtype]
    threads = int(rows["threads"].max())
    rows = rows[rows["threads"] == threads]
    structures = structures_in(rows)
    structure = dict(zip(STRUCTURE_DIMS, PLAIN if PLAIN in structures else structures[0]))
    rows = matching(rows, structure)
    target = {d: _upper_median(rows[d]) for d in SIZE_DIMS}
    sizes = rows.groupby(list(SIZE_DIMS))["impl"].nunique().rename("impls").reset_index()
    sizes["distance"] = [sum(abs(math.log(r[d] / target[d])) for d in SIZE_DIMS)
                         for _, r in sizes.iterrows()]
    best = sizes.sort_values(["impls", "distance"], ascending=[False, True]).iloc[0]
    return {**structure, **{d: int(best[d]) for d in SIZE_DIMS}, "dtype": dtype, "threads": threads}


def plot_cell(frame) -> str | None:
    """The cell the slice plots fix: the article's rnn_tanh when the run has it."""
    cells = cells_in(ok_timing(frame))
    return cells[0] if cells else None


def plot_rep(frame) -> dict:
    """representative() with the cell the slice plots fix (plot_cell)."""
    rep = representative(frame)
    return {**rep, "cell": plot_cell(frame)} if rep else rep


def size_label(values: dict) -> str:
    """'lstm, B=32 T=64 I=32 H=128, float32, 1 thread' for whichever keys are given; a
    structure other than the plain model's is named after the cell ('lstm, 2-layer
    bidirectional, B=32 ...'): a label without one is the plain model."""
    parts = [str(values["cell"])] if "cell" in values else []
    structure = (values.get("num_layers", PLAIN[0]), values.get("bidirectional", PLAIN[1]))
    if (int(structure[0]), bool(structure[1])) != PLAIN:
        parts.append(structure_label(*structure))
    parts.append(" ".join(f"{SHORT[d]}={values[d]}" for d in SIZE_DIMS if d in values))
    if "dtype" in values:
        parts.append(str(values["dtype"]))
    if "threads" in values:
        parts.append(f"{values['threads']} thread{'s' if values['threads'] != 1 else ''}")
    return ", ".join(p for p in parts if p)


def matching(frame, values: dict):
    mask = frame["impl"].notna()
    for key, value in values.items():
        mask &= frame[key] == value
    return frame[mask]


def slice_along(frame, dims, rep: dict, *, ok_only: bool = True):
    """(rows, fixed): the (ok timing) rows varying `dims` (one name or several) with every
    other dimension at `rep`. input_size is released when that alone leaves under 2
    points (grids where input = hidden, as DeepBench's). Empty when there are not 2."""
    dims = [dims] if isinstance(dims, str) else list(dims)
    rows = ok_timing(frame) if ok_only else frame
    for released in ((), ("input_size",)):
        fixed = {k: v for k, v in rep.items() if k not in dims and k not in released}
        sub = matching(rows, fixed)
        if len(sub.drop_duplicates(dims)) >= 2:
            return sub, fixed
    return rows.iloc[:0], fixed


def baseline_for(frame) -> str:
    """torch eager when the run has it, else torch on CUDA (a GPU run), else torch."""
    ran = set(ok_timing(frame)["impl"])
    return BASELINE if BASELINE in ran or GPU_BASELINE not in ran else GPU_BASELINE


def speedups(frame, baseline: str | None = None):
    """Per case, each other implementation's speed-up over `baseline` measured in the same
    run: baseline median / implementation median (> 1: faster than the baseline)."""
    baseline = baseline or baseline_for(frame)
    rows = ok_timing(frame).assign(noisy=lambda f: f["noisy"].eq(True))
    keys = case_keys(rows)
    base = (rows[rows["impl"] == baseline].drop_duplicates(keys, keep="last")
            [keys + ["median_s", "noisy"]]
            .rename(columns={"median_s": "baseline_median_s", "noisy": "baseline_noisy"}))
    merged = rows[rows["impl"] != baseline].merge(base, on=keys, how="inner")
    merged["speedup"] = merged["baseline_median_s"] / merged["median_s"]
    return merged[["impl", *keys, "median_s", "baseline_median_s", "speedup", "noisy",
                   "baseline_noisy"]]




def geomean_speedups(frame, baseline: str | None = None):
    """impl x phase: geometric mean of the speed-ups over every shared ok case, and n."""
    ratios = speedups(frame, baseline)
    grouped = ratios.groupby(["impl", "phase"])["speedup"]
    return grouped.apply(lambda s: math.exp(sum(math.log(v) for v in s) / len(s))).to_frame(
        "geomean").join(grouped.size().rename("n")).reset_index()
