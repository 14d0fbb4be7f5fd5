"""The recommendation table: derived from the run's rows only, a tie is not a win, and
what the run lacks says so."""
import csv
import warnings

import pandas as pd

from bench.record import COLUMNS
from bench.report import document as report
from bench.report.recommend import NOT_MEASURED, TIE_RATIO, recommendations
from bench.results import load_run
from test_report import write_run


def _by_workload(frame, footprint=None) -> dict:
    return {r["workload"]: r for r in recommendations(frame, footprint)}


def test_the_best_is_read_off_the_rows_and_compared_with_the_article(tmp_path):
    rows = _by_workload(load_run(write_run(tmp_path / "run")))  # numpy 2x torch at the size used
    latency, training = rows["batch-1 latency (inference)"], rows["training throughput"]
    assert latency["measured best"] == "numpy" and latency["runner-up (margin)"] == "torch (2.00× slower)"
    assert "B=1" in latency["based on"] and latency["agrees?"] == "yes"  # the article: NumPy for embedded
    assert training["measured best"] == "numpy" and "B=4" in training["based on"]
    assert training["agrees?"] == "no"  # the article: PyTorch for prototyping


def test_what_the_run_lacks_is_not_measured_rather_than_guessed(tmp_path):
    rows = _by_workload(load_run(write_run(tmp_path / "run", batch=(4,))))
    for workload in ("batch-1 latency (inference)", "accuracy-preserving int8 (inference)",
                     "smallest install", "fastest start (serverless call, CLI)", "GPU (training throughput)"):
        assert rows[workload]["measured best"].startswith(NOT_MEASURED), workload
        assert rows[workload]["agrees?"] == "—"


def _add_impl(run_dir, name: str, factor: float) -> None:
    """Another implementation: numpy's timed rows with every median x factor."""
    rows = list(csv.DictReader(open(run_dir / "results.csv")))
    extra = [{**r, "impl": name, "median_s": str(float(r["median_s"]) * factor)}
             for r in rows if r["impl"] == "numpy" and r["status"] == "ok" and r["phase"] != "accuracy"]
    with open(run_dir / "results.csv", "a", newline="") as handle:
        csv.DictWriter(handle, COLUMNS).writerows(extra)


def test_a_margin_under_the_noise_threshold_is_a_tie(tmp_path):
    run_dir = write_run(tmp_path / "run")
    _add_impl(run_dir, "numba", 1 / (TIE_RATIO - 0.05))  # faster than numpy by less than the threshold
    latency = _by_workload(load_run(run_dir))["batch-1 latency (inference)"]
    assert latency["measured best"] == "numba"
    assert "a tie" in latency["runner-up (margin)"] and "numpy" in latency["runner-up (margin)"]
    assert latency["agrees?"].startswith("partly")  # tied with numpy, which the article names


def test_footprint_rows_decide_the_install_and_start_workloads(tmp_path):
    footprint = pd.DataFrame([
        {"impl": "numpy", "status": "ok", "installed_bytes": 40e6, "distributions": "numpy 2",
         "warm_start_s": 0.4, "cold_start_s": 0.4},
        {"impl": "torch", "status": "ok", "installed_bytes": 900e6, "distributions": "numpy 2; torch 2",
         "warm_start_s": 2.5, "cold_start_s": 2.6},
        {"impl": "numba", "status": "error", "installed_bytes": None, "distributions": None,
         "warm_start_s": None, "cold_start_s": None}])
    rows = _by_workload(load_run(write_run(tmp_path / "run")), footprint)
    install, start = rows["smallest install"], rows["fastest start (serverless call, CLI)"]
    assert install["measured best"] == "numpy" and "torch (22.50× larger)" == install["runner-up (margin)"]
    assert start["measured best"] == "numpy" and start["agrees?"] == "yes"
    assert "0.40 s" in start["based on"]


def test_the_report_opens_with_the_comparison_then_the_recommendations(tmp_path):
    run_dir = write_run(tmp_path / "run")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text = report.write_report(run_dir).read_text()
    order = [text.index(h) for h in ("## The article's comparison", "## Which implementation for which workload",
                                     "## Key results", "## Accuracy", "## Performance targets")]
    assert order == sorted(order)


def _add_accuracy(run_dir, name: str, accuracy: float) -> None:
    rows = list(csv.DictReader(open(run_dir / "results.csv")))
    extra = [{**r, "impl": name, "test_accuracy": str(accuracy)} for r in rows
             if r["impl"] == "numpy" and r["phase"] == "accuracy"]
    with open(run_dir / "results.csv", "a", newline="") as handle:
        csv.DictWriter(handle, COLUMNS).writerows(extra)


def test_int8_is_recommended_only_when_it_keeps_accuracy_and_is_faster(tmp_path):
    def int8_row(speed: float, accuracy: float) -> dict:
        run_dir = write_run(tmp_path / f"run-{speed}-{accuracy}")
        _add_impl(run_dir, "onnx_fp32", 1.0)
        _add_impl(run_dir, "onnx_int8", 1 / speed)
        _add_accuracy(run_dir, "onnx_fp32", 0.93)
        _add_accuracy(run_dir, "onnx_int8", accuracy)
        return _by_workload(load_run(run_dir))["accuracy-preserving int8 (inference)"]

    kept = int8_row(2.0, 0.925)
    assert kept["measured best"] == "onnx_int8" and kept["agrees?"] == "yes"
    assert "2.00× at B=1" in kept["runner-up (margin)"]
    lost = int8_row(2.0, 0.90)  # 3 points below fp32
    assert lost["measured best"].startswith("onnx_fp32") and lost["agrees?"].startswith("no")
    slow = int8_row(1.02, 0.93)  # as fast as fp32, within noise
    assert slow["measured best"].startswith("onnx_fp32") and "not faster" in slow["agrees?"]
