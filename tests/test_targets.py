"""Targets are computed from medians of one run, and say when a run cannot tell."""
import pandas as pd

from bench.report.targets import ARTICLE_SIZE, evaluate_targets


def row(impl, phase, median_s, **overrides):
    return {"impl": impl, "phase": phase, "median_s": median_s, "status": "ok", "device": "cpu",
            "pct_peak": 10.0, "test_accuracy": None, "cell": "rnn_tanh", "num_layers": 1,
            "bidirectional": False, **ARTICLE_SIZE, **overrides}


def verdicts(rows):
    return {r["target"]: (r["measured"], r["verdict"]) for r in evaluate_targets(pd.DataFrame(rows))}


def test_ratio_targets_met_missed_and_unmeasured():
    result = verdicts([row("numpy", "forward", 1.0), row("torch", "forward", 2.5),
                       row("numpy", "train_step", 1.0), row("torch", "train_step", 1.2)])
    forward = next(v for k, v in result.items() if k.startswith("numpy ≥ 2×"))
    train = next(v for k, v in result.items() if k.startswith("numpy ≥ 1.5×"))
    assert forward == ("2.50×", "met")
    assert train == ("1.20×", "MISSED")
    assert all(v == ("—", "not measured in this run") for k, v in result.items() if "onnx" in k)


def test_targets_are_the_plain_models_and_other_structures_never_count():
    """A 2-layer or bidirectional row at the article's size is another model: it neither
    hides the plain one's ratio (two rows at one size) nor stands in for a missing one."""
    deep = [row("numpy", "forward", 9.0, num_layers=2), row("torch", "forward", 1.0, bidirectional=True),
            row("onnx_fp32", "accuracy", 1.0, num_layers=2, test_accuracy=0.99),
            row("onnx_int8", "accuracy", 1.0, num_layers=2, test_accuracy=0.10)]
    result = verdicts([row("numpy", "forward", 1.0), row("torch", "forward", 2.5), *deep])
    assert next(v for k, v in result.items() if k.startswith("numpy ≥ 2×")) == ("2.50×", "met")
    assert next(v for k, v in result.items() if "accuracy drop" in k and "(rnn_tanh)" in k) == (
        "—", "not measured in this run")
    assert all(v == ("—", "not measured in this run") for v in verdicts(deep[:2]).values())


def test_accuracy_drop_is_at_most_target():
    rows = [row("onnx_fp32", "accuracy", 1.0, test_accuracy=0.960),
            row("onnx_int8", "accuracy", 1.0, test_accuracy=0.957)]
    result = verdicts(rows)
    drop = next(v for k, v in result.items() if "accuracy drop" in k and "(rnn_tanh)" in k)
    assert drop == ("0.30 points", "met")


def test_cell_targets_pair_rows_of_that_cell_only():
    """An lstm int8 row is never divided by a gru fp32 row, nor its accuracy by another's."""
    large = dict(hidden_size=256, input_size=256)
    rows = [row("onnx_fp32", "forward", 3.0, cell="lstm", **large),
            row("onnx_int8", "forward", 1.0, cell="lstm", **large),
            row("onnx_fp32", "forward", 1.0, cell="gru", **large),
            row("onnx_int8", "forward", 1.0, cell="gru", **large),
            row("onnx_fp32", "accuracy", 1.0, cell="gru", test_accuracy=0.90),
            row("onnx_int8", "accuracy", 1.0, cell="gru", test_accuracy=0.88)]
    result = verdicts(rows)
    speed = {k.rsplit("; ", 1)[1].rstrip(")"): v for k, v in result.items()
             if k.startswith("onnx_int8 ≥ 1.5× onnx_fp32 at H ≥ 256")}
    assert speed == {"rnn_tanh": ("—", "not measured in this run"), "lstm": ("3.00×", "met"),
                     "gru": ("1.00×", "MISSED")}
    drops = {k.rsplit("(", 1)[1].rstrip(")"): v for k, v in result.items() if "accuracy drop" in k}
    assert drops == {"rnn_tanh": ("—", "not measured in this run"), "lstm": ("—", "not measured in this run"),
                     "gru": ("2.00 points", "MISSED")}


def test_gpu_run_compares_cupy_with_cudnn_and_uses_it_as_baseline():
    from bench.report.selection import baseline_for

    size = dict(batch_size=64, seq_len=50, input_size=1760, hidden_size=1760)
    rows = [row("torch_cuda", "forward", 1.0, device="cuda:0", **size),
            row("cupy", "forward", 1.1, device="cuda:0", **size)]
    cupy = next(v for k, v in verdicts(rows).items() if k.startswith("cupy"))
    assert cupy == ("0.91×", "met")
    assert baseline_for(pd.DataFrame(rows)) == "torch_cuda"
    assert baseline_for(pd.DataFrame(rows + [row("torch", "forward", 2.0)])) == "torch"
