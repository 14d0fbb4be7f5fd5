"""The report and its plots, from small synthetic run folders written with the real
results.csv columns (fast, deterministic), plus one tiny real sweep end to end."""
import csv
import itertools
import json
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

import impls
from bench.measure import analytic as flops
from bench.measure.code import count_code_lines, implementations_meta
from bench.record import COLUMNS
from bench.report import comparison, plots, selection, tables
from bench.report import document as report
from bench.results import load_run, read_meta

PEAK = 100.0  # GFLOP/s, the synthetic calibration
# an implementation this checkout does not register (a run from another checkout)
UNAVAILABLE = "ghost needs 'ghostlib' (No module named 'ghostlib')"
ERROR = "RuntimeError: synthetic failure"


def _timing_row(impl, phase, b, t, h, median, noisy=False, cell="rnn_tanh", structure=(1, False)):
    work = flops.phase_flops(phase, b, t, 8, h, 10, cell, *structure)
    gflops = work / median / 1e9
    return {"impl": impl, "cell": cell, "num_layers": structure[0], "bidirectional": structure[1],
            "phase": phase, "batch_size": b, "seq_len": t, "input_size": 8,
            "hidden_size": h, "dtype": "float32", "threads": 1, "num_classes": 10, "device": "cpu",
            "median_s": median, "iqr_s": median * (0.2 if noisy else 0.01), "repeats": 10,
            "samples": 7, "noisy": noisy, "timer_overhead_pct": 0.01, "seq_per_s": b / median,
            "steps_per_s": b * t / median, "gflops": gflops, "pct_peak": 100 * gflops / PEAK,
            "peak_gflops": PEAK, "peak_mem_bytes": 4096 * b * t,
            "analytic_mem_bytes": flops.activation_bytes(phase, b, t, 8, h, "float32", cell, *structure),
            "compile_s": 3 * median, "max_err": 1e-7 if impl == "numpy" else 2e-7,
            "status": "ok"}


GATED_COST = {"rnn_tanh": 1, "lstm": 4, "gru": 3}  # synthetic: each cell's time x this
STRUCTURE_COST = {(1, False): 1, (2, False): 2, (1, True): 2, (2, True): 5}  # ... and each structure's


def write_run(folder: Path, batch=(1, 4), seq=(4, 16), hidden=(8, 32), cells=("rnn_tanh",),
              structures=((1, False),)) -> Path:
    """A run: numpy 2x faster than torch everywhere but one case (of each cell and
    structure); an unavailable impl, an error row, one noisy row, and accuracy rows."""
    rows = []
    for phase, cell, structure, b, t, h in itertools.product(("forward", "backward", "train_step"), cells,
                                                             structures, batch, seq, hidden):
        base = 1e-6 * b * t * h * GATED_COST[cell] * STRUCTURE_COST[structure]
        slow = 3 if (phase, b, t, h) == ("forward", 1, 4, 8) else 1  # 2/3 of torch
        rows.append(_timing_row("numpy", phase, b, t, h, slow * base, cell=cell, structure=structure))
        rows.append(_timing_row("torch", phase, b, t, h, 2 * base, cell=cell, structure=structure,
                                noisy=(phase, b, t, h) == ("forward", 1, 4, 8)))
        rows.append({"impl": "ghost", "cell": cell, "num_layers": structure[0], "bidirectional": structure[1],
                     "phase": phase, "batch_size": b, "seq_len": t,
                     "input_size": 8, "hidden_size": h, "dtype": "float32", "threads": 1,
                     "num_classes": 10, "status": "unavailable", "reason": UNAVAILABLE})
    rows.append({**{k: rows[0][k] for k in ("cell", "num_layers", "bidirectional", "seq_len", "input_size",
                                             "hidden_size", "dtype", "threads", "num_classes")},
                 "impl": "numpy", "phase": "backward", "batch_size": 99, "device": "cpu",
                 "status": "error", "reason": ERROR})
    for (impl, acc), cell, structure in itertools.product((("numpy", 0.93), ("torch", 0.94)), cells, structures):
        rows.append({"impl": impl, "cell": cell, "num_layers": structure[0], "bidirectional": structure[1],
                     "phase": "accuracy", "batch_size": 32, "seq_len": 8, "input_size": 8,
                     "hidden_size": 64, "dtype": "float32", "threads": 1, "num_classes": 10,
                     "device": "cpu", "median_s": 1.5, "test_accuracy": acc, "time_to_accuracy_s": 0.5,
                     "dataset": "digits", "status": "ok", "reason": "15 epochs"})
    folder.mkdir(parents=True)
    with open(folder / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows({c: ("" if r.get(c) is None else r.get(c)) for c in COLUMNS} for r in rows)
    meta = {"command": ["rnnbench", "sweep", "--out", str(folder)], "started": "2026-01-01T00:00:00",
            "finished": "2026-01-01T00:01:00",
            "machine": {"cpu_model": "Test CPU", "cores": 2, "versions": {"numpy": "2", "torch": None},
                        "blas": [{"internal_api": "openblas", "version": "0.3"}], "gpus": [],
                        "git_commit": "abc123"},
            "calibration": [{"dtype": "float32", "threads": 1,
                             "gemm_gflops": {"numpy": PEAK, "torch": 50.0, "peak": PEAK}}],
            # what a sweep records when it starts (this checkout's registry and code size)
            "implementations": implementations_meta()}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("runs") / "full")


@pytest.fixture(scope="module")
def written(run_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a plot that fails is a warning: fail the test on it
        path = report.write_report(run_dir)
    return path, path.read_text()


def test_report_embeds_every_plot_it_references(run_dir, written):
    path, text = written
    assert path == run_dir / "report.md"
    referenced = re.findall(r"\]\((plots/[^)]+\.png)\)", text)
    assert referenced and all((run_dir / p).is_file() for p in referenced)
    names = {Path(p).name for p in referenced}
    assert names == {p.name for p in (run_dir / "plots").glob("*.png")}
    for expected in ("throughput_forward.png", "throughput_train_step.png", "speedup_backward.png",
                     "memory_train_step.png", "pct_peak.png", "accuracy_vs_throughput.png",
                     "compile_time.png"):
        assert expected in names
    assert "Test CPU" in text and "abc123" in text and "rnnbench sweep --out" in text


def test_comparison_table_has_one_column_per_impl_and_the_four_dimensions(run_dir):
    frame = load_run(run_dir)
    table = comparison.comparison_table(frame, {})
    assert list(table.columns) == ["numpy", "torch", "ghost"]
    assert list(dict.fromkeys(table.index.get_level_values("dimension"))) == list(comparison.DIMENSIONS)
    claims = table.xs("article's claim", level="measure")
    assert claims.loc["gradients", "torch"] == "autograd"
    assert claims.loc["development effort", "numpy"] == "implement every detail"
    devices = table.loc["devices"]
    assert devices.iloc[1]["numpy"] == "cpu"  # row 0 is the claim
    assert devices.loc["available here", "ghost"] == f"unavailable: {UNAVAILABLE}"
    assert table.loc["gradients"].iloc[1]["torch"] == "yes"


def test_lines_of_code_count_each_registered_source(run_dir):
    table = comparison.comparison_table(load_run(run_dir), read_meta(run_dir))
    loc_row = table.loc["development effort"].iloc[1]
    folder = Path(impls.__file__).parent
    for name in ("numpy", "torch"):
        expected = sum(count_code_lines(folder / f) for f in impls.entry(name).sources)
        assert expected > 0
        assert loc_row[name].startswith(f"{expected} (")
    assert loc_row["ghost"] == tables.NONE  # not registered here: nothing to count


def test_count_code_lines_skips_blanks_comments_and_docstrings(tmp_path):
    source = textwrap.dedent('''\
        """Module docstring,
        two lines."""
        # a comment

        import os  # code with a comment


        def f(x):
            """Function docstring."""
            # another comment
            text = "# not a comment"
            value = (x +
                     1)
            return value


        class C:
            \'\'\'Class docstring.\'\'\'
            note = """a string, not a docstring"""
        ''')
    path = tmp_path / "sample.py"
    path.write_text(source)
    # import, def, text, value (2 lines), return, class, note
    assert count_code_lines(path) == 8


def test_speedup_is_the_ratio_of_medians_from_the_csv(run_dir):
    with open(run_dir / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    key = dict(phase="train_step", batch_size="4", seq_len="16", hidden_size="32")
    median = {r["impl"]: float(r["median_s"]) for r in rows
              if all(r[k] == v for k, v in key.items()) and r["status"] == "ok"}
    ratios = selection.speedups(load_run(run_dir))
    hit = ratios[(ratios["impl"] == "numpy") & (ratios["phase"] == "train_step")
                 & (ratios["batch_size"] == 4) & (ratios["seq_len"] == 16) & (ratios["hidden_size"] == 32)]
    assert len(hit) == 1
    assert hit["speedup"].iloc[0] == pytest.approx(median["torch"] / median["numpy"])
    assert hit["speedup"].iloc[0] == pytest.approx(2.0)
    # forward: 7 cases at 2x and one at 2/3, so the geometric mean is (2^7 * 2/3)^(1/8)
    means = selection.geomean_speedups(load_run(run_dir)).set_index(["impl", "phase"])
    assert means.loc[("numpy", "forward"), "geomean"] == pytest.approx((2**7 * 2 / 3) ** (1 / 8))
    assert means.loc[("numpy", "forward"), "n"] == 8


def test_a_run_of_three_cells_reports_them_side_by_side_never_paired_across(tmp_path):
    run_dir = write_run(tmp_path / "cells", cells=("rnn_tanh", "lstm", "gru"))
    frame = load_run(run_dir)
    # numpy is 2x torch per cell except one case (2/3): a pair across cells would give 8x, 6x...
    ratios = selection.speedups(frame)
    assert set(ratios["speedup"].round(6)) == {2.0, round(2 / 3, 6)}
    assert ratios.groupby("cell").size().to_dict() == {"gru": 24, "lstm": 24, "rnn_tanh": 24}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text = report.write_report(run_dir).read_text()
    assert (run_dir / "plots" / "cells.png").is_file() and "plots/cells.png" in text
    key = text.split("## Key results")[1].split("## Performance targets")[0]
    for cell in ("rnn_tanh", "lstm", "gru"):
        assert f"{cell}: ms ± IQR (% peak)" in key
    assert "<details>" in key  # the per-cell detail is folded, the summary is one row per impl x phase
    summary = key.split("<details>")[0]
    assert summary.count("| numpy ") == 3 and summary.count("| torch ") == 3
    comparison_text = text.split("## Key results")[0]
    assert re.search(r"speed-up vs torch, forward, at .* \(rnn_tanh · lstm · gru\)", comparison_text)
    assert "2.00× · 2.00× · 2.00×" in comparison_text  # numpy at the representative size, per cell
    accuracy = text.split("\n## Accuracy\n")[1].split("\n## ")[0]
    assert all(cell in accuracy for cell in ("rnn_tanh", "lstm", "gru"))


def test_a_run_of_several_structures_never_pairs_across_them_and_shows_what_they_cost(tmp_path):
    structures = ((1, False), (2, False), (1, True), (2, True))
    run_dir = write_run(tmp_path / "structures", structures=structures)
    frame = load_run(run_dir)
    # numpy is 2x torch per structure except one case (2/3): a pair across structures would
    # give 4x, 5x, 0.8x ...
    ratios = selection.speedups(frame)
    assert set(ratios["speedup"].round(6)) == {2.0, round(2 / 3, 6)}
    assert ratios.groupby(["num_layers", "bidirectional"]).size().to_dict() == dict.fromkeys(structures, 24)
    rep = selection.representative(frame)
    assert (rep["num_layers"], rep["bidirectional"]) == (1, False)  # the plain model, as plots fix
    assert selection.size_label(rep) == "B=4 T=16 I=8 H=32, float32, 1 thread"
    assert len(report.key_results(frame, rep)) == 2 * 3  # numpy, torch x phases: plain rows only
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text = report.write_report(run_dir).read_text()
    assert (run_dir / "plots" / "structures.png").is_file() and "plots/structures.png" in text
    section = text.split("## Structures: layers and directions")[1].split("\n## ")[0]
    for label in ("1-layer", "2-layer", "1-layer bidirectional", "2-layer bidirectional"):
        assert f"| {label}: ms ± IQR" in section
    assert "(5× 1-layer)" in section and "(2× 1-layer)" in section  # STRUCTURE_COST, as measured
    noisy = text.split("## Noisy rows")[1].split("##")[0]
    assert "rnn_tanh, 2-layer bidirectional, B=1 T=4 I=8 H=8" in noisy  # labels name the structure
    accuracy = text.split("\n## Accuracy\n")[1].split("\n## ")[0]
    assert "| structure " in accuracy and "2-layer bidirectional" in accuracy
    # a run without the plain model quotes its simplest structure, and says which
    only = write_run(tmp_path / "deep", structures=((2, True), (2, False)))
    assert selection.size_label(selection.representative(load_run(only))).startswith("2-layer, B=")


def test_problem_and_noisy_rows_are_listed_with_reasons(run_dir, written):
    _, text = written
    problems = report.problem_rows(load_run(run_dir))
    unavailable = problems[problems["status"] == "unavailable"]
    assert len(unavailable) == 1 and unavailable["rows"].iloc[0] == 24  # one line, not 24
    assert unavailable["reason"].iloc[0] == UNAVAILABLE
    assert set(problems["status"]) == {"unavailable", "error"}
    section = text.split("## Skipped, unavailable and failed rows")[1]
    assert "ghost" in section and "ghostlib" in section and ERROR in section
    noisy = text.split("## Noisy rows")[1].split("##")[0]
    assert "torch" in noisy and "B=1 T=4 I=8 H=8" in noisy


def test_plots_skip_gracefully_on_a_single_size(tmp_path):
    run_dir = write_run(tmp_path / "single", batch=(4,), seq=(8,), hidden=(16,))
    frame = load_run(run_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for plot in (plots.plot_throughput, plots.plot_speedup, plots.plot_memory,
                     plots.plot_pct_peak, plots.plot_compile):
            assert plot(frame, tmp_path / "plots") == []
        text = report.write_report(run_dir).read_text()
    assert all((run_dir / p).is_file() for p in re.findall(r"\]\((plots/[^)]+)\)", text))
    assert "B=4 T=8 I=8 H=16" in text  # the representative size is the only one
    # ... and it still gets a timing figure: throughput per phase as bars
    assert "](plots/phases.png)" in text
    assert plots.plot_phases(load_run(write_run(tmp_path / "sizes")), tmp_path / "other") == []


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels, from the PNG header (IHDR)."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_speedup_heat_maps_of_many_implementations_wrap_into_rows_at_page_width(tmp_path):
    run_dir = write_run(tmp_path / "many")
    rows = list(csv.DictReader(open(run_dir / "results.csv")))
    extra = [{**r, "impl": name} for name in ("numba", "torchscript", "onnx_fp32", "onnx_int8", "onnx_native")
             for r in rows if r["impl"] == "numpy" and r["status"] == "ok" and r["phase"] != "accuracy"]
    with open(run_dir / "results.csv", "a", newline="") as handle:
        csv.DictWriter(handle, COLUMNS).writerows(extra)
    frame = load_run(run_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = plots.plot_speedup(frame, tmp_path / "plots")
    six_impls = _png_size(paths[0])
    two = plots.plot_speedup(load_run(write_run(tmp_path / "two")), tmp_path / "plots2")
    assert six_impls[0] <= 1800  # three heat-maps a row: about a page, not a 3,000-pixel strip
    assert six_impls[1] > _png_size(two[0])[1]  # six panels take a second row


def test_markdown_table_fallback_escapes_pipes():
    import pandas as pd

    text = tables.markdown_table(pd.DataFrame({"a": ["x|y", None], "b": [1, 2]}))
    lines = text.splitlines()
    assert len(lines) == 4 and set(lines[1]) <= {"|", "-", " ", ":"}
    assert "x\\|y" in lines[2] and tables.NONE in lines[3]


def test_importing_report_stays_cheap():
    code = ("import sys, bench.report.document, bench.report.plots, bench.report.selection\n"
            "assert 'matplotlib' not in sys.modules; assert 'pandas' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


def test_report_from_a_tiny_real_sweep(tmp_path, monkeypatch):
    from bench.measure import machine
    from bench.spec import build_grid
    from bench.run.sweep import run_sweep

    from bench.run import sweep

    # the report is under test, not the calibration GEMMs (seconds): a fixed peak
    monkeypatch.setattr(machine, "gemm_peak_gflops", lambda dtype, threads, device="cpu": {"numpy": PEAK, "peak": PEAK})
    # ... nor the footprint's medians: one process each after the warm-up (torch's take ~2 s)
    monkeypatch.setattr(sweep, "FOOTPRINT_REPEATS", 1)
    # numpy and torch only: compiled backends would spend the test's time compiling
    grid = build_grid("quick", impls=["numpy", "torch"], cell=["rnn_tanh", "lstm"], batch_size=[1, 4],
                      seq_len=[4], hidden_size=[8], phases=["forward", "train_step"], footprint=True)
    out = run_sweep(grid, tmp_path / "run", progress=False, accuracy_epochs=1,
                    timing={"min_samples": 3, "min_time_s": 0.01, "warmup_s": 0.005})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text = report.write_report(out).read_text()
    assert "## The article's comparison, in numbers" in text
    assert "plots/throughput_forward.png" in text  # two batch sizes: one panel
    # the sweep measured footprints (after the timed cases): the report shows them
    # and the install and start workloads are decided, not "not measured"
    assert "## Footprint and start-up" in text
    workloads = text[text.index("## Which implementation"):text.index("## Key results")]
    assert re.search(r"\| smallest install +\| numpy +\|", workloads)
    assert re.search(r"\| fastest start \(serverless call, CLI\) +\| numpy +\|", workloads)
    assert all((out / p).is_file() for p in re.findall(r"\]\((plots/[^)]+)\)", text))


def test_key_results_show_diagnostics_only_when_reported(run_dir):
    frame = load_run(run_dir)
    rep = selection.representative(frame)
    assert "diagnostics" not in report.key_results(frame, rep).columns
    at_rep = (frame[list(rep)] == list(rep.values())).all(axis=1) & (frame["impl"] == "torch")
    frame.loc[at_rep, "recompiles"] = 3
    table = report.key_results(frame, rep)
    assert set(table.loc[table["impl"] == "torch", "diagnostics"]) == {"recompiles 3"}
