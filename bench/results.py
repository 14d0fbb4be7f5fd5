"""Results on disk: results.csv (tidy, one row per impl x size x phase; columns in
bench.record), raw_times.jsonl (every sample behind each row's median), errors.jsonl (the
traceback behind each `error` row), meta.json (machine, versions, command, times, the
implementations and their code size when the sweep started).

Reading a run needs only this module and bench.record: no backend, torch or timing code.

Rows are appended and flushed to disk (fsync) one at a time as they finish, so a sweep
killed at any moment — SIGKILL included — leaves a valid CSV of every finished row; a
line cut short by the kill is dropped on reading, never half-parsed.

A file damaged otherwise (a bad hand edit, a foreign writer, a disk error) is met with a
DamagedFile error naming the file, the line and what to do; `set_aside_damaged` (what
--resume runs first) moves each damaged line to `<file>.damaged` beside it — data is never
deleted — and the sweep then runs again whatever those lines held.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

from bench.faults import crash_point
from bench.record import (ADDED_COLUMNS, ADDED_KEY_COLUMNS, COLUMNS, FLAG_TEXT, FOOTPRINT_COLUMNS, FOOTPRINT_SCHEMA,
                          FOOTPRINT_STATUSES, KEY_COLUMNS, LEGACY_COLUMNS, RAW_TIMES_FIELD, SCHEMA,
                          TRACEBACK_FIELD, cell_problem, row_key, upgrade_entry)

RESULTS_CSV = "results.csv"
RAW_TIMES = "raw_times.jsonl"
ERRORS = "errors.jsonl"
META_JSON = "meta.json"
RUN_FILES = (RESULTS_CSV, RAW_TIMES, ERRORS, META_JSON)


DAMAGED_SUFFIX = ".damaged"
# How to go on from a damaged file, said with every DamagedFile.
HOW_TO_RECOVER = ("`rnnbench sweep --resume --out DIR` sets damaged lines aside (into "
                  f"<file>{DAMAGED_SUFFIX}) and runs those cases again; or repair the line by hand")


class DamagedFile(ValueError):
    """A run file that cannot be read as written: the message names file, line and remedy."""


def _read_text(path: Path) -> str:
    # bytes that are not UTF-8 (disk garbage) survive as surrogates: they make their line
    # damaged, and go to the sidecar unchanged
    return path.read_bytes().decode("utf-8", errors="surrogateescape") if path.exists() else ""


def _write_text(path: Path, text: str) -> None:
    Path(path).write_bytes(text.encode("utf-8", errors="surrogateescape"))


def _without_torn_line(text: str) -> str:
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a row cut short by a kill: drop it
    return text


def _complete_lines(path: Path) -> str:
    return _without_torn_line(_read_text(path))


def _replace_text(path: Path, text: str) -> None:
    """Write a file so a reader (or a kill) sees the old or the new content, never half."""
    tmp = path.with_name(path.name + ".tmp")
    _write_text(tmp, text)
    os.replace(tmp, path)


# header line -> the schema of each older version (bench.record.LEGACY_COLUMNS)
LEGACY_SCHEMAS = {",".join(columns): tuple(c for c in SCHEMA if c.name in columns)
                  for columns in LEGACY_COLUMNS}


def _row_problem(record: str, schema=SCHEMA) -> str | None:
    """Why one CSV record (possibly several physical lines, for a quoted newline) is not
    a row of `schema`, or None."""
    try:
        parsed = list(csv.reader(io.StringIO(record)))
    except csv.Error as exc:
        return f"not CSV ({exc})"
    if len(parsed) != 1:
        return "not one CSV record"
    cells = parsed[0]
    if len(cells) != len(schema):
        return f"{len(cells)} fields, the header has {len(schema)}"
    for column, cell in zip(schema, cells):
        problem = cell_problem(column, cell)
        if problem:
            return problem
    return None


def scan_csv(path: Path) -> tuple[str, list[tuple[int, str, str]]]:
    """(header + every sound record, [(line number, text, why)] for each damaged one) of a
    results.csv, its torn last line (a kill mid-write) already dropped."""
    good, bad = _scan_records(path)
    return "".join(good), bad


def _scan_records(path: Path) -> tuple[list[str], list[tuple[int, str, str]]]:
    """([header, sound records...], damaged). A record whose quotes open a field across
    lines is judged whole; if that fails, its first line alone is damaged, and scanning
    goes on at the next line (one stray quote costs one row, not the rest of the file)."""
    text = _complete_lines(path)
    if not text:
        return [], []
    schema = _check_header(path, text)
    lines = text.splitlines(keepends=True)
    good, bad, i = [lines[0]], [], 1
    while i < len(lines):
        j, record = i, lines[i]
        while record.count('"') % 2 and j + 1 < len(lines):
            j += 1
            record += lines[j]
        problem = _row_problem(record, schema)
        if problem is None:
            good.append(record)
            i = j + 1
        elif j > i:  # the quote may be the damage: the first line alone is set aside
            bad.append((i + 1, lines[i], _row_problem(lines[i], schema) or problem))
            i += 1
        else:
            bad.append((i + 1, record, problem))
            i += 1
    return (good if schema is SCHEMA else _upgraded(good)), bad


def _cells(row: dict, columns) -> list:
    """A row's CSV cells in `columns` order: not measured (None, NaN) is an empty cell."""
    return ["" if row.get(c) is None or (isinstance(row.get(c), float) and math.isnan(row[c]))
            else row[c] for c in columns]


def _format_record(values) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def _upgraded(records: list[str]) -> list[str]:
    """Header and records written before ADDED_COLUMNS, in today's columns (the added
    ones hold the value every older row had). Damaged lines are never upgraded: they go
    to the sidecar as they were written."""
    rows = csv.DictReader(io.StringIO("".join(records)))
    return [_format_record(COLUMNS)] + [_format_record([upgrade_entry(r)[c] for c in COLUMNS])
                                         for r in rows]


def _jsonl_problem(line: str, required: tuple[str, ...]) -> str | None:
    try:
        entry = json.loads(line)
    except ValueError as exc:
        return f"not JSON ({exc})"
    if not isinstance(entry, dict):
        return "not a JSON object"
    entry = upgrade_entry(entry)
    missing = [k for k in required if k not in entry]
    if missing:
        return f"missing {', '.join(missing)}"
    try:
        row_key(entry)
    except (TypeError, ValueError):
        return "a key column is not of its type (an integer, True/False)"
    return None


JSONL_FIELDS = {RAW_TIMES: (*KEY_COLUMNS, "times_s"), ERRORS: (*KEY_COLUMNS, "traceback")}


def scan_jsonl(path: Path) -> tuple[str, list[tuple[int, str, str]]]:
    """(every sound line, [(line number, text, why)] of damaged ones) of a .jsonl file."""
    text = _complete_lines(path)
    good, bad = [], []
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        problem = _jsonl_problem(line, JSONL_FIELDS[path.name])
        entry = json.loads(line) if problem is None else None
        if entry is not None and path.name == RAW_TIMES:
            times = entry["times_s"]
            if not isinstance(times, list) or not all(isinstance(t, (int, float)) and not
                                                       isinstance(t, bool) for t in times):
                problem = "times_s is not a list of numbers"
        if problem is None and not set(ADDED_KEY_COLUMNS) <= set(entry):  # an older run's line
            line = json.dumps(upgrade_entry(entry, ADDED_KEY_COLUMNS)) + "\n"
        (good.append(line) if problem is None else bad.append((number, line, problem)))
    return "".join(good), bad


def _damaged(path: Path, bad: list) -> DamagedFile:
    number, _, why = bad[0]
    more = f" (and {len(bad) - 1} more damaged line(s))" if len(bad) > 1 else ""
    return DamagedFile(f"{path}:{number}: damaged line: {why}{more}; {HOW_TO_RECOVER}")


def _sidecar(path: Path, suffix: str = DAMAGED_SUFFIX) -> Path:
    return path.with_name(path.name + suffix)


def _append_aside(path: Path, lines: list[tuple[int, str, str]], suffix: str = DAMAGED_SUFFIX) -> None:
    """Append the lines, as they were, to the sidecar <file><suffix>, fsync'ed before the
    caller rewrites the file without them."""
    with open(_sidecar(path, suffix), "ab") as handle:
        for _, text, _ in lines:
            handle.write((text if text.endswith("\n") else text + "\n")
                         .encode("utf-8", errors="surrogateescape"))
        handle.flush()
        os.fsync(handle.fileno())


ORPHANED_SUFFIX = ".orphaned"


def reconcile_raw_times(run_dir) -> list[str]:
    """Before a resume, so that every timed row has exactly one entry of raw times:
    samples whose row never reached results.csv (a kill between the two writes), and all
    but the last entry of a key, move to raw_times.jsonl.orphaned; a timed row whose
    samples are gone (its line was damaged) moves to results.csv.damaged, to run again."""
    run_dir, notes = Path(run_dir), []
    path, csv_path = run_dir / RAW_TIMES, run_dir / RESULTS_CSV
    text, bad = scan_jsonl(path) if path.exists() else ("", [])
    if bad:
        raise _damaged(path, bad)
    records, bad = _scan_records(csv_path)
    if bad:
        raise _damaged(csv_path, bad)
    header, rows = (records[0], records[1:]) if records else ("", [])
    parsed = [next(csv.DictReader(io.StringIO(header + r))) for r in rows]
    timed = {row_key(r) for r in parsed if r["status"] == "ok" and r["samples"]}
    lines = text.splitlines(keepends=True)
    keys = [row_key(json.loads(line)) for line in lines]
    last = {key: i for i, key in enumerate(keys)}
    kept = {i for i, key in enumerate(keys) if key in timed and last[key] == i}
    if len(kept) < len(lines):
        aside = [(i + 1, line, "orphaned") for i, line in enumerate(lines) if i not in kept]
        _append_aside(path, aside, ORPHANED_SUFFIX)
        _replace_text(path, "".join(line for i, line in enumerate(lines) if i in kept))
        notes.append(f"{path}: {len(aside)} entr{'y' if len(aside) == 1 else 'ies'} of raw times "
                     f"with no row in {RESULTS_CSV} (a sweep killed between the two writes) "
                     f"moved to {path.name}{ORPHANED_SUFFIX}")
    with_times = {keys[i] for i in kept}
    lost = [i for i, r in enumerate(parsed) if row_key(r) in timed and row_key(r) not in with_times]
    if lost:
        _append_aside(csv_path, [(0, rows[i], "raw times lost") for i in lost])
        _replace_text(csv_path, header + "".join(r for i, r in enumerate(rows) if i not in lost))
        notes.append(f"{csv_path}: {len(lost)} row(s) whose raw times were lost moved to "
                     f"{csv_path.name}{DAMAGED_SUFFIX}; they run again")
    return notes


def set_aside_damaged(run_dir) -> list[str]:
    """Before a resume: move every damaged line of results.csv, raw_times.jsonl and
    errors.jsonl to <file>.damaged, and a damaged meta.json whole to meta.json.damaged;
    the sidecar is written (fsync) before the file is rewritten. -> one note per file
    that had anything set aside. A run written before ADDED_COLUMNS is then rewritten
    with them (and a note says so)."""
    run_dir, notes = Path(run_dir), []
    missing = _columns_missing(run_dir / RESULTS_CSV)
    for name, scan in ((RESULTS_CSV, scan_csv), (RAW_TIMES, scan_jsonl), (ERRORS, scan_jsonl)):
        path = run_dir / name
        good, bad = scan(path) if path.exists() else ("", [])
        if bad:
            _append_aside(path, bad)
            _replace_text(path, good)
            lines = ", ".join(str(number) for number, _, _ in bad[:10]) + (" ..." if len(bad) > 10 else "")
            notes.append(f"{path}: {len(bad)} damaged line(s) ({lines}: {bad[0][2]}) set aside "
                         f"into {_sidecar(path).name}")
    meta = run_dir / META_JSON
    try:
        read_meta(run_dir)
    except DamagedFile as exc:
        aside = _sidecar(meta)
        os.replace(meta, aside)
        notes.append(f"{exc.args[0].split(';')[0]}: moved to {aside.name}; the resume starts a new one")
    return notes + (_upgrade_schema(run_dir, missing) if missing else [])


def _columns_missing(csv_path: Path) -> tuple[str, ...]:
    """The ADDED_COLUMNS a results.csv was written without (an older version's), in order."""
    text = _complete_lines(csv_path)
    if not text:
        return ()
    present = {c.name for c in _check_header(csv_path, text)}
    return tuple(c for c in ADDED_COLUMNS if c not in present)


def _upgrade_schema(run_dir: Path, missing: tuple[str, ...]) -> list[str]:
    """A run written before some ADDED_COLUMNS (its damaged lines already set aside)
    rewritten with them, each file atomically, so old and new rows share one header."""
    for name, scan in ((RESULTS_CSV, scan_csv), (RAW_TIMES, scan_jsonl), (ERRORS, scan_jsonl)):
        if (run_dir / name).exists():
            _replace_text(run_dir / name, scan(run_dir / name)[0])
    added = ", ".join(f"{k} = {ADDED_COLUMNS[k] if ADDED_COLUMNS[k] != '' else '(not recorded)'}"
                      for k in missing)
    return [f"{run_dir}: written before the column(s) {', '.join(missing)}; its rows are "
            f"read as {added} (every row had that then) and its files rewritten with them"]


def _check_header(path: Path, text: str):
    """The schema the file was written with: today's, or an older version's, without some
    ADDED_COLUMNS (read as if it had them; RowWriter rewrites it in today's before appending)."""
    header = text.splitlines()[0]
    if header == ",".join(COLUMNS):
        return SCHEMA
    if header in LEGACY_SCHEMAS:
        return LEGACY_SCHEMAS[header]
    raise ValueError(f"{path}:1: its header has other columns than this version of rnnbench "
                     "writes; resume it with the version that started it, or use a new folder")


# A skipped row whose reason starts so was left out by the grid, not by the machine: a
# resume that names it (--impl, --cell) runs it (bench.spec.Grid.compile_skip writes it).
RETRY_SKIPPED_PREFIX = "compile-heavy:"


def drop_rows_to_retry(run_dir, retry=("error", "unavailable")) -> int:
    """Before a resume: remove rows whose status says they may succeed now (an error, a
    backend installed since) or that the grid left out (RETRY_SKIPPED_PREFIX), so they run
    again (or are skipped again, saying so) instead of counting as done."""
    path = Path(run_dir) / RESULTS_CSV
    records, bad = _scan_records(path)
    if bad:
        raise _damaged(path, bad)
    if not records:
        return 0
    header, *rows = records
    def again(record) -> bool:
        row = next(csv.DictReader(io.StringIO(header + record)))
        return row["status"] in retry or (row["status"] == "skipped"
                                          and row["reason"].startswith(RETRY_SKIPPED_PREFIX))
    keep = [r for r in rows if not again(r)]
    if len(keep) < len(rows):
        _replace_text(path, header + "".join(keep))
    return len(rows) - len(keep)


class RowWriter:
    """Appends rows to results.csv (header first when new), their raw times to
    raw_times.jsonl and the tracebacks of error rows to errors.jsonl."""

    def __init__(self, run_dir: Path):
        self.csv_path = Path(run_dir) / RESULTS_CSV
        self.raw_path = Path(run_dir) / RAW_TIMES
        self.errors_path = Path(run_dir) / ERRORS
        kept, bad = scan_csv(self.csv_path)
        if bad:
            raise _damaged(self.csv_path, bad)
        for path in (self.raw_path, self.errors_path):
            text = _read_text(path)
            if text != _without_torn_line(text):  # a torn last line: never appended to
                _replace_text(path, _without_torn_line(text))
        if kept != _read_text(self.csv_path):
            _replace_text(self.csv_path, kept)  # repair a torn last line before appending
        self._csv = open(self.csv_path, "a", newline="")
        self._raw = open(self.raw_path, "a")
        self._errors = open(self.errors_path, "a")
        if not kept:
            self._append(self._csv, _format_record(COLUMNS))

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
            crash_point("between-raw-and-row")
        if row.get(TRACEBACK_FIELD):
            self._append(self._errors, json.dumps({**key, "reason": row.get("reason"),
                                                   "traceback": row[TRACEBACK_FIELD]}) + "\n")
        self._append(self._csv, _format_record(_cells(row, COLUMNS)))

    def close(self) -> None:
        self._csv.close()
        self._raw.close()
        self._errors.close()


def read_rows(run_dir) -> list[dict]:
    """Every complete row of a run's results.csv, as dicts of strings; DamagedFile if a
    line is damaged."""
    path = Path(run_dir) / RESULTS_CSV
    text, bad = scan_csv(path)
    if bad:
        raise _damaged(path, bad)
    return list(csv.DictReader(io.StringIO(text))) if text else []


def done_keys(run_dir) -> set[tuple]:
    return {row_key(row) for row in read_rows(run_dir)}


def read_errors(run_dir) -> dict[tuple, dict]:
    """key -> {reason, traceback} of the last traceback written for each key (a resume
    runs error rows again; an older traceback of a key is superseded by a newer one)."""
    path = Path(run_dir) / ERRORS
    text, bad = scan_jsonl(path)
    if bad:
        raise _damaged(path, bad)
    errors = {}
    for line in text.splitlines():
        entry = json.loads(line)
        errors[row_key(entry)] = {"reason": entry.get("reason"), "traceback": entry["traceback"]}
    return errors


def write_meta(run_dir, meta: dict) -> None:
    path = Path(run_dir) / META_JSON
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w") as handle:
        handle.write(json.dumps(meta, indent=2, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    crash_point("meta-replace")
    os.replace(tmp, path)  # atomic: a reader never sees half a file


def read_meta(run_dir) -> dict:
    """meta.json as a dict ({} when there is none); DamagedFile if it is not a JSON object."""
    path = Path(run_dir) / META_JSON
    if not path.exists():
        return {}
    try:
        meta = json.loads(_read_text(path))
    except ValueError as exc:
        where = f"line {exc.lineno} column {exc.colno}: " if hasattr(exc, "lineno") else ""
        raise DamagedFile(f"{path}: damaged JSON ({where}{getattr(exc, 'msg', exc)}); "
                          f"{HOW_TO_RECOVER}") from exc
    if not isinstance(meta, dict):
        raise DamagedFile(f"{path}: damaged: a JSON {type(meta).__name__}, not an object; "
                          f"{HOW_TO_RECOVER}")
    return meta


def load_run(run_dir):
    """One run as a pandas DataFrame, typed, with `run` (folder name) and the machine's
    CPU from meta.json as columns, so several runs concatenate into one frame."""
    import pandas as pd

    run_dir = Path(run_dir)
    text, bad = scan_csv(run_dir / RESULTS_CSV)
    if bad:
        raise _damaged(run_dir / RESULTS_CSV, bad)
    if text.count("\n") < 2:
        raise ValueError(f"{run_dir}: no {RESULTS_CSV} with rows")
    frame = pd.read_csv(io.StringIO(text), keep_default_na=True)
    for column in ("noisy", "bidirectional"):  # flags: a column pandas may read as text
        frame[column] = frame[column].map({**FLAG_TEXT, True: True, False: False})
    meta = read_meta(run_dir)
    frame["run"] = run_dir.name
    frame["cpu_model"] = meta.get("machine", {}).get("cpu_model")
    return frame


def load_runs(run_dirs):
    """Several runs (machines, environments) as one frame."""
    import pandas as pd

    return pd.concat([load_run(d) for d in run_dirs], ignore_index=True)


# --- footprint.csv and footprint_raw.jsonl (bench.measure.footprint) -----------------------
# One row per implementation (bench.record.FOOTPRINT_SCHEMA) and one JSON line per process
# behind its medians, written like results.csv: appended and fsync'ed as each implementation
# finishes, its raw lines before its row, so a kill leaves whole rows (a torn last line is
# dropped on reading) and at worst raw lines of an implementation with no row, which the
# next measurement of that run drops (retain_footprint).
FOOTPRINT_CSV = "footprint.csv"
FOOTPRINT_RAW = "footprint_raw.jsonl"
IMPORTTIME_DIR = "importtime"  # importtime/<impl>.txt: `python -X importtime` of one process
FOOTPRINT_FILES = (FOOTPRINT_CSV, FOOTPRINT_RAW)


def _footprint_problem(line: str) -> str | None:
    problem = _row_problem(line, FOOTPRINT_SCHEMA)
    if problem is None:
        status = next(csv.reader(io.StringIO(line)))[FOOTPRINT_COLUMNS.index("status")]
        if status not in FOOTPRINT_STATUSES:
            return f"status is {status!r}, not one of {', '.join(FOOTPRINT_STATUSES)}"
    return problem


def scan_footprint(path: Path) -> tuple[list[str], list[tuple[int, str, str]]]:
    """([header, sound rows...], [(line number, text, why)] of damaged ones) of a
    footprint.csv. Rows are one line each (reasons are written on one line)."""
    text = _complete_lines(Path(path))
    if not text:
        return [], []
    lines = text.splitlines(keepends=True)
    if lines[0].rstrip("\n") != ",".join(FOOTPRINT_COLUMNS):
        raise ValueError(f"{path}:1: its header has other columns than this version of rnnbench "
                         "writes (bench.record.FOOTPRINT_SCHEMA); measure into a new folder")
    good, bad = [lines[0]], []
    for number, line in enumerate(lines[1:], 2):
        problem = _footprint_problem(line)
        (good.append(line) if problem is None else bad.append((number, line, problem)))
    return good, bad


def read_footprint_rows(run_dir) -> list[dict]:
    """Every row of a run's footprint.csv as dicts of strings ([] without the file);
    DamagedFile if a line is damaged."""
    path = Path(run_dir) / FOOTPRINT_CSV
    good, bad = scan_footprint(path)
    if bad:
        raise _damaged(path, bad)
    return list(csv.DictReader(io.StringIO("".join(good)))) if good else []


def read_footprint(run_dir):
    """A run's footprint.csv as a typed pandas DataFrame (numbers float, counts Int64,
    runs_offline boolean with <NA> when unknown, text "" when empty) with the run folder's
    name as `run`; None when the run has no footprint.csv."""
    import pandas as pd

    run_dir = Path(run_dir)
    if not (run_dir / FOOTPRINT_CSV).exists():
        return None
    rows = read_footprint_rows(run_dir)
    frame = pd.DataFrame(rows, columns=list(FOOTPRINT_COLUMNS), dtype=object).fillna("")
    for column in FOOTPRINT_SCHEMA:
        values = frame[column.name]
        if column.kind == "flag":
            frame[column.name] = values.map({**FLAG_TEXT, "": pd.NA}).astype("boolean")
        elif column.kind == "number":
            numbers = pd.to_numeric(values.mask(values == ""), errors="raise")
            frame[column.name] = numbers.astype("Int64" if column.integer else "float64")
        else:
            frame[column.name] = values.astype(str)
    frame["run"] = run_dir.name
    return frame


def retain_footprint(run_dir, redo) -> list[str]:
    """Before measuring footprints into a run: remove the rows of the implementations in
    `redo` (to be measured again) and every raw line whose implementation has no row left;
    damaged lines go to <file>.damaged (the implementation is then measured again). ->
    notes on what was set aside."""
    run_dir, redo, notes = Path(run_dir), set(redo), []
    path, raw_path = run_dir / FOOTPRINT_CSV, run_dir / FOOTPRINT_RAW
    good, bad = scan_footprint(path)
    if bad:
        _append_aside(path, bad)
        notes.append(f"{path}: {len(bad)} damaged line(s) set aside into {_sidecar(path).name}")
    header, rows = (good[0], good[1:]) if good else ("", [])
    kept = [r for r in rows if next(csv.reader(io.StringIO(r)))[0] not in redo]
    if bad or len(kept) < len(rows):
        _replace_text(path, header + "".join(kept))
    with_rows = {next(csv.reader(io.StringIO(r)))[0] for r in kept}
    text = _read_text(raw_path)
    lines, damaged, keep_lines = _without_torn_line(text).splitlines(keepends=True), [], []
    for number, line in enumerate(lines, 1):
        try:
            impl = json.loads(line)["impl"]
        except (ValueError, KeyError, TypeError):
            damaged.append((number, line, "not a JSON object with impl"))
            continue
        if impl in with_rows:
            keep_lines.append(line)
    if damaged:
        _append_aside(raw_path, damaged)
        notes.append(f"{raw_path}: {len(damaged)} damaged line(s) set aside into {_sidecar(raw_path).name}")
    if "".join(keep_lines) != text:
        _replace_text(raw_path, "".join(keep_lines))
    return notes


class FootprintWriter:
    """Appends one implementation at a time: its raw per-process lines, then its row."""

    def __init__(self, run_dir):
        self.csv_path = Path(run_dir) / FOOTPRINT_CSV
        self.raw_path = Path(run_dir) / FOOTPRINT_RAW
        good, bad = scan_footprint(self.csv_path)
        if bad:
            raise _damaged(self.csv_path, bad)
        for path, text in ((self.csv_path, "".join(good)), (self.raw_path, None)):
            current = _read_text(path)
            wanted = _without_torn_line(current) if text is None else text
            if current != wanted:  # a torn last line: never appended to
                _replace_text(path, wanted)
        self._csv = open(self.csv_path, "a", newline="")
        self._raw = open(self.raw_path, "a")
        if not good:
            RowWriter._append(self._csv, _format_record(FOOTPRINT_COLUMNS))

    def write(self, row: dict, raw: list[dict]) -> None:
        for entry in raw:
            RowWriter._append(self._raw, json.dumps({"impl": row["impl"], **entry}) + "\n")
        RowWriter._append(self._csv, _format_record(_cells(row, FOOTPRINT_COLUMNS)))

    def close(self) -> None:
        self._csv.close()
        self._raw.close()

    def __enter__(self) -> "FootprintWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
