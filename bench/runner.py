"""Measure one Case: build its inputs once, time its phase, measure its memory, and
return the record (one row of results.csv). Errors become rows, never crashes."""
from __future__ import annotations

import traceback

import numpy as np

import impls
from bench import flops, memory
from bench.data import random_labels, random_sequences
from bench.losses import cross_entropy
from bench.optim import Adam
from bench.spec import Case
from bench.timing import measure

# The correctness column compares against the float64 oracle at the case's size, but
# caps the batch: the error depends on T and H, not on how many sequences share them,
# and the oracle's float64 loop would dominate DeepBench-sized runs.
ORACLE_MAX_BATCH = 8
TRAIN_LR = 1e-4  # small enough that thousands of timed steps never blow the weights up

COLUMNS = ["impl", "phase", "batch_size", "seq_len", "input_size", "hidden_size", "dtype",
           "threads", "num_classes", "device", "median_s", "iqr_s", "repeats", "samples",
           "noisy", "timer_overhead_pct", "seq_per_s", "steps_per_s", "gflops", "pct_peak",
           "peak_gflops", "peak_mem_bytes", "analytic_mem_bytes", "compile_s", "max_err",
           "test_accuracy", "time_to_accuracy_s", "dataset",
           # from backend.diagnostics(): compilers and quantised models
           "graph_breaks", "recompiles", "quant_int_matmuls", "quant_float_matmuls", "model_bytes",
           "status", "reason"]


def empty_row(case: Case, status: str, reason: str = "") -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update({k: getattr(case, k) for k in ("impl", "phase", "batch_size", "seq_len",
                                               "input_size", "hidden_size", "dtype", "threads",
                                               "num_classes")})
    row.update(status=status, reason=reason)
    return row


def _with_inputs(fn, params, x):
    fn.inputs = (params, x)
    return fn


def make_phase(backend, case: Case, seed: int = 0):
    """-> a zero-argument callable doing exactly one unit of the phase's work on
    pre-converted native arrays (no host<->device copies inside). Its `inputs` attribute
    holds (params, x) for backend.diagnostics.

    The inputs are validated once, here, through the public API; the callable then calls
    the backend's kernels (`_predict`, `_forward`, `_backward`) directly. Validation costs
    each backend a different amount (a finiteness scan in its own array library, a device
    sync on a GPU), which at batch 1 was 10-30 % of a call: timing sees the work, not it.
    Nothing is run here that the timed callable will run: its first call stays the one
    that pays any compilation (compile_s)."""
    host = impls.init_params(case.input_size, case.hidden_size, case.num_classes,
                             seed=seed, dtype=case.dtype)
    params = backend.from_numpy(host)
    x = backend.asarray(random_sequences(case.batch_size, case.seq_len, case.input_size,
                                         seed=seed, dtype=np.dtype(case.dtype)))
    backend.check_input(params, x)  # once, outside the timed callable
    if case.phase == "forward":
        return _with_inputs(lambda: backend._predict(params, x, None), params, x)
    if case.phase == "transfer":
        host_x = backend.to_numpy(x)
        logits = backend.predict(params, x)

        def transfer():
            on_device = backend._from_numpy_array(host_x)  # host -> device
            backend.sync()
            return on_device, backend.to_numpy(logits)  # device -> host
        return _with_inputs(transfer, params, x)
    labels = backend.asarray(random_labels(case.batch_size, case.num_classes, seed=seed))
    if case.phase == "backward":
        logits, cache = backend.forward(params, x)
        _, dlogits = cross_entropy(logits, labels)  # (B, C) in the backend's dtype by construction
        return _with_inputs(lambda: backend._backward(params, cache, dlogits), params, x)
    if case.phase == "train_step":
        optimizer = Adam(TRAIN_LR)
        state = {"params": params}

        def train_step():
            logits, cache = backend._forward(state["params"], x, None)
            _, dlogits = cross_entropy(logits, labels)
            grads = backend._backward(state["params"], cache, dlogits)
            state["params"] = optimizer.step(state["params"], grads)
            return state["params"]
        return _with_inputs(train_step, params, x)
    raise ValueError(f"unknown phase {case.phase!r}")


def oracle_error(backend, case: Case) -> float:
    """Max relative error of logits (and, past inference, every gradient) vs float64."""
    from bench.oracle import check_case, compare

    params, x, dlogits = check_case(min(case.batch_size, ORACLE_MAX_BATCH), case.seq_len,
                                    case.input_size, case.hidden_size, case.num_classes,
                                    seed=0, dtype=np.dtype(case.dtype))
    # inference rows check inference (predict): a compiling backend then builds no
    # training graph here that a later train_step row would find already compiled
    return max(compare(backend, params, x, dlogits, grads=case.phase != "forward").values())


def peak_memory(backend, fn) -> int | None:
    """Device memory for device backends, else the process's resident-set peak."""
    on_device = backend.peak_memory_bytes(fn)
    if on_device is not None:
        return on_device
    return memory.peak_bytes(fn, backend.sync) if memory.supported() else None


def run_case(backend, case: Case, peak_gflops: float, *, max_err: float | None = None,
             timing: dict | None = None) -> dict:
    """Time, memory and derived metrics of one case, as a row dict."""
    if case.phase in ("backward", "train_step") and not backend.supports_backward:
        return empty_row(case, "skipped", f"{case.impl} is forward-only")
    if np.dtype(case.dtype) not in backend.dtypes:
        return empty_row(case, "skipped", f"{case.impl} does not run {case.dtype}")
    if case.phase == "transfer" and backend.device == "cpu":
        return empty_row(case, "skipped", "runs in host memory: no host<->device copy to time")
    try:
        counted = backend.counters()
        fn = make_phase(backend, case)
        result = measure(fn, sync=backend.sync, **(timing or {}))
    except Exception as exc:  # one failure is a row; the sweep goes on
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return {**empty_row(case, "error", reason), "device": backend.device,
                "traceback": traceback.format_exc(limit=3)}
    mem, info, notes = None, {}, []
    try:  # one more call of the timed (warm) callable: first-call work is already paid
        mem = peak_memory(backend, fn)
    except Exception as exc:  # the timing stands; the memory column stays empty, with why
        notes.append(f"memory not measured: {type(exc).__name__}: {exc}".splitlines()[0])
    try:
        info = {k: v for k, v in backend.diagnostics(*fn.inputs).items() if k in COLUMNS}
        # counters (compiles, graph breaks) as this row's increase, not a process total
        info.update({k: v - counted.get(k, 0) for k, v in backend.counters().items() if k in COLUMNS})
    except Exception as exc:
        notes.append(f"diagnostics failed: {type(exc).__name__}: {exc}".splitlines()[0])
    work = flops.phase_flops(case.phase, case.batch_size, case.seq_len, case.input_size,
                             case.hidden_size, case.num_classes)
    gflops = work / result.median / 1e9 if work else None
    row = empty_row(case, "ok")
    row.update(
        device=backend.device, median_s=result.median, iqr_s=result.iqr, repeats=result.repeats,
        samples=len(result.times), noisy=result.noisy, timer_overhead_pct=result.timer_overhead_pct,
        seq_per_s=case.batch_size / result.median,
        steps_per_s=case.batch_size * case.seq_len / result.median,
        gflops=gflops, pct_peak=100.0 * gflops / peak_gflops if (gflops and peak_gflops) else None,
        peak_gflops=peak_gflops, peak_mem_bytes=mem,
        analytic_mem_bytes=flops.activation_bytes(case.phase, case.batch_size, case.seq_len,
                                                  case.input_size, case.hidden_size, case.dtype),
        compile_s=result.compile_s, max_err=max_err, raw_times=list(result.times),
        reason="; ".join(notes), **info)
    return row
