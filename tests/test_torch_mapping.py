"""The torch backend is the article's nn.RNN (nn.LSTM, nn.GRU) + nn.Linear: bias mapping and
round trip, per cell."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed: the torch backend is unavailable")
from impls import torch_backend  # noqa: E402
from bench.oracle import seeded_inputs  # noqa: E402


CELLS = ["rnn_tanh", "lstm", "gru"]


@pytest.mark.parametrize("cell", CELLS)
def test_canonical_round_trip_through_the_module(cell):
    params, _, _ = seeded_inputs(2, 3, 4, 6, 3, seed=1, cell=cell)
    back = torch_backend.from_module(torch_backend.to_module(params))
    assert set(back) == set(params)
    for key in params:
        np.testing.assert_array_equal(back[key], params[key])


@pytest.mark.parametrize("cell", CELLS)
def test_two_biases_fold_into_b_h(cell):
    """A module trained elsewhere, with both biases non-zero, keeps its function."""
    torch.manual_seed(0)
    model = torch_backend.RNNClassifier(4, 6, 3, cell).double()
    assert model.rnn.bias_hh_l0.abs().sum() > 0
    x = torch.randn(5, 7, 4, dtype=torch.float64)
    params = torch_backend.from_module(model)
    if cell != "gru":  # gru keeps b_hn apart (the reset gate multiplies it)
        np.testing.assert_allclose(params["b_h"], (model.rnn.bias_ih_l0 + model.rnn.bias_hh_l0).detach().numpy())
    reloaded = torch_backend.to_module(params)
    np.testing.assert_allclose(reloaded(x).detach().numpy(), model(x).detach().numpy(), rtol=1e-13)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backend_equals_the_articles_module(dtype, cell):
    """The backend's kernel call computes what nn.RNN/nn.LSTM/nn.GRU + nn.Linear computes,
    gradients too."""
    params, x, dlogits = seeded_inputs(4, 9, 3, 8, 5, seed=4, dtype=dtype, cell=cell)
    model = torch_backend.to_module(params)
    xt = torch.from_numpy(x)
    expected = model(xt)
    expected.backward(torch.from_numpy(dlogits))
    backend = torch_backend.create("cpu")
    native = backend.from_numpy(params)
    logits, cache = backend.forward(native, backend.asarray(x))
    grads = backend.to_numpy(backend.backward(native, cache, backend.asarray(dlogits)))
    np.testing.assert_array_equal(backend.to_numpy(logits), expected.detach().numpy())
    module_grads = {"W_xh": model.rnn.weight_ih_l0.grad, "W_hh": model.rnn.weight_hh_l0.grad,
                    "b_h": model.rnn.bias_ih_l0.grad, "W_hy": model.fc.weight.grad, "b_y": model.fc.bias.grad}
    if cell == "gru":
        module_grads["b_hn"] = model.rnn.bias_hh_l0.grad[2 * 8:]
    assert set(grads) == set(module_grads)
    for key, grad in module_grads.items():
        np.testing.assert_allclose(grads[key], grad.numpy(), rtol=1e-6 if dtype == np.float32 else 1e-13)


def test_cuda_without_gpu_is_unavailable_with_reason():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU; the unavailable path is not reachable")
    import impls
    with pytest.raises(impls.Unavailable, match="CUDA"):
        impls.get("torch", device="cuda")
