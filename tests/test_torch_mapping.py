"""The torch backend is the article's nn.RNN (nn.LSTM, nn.GRU) + nn.Linear: bias mapping and
round trip, per cell and structure; the stacked / bidirectional / dropout path against the
float64 oracle and against PyTorch's own modules on packed sequences.

`check_against_oracle` is the one oracle check of the torch family: torchscript's and
torch_compile's tests import it."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed: the torch backend is unavailable")
import impls  # noqa: E402
from impls import torch_backend  # noqa: E402
from impls.params import directions, suffix  # noqa: E402
from bench import oracle  # noqa: E402
from bench.oracle import seeded_inputs  # noqa: E402


CELLS = ["rnn_tanh", "lstm", "gru"]
STRUCTURES = [(1, False), (2, False), (1, True), (2, True)]
LENGTHS = np.array([5, 3, 1, 4])  # for B=4, T=5: a full, a length-1 and two padded sequences


def check_against_oracle(backend, cell, structure, lengths, rate, dtype):
    """Forward and backward (with dropout masks at `rate`) and predict match the float64
    oracle within the backend's registered tolerance, on a small padded batch."""
    params, x, dlogits = seeded_inputs(4, 5, 3, 6, 2, seed=7, dtype=dtype, cell=cell,
                                       num_layers=structure[0], bidirectional=structure[1])
    lengths = None if lengths is None else LENGTHS
    masks = impls.masks_for(params, x.shape, rate, seed=11)
    errors = oracle.compare(backend, params, x, dlogits, lengths, dropout=masks)
    tolerance = impls.tolerance(backend.name, dtype)
    assert max(errors.values()) < tolerance, errors
    if masks is None:  # predict never drops: its check is the undropped model's
        errors = oracle.compare(backend, params, x, dlogits, lengths, grads=False)
        assert max(errors.values()) < tolerance, errors


def structured_matrix(test):
    """The torch backends' structured oracle matrix: cell x structure x lengths x dropout x
    dtype. Slow: tests/test_structure.py checks every backend x cell x structure x lengths x
    dropout against the oracle in CI; this adds every dtype (--run-slow, tox -e full)."""
    for mark in (pytest.mark.parametrize("cell", CELLS),
                 pytest.mark.parametrize("structure", [(2, False), (1, True), (2, True)]),
                 pytest.mark.parametrize("lengths", [None, "variable"]),
                 pytest.mark.parametrize("rate", [0.0, 0.3]),
                 pytest.mark.parametrize("dtype", [np.float64, np.float32]), pytest.mark.slow):
        test = mark(test)
    return test


@structured_matrix
def test_structured_model_matches_the_oracle(cell, structure, lengths, rate, dtype):
    check_against_oracle(impls.get("torch"), cell, structure, lengths, rate, dtype)


def test_the_backend_runs_structure_and_dropout():
    backend = impls.get("torch")
    assert backend.structured and backend.supports_dropout
    assert backend.structure_reason(3, True) is None and backend.dropout_reason() is None


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("cell", CELLS)
def test_canonical_round_trip_through_the_module(cell, structure):
    params, _, _ = seeded_inputs(2, 3, 4, 6, 3, seed=1, cell=cell, num_layers=structure[0],
                                 bidirectional=structure[1])
    back = torch_backend.from_module(torch_backend.to_module(params))
    assert set(back) == set(params)
    for key in params:
        np.testing.assert_array_equal(back[key], params[key])


@pytest.mark.parametrize("structure", [(1, False), (2, True)])
@pytest.mark.parametrize("cell", CELLS)
def test_two_biases_fold_into_b_h(cell, structure):
    """A module trained elsewhere, with both biases non-zero, keeps its function."""
    torch.manual_seed(0)
    model = torch_backend.RNNClassifier(4, 6, 3, cell, *structure).double()
    assert model.rnn.bias_hh_l0.abs().sum() > 0
    x = torch.randn(5, 7, 4, dtype=torch.float64)
    lengths = torch.tensor([7, 2, 5, 1, 7])
    params = torch_backend.from_module(model)
    if cell != "gru":  # gru keeps b_hn apart (the reset gate multiplies it)
        np.testing.assert_allclose(params["b_h"],
                                   (model.rnn.bias_ih_l0 + model.rnn.bias_hh_l0).detach().numpy())
    reloaded = torch_backend.to_module(params)
    np.testing.assert_allclose(reloaded(x, lengths).detach().numpy(), model(x, lengths).detach().numpy(),
                               rtol=1e-13)


def module_grads(model) -> dict:
    """The gradients a module's backward left, under the canonical names (b_h's is b_ih's:
    b_h enters only as b_ih + b_hh; gru's b_hn is b_hh's last H)."""
    rnn, hidden_size = model.rnn, model.rnn.hidden_size
    grads = {"W_hy": model.fc.weight.grad, "b_y": model.fc.bias.grad}
    for layer in range(rnn.num_layers):
        for reverse in directions(rnn.bidirectional):
            theirs, ours = torch_backend.module_suffix(layer, reverse), suffix(layer, reverse)
            grads.update({f"W_xh{ours}": getattr(rnn, f"weight_ih{theirs}").grad,
                          f"W_hh{ours}": getattr(rnn, f"weight_hh{theirs}").grad,
                          f"b_h{ours}": getattr(rnn, f"bias_ih{theirs}").grad})
            if model.cell == "gru":
                grads[f"b_hn{ours}"] = getattr(rnn, f"bias_hh{theirs}").grad[2 * hidden_size:]
    return {k: v.numpy() for k, v in grads.items()}


def module_logits_and_grads(params, x, dlogits, lengths):
    model = torch_backend.to_module(params)
    logits = model(torch.from_numpy(x), None if lengths is None else torch.from_numpy(lengths))
    logits.backward(torch.from_numpy(dlogits))
    return logits.detach().numpy(), module_grads(model)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backend_equals_the_articles_module(dtype, cell):
    """The backend's kernel call computes what nn.RNN/nn.LSTM/nn.GRU + nn.Linear computes,
    gradients too."""
    params, x, dlogits = seeded_inputs(4, 9, 3, 8, 5, seed=4, dtype=dtype, cell=cell)
    expected, module = module_logits_and_grads(params, x, dlogits, None)
    backend = torch_backend.create("cpu")
    native = backend.from_numpy(params)
    logits, cache = backend.forward(native, backend.asarray(x))
    grads = backend.to_numpy(backend.backward(native, cache, backend.asarray(dlogits)))
    np.testing.assert_array_equal(backend.to_numpy(logits), expected)
    assert set(grads) == set(module)
    for key, grad in module.items():
        np.testing.assert_allclose(grads[key], grad, rtol=1e-6 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("lengths", [None, LENGTHS])
@pytest.mark.parametrize("structure", [(2, False), (1, True), (2, True)])
@pytest.mark.parametrize("cell", CELLS)
def test_structured_backend_equals_the_modules(cell, structure, lengths):
    """Without dropout the structured path is nn.LSTM(num_layers=, bidirectional=) on a
    packed batch, + nn.Linear on h_n: logits and gradients (float64: the same kernels run
    float32, which the oracle cases check)."""
    params, x, dlogits = seeded_inputs(4, 5, 3, 6, 2, seed=5, dtype=np.float64, cell=cell,
                                       num_layers=structure[0], bidirectional=structure[1])
    expected, module = module_logits_and_grads(params, x, dlogits, lengths)
    backend = impls.get("torch")
    native = backend.from_numpy(params)
    logits, cache = backend.forward(native, backend.asarray(x),
                                    None if lengths is None else backend.asarray(lengths))
    grads = backend.to_numpy(backend.backward(native, cache, backend.asarray(dlogits)))
    np.testing.assert_allclose(backend.to_numpy(logits), expected, rtol=1e-13)
    assert set(grads) == set(module)
    for key, grad in module.items():
        np.testing.assert_allclose(grads[key], grad, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("cell", CELLS)
def test_oracle_equals_a_packed_bidirectional_module(cell):
    """The oracle's semantics are PyTorch's: a float64 nn.RNN/nn.LSTM/nn.GRU(num_layers=2,
    bidirectional=True) on a packed variable-length batch, head on h_n (both directions of
    the last layer, forward first); gradients too."""
    params, x, dlogits = seeded_inputs(4, 5, 3, 6, 2, seed=3, cell=cell, num_layers=2, bidirectional=True)
    expected, module = module_logits_and_grads(params, x, dlogits, LENGTHS)
    logits, grads = oracle.float64_logits_and_grads(params, x, dlogits, LENGTHS)
    np.testing.assert_allclose(logits, expected, rtol=1e-12, atol=1e-14)
    assert set(grads) == set(module)
    for key, grad in module.items():
        np.testing.assert_allclose(grads[key], grad, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("cell", CELLS)
def test_out_at_the_last_step_is_not_the_reverse_directions_final_state(cell):
    """The common bug: fc(out[:, -1]). Its forward half is h_n[-2], but its reverse half is
    the reverse direction's state after one step (step T alone), not after the sequence:
    the logits differ from the oracle's (and the module's h_n head) even at full length."""
    params, x, _ = seeded_inputs(4, 5, 3, 6, 2, seed=3, cell=cell, num_layers=2, bidirectional=True)
    model = torch_backend.to_module(params)
    out, h_n = model.rnn(torch.from_numpy(x))  # (B, T, 2H)
    h_n = h_n[0] if cell == "lstm" else h_n
    hidden_size = params["W_hh"].shape[1]
    np.testing.assert_allclose(out[:, -1, :hidden_size].detach().numpy(), h_n[-2].detach().numpy(),
                               rtol=1e-13)
    wrong = model.fc(out[:, -1]).detach().numpy()
    expected = oracle.float64_logits_and_grads(params, x)[0]
    np.testing.assert_allclose(model(torch.from_numpy(x)).detach().numpy(), expected, rtol=1e-12)
    assert oracle.rel_error(wrong, expected) > 1e-2


def test_cuda_without_gpu_is_unavailable_with_reason():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU; the unavailable path is not reachable")
    with pytest.raises(impls.Unavailable, match="CUDA"):
        impls.get("torch", device="cuda")
