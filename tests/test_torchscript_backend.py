"""The torchscript backend really is TorchScript running the hand-written cell loop, and
its stacked / bidirectional / dropout composition of scripted layer loops matches the oracle."""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed: torchscript is unavailable")
import impls  # noqa: E402
from test_torch_mapping import CELLS, check_against_oracle, structured_matrix  # noqa: E402


@pytest.fixture(scope="module")
def backend():
    return impls.get("torchscript")


@pytest.mark.parametrize("cell, fused", [("rnn_tanh", "rnn_tanh"), ("lstm", "aten::lstm"), ("gru", "aten::gru")])
def test_scripted_loop_not_the_fused_rnn_kernel(backend, cell, fused):
    for scripts in (backend._scripts, backend._layer_scripts):  # plain model; one layer-direction
        assert isinstance(scripts[cell], torch.jit.ScriptFunction)
        graph = str(scripts[cell].inlined_graph)  # the recurrence is a called function: inlined
        assert "prim::Loop" in graph and "aten::tanh" in graph
        assert fused not in graph  # not nn.RNN's / nn.LSTM's / nn.GRU's fused kernel


def test_scripting_warns_deprecation_exactly_as_filtered():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        impls.get("torchscript")
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert any(m.startswith("`torch.jit.script` is deprecated") for m in messages), messages


def test_same_logits_as_torch_eager(backend):
    params = impls.init_params(4, 8, 3, seed=0, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((5, 7, 4))
    outputs = []
    for each in (impls.get("torch"), backend):
        outputs.append(each.to_numpy(each.predict(each.from_numpy(params), each.asarray(x))))
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-12)


def test_the_backend_runs_structure_and_dropout(backend):
    assert backend.structured and backend.supports_dropout


@structured_matrix
def test_structured_model_matches_the_oracle(backend, cell, structure, lengths, rate, dtype):
    check_against_oracle(backend, cell, structure, lengths, rate, dtype)
