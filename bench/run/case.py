"""Measure one Case: bind its phase (bench.run.bind), time it, measure its memory, and
return the record (one row of results.csv, bench.record). Errors become rows, never crashes."""
from __future__ import annotations

import traceback

import numpy as np

from bench.faults import crash_point
from bench.measure import analytic, memory
from bench.measure.timing import measure
from bench.record import RAW_TIMES_FIELD, TRACEBACK_FIELD, Row, check_diagnostics, empty_row
from bench.run.bind import make_phase
from bench.spec import Case

# The correctness column compares against the float64 oracle at the case's size, but
# caps the batch: the error depends on T and H, not on how many sequences share them,
# and the oracle's float64 loop would dominate DeepBench-sized runs.
ORACLE_MAX_BATCH = 8
# The oracle's results are kept for this many sizes: the implementations of one size run
# back to back, and at DeepBench's sizes one entry (float64 gradients) is ~50 MB.
ORACLE_CACHE_SIZES = 4


def oracle_error(backend, case: Case, expected: dict | None = None) -> float:
    """Max relative error of logits (and, past inference, every gradient) vs float64.
    `expected` caches the oracle's own results by size across implementations: its inputs
    are seeded, so every implementation of one size is checked against the same numbers."""
    from bench.oracle import compare, float64_logits_and_grads, seeded_inputs

    params, x, dlogits = seeded_inputs(min(case.batch_size, ORACLE_MAX_BATCH), case.seq_len,
                                       case.input_size, case.hidden_size, case.num_classes,
                                       seed=0, dtype=np.dtype(case.dtype), cell=case.cell,
                                       num_layers=case.num_layers, bidirectional=case.bidirectional)
    # inference rows check inference (predict): a compiling backend then builds no
    # training graph here that a later train_step row would find already compiled
    grads = case.phase != "forward" and backend.supports_backward
    key = (case.cell, case.structure(), x.shape, case.hidden_size, case.num_classes, case.dtype, grads)
    expected = {} if expected is None else expected
    if key not in expected:
        expected[key] = float64_logits_and_grads(params, x, dlogits if grads else None)
        while len(expected) > ORACLE_CACHE_SIZES:
            expected.pop(next(iter(expected)))  # the oldest size: dicts keep insertion order
    return max(compare(backend, params, x, dlogits, grads=grads, expected=expected[key]).values())


def peak_memory(backend, fn) -> int | None:
    """Device memory for device backends, else the process's resident-set peak."""
    on_device = backend.peak_memory_bytes(fn)
    if on_device is not None:
        return on_device
    return memory.peak_bytes(fn, backend.sync) if memory.supported() else None


def run_case(backend, case: Case, peak_gflops: float, *, timing: dict | None = None) -> Row:
    """Time, memory and derived metrics of one case, as a row dict."""
    if case.phase in ("backward", "train_step") and not backend.supports_backward:
        return empty_row(case, "skipped", f"{case.impl} is forward-only")
    if np.dtype(case.dtype) not in backend.dtypes:
        return empty_row(case, "skipped", f"{case.impl} does not run {case.dtype}")
    if backend.cell_reason(case.cell):
        return empty_row(case, "skipped", backend.cell_reason(case.cell))
    if backend.structure_reason(*case.structure()):
        return empty_row(case, "skipped", backend.structure_reason(*case.structure()))
    if case.phase == "transfer" and backend.device == "cpu":
        return empty_row(case, "skipped", "runs in host memory: no host<->device copy to time")
    try:
        counted = backend.counters()
        phase = make_phase(backend, case)
        result = measure(phase.run, sync=backend.sync, **(timing or {}))
        crash_point("case", f"{case.impl} {case.cell} {case.phase} B{case.batch_size} "
                            f"T{case.seq_len} H{case.hidden_size}")
    except Exception as exc:  # one failure is a row; the sweep goes on
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return {**empty_row(case, "error", reason), "device": backend.device,
                TRACEBACK_FIELD: traceback.format_exc()}
    mem, info, notes = None, {}, []
    try:  # one more call of the timed (warm) callable: first-call work is already paid
        mem = peak_memory(backend, phase.run)
    except Exception as exc:  # the timing stands; the memory column stays empty, with why
        notes.append(f"memory not measured: {type(exc).__name__}: {exc}".splitlines()[0])
    try:
        info = diagnostics(backend, phase, counted)
    except Exception as exc:
        notes.append(f"diagnostics failed: {type(exc).__name__}: {exc}".splitlines()[0])
    work = analytic.phase_flops(case.phase, *case.size(), case.num_classes, case.cell, *case.structure())
    gflops = work / result.median / 1e9 if work else None
    row = empty_row(case, "ok")
    row.update(
        device=backend.device, median_s=result.median, iqr_s=result.iqr, repeats=result.repeats,
        samples=len(result.times), noisy=result.noisy, timer_overhead_pct=result.timer_overhead_pct,
        seq_per_s=case.batch_size / result.median,
        steps_per_s=case.batch_size * case.seq_len / result.median,
        gflops=gflops, pct_peak=100.0 * gflops / peak_gflops if (gflops and peak_gflops) else None,
        peak_gflops=peak_gflops, peak_mem_bytes=mem,
        analytic_mem_bytes=analytic.activation_bytes(case.phase, *case.size(), case.dtype, case.cell,
                                                     *case.structure()),
        compile_s=result.compile_s, reason="; ".join(notes), **info)
    row[RAW_TIMES_FIELD] = list(result.times)
    return row


def diagnostics(backend, phase, counted: dict) -> dict:
    """backend.diagnostics() of the bound inputs, and its counters as this row's increase
    (not a process total). A key that is not a diagnostics column is a ValueError (so it
    is reported in the row's reason, never silently dropped)."""
    info = backend.diagnostics(phase.bound.params, phase.bound.x)
    check_diagnostics(info, f"{type(backend).__name__}.diagnostics()")
    counters = backend.counters()
    check_diagnostics(counters, f"{type(backend).__name__}.counters()")
    info = dict(info)
    info.update({k: v - counted.get(k, 0) for k, v in counters.items()})
    return info
