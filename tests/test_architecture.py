"""The seams between the layers hold: the harness times only what the contract names
publicly, the results schema and reader import nothing that measures, the report reads a
run folder and nothing of today's checkout, and a non-editable install runs."""
import ast
import re
from importlib import metadata
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import impls
from bench.record import COLUMNS, DIAGNOSTIC_COLUMNS, KEY_COLUMNS, TRACEBACK_FIELD, check_diagnostics
from bench.results import ERRORS, read_errors
from bench.run.case import run_case
from bench.run.sweep import run_sweep
from bench.spec import Case, build_grid
from conftest import backend_or_skip, temporary_entry

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
FAST = {"min_samples": 3, "min_time_s": 0.01, "warmup_s": 0.0}
# the hooks a backend implements for the contract's public methods to call
HOOKS = ("_predict", "_forward", "_backward", "_from_numpy_array", "_to_numpy_array",
         "_is_native", "_dtype_of", "_all_finite")


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_harness_calls_no_underscored_backend_hook():
    pattern = re.compile(r"\.(%s)\(" % "|".join(HOOKS))
    offenders = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
                 for path in BENCH.rglob("*.py")
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if pattern.search(line)]
    assert not offenders, "bench/ must time the public contract (backend.bind):\n" + "\n".join(offenders)


def test_the_report_imports_only_the_record_and_the_results():
    allowed = re.compile(r"bench\.(record|results|report)(\.|$)")
    for path in (BENCH / "report").glob("*.py"):
        ours = {m for m in _imports(path) if m.split(".")[0] in ("bench", "impls")}
        bad = sorted(m for m in ours if not allowed.match(m) or m.startswith("impls"))
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_reading_results_imports_nothing_that_measures():
    code = ("import sys\n"
            "from bench.results import load_run, load_runs\n"
            "heavy = [m for m in ('torch', 'impls', 'bench.run', 'bench.measure.timing',\n"
            "                     'bench.train.data', 'bench.run.case', 'numba', 'onnxruntime')\n"
            "         if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_a_report_needs_no_backend_and_no_torch(tmp_path):
    """With impls and torch made unimportable, a committed run still becomes a report."""
    run = shutil.copytree(ROOT / "results" / "quick-cpu", tmp_path / "quick-cpu")
    code = ("import sys; sys.modules['impls'] = None; sys.modules['torch'] = None\n"
            "from bench.report.document import write_report\n"
            f"print(write_report({str(run)!r}))\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    assert "## The article's comparison, in numbers" in (run / "report.md").read_text()


def _copy_checkout(dest: Path) -> Path:
    for folder in ("impls", "bench"):
        shutil.copytree(ROOT / folder, dest / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "exports"))
    return dest


def test_an_old_report_stays_byte_identical_after_the_code_changes(tmp_path):
    """Code size is counted when the sweep starts (meta.json): editing an implementation's
    source afterwards must not move a single byte of the run's report."""
    checkout = _copy_checkout(tmp_path / "checkout")
    run = tmp_path / "run"

    def cli(*args):
        subprocess.run([sys.executable, "-m", "bench.cli", *args], check=True, cwd=checkout,
                       capture_output=True, text=True)
    cli("sweep", "--impl", "numpy", "--phase", "forward", "--batch-size", "1", "--seq-len", "3",
        "--hidden-size", "4", "--input-size", "2", "--no-accuracy", "--no-footprint", "--quiet", "--out", str(run))
    cli("report", str(run))
    before = (run / "report.md").read_bytes()
    assert b"numpy_backend.py" in before  # the code-size row is there to move
    source = checkout / "impls" / "numpy_backend.py"
    source.write_text(source.read_text() + "\n\ndef _added_later():\n    return 1\n")
    cli("report", str(run))
    assert (run / "report.md").read_bytes() == before


@pytest.mark.parametrize("name", impls.names())
def test_diagnostics_and_counters_are_results_columns(name):
    backend = backend_or_skip(name)
    host = impls.init_params(3, 4, 2, seed=0)
    params, x = backend.from_numpy(host), backend.asarray(np.zeros((1, 5, 3), np.float32))
    backend.predict(params, x)
    check_diagnostics(backend.diagnostics(params, x), f"{name}.diagnostics()")
    check_diagnostics(backend.counters(), f"{name}.counters()")
    assert set(DIAGNOSTIC_COLUMNS) <= set(COLUMNS)


def _numpy_with(**overrides):
    backend = impls.get("numpy")
    for attribute, value in overrides.items():
        setattr(backend, attribute, types.MethodType(value, backend))
    return backend


def test_a_diagnostics_key_that_is_no_column_is_reported_not_dropped():
    backend = _numpy_with(diagnostics=lambda self, params, x: {"graph_breaks": 0, "bogus_key": 1})
    row = run_case(backend, Case("numpy", "forward", 1, 3, 2, 4), 100.0, timing=FAST)
    assert row["status"] == "ok" and "bogus_key" in row["reason"] and "not results columns" in row["reason"]
    with pytest.raises(ValueError, match="bogus_key"):
        check_diagnostics({"bogus_key": 1}, "test")


def test_error_rows_keep_their_traceback_in_errors_jsonl(tmp_path):
    def failing_forward(self, params, x, lengths):
        raise RuntimeError("deliberate failure deep in a kernel")

    broken = types.SimpleNamespace(create=lambda device=None: _numpy_with(_predict=failing_forward))
    with temporary_entry("broken", broken):
        grid = build_grid("quick", impls=["broken"], cell=["rnn_tanh"], phases=["forward"], batch_size=[1],
                          seq_len=[3], hidden_size=[4], input_size=[2], accuracy=False, footprint=False)
        out = run_sweep(grid, tmp_path / "run", progress=False, timing=FAST)
    errors = read_errors(out)
    (key, entry), = errors.items()
    named = dict(zip(KEY_COLUMNS, key))
    assert (named["impl"], named["cell"], named["phase"]) == ("broken", "rnn_tanh", "forward")
    assert "deliberate failure" in entry["reason"]
    assert "Traceback" in entry["traceback"] and "failing_forward" in entry["traceback"]
    assert (out / ERRORS).exists() and TRACEBACK_FIELD not in COLUMNS
    from bench.report.document import write_report
    text = write_report(out).read_text()
    assert "Tracebacks of the failed rows" in text and "failing_forward" in text


def test_a_non_editable_install_runs_a_sweep(tmp_path):
    """`pip install .` (not -e) must ship every subpackage: install into a folder, then
    run a tiny sweep from outside the checkout with only that folder on the path."""
    target = tmp_path / "site"
    # setuptools >= 70.1 builds wheels on its own: then build here, offline; an older one
    # needs pip's isolated build environment (which fetches a current setuptools)
    offline = _version_tuple(metadata.version("setuptools")) >= (70, 1) if _has("setuptools") else False
    isolation = ["--no-build-isolation", "--no-index"] if offline else []
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *isolation,
                            "--target", str(target), str(ROOT)], capture_output=True, text=True, cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    shutil.rmtree(ROOT / "build", ignore_errors=True)  # setuptools' scratch in the checkout
    code = ("import bench, impls, sys\n"
            f"assert bench.__file__.startswith({str(target)!r}), bench.__file__\n"
            "from bench.cli import main\n"
            "sys.exit(main(['sweep', '--impl', 'numpy', '--phase', 'forward', '--batch-size', '1',\n"
            "               '--seq-len', '3', '--hidden-size', '4', '--input-size', '2',\n"
            "               '--no-accuracy', '--quiet', '--out', 'run', '--report']))\n")
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "results.csv").exists() and (tmp_path / "run" / "report.md").exists()


def _has(distribution: str) -> bool:
    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])
