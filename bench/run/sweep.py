"""`rnnbench sweep`: run a grid of cases, one row each, streamed to disk as they finish.

Decided before anything runs: which cases cannot fit this machine's time or memory
(status `skipped`, with the estimate as the reason). While running: an unavailable
implementation or a failing case is a row (`unavailable` / `error`) and the sweep goes on.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import sys
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

import impls
from bench.measure import analytic
from bench.measure import machine
from bench.measure import memory
from bench.faults import crash_point
from bench.measure.code import implementations_meta
from bench.record import KEY_COLUMNS, TRACEBACK_FIELD, empty_row, key_from_list
from bench.results import (DAMAGED_SUFFIX, FOOTPRINT_FILES, IMPORTTIME_DIR, RESULTS_CSV, RUN_FILES,
                           RowWriter, done_keys, drop_rows_to_retry, read_meta,
                           reconcile_raw_times, set_aside_damaged, write_meta)
from bench.run.case import oracle_error, run_case
from bench.run.lock import RunLock
from bench.spec import Case, Grid

# Before a case runs, its cost is estimated from its FLOPs at this fraction of the
# measured GEMM peak (pessimistic: small GEMMs and Python loops reach less), times the
# calls timing makes at least (first, 2 warm-up, 7 samples, 1 memory) + the oracle.
ASSUMED_EFFICIENCY = 0.2
CALLS_PER_CASE = 11
MEMORY_HEADROOM = 0.5  # a case may use at most this fraction of available memory
IN_PROGRESS = "in_progress.json"  # the case running now: what a crash or kill interrupted
MAX_ATTEMPTS = 2  # a case that took the process down this often is recorded as an error
ACCURACY_TARGET = 0.90  # time-to-accuracy: first epoch whose validation accuracy reaches it
# Fresh processes per footprint median (Grid.footprint; `rnnbench footprint` takes 5, and 3
# cold starts of a compiling implementation). The quick preset has 3 minutes on 2 cores: a
# process importing torch takes ~2 s, numba's cold start compiles for ~10 s, and an ONNX
# variant's start is 1.3-1.6 s (1.3 s of it importing ml_dtypes): two processes per median,
# and one cold start of an implementation with an on-disk cache (its warm starts reuse
# that one's cache). With the import-time process, in no median: 3-4 processes an
# implementation, ~45 s in all.
FOOTPRINT_REPEATS = 2
FOOTPRINT_COLD_REPEATS = 1


def available_memory_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def skip_reason(case: Case, peak_gflops: float, max_case_s: float) -> str | None:
    """Why `case` cannot fit this machine, decided before it runs; None if it fits."""
    # backward is costed as a whole train step: its setup runs a forward too
    costed_as = {"backward": "train_step"}.get(case.phase, case.phase)
    work = analytic.phase_flops(costed_as, *case.size(), case.num_classes, case.cell, *case.structure())
    estimate_s = CALLS_PER_CASE * work / (ASSUMED_EFFICIENCY * peak_gflops * 1e9)
    if estimate_s > max_case_s:
        return (f"estimated {estimate_s:.0f} s for this case (at {ASSUMED_EFFICIENCY:.0%} of the "
                f"{peak_gflops:.0f} GFLOP/s peak) exceeds --max-case-s {max_case_s:.0f}")
    # training keeps ~3 activation sets alive (states, scratch, copies); params + Adam x4
    need = 3 * analytic.activation_bytes("train_step", *case.size(), case.dtype, case.cell,
                                         *case.structure())
    need += 4 * analytic.num_params(case.input_size, case.hidden_size, case.num_classes, case.cell,
                                    *case.structure()) * np.dtype(case.dtype).itemsize
    have = available_memory_bytes()
    if have and need > MEMORY_HEADROOM * have:
        return f"needs ~{need / 2**30:.1f} GiB, more than {MEMORY_HEADROOM:.0%} of the {have / 2**30:.1f} GiB available"
    return None


def prepare_run_dir(out: Path, *, resume: bool, force: bool) -> None:
    if (out / RESULTS_CSV).exists() and not (resume or force):
        raise ValueError(f"{out} already holds a run; pass --resume to finish it or --force to overwrite it")
    if force and out.exists():
        for name in (*RUN_FILES, *FOOTPRINT_FILES, IN_PROGRESS, "report.md", "meta.json.tmp"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "plots", ignore_errors=True)
        shutil.rmtree(out / IMPORTTIME_DIR, ignore_errors=True)
        shutil.rmtree(out / "exports", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


class _Sweep:
    """The state one sweep shares across cases: backends, peaks, oracle results and errors."""

    def __init__(self, meta: dict, run_dir: Path):
        self.meta, self.run_dir = meta, run_dir
        self.backends: dict[str, object] = {}
        self.peaks: dict[tuple, float] = {}
        self.errors: dict[tuple, float] = {}
        self.expected: dict[tuple, tuple] = {}  # the float64 oracle's results, per size
        self.oversubscribed: set[int] = set(meta.get("oversubscribed", {}).get("threads", ()))

    def backend(self, name: str):
        if name not in self.backends:
            try:
                self.backends[name] = impls.get(name)
                self.backends[name].cache_dir = str(self.run_dir / "exports")
            except (impls.Unavailable, ValueError) as exc:
                self.backends[name] = exc
            memory.freeze_long_lived()  # between cases: what is alive now lives all sweep
        return self.backends[name]

    def peak(self, dtype: str, threads: int, device: str = "cpu") -> float:
        kind = "cuda" if device.startswith("cuda") else "cpu"
        if (dtype, threads, kind) not in self.peaks:
            crash_point("calibration")
            result = machine.gemm_peak_gflops(dtype, threads, device=device)
            self.peaks[(dtype, threads, kind)] = result["peak"]
            self.meta.setdefault("calibration", []).append(
                {"dtype": dtype, "threads": threads, "device": kind, "gemm_gflops": result})
        return self.peaks[(dtype, threads, kind)]

    def max_err(self, backend, case: Case) -> float | None:
        key = (case.impl, case.cell, case.structure(), case.size(), case.dtype, case.phase == "forward")
        if key not in self.errors:
            try:
                self.errors[key] = oracle_error(backend, case, self.expected)
            except ImportError:  # the oracle is torch; without it the column stays empty
                self.errors[key] = None
        return self.errors[key]

    def row(self, case: Case, max_case_s: float, timing: dict | None, grid: Grid) -> dict:
        backend = self.backend(case.impl)
        if isinstance(backend, Exception):
            return empty_row(case, "unavailable", str(backend))
        left_out = grid.compile_skip(case.cell, impls.entry(case.impl).compile_heavy)
        if left_out:
            return empty_row(case, "skipped", left_out)
        with machine.use_threads(case.threads):
            peak = self.peak(case.dtype, case.threads, backend.device)
            reason = skip_reason(case, peak, max_case_s)
            if reason:
                return empty_row(case, "skipped", reason)
            backend.threads = case.threads
            row = run_case(backend, case, peak, timing=timing)
            if row["status"] == "ok":
                row["max_err"] = self.max_err(backend, case)
        if case.threads in self.oversubscribed:
            note = f"oversubscribed: {case.threads} threads on {machine.cores_available()} cores"
            row["reason"] = "; ".join(r for r in (row.get("reason"), note) if r)
        return row


def accuracy_rows(state: _Sweep, grid: Grid, names: list[str], epochs: int,
                  cell: str = "rnn_tanh", num_layers: int = 1, bidirectional: bool = False) -> list[dict]:
    """Test accuracy and time-to-accuracy of the `cell` model of this structure on digits
    with a fixed epoch budget, per implementation in `names`; forward-only ones evaluate
    weights trained by the first trainable one before them (numpy, in registry order)."""
    from bench.train.data import load_digits_rows
    from bench.train.loop import TrainConfig, evaluate, train

    dataset = load_digits_rows()
    config = TrainConfig(epochs=epochs, patience=epochs, cell=cell, num_layers=num_layers,
                         bidirectional=bidirectional)
    threads = min(grid.threads)
    case = Case("", "accuracy", config.batch_size, dataset.seq_len, dataset.input_size,
                config.hidden_size, config.dtype, threads, dataset.num_classes, cell=cell,
                num_layers=num_layers, bidirectional=bidirectional)
    rows, reference_params = [], None
    for name in names:
        this = replace(case, impl=name)
        backend = state.backend(name)
        if isinstance(backend, Exception):
            rows.append(empty_row(this, "unavailable", str(backend)))
            continue
        skipped = (backend.cell_reason(cell) or backend.structure_reason(num_layers, bidirectional)
                   or grid.compile_skip(cell, impls.entry(name).compile_heavy))
        if skipped:
            rows.append(empty_row(this, "skipped", skipped))
            continue
        row = empty_row(this, "ok")
        row.update(device=backend.device, dataset=dataset.name)
        backend.threads = threads
        try:
            with machine.use_threads(threads):
                if backend.supports_backward:
                    result = train(backend, dataset, config)
                    elapsed = np.cumsum([r["seconds"] for r in result.history])
                    reached = [t for t, r in zip(elapsed, result.history)
                               if r["val_accuracy"] >= ACCURACY_TARGET]
                    row.update(test_accuracy=result.test_accuracy, median_s=result.seconds,
                               time_to_accuracy_s=reached[0] if reached else None,
                               reason=f"{epochs} epochs; time to {ACCURACY_TARGET:.0%} validation accuracy")
                    reference_params = reference_params or result.params
                elif reference_params is not None:
                    _, accuracy = evaluate(backend, reference_params, dataset.x_test.astype(config.dtype),
                                           dataset.y_test, dataset.lengths_test)
                    row.update(test_accuracy=accuracy, reason="forward-only: weights trained by another backend")
                else:
                    row.update(status="skipped", reason="forward-only and no trained weights yet")
        except Exception as exc:  # a row, not a crash
            row.update(status="error", reason=f"{type(exc).__name__}: {exc}".splitlines()[0])
            row[TRACEBACK_FIELD] = traceback.format_exc()
        rows.append(row)
    return rows


def _footprint(out: Path, grid: Grid, registered, state: _Sweep, meta: dict, notify) -> None:
    """footprint.csv for the grid's implementations (bench.measure.footprint); one with an
    ok row already (a resume) is not measured again. The in-process backends that check
    each child's logits are the sweep's own."""
    from bench.measure.footprint import FootprintConfig, measure_footprint, sweep_names

    names, began = sweep_names(grid, registered), time.perf_counter()
    config = FootprintConfig(repeats=FOOTPRINT_REPEATS, cold_repeats=FOOTPRINT_COLD_REPEATS)
    meta["footprint"] = {"started": machine.now(), "finished": None, "impls": names,
                         "repeats": config.repeats, "cold_repeats": config.cold_repeats}
    measure_footprint(out, names, config, backend_for=state.backend, notify=notify)
    meta["footprint"].update(finished=machine.now(), seconds=round(time.perf_counter() - began, 1))


class _Attempts:
    """DIR/in_progress.json names the case being run. If the process dies in it (a kill, a
    segfault, the out-of-memory killer), the next --resume finds it there: it runs the
    case again once, and records an `error` row instead of dying on it a second time."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / IN_PROGRESS
        self.previous, self.notes = None, []
        if self.path.exists():
            try:
                previous = json.loads(self.path.read_text())
                # a key written by an older version has fewer columns (bench.record)
                self.previous = (key_from_list(list(previous["key"])), int(previous["attempts"]))
            except (ValueError, KeyError, TypeError) as exc:  # damaged: the count is lost, not the run
                aside = self.path.with_name(self.path.name + DAMAGED_SUFFIX)
                os.replace(self.path, aside)
                self.notes.append(f"{self.path}: damaged ({type(exc).__name__}: {exc}); moved to "
                                  f"{aside.name}: the case it named counts as not yet attempted")

    def start(self, case: Case) -> int:
        attempts = 1 + (self.previous[1] if self.previous and self.previous[0] == case.key() else 0)
        self.path.write_text(json.dumps({"key": list(case.key()), "attempts": attempts}))
        return attempts

    def done(self) -> None:
        self.path.unlink(missing_ok=True)


def _start_meta(out: Path, grid: Grid, command, max_case_s: float, resume: bool) -> dict:
    """How the run began: command, grid, machine, and the implementations with their code
    size now (the report reads them from here, never from a later checkout)."""
    meta = {"command": command, "started": machine.now(), "finished": None,
            "grid": asdict(grid), "max_case_s": max_case_s,
            "machine": machine.machine_meta(), "memory_method": "VmHWM after clear_refs"
            if memory.supported() else "unsupported",
            "implementations": implementations_meta()}
    earlier = read_meta(out) if resume else {}
    if earlier:  # a resume keeps how the run began, and lists every continuation
        continuation = {"command": command, "started": meta["started"],
                        "git_commit": meta["machine"].get("git_commit")}
        meta = {**earlier, "finished": None, "resumes": earlier.get("resumes", []) + [continuation]}
    return meta


def _say(message: str) -> None:
    print(f"rnnbench: {message}", file=sys.stderr)


def run_sweep(grid: Grid, out, *, resume: bool = False, force: bool = False, progress: bool = True,
              command: list[str] | None = None, max_case_s: float = 120.0,
              timing: dict | None = None, accuracy_epochs: int | None = None,
              allow_oversubscribe: bool = False, notify=_say, cluster=None) -> Path:
    """Run every case of `grid` not yet in `out`/results.csv; return the folder.

    One sweep at a time holds `out` (RunLock). On a resume, damaged lines of the run's
    files are set aside first (notify says which), then rows that ended in `error` or
    `unavailable` are run again. Thread counts above the cores available are refused
    unless allow_oversubscribe, when their rows say so.

    cluster: a dask.distributed Client: the cases run on its workers instead
    (bench.run.distributed), each host checking its own cores; this process only writes."""
    out = Path(out)
    registered = impls.names()
    over = [] if cluster is not None else machine.oversubscribed(
        {c.threads for c in grid.cases(registered)}, allow_oversubscribe)
    command = command or sys.argv
    with RunLock(out, {"started": machine.now(), "command": command}):
        prepare_run_dir(out, resume=resume, force=force)
        recovered = []
        if resume:
            recovered = set_aside_damaged(out)
            drop_rows_to_retry(out)
            recovered += reconcile_raw_times(out)
        attempts = _Attempts(out)
        recovered += attempts.notes
        for note in recovered:
            notify(note)
        done = done_keys(out) if resume else set()
        cases = [c for c in grid.cases(registered) if c.key() not in done]
        meta = _start_meta(out, grid, command, max_case_s, resume)
        if recovered:
            meta.setdefault("recovered", []).extend({"at": machine.now(), "note": n} for n in recovered)
        if over:
            meta["oversubscribed"] = {"threads": over, "cores_available": machine.cores_available()}
        write_meta(out, meta)
        _run_cases(out, grid, cases, done, meta, attempts, registered, progress=progress,
                   max_case_s=max_case_s, timing=timing or {"min_time_s": grid.min_time_s},
                   accuracy_epochs=accuracy_epochs or grid.accuracy_epochs, notify=notify, cluster=cluster,
                   allow_oversubscribe=allow_oversubscribe)
    return out


def _accuracy_tasks(grid: Grid, done, registered) -> list[tuple]:
    """(implementations without an accuracy row yet, cell, num_layers, bidirectional) per
    cell and structure of the grid that has some left."""
    keys = [dict(zip(KEY_COLUMNS, key)) for key in done]
    tasks = []
    for cell, (layers, bidirectional) in itertools.product(grid.cell, grid.structures()):
        finished = {k["impl"] for k in keys if k["phase"] == "accuracy" and k["cell"] == cell
                    and (k["num_layers"], k["bidirectional"]) == (layers, bidirectional)}
        names = [n for n in (grid.impls or registered) if n not in finished]
        if names:
            tasks.append((names, cell, layers, bidirectional))
    return tasks


def _run_cases(out: Path, grid: Grid, cases, done, meta, attempts, registered, *, progress,
               max_case_s, timing, accuracy_epochs, notify=_say, cluster=None,
               allow_oversubscribe: bool = False) -> None:
    from tqdm import tqdm

    state, writer = _Sweep(meta, out), RowWriter(out)
    host, calibrated_before = socket.gethostname(), len(meta.get("calibration", []))
    try:
        if cluster is not None:
            from bench.run.distributed import run_on_cluster

            _host_entries(out, meta)
            accuracy = _accuracy_tasks(grid, done, registered) if grid.accuracy else []
            run_on_cluster(cluster, out, grid, cases, accuracy, meta, writer, max_case_s=max_case_s,
                           timing=timing, accuracy_epochs=accuracy_epochs, max_attempts=MAX_ATTEMPTS,
                           allow_oversubscribe=allow_oversubscribe, progress=progress, notify=notify)
            meta["finished"] = machine.now()
            return
        bar = tqdm(cases, unit="case", file=sys.stderr, disable=not progress)
        for case in bar:
            structure = ("" if case.structure() == (1, False) else
                         f"L{case.num_layers}{'-bi' if case.bidirectional else ''} ")
            bar.set_description(f"{case.impl} {case.cell} {structure}{case.phase} B{case.batch_size} "
                                f"T{case.seq_len} H{case.hidden_size}")
            if attempts.start(case) > MAX_ATTEMPTS:
                row = empty_row(case, "error", f"the process died in this case {MAX_ATTEMPTS} times "
                                "(killed, crashed or out of memory); not run again")
            else:
                row = state.row(case, max_case_s, timing, grid)
            writer.write({**row, "host": host})
            attempts.done()
        if grid.accuracy:
            for names, cell, layers, bidirectional in _accuracy_tasks(grid, done, registered):
                for row in accuracy_rows(state, grid, names, accuracy_epochs, cell, layers, bidirectional):
                    writer.write({**row, "host": host})
        if grid.footprint:  # last: its processes must not run beside a timed case
            _footprint(out, grid, registered, state, meta, notify if progress else None)
        meta["finished"] = machine.now()
    except KeyboardInterrupt:
        meta["interrupted"] = machine.now()  # `finished` stays empty: the run is partial
        attempts.done()  # a user's Ctrl-C is not a crash of that case
        raise
    finally:
        writer.close()
        if cluster is None and meta.get("hosts"):  # this process continued a distributed run
            entry = meta["hosts"].setdefault(host, {"machine": machine.machine_meta(), "calibration": []})
            entry["calibration"].extend(meta.get("calibration", [])[calibrated_before:])
        write_meta(out, meta)


def _host_entries(out: Path, meta: dict) -> None:
    """Before a distributed sweep continues an in-process run: the hosts of its rows so far,
    with the run's machine and calibration (an in-process run measured on one machine)."""
    from bench.results import read_rows

    hosts = meta.setdefault("hosts", {})
    earlier = {r.get("host") for r in read_rows(out)} - {None, ""} - set(hosts) if (out / RESULTS_CSV).exists() else set()
    for name in earlier:
        hosts[name] = {"machine": meta.get("machine"), "calibration": list(meta.get("calibration", []))}
