"""Footprint and cold start per implementation: what it costs to install and to *start*,
which steady-state timings do not show (a serverless call or a CLI tool pays a start on
every invocation).

For one fixed model (FOOTPRINT_CASE: the quick preset's article size, batch 1) each
implementation gets one row of footprint.csv (columns: bench.record.FOOTPRINT_SCHEMA):

- installed size: the distributions a fresh process imported to load the implementation
  and predict (importlib.metadata), and the exported model file where there is one;
- import time and resident memory right after the import, inside fresh processes;
- cold start: wall seconds, measured here, from spawning a fresh process
  (bench.measure.footprint_child) to receiving its logits, every on-disk cache empty;
  warm start: the same with the caches a previous process wrote (numba's machine code,
  inductor's and Triton's caches, the exported ONNX model); for an implementation with no
  on-disk cache both are the same processes;
- whether it needs a compiler at run time, and whether it starts without a network.

How the processes run, per implementation (after the parent made the in-process backend,
which already read the library into the page cache and wrote the .pyc files: a separate
warm-up process measured no different from the first cold one, so there is none):
1. cold processes, each with fresh empty caches (at most `cold_repeats`, and for
   implementations that compile at most `compile_cold_repeats`: numba's cold start compiles
   for ~10 s); the first one's cache is kept for the warm processes;
2. warm processes reusing it (an implementation without an on-disk cache has no cold ones:
   its processes count as both);
3. one more warm process under `python -X importtime` for importtime/<impl>.txt, in no
   median (it adds ~15 ms to numpy's 0.22 s start: measured side by side).
Every process runs in a network namespace without interfaces (`unshare -n`, ~4 ms) where
permitted, so every start, export and compile is also the offline check; if the first
fails offline it is run again online, and then all that follow: runs_offline is False and
the row says why.
Every child is pinned to one thread (THREAD_ENV: what bench.measure.machine.use_threads
does, as the environment a fresh process reads), and its logits must equal the in-process
backend's predict of the same weights within the implementation's tolerance: a fast start
that computes garbage is an error row, not a result.
"""
from __future__ import annotations

import functools
import json
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

import impls
from bench.results import (IMPORTTIME_DIR, FootprintWriter, read_footprint_rows,
                           read_meta, retain_footprint, write_meta)

CHILD_MODULE = "bench.measure.footprint_child"
ROOT = Path(__file__).resolve().parents[2]  # the checkout (or site-packages) holding bench/


@dataclass(frozen=True)
class FootprintCase:
    """The model every start loads and predicts once: the quick preset's article size."""
    cell: str = "rnn_tanh"
    batch_size: int = 1
    seq_len: int = 64
    input_size: int = 32
    hidden_size: int = 128
    num_classes: int = 10
    dtype: str = "float32"


FOOTPRINT_CASE = FootprintCase()


@dataclass(frozen=True)
class FootprintConfig:
    repeats: int = 5  # processes per median
    compile_cold_repeats: int = 3  # at most this many cold starts of a compiling implementation
    cold_repeats: int | None = None  # at most this many of any with an on-disk cache (None: repeats)
    timeout_s: float = 120.0  # per child process
    compile_timeout_s: float = 600.0  # per child of a compile-heavy implementation (inductor)
    case: FootprintCase = field(default_factory=FootprintCase)
    child_module: str = CHILD_MODULE


@dataclass(frozen=True)
class StartCost:
    """What an implementation does at start that a plain library import does not."""
    disk_cache: str = ""  # what a warm start reuses from disk (empty: nothing)
    needs_compiler: str = ""  # compiler / code generation at run time (empty: none)
    compiles: bool = False  # its cold start compiles: fewer cold repeats


_ONNX = StartCost("exported ONNX model (cache_dir)")
_INDUCTOR = "inductor/triton caches (TORCHINDUCTOR_CACHE_DIR, TRITON_CACHE_DIR)"
# Per implementation (impls.names()); a test checks every registered one is described.
START_COSTS: dict[str, StartCost] = {
    "numpy": StartCost(),
    "torch": StartCost(),
    "numba": StartCost("numba machine code (NUMBA_CACHE_DIR)", "LLVM via llvmlite (bundled)", True),
    # TorchScript's profiling executor optimises in memory, per process: nothing on disk
    "torchscript": StartCost("", "TorchScript JIT (in-process)"),
    "torch_compile": StartCost(_INDUCTOR, "C++ compiler + inductor codegen", True),
    "onnx_fp32": _ONNX,
    "onnx_int8": _ONNX,
    "onnx_native": _ONNX,
    "torch_cuda": StartCost(),
    "torch_compile_cuda": StartCost(_INDUCTOR, "Triton (LLVM) + inductor codegen", True),
    "cupy": StartCost("CuPy kernel cache (CUPY_CACHE_DIR)", "NVRTC (CUDA runtime compiler)", True),
}

# One thread in every library, as the environment a fresh process reads at start: what
# machine.use_threads(1) sets in-process (BLAS/OpenMP, torch's intra-op pool, numba);
# ONNX Runtime's session reads backend.threads, which the child sets. Inductor compiles
# in this process instead of a pool of compile workers.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "NUMBA_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1",
              "TORCHINDUCTOR_COMPILE_THREADS": "1"}


def cache_env(folder: Path) -> dict[str, str]:
    """Every on-disk cache a child may write, inside `folder` (empty: a cold start)."""
    return {"NUMBA_CACHE_DIR": str(folder / "numba"),
            "TORCHINDUCTOR_CACHE_DIR": str(folder / "inductor"),
            "TRITON_CACHE_DIR": str(folder / "triton"), "CUPY_CACHE_DIR": str(folder / "cupy")}


# --- one child process ---------------------------------------------------------------
@dataclass
class Start:
    """One child process: its wall time to the logits and what it reported."""
    kind: str  # cold | warm | cold_and_warm; in no median: importtime | offline_attempt
    offline: bool = False
    wall_s: float | None = None
    returncode: int | None = None
    measured: dict | None = None  # the child's first line
    imported: dict | None = None  # its second line
    stderr: str = ""
    error: str | None = None  # why this start does not count; None: it does
    max_rel_error: float | None = None

    def raw(self) -> dict:
        """Its footprint_raw.jsonl entry (logits and module list left out)."""
        measured = {k: v for k, v in (self.measured or {}).items() if k != "logits"}
        entry = {"kind": self.kind, "offline": self.offline, "wall_s": self.wall_s,
                 "returncode": self.returncode, **measured, "max_rel_error": self.max_rel_error}
        if self.error:
            entry.update(error=self.error, stderr_tail=self.stderr[-4000:])
        return entry


def _read_all(proc, deadline: float) -> tuple[bytes, float | None]:
    """(stdout until EOF, perf_counter when its first line arrived); TimeoutError at the
    deadline. Raw reads on the pipe: a buffered reader could hold the first line back."""
    fd, out, first_at = proc.stdout.fileno(), b"", None
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            raise TimeoutError
        if not select.select([fd], [], [], left)[0]:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return out, first_at
        out += chunk
        if first_at is None and b"\n" in out:
            first_at = time.perf_counter()


def _one_line(text: str, limit: int = 600) -> str:
    """The last lines of a child's stderr (its traceback's end), on one line for a CSV cell;
    -X importtime lines left out."""
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.startswith("import time:")]
    joined = " | ".join(lines[-6:])
    return joined if len(joined) <= limit else "..." + joined[-limit:]


def spawn(argv: list[str], env: dict, timeout_s: float, start: Start) -> Start:
    """Run one child, timing spawn -> first stdout line (the logits) from here."""
    with tempfile.TemporaryFile() as stderr:
        began = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, env=env, bufsize=0,
                                start_new_session=True)  # its own group: a timeout kills it all
        try:
            out, first_at = _read_all(proc, began + timeout_s)
            start.returncode = proc.wait(timeout=max(1.0, began + timeout_s - time.perf_counter()))
        except (TimeoutError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            out, first_at = b"", None
            start.error = f"timed out after {timeout_s:g} s"
        finally:
            proc.stdout.close()
        stderr.seek(0)
        start.stderr = stderr.read().decode("utf-8", errors="replace")
    lines = out.decode("utf-8", errors="replace").splitlines()
    if start.error is None:
        if start.returncode != 0 or len(lines) < 2:
            start.error = (f"exited with {start.returncode}" if start.returncode != 0
                           else "printed no logits")
        else:
            try:
                start.measured, start.imported = json.loads(lines[0]), json.loads(lines[1])
                start.wall_s = first_at - began
            except ValueError:
                start.error = f"printed {lines[0][:200]!r}, not a JSON measurement"
    if start.error and start.stderr.strip():
        start.error += f": {_one_line(start.stderr)}"
    return start


@functools.lru_cache(maxsize=1)
def offline_prefix() -> tuple[tuple[str, ...] | None, str]:
    """(the command prefix that runs a process without network, or None; why not). Tries
    `unshare -n` (root, or CAP_SYS_ADMIN), then `unshare -rn` (an unprivileged user
    namespace mapping this user to root inside)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None, "no unshare command on this machine"
    for prefix in ((unshare, "-n"), (unshare, "-r", "-n")):
        try:
            if subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0:
                return prefix, ""
        except (OSError, subprocess.TimeoutExpired):
            pass
    return None, "unshare -n is not permitted here (no network namespace): offline not checked"


# --- what a start imported ------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _module_distributions() -> dict[str, list[str]]:
    """top-level module -> distributions. Python 3.10's packages_distributions() reads
    top_level.txt only, which wheels built by meson-python (numpy's, scipy's) do not ship;
    3.11 also infers the names from each distribution's RECORD, as done here for 3.10."""
    mapping = metadata.packages_distributions()
    if sys.version_info < (3, 11):
        import inspect

        for dist in metadata.distributions():
            for entry in dist.files or ():
                top = entry.parts[0] if len(entry.parts) > 1 else inspect.getmodulename(entry.name)
                if top and "." not in top and dist.metadata["Name"] not in mapping.get(top, ()):
                    mapping.setdefault(top, []).append(dist.metadata["Name"])
    return mapping


def distributions_of(modules) -> tuple[str, int]:
    """("numpy 2.4.6; torch 2.13.0+cpu", their files' bytes on disk) for the distributions
    providing these top-level modules; the standard library and rnnbench are left out."""
    mapping, names = _module_distributions(), set()
    for module in modules:
        if module not in sys.stdlib_module_names:
            names.update(mapping.get(module, ()))
    described, total = [], 0
    for name in sorted(names, key=str.lower):
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if dist.metadata["Name"].lower() == "rnnbench":
            continue
        described.append(f"{dist.metadata['Name']} {dist.version}")
        for entry in dist.files or ():
            path = Path(entry.locate())
            if path.is_file():  # a RECORD may list files since removed
                total += path.stat().st_size
    return "; ".join(described), total


def importtime_report(stderr: str, impl: str, top: int = 40, keep_raw_bytes: int = 64 << 10) -> str:
    """importtime/<impl>.txt: the `-X importtime` lines of one process sorted by cumulative
    time (the top `top`), then the whole output in import order if it is small."""
    entries = []
    raw = [line for line in stderr.splitlines() if line.startswith("import time:")]
    for line in raw[1:]:  # the first is the header
        fields = line[len("import time:"):].split("|")
        if len(fields) == 3 and fields[0].strip().isdigit() and fields[1].strip().isdigit():
            entries.append((int(fields[1]), int(fields[0]), fields[2].rstrip()))
    entries.sort(reverse=True)
    lines = [f"# python -X importtime of one fresh process of {impl}: `import impls; impls.get({impl!r})`,",
             "# loading the weights and one prediction (the interpreter's own start included),",
             f"# the {min(top, len(entries))} largest of {len(entries)} imports by cumulative time",
             f"{'cumulative_us':>14} {'self_us':>10}  module"]
    lines += [f"{cumulative:>14} {own:>10}  {name.strip()}" for cumulative, own, name in entries[:top]]
    text = "\n".join(raw)
    if len(text) <= keep_raw_bytes:
        lines += ["", "# the whole output, in import order (indentation: imported by the line above)",
                  text]
    else:
        lines += ["", f"# the whole output ({len(text)} bytes) is left out: over {keep_raw_bytes} bytes"]
    return "\n".join(lines) + "\n"


# --- one implementation ---------------------------------------------------------------
def _median_iqr(values) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    q1, q3 = np.percentile(values, [25, 75])
    return float(np.median(values)), float(q3 - q1)


def _inputs(case: FootprintCase, folder: Path) -> tuple[dict, np.ndarray, Path, Path]:
    """Canonical weights (seed 0) saved as `train --save` does, and one seeded sequence."""
    params = impls.init_params(case.input_size, case.hidden_size, case.num_classes, seed=0,
                               dtype=np.dtype(case.dtype), cell=case.cell)
    x = np.random.default_rng(1).standard_normal(
        (case.batch_size, case.seq_len, case.input_size)).astype(case.dtype)
    params_path, x_path = folder / "params.npz", folder / "x.npy"
    np.savez(params_path, **params)
    np.save(x_path, x)
    return params, x, params_path, x_path


def _in_process(backend, params: dict, x: np.ndarray) -> tuple[np.ndarray, int | None]:
    """(logits of the in-process backend, its model file's size if it reports one)."""
    from bench.measure.machine import use_threads

    with use_threads(1):
        backend.threads = 1
        native, native_x = backend.from_numpy(params), backend.asarray(x)
        logits = backend.to_numpy(backend.predict(native, native_x))
        try:  # the column stays empty if a backend's diagnostics fail; the row stands
            model_bytes = backend.diagnostics(native, native_x).get("model_bytes")
        except Exception:
            model_bytes = None
    return np.asarray(logits, np.float64), model_bytes


def _base_row(impl: str, case: FootprintCase, status: str, reason: str = "") -> dict:
    return {"impl": impl, "cell": case.cell, "batch_size": case.batch_size, "seq_len": case.seq_len,
            "input_size": case.input_size, "hidden_size": case.hidden_size, "dtype": case.dtype,
            "status": status, "reason": reason, "python": platform.python_version()}


class _Impl:
    """The processes of one implementation, checked one by one as they finish."""

    def __init__(self, impl: str, config: FootprintConfig, inputs: tuple, expected, work: Path):
        self.impl, self.config, self.work = impl, config, work
        _, _, self.params_path, self.x_path = inputs
        self.expected = expected
        self.tolerance = impls.tolerance(impl, config.case.dtype)
        heavy = impls.entry(impl).compile_heavy
        self.timeout_s = config.compile_timeout_s if heavy else config.timeout_s
        self.starts: list[Start] = []
        self._folders = 0
        self.offline = offline_prefix()[0] is not None  # False once a start failed offline

    def fresh_cache(self) -> Path:
        self._folders += 1
        folder = self.work / f"cache{self._folders}"
        folder.mkdir()
        return folder

    def run(self, kind: str, cache: Path, *, importtime: bool = False) -> Start:
        child = {"impl": self.impl, "params": str(self.params_path), "x": str(self.x_path),
                 "cache_dir": str(cache / "exports")}
        argv = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m",
                self.config.child_module, json.dumps(child)]
        prefix = offline_prefix()[0] if self.offline else None
        env = {**os.environ, **THREAD_ENV, **cache_env(cache),
               "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        start = spawn([*(prefix or ()), *argv], env, self.timeout_s, Start(kind, offline=bool(prefix)))
        if start.error is None:
            self._check(start)
        self.starts.append(start)
        return start

    def _check(self, start: Start) -> None:
        from bench.oracle import rel_error

        try:
            error = rel_error(np.asarray(start.measured["logits"]), self.expected)
        except (KeyError, ValueError) as exc:
            start.error = f"its logits are not the in-process ones' shape: {exc}"
            return
        start.max_rel_error = error
        if not error <= self.tolerance:
            start.error = (f"its logits differ from the in-process predict by {error:.2e} "
                           f"(relative), beyond {self.impl}'s tolerance {self.tolerance:.0e}")


def _first_start(runner: _Impl, kind: str) -> tuple[Start, Path, bool | None, str]:
    """The first counted process, empty caches (see the module doc): -> (its start, the
    cache it wrote, runs_offline, a note)."""
    cache = runner.fresh_cache()
    first = runner.run(kind, cache)
    if not runner.offline:
        return first, cache, None, offline_prefix()[1]
    if first.error is None:
        return first, cache, True, ""
    first.kind = "offline_attempt"  # kept in the raw file, in no median: is it the
    # network, or the implementation?
    runner.offline = False
    shutil.rmtree(cache)
    cache = runner.fresh_cache()
    online = runner.run(kind, cache)
    if online.error is None:
        return online, cache, False, f"fails without a network (unshare -n): {first.error}"
    return online, cache, None, ""


def measure_impl(impl: str, backend, config: FootprintConfig, inputs: tuple,
                 work: Path) -> tuple[dict, list[dict], str | None]:
    """(footprint row, raw entries, importtime report) of one implementation; `backend` is
    its in-process instance, or the exception that made it unavailable."""
    case = config.case
    if isinstance(backend, Exception):
        return _base_row(impl, case, "unavailable", str(backend).splitlines()[0]), [], None
    try:
        expected, model_bytes = _in_process(backend, *inputs[:2])
    except Exception as exc:  # a row, not a crash
        return ({**_base_row(impl, case, "error", f"in-process predict failed: {type(exc).__name__}: "
                             f"{exc}".splitlines()[0]), "device": backend.device}, [], None)
    cost = START_COSTS.get(impl, StartCost())
    runner = _Impl(impl, config, inputs, expected, work)
    first, warm_cache, offline, note = _first_start(runner, "cold" if cost.disk_cache else "cold_and_warm")
    failed = first if first.error else _timed_starts(runner, cost, config, warm_cache)
    profiled = None
    if failed is None:  # the import breakdown, from one more warm process
        profiled = runner.run("importtime", warm_cache, importtime=True)
        failed = profiled if profiled.error else None
    report = importtime_report(profiled.stderr, impl) if failed is None else None
    raw = [s.raw() for s in runner.starts]
    row = {**_base_row(impl, case, "ok"), "device": backend.device, "model_bytes": model_bytes,
           "disk_cache": cost.disk_cache, "needs_compiler": cost.needs_compiler}
    if failed is not None:
        row.update(status="error", reason=f"{failed.kind} process: {failed.error}")
        return row, raw, report
    row.update(_medians(runner.starts, cost, first, offline, note))
    return row, raw, report


def _timed_starts(runner: _Impl, cost: StartCost, config: FootprintConfig, warm_cache: Path) -> Start | None:
    """After the first: the other cold processes, then the warm ones (or, without an
    on-disk cache, more processes that are both); -> the first that failed, or None."""
    cold = min(config.repeats, config.cold_repeats or config.repeats,
               config.compile_cold_repeats if cost.compiles else config.repeats)
    plan = ([("cold", None)] * (cold - 1) + [("warm", warm_cache)] * config.repeats if cost.disk_cache
            else [("cold_and_warm", None)] * (config.repeats - 1))
    for kind, cache in plan:
        start = runner.run(kind, cache or runner.fresh_cache())
        if start.error:
            return start
    return None


def _medians(starts: list[Start], cost: StartCost, first: Start, offline, note: str) -> dict:
    warm = [s for s in starts if s.kind in ("warm", "cold_and_warm")]
    cold = [s for s in starts if s.kind in ("cold", "cold_and_warm")]
    value = lambda group, key: [s.measured.get(key) for s in group]  # noqa: E731
    import_s, import_iqr = _median_iqr(value(warm, "import_s"))
    rss, _ = _median_iqr(value(warm, "rss_after_import_bytes"))
    cold_s, cold_iqr = _median_iqr([s.wall_s for s in cold])
    warm_s, warm_iqr = _median_iqr([s.wall_s for s in warm])
    first_prediction, _ = _median_iqr(value(cold, "first_prediction_s"))
    distributions, installed = distributions_of(first.imported.get("modules", ()))
    notes = [note] if note else []
    if not cost.disk_cache:
        notes.append(f"no on-disk cache: cold and warm starts are the same {len(warm)} "
                     f"process{'es' if len(warm) != 1 else ''}")
    elif len(cold) != len(warm):
        notes.append(f"{len(cold)} cold starts (each compiles), {len(warm)} warm")
    threads = {s.imported.get("torch_threads") for s in starts if s.imported} - {None, 1}
    if threads:
        notes.append(f"torch ran {sorted(threads)} threads, not 1")
    return {"distributions": distributions, "installed_bytes": installed, "import_s": import_s,
            "import_iqr_s": import_iqr, "rss_after_import_bytes": None if rss is None else int(rss),
            "cold_start_s": cold_s, "cold_start_iqr_s": cold_iqr, "warm_start_s": warm_s,
            "warm_start_iqr_s": warm_iqr, "first_prediction_s": first_prediction,
            "runs_offline": offline, "samples": len(warm), "cold_samples": len(cold),
            "reason": "; ".join(notes)}


# --- a run folder ---------------------------------------------------------------------
def _new_backend(cache_dir: Path):
    def backend_for(name: str):
        try:
            backend = impls.get(name)
        except (impls.Unavailable, ValueError) as exc:
            return exc
        backend.cache_dir = str(cache_dir)
        return backend
    return backend_for


def measure_footprint(run_dir, names, config: FootprintConfig = FootprintConfig(), *,
                      backend_for=None, again: bool = False, notify=None) -> list[dict]:
    """Measure each implementation in `names` into run_dir/footprint.csv (the caller holds
    the run's lock) and return the rows written. One with an `ok` row already is left as
    it is unless `again`; other rows of the implementations measured are replaced.
    backend_for(name) -> the in-process backend or the exception saying why there is none
    (the sweep passes its own; default: impls.get with a temporary export folder)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    done = {r["impl"] for r in read_footprint_rows(run_dir) if r["status"] == "ok"}
    todo = [n for n in dict.fromkeys(names) if again or n not in done]
    for message in retain_footprint(run_dir, todo):
        notify and notify(message)
    written = []
    with tempfile.TemporaryDirectory(prefix="rnnbench-footprint-") as tmp, FootprintWriter(run_dir) as writer:
        work = Path(tmp)
        inputs = _inputs(config.case, work)
        backend_for = backend_for or _new_backend(work / "in-process")
        for name in todo:
            began = time.perf_counter()
            impl_work = work / name
            impl_work.mkdir()
            row, raw, report = measure_impl(name, backend_for(name), config, inputs, impl_work)
            if report:
                (run_dir / IMPORTTIME_DIR).mkdir(exist_ok=True)
                (run_dir / IMPORTTIME_DIR / f"{name}.txt").write_text(report)
            writer.write(row, raw)
            shutil.rmtree(impl_work, ignore_errors=True)
            written.append(row)
            if notify:
                notify(f"footprint {name}: {row['status']} in {time.perf_counter() - began:.1f} s"
                       + (f" ({row['reason']})" if row["status"] != "ok" else ""))
    return written


def sweep_names(grid, registered: list[str]) -> list[str]:
    """The implementations a sweep of `grid` measures footprints of: the grid's, with
    compile-heavy ones only when the grid runs them on some cell."""
    return [n for n in (grid.impls or registered)
            if any(grid.compile_skip(cell, impls.entry(n).compile_heavy) is None for cell in grid.cell)]


def run_footprint(run_dir, names, config: FootprintConfig, *, command: list[str],
                  again: bool = False, notify=None) -> list[dict]:
    """`rnnbench footprint`: hold the run folder's lock, measure, and say so in meta.json
    (a new folder gets a meta.json of its own with the machine, as a sweep writes)."""
    from bench.measure import machine
    from bench.run.lock import RunLock

    run_dir, began = Path(run_dir), time.perf_counter()
    started = machine.now()
    with RunLock(run_dir, {"started": started, "command": command}):
        meta = read_meta(run_dir)
        new = not meta
        if new:
            meta = {"command": command, "started": started, "finished": None,
                    "machine": machine.machine_meta()}
        meta["footprint"] = {"command": command, "started": started, "finished": None,
                             "impls": list(names), "repeats": config.repeats}
        write_meta(run_dir, meta)
        rows = measure_footprint(run_dir, names, config, again=again, notify=notify)
        meta["footprint"].update(finished=machine.now(), seconds=round(time.perf_counter() - began, 1))
        if new:
            meta["finished"] = meta["footprint"]["finished"]
        write_meta(run_dir, meta)
    return rows


def _megabytes(value) -> str:
    return f"{int(value) / 1e6:.3g}" if value not in (None, "") else "-"


def _seconds(value) -> str:
    return f"{float(value):.3g}" if value not in (None, "") else "-"


def format_rows(rows: list[dict]) -> str:
    """footprint rows (typed or CSV strings) as a plain-text table for the terminal."""
    from bench.report.tables import format_table

    table = []
    for r in rows:
        if r["status"] != "ok":
            table.append([r["impl"], r["status"], *["-"] * 9, (r.get("reason") or "")[:80]])
            continue
        table.append([r["impl"], r["status"], _megabytes(r["installed_bytes"]),
                      _megabytes(r["model_bytes"]), _seconds(r["import_s"]),
                      _megabytes(r["rss_after_import_bytes"]), _seconds(r["cold_start_s"]),
                      _seconds(r["warm_start_s"]), _seconds(r["first_prediction_s"]),
                      {"True": "yes", "False": "no", True: "yes", False: "no"}.get(r["runs_offline"], "?"),
                      f"{r['samples']}/{r['cold_samples']}", r["needs_compiler"] or "-"])
    return format_table(["impl", "status", "installed MB", "model MB", "import s", "RSS MB", "cold s",
                         "warm s", "1st pred s", "offline", "n warm/cold",
                         "run-time compiler (or why not ok)"], table)
