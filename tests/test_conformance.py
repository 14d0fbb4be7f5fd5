"""Every registered backend against the float64 oracle (PyTorch autograd in float64,
bench.oracle), over many shapes. One check helper, one-line parametrised cases; the
tolerances come from the registry."""
import types

import numpy as np
import pytest

import impls
from bench.oracle import compare, float64_logits_and_grads, seeded_inputs
from conftest import backend_or_skip, impl_params, temporary_entry
from impls import reference

# (batch_size, seq_len, input_size, hidden_size, num_classes)
SHAPES = {
    "batch1": (1, 7, 5, 16, 3),
    "seq_len1": (4, 1, 5, 16, 3),
    "input_size1": (4, 12, 1, 16, 3),
    "hidden_gt_input": (5, 9, 3, 48, 4),
    "hidden_lt_input": (5, 9, 40, 6, 4),
    "many_classes": (6, 5, 4, 8, 100),
    "long_sequence": (3, 300, 4, 24, 5),
    "typical": (32, 16, 32, 64, 10),
}
DTYPES = [np.float64, np.float32]
# Compile-heavy backends recompile per shape: CI checks them on these, --run-slow on all
# (the LSTM and GRU loops on the typical shape only: each is a graph of its own).
FAST_SHAPES_FOR_HEAVY = {"rnn_tanh": ("batch1", "typical"), "lstm": ("typical",), "gru": ("typical",)}


CELLS = list(impls.CELLS)


def oracle_cases() -> list:
    cases = []
    for name in impls.names():
        heavy = impls.entry(name).compile_heavy
        for cell in CELLS:
            for shape_id, shape in SHAPES.items():
                slow = heavy and shape_id not in FAST_SHAPES_FOR_HEAVY[cell]
                cases.append(pytest.param(name, shape, cell, id=f"{name}-{cell}-{shape_id}",
                                          marks=pytest.mark.slow if slow else ()))
    return cases


def backend_for(name, cell):
    """The backend, or a skip stating why it cannot run here or does not run `cell`."""
    backend = backend_or_skip(name)
    if backend.cell_reason(cell):
        pytest.skip(backend.cell_reason(cell))
    return backend


def widest_dtype(backend):
    """float64 where the backend runs it (the contract's tests are tightest there), else its
    own dtype (onnx_native: float32 only)."""
    return np.float64 if np.dtype(np.float64) in backend.dtypes else backend.dtypes[0]


ORACLE_NEEDS_TORCH = "the float64 oracle is PyTorch autograd and torch is not installed"


def check_against_oracle(name, shape, dtype, lengths=None, cell="rnn_tanh"):
    pytest.importorskip("torch", reason=ORACLE_NEEDS_TORCH)
    backend = backend_for(name, cell)
    if np.dtype(dtype) not in backend.dtypes:
        pytest.skip(f"{name} does not run {np.dtype(dtype)}")
    params, x, dlogits = seeded_inputs(*shape, seed=7, dtype=dtype, cell=cell)
    # Precondition: the backend receives exactly the oracle's params and inputs.
    native = backend.from_numpy(params)
    for key, value in backend.to_numpy(native).items():
        np.testing.assert_array_equal(value, params[key])
    np.testing.assert_array_equal(backend.to_numpy(backend.asarray(x)), x)
    errors = compare(backend, params, x, dlogits, lengths)
    expected_keys = {"logits", *impls.param_names(cell)} if backend.supports_backward else {"logits"}
    assert set(errors) == expected_keys
    bound = impls.tolerance(name, dtype)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= bound, f"{name} {np.dtype(dtype)} {shape}: {worst} off by {errors[worst]:.2e} > {bound:.0e}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name, shape, cell", oracle_cases())
def test_matches_float64_oracle(name, shape, cell, dtype):
    check_against_oracle(name, shape, dtype, cell=cell)


def lengths_cases() -> list:
    """Every backend x cell; compile-heavy backends' LSTM/GRU only with --run-slow."""
    return [pytest.param(name, cell, id=f"{name}-{cell}",
                         marks=pytest.mark.slow if impls.entry(name).compile_heavy and cell != "rnn_tanh" else ())
            for name in impls.names() for cell in CELLS]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name, cell", lengths_cases())
def test_variable_lengths_match_oracle(name, dtype, cell):
    lengths = np.array([1, 9, 4, 9, 6])
    check_against_oracle(name, (5, 9, 3, 12, 4), dtype, lengths, cell)


@pytest.mark.parametrize("structure", [(1, False), (2, True)], ids=["plain", "2-layer-bi"])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("name", impl_params())
def test_padding_never_changes_a_result(name, cell, structure):
    """Right-padding is exact: each sequence's logits equal those of the unpadded
    sequence run alone, whatever values fill the padding. With a reverse direction padding
    is where a wrong implementation starts reading (at step T, not lengths[i])."""
    backend = backend_for(name, cell)
    if backend.structure_reason(*structure):
        pytest.skip(backend.structure_reason(*structure))
    params, x, _ = seeded_inputs(4, 10, 3, 8, 5, seed=3, cell=cell, dtype=widest_dtype(backend),
                                 num_layers=structure[0], bidirectional=structure[1])
    lengths = np.array([10, 3, 7, 1])
    padded = x.copy()
    for i, n in enumerate(lengths):
        padded[i, n:] = 1e3 * (i + 1)  # loud garbage, not zeros
    native = backend.from_numpy(params)
    batched = backend.to_numpy(backend.predict(native, backend.asarray(padded), backend.asarray(lengths)))
    for i, n in enumerate(lengths):
        alone = backend.to_numpy(backend.predict(native, backend.asarray(x[i:i + 1, :n])))
        np.testing.assert_allclose(batched[i], alone[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", impls.names())
def test_predict_equals_forward(name):
    backend = backend_or_skip(name)
    params, x, _ = seeded_inputs(3, 6, 4, 8, 2, seed=5, dtype=widest_dtype(backend))
    native, xn = backend.from_numpy(params), backend.asarray(x)
    logits = backend.to_numpy(backend.forward(native, xn)[0])
    np.testing.assert_allclose(backend.to_numpy(backend.predict(native, xn)), logits, rtol=1e-13)


def test_a_new_cpu_backend_needs_its_math_and_nothing_else():
    """HostArrayBackend carries the array plumbing: a backend that writes only its
    forward and backward passes the oracle and the bad-input checks."""
    class Minimal(impls.HostArrayBackend):
        name = "minimal"

        def _forward(self, params, x, lengths):
            return reference.forward(np, params, x, lengths)

        def _backward(self, params, cache, dlogits):
            return reference.backward(np, params, cache, dlogits)

    with temporary_entry("minimal", types.SimpleNamespace(create=lambda device=None: Minimal())):
        check_against_oracle("minimal", SHAPES["typical"], np.float32)
        backend = impls.get("minimal")
        params = backend.from_numpy(impls.init_params(2, 3, 2, seed=0))
        with pytest.raises(ValueError, match="NaN or inf"):
            backend.predict(params, backend.asarray(np.full((1, 2, 2), np.nan, np.float32)))


@pytest.mark.parametrize("name", impls.names())
def test_bound_calls_equal_the_checked_ones(name):
    """backend.bind checks once; its calls then give bitwise what the checked calls give,
    and params passed to a bound call (an optimiser's update) replace the bound ones."""
    backend = backend_or_skip(name)
    params, x, dlogits = seeded_inputs(3, 6, 4, 8, 2, seed=5, dtype=widest_dtype(backend))
    native, xn, dn = backend.from_numpy(params), backend.asarray(x), backend.asarray(dlogits)
    lengths = backend.asarray(np.array([6, 2, 4]))
    bound = backend.bind(native, xn, lengths)
    assert (bound.params, bound.x, bound.lengths) == (native, xn, lengths)
    np.testing.assert_array_equal(backend.to_numpy(bound.predict()),
                                  backend.to_numpy(backend.predict(native, xn, lengths)))
    logits, cache = bound.forward()
    np.testing.assert_array_equal(backend.to_numpy(logits),
                                  backend.to_numpy(backend.forward(native, xn, lengths)[0]))
    other = backend.from_numpy({k: v * 0.5 for k, v in params.items()})
    np.testing.assert_array_equal(backend.to_numpy(bound.forward(other)[0]),
                                  backend.to_numpy(backend.forward(other, xn, lengths)[0]))
    if backend.supports_backward:
        bound_grads = backend.to_numpy(bound.backward(cache, dn))
        checked = backend.to_numpy(backend.backward(native, backend.forward(native, xn, lengths)[1], dn))
        assert set(bound_grads) == set(impls.PARAM_NAMES)
        for key in checked:
            np.testing.assert_array_equal(bound_grads[key], checked[key])
    else:
        with pytest.raises(impls.BackwardUnsupported):
            bound.backward(cache, dn)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("name", impls.names())
def test_no_hidden_state_between_calls(name, cell):
    """Same inputs -> bitwise the same outputs, and backward repeats on one cache."""
    backend = backend_for(name, cell)
    params, x, dlogits = seeded_inputs(3, 6, 4, 8, 2, seed=5, cell=cell, dtype=widest_dtype(backend))
    native, xn, dn = backend.from_numpy(params), backend.asarray(x), backend.asarray(dlogits)
    first_logits, cache = backend.forward(native, xn)
    backend.forward(native, backend.asarray(x[::-1].copy()))  # an unrelated call in between
    np.testing.assert_array_equal(backend.to_numpy(backend.forward(native, xn)[0]),
                                  backend.to_numpy(first_logits))
    if backend.supports_backward:
        once = backend.to_numpy(backend.backward(native, cache, dn))
        twice = backend.to_numpy(backend.backward(native, cache, dn))
        for key in once:
            np.testing.assert_array_equal(once[key], twice[key])


@pytest.mark.parametrize("name", impls.names())
def test_from_numpy_does_not_alias_caller_arrays(name):
    backend = backend_or_skip(name)
    params, x, _ = seeded_inputs(2, 3, 2, 4, 2, seed=0, dtype=widest_dtype(backend))
    native = backend.from_numpy(params)
    before = backend.to_numpy(backend.predict(native, backend.asarray(x))).copy()
    params["W_hh"] += 1.0  # the caller mutates its own dict afterwards
    after = backend.to_numpy(backend.predict(native, backend.asarray(x)))
    np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("cell", CELLS)
def test_oracle_matches_central_differences(cell):
    """The oracle's own gradients, against finite differences of its logits."""
    pytest.importorskip("torch", reason=ORACLE_NEEDS_TORCH)
    params, x, dlogits = seeded_inputs(2, 5, 3, 4, 3, seed=11, cell=cell)
    _, grads = float64_logits_and_grads(params, x, dlogits)
    eps = 1e-6
    for key, value in params.items():
        for index in np.ndindex(value.shape):
            bumped = {k: v.copy() for k, v in params.items()}
            bumped[key][index] += eps
            up = np.sum(float64_logits_and_grads(bumped, x)[0] * dlogits)
            bumped[key][index] -= 2 * eps
            down = np.sum(float64_logits_and_grads(bumped, x)[0] * dlogits)
            assert abs((up - down) / (2 * eps) - grads[key][index]) < 1e-7, (key, index)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_oracle_equals_torchs_own_modules(cell):
    """The oracle's step-by-step LSTM and GRU against nn.LSTM / nn.GRU themselves."""
    torch = pytest.importorskip("torch", reason=ORACLE_NEEDS_TORCH)
    from impls.torch_backend import to_module

    params, x, _ = seeded_inputs(3, 7, 4, 6, 2, seed=2, cell=cell)
    expected = to_module(params)(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(float64_logits_and_grads(params, x)[0], expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", impls.names())
def test_a_cell_a_backend_does_not_run_is_a_clear_error(name):
    backend = backend_or_skip(name)
    missing = [c for c in CELLS if c not in backend.cells]
    if not missing:
        pytest.skip(f"{name} runs every cell")
    params = impls.init_params(3, 4, 2, seed=0, cell=missing[0])
    with pytest.raises(ValueError, match=rf"runs the .* cell\(s\), not {missing[0]}"):
        backend.from_numpy(params)
