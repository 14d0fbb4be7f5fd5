"""The sweep: rows survive a SIGKILL, --resume completes without duplicates, failures
and unavailable implementations become rows, and cases too big are skipped up front."""
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

import impls
from bench.measure import analytic as flops
from bench.measure import memory
from bench.measure import timing
from bench.results import RESULTS_CSV, done_keys, load_run, load_runs, read_meta, read_rows
from bench import spec
from bench.spec import Case, Grid, build_grid, load_config
from bench.run.sweep import run_sweep, skip_reason
from conftest import temporary_entry

ROOT = Path(__file__).resolve().parents[1]
FAST = {"min_samples": 3, "min_time_s": 0.01, "warmup_s": 0.0}
# these sweeps test rows, files and resume; one test calibrates for real (real_calibration)
pytestmark = pytest.mark.usefixtures("fixed_peak")


def tiny_grid(**overrides):
    base = dict(impls=["numpy"], cell=["rnn_tanh"], phases=["forward"], batch_size=[1, 2], seq_len=[3],
                hidden_size=[4], input_size=[2], accuracy=False, footprint=False)
    return build_grid("quick", **{**base, **overrides})


@pytest.mark.real_calibration
def test_rows_are_tidy_and_complete(tmp_path):
    out = run_sweep(tiny_grid(phases=["forward", "backward", "train_step", "transfer"]),
                    tmp_path / "run", progress=False, timing=FAST)
    every = load_run(out)
    # the roofline was measured: one calibration per dtype x threads, numpy's GEMM in it
    (calibration,) = read_meta(out)["calibration"]
    assert calibration["gemm_gflops"]["numpy"] > 0
    assert calibration["gemm_gflops"]["peak"] >= calibration["gemm_gflops"]["numpy"]
    assert (every["peak_gflops"].dropna() == calibration["gemm_gflops"]["peak"]).all()
    assert len(every) == 8
    transfer = every[every["phase"] == "transfer"]
    assert set(transfer["status"]) == {"skipped"}  # host memory: no copy to time on the CPU
    assert transfer["reason"].str.contains("host").all()
    frame = every[every["phase"] != "transfer"]
    assert set(frame["status"]) == {"ok"}
    for column in ("median_s", "iqr_s", "repeats", "seq_per_s", "gflops", "pct_peak",
                   "peak_mem_bytes", "compile_s"):
        assert frame[column].notna().all(), column
    try:
        import torch  # noqa: F401  (the oracle behind max_err)
    except ImportError:
        assert frame["max_err"].isna().all()  # no oracle: the column stays empty, not made up
    else:
        assert (frame["max_err"] < impls.tolerance("numpy", "float32")).all()
    assert (frame["timer_overhead_pct"] < 1.0).all()
    np.testing.assert_allclose(frame["seq_per_s"], frame["batch_size"] / frame["median_s"])


def test_existing_run_is_never_overwritten_unless_asked(tmp_path):
    out = run_sweep(tiny_grid(batch_size=[1]), tmp_path / "run", progress=False, timing=FAST)
    before = (out / RESULTS_CSV).read_text()
    with pytest.raises(ValueError, match="--resume.*--force"):
        run_sweep(tiny_grid(batch_size=[1]), out, progress=False, timing=FAST)
    assert (out / RESULTS_CSV).read_text() == before
    run_sweep(tiny_grid(batch_size=[1]), out, force=True, progress=False, timing=FAST)
    assert len(read_rows(out)) == 1


def test_sigkill_leaves_valid_csv_and_resume_completes_it(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "bench.cli", "sweep", "--impl", "numpy", "--cell", "rnn_tanh",
               "--phase", "forward", "--batch-size", "1,2,3,4,5,6,7,8", "--seq-len", "2,3,4", "--hidden-size", "4",
               "--input-size", "2", "--no-accuracy", "--no-footprint", "--quiet", "--out", str(out)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(read_rows(out)) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = read_rows(out)
    assert 3 <= len(finished) < 24, "the kill must land mid-sweep"
    assert all(row["status"] == "ok" and row["median_s"] for row in finished)
    subprocess.run(command + ["--resume"], cwd=ROOT, check=True, capture_output=True)
    rows = read_rows(out)
    keys = [tuple(r[k] for k in ("batch_size", "seq_len")) for r in rows]
    assert len(rows) == 24 and len(set(keys)) == 24  # every case once, none duplicated
    assert rows[: len(finished)] == finished  # finished rows were kept, not re-run


def test_torn_last_line_is_dropped(tmp_path):
    out = run_sweep(tiny_grid(), tmp_path / "run", progress=False, timing=FAST)
    with open(out / RESULTS_CSV, "a") as handle:
        handle.write("numpy,forward,9,9")  # what a kill in the middle of a write leaves
    assert len(load_run(out)) == 2
    assert len(done_keys(out)) == 2
    run_sweep(tiny_grid(batch_size=[1, 2, 3]), out, resume=True, progress=False, timing=FAST)
    assert len(load_run(out)) == 3


class _Exploding(impls.Backend):
    name = "exploding"

    def __init__(self):
        self.numpy = impls.get("numpy")
        for hook in ("_from_numpy_array", "_to_numpy_array", "_is_native", "_dtype_of", "_all_finite"):
            setattr(self, hook, getattr(self.numpy, hook))

    def _predict(self, params, x, lengths):
        raise RuntimeError("kernel exploded")


def test_failures_and_unavailable_become_rows_and_the_sweep_goes_on(tmp_path):
    exploding = types.SimpleNamespace(create=lambda device=None: _Exploding())
    with temporary_entry("exploding", exploding), temporary_entry("missing", None, requires="nopkg"):
        out = run_sweep(tiny_grid(impls=["exploding", "missing", "numpy"], batch_size=[1]),
                        tmp_path / "run", progress=False, timing=FAST)
    frame = load_run(out).set_index("impl")
    assert frame.loc["exploding", "status"] == "error"
    assert "kernel exploded" in frame.loc["exploding", "reason"]
    assert frame.loc["missing", "status"] == "unavailable"
    assert "nopkg" in frame.loc["missing", "reason"]
    assert frame.loc["numpy", "status"] == "ok"


def test_cases_too_big_for_the_machine_are_skipped_before_they_run(tmp_path):
    huge = Case("numpy", "train_step", 128, 50, 2560, 2560)
    assert "exceeds --max-case-s" in skip_reason(huge, peak_gflops=100.0, max_case_s=1.0)
    assert skip_reason(Case("numpy", "forward", 1, 3, 2, 4), 100.0, 1.0) is None
    started = time.perf_counter()
    out = run_sweep(Grid(impls=("numpy",), cartesian=False, accuracy=False, extra=(huge,)),
                    tmp_path / "run", progress=False, max_case_s=1.0, timing=FAST)
    rows = [r for r in read_rows(out) if r["phase"] == "train_step"]
    assert rows and all(r["status"] == "skipped" for r in rows)
    assert time.perf_counter() - started < 30


def test_noisy_flag_and_statistics():
    steady = timing.Measurement((1.0, 1.01, 0.99, 1.0, 1.02), 1, 0.0, 0.0)
    jumpy = timing.Measurement((1.0, 1.5, 0.7, 1.3, 0.8), 1, 0.0, 0.0)
    assert not steady.noisy and jumpy.noisy
    assert steady.median == 1.0 and jumpy.iqr == pytest.approx(1.3 - 0.8)


def test_measure_keeps_compile_time_apart():
    calls = []

    def slow_first():
        calls.append(None)
        time.sleep(0.05 if len(calls) == 1 else 0.0)

    result = timing.measure(slow_first, min_samples=3, min_time_s=0.01)
    assert result.compile_s >= 0.05
    assert result.median < 0.01
    assert result.timer_overhead_pct < 1.0


@pytest.mark.parametrize("name, cell, structure", [
    *((name, cell, (1, False)) for name in ("numpy", "torch") for cell in impls.CELLS),
    ("numpy", "rnn_tanh", (2, True)),  # 4 layer-directions' states, and the inter-layer gradients
], ids=lambda value: f"L{value[0]}{'-bi' if value[1] else ''}" if isinstance(value, tuple) else value)
def test_train_step_memory_grows_with_seq_len(name, cell, structure):
    if not memory.supported():
        pytest.skip("peak memory needs Linux /proc/self/clear_refs")
    from conftest import backend_or_skip
    from bench.measure.machine import use_threads
    from bench.run.bind import make_phase

    backend = backend_or_skip(name)
    layers, bidirectional = structure
    with use_threads(1):  # as a sweep runs it: BLAS threads spinning on a busy VM cost seconds
        peaks = [memory.peak_bytes(make_phase(backend, Case(name, "train_step", 32, seq_len, 16, 128, cell=cell,
                                                            num_layers=layers, bidirectional=bidirectional)))
                 for seq_len in (32, 512)]
    assert peaks[1] > peaks[0]
    # ... and at least the analytic BPTT activations of the longer sequence, for this model
    assert peaks[1] >= 0.5 * flops.activation_bytes("train_step", 32, 512, 16, 128, cell=cell,
                                                    num_layers=layers, bidirectional=bidirectional)


def test_flop_formula_by_hand():
    # B=1, T=2, I=1, H=1, C=1: projection 2*2 + bias 2, recurrence 2*2 + add 2 + tanh 2, head 2 + 1
    assert flops.forward_flops(1, 2, 1, 1, 1) == 4 + 2 + 4 + 2 + 2 + 2 + 1
    # head: dW_hy 2 + db_y 1 + dh_T 2; loop: tanh' 3*2 + dh W_hh 2*(T-1); after: dW_xh 4, dW_hh 4, db_h 2
    assert flops.backward_flops(1, 2, 1, 1, 1) == (2 + 1 + 2) + (6 + 2) + (4 + 4 + 2)
    assert flops.phase_flops("transfer", 4, 5, 6, 7) == 0


def test_flop_formula_of_the_gated_cells_by_hand():
    # lstm, B=1 T=2 I=1 H=1 C=1: 4 gate rows, so projection 2*2*4 + bias 2*4, recurrence
    # 2*2*4 + 13 element-wise per unit and step, head 2 + 1
    assert flops.forward_flops(1, 2, 1, 1, 1, cell="lstm") == 16 + 8 + 16 + 26 + 3
    # gru: 3 gate rows, 11 element-wise; backward adds db_hn (1 per unit and step)
    assert flops.forward_flops(1, 2, 1, 1, 1, cell="gru") == 12 + 6 + 12 + 22 + 3
    assert flops.backward_flops(1, 2, 1, 1, 1, cell="gru") == (2 + 1 + 2) + (17 * 2 + 2 * 3) + (12 + 12 + 6 + 2)
    # the GEMMs dominate at scale: G times the tanh cell's work, within the element-wise share
    for cell, gates in (("lstm", 4), ("gru", 3)):
        ratio = flops.forward_flops(32, 64, 256, 256, cell=cell) / flops.forward_flops(32, 64, 256, 256)
        assert gates * 0.98 < ratio < gates * 1.02


# B=1 T=2 I=1 H=1 C=1, 2 layers, both directions (D=2); G gate rows, E_f/E_b the cell's
# element-wise work per unit and step (rnn_tanh 1, 2, 3; lstm 4, 13, 22; gru 3, 11, 17).
# forward: 2 directions x layer 0 (projection 2*2*1*G, bias 2G, recurrence 2*2*G, E_f*2)
#          + 2 x layer 1, which reads I_1 = D*H = 2 (projection 2*2*2*G, 2G, 4G, 2E_f)
#          + head 2*(D*H)*C + C = 5                                     -> 48G + 8E_f + 5
# backward: head 2*2 + 1 + 2*2 = 9; per layer-direction loop 2E_b + 2*(T-1)*G, dW_hh 4G,
#          db_h 2G, dW_xh 4G (layer 0) or 8G (layer 1); layer 0's output gradient added at
#          each step 2 x 2; layer 1's input gradient 2 x 2*2*G*2 = 16G, the directions' sum 4
#          (gru: db_hn 2 per layer-direction, 8)                        -> 17 + 8E_b + 72G
@pytest.mark.parametrize("cell, forward, backward", [
    ("rnn_tanh", 48 + 16 + 5, 17 + 24 + 72), ("lstm", 192 + 104 + 5, 17 + 176 + 288),
    ("gru", 144 + 88 + 5, 17 + 136 + 216 + 8)])
def test_flop_formula_of_a_stacked_bidirectional_model_by_hand(cell, forward, backward):
    assert flops.forward_flops(1, 2, 1, 1, 1, cell, num_layers=2, bidirectional=True) == forward
    assert flops.backward_flops(1, 2, 1, 1, 1, cell, num_layers=2, bidirectional=True) == backward
    # the plain model's formulas are the one-layer ones, unchanged
    assert flops.phase_flops("train_step", 3, 4, 5, 6, 7, cell, 1, False) == flops.phase_flops(
        "train_step", 3, 4, 5, 6, 7, cell)


def test_activation_memory_of_a_stacked_bidirectional_model_by_hand():
    # rnn_tanh B=1 T=2 H=1, 2 layers x 2 directions, float32: per layer-direction the states
    # (T+1)BH = 3 and the projection TBH = 2; gradients TBH = 2 each, plus layer 1's input
    # gradient T*B*(D*H) = 4 -> 4 x 5 + 4 x 2 + 4 = 32 values
    assert flops.activation_bytes("train_step", 1, 2, 1, 1, num_layers=2, bidirectional=True) == 4 * 32
    assert flops.activation_bytes("backward", 1, 2, 1, 1, num_layers=2, bidirectional=True) == 4 * 12
    # inference: per layer-direction the projection 2 and one state 1, plus layer 0's
    # outputs, which layer 1 reads, T*B*H per direction = 4 -> 4 x 3 + 4 = 16 values
    assert flops.activation_bytes("forward", 1, 2, 1, 1, num_layers=2, bidirectional=True) == 4 * 16


@pytest.mark.parametrize("structure", [(1, False), (2, False), (1, True), (3, True)])
@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_the_formulas_know_each_cells_parameters(cell, structure):
    params = impls.init_params(5, 7, 3, seed=0, cell=cell, num_layers=structure[0], bidirectional=structure[1])
    assert flops.num_params(5, 7, 3, cell, *structure) == sum(v.size for v in params.values())
    assert flops.GATES == impls.params.GATES and spec.CELLS == tuple(impls.CELLS)


def test_structures_are_dimensions_of_the_grid_and_of_listed_problems(tmp_path):
    grid = tiny_grid(num_layers=[1, 2], bidirectional=[False, True], batch_size=[1])
    assert [c.structure() for c in grid.cases(["numpy"])] == [(1, False), (1, True), (2, False), (2, True)]
    assert {c.structure() for c in build_grid("quick").cases(impls.names())} == {(1, False)}  # unchanged
    deep = build_grid("deepbench", num_layers=[2]).cases(["numpy"])  # like dtype and threads
    assert deep and {c.structure() for c in deep} == {(2, False)}
    config = tmp_path / "grid.toml"
    config.write_text("num_layers = [1, 3]\nbidirectional = true\n")  # one value = a list of one
    grid = build_grid(**load_config(config))
    assert (grid.num_layers, grid.bidirectional) == ((1, 3), (True,))
    with pytest.raises(ValueError, match="num_layers needs positive integers"):
        build_grid("quick", num_layers=[0])
    with pytest.raises(ValueError, match="bidirectional needs true/false values"):
        build_grid("quick", bidirectional=[1])


class _OneLayerOnly(type(impls.get("numpy"))):
    """numpy, declaring the plain model only: what a backend without stacked layers is."""
    name = "flat"
    structured = False


def test_a_structure_a_backend_does_not_run_is_a_skipped_row_and_numpy_runs_them_all(tmp_path, monkeypatch):
    from bench.measure import machine

    # the rows are under test, not the calibration GEMMs (seconds): a fixed peak
    monkeypatch.setattr(machine, "gemm_peak_gflops", lambda dtype, threads, device="cpu": {"peak": 100.0})
    flat = types.SimpleNamespace(create=lambda device=None: _OneLayerOnly())
    with temporary_entry("flat", flat):
        grid = tiny_grid(impls=["flat", "numpy"], phases=["forward", "train_step"], batch_size=[2],
                         num_layers=[1, 2], bidirectional=[False, True], accuracy=True)
        out = run_sweep(grid, tmp_path / "run", progress=False, timing=FAST, accuracy_epochs=1)
    rows = read_rows(out)
    by_key = {(r["impl"], r["phase"], r["num_layers"], r["bidirectional"]): r for r in rows}
    assert len(rows) == len(by_key) == 2 * 3 * 4  # impls x (forward, train_step, accuracy) x structures
    for (impl, phase, layers, bidirectional), row in by_key.items():
        if impl == "flat" and (layers, bidirectional) != ("1", "False"):
            assert row["status"] == "skipped", row
            assert row["reason"] == _OneLayerOnly().structure_reason(int(layers), bidirectional == "True")
        else:
            assert row["status"] == "ok", row
    frame = load_run(out)
    timed = frame[(frame["phase"] != "accuracy") & (frame["status"] == "ok")]
    assert frame["bidirectional"].map(type).eq(bool).all()  # a flag column, read back as bool
    if timed["max_err"].notna().any():  # the oracle (torch) is installed
        assert (timed["max_err"] < impls.tolerance("numpy", "float32")).all()
    # the analytic columns are the structure's
    for _, r in timed.iterrows():
        args = (r["phase"], r["batch_size"], r["seq_len"], r["input_size"], r["hidden_size"])
        assert r["analytic_mem_bytes"] == flops.activation_bytes(
            *args, "float32", "rnn_tanh", r["num_layers"], r["bidirectional"])
        assert r["gflops"] * r["median_s"] * 1e9 == pytest.approx(flops.phase_flops(
            *args, 10, "rnn_tanh", r["num_layers"], r["bidirectional"]))


def test_config_file_and_several_runs_concatenate(tmp_path):
    config = tmp_path / "grid.toml"
    config.write_text('impls = "numpy"\ncell = "lstm"\nphases = ["forward"]\nbatch_size = 1\nseq_len = [2]\n'
                      'hidden_size = [4]\ninput_size = [2]\naccuracy = false\n')  # one value = a list of one
    grid = build_grid(**load_config(config))
    first = run_sweep(grid, tmp_path / "a", progress=False, timing=FAST)
    second = run_sweep(grid, tmp_path / "b", progress=False, timing=FAST)
    both = load_runs([first, second])
    assert list(both["run"]) == ["a", "b"]
    assert list(both["cell"]) == ["lstm", "lstm"]
    (tmp_path / "bad.toml").write_text("batchsize = [1]\n")
    with pytest.raises(ValueError, match="unknown keys"):
        load_config(tmp_path / "bad.toml")
    (tmp_path / "bad.toml").write_text("batch_size = {a = 1}\n")
    with pytest.raises(ValueError, match="must be a list"):
        load_config(tmp_path / "bad.toml")


def test_a_case_that_kills_the_process_twice_becomes_an_error_row(tmp_path):
    """in_progress.json names the case running; a resume retries it once, then records it."""
    out = run_sweep(tiny_grid(batch_size=[1]), tmp_path / "run", progress=False, timing=FAST)
    (out / RESULTS_CSV).write_text((out / RESULTS_CSV).read_text().splitlines(keepends=True)[0])
    key = list(Case("numpy", "forward", 1, 3, 2, 4).key())
    (out / "in_progress.json").write_text(json.dumps({"key": key, "attempts": 2}))
    run_sweep(tiny_grid(batch_size=[1]), out, resume=True, progress=False, timing=FAST)
    row, = read_rows(out)
    assert row["status"] == "error" and "died in this case 2 times" in row["reason"]
    assert not (out / "in_progress.json").exists()


def test_resume_retries_errors_and_keeps_the_original_meta(tmp_path):
    out = run_sweep(tiny_grid(batch_size=[1]), tmp_path / "run", progress=False, timing=FAST)
    text = (out / RESULTS_CSV).read_text().replace(",ok,", ",error,")
    (out / RESULTS_CSV).write_text(text)
    started = json.loads((out / "meta.json").read_text())["started"]
    run_sweep(tiny_grid(batch_size=[1]), out, resume=True, progress=False, timing=FAST)
    rows = read_rows(out)
    assert [r["status"] for r in rows] == ["ok"]  # the error row was run again, not duplicated
    meta = json.loads((out / "meta.json").read_text())
    assert meta["started"] == started and len(meta["resumes"]) == 1 and meta["finished"]


def test_resume_refuses_a_csv_with_other_columns(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / RESULTS_CSV).write_text("impl,phase,median_s\nnumpy,forward,1\n")
    with pytest.raises(ValueError, match="other columns"):
        run_sweep(tiny_grid(batch_size=[1]), out, resume=True, progress=False, timing=FAST)


def test_the_oracle_runs_once_per_size_for_every_implementation(monkeypatch):
    """Its inputs are seeded: every implementation of one size is checked against the same
    float64 numbers, so a sweep computes them once and the errors do not change."""
    pytest.importorskip("torch", reason="the float64 oracle is PyTorch autograd")
    from bench import oracle
    from bench.run.case import oracle_error

    calls = []
    real = oracle.float64_logits_and_grads
    monkeypatch.setattr(oracle, "float64_logits_and_grads",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    case = Case("numpy", "train_step", 3, 5, 2, 4)
    alone = oracle_error(impls.get("numpy"), case)
    shared = {}
    first = oracle_error(impls.get("numpy"), case, shared)
    again = oracle_error(impls.get("numpy"), case, shared)
    assert alone == first == again and len(calls) == 2  # the third call reused the second's


def test_presets_cover_every_cell_and_deepbench_has_its_lstm_and_gru_sets():
    quick = build_grid("quick").cases(impls.names())
    assert {c.cell for c in quick} == set(impls.CELLS)
    assert {c.cell for c in quick if c.phase == "accuracy"} == set()  # accuracy rows: per cell, after
    deep = build_grid("deepbench").cases(["numpy"])
    by_cell = {cell: {(c.hidden_size, c.batch_size, c.seq_len) for c in deep if c.cell == cell}
               for cell in impls.CELLS}
    assert (512, 16, 25) in by_cell["lstm"] and (2048, 32, 1500) in by_cell["gru"]
    assert (1760, 16, 50) in by_cell["rnn_tanh"] and (256, 1, 150) in by_cell["lstm"]  # device set
    assert all(c.input_size == c.hidden_size for c in deep)
    assert not any(c.phase == "train_step" and c.batch_size in (1, 2, 4) for c in deep)  # inference sets
    # cell and phases select among a preset's listed problems
    only = build_grid("deepbench", cell=["gru"], phases=["train_step"]).cases(["numpy"])
    assert only and all(c.cell == "gru" and c.phase == "train_step" for c in only)
    gpu = build_grid("gpu").cases(impls.names())
    assert {c.cell for c in gpu} == set(impls.CELLS) and {c.impl for c in gpu} == set(spec.GPU_IMPLS)
    with pytest.raises(ValueError, match="unknown cells"):
        build_grid("quick", cell=["elman"])
    # a listed problem set runs at the dtypes and threads asked for; sizes it cannot take
    wide = build_grid("deepbench", dtype=["float32", "float64"], threads=[1, 2]).cases(["numpy"])
    assert {(c.dtype, c.threads) for c in wide} == {("float32", 1), ("float32", 2), ("float64", 1),
                                                     ("float64", 2)}
    assert len(wide) == 4 * len(deep)
    with pytest.raises(ValueError, match="batch_size would have no effect"):
        build_grid("deepbench", batch_size=[8])
    # the GPU target's size is in the gpu preset; the compiled loop runs rnn_tanh there
    assert any(c.impl == "cupy" and (c.batch_size, c.seq_len, c.hidden_size, c.cell) == (64, 50, 1760, "rnn_tanh")
               and c.phase == "forward" for c in gpu)
    assert build_grid("gpu").compile_skip("lstm", compile_heavy=True)
    assert len({c for c in gpu if c.phase == "transfer"}) == len({(c.impl, c.batch_size, c.hidden_size)
                                                                   for c in gpu if c.phase == "transfer"})


def test_quick_leaves_compile_heavy_backends_out_unless_named(tmp_path):
    """Their graphs compile for tens of seconds each: quick records why it skips them, and
    naming the implementation (--impl) or the cells (--cell) runs them."""
    import types
    from dataclasses import replace

    from conftest import temporary_entry
    from bench import cli as cli_module

    heavy = types.SimpleNamespace(create=lambda device=None: impls.get("numpy"))
    with temporary_entry("heavy", heavy, compile_heavy=True):
        grid = tiny_grid(impls=["heavy", "numpy"], cell=["rnn_tanh", "gru"], batch_size=[1],
                         accuracy=True)
        out = run_sweep(grid, tmp_path / "quick", progress=False, timing=FAST, accuracy_epochs=1)
        rows = {(r["impl"], r["cell"], r["phase"]): r for r in read_rows(out)}
        for phase in ("forward", "accuracy"):
            assert rows[("heavy", "gru", phase)]["status"] == "skipped"
            assert "compile-heavy" in rows[("heavy", "gru", phase)]["reason"]
            assert rows[("heavy", "rnn_tanh", phase)]["status"] == "skipped"
            assert rows[("numpy", "gru", phase)]["status"] == "ok"
        for named in (["--impl", "heavy"], ["--impl", "heavy", "--cell", "gru"]):
            out = tmp_path / f"asked{len(named)}"
            args = cli_module.build_parser().parse_args(
                ["sweep", *named, "--phase", "forward", "--batch-size", "1", "--seq-len", "3",
                 "--hidden-size", "4", "--input-size", "2", "--no-accuracy", "--no-footprint", "--quiet",
                 "--out", str(out)])
            assert cli_module.cmd_sweep(args) == 0
            rows = read_rows(out)
            assert rows and all(r["status"] == "ok" for r in rows), rows
            assert {r["cell"] for r in rows} == ({"gru"} if "--cell" in named else set(impls.CELLS))
        # a resume that names the left-out implementation runs what quick skipped
        run_sweep(replace(grid, compile_heavy_cells=None), out_quick := tmp_path / "quick",
                  resume=True, progress=False, timing=FAST, accuracy_epochs=1)
        rows = {(r["impl"], r["cell"], r["phase"]): r for r in read_rows(out_quick)}
        assert all(r["status"] == "ok" for r in rows.values()), rows
        assert len(rows) == 8  # 2 impls x 2 cells x (forward, accuracy): each once


def test_the_accuracy_budget_is_the_grids_unless_the_caller_sets_one(tmp_path):
    assert build_grid("quick").accuracy_epochs == 10 and build_grid("default").accuracy_epochs == 15
    with pytest.raises(ValueError, match="accuracy_epochs must be a positive integer"):
        build_grid("quick", accuracy_epochs=0)
    out = run_sweep(tiny_grid(batch_size=[1], accuracy=True, accuracy_epochs=2), tmp_path / "run",
                    progress=False, timing=FAST)
    accuracy = [r for r in read_rows(out) if r["phase"] == "accuracy"]
    assert accuracy and accuracy[0]["reason"].startswith("2 epochs;")
