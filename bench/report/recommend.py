"""The recommendation table: for each workload users have, the implementation this run
measured best, its margin over the runner-up, the sizes that is based on, and beside it the
source article's suggestion and whether the measurement agrees.

Derived from the run's own rows only (results.csv, and footprint.csv when the run measured
footprints), so it is right for the machine the run was made on; a workload the run has
no rows for says "not measured in this run". A margin under the noise threshold is called
a tie, not a win: two medians of one run differ by that much from noise alone.
"""
from __future__ import annotations

import math

from bench.report.selection import (SIZE_DIMS, cells_in, matching, ok_timing, representative,
                                    size_label)

NOT_MEASURED = "not measured in this run"
# below this ratio of medians a "best" is a tie (the same 10 % as `rnnbench compare`'s
# default threshold and the report's noisy flag)
TIE_RATIO = 1.10
# int8 keeps accuracy when it is within this of fp32's test accuracy, in every cell
INT8_ACCURACY_POINTS = 1.0

# What the article suggests for each workload (bench seed: SUMMARY.md), and the
# implementations that would make it right.
ARTICLE = {
    "latency": ("NumPy, \"lightweight\", for embedded deployment; ONNX export for inference",
                {"numpy", "onnx_fp32", "onnx_int8", "onnx_native"}),
    "batch": ("PyTorch (\"automatic parallelism\"), batch processing", {"torch", "torchscript", "torch_compile"}),
    "training": ("PyTorch for fast prototyping (autograd)", {"torch", "torchscript", "torch_compile"}),
    "int8": ("int8 quantisation for deployment", {"onnx_int8"}),
    "install": ("NumPy, \"lightweight\", for embedded deployment", {"numpy"}),
    "start": ("NumPy, \"lightweight\", for embedded deployment", {"numpy"}),
    "gpu": ("CuPy in place of NumPy; PyTorch's automatic GPU acceleration",
            {"cupy", "torch_cuda", "torch_compile_cuda"}),
}
COLUMNS = ("workload", "measured best", "runner-up (margin)", "based on", "the article suggests",
           "agrees?")


def _geomean(values) -> float:
    values = [float(v) for v in values]
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _times(multiple: float) -> str:
    return f"{multiple:.2f}×"


def _ranking(rows):
    """[(impl, score)] fastest first: the geometric mean of each implementation's medians
    over the cells, among implementations that ran every cell of `rows` (a partial one
    would be scored on easier cells)."""
    table = rows.pivot_table(index="impl", columns="cell", values="median_s", aggfunc="last")
    complete = table.dropna()
    return sorted(((impl, _geomean(row)) for impl, row in complete.iterrows()), key=lambda kv: kv[1])


def _per_cell(rows) -> str:
    """'rnn_tanh numba, lstm numba, gru torch': each cell's own fastest (when cells differ)."""
    parts = []
    for cell in cells_in(rows):
        mine = rows[rows["cell"] == cell].sort_values("median_s")
        parts.append(f"{cell} {mine['impl'].iloc[0]}")
    return ", ".join(parts)


def _row(workload: str, key: str, best: str, runner_up: str, based_on: str, agrees: str) -> dict:
    return dict(zip(COLUMNS, (workload, best, runner_up, based_on, ARTICLE[key][0], agrees)))


def _missing(workload: str, key: str, why: str = "") -> dict:
    return _row(workload, key, NOT_MEASURED + (f" ({why})" if why else ""), "—", "—", "—")


def _verdict(key: str, winner: str, tie_with: list[str]) -> str:
    suggested = ARTICLE[key][1]
    if winner in suggested:
        return "yes"
    if any(name in suggested for name in tie_with):
        return "partly: tied with a suggested one"
    return "no"


def _ranked_row(workload: str, key: str, rows, based_on: str) -> dict:
    ranking = _ranking(rows)
    if not ranking:
        return _missing(workload, key, "no implementation ran every cell there")
    (best, score), rest = ranking[0], ranking[1:]
    if not rest:
        return _row(workload, key, best, "— (the only one)", based_on, _verdict(key, best, []))
    ties = [name for name, other in rest if other / score < TIE_RATIO]
    runner, other = rest[0]
    margin = f"{runner} ({_times(other / score)} slower)"
    if ties:
        margin += f"; within ×{TIE_RATIO:g} (a tie): {', '.join(ties)}"
    cells = cells_in(rows)
    if len(cells) > 1:
        based_on += f"; geometric mean over {', '.join(cells)} (fastest per cell: {_per_cell(rows)})"
    return _row(workload, key, best, margin, based_on, _verdict(key, best, ties))


def _timed(frame, rep: dict, phase: str, batch: int, cpu: bool = True):
    fixed = {k: v for k, v in rep.items() if k != "batch_size"}
    rows = matching(ok_timing(frame), {**fixed, "phase": phase, "batch_size": batch})
    on_cpu = rows["device"].fillna("cpu").eq("cpu")
    return rows[on_cpu] if cpu else rows[~on_cpu]


def _batches(frame, rep: dict, phase: str) -> list[int]:
    fixed = {k: v for k, v in rep.items() if k != "batch_size"}
    return sorted(set(matching(ok_timing(frame), {**fixed, "phase": phase})["batch_size"]))


def latency_row(frame, rep: dict) -> dict:
    name = "batch-1 latency (inference)"
    if 1 not in _batches(frame, rep, "forward"):
        return _missing(name, "latency", "no forward rows at B=1")
    rows = _timed(frame, rep, "forward", 1)
    return _ranked_row(name, "latency", rows, f"forward median, {size_label({**rep, 'batch_size': 1})}")


def throughput_row(frame, rep: dict, phase: str, name: str, key: str) -> dict:
    batches = [b for b in _batches(frame, rep, phase) if b > 1]
    if not batches:
        return _missing(name, key, f"no {phase} rows at a batch above 1")
    batch = batches[-1]
    rows = _timed(frame, rep, phase, batch)
    return _ranked_row(name, key, rows, f"{phase} sequences/s, {size_label({**rep, 'batch_size': batch})}")


def int8_row(frame, rep: dict) -> dict:
    name = "accuracy-preserving int8 (inference)"
    accuracy = frame[(frame["phase"] == "accuracy") & (frame["status"] == "ok")]
    by_impl = {impl: dict(zip(rows["cell"], rows["test_accuracy"]))
               for impl, rows in accuracy.groupby("impl")}
    int8, fp32 = by_impl.get("onnx_int8", {}), by_impl.get("onnx_fp32", {})
    cells = [c for c in int8 if c in fp32]
    batches = _batches(frame, rep, "forward")
    if not cells or not batches:
        return _missing(name, "int8", "needs onnx_int8 and onnx_fp32 accuracy and forward rows")
    changes = {c: round(100 * (int8[c] - fp32[c]), 1) + 0.0 for c in cells}  # points; + 0.0: no "-0.0"
    speed = []
    for batch in (batches[0], batches[-1]):
        rows = _timed(frame, rep, "forward", batch)
        times = {impl: rows[rows["impl"] == impl].set_index("cell")["median_s"] for impl in ("onnx_int8", "onnx_fp32")}
        common = [c for c in times["onnx_fp32"].index if c in times["onnx_int8"].index]
        if common:
            speed.append((batch, _geomean(times["onnx_fp32"][c] / times["onnx_int8"][c] for c in common)))
    worst = -min(changes.values())
    keeps = worst <= INT8_ACCURACY_POINTS
    speed_text = ", ".join(f"{_times(s)} at B={b}" for b, s in speed)
    faster = bool(speed) and all(s >= TIE_RATIO for _, s in speed)
    pays_at = [f"B={b}" for b, s in speed if s >= TIE_RATIO]
    best = ("onnx_int8" if keeps and faster else
            f"onnx_int8 at {', '.join(pays_at)}; else onnx_fp32" if keeps and pays_at else
            "onnx_fp32 (int8 does not pay here)")
    detail = (f"onnx_int8: forward {speed_text} onnx_fp32's speed (geometric mean over cells); "
              "test accuracy " + ", ".join(f"{c} {d:+.1f}" for c, d in changes.items()) + " points")
    agrees = ("yes" if keeps and faster else
              f"partly: accuracy kept, faster at {', '.join(pays_at)} only" if keeps and pays_at else
              "partly: accuracy kept, not faster beyond noise" if keeps else
              f"no: int8 loses up to {worst:.1f} points")
    based_on = f"accuracy rows (digits) and forward at {size_label({k: v for k, v in rep.items() if k != 'batch_size'})}"
    return _row(name, "int8", best, detail, based_on, agrees)


def _footprint_row(footprint, column: str, name: str, key: str, unit, extra=None) -> dict:
    if footprint is None or column not in footprint:
        return _missing(name, key, "no footprint rows: rnnbench footprint RUN_DIR, or sweep --footprint")
    rows = footprint[(footprint["status"] == "ok") & footprint[column].notna()].sort_values(column)
    if rows.empty:
        return _missing(name, key, "no ok footprint rows")
    best = rows.iloc[0]
    if len(rows) == 1:
        return _row(name, key, best["impl"], "— (the only one)", unit(best), _verdict(key, best["impl"], []))
    runner = rows.iloc[1]
    ratio = runner[column] / best[column]
    ties = [r["impl"] for _, r in rows.iloc[1:].iterrows() if r[column] / best[column] < TIE_RATIO]
    margin = f"{runner['impl']} ({_times(ratio)} {'larger' if key == 'install' else 'slower'})"
    based_on = unit(best) + (extra(best) if extra else "")
    return _row(name, key, best["impl"], margin, based_on, _verdict(key, best["impl"], ties))


def gpu_row(frame, rep: dict) -> dict:
    name = "GPU (training throughput)"
    rows = ok_timing(frame)
    gpu = rows[~rows["device"].fillna("cpu").eq("cpu") & (rows["phase"] == "train_step")]
    if gpu.empty:
        return _missing(name, "gpu", "no GPU rows")
    fixed = representative(gpu)
    batch = max(matching(gpu, {k: v for k, v in fixed.items() if k != "batch_size"})["batch_size"])
    cut = matching(gpu, {**fixed, "batch_size": batch})
    return _ranked_row(name, "gpu", cut, f"train_step sequences/s, {size_label({**fixed, 'batch_size': batch})}")


def _installed(row) -> str:
    return f"installed size {row['installed_bytes'] / 2 ** 20:.0f} MiB ({row['distributions']})"


def _start(row) -> str:
    return f"a fresh process to its first logits (B=1), warm on-disk caches: {row['warm_start_s']:.2f} s"


def _cold(row) -> str:
    value = row.get("cold_start_s")
    return "" if value is None or value != value else f"; with empty caches {value:.2f} s"


def recommendations(frame, footprint=None) -> list[dict]:
    """One row per workload (COLUMNS), in the order a reader looks for them."""
    rep = representative(frame)
    if not rep:
        return [_missing("every workload", "latency", "no timed rows")]
    return [latency_row(frame, rep),
            throughput_row(frame, rep, "forward", "batch throughput (inference)", "batch"),
            throughput_row(frame, rep, "train_step", "training throughput", "training"),
            int8_row(frame, rep),
            _footprint_row(footprint, "installed_bytes", "smallest install", "install", _installed),
            _footprint_row(footprint, "warm_start_s", "fastest start (serverless call, CLI)", "start",
                           _start, _cold),
            gpu_row(frame, rep)]
