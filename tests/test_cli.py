"""The command line as a user meets it: outputs, exit codes, one-line errors."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args):
    """In a subprocess, as the console script would run."""
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_list_names_every_implementation(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^numpy\s+yes\s+cpu\s+float32,float64\s+rnn_tanh,lstm,gru\s+yes", out, re.M)
    assert re.search(r"^torch\s+(yes|no)", out, re.M)


def test_check_passes_and_prints_errors(capsys):
    pytest.importorskip("torch", reason="the oracle is torch autograd")
    assert main(["check", "--impl", "numpy"]) == 0
    out = capsys.readouterr().out
    for cell in ("rnn_tanh", "lstm", "gru"):  # every cell, by default
        assert re.search(rf"numpy\s+{cell}\s+float64\s+logits\+grads\s+\d\.\d\de-\d+", out), cell
    assert "all checks passed" in out


def test_check_fails_with_exit_1_when_a_backend_is_wrong(capsys, monkeypatch):
    pytest.importorskip("torch", reason="the oracle is torch autograd")
    import impls
    from impls import registry

    strict = {**registry.REGISTRY["numpy"].tolerance, "float32": 1e-30}
    monkeypatch.setitem(registry.REGISTRY, "numpy",
                        registry.Entry("numpy", "numpy_backend", "", "numpy", "cpu", strict))
    assert impls.tolerance("numpy", "float32") == 1e-30
    assert main(["check", "--impl", "numpy"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_train_save_then_evaluate(tmp_path):
    params = tmp_path / "p.npz"
    trained = run_cli("train", "--impl", "numpy", "--dataset", "digits", "--epochs", "3",
                      "--hidden-size", "16", "--save", str(params))
    assert trained.returncode == 0, trained.stderr
    assert re.search(r"^epoch\s+0\s+train loss", trained.stderr + trained.stdout, re.M)
    last = trained.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"test accuracy 0\.\d{4}", last)
    with np.load(params) as saved:
        assert sorted(saved.files) == ["W_hh", "W_hy", "W_xh", "b_h", "b_y"]
    evaluated = run_cli("evaluate", "--impl", "numpy", "--params", str(params), "--dataset", "digits")
    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluated.stdout.strip().splitlines()[-1] == last  # same weights, same accuracy
    other_split = run_cli("evaluate", "--impl", "numpy", "--params", str(params), "--dataset",
                          "digits", "--seed", "1")
    assert other_split.returncode == 2 and "same --dataset and --seed" in other_split.stderr


@pytest.mark.parametrize("args, message", [
    (["train", "--impl", "numpy", "--dataset", "nope"], "unknown dataset|digits"),
    (["train", "--impl", "numpy", "--dataset", "missing.npz"], "missing.npz"),
    (["evaluate", "--impl", "numpy", "--params", "missing.npz"], "missing.npz"),
    (["train", "--impl", "numpy", "--epochs", "0"], "positive integer"),
    (["train", "--impl", "nope"], "invalid choice"),
    (["sweep", "--impl", "nope", "--out", "x"], "unknown implementations"),
    (["sweep", "--preset", "huge", "--out", "x"], "unknown preset"),
])
def test_bad_arguments_are_one_line_and_exit_2(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(error_lines) == 1 and re.search(message, error_lines[0]), result.stderr


def test_evaluate_refuses_weights_of_another_shape(tmp_path):
    import impls

    path = tmp_path / "p.npz"
    np.savez(path, **impls.init_params(3, 4, 2, seed=0))
    result = run_cli("evaluate", "--impl", "numpy", "--params", str(path), "--dataset", "digits")
    assert result.returncode == 2 and "input_size 3" in result.stderr


def test_train_an_lstm_and_a_gru_and_evaluate_them_elsewhere(tmp_path):
    """--cell trains the article's advice for long sequences; evaluate reads the cell off
    the weights (in every backend), and refuses weights of another cell than --cell asks."""
    for cell in ("lstm", "gru"):
        params = tmp_path / f"{cell}.npz"
        trained = run_cli("train", "--impl", "numpy", "--cell", cell, "--epochs", "2", "--quiet",
                          "--save", str(params))
        assert trained.returncode == 0, trained.stderr
        accuracy = trained.stdout.strip().splitlines()[-1]
        if importlib.util.find_spec("torch") is not None:  # tox -e core has no torch
            evaluated = run_cli("evaluate", "--impl", "torch", "--params", str(params))
            assert evaluated.returncode == 0, evaluated.stderr
            assert evaluated.stdout.strip().splitlines()[-1] == accuracy  # the same model
        if importlib.util.find_spec("onnxruntime") is not None:
            exported = run_cli("evaluate", "--impl", "onnx_fp32", "--params", str(params), "--cell", cell)
            assert exported.returncode == 0, exported.stderr
            assert exported.stdout.strip().splitlines()[-1] == accuracy
        other = "gru" if cell == "lstm" else "lstm"
        refused = run_cli("evaluate", "--impl", "numpy", "--params", str(params), "--cell", other)
        assert refused.returncode == 2 and f"holds {cell} weights, not {other}" in refused.stderr, refused.stderr
