"""Footprint and cold start (bench.measure.footprint): relations that always hold between
implementations and between a fresh process and a warm call, the child's logits checked
against the in-process backend, and failures, unavailability, resume and the command as rows."""
import json
import shutil

import numpy as np
import pytest

import impls
from bench import spec
from bench.cli import build_parser, main
from bench.measure import footprint
from bench.measure.footprint import (FootprintConfig, START_COSTS, distributions_of,
                                     importtime_report, measure_footprint, sweep_names)
from bench.measure.timing import measure
from bench.record import FOOTPRINT_COLUMNS
from bench.results import (FOOTPRINT_CSV, FOOTPRINT_RAW, IMPORTTIME_DIR, DamagedFile, read_footprint,
                           read_footprint_rows, read_meta)
from bench.run.lock import RunLock
from bench.run import sweep
from conftest import temporary_entry

FAST = {"min_samples": 3, "min_time_s": 0.01, "warmup_s": 0.0}
ONE = FootprintConfig(repeats=1)


def _importable(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """numpy (and torch where it is installed), 2 processes per median, into one run."""
    run = tmp_path_factory.mktemp("footprint")
    names = ["numpy"] + (["torch"] if _importable("torch") else [])
    rows = measure_footprint(run, names, FootprintConfig(repeats=2))
    return run, {r["impl"]: r for r in rows}


def _raw(run) -> list[dict]:
    return [json.loads(line) for line in (run / FOOTPRINT_RAW).read_text().splitlines()]


def test_every_registered_implementation_says_what_its_start_costs():
    assert set(impls.names()) <= set(START_COSTS), "describe new implementations in START_COSTS"


def test_numpy_row_is_complete_and_round_trips(measured):
    run, rows = measured
    row = rows["numpy"]
    assert row["status"] == "ok", row["reason"]
    assert row["distributions"].startswith("numpy ") and "rnnbench" not in row["distributions"]
    assert row["installed_bytes"] > 1e6 and row["model_bytes"] is None
    assert row["samples"] == row["cold_samples"] == 2 and row["disk_cache"] == ""
    assert row["cold_start_s"] == row["warm_start_s"]  # no cache: the same processes
    assert 0 < row["import_s"] < row["cold_start_s"]  # the wall time includes the import
    assert 0 < row["first_prediction_s"] < row["cold_start_s"]
    frame = read_footprint(run)
    assert list(frame.columns) == [*FOOTPRINT_COLUMNS, "run"]
    typed = frame.set_index("impl").loc["numpy"]
    assert typed["installed_bytes"] == row["installed_bytes"] and typed["samples"] == 2
    assert typed["cold_start_s"] == pytest.approx(row["cold_start_s"])
    assert str(frame["samples"].dtype) == "Int64" and str(frame["runs_offline"].dtype) == "boolean"
    if footprint.offline_prefix()[0]:  # unshare -n works here: the start ran without a network
        assert frame["runs_offline"].fillna(False).all()
    else:
        assert frame["runs_offline"].isna().all()
    report = (run / IMPORTTIME_DIR / "numpy.txt").read_text()
    assert "cumulative_us" in report and "  numpy" in report


def test_every_child_computed_the_in_process_logits(measured):
    run, rows = measured
    raw = [e for e in _raw(run) if e["impl"] == "numpy"]
    assert [e["kind"] for e in raw] == ["cold_and_warm", "cold_and_warm", "importtime"]
    assert all(e["max_rel_error"] <= impls.tolerance("numpy", "float32") for e in raw)


def test_a_child_whose_logits_differ_is_an_error_row(tmp_path):
    """The check can fail: the in-process reference here predicts other logits."""
    class Shifted(type(impls.get("numpy"))):
        def _predict(self, params, x, lengths):
            return super()._predict(params, x, lengths) + 1.0

    rows = measure_footprint(tmp_path, ["numpy"], ONE, backend_for=lambda name: Shifted())
    assert rows[0]["status"] == "error" and "differ from the in-process predict" in rows[0]["reason"]


def test_cold_start_exceeds_the_warm_forward_median(measured):
    _, rows = measured
    case = FootprintConfig().case
    backend = impls.get("numpy")
    params = backend.from_numpy(impls.init_params(case.input_size, case.hidden_size,
                                                  case.num_classes, seed=0))
    x = backend.asarray(np.zeros((1, case.seq_len, case.input_size), np.float32))
    bound = backend.bind(params, x)
    warm = measure(bound.predict, **FAST).median
    assert rows["numpy"]["cold_start_s"] > warm


def test_torch_costs_more_to_install_and_to_hold_than_numpy(measured):
    _, rows = measured
    if rows.get("torch", {"status": "unavailable"})["status"] == "unavailable":
        pytest.skip("torch is not installed here: nothing to compare numpy with")
    numpy_row, torch_row = rows["numpy"], rows["torch"]
    assert torch_row["status"] == "ok", torch_row["reason"]
    assert "numpy" in torch_row["distributions"] and "torch" in torch_row["distributions"]
    assert numpy_row["installed_bytes"] < torch_row["installed_bytes"]
    assert numpy_row["rss_after_import_bytes"] < torch_row["rss_after_import_bytes"]


def test_an_unavailable_implementation_is_a_row_without_processes(tmp_path):
    with temporary_entry("fp_missing", None):
        rows = measure_footprint(tmp_path, ["fp_missing"], ONE)
    assert rows[0]["status"] == "unavailable" and "fp_missing" in rows[0]["reason"]
    assert (tmp_path / FOOTPRINT_RAW).read_text() == ""
    assert read_footprint_rows(tmp_path)[0]["status"] == "unavailable"


def test_a_failing_child_is_an_error_row_with_its_stderr(tmp_path):
    """Registered in this process only: the child does not know the name and fails."""
    from impls import numpy_backend

    with temporary_entry("fp_parent_only", numpy_backend):
        rows = measure_footprint(tmp_path, ["fp_parent_only"], ONE)
    assert rows[0]["status"] == "error"
    assert "unknown implementation 'fp_parent_only'" in rows[0]["reason"]
    assert "\n" not in rows[0]["reason"]  # one line: a CSV cell, a table cell
    assert any("Traceback" in e.get("stderr_tail", "") for e in _raw(tmp_path))


def test_a_child_past_its_time_limit_is_an_error_row(tmp_path):
    rows = measure_footprint(tmp_path, ["numpy"], FootprintConfig(repeats=1, timeout_s=0.01))
    assert rows[0]["status"] == "error" and "timed out after 0.01 s" in rows[0]["reason"]


def test_measuring_again_skips_ok_rows_and_redoes_the_others(measured, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(measured[0], run)
    before = ((run / FOOTPRINT_CSV).read_text(), (run / FOOTPRINT_RAW).read_text())
    assert measure_footprint(run, ["numpy"], ONE) == []
    assert ((run / FOOTPRINT_CSV).read_text(), (run / FOOTPRINT_RAW).read_text()) == before
    with temporary_entry("fp_missing", None):
        measure_footprint(run, ["fp_missing"], ONE)
        measure_footprint(run, ["fp_missing"], ONE)  # not ok: measured again, replacing its row
    assert [r["impl"] for r in read_footprint_rows(run)].count("fp_missing") == 1


def test_a_torn_or_damaged_footprint_file(measured, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(measured[0], run)
    with open(run / FOOTPRINT_CSV, "a") as handle:
        handle.write("numpy,cpu,rnn")  # a kill mid-write: dropped on reading
    assert len(read_footprint_rows(run)) == len(measured[1])
    with open(run / FOOTPRINT_CSV, "a") as handle:
        handle.write("\nbroken,row\n")
    with pytest.raises(DamagedFile, match=r"footprint.csv:\d+: damaged line"):
        read_footprint(run)
    assert read_footprint(tmp_path) is None  # no footprint.csv: no frame, no error


def test_the_footprint_command_writes_the_files_under_the_lock(tmp_path, capsys):
    run = tmp_path / "new"
    assert main(["footprint", str(run), "--impl", "numpy", "--repeats", "1", "--quiet"]) == 0
    assert {FOOTPRINT_CSV, FOOTPRINT_RAW, "meta.json", IMPORTTIME_DIR} <= {p.name for p in run.iterdir()}
    meta = read_meta(run)
    assert meta["machine"]["cpu_model"] and meta["footprint"]["impls"] == ["numpy"]
    assert meta["footprint"]["finished"] and "numpy" in capsys.readouterr().out
    held = tmp_path / "held"
    with RunLock(held, {"started": "now", "command": ["a", "sweep"]}):
        assert main(["footprint", str(held), "--impl", "numpy", "--repeats", "1", "--quiet"]) == 2
    assert "in use by another sweep" in capsys.readouterr().err
    assert not (held / FOOTPRINT_CSV).exists()


def test_presets_and_flags_say_when_a_sweep_measures_footprints(tmp_path):
    # quick: the main job's report opens with a recommendation that needs them
    assert spec.build_grid("default").footprint and spec.build_grid("quick").footprint
    assert not spec.build_grid("quick", footprint=False).footprint
    assert not spec.build_grid("deepbench").footprint and not spec.build_grid("gpu").footprint
    parse = build_parser().parse_args
    assert parse(["sweep", "--no-footprint"]).footprint is False
    assert parse(["sweep", "--footprint"]).footprint is True and parse(["sweep"]).footprint is None
    config = tmp_path / "grid.toml"
    config.write_text('preset = "quick"\nfootprint = false\n')
    assert not spec.build_grid(**spec.load_config(config)).footprint
    with pytest.raises(ValueError, match="footprint must be true or false"):
        spec.build_grid("quick", footprint="yes")


def test_a_sweep_leaves_compile_heavy_implementations_out_unless_it_runs_them():
    registered = impls.names()
    assert "torch_compile" not in sweep_names(spec.build_grid("quick"), registered)
    assert "numpy" in sweep_names(spec.build_grid("quick"), registered)
    named = spec.build_grid("quick", impls=["torch_compile"], compile_heavy_cells=["lstm"], cell=["lstm"])
    assert sweep_names(named, registered) == ["torch_compile"]


@pytest.mark.usefixtures("fixed_peak")
def test_a_sweep_measures_footprints_last_and_a_resume_keeps_them(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "FOOTPRINT_REPEATS", 1)
    grid = spec.build_grid("quick", impls=["numpy"], cell=["rnn_tanh"], phases=["forward"],
                           batch_size=[1], seq_len=[3], hidden_size=[4], input_size=[2], accuracy=False,
                           footprint=True)
    out = sweep.run_sweep(grid, tmp_path / "run", progress=False, timing=FAST)
    assert [r["status"] for r in read_footprint_rows(out)] == ["ok"]
    assert read_meta(out)["footprint"]["impls"] == ["numpy"] and read_meta(out)["finished"]
    raw = (out / FOOTPRINT_RAW).read_text()
    sweep.run_sweep(grid, out, resume=True, progress=False, timing=FAST)
    assert (out / FOOTPRINT_RAW).read_text() == raw  # an ok row is not measured again
    sweep.run_sweep(grid, out, force=True, progress=False, timing=FAST)
    assert (out / FOOTPRINT_RAW).read_text() != raw  # --force starts the run over


def test_importtime_report_sorts_by_cumulative_time():
    stderr = ("import time: self [us] | cumulative | imported package\n"
              "import time:        10 |         10 |   small\n"
              "import time:       500 |       2500 | big\n"
              "import time:        30 |         40 | middle\n"
              "Traceback? not an import line\n")
    report = importtime_report(stderr, "x", top=2)
    table = [line.split()[-1] for line in report.splitlines()[4:6]]
    assert table == ["big", "middle"] and "small" in report  # the whole output follows


def test_distributions_leave_the_standard_library_out():
    text, size = distributions_of(["numpy", "json", "os"])
    assert text == f"numpy {np.__version__}" and size > 0
    assert distributions_of(["json"]) == ("", 0)


NEEDS_NETWORK_CHILD = '''
import socket, sys
if all(name == "lo" for _, name in socket.if_nameindex()):
    sys.exit("no network interface: this start needs one")
from bench.measure import footprint_child
footprint_child.main(sys.argv[1:])
'''


def test_a_start_that_needs_a_network_runs_online_and_says_so(tmp_path, monkeypatch):
    """Every process runs offline where unshare -n works: one that fails offline and starts
    online is counted online (runs_offline False, the reason kept), its failure in no median."""
    if footprint.offline_prefix()[0] is None:
        pytest.skip(f"offline is not checkable here: {footprint.offline_prefix()[1]}")
    import socket

    if all(name == "lo" for _, name in socket.if_nameindex()):
        pytest.skip("this machine has no network interface: nothing to take away")
    (tmp_path / "needs_network_child.py").write_text(NEEDS_NETWORK_CHILD)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    config = FootprintConfig(repeats=2, child_module="needs_network_child")
    row = measure_footprint(tmp_path / "run", ["numpy"], config)[0]
    assert row["status"] == "ok", row["reason"]
    assert row["runs_offline"] is False and "fails without a network" in row["reason"]
    raw = _raw(tmp_path / "run")
    assert [e["kind"] for e in raw] == ["offline_attempt", "cold_and_warm", "cold_and_warm", "importtime"]
    assert raw[0]["offline"] and not any(e["offline"] for e in raw[1:])
    assert row["samples"] == 2
