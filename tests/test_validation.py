"""Bad inputs get a ValueError that says what was expected and what came, from every
backend alike (the checks are written once, in impls.base)."""
import numpy as np
import pytest

import impls
from conftest import backend_or_skip

INPUT_SIZE, HIDDEN, CLASSES = 3, 5, 4


def good(dtype=np.float32):
    return np.random.default_rng(0).standard_normal((2, 4, INPUT_SIZE)).astype(dtype)


def with_nan(x):
    x[1, 2, 0] = np.nan
    return x


def with_inf(x):
    x[0, 0, 1] = -np.inf
    return x


# case id -> (make x from a good float32 x, message pattern)
BAD_INPUTS = {
    "rank2": (lambda x: x[0], r"3-D.*got 2-D"),
    "rank4": (lambda x: x[None], r"3-D.*got 4-D"),
    "wrong_input_size": (lambda x: np.zeros((2, 4, INPUT_SIZE + 1), np.float32), r"input_size 4.*expects input_size 3"),
    "empty_batch": (lambda x: x[:0], r"empty batch"),
    "seq_len_0": (lambda x: x[:, :0], r"seq_len 0"),
    "nan": (with_nan, r"NaN or inf"),
    "inf": (with_inf, r"NaN or inf"),
    "int_dtype": (lambda x: x.astype(np.int32), r"dtype int32"),
    "float16": (lambda x: x.astype(np.float16), r"dtype float16"),
    "mixed_dtype": (lambda x: x.astype(np.float64), r"float64 but params are float32"),
}


@pytest.mark.parametrize("case", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
@pytest.mark.parametrize("method", ["forward", "predict", "bind"])
@pytest.mark.parametrize("name", impls.names())
def test_bad_inputs_raise_value_error(name, method, case):
    backend = backend_or_skip(name)
    make_bad, pattern = case
    params = backend.from_numpy(impls.init_params(INPUT_SIZE, HIDDEN, CLASSES, seed=0))
    with pytest.raises(ValueError, match=pattern):
        getattr(backend, method)(params, backend.asarray(make_bad(good())))


@pytest.mark.parametrize("name", impls.names())
def test_host_array_is_not_silently_converted(name):
    backend = backend_or_skip(name)
    if name == "numpy":
        pytest.skip("numpy's native array is the host array")
    params = backend.from_numpy(impls.init_params(INPUT_SIZE, HIDDEN, CLASSES, seed=0))
    with pytest.raises(ValueError, match="native array"):
        backend.forward(params, good())


BAD_LENGTHS = {
    "too_long": (np.array([4, 5]), r"\[1, seq_len=4\]"),
    "zero": (np.array([0, 2]), r"\[1, seq_len=4\]"),
    "wrong_shape": (np.array([1, 2, 3]), r"shape \(batch,\)"),
    "float": (np.array([1.0, 2.0]), r"integers"),
}


@pytest.mark.parametrize("case", BAD_LENGTHS.values(), ids=BAD_LENGTHS.keys())
@pytest.mark.parametrize("method", ["forward", "bind"])
@pytest.mark.parametrize("name", impls.names())
def test_bad_lengths_raise_value_error(name, method, case):
    backend = backend_or_skip(name)
    lengths, pattern = case
    params = backend.from_numpy(impls.init_params(INPUT_SIZE, HIDDEN, CLASSES, seed=0))
    with pytest.raises(ValueError, match=pattern):
        getattr(backend, method)(params, backend.asarray(good()), backend.asarray(lengths))


@pytest.mark.parametrize("name", impls.names())
def test_bad_params_and_dlogits(name):
    backend = backend_or_skip(name)
    params = impls.init_params(INPUT_SIZE, HIDDEN, CLASSES, seed=0)
    with pytest.raises(ValueError, match="missing"):
        backend.from_numpy({k: v for k, v in params.items() if k != "b_h"})
    with pytest.raises(ValueError, match=r"W_hh has shape \(5, 6\), expected \(5, 5\)"):
        backend.from_numpy({**params, "W_hh": np.zeros((5, 6), np.float32)})
    with pytest.raises(ValueError, match="mix dtypes"):
        backend.from_numpy({**params, "b_y": params["b_y"].astype(np.float64)})
    if not backend.supports_backward:
        return
    native = backend.from_numpy(params)
    _, cache = backend.forward(native, backend.asarray(good()))
    with pytest.raises(ValueError, match=r"shape \(batch, num_classes\) = \(2, 4\)"):
        backend.backward(native, cache, backend.asarray(np.zeros((2, 3), np.float32)))


def test_unknown_implementation_lists_the_registered_ones():
    with pytest.raises(ValueError, match="registered: numpy"):
        impls.get("no-such-thing")


def test_init_params_shapes_and_bounds():
    params = impls.init_params(3, 16, 5, seed=1, dtype=np.float64)
    assert {k: v.shape for k, v in params.items()} == impls.param_shapes(3, 16, 5)
    assert all(np.abs(v).max() <= 0.25 for v in params.values())  # 1/sqrt(16)
    again = impls.init_params(3, 16, 5, seed=1, dtype=np.float32)
    for key in params:  # one draw, two dtypes: the same numbers up to rounding
        np.testing.assert_allclose(again[key], params[key], rtol=1e-7)


@pytest.mark.parametrize("cell, gates", [("rnn_tanh", 1), ("lstm", 4), ("gru", 3)])
def test_each_cell_has_its_canonical_names_shapes_and_is_read_off_the_params(cell, gates):
    params = impls.init_params(3, 5, 4, seed=0, cell=cell)
    assert params["W_xh"].shape == (gates * 5, 3) and params["W_hh"].shape == (gates * 5, 5)
    assert params["b_h"].shape == (gates * 5,) and params["W_hy"].shape == (4, 5)
    assert ("b_hn" in params) == (cell == "gru")
    assert impls.cell_of(params) == cell and impls.check_params(params) == cell
    assert impls.infer_sizes(params) == (3, 5, 4)
    assert all(np.abs(v).max() <= 1 / np.sqrt(5) for v in params.values())


def test_names_of_one_cell_with_the_shapes_of_another_are_refused_naming_both():
    gru = impls.init_params(3, 5, 4, seed=0, cell="gru")
    lstm = impls.init_params(3, 5, 4, seed=0, cell="lstm")
    with pytest.raises(ValueError, match=r"b_hn, a gru parameter.*shape of lstm"):
        impls.cell_of({**lstm, "b_hn": gru["b_hn"]})
    with pytest.raises(ValueError, match=r"shape of gru, but there is no b_hn"):
        impls.cell_of({k: v for k, v in gru.items() if k != "b_hn"})
    with pytest.raises(ValueError, match=r"W_hh has 10 rows"):
        impls.cell_of({**lstm, "W_hh": np.zeros((10, 5), np.float32)})
    with pytest.raises(ValueError, match=r"b_h has shape \(15,\), expected \(20,\) for lstm"):
        impls.check_params({**lstm, "b_h": gru["b_h"]})
    with pytest.raises(ValueError, match="are for the gru cell, not lstm"):
        impls.check_params(gru, cell="lstm")
