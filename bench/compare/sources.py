"""What `rnnbench compare` reads, in one form: a run folder (results.csv + raw_times.jsonl +
meta.json) or a pytest-benchmark JSON (what `tox -e bench` saves) becomes a Source: rows
keyed by bench.record.KEY_COLUMNS, each with its median, raw samples and the other
measurements, and the machine in meta.json's layout (bench.measure.machine.machine_meta).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from bench.measure.machine import SIMD_FLAGS
from bench.record import KEY_COLUMNS, row_key
from bench.results import (HOW_TO_RECOVER, RAW_TIMES, RESULTS_CSV, DamagedFile, read_meta,
                           read_rows, scan_jsonl)

RUN_FOLDER = "run folder"
PYTEST_BENCHMARK = "pytest-benchmark JSON"
# tests/benchmarks/test_phases.py times bench.spec.Case's default dtype only; files saved
# before its extra_info named the dtype are read as that.
PYTEST_BENCHMARK_DTYPE = "float32"


@dataclass(frozen=True)
class Entry:
    """One row of a source. `samples`: the raw per-call seconds behind `median_s`, empty
    when the source did not keep them (a JSON saved without --benchmark-save-data, an
    accuracy row, a row that is not ok)."""
    key: tuple  # typed, in KEY_COLUMNS order
    status: str
    reason: str = ""
    median_s: float | None = None
    samples: tuple[float, ...] = ()
    peak_mem_bytes: float | None = None
    max_err: float | None = None
    test_accuracy: float | None = None
    compile_s: float | None = None

    def named(self) -> dict:
        return dict(zip(KEY_COLUMNS, self.key))


@dataclass
class Source:
    label: str
    path: Path
    kind: str  # RUN_FOLDER | PYTEST_BENCHMARK
    machine: dict  # meta.json's "machine" layout; a key the source does not record is absent
    meta: dict  # started, finished, command (what the header quotes)
    entries: dict[tuple, Entry] = field(default_factory=dict)


def split_host(text) -> tuple[Path, str | None]:
    """`RUN_DIR@HOST` -> (RUN_DIR, HOST): one host of a distributed run, compared like a
    run of its own; a path that exists as written is never split."""
    text = str(text)
    folder, at, host = text.rpartition("@")
    if at and host and not Path(text).exists() and Path(folder).is_dir():
        return Path(folder), host
    return Path(text), None


def load_sources(paths) -> list[Source]:
    """Each path read as a run folder (RUN_DIR@HOST: that host's rows and machine) or a
    pytest-benchmark JSON, labelled so that no two labels are the same."""
    split = [split_host(p) for p in paths]
    labels = unique_labels([path for path, _ in split])
    return [load_source(path, label + (f"@{host}" if host else ""), host=host)
            for (path, host), label in zip(split, labels)]


def unique_labels(paths: list[Path]) -> list[str]:
    """A folder's name or a file's stem; where two are the same, as many parent folders as
    it takes to tell them apart (runs/a/quick vs runs/b/quick: a/quick, b/quick)."""
    resolved = [p.resolve() for p in paths]

    def label(path: Path, depth: int) -> str:
        parts = [*path.parent.parts[1:], path.stem if path.suffix == ".json" else path.name]
        return "/".join(parts[-depth:])
    labels = [label(p, 1) for p in resolved]
    for depth in range(2, max(len(p.parts) for p in resolved) + 1):
        # a label two different paths share (the same path given twice is the same run)
        clashing = {x for x in labels if len({p for p, y in zip(resolved, labels) if y == x}) > 1}
        if not clashing:
            break
        labels = [label(p, depth) if x in clashing else x for p, x in zip(resolved, labels)]
    return labels


def load_source(path, label: str | None = None, host: str | None = None) -> Source:
    path = Path(path)
    if path.is_dir():
        return read_run_folder(path, label or path.name, host)
    if host:
        raise FileNotFoundError(f"{path}@{host}: a host is named only after a run folder")
    if path.is_file():
        return read_pytest_benchmark(path, label or path.stem)
    raise FileNotFoundError(f"{path}: no such run folder or pytest-benchmark JSON")


# ---------------------------------------------------------------- run folders

def _number(text) -> float | None:
    if text is None or text == "":
        return None
    value = float(text)
    return None if math.isnan(value) else value


def _raw_times(run_dir: Path) -> dict[tuple, list[float]]:
    """key -> samples of raw_times.jsonl (the last entry of a key: a resume supersedes)."""
    path = run_dir / RAW_TIMES
    if not path.exists():
        return {}
    text, bad = scan_jsonl(path)
    if bad:
        number, _, why = bad[0]
        raise DamagedFile(f"{path}:{number}: damaged line: {why}; {HOW_TO_RECOVER}")
    return {row_key(entry): entry["times_s"] for entry in map(json.loads, text.splitlines())}


def read_run_folder(run_dir: Path, label: str, host: str | None = None) -> Source:
    """A run's rows and machine; with `host`, that host's rows and its machine (meta.json
    hosts). A distributed run read whole has no one machine: its machine fields are
    'not recorded' (the warning then says it cannot tell) unless one host ran every row."""
    if not (run_dir / RESULTS_CSV).exists():
        raise FileNotFoundError(f"{run_dir}: no {RESULTS_CSV}; not a run folder of `rnnbench sweep`")
    rows = read_rows(run_dir)  # old runs come back with today's columns (bench.results)
    meta = read_meta(run_dir)
    hosts = sorted({r.get("host") or "" for r in rows} - {""})
    if host is not None:
        if host not in hosts:
            raise ValueError(f"{run_dir}: no row was measured on host {host!r}; "
                             f"its hosts: {', '.join(hosts) or 'not recorded'}")
        rows = [r for r in rows if r.get("host") == host]
    if not rows:
        raise ValueError(f"{run_dir}: {RESULTS_CSV} has no rows")
    raw = _raw_times(run_dir)
    entries = {}
    for row in rows:
        key = row_key(row)
        ok = row["status"] == "ok"
        entries[key] = Entry(key, row["status"], row.get("reason") or "",
                             _number(row["median_s"]) if ok else None,
                             tuple(raw.get(key, ())) if ok else (),
                             *(_number(row[c]) for c in ("peak_mem_bytes", "max_err",
                                                         "test_accuracy", "compile_s")))
    return Source(label, run_dir, RUN_FOLDER, _machine_of_run(meta, hosts, host),
                  {k: meta.get(k) for k in ("started", "finished", "command")}, entries)


def _machine_of_run(meta: dict, hosts: list[str], host: str | None) -> dict:
    """The machine that measured the rows compared: the run's own, or (a distributed run)
    the named host's, or its only host's; several hosts unnamed: none."""
    per_host = meta.get("hosts") or {}
    if not per_host:
        return meta.get("machine") or {}
    chosen = host or (hosts[0] if len(hosts) == 1 else None)
    return (per_host.get(chosen) or {}).get("machine") or {} if chosen else {}


# ---------------------------------------------------------------- pytest-benchmark JSON

# Where each key column is in a benchmark's `params` (test_phases.py's parametrize names),
# for files saved before its extra_info held the whole key.
def _from_params(params: dict) -> dict:
    found = {}
    if "name" in params:
        found["impl"] = params["name"]
    for name in ("cell", "phase"):
        if name in params:
            found[name] = params[name]
    size, structure = params.get("size"), params.get("structure")
    if isinstance(size, (list, tuple)) and len(size) == 4:
        found.update(zip(("batch_size", "seq_len", "input_size", "hidden_size"), size))
    if isinstance(structure, (list, tuple)) and len(structure) == 2:
        found.update(num_layers=structure[0], bidirectional=structure[1])
    return found


def benchmark_key(benchmark: dict) -> tuple:
    """A benchmark's key: extra_info (test_phases.py writes the whole key there), then its
    params, then the suite's one dtype; ValueError naming what is missing."""
    named = {"dtype": PYTEST_BENCHMARK_DTYPE, **_from_params(benchmark.get("params") or {}),
             **(benchmark.get("extra_info") or {})}
    missing = [k for k in KEY_COLUMNS if k not in named]
    if missing:
        raise ValueError(f"benchmark {benchmark.get('name')!r} lacks {', '.join(missing)} in its "
                         "extra_info and params: not one of tests/benchmarks/test_phases.py's")
    return row_key(named)


def _machine_of(document: dict) -> dict:
    """machine_info and commit_info in meta.json's layout; BLAS, library versions and
    GPUs are not recorded by pytest-benchmark, so those keys are absent (unknown)."""
    info = document.get("machine_info") or {}
    cpu = info.get("cpu") or {}
    flags = set(cpu.get("flags") or ())
    commit = document.get("commit_info") or {}
    machine = {"cpu_model": cpu.get("brand_raw"), "cores": cpu.get("count"),
               "platform": "-".join(str(info[k]) for k in ("system", "release", "machine") if info.get(k)),
               "python": info.get("python_version")}
    if flags:
        machine["cpu_features"] = {"simd": [f for f in SIMD_FLAGS if f in flags]}
    if commit.get("id"):
        machine["git_commit"] = commit["id"] + ("-dirty" if commit.get("dirty") else "")
    return {k: v for k, v in machine.items() if v not in (None, "")}


def read_pytest_benchmark(path: Path, label: str) -> Source:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(document, dict) or not isinstance(document.get("benchmarks"), list):
        raise ValueError(f"{path}: not a pytest-benchmark JSON (no 'benchmarks' list) nor a run folder")
    entries, names = {}, {}
    for benchmark in document["benchmarks"]:
        try:
            key = benchmark_key(benchmark)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
        if key in entries:
            raise ValueError(f"{path}: benchmarks {names[key]!r} and {benchmark.get('name')!r} "
                             "have the same key: they cannot be told apart")
        stats = benchmark.get("stats") or {}
        # stats.data: per-call seconds of each round (pytest-benchmark divides by the
        # round's iterations), present only when saved with --benchmark-save-data
        samples = stats.get("data") if isinstance(stats.get("data"), list) else []
        entries[key] = Entry(key, "ok", "", _number(stats.get("median")),
                             tuple(float(s) for s in samples))
        names[key] = benchmark.get("name")
    meta = {"started": document.get("datetime"),
            "command": f"pytest-benchmark {document.get('version', '')}".strip()}
    return Source(label, path, PYTEST_BENCHMARK, _machine_of(document), meta, entries)

