"""`rnnbench compare`: a run against itself is unchanged, against its samples scaled it is
slower or faster by exactly that, noise and small changes pass, lost rows, correctness
regressions and incomparable machines are said, and pytest-benchmark JSON pairs with runs.

Run folders are written with bench.results' own writer (RowWriter, write_meta): the files
are the real format, old-format quirks included where a test says so.
"""
import csv
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.compare.pairing import ONLY_BASE, ONLY_OTHER, STATUS_CHANGE, TIMED, compare
from bench.compare.sources import load_source, load_sources, unique_labels
from bench.compare.stats import (FASTER, NOT_TESTED, SLOWER, UNCHANGED, Settings, holm,
                                 mann_whitney_p, ratio_interval, why_untestable)
from bench.record import COLUMNS, RAW_TIMES_FIELD
from bench.results import RowWriter, write_meta

ROOT = Path(__file__).resolve().parents[1]
JSON_DATA = ROOT / "tests" / "data" / "pytest_benchmark_numpy.json"
SAMPLES = 25  # per row: enough for the test to see a 30 % change after Holm over the sweep
NOISE = 0.02  # lognormal sigma of the synthetic per-call times: a quiet machine
# (impl, cell, phase, hidden_size): 16 timed cases
CASES = [(impl, cell, phase, hidden) for impl in ("numpy", "torch") for cell in ("rnn_tanh", "lstm")
         for phase in ("forward", "train_step") for hidden in (64, 128)]
MACHINE = {"cpu_model": "Test CPU 9000", "cpu_features": {"simd": ["avx2", "fma"]}, "cores": 2,
           "cores_available": 2, "platform": "Linux-test", "python": "3.11.7",
           "versions": {"numpy": "2.4.6", "torch": "2.13.0+cpu"},
           "blas": [{"internal_api": "openblas", "version": "0.3.31", "num_threads": 2,
                     "architecture": "Haswell", "threading_layer": "pthreads"}],
           "torch_threads": None, "torch_mkl": False,
           "env": {"OMP_NUM_THREADS": None, "MKL_NUM_THREADS": None, "OPENBLAS_NUM_THREADS": None,
                   "OPENBLAS_CORETYPE": None},
           "gpus": [], "nvidia_smi": [], "git_commit": "0" * 40}


def _row(impl, cell, phase, hidden, **values) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(impl=impl, cell=cell, num_layers=1, bidirectional=False, phase=phase, batch_size=32,
               seq_len=16, input_size=8, hidden_size=hidden, dtype="float32", threads=1,
               num_classes=10, device="cpu", status="ok", reason="")
    row.update(values)
    return row


def timed_row(index: int, case, *, scale=1.0, seed=0, **values) -> dict:
    """A case's row: SAMPLES lognormal per-call times around its own median, drawn from
    `seed` (the same seed: the same samples), every time multiplied by `scale`."""
    rng = np.random.default_rng(1000 * seed + index)
    times = (1e-3 * (index + 1) * rng.lognormal(0.0, NOISE, SAMPLES) * scale).tolist()
    return _row(*case, median_s=float(np.median(times)), samples=SAMPLES,
                peak_mem_bytes=1e6 * (index + 1), compile_s=0.01, max_err=2e-7,
                **{RAW_TIMES_FIELD: times, **values})


def accuracy_row(*, scale=1.0, test_accuracy=0.9) -> dict:
    """An accuracy row: median_s is the training time (one measurement), no raw samples."""
    return _row("numpy", "rnn_tanh", "accuracy", 32, median_s=2.0 * scale, test_accuracy=test_accuracy)


def write_run(folder: Path, rows: list[dict], machine: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    writer = RowWriter(folder)
    for row in rows:
        writer.write(row)
    writer.close()
    write_meta(folder, {"command": ["rnnbench", "sweep", "--test"], "started": "2026-01-01T00:00:00+00:00",
                        "machine": machine or MACHINE})
    return folder


def run_rows(*, scale=1.0, seed=0, skip=(), **accuracy) -> list[dict]:
    return [timed_row(i, case, scale=scale, seed=seed) for i, case in enumerate(CASES)
            if i not in skip] + [accuracy_row(scale=scale, **accuracy)]


@pytest.fixture
def base(tmp_path) -> Path:
    return write_run(tmp_path / "base", run_rows())


def compared(tmp_path, base: Path, other: Path, *extra, settings=Settings()):
    sources = load_sources([base, other, *extra])
    return [compare(sources[0], o, settings) for o in sources[1:]]


def cli(tmp_path, *args) -> int:
    return main(["compare", *map(str, args), "--out", str(tmp_path / "out")])


def report(tmp_path) -> str:
    return (tmp_path / "out" / "compare.md").read_text()


# ---------------------------------------------------------------- the verdicts

def test_a_run_compared_with_itself_reports_no_change_and_passes_the_gate(tmp_path, base, capsys):
    comparison, = compared(tmp_path, base, base)
    timed = comparison.timed
    assert len(timed) == len(CASES) + 1  # the accuracy row pairs too
    tested = [p for p in timed if p.verdict != NOT_TESTED]
    assert len(tested) == len(CASES)
    assert all(p.timing.ratio == 1.0 and p.timing.p == 1.0 for p in timed if p.timing.p is not None)
    assert {p.verdict for p in tested} == {UNCHANGED}
    assert cli(tmp_path, base, base, "--fail-on-regression") == 0
    assert "0 slower" in capsys.readouterr().out
    assert "WARNING" not in report(tmp_path)


def test_samples_scaled_by_1_3_are_slower_in_every_pair_and_fail_the_gate(tmp_path, base, capsys):
    slower = write_run(tmp_path / "slower", run_rows(scale=1.3))
    comparison, = compared(tmp_path, base, slower)
    tested = [p for p in comparison.timed if p.verdict != NOT_TESTED]
    assert len(tested) == len(CASES)
    assert {p.verdict for p in tested} == {SLOWER}
    assert all(p.timing.ratio == pytest.approx(1.3) for p in comparison.timed)
    assert all(p.timing.low <= 1.3 <= p.timing.high for p in tested)
    # the accuracy row's training time is one measurement: shown, never tested
    untested, = [p for p in comparison.timed if p.verdict == NOT_TESTED]
    assert untested.named["phase"] == "accuracy" and "no raw samples" in untested.timing.note
    assert cli(tmp_path, base, slower, "--fail-on-regression") == 1
    out = capsys.readouterr().out
    listed = [line for line in out.splitlines() if line.startswith("  slower: ")]
    assert len(listed) == len(CASES) and f"FAILED: {len(CASES)} pair(s)" in out
    assert all("ratio 1.300" in line for line in listed)


def test_samples_scaled_by_1_over_1_3_are_faster_and_pass_the_gate(tmp_path, base):
    faster = write_run(tmp_path / "faster", run_rows(scale=1 / 1.3))
    comparison, = compared(tmp_path, base, faster)
    assert {p.verdict for p in comparison.timed if p.verdict != NOT_TESTED} == {FASTER}
    assert cli(tmp_path, base, faster, "--fail-on-regression") == 0


def test_a_significant_change_under_the_threshold_is_no_verdict(tmp_path, base):
    little = write_run(tmp_path / "little", run_rows(scale=1.05))
    comparison, = compared(tmp_path, base, little)
    tested = [p for p in comparison.timed if p.verdict != NOT_TESTED]
    assert {p.verdict for p in tested} == {UNCHANGED}
    # the test does see a 5 % shift with 25 quiet samples: only the threshold holds it back
    assert any(p.timing.p_holm < 0.05 and "within" in p.timing.note for p in tested)
    assert cli(tmp_path, base, little, "--fail-on-regression") == 0


def test_two_draws_from_one_distribution_are_no_significant_change(tmp_path, base):
    again = write_run(tmp_path / "again", run_rows(seed=7))
    comparison, = compared(tmp_path, base, again)
    assert {p.verdict for p in comparison.timed if p.verdict != NOT_TESTED} == {UNCHANGED}
    assert all(abs(np.log(p.timing.ratio)) < np.log(1.05) for p in comparison.timed)


def test_a_stricter_alpha_or_a_larger_threshold_only_removes_verdicts(tmp_path, base):
    slower = write_run(tmp_path / "slower", run_rows(scale=1.3))
    lenient, = compared(tmp_path, base, slower)
    strict, = compared(tmp_path, base, slower, settings=Settings(threshold=1.5))
    assert len(lenient.slower) == len(CASES) and not strict.slower


# ---------------------------------------------------------------- the statistics

def test_holm_adjusts_step_down_and_stays_monotone():
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_constant_identical_samples_give_ratio_1_without_warnings():
    same = np.full(20, 1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ratio_interval(same, same, Settings()) == (1.0, 1.0)
        assert mann_whitney_p(same, same) == 1.0


def test_the_interval_is_reproducible_and_brackets_a_clear_shift():
    rng = np.random.default_rng(0)
    base, other = rng.lognormal(0, 0.05, 30), rng.lognormal(np.log(1.5), 0.05, 30)
    first, second = ratio_interval(base, other, Settings()), ratio_interval(base, other, Settings())
    assert first == second
    assert first[0] < 1.5 < first[1] and first[0] > 1.3


def test_too_few_samples_are_not_tested_and_say_why():
    assert "no raw samples" in why_untestable(0, 25, 0.05)
    # 3 vs 3: the most extreme split has p = 2 / C(6, 3) = 0.1
    assert "cannot reach" in why_untestable(3, 3, 0.05)
    assert why_untestable(7, 7, 0.05) is None


def test_settings_refuse_a_threshold_under_1_and_the_cli_says_so(tmp_path, base, capsys):
    with pytest.raises(ValueError, match="threshold"):
        Settings(threshold=0.9)
    with pytest.raises(SystemExit) as exit_info:
        cli(tmp_path, base, base, "--threshold", "0.9")
    assert exit_info.value.code == 2 and "above 1" in capsys.readouterr().err


# ---------------------------------------------------------------- rows, status, correctness

def test_rows_in_one_run_only_and_lost_rows_are_listed(tmp_path, base):
    rows = run_rows(skip={0})
    rows[0] = {**rows[0], "status": "error", "reason": "RuntimeError: deliberate",
               "median_s": None, "samples": None, RAW_TIMES_FIELD: None}
    rows.append(timed_row(99, ("numpy", "gru", "forward", 64)))
    other = write_run(tmp_path / "other", rows)
    comparison, = compared(tmp_path, base, other)
    only_base, = comparison.of_kind(ONLY_BASE)
    only_other, = comparison.of_kind(ONLY_OTHER)
    lost, = comparison.of_kind(STATUS_CHANGE)
    assert only_base.named["hidden_size"] == CASES[0][3] and only_other.named["cell"] == "gru"
    assert lost.flags == ["lost: ok → error: RuntimeError: deliberate"]
    assert cli(tmp_path, base, other) == 0
    text = report(tmp_path)
    section = text.split("## Rows in one run only")[1]
    assert "BASE only" in section and "OTHER only" in section and "gru" in section
    assert "lost: ok → error" in text.split("## Lost rows and correctness flags")[1]


def test_a_max_err_10x_worse_and_an_accuracy_drop_are_flagged(tmp_path, base):
    rows = run_rows(test_accuracy=0.8)
    rows[3] = {**rows[3], "max_err": 5e-5}
    other = write_run(tmp_path / "other", rows)
    comparison, = compared(tmp_path, base, other)
    flags = {flag for p in comparison.flagged for flag in p.flags}
    assert any(f.startswith("max_err 2.00e-07 → 5.00e-05") for f in flags)
    assert any(f.startswith("test accuracy 0.900 → 0.800") for f in flags)
    assert len(comparison.flagged) == 2


# ---------------------------------------------------------------- machines

@pytest.mark.parametrize("change, words", [
    ({"cpu_model": "Other CPU 1"}, "different machines"),
    ({"blas": [{**MACHINE["blas"][0], "architecture": "SkylakeX"}]}, "different BLAS kernels")])
def test_another_machine_or_blas_kernel_is_a_loud_warning(tmp_path, base, change, words, capsys):
    other = write_run(tmp_path / "other", run_rows(), {**MACHINE, **change})
    assert cli(tmp_path, base, other) == 0
    text = report(tmp_path)
    assert re.search(rf"WARNING: `other` and `base` come from {words}", text)
    assert text.index("WARNING") < text.index("## What was compared")  # at the top
    assert "WARNING" in capsys.readouterr().out


def test_a_library_version_change_is_a_note_not_the_warning(tmp_path, base):
    machine = {**MACHINE, "versions": {**MACHINE["versions"], "torch": "2.14.0+cpu"}}
    other = write_run(tmp_path / "other", run_rows(), machine)
    assert cli(tmp_path, base, other) == 0
    text = report(tmp_path)
    assert "WARNING" not in text and "torch: 2.13.0+cpu → 2.14.0+cpu" in text


# ---------------------------------------------------------------- pytest-benchmark JSON

def _json(tmp_path, name: str, edit) -> Path:
    document = json.loads(JSON_DATA.read_text())
    for benchmark in document["benchmarks"]:
        edit(benchmark)
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def _scale(factor):
    def edit(benchmark):
        stats = benchmark["stats"]
        stats["data"] = [t * factor for t in stats["data"]]
        stats["median"] *= factor
    return edit


def test_pytest_benchmark_json_pairs_with_itself_and_sees_a_slowdown(tmp_path, capsys):
    source = load_source(JSON_DATA)
    assert len(source.entries) == 2 and all(len(e.samples) >= 20 for e in source.entries.values())
    assert cli(tmp_path, JSON_DATA, JSON_DATA, "--fail-on-regression") == 0
    slower = _json(tmp_path, "slower.json", _scale(1.3))
    assert cli(tmp_path, JSON_DATA, slower, "--fail-on-regression") == 1
    assert "FAILED: 2 pair(s)" in capsys.readouterr().out
    # BLAS and GPUs are not in the JSON: the report says it cannot tell, not that all is well
    assert "Cannot tell whether" in report(tmp_path)


def test_an_older_json_is_keyed_from_its_params_and_one_without_data_is_not_tested(tmp_path):
    def old_and_bare(benchmark):
        for name in ("phase", "batch_size", "seq_len", "input_size", "hidden_size", "dtype"):
            del benchmark["extra_info"][name]
        del benchmark["stats"]["data"]  # saved without --benchmark-save-data
    bare = _json(tmp_path, "bare.json", old_and_bare)
    assert set(load_source(bare).entries) == set(load_source(JSON_DATA).entries)
    comparison, = compared(tmp_path, JSON_DATA, bare)
    assert len(comparison.timed) == 2 and {p.verdict for p in comparison.timed} == {NOT_TESTED}
    assert all(p.timing.ratio == 1.0 for p in comparison.timed)


def test_a_run_folder_pairs_with_a_json_where_keys_match(tmp_path, capsys):
    rows = []
    for key, entry in load_source(JSON_DATA).entries.items():
        named = entry.named()
        rows.append({**_row(named["impl"], named["cell"], named["phase"], named["hidden_size"]),
                     **{k: named[k] for k in ("batch_size", "seq_len", "input_size")},
                     "median_s": entry.median_s, "samples": len(entry.samples),
                     RAW_TIMES_FIELD: list(entry.samples)})
    rows.append(timed_row(0, CASES[0]))  # a case the JSON does not have
    run = write_run(tmp_path / "run", rows)
    comparison, = compared(tmp_path, run, JSON_DATA)
    assert len(comparison.timed) == 2 and len(comparison.of_kind(ONLY_BASE)) == 1
    assert {p.verdict for p in comparison.timed} == {UNCHANGED}
    assert cli(tmp_path, run, JSON_DATA) == 0


# ---------------------------------------------------------------- outputs

def test_the_csv_has_one_row_per_pair_and_three_inputs_one_block_per_other(tmp_path, base):
    slower = write_run(tmp_path / "slower", run_rows(scale=1.3))
    other = write_run(tmp_path / "other", run_rows(skip={0, 1}))
    pairs = tmp_path / "pairs.csv"
    assert cli(tmp_path, base, slower, other, "--csv", pairs) == 0
    rows = list(csv.DictReader(pairs.open()))
    keys = len(CASES) + 1
    assert len(rows) == 2 * keys
    assert [sum(r["other"] == label for r in rows) for label in ("slower", "other")] == [keys, keys]
    assert {r["verdict"] for r in rows if r["other"] == "slower" and r["kind"] == TIMED} == {SLOWER, NOT_TESTED}
    text = report(tmp_path)
    for label in ("slower", "other"):
        assert f"{label}: ratio [95 % interval]" in text and f"`{label}` vs `base`" in text
    assert (tmp_path / "out" / "plots" / "ratios-slower.png").exists()
    assert (tmp_path / "out" / "plots" / "ratios-other.png").exists()


def test_the_report_says_how_to_read_it(tmp_path, base):
    assert cli(tmp_path, base, base) == 0
    text = report(tmp_path)
    for phrase in ("OTHER median / BASE median", "Above 1: OTHER is slower", "Mann–Whitney U",
                   "Holm–Bonferroni", "bootstrap", "ratio ≥ 1.1", "one measurement"):
        assert phrase in text, phrase


def test_same_folder_names_get_labels_that_tell_them_apart(tmp_path):
    assert unique_labels([Path("x/a/run"), Path("x/b/run"), Path("c/other.json")]) == ["a/run", "b/run", "other"]


def test_the_committed_large_run_against_itself_through_the_cli(tmp_path):
    run = ROOT / "results" / "large-cpu-cells"  # an older run: no num_layers columns
    assert cli(tmp_path, run, run, "--fail-on-regression", "--csv", tmp_path / "p.csv") == 0
    text = report(tmp_path)
    assert "54 timed pairs: **0 slower**, **0 faster**, 54 no significant change" in text


def test_a_missing_input_is_a_one_line_error(tmp_path, base, capsys):
    assert cli(tmp_path, base, tmp_path / "nowhere") == 2
    assert "no such run folder" in capsys.readouterr().err



def test_comparing_needs_no_backend_nor_torch_and_the_cli_loads_no_statistics_to_start(tmp_path):
    """Like the report, compare reads files only; and `rnnbench list` pays for no scipy."""
    run = ROOT / "results" / "large-cpu-cells"
    code = ("import sys; sys.modules['impls'] = None; sys.modules['torch'] = None\n"
            "from bench.compare.command import run_compare\n"
            "from bench.compare.stats import Settings\n"
            f"path, (comparison,) = run_compare([{str(run)!r}, {str(JSON_DATA)!r}], "
            f"{str(tmp_path)!r}, Settings())\n"
            "assert path.exists() and not comparison.timed  # they share no key\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    lazy = ("import sys, bench.cli\n"
            "heavy = [m for m in ('scipy', 'matplotlib') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", lazy], check=True, cwd=ROOT)
