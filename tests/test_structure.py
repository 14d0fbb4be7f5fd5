"""Stacked and bidirectional models with dropout: every backend against the float64 oracle,
the oracle against central differences, and the contract's rules for dropout masks.

One check helper (check_structured), one-line parametrised cases. A backend that does not
run a structure or dropout skips with its own stated reason (structure_reason,
dropout_reason), which a test below requires to exist."""
import numpy as np
import pytest

import impls
from bench.oracle import compare, float64_logits_and_grads, seeded_inputs
from conftest import backend_or_skip
from impls import reference
from impls.params import directions

CELLS = list(impls.CELLS)
STRUCTURES = {"2-layer": (2, False), "bidirectional": (1, True), "2-layer-bi": (2, True)}
SHAPE = (4, 7, 3, 6, 3)  # (B, T, I, H, C): small, every structure in a fraction of a second
LENGTHS = np.array([7, 2, 5, 1])  # a full sequence, short ones, and a single step
ORACLE_NEEDS_TORCH = "the float64 oracle is PyTorch autograd and torch is not installed"


def widest_dtype(backend):
    return np.float64 if np.dtype(np.float64) in backend.dtypes else backend.dtypes[0]


def structured_backend(name, cell, structure, dropout=False):
    """The backend, or a skip with the reason it gives for not running this combination."""
    backend = backend_or_skip(name)
    reason = (backend.cell_reason(cell) or backend.structure_reason(*structure)
              or (dropout and backend.dropout_reason()))
    if reason:
        pytest.skip(reason)
    return backend


def check_structured(name, cell, structure, *, lengths=None, rate=0.0, dtype=None):
    pytest.importorskip("torch", reason=ORACLE_NEEDS_TORCH)
    backend = structured_backend(name, cell, structure, dropout=rate > 0)
    dtype = dtype or widest_dtype(backend)
    if np.dtype(dtype) not in backend.dtypes:
        pytest.skip(f"{name} does not run {np.dtype(dtype)}")
    num_layers, bidirectional = structure
    params, x, dlogits = seeded_inputs(*SHAPE, seed=9, dtype=dtype, cell=cell,
                                       num_layers=num_layers, bidirectional=bidirectional)
    assert impls.structure_of(params) == structure  # precondition: the model asked for
    masks = impls.masks_for(params, x.shape, rate, seed=4)
    errors = compare(backend, params, x, dlogits, lengths, dropout=masks)
    expected = {"logits", *impls.param_names(cell, num_layers, bidirectional)}
    assert set(errors) == (expected if backend.supports_backward else {"logits"})
    bound = impls.tolerance(name, dtype)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= bound, f"{name} {cell} {structure}: {worst} off by {errors[worst]:.2e} > {bound:.0e}"


def cases(*, heavy_fast: tuple = ()) -> list:
    """impl x cell x structure; compile-heavy implementations run `heavy_fast` ((cell,
    structure id) pairs) in CI and the rest with --run-slow (a graph per combination)."""
    out = []
    for name in impls.names():
        heavy = impls.entry(name).compile_heavy
        for cell in CELLS:
            for sid, structure in STRUCTURES.items():
                slow = heavy and (cell, sid) not in heavy_fast
                out.append(pytest.param(name, cell, structure, id=f"{name}-{cell}-{sid}",
                                        marks=pytest.mark.slow if slow else ()))
    return out


@pytest.mark.parametrize("name, cell, structure", cases(heavy_fast=(("rnn_tanh", "2-layer-bi"),)))
def test_structured_matches_oracle(name, cell, structure):
    check_structured(name, cell, structure)


@pytest.mark.parametrize("name, cell, structure", cases(heavy_fast=(("gru", "2-layer-bi"),)))
def test_structured_variable_lengths_match_oracle(name, cell, structure):
    check_structured(name, cell, structure, lengths=LENGTHS)


@pytest.mark.parametrize("name, cell, structure", cases(heavy_fast=(("lstm", "2-layer-bi"),)))
def test_dropout_matches_oracle(name, cell, structure):
    """The same seeded masks in the oracle and the backend: dropout'd forward and backward."""
    check_structured(name, cell, structure, lengths=LENGTHS, rate=0.3)


@pytest.mark.parametrize("name", impls.names())
def test_float32_structured_matches_oracle(name):
    if impls.entry(name).compile_heavy:
        pytest.skip("float32 of a compiled loop: covered with --run-slow by the cases above")
    check_structured(name, "lstm", (2, True), lengths=LENGTHS, dtype=np.float32)


@pytest.mark.parametrize("name", impls.names())
def test_structured_predict_equals_forward_and_never_drops(name):
    backend = structured_backend(name, "rnn_tanh", (2, True))
    params, x, _ = seeded_inputs(3, 5, 4, 6, 2, seed=5, num_layers=2, bidirectional=True,
                                 dtype=widest_dtype(backend))
    native, xn = backend.from_numpy(params), backend.asarray(x)
    predicted = backend.to_numpy(backend.predict(native, xn))
    np.testing.assert_allclose(backend.to_numpy(backend.forward(native, xn)[0]), predicted, rtol=1e-6)
    if backend.dropout_reason() is None:
        masks = backend.as_dropout(impls.masks_for(params, x.shape, 0.5, seed=1))
        dropped = backend.to_numpy(backend.forward(native, xn, None, masks)[0])
        assert not np.allclose(dropped, predicted)  # the masks did something ...
        np.testing.assert_array_equal(backend.to_numpy(backend.predict(native, xn)), predicted)  # ... predict none


@pytest.mark.parametrize("name", impls.names())
def test_a_backend_without_dropout_says_why(name):
    backend = backend_or_skip(name)
    params = impls.init_params(3, 4, 2, seed=0, num_layers=2)
    x = np.zeros((2, 3, 3), np.float32)
    masks = impls.masks_for(params, x.shape, 0.5, seed=0)
    native = backend.from_numpy({k: v.astype(backend.dtypes[0]) for k, v in params.items()})
    xn = backend.asarray(x.astype(backend.dtypes[0]))
    reason = backend.structure_reason(2, False) or backend.dropout_reason()
    if reason is None:
        pytest.skip(f"{name} runs 2-layer models with dropout")
    with pytest.raises(ValueError, match="forward-only|does not|runs one-layer"):
        backend.forward(native, xn, None, backend.as_dropout(
            {k: v.astype(backend.dtypes[0]) for k, v in masks.items()}))


# --- the oracle itself ----------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
def test_structured_oracle_matches_central_differences(cell):
    """Two layers, both directions, variable lengths and dropout: the oracle's gradients
    against finite differences of its own logits, for one entry of every parameter."""
    pytest.importorskip("torch", reason=ORACLE_NEEDS_TORCH)
    params, x, dlogits = seeded_inputs(3, 4, 2, 3, 2, seed=13, cell=cell, num_layers=2, bidirectional=True)
    lengths = np.array([4, 1, 3])
    masks = impls.masks_for(params, x.shape, 0.4, seed=2)
    _, grads = float64_logits_and_grads(params, x, dlogits, lengths, masks)
    rng, eps = np.random.default_rng(0), 1e-6
    for key, value in params.items():
        index = tuple(int(rng.integers(n)) for n in value.shape)
        bumped = {k: v.copy() for k, v in params.items()}
        loss = []
        for step in (eps, -2 * eps):
            bumped[key][index] += step
            loss.append(np.sum(float64_logits_and_grads(bumped, x, None, lengths, masks)[0] * dlogits))
        assert abs((loss[0] - loss[1]) / (2 * eps) - grads[key][index]) < 1e-7, (key, index)


def test_head_reads_the_reverse_directions_final_state_not_its_last_output():
    """out[:, -1] of the reverse direction has seen one step only: the head must read the
    state after the whole (length-limited) sequence. The two differ here, so a backend
    reading out[:, -1] fails the oracle tests above."""
    params, x, _ = seeded_inputs(3, 6, 2, 4, 2, seed=1, num_layers=1, bidirectional=True)
    lengths = np.array([6, 4, 2])
    logits, cache = reference.forward(np, params, x, lengths)
    H = 4
    rev = cache["layers"][0][1]["states"][1:]  # (T, B, H), the reverse direction's own frame
    first_step = np.stack([rev[0, b] for b in range(3)])  # = its output at time lengths-1
    final = cache["h_final"][:, H:]
    assert not np.allclose(first_step, final)
    np.testing.assert_array_equal(final, np.stack([rev[n - 1, b] for b, n in enumerate(lengths)]))


def test_reversal_index_reverses_within_each_length_and_is_its_own_inverse():
    lengths = np.array([3, 1, 2])
    index = reference.reversal_index(np, lengths, 4, 3)
    rows = np.arange(12).reshape(12, 1)  # row t*B + b holds t*B + b
    reversed_rows = reference.reverse_rows(np, rows, index, 4, 3).reshape(4, 3)  # (T, B)
    steps = reversed_rows // 3  # the source step of each (t, b)
    np.testing.assert_array_equal(steps[:, 0], [2, 1, 0, 3])
    np.testing.assert_array_equal(steps[:, 1], [0, 1, 2, 3])
    np.testing.assert_array_equal(steps[:, 2], [1, 0, 2, 3])
    np.testing.assert_array_equal(reference.reverse_rows(np, reversed_rows.reshape(12, 1), index, 4, 3), rows)


# --- dropout masks ----------------------------------------------------------------------

def test_dropout_masks_are_seeded_scaled_and_shaped():
    kw = dict(batch_size=8, seq_len=5, hidden_size=16, num_layers=3, bidirectional=True)
    masks = impls.dropout_masks(0.25, seed=7, **kw)
    assert {k: v.shape for k, v in masks.items()} == {"l0": (8, 5, 32), "l1": (8, 5, 32), "head": (8, 32)}
    for value in masks.values():
        assert set(np.unique(value)) <= {0.0, np.float32(1 / 0.75)}
    kept = np.concatenate([v.ravel() for v in masks.values()]) > 0
    assert abs(kept.mean() - 0.75) < 0.05
    again = impls.dropout_masks(0.25, seed=7, **kw)
    other = impls.dropout_masks(0.25, seed=8, **kw)
    assert all(np.array_equal(masks[k], again[k]) for k in masks)
    assert not all(np.array_equal(masks[k], other[k]) for k in masks)
    assert impls.dropout_masks(0.0, seed=7, **kw) is None
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        impls.dropout_masks(1.0, seed=7, **kw)


def test_wrong_masks_are_refused_with_what_was_expected():
    backend = impls.get("numpy")
    params = impls.init_params(3, 4, 2, seed=0, num_layers=2, dtype=np.float64)
    native, x = backend.from_numpy(params), backend.asarray(np.zeros((2, 3, 3)))
    masks = impls.masks_for(params, (2, 3, 3), 0.5, seed=0)
    with pytest.raises(ValueError, match=r"keys \['head', 'l0'\]"):
        backend.forward(native, x, None, {"head": masks["head"]})
    with pytest.raises(ValueError, match=r"mask l0 must be \(2, 3, 4\) float64"):
        backend.forward(native, x, None, {**masks, "l0": masks["l0"][:, :2]})


# --- params --------------------------------------------------------------------------

def test_structured_names_follow_pytorchs():
    names = impls.param_names("lstm", 2, True)
    assert names == ("W_xh", "W_hh", "b_h", "W_xh_reverse", "W_hh_reverse", "b_h_reverse",
                     "W_xh_l1", "W_hh_l1", "b_h_l1", "W_xh_l1_reverse", "W_hh_l1_reverse",
                     "b_h_l1_reverse", "W_hy", "b_y")
    shapes = impls.param_shapes(5, 4, 3, "lstm", 2, True)
    assert shapes["W_xh"] == (16, 5) and shapes["W_xh_l1"] == (16, 8) and shapes["W_hy"] == (3, 8)


def test_one_layer_params_do_not_change_with_structure_arguments():
    """A seed's single-layer set is the same numbers as before structures existed (its
    draws come first), so old weights and old runs stay reproducible."""
    plain = impls.init_params(3, 4, 2, seed=5, cell="gru")
    deeper = impls.init_params(3, 4, 2, seed=5, cell="gru", num_layers=2, bidirectional=True)
    for key in impls.param_names("gru"):
        if key not in ("W_hy", "b_y"):
            np.testing.assert_array_equal(plain[key], deeper[key])


@pytest.mark.parametrize("structure", list(STRUCTURES.values()), ids=list(STRUCTURES))
def test_structure_is_read_off_the_params_and_checked(structure):
    params = impls.init_params(3, 4, 2, seed=0, cell="gru", num_layers=structure[0],
                               bidirectional=structure[1])
    assert impls.structure_of(params) == structure and impls.check_params(params) == "gru"
    broken = dict(params)
    broken.pop(f"W_xh{'_l1' if structure[0] > 1 else '_reverse'}")
    with pytest.raises(ValueError, match="missing"):
        impls.check_params(broken)
    wrong = dict(params, W_hy=np.zeros((2, 4 * len(directions(structure[1])) + 1), np.float32))
    with pytest.raises(ValueError, match="W_hy"):
        impls.check_params(wrong)


def test_weight_decay_reaches_every_layer_and_direction():
    assert [impls.is_weight(n) for n in ("W_xh_l1_reverse", "W_hh_reverse", "W_hy", "b_h_l1", "b_hn")] \
        == [True, True, True, False, False]
