"""The hand-written backends on their own: central differences (no torch involved) and the
xp-generic reference math under array-api-strict, the stand-in for CuPy on a CPU."""
import numpy as np
import pytest

import impls
from impls import reference
from bench.oracle import seeded_inputs
from conftest import backend_or_skip


def loss_of(backend, params, x, dlogits, lengths=None):
    native_lengths = None if lengths is None else backend.asarray(lengths)
    logits, _ = backend.forward(backend.from_numpy(params), backend.asarray(x), native_lengths)
    return float(np.sum(backend.to_numpy(logits) * dlogits))


# The hand-derived backward passes (autograd ones are checked against the oracle only).
HAND_DERIVED = ["numpy", "numba"]


@pytest.mark.parametrize("cell", impls.CELLS)
@pytest.mark.parametrize("lengths", [None, np.array([2, 6, 4])], ids=["full", "lengths"])
@pytest.mark.parametrize("name", HAND_DERIVED)
def test_bptt_gradients_match_central_differences(name, lengths, cell):
    backend = backend_or_skip(name)
    if cell not in backend.cells:
        pytest.skip(f"{name} runs {', '.join(backend.cells)} only; {cell} is open work (issue 10)")
    params, x, dlogits = seeded_inputs(3, 6, 3, 5, 4, seed=21, dtype=np.float64, cell=cell)
    native = backend.from_numpy(params)
    native_lengths = None if lengths is None else backend.asarray(lengths)
    _, cache = backend.forward(native, backend.asarray(x), native_lengths)
    grads = backend.to_numpy(backend.backward(native, cache, backend.asarray(dlogits)))
    eps = 1e-6
    for key, value in params.items():
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            bumped = {k: v.copy() for k, v in params.items()}
            bumped[key][index] += eps
            up = loss_of(backend, bumped, x, dlogits, lengths)
            bumped[key][index] -= 2 * eps
            numeric[index] = (up - loss_of(backend, bumped, x, dlogits, lengths)) / (2 * eps)
        scale = np.abs(numeric).max()
        assert np.abs(grads[key] - numeric).max() <= 1e-7 * max(scale, 1.0), key


def test_gradient_flows_through_every_step():
    """Full BPTT, not the article's output-layer-only backward: the first input step
    influences the gradient of W_xh."""
    backend = impls.get("numpy")
    params, x, dlogits = seeded_inputs(2, 12, 3, 6, 2, seed=2)
    _, cache = backend.forward(params, x)
    base = backend.backward(params, cache, dlogits)["W_xh"]
    x2 = x.copy()
    x2[:, 0, :] += 1.0
    _, cache2 = backend.forward(params, x2)
    assert not np.allclose(backend.backward(params, cache2, dlogits)["W_xh"], base)


@pytest.mark.parametrize("structure", [(1, False), (2, True)], ids=["plain", "2-layer-bi-dropout"])
@pytest.mark.parametrize("cell", impls.CELLS)
@pytest.mark.parametrize("lengths", [None, [3, 6]], ids=["full", "lengths"])
def test_reference_runs_unchanged_under_array_api_strict(lengths, cell, structure):
    xps = pytest.importorskip("array_api_strict")
    params, x, dlogits = seeded_inputs(2, 6, 3, 5, 4, seed=9, cell=cell, num_layers=structure[0],
                                       bidirectional=structure[1])
    masks = impls.masks_for(params, x.shape, 0.3 if structure[0] > 1 else 0.0, seed=1)
    np_lengths = None if lengths is None else np.array(lengths)
    logits, cache = reference.forward(np, params, x, np_lengths, dropout=masks)
    grads = reference.backward(np, params, cache, dlogits)
    strict = {k: xps.asarray(v) for k, v in params.items()}
    s_masks = None if masks is None else {k: xps.asarray(v) for k, v in masks.items()}
    s_lengths = None if lengths is None else xps.asarray(np_lengths)
    s_logits, s_cache = reference.forward(xps, strict, xps.asarray(x), s_lengths, dropout=s_masks)
    s_grads = reference.backward(xps, strict, s_cache, xps.asarray(dlogits))
    np.testing.assert_allclose(np.asarray(s_logits), logits, rtol=1e-14)
    for key in grads:
        np.testing.assert_allclose(np.asarray(s_grads[key]), grads[key], rtol=1e-13, atol=1e-15)
    s_pred = reference.forward(xps, strict, xps.asarray(x), s_lengths, keep_states=False)[0]
    undropped = reference.forward(np, params, x, np_lengths)[0]
    np.testing.assert_allclose(np.asarray(s_pred), undropped, rtol=1e-14)
