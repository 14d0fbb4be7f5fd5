"""The record: what one row of results.csv holds, and the one place its columns are named.

What was run is a spec (bench.spec), what was measured is a record (this module), how it is
shown is a report (bench.report): the three are kept apart. This module imports nothing
heavy (no numpy, torch, pandas or backend), so the results reader and the report can use it
without pulling in the code that measures.

Every column is listed once below, with its meaning; `COLUMNS` is their order in the CSV.
"""
from __future__ import annotations

from dataclasses import dataclass

# A row is a plain dict keyed by COLUMNS (None: not measured / not applicable). Plain dicts
# keep the writer, the CSV and pandas in step without a conversion layer; `Row` names it.
Row = dict


@dataclass(frozen=True)
class Column:
    name: str
    meaning: str
    key: bool = False  # part of the row's identity (resume skips rows whose key is done)
    integer: bool = False  # read back as int (CSV cells are text)
    kind: str = "number"  # what a CSV cell must parse as: number | text | flag (True/False)


# How a flag column is written in the CSV (csv writes str(bool)) and read back.
FLAG_TEXT = {"True": True, "False": False}


SCHEMA: tuple[Column, ...] = (
    # --- what was measured: the case (bench.spec.Case) --------------------------------
    Column("impl", "implementation name (impls.names())", key=True, kind="text"),
    Column("cell", "recurrent cell: rnn_tanh | lstm | gru (impls.CELLS)", key=True, kind="text"),
    Column("num_layers", "stacked recurrent layers (1: the article's model)", key=True, integer=True),
    Column("bidirectional", "True: a second direction reads each sequence backwards; the head "
           "reads both final states", key=True, kind="flag"),
    Column("phase", "forward | backward | train_step | transfer | accuracy", key=True, kind="text"),
    Column("batch_size", "B, sequences per call", key=True, integer=True),
    Column("seq_len", "T, time steps", key=True, integer=True),
    Column("input_size", "I, features per step", key=True, integer=True),
    Column("hidden_size", "H, hidden units", key=True, integer=True),
    Column("dtype", "float32 | float64", key=True, kind="text"),
    Column("threads", "the one thread count every library was pinned to", key=True, integer=True),
    Column("num_classes", "C, classifier outputs", integer=True),
    Column("device", "where the backend's arrays live: cpu, cuda:0, ...", kind="text"),
    Column("host", "the machine (a distributed sweep: the worker) that measured the row; "
           "its machine and calibration: meta.json hosts", kind="text"),
    # --- time (bench.measure.timing) ---------------------------------------------------
    Column("median_s", "median seconds per call (accuracy rows: the training time)"),
    Column("iqr_s", "interquartile range of the per-call samples, seconds"),
    Column("repeats", "calls timed in all (samples x calls per sample)"),
    Column("samples", "timed samples; the raw ones are in raw_times.jsonl"),
    Column("noisy", "IQR / median above the noise threshold (bench.measure.timing)", kind="flag"),
    Column("timer_overhead_pct", "clock reads + sync as % of a sample"),
    # --- derived from the time and the analytic counts (bench.measure.analytic) --------
    Column("seq_per_s", "sequences per second"),
    Column("steps_per_s", "sequence steps per second"),
    Column("gflops", "analytic FLOPs / median"),
    Column("pct_peak", "gflops as % of peak_gflops"),
    Column("peak_gflops", "best calibration GEMM rate at this dtype and thread count"),
    # --- memory (bench.measure.memory) -------------------------------------------------
    Column("peak_mem_bytes", "resident-set (or device) high-water increase of one warm call"),
    Column("analytic_mem_bytes", "BPTT activations by formula"),
    Column("compile_s", "the first call alone: JIT, graph capture, first allocations"),
    # --- correctness and accuracy ------------------------------------------------------
    Column("max_err", "max relative error vs the float64 oracle at this size"),
    Column("test_accuracy", "accuracy rows: test-set accuracy"),
    Column("time_to_accuracy_s", "accuracy rows: training seconds to the validation target"),
    Column("dataset", "accuracy rows: the data set", kind="text"),
    # --- from backend.diagnostics() / counters(): compilers and quantised models -------
    Column("graph_breaks", "compiler graph breaks during this row"),
    Column("recompiles", "graphs compiled during this row"),
    Column("quant_int_matmuls", "matmuls running in int8"),
    Column("quant_float_matmuls", "matmuls left in float"),
    Column("model_bytes", "size of the exported model file"),
    # --- outcome ------------------------------------------------------------------------
    Column("status", "ok | skipped | unavailable | error", kind="text"),
    Column("reason", "why a row is not ok, or notes on an ok one", kind="text"),
)

COLUMNS: tuple[str, ...] = tuple(c.name for c in SCHEMA)
# Columns added after runs were already written, per version that added them (oldest
# first), with the value every older row had: a run without them still loads, and a
# resume rewrites its files with them (bench.results).
COLUMN_ADDITIONS: tuple[dict[str, object], ...] = (
    {"cell": "rnn_tanh"},  # before LSTM/GRU: the tanh cell only
    {"num_layers": 1, "bidirectional": False},  # before stacked/bidirectional models: the plain one
    {"host": ""},  # before distributed sweeps: not recorded (meta.json machine says where)
)
ADDED_COLUMNS: dict[str, object] = {k: v for added in COLUMN_ADDITIONS for k, v in added.items()}
# The columns of each older version's results.csv, oldest first: it lacks the additions
# from its own version on.
LEGACY_COLUMNS: tuple[tuple[str, ...], ...] = tuple(
    tuple(c for c in COLUMNS if not any(c in added for added in COLUMN_ADDITIONS[version:]))
    for version in range(len(COLUMN_ADDITIONS)))
KEY_COLUMNS: tuple[str, ...] = tuple(c.name for c in SCHEMA if c.key)
# what a raw-times/errors line (keys only) of an older run lacks
ADDED_KEY_COLUMNS: dict[str, object] = {k: v for k, v in ADDED_COLUMNS.items() if k in KEY_COLUMNS}
LEGACY_KEY_COLUMNS: tuple[tuple[str, ...], ...] = tuple(tuple(c for c in KEY_COLUMNS if c in columns)
                                                        for columns in LEGACY_COLUMNS)
FLAG_COLUMNS: tuple[str, ...] = tuple(c.name for c in SCHEMA if c.kind == "flag")
INT_COLUMNS: tuple[str, ...] = tuple(c.name for c in SCHEMA if c.integer)
CASE_COLUMNS: tuple[str, ...] = (*KEY_COLUMNS, "num_classes")  # what a Case carries
# The keys backend.diagnostics() and backend.counters() may return.
DIAGNOSTIC_COLUMNS: tuple[str, ...] = ("graph_breaks", "recompiles", "quant_int_matmuls",
                                       "quant_float_matmuls", "model_bytes")
STATUSES = ("ok", "skipped", "unavailable", "error")
# Not columns: carried beside a row to the writer, which files them elsewhere.
RAW_TIMES_FIELD = "raw_times"  # -> raw_times.jsonl
TRACEBACK_FIELD = "traceback"  # -> errors.jsonl


def empty_row(case, status: str, reason: str = "") -> Row:
    """A row for `case` (anything with the CASE_COLUMNS as attributes) with nothing measured."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    row = dict.fromkeys(COLUMNS)
    row.update({k: getattr(case, k) for k in CASE_COLUMNS})
    row.update(status=status, reason=reason)
    return row


def cell_problem(column: Column, text: str) -> str | None:
    """Why a CSV cell cannot be this column's value, or None. Empty means not measured,
    except in a key column, which every row has."""
    if text == "":
        return f"{column.name} is empty" if column.key else None
    if column.integer:
        try:
            int(text)
        except ValueError:
            return f"{column.name} is {text!r}, not an integer"
    elif column.kind == "number":
        try:
            float(text)
        except ValueError:
            return f"{column.name} is {text!r}, not a number"
    elif column.kind == "flag" and text not in FLAG_TEXT:
        return f"{column.name} is {text!r}, not True/False"
    elif column.name == "status" and text not in STATUSES:
        return f"status is {text!r}, not one of {', '.join(STATUSES)}"
    return None


def parse_flag(value) -> bool:
    """A flag column's value, from a CSV cell ("True"/"False") or a JSON entry (true/false)."""
    if isinstance(value, bool):
        return value
    if value in FLAG_TEXT:
        return FLAG_TEXT[value]
    raise ValueError(f"{value!r} is not True/False")


def upgrade_entry(entry: dict, added: dict | None = None) -> dict:
    """A row or raw-times/errors entry written before ADDED_COLUMNS existed, with them
    (`added`: only these, e.g. ADDED_KEY_COLUMNS for the .jsonl files, which carry keys)."""
    missing = {k: v for k, v in (ADDED_COLUMNS if added is None else added).items() if k not in entry}
    return {**missing, **entry} if missing else entry


def _typed(column: str, value):
    if column in INT_COLUMNS:
        return int(value)
    return parse_flag(value) if column in FLAG_COLUMNS else value


def row_key(row) -> tuple:
    """The identity of a row (a dict of CSV strings or typed values), typed."""
    return tuple(_typed(k, row[k]) for k in KEY_COLUMNS)


def key_from_list(values: list) -> tuple:
    """A key stored as a list (in_progress.json) by this version or an older one (fewer key
    columns), typed, in today's KEY_COLUMNS. ValueError for a list of another length."""
    for columns in (KEY_COLUMNS, *LEGACY_KEY_COLUMNS):
        if len(values) == len(columns):
            return row_key(upgrade_entry(dict(zip(columns, values))))
    raise ValueError(f"a key has {len(KEY_COLUMNS)} values ({', '.join(KEY_COLUMNS)}), got {len(values)}")


def check_diagnostics(values: dict, source: str) -> None:
    """ValueError unless every key a backend reported is a diagnostics column: a key that
    is not one would otherwise be dropped without anyone noticing."""
    unknown = sorted(set(values) - set(DIAGNOSTIC_COLUMNS))
    if unknown:
        raise ValueError(f"{source} returned {unknown}, which are not results columns; "
                         f"allowed: {', '.join(DIAGNOSTIC_COLUMNS)} (bench/record.py)")


# --- footprint.csv: what an implementation costs to install and to start (bench.measure.footprint)
# One row per implementation, for one fixed model (FOOTPRINT_CASE in bench.measure.footprint:
# rnn_tanh, B=1, T=64, I=32, H=128, float32). Every time is a median over fresh processes;
# the raw per-process samples are in footprint_raw.jsonl.
FOOTPRINT_SCHEMA: tuple[Column, ...] = (
    Column("impl", "implementation name (impls.names())", key=True, kind="text"),
    Column("device", "where the backend's arrays live: cpu, cuda:0, ...", kind="text"),
    Column("host", "the machine (a distributed sweep: the worker) that measured the row; "
           "its machine and calibration: meta.json hosts", kind="text"),
    Column("cell", "recurrent cell of the model measured", kind="text"),
    Column("batch_size", "B of the one prediction", integer=True),
    Column("seq_len", "T, time steps", integer=True),
    Column("input_size", "I, features per step", integer=True),
    Column("hidden_size", "H, hidden units", integer=True),
    Column("dtype", "float32 | float64", kind="text"),
    Column("status", "ok | unavailable | error", kind="text"),
    Column("reason", "why a row is not ok, or notes on an ok one", kind="text"),
    Column("distributions", "the installed distributions (name version; ...) whose top-level "
           "modules a child process imported to load the implementation and predict, beyond "
           "the standard library and rnnbench", kind="text"),
    Column("installed_bytes", "sum of those distributions' files on disk (importlib.metadata)",
           integer=True),
    Column("model_bytes", "the exported model file the runtime loads (ONNX variants); empty "
           "when the model is the weights alone", integer=True),
    Column("import_s", "median seconds of `import impls; impls.get(impl)` inside a fresh "
           "process (interpreter start excluded)"),
    Column("import_iqr_s", "interquartile range of import_s over the processes, seconds"),
    Column("rss_after_import_bytes", "median resident set (VmRSS) of a fresh process right "
           "after that import", integer=True),
    Column("cold_start_s", "median wall seconds, measured by the parent, from spawning a fresh "
           "process to receiving its logits: interpreter start + imports + loading canonical "
           "weights from .npz + one prediction, every on-disk cache empty"),
    Column("cold_start_iqr_s", "interquartile range of cold_start_s, seconds"),
    Column("warm_start_s", "the same with the on-disk caches (disk_cache) written by an earlier "
           "process; equal to cold_start_s, from the same processes, when disk_cache is empty"),
    Column("warm_start_iqr_s", "interquartile range of warm_start_s, seconds"),
    Column("disk_cache", "what a warm start reuses from disk; empty: nothing (cold = warm)",
           kind="text"),
    Column("first_prediction_s", "median, inside the cold processes, from weights loaded to "
           "logits returned: conversion + run-time compile/export + the prediction"),
    Column("needs_compiler", "the compiler or code generation it runs at run time; empty: none",
           kind="text"),
    Column("runs_offline", "True: a start with empty caches succeeded in a network namespace "
           "without interfaces (unshare -n); empty when unshare -n is not permitted here",
           kind="flag"),
    Column("samples", "processes behind import_s, rss_after_import_bytes and warm_start_s",
           integer=True),
    Column("cold_samples", "processes behind cold_start_s and first_prediction_s", integer=True),
    Column("python", "the interpreter's version (the children's sys.executable)", kind="text"),
)
FOOTPRINT_COLUMNS: tuple[str, ...] = tuple(c.name for c in FOOTPRINT_SCHEMA)
FOOTPRINT_STATUSES = ("ok", "unavailable", "error")
