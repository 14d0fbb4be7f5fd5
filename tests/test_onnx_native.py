"""onnx_native on its own: ONNX's RNN/LSTM/GRU operator in the file (one per layer,
bidirectional ones for two directions), one file for every seq_len, padding that cannot
reach Y_h, stacked / bidirectional models against the float64 oracle, the file in plain
onnxruntime, and why there is no int8 variant. The shared contract is tested in
test_conformance and test_validation."""
import numpy as np
import pytest

import impls
from conftest import backend_or_skip
from impls.onnx_backend import structure_tag
from test_onnx_backend import (CELLS, LENGTHS, PLAIN, STRUCTURES, C, I, check_structured_oracle,
                               inputs, setup)

OPERATOR = {"rnn_tanh": "RNN", "lstm": "LSTM", "gru": "GRU"}


def only_file(tmp_path):
    (path,) = tmp_path.glob("*.onnx")
    return path


def logits_of(backend, native, x, lengths=None):
    lengths = None if lengths is None else backend.asarray(np.asarray(lengths))
    return backend.to_numpy(backend.predict(native, backend.asarray(x), lengths))


@pytest.mark.parametrize("structure", [PLAIN, (2, True)], ids=str)
@pytest.mark.parametrize("cell", CELLS)
def test_one_file_serves_every_seq_len(cell, structure, tmp_path):
    backend, params, native = setup("onnx_native", tmp_path, cell=cell, structure=structure)
    numpy = impls.get("numpy")
    for seq_len in (5, 9):
        x = inputs(3, seq_len=seq_len)
        np.testing.assert_allclose(logits_of(backend, native, x), numpy.predict(params, x),
                                   rtol=1e-5, atol=1e-6)
    assert backend.exports == 1 and len(backend._sessions) == 1  # one file, one session
    assert only_file(tmp_path).name.startswith(f"{cell}-native{structure_tag(params)}_")
    again = backend_or_skip("onnx_native")  # a new process would reuse the file
    again.cache_dir = str(tmp_path)
    logits_of(again, again.from_numpy(params), inputs(2, seq_len=7))
    assert again.exports == 0


@pytest.mark.parametrize("structure", [PLAIN, (2, False), (2, True)], ids=str)
@pytest.mark.parametrize("cell", CELLS)
def test_the_graph_is_the_recurrent_operator(cell, structure, tmp_path):
    onnx = pytest.importorskip("onnx")
    backend, _, native = setup("onnx_native", tmp_path, cell=cell, structure=structure)
    num_layers, bidirectional = structure
    x = backend.asarray(inputs(2))
    backend.predict(native, x)
    model = onnx.load(only_file(tmp_path))
    recurrences = [n for n in model.graph.node if n.op_type in OPERATOR.values()]
    assert [n.op_type for n in recurrences] == [OPERATOR[cell]] * num_layers  # one per layer
    assert not {"Loop", "Scan"} & {n.op_type for n in model.graph.node}
    for recurrence in recurrences:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in recurrence.attribute}
        assert attributes.get("layout", 0) == 0  # ORT's CPU kernels run seq-major only
        direction = b"bidirectional" if bidirectional else b"forward"
        assert attributes.get("direction", b"forward") == direction
        if cell == "gru":
            assert attributes["linear_before_reset"] == 1  # PyTorch's GRU
    shape = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert shape == ["batch", "seq_len", I]
    info = backend.diagnostics(native, x)
    assert info["quant_int_matmuls"] == 0
    assert info["quant_float_matmuls"] == 2 * num_layers + 1  # W and R per layer, head


@pytest.mark.parametrize("structure", [PLAIN, (2, True)], ids=str)
@pytest.mark.parametrize("cell", CELLS)
def test_huge_padding_never_reaches_the_logits(cell, structure, tmp_path):
    """Whatever fills the steps past a sequence's length (up to float32's range, where
    any product of them overflows), its logits are bitwise those of the sequence alone:
    the reverse direction too reads each sequence within its own length."""
    backend, _, native = setup("onnx_native", tmp_path, cell=cell, structure=structure)
    x, lengths = inputs(4, seq_len=8), np.array([8, 3, 1, 6])
    alone = np.concatenate([logits_of(backend, native, x[i:i + 1, :n]) for i, n in enumerate(lengths)])
    for fill in (0.0, 1e3, 3e38, -3e38):
        padded = x.copy()
        for i, n in enumerate(lengths):
            padded[i, n:] = fill
        np.testing.assert_array_equal(logits_of(backend, native, padded, lengths), alone)


@pytest.mark.parametrize("cell", CELLS)
def test_exported_file_runs_in_plain_onnxruntime_with_any_batch_and_length(cell, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    backend, _, native = setup("onnx_native", tmp_path, cell=cell)
    cases = [(b, t) for b in (1, 7, 33) for t in (1, 5)]
    logits = {case: logits_of(backend, native, inputs(*case)) for case in cases}
    session = ort.InferenceSession(str(only_file(tmp_path)), providers=["CPUExecutionProvider"])
    for case, expected in logits.items():
        np.testing.assert_allclose(session.run(None, {"x": inputs(*case)})[0], expected, rtol=1e-5, atol=1e-6)
    # batch-invariant, a batch of 1 included (ORT's RNN kernel rounds M=1 GEMMs differently:
    # the rnn_tanh graph adds a zero sequence so it never runs one)
    for t in (1, 5):
        np.testing.assert_array_equal(logits[33, t][:1], logits[1, t])
        np.testing.assert_array_equal(logits[33, t][:7], logits[7, t])


# slow: tests/test_structure.py checks this backend x cell x structure x lengths x dropout
# against the oracle in CI; this matrix adds every dtype (--run-slow, tox -e full)
@pytest.mark.slow
@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("structure", STRUCTURES, ids=str)
@pytest.mark.parametrize("cell", CELLS)
def test_structured_matches_float64_oracle(cell, structure, lengths, tmp_path):
    """ORT's bidirectional operators with sequence_lens reverse each sequence within its
    length (PyTorch's packed sequences, the oracle's semantics), not over all T steps."""
    check_structured_oracle("onnx_native", cell, structure, LENGTHS[lengths], np.float32, tmp_path)


def test_float64_is_refused_with_the_reason(tmp_path):
    backend = backend_or_skip("onnx_native")
    assert backend.dtypes == (np.dtype(np.float32),)
    with pytest.raises(ValueError, match="runs float32"):
        backend.from_numpy(impls.init_params(I, 8, C, seed=0, dtype=np.float64))


def test_ort_int8_lstm_depends_on_batchmates(tmp_path):
    """Why no onnx_native_int8 is registered: quantize_dynamic's DynamicQuantizeLSTM scales
    x and h per tensor, so a batchmate's values move a sequence's logits. If this starts
    failing, ORT made it batch-invariant: an int8 native variant becomes possible."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxruntime.quantization")
    onnx = pytest.importorskip("onnx")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    backend, params, native = setup("onnx_native", tmp_path, cell="lstm", hidden_size=32)
    x = inputs(4, seq_len=8)
    expected = logits_of(backend, native, x)
    quantised = tmp_path / "lstm_int8.bin"
    quantize_dynamic(only_file(tmp_path), quantised, op_types_to_quantize=["LSTM"],
                     per_channel=True, reduce_range=True, weight_type=QuantType.QInt8)
    assert "DynamicQuantizeLSTM" in {n.op_type for n in onnx.load(quantised).graph.node}
    session = ort.InferenceSession(str(quantised), providers=["CPUExecutionProvider"])
    together = session.run(None, {"x": x})[0]
    assert np.abs(together - expected).max() < 0.05 * np.abs(expected).max()  # int8 accuracy
    louder = x.copy()
    louder[0] *= 5  # only sequence 0 changes
    assert not np.array_equal(session.run(None, {"x": louder})[0][1:], together[1:])
