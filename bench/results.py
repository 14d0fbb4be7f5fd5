"""Results on disk: results.csv (tidy, one row per impl x size x phase; columns in
bench.record), raw_times.jsonl (every sample behind each row's median), errors.jsonl (the
traceback behind each `error` row), meta.json (machine, versions, command, times, the
implementations and their code size when the sweep started).

Reading a run needs only this module and bench.record: no backend, torch or timing code.

Rows are appended and flushed to disk (fsync) one at a time as they finish, so a sweep
killed at any moment — SIGKILL included — leaves a valid CSV of every finished row; a
line cut short by the kill is dropped on reading, never half-parsed.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

from bench.record import (COLUMNS, KEY_COLUMNS, RAW_TIMES_FIELD, TRACEBACK_FIELD, row_key)

RESULTS_CSV = "results.csv"
RAW_TIMES = "raw_times.jsonl"
ERRORS = "errors.jsonl"
META_JSON = "meta.json"
RUN_FILES = (RESULTS_CSV, RAW_TIMES, ERRORS, META_JSON)


def _complete_lines(path: Path) -> str:
    text = path.read_text() if path.exists() else ""
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a row cut short by a kill: drop it
    return text


def _replace_text(path: Path, text: str) -> None:
    """Write a file so a reader (or a kill) sees the old or the new content, never half."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _check_header(path: Path, text: str) -> None:
    if text and text.splitlines()[0] != ",".join(COLUMNS):
        raise ValueError(f"{path} has other columns than this version of rnnbench writes; "
                         "resume it with the version that started it, or use a new folder")


def drop_rows_to_retry(run_dir, retry=("error", "unavailable")) -> int:
    """Before a resume: remove rows whose status says they may succeed now (an error, a
    backend installed since), so they run again instead of counting as done."""
    path = Path(run_dir) / RESULTS_CSV
    text = _complete_lines(path)
    if not text:
        return 0
    _check_header(path, text)
    lines = text.splitlines(keepends=True)
    rows = list(csv.DictReader(io.StringIO(text)))
    keep = [line for line, row in zip(lines[1:], rows) if row["status"] not in retry]
    if len(keep) < len(rows):
        _replace_text(path, lines[0] + "".join(keep))
    return len(rows) - len(keep)


class RowWriter:
    """Appends rows to results.csv (header first when new), their raw times to
    raw_times.jsonl and the tracebacks of error rows to errors.jsonl."""

    def __init__(self, run_dir: Path):
        self.csv_path = Path(run_dir) / RESULTS_CSV
        self.raw_path = Path(run_dir) / RAW_TIMES
        self.errors_path = Path(run_dir) / ERRORS
        kept = _complete_lines(self.csv_path)
        _check_header(self.csv_path, kept)
        if kept != (self.csv_path.read_text() if self.csv_path.exists() else ""):
            _replace_text(self.csv_path, kept)  # repair a torn last line before appending
        self._csv = open(self.csv_path, "a", newline="")
        self._raw = open(self.raw_path, "a")
        self._errors = open(self.errors_path, "a")
        if not kept:
            self._append(self._csv, self._format(COLUMNS))

    @staticmethod
    def _format(values) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(values)
        return buffer.getvalue()

    @staticmethod
    def _append(handle, line: str) -> None:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())

    def write(self, row: dict) -> None:
        key = {k: row[k] for k in KEY_COLUMNS}
        raw = row.get(RAW_TIMES_FIELD)
        if raw:
            self._append(self._raw, json.dumps({**key, "times_s": raw}) + "\n")
        if row.get(TRACEBACK_FIELD):
            self._append(self._errors, json.dumps({**key, "reason": row.get("reason"),
                                                   "traceback": row[TRACEBACK_FIELD]}) + "\n")
        cells = ["" if row.get(c) is None or (isinstance(row.get(c), float) and math.isnan(row[c]))
                 else row[c] for c in COLUMNS]
        self._append(self._csv, self._format(cells))

    def close(self) -> None:
        self._csv.close()
        self._raw.close()
        self._errors.close()


def read_rows(run_dir) -> list[dict]:
    """Every complete row of a run's results.csv, as dicts of strings."""
    text = _complete_lines(Path(run_dir) / RESULTS_CSV)
    return list(csv.DictReader(io.StringIO(text))) if text else []


def done_keys(run_dir) -> set[tuple]:
    return {row_key(row) for row in read_rows(run_dir)}


def read_errors(run_dir) -> dict[tuple, dict]:
    """key -> {reason, traceback} of the last traceback written for each key (a resume
    runs error rows again; an older traceback of a key is superseded by a newer one)."""
    path = Path(run_dir) / ERRORS
    text = _complete_lines(path)
    errors = {}
    for line in text.splitlines():
        entry = json.loads(line)
        errors[row_key(entry)] = {"reason": entry.get("reason"), "traceback": entry["traceback"]}
    return errors


def write_meta(run_dir, meta: dict) -> None:
    path = Path(run_dir) / META_JSON
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    os.replace(tmp, path)  # atomic: a reader never sees half a file


def read_meta(run_dir) -> dict:
    path = Path(run_dir) / META_JSON
    return json.loads(path.read_text()) if path.exists() else {}


def load_run(run_dir):
    """One run as a pandas DataFrame, typed, with `run` (folder name) and the machine's
    CPU from meta.json as columns, so several runs concatenate into one frame."""
    import pandas as pd

    run_dir = Path(run_dir)
    text = _complete_lines(run_dir / RESULTS_CSV)
    if not text:
        raise ValueError(f"{run_dir}: no {RESULTS_CSV} with rows")
    frame = pd.read_csv(io.StringIO(text), keep_default_na=True)
    frame["noisy"] = frame["noisy"].map({True: True, False: False, "True": True, "False": False})
    meta = read_meta(run_dir)
    frame["run"] = run_dir.name
    frame["cpu_model"] = meta.get("machine", {}).get("cpu_model")
    return frame


def load_runs(run_dirs):
    """Several runs (machines, environments) as one frame."""
    import pandas as pd

    return pd.concat([load_run(d) for d in run_dirs], ignore_index=True)
