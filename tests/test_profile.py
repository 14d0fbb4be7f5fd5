import json
import math
import pstats
import sys
import types

import pytest

import impls
from bench.profile import ProfileResult, profile

# Large enough that a phase takes ~1 ms: at 0.25 ms, the few-microsecond jitter of each of
# ten parts timed alone made their sum exceed the whole (seen once on a busy 2-core VM).
SMALL = {"batch_size": 8, "seq_len": 16, "input_size": 8, "hidden_size": 32}
JITTER_MS = 0.01  # per part: a few calls' worth of timer and allocator noise on a busy VM


@pytest.fixture(scope="module")
def numpy_result(tmp_path_factory) -> ProfileResult:
    return profile("numpy", **SMALL, out_dir=tmp_path_factory.mktemp("profile_numpy"))


@pytest.fixture(scope="module", params=["lstm", "gru"])
def gated_result(request, tmp_path_factory) -> ProfileResult:
    return profile("numpy", **SMALL, cell=request.param, out_dir=tmp_path_factory.mktemp("profile_gated"))


def test_gated_cells_break_down_their_gemms_and_say_the_rest_is_gate_arithmetic(gated_result):
    test_numpy_breakdown_parts_add_up(gated_result)
    for phase, parts in gated_result.breakdown.items():
        assert parts[-1][0].startswith("gate arithmetic + Python/framework overhead")
        assert not any("tanh" in name for name, _, _ in parts)  # no tanh-cell part in a gated profile
    cell = "lstm" if "numpy_lstm_forward.pstats" in gated_result.summary else "gru"
    assert f"profile numpy {cell}" in gated_result.summary


def test_a_cell_the_backend_does_not_run_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown cell"):
        profile("numpy", **SMALL, cell="elman", out_dir=tmp_path)


def test_a_stacked_bidirectional_model_is_profiled_whole_with_cprofile(tmp_path):
    """The per-part breakdown re-runs the plain model's functions: a structured model gets
    the whole phase's totals and cProfile, and the summary says why there are no parts."""
    result = profile("numpy", **SMALL, num_layers=2, bidirectional=True, out_dir=tmp_path)
    assert result.breakdown == {} and set(result.totals_ms) == {"forward", "train_step"}
    assert sorted(p.name for p in result.files) == ["numpy_rnn_tanh_2layer_bidirectional_forward.pstats",
                                                    "numpy_rnn_tanh_2layer_bidirectional_train_step.pstats"]
    assert "profile numpy rnn_tanh, 2-layer bidirectional, on cpu" in result.summary
    assert "per-part breakdown: the plain model's (1-layer unidirectional) only" in result.summary


def test_a_structure_the_backend_does_not_run_is_refused(tmp_path, monkeypatch):
    class Flat(impls.get("numpy").__class__):
        name = "flat"
        structured = False

    module = types.ModuleType("impls._flat_for_test")
    module.create = lambda device=None: Flat()
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(impls.REGISTRY, "flat", impls.Entry("flat", "_flat_for_test", "test double", "numpy", "cpu"))
    with pytest.raises(ValueError, match="flat runs one-layer unidirectional models only, not num_layers=2"):
        profile("flat", **SMALL, num_layers=2, out_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_numpy_breakdown_parts_add_up(numpy_result):
    assert set(numpy_result.breakdown) == {"forward", "train_step"}
    for phase, parts in numpy_result.breakdown.items():
        total = numpy_result.totals_ms[phase]
        measured = [ms for _, kind, ms in parts if kind != "overhead"]
        assert total > 0 and all(ms >= 0 and math.isfinite(ms) for ms in measured)
        assert parts[-1][1] == "overhead"
        assert sum(ms for _, _, ms in parts) == pytest.approx(total, rel=1e-9)
        # parts timed alone must not claim much more than the whole phase took; each part
        # timed alone carries some microseconds of its own jitter (JITTER_MS)
        assert sum(measured) < 1.5 * total + JITTER_MS * len(measured), (phase, parts, total)
    names = [name for name, _, _ in numpy_result.breakdown["train_step"]]
    assert any("bwd loop" in n for n in names) and any("Adam" in n for n in names)


def test_numpy_pstats_load_and_mention_reference_forward(numpy_result):
    paths = [p for p in numpy_result.files if p.suffix == ".pstats"]
    assert sorted(p.name for p in paths) == ["numpy_rnn_tanh_forward.pstats", "numpy_rnn_tanh_train_step.pstats"]
    for path in paths:
        functions = pstats.Stats(str(path)).stats
        assert any(file.endswith("reference.py") and name == "forward"
                   for file, _, name in functions), path


def test_numpy_summary_states_what_was_run(numpy_result):
    text = numpy_result.summary
    for needle in ("B=8", "T=16", "I=8", "H=32", "float32", "threads=1", "forward: median",
                   "train_step: median", "numpy_rnn_tanh_forward.pstats", "overhead"):
        assert needle in text, needle
    last = text.splitlines()[-1]
    assert "forward:" in last and "%" in last


def test_torch_writes_a_chrome_trace(tmp_path):
    pytest.importorskip("torch", reason="torch is not installed")
    try:
        result = profile("torch", **SMALL, out_dir=tmp_path)
    except impls.Unavailable as exc:
        pytest.skip(f"torch unavailable: {exc}")
    traces = [p for p in result.files if p.name.endswith(".trace.json")]
    assert sorted(p.name for p in traces) == ["torch_forward.trace.json", "torch_train_step.trace.json"]
    for path in traces:
        trace = json.loads(path.read_text())
        assert trace["traceEvents"]
        assert any(str(e.get("name", "")).startswith("aten::") for e in trace["traceEvents"])
    assert "Self CPU" in result.summary and result.totals_ms["forward"] > 0


@pytest.mark.parametrize("impl, sizes, match", [
    ("no-such-impl", SMALL, "unknown implementation"),
    ("numpy", {**SMALL, "batch_size": 0}, "batch_size"),
    ("numpy", {**SMALL, "hidden_size": 2.5}, "hidden_size"),
    ("numpy", {**SMALL, "threads": 0}, "threads"),
    ("numpy", {**SMALL, "num_layers": 0}, "num_layers must be a positive integer"),
    ("numpy", {**SMALL, "bidirectional": "yes"}, "bidirectional must be True or False"),
])
def test_bad_arguments_raise_value_error(tmp_path, impl, sizes, match):
    with pytest.raises(ValueError, match=match):
        profile(impl, **sizes, out_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # rejected before any work or file


def test_bad_dtype_raises_value_error(tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        profile("numpy", **SMALL, dtype="int8", out_dir=tmp_path)


class _OpaqueBackend(impls.get("numpy").__class__):
    """A backend whose math the profiler cannot see into (it declares math = "native"):
    stands in for numba, onnx, ..."""
    name = "opaque"
    math = "native"


def test_unknown_kind_of_backend_gets_the_generic_cprofile_path(tmp_path, monkeypatch):
    module = types.ModuleType("impls._opaque_for_test")
    module.create = lambda device=None: _OpaqueBackend()
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(impls.REGISTRY, "opaque",
                        impls.Entry("opaque", "_opaque_for_test", "test double", "numpy", "cpu"))
    result = profile("opaque", **SMALL, out_dir=tmp_path)
    assert result.breakdown == {}
    assert sorted(p.name for p in result.files) == ["opaque_rnn_tanh_forward.pstats",
                                                    "opaque_rnn_tanh_train_step.pstats"]
    assert all(pstats.Stats(str(p)).stats for p in result.files)
    assert "most own time in" in result.summary.splitlines()[-1]
