"""The torchscript backend really is TorchScript running the hand-written cell loop."""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed: torchscript is unavailable")
import impls  # noqa: E402


@pytest.mark.parametrize("cell, fused", [("rnn_tanh", "rnn_tanh"), ("lstm", "aten::lstm"), ("gru", "aten::gru")])
def test_scripted_loop_not_the_fused_rnn_kernel(cell, fused):
    backend = impls.get("torchscript")
    assert isinstance(backend._scripts[cell], torch.jit.ScriptFunction)
    graph = str(backend._scripts[cell].graph)
    assert "prim::Loop" in graph and "aten::tanh" in graph
    assert fused not in graph  # not nn.RNN's / nn.LSTM's / nn.GRU's fused kernel


def test_scripting_warns_deprecation_exactly_as_filtered():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        impls.get("torchscript")
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert any(m.startswith("`torch.jit.script` is deprecated") for m in messages), messages


def test_same_logits_as_torch_eager():
    params = impls.init_params(4, 8, 3, seed=0, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((5, 7, 4))
    outputs = []
    for name in ("torch", "torchscript"):
        backend = impls.get(name)
        outputs.append(backend.to_numpy(backend.predict(backend.from_numpy(params), backend.asarray(x))))
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-12)
