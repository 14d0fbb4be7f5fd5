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
    # ... backward, structures (stacked/bidirectional), dropout
    assert re.search(r"^numpy\s+yes\s+cpu\s+float32,float64\s+rnn_tanh,lstm,gru\s+yes\s+yes\s+yes", out, re.M)
    assert re.search(r"^torch\s+(yes|no)", out, re.M)


def test_check_passes_and_prints_errors(capsys):
    pytest.importorskip("torch", reason="the oracle is torch autograd")
    assert main(["check", "--impl", "numpy"]) == 0
    out = capsys.readouterr().out
    for cell in ("rnn_tanh", "lstm", "gru"):  # every cell, by default
        assert re.search(rf"numpy\s+{cell}\s+1-layer\s+float64\s+logits\+grads\s+\d\.\d\de-\d+", out), cell
    assert "all checks passed" in out
    assert "bidirectional" not in out  # the plain model unless asked


def test_check_runs_the_structures_asked_for_and_skips_those_a_backend_refuses(capsys):
    pytest.importorskip("torch", reason="the oracle is torch autograd")
    import types

    from conftest import temporary_entry
    from test_sweep import _OneLayerOnly

    flat = types.SimpleNamespace(create=lambda device=None: _OneLayerOnly())
    with temporary_entry("flat", flat):
        assert main(["check", "--impl", "numpy,flat", "--cell", "rnn_tanh", "--num-layers", "2",
                     "--bidirectional"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"numpy\s+rnn_tanh\s+2-layer bidirectional\s+float32\s+logits\+grads\s+\d", out)
    assert re.search(r"flat\s+rnn_tanh\s+2-layer bidirectional\s+-.*skipped: flat runs one-layer", out)


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
    (["sweep", "--bidirectional", "maybe", "--out", "x"], "comma-separated false/true"),
    (["sweep", "--num-layers", "0", "--out", "x"], "positive integers"),
    (["train", "--impl", "numpy", "--dropout", "1"], r"rate in \[0, 1\)"),
    (["train", "--impl", "numpy", "--num-layers", "0"], "positive integer"),
    # forward-only where ONNX Runtime is installed, unavailable (and saying why) where not: tox -e core
    (["train", "--impl", "onnx_fp32", "--num-layers", "2"], "forward-only|need onnx and onnxruntime"),
    (["profile", "--impl", "numpy", "--num-layers", "0"], "positive integer"),
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


def test_structure_flags_of_the_sweep_are_lists_like_its_other_dimensions():
    from bench.cli import build_parser

    parse = lambda *flags: build_parser().parse_args(["sweep", *flags])  # noqa: E731
    assert parse().bidirectional is None and parse().num_layers is None  # the preset's
    assert parse("--bidirectional").bidirectional == [True]  # bare: true
    assert parse("--bidirectional", "false,TRUE", "--num-layers", "1,3").bidirectional == [False, True]
    assert parse("--num-layers", "1,3").num_layers == [1, 3]


def test_train_flags_map_onto_train_config_and_leave_its_defaults(monkeypatch, capsys):
    """Each flag sets the TrainConfig field of its name; one not given keeps TrainConfig's
    default (the command line restates none)."""
    import dataclasses

    from bench.train import loop

    seen = []

    def fake_train(backend, dataset, config, **kwargs):
        seen.append(config)
        return loop.TrainResult(params={}, test_accuracy=0.5)
    monkeypatch.setattr(loop, "train", fake_train)
    assert main(["train", "--impl", "numpy", "--quiet"]) == 0
    flags = {"--num-layers": ("num_layers", "2", 2), "--dropout": ("dropout", "0.25", 0.25),
             "--weight-decay": ("weight_decay", "0.001", 0.001), "--clip-norm": ("clip_norm", "0", 0.0),
             "--patience": ("patience", "3", 3), "--schedule": ("schedule", "step", "step"),
             "--warmup": ("warmup", "2", 2)}
    argv = [a for flag, (_, text, _) in flags.items() for a in (flag, text)]
    assert main(["train", "--impl", "numpy", "--quiet", "--bidirectional", *argv]) == 0
    default, given = seen
    assert default == loop.TrainConfig()
    assert given == dataclasses.replace(loop.TrainConfig(), bidirectional=True,
                                        **{field: value for field, _, value in flags.values()})


def test_train_a_stacked_bidirectional_model_with_dropout_and_evaluate_it_elsewhere(tmp_path, capsys):
    params = tmp_path / "deep.npz"
    assert main(["train", "--impl", "numpy", "--num-layers", "2", "--bidirectional", "--dropout", "0.2",
                 "--epochs", "2", "--hidden-size", "16", "--quiet", "--save", str(params)]) == 0
    accuracy = capsys.readouterr().out.strip().splitlines()[-1]
    with np.load(params) as saved:  # impls.params' names: layer 1 _l1, the reverse direction _reverse
        assert {"W_xh_l1", "W_xh_reverse", "W_hh_l1_reverse", "b_h_l1_reverse"} <= set(saved.files)
    names = ["numpy"] + (["torch"] if importlib.util.find_spec("torch") is not None else [])
    for name in names:  # dropout is training-only: every backend scores the same model alike
        assert main(["evaluate", "--impl", name, "--params", str(params)]) == 0
        out = capsys.readouterr().out
        assert "(rnn_tanh, 2-layer bidirectional)" in out
        assert out.strip().splitlines()[-1] == accuracy
