"""The performance targets the issues set, evaluated on a run: met, missed, or not
measured in it. Each target is a ratio or percentage computed from medians of one run.
They were set for the article's plain model (one layer, one direction): rows of other
structures never count towards them."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

ARTICLE_SIZE = {"batch_size": 32, "seq_len": 64, "input_size": 32, "hidden_size": 128,
                "dtype": "float32", "threads": 1}
TANH = {"cell": "rnn_tanh"}  # the targets set before LSTM/GRU were the tanh cell's
CELLS = ("rnn_tanh", "lstm", "gru")
PLAIN = {"num_layers": 1, "bidirectional": False}


def _plain(frame):
    """The plain model's rows (a frame without the structure columns holds nothing else)."""
    for column, value in PLAIN.items():
        if column in frame:
            frame = frame[frame[column] == value]
    return frame


def _ok(frame, **where):
    frame = _plain(frame)
    rows = frame[(frame["status"] == "ok") & frame["median_s"].notna()]
    for column, value in where.items():
        rows = rows[rows[column] == value]
    return rows


def _speedup(frame, impl: str, baseline: str, phase: str, **size) -> float | None:
    """median(baseline) / median(impl) at one size; None unless both ran there."""
    a = _ok(frame, impl=impl, phase=phase, **size)["median_s"]
    b = _ok(frame, impl=baseline, phase=phase, **size)["median_s"]
    if len(a) != 1 or len(b) != 1:
        return None
    return float(b.iloc[0] / a.iloc[0])


def _worst_speedup_over(frame, impl: str, baseline: str, phase: str, select) -> float | None:
    ratios = []
    for _, row in select(_ok(frame, impl=impl, phase=phase)).iterrows():
        size = {k: row[k] for k in ("cell", "batch_size", "seq_len", "input_size", "hidden_size",
                                    "dtype", "threads")}
        ratio = _speedup(frame, impl, baseline, phase, **size)
        if ratio is not None:
            ratios.append(ratio)
    return min(ratios) if ratios else None


def _fastest_margin(frame, impl: str, phase: str, cell: str = "rnn_tanh") -> float | None:
    """At B=1, H<=128, float32, 1 thread: min over sizes of (fastest other median / impl's)."""
    rows = _ok(frame, phase=phase, batch_size=1, dtype="float32", threads=1, cell=cell)
    rows = rows[rows["hidden_size"] <= 128]
    margins = []
    for _, group in rows.groupby(["seq_len", "input_size", "hidden_size"]):
        mine = group[group["impl"] == impl]["median_s"]
        others = group[(group["impl"] != impl) & (group["device"] == "cpu")]["median_s"]
        if len(mine) == 1 and len(others):
            margins.append(float(others.min() / mine.iloc[0]))
    return min(margins) if margins else None


def _best_pct_peak(frame, min_hidden: int = 256, min_batch: int = 32, **where) -> float | None:
    rows = _ok(frame, dtype="float32", **where)
    rows = rows[(rows["hidden_size"] >= min_hidden) & (rows["batch_size"] >= min_batch)
                & (rows["device"] == "cpu")]
    # int8 matmuls run against an integer peak, not the float32 GEMM's: not float32 compute
    rows = rows[~(rows["quant_int_matmuls"].fillna(0) > 0)] if "quant_int_matmuls" in rows else rows
    return float(rows["pct_peak"].max()) if len(rows) and rows["pct_peak"].notna().any() else None


def _accuracy_drop(frame, cell: str = "rnn_tanh") -> float | None:
    acc = _plain(frame)
    acc = acc[(acc["phase"] == "accuracy") & (acc["status"] == "ok") & (acc["cell"] == cell)]
    acc = acc.drop_duplicates("impl", keep="last").set_index("impl")["test_accuracy"]
    if "onnx_fp32" not in acc or "onnx_int8" not in acc:
        return None
    return 100.0 * float(acc["onnx_fp32"] - acc["onnx_int8"])


def _large(rows, min_hidden: int = 128, cell: str = "rnn_tanh"):
    return rows[(rows["hidden_size"] >= min_hidden) & (rows["batch_size"] >= 32) & (rows["threads"] == 1)
                & (rows["cell"] == cell)]


def _cupy_vs_cudnn(frame) -> float | None:
    size = {"batch_size": 64, "seq_len": 50, "hidden_size": 1760, "dtype": "float32", **TANH}
    cupy = _ok(frame, impl="cupy", phase="forward", **size)
    cudnn = _ok(frame, impl="torch_cuda", phase="forward", **size)
    if len(cupy) != 1 or len(cudnn) != 1:
        return None
    return float(cudnn["median_s"].iloc[0] / cupy["median_s"].iloc[0])


@dataclass(frozen=True)
class Target:
    text: str
    measure: Callable  # frame -> value or None (not measured in this run)
    threshold: float
    unit: str = "×"
    at_most: bool = False  # the value must stay at or below the threshold

    def evaluate(self, frame) -> tuple[float | None, str]:
        value = self.measure(frame)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None, "not measured in this run"
        met = value <= self.threshold if self.at_most else value >= self.threshold
        return value, "met" if met else "MISSED"


TARGETS = (
    Target("numpy ≥ 2× torch eager, forward, B=32 T=64 I=32 H=128 float32 1 thread (rnn_tanh)",
           lambda f: _speedup(f, "numpy", "torch", "forward", **ARTICLE_SIZE, **TANH), 2.0),
    Target("numpy ≥ 1.5× torch eager, train_step, same size (rnn_tanh)",
           lambda f: _speedup(f, "numpy", "torch", "train_step", **ARTICLE_SIZE, **TANH), 1.5),
    Target("best float32 CPU implementation ≥ 80 % of the GEMM peak at H ≥ 256, B ≥ 32 (any cell)",
           _best_pct_peak, 80.0, "%"),
    *(Target(f"best float32 CPU {phase} ≥ 80 % of the GEMM peak at H ≥ 512, B ≥ 64 (any cell)",
             lambda f, phase=phase: _best_pct_peak(f, 512, 64, phase=phase), 80.0, "%")
      for phase in ("forward", "train_step")),
    Target("numba ≥ 0.8× numpy, forward, B=32 T=64 I=32 H=128 (rnn_tanh)",
           lambda f: _speedup(f, "numba", "numpy", "forward", **ARTICLE_SIZE, **TANH), 0.8),
    Target("numba ≥ 0.8× numpy, train_step, same size (rnn_tanh)",
           lambda f: _speedup(f, "numba", "numpy", "train_step", **ARTICLE_SIZE, **TANH), 0.8),
    Target("numba fastest CPU backend at B=1, H ≤ 128, forward (margin over the next best; rnn_tanh)",
           lambda f: _fastest_margin(f, "numba", "forward"), 1.0),
    Target("numba fastest CPU backend at B=1, H ≤ 128, train_step (rnn_tanh)",
           lambda f: _fastest_margin(f, "numba", "train_step"), 1.0),
    Target("onnx_int8 ≥ 1.5× onnx_fp32 at H ≥ 128, B ≥ 32, 1 thread (worst case; rnn_tanh)",
           lambda f: _worst_speedup_over(f, "onnx_int8", "onnx_fp32", "forward", _large), 1.5),
    *(Target(f"onnx_int8 ≥ 1.5× onnx_fp32 at H ≥ 256, B ≥ 32, 1 thread (worst case; {cell})",
             lambda f, cell=cell: _worst_speedup_over(
                 f, "onnx_int8", "onnx_fp32", "forward", lambda r: _large(r, 256, cell)), 1.5)
      for cell in CELLS),
    *(Target(f"onnx_int8 test accuracy drop vs onnx_fp32 on digits ≤ 0.5 point ({cell})",
             lambda f, cell=cell: _accuracy_drop(f, cell), 0.5, " points", at_most=True)
      for cell in CELLS),
    Target("cupy forward ≥ 0.8× cuDNN nn.RNN at H=1760, B=64, T=50 (GPU; rnn_tanh)", _cupy_vs_cudnn, 0.8),
)


def evaluate_targets(frame) -> list[dict]:
    rows = []
    for target in TARGETS:
        value, verdict = target.evaluate(frame)
        shown = "—" if value is None else f"{value:.2f}{target.unit}"
        bound = f"{'≤' if target.at_most else '≥'} {target.threshold:g}{target.unit}"
        rows.append({"target": target.text, "needed": bound, "measured": shown, "verdict": verdict})
    return rows
