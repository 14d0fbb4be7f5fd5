"""The numba backend on its own: its vectorisable tanh and sigmoid against float64 over the
whole float range, the loop-nest and BLAS paths and the GEMM blocking against numpy for
every cell, stacked and bidirectional models with dropout against the float64 oracle, the
on-disk compile cache, and a clean Unavailable without numba. Gradients by
central differences (no torch needed) are test_numpy_backend.py's, for numba and numpy and
every cell; oracle and bad-input tests are the shared ones (test_conformance.py,
test_validation.py). Small sizes: the JIT compile dominates."""
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import impls
from bench.oracle import compare, seeded_inputs

ROOT = Path(__file__).resolve().parents[1]

# The bounds stated in tanh32/tanh64's docstrings.
TANH_BOUND = {np.float32: 5e-7, np.float64: 6e-16}


def _grid(dtype):
    """Every binade of the finite positive range by strided bit patterns, a dense linear
    grid where tanh bends and saturates, and named points; both signs."""
    if dtype == np.float32:
        bits = np.arange(0, 0x7F7FFFFF, 4093, dtype=np.int64).astype(np.uint32).view(np.float32)
        lin = np.linspace(-12, 12, 400_001, dtype=np.float32)
    else:
        bits = np.arange(0, 0x7FEFFFFFFFFFFFFF, 2**44 + 12345, dtype=np.uint64).view(np.float64)
        lin = np.linspace(-25, 25, 400_001)
    info = np.finfo(dtype)
    named = np.array([0.0, info.smallest_subnormal, 1e-40 if dtype == np.float32 else 1e-310,
                      info.tiny, 1e-30, 1e-8, 3.9e-4, 4e-4, 4.1e-4, 0.39999, 0.4, 0.40001,
                      0.5, 1.0, 7.9, 7.906, 9.0, 18.7, 19.1, 20.0, 20.5, 1e30, info.max], dtype)
    x = np.concatenate([bits, lin, named])
    return np.concatenate([x, -x])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_tanh_error_bound_over_the_whole_range(dtype):
    pytest.importorskip("numba")
    from impls import numba_backend as nb
    x = _grid(dtype)
    y = nb.tanh_array(x)
    assert y.dtype == dtype
    exact = np.tanh(x.astype(np.float64))
    err = np.abs(y.astype(np.float64) - exact)
    nonzero = exact != 0
    rel = err[nonzero] / np.abs(exact[nonzero])
    bound = TANH_BOUND[dtype]
    worst = x[nonzero][np.argmax(rel)]
    assert rel.max() <= bound, f"rel error {rel.max():.2e} at x={worst!r} > {bound:.0e}"
    assert err.max() <= bound
    assert np.all(np.abs(y) <= 1)  # so 1 - h^2 in backward never goes negative
    tiny = np.abs(x) < 1e-8
    np.testing.assert_array_equal(y[tiny], x[tiny])  # tanh(x) = x there, denormals included
    saturated = np.abs(x) >= (9.0 if dtype == np.float32 else 20.0)
    ulp = 2.0 ** -24 if dtype == np.float32 else 0.0
    assert np.all(np.abs(y[saturated]) >= 1 - ulp)
    half = len(x) // 2  # the grid is [x, -x]: tanh is odd, exactly
    np.testing.assert_array_equal(y[half:], -y[:half])


# The bounds stated in sigmoid32/sigmoid64's docstrings (absolute: sigma is in [0, 1]).
SIGMOID_BOUND = {np.float32: 2.6e-7, np.float64: 4e-16}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_sigmoid_error_bound_over_the_whole_range(dtype):
    """The gates' sigma = 0.5 tanh(x/2) + 0.5 on our tanh, against the exact logistic."""
    pytest.importorskip("numba")
    from impls import numba_backend as nb
    x = _grid(dtype)
    y = nb.sigmoid_array(x)
    assert y.dtype == dtype
    e = np.exp(-np.abs(x.astype(np.float64)))  # never overflows
    exact = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    err = np.abs(y.astype(np.float64) - exact)
    worst = x[np.argmax(err)]
    assert err.max() <= SIGMOID_BOUND[dtype], f"abs error {err.max():.2e} at x={worst!r}"
    assert np.all((y >= 0) & (y <= 1))  # so sigma (1 - sigma) in backward is never negative


@pytest.mark.parametrize("kernel", ["tanh_array", "sigmoid_array"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_tanh_compiles_to_vector_code(dtype, kernel):
    """The point of writing tanh by hand: no libm call, SIMD lanes (any x86-64 has SSE2)."""
    numba = pytest.importorskip("numba")
    from impls import numba_backend as nb
    options = {k: v for k, v in nb._JIT.items() if k != "cache"}  # cached code has no IR
    kernel = numba.njit(**options)(getattr(nb, kernel).py_func)
    kernel(np.ones(4, dtype))
    ir = kernel.inspect_llvm(kernel.signatures[0])
    assert not re.search(r"call [^\n]*@(tanh|tanhf|numba_tanh)\b", ir)
    assert re.search(r"<\d+ x %s>" % ("float" if dtype == np.float32 else "double"), ir)


@pytest.mark.parametrize("cell", impls.CELLS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("block_bytes", [None, 1024], ids=["one_block", "many_blocks"])
@pytest.mark.parametrize("batch_size", [1, 8, 12])
def test_matmul_paths_and_blocks_agree_with_numpy(batch_size, block_bytes, dtype, cell,
                                                  monkeypatch):
    """The recurrent matmuls (forward's h W_hh^T, backward's da W_hh) are BLAS at batch 1
    and 12, a loop nest at 8; 1 KiB blocks cut T = 50 into GEMMs of 1 to 25 steps (fewer
    for the gated cells' 4H or 3H rows; the last block short). All give numpy's numbers,
    forward, predict and backward, for every cell."""
    backend = _backend()
    if block_bytes is not None:
        from impls import numba_backend as nb
        monkeypatch.setattr(nb, "BLOCK_BYTES", block_bytes)
    params, x, dlogits = seeded_inputs(batch_size, 50, 3, 10, 4, seed=4, dtype=dtype, cell=cell)
    lengths = np.arange(batch_size) * 7 % 50 + 1
    reference = impls.get("numpy")
    ref_logits, ref_cache = reference.forward(params, x, lengths)
    ref_grads = reference.backward(params, ref_cache, dlogits)
    native, xn, ln = backend.from_numpy(params), backend.asarray(x), backend.asarray(lengths)
    logits, cache = backend.forward(native, xn, ln)
    grads = backend.to_numpy(backend.backward(native, cache, backend.asarray(dlogits)))
    assert set(grads) == set(impls.param_names(cell))
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(logits), ref_logits, **tol)
    same = dict(rtol=1e-6) if dtype == np.float32 else dict(rtol=1e-13)  # one loop, ring or not
    np.testing.assert_allclose(backend.to_numpy(backend.predict(native, xn, ln)),
                               backend.to_numpy(logits), **same)
    for key in ref_grads:
        np.testing.assert_allclose(grads[key], ref_grads[key], **tol, err_msg=key)


# (num_layers, bidirectional) run by the per-layer kernels; (1, False) runs the fused ones
STRUCTURES = [(2, False), (1, True), (2, True)]
VARIABLE_LENGTHS = np.array([5, 3, 1, 4])  # B = 4, T = 5: a length-1 and a full sequence


def _check_structured(dtype, cell, num_layers, bidirectional, lengths, rate):
    """Forward and backward (with dropout masks when rate > 0) and predict (no dropout)
    against the float64 oracle, and a second backward of the same cache equal to the first."""
    pytest.importorskip("torch")  # the oracle
    backend = _backend()
    assert backend.structure_reason(num_layers, bidirectional) is None
    assert backend.dropout_reason() is None
    params, x, dlogits = seeded_inputs(4, 5, 3, 6, 2, seed=2, dtype=dtype, cell=cell,
                                       num_layers=num_layers, bidirectional=bidirectional)
    masks = impls.masks_for(params, x.shape, rate, seed=5)
    tol = impls.tolerance("numba", dtype)
    errors = compare(backend, params, x, dlogits, lengths, dropout=masks)
    assert set(errors) == {"logits", *impls.param_names(cell, num_layers, bidirectional)}
    assert max(errors.values()) < tol, errors
    if rate == 0:
        errors = compare(backend, params, x, dlogits, lengths, grads=False)
        assert errors["logits"] < tol, errors
    native, ln = backend.from_numpy(params), None if lengths is None else backend.asarray(lengths)
    _, cache = backend.forward(native, backend.asarray(x), ln, backend.as_dropout(masks))
    first, second = (backend.to_numpy(backend.backward(native, cache, backend.asarray(dlogits)))
                     for _ in range(2))
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


# slow: tests/test_structure.py checks this backend x cell x structure x lengths x dropout
# against the oracle in CI; this matrix adds every dtype (--run-slow, tox -e full)
@pytest.mark.slow
@pytest.mark.parametrize("rate", [0.0, 0.3], ids=["no_dropout", "dropout"])
@pytest.mark.parametrize("lengths", [None, VARIABLE_LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("num_layers, bidirectional", STRUCTURES,
                         ids=[f"{n}layer{'_bi' if bi else ''}" for n, bi in STRUCTURES])
@pytest.mark.parametrize("cell", impls.CELLS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_stacked_and_bidirectional_match_the_oracle(dtype, cell, num_layers, bidirectional,
                                                    lengths, rate):
    _check_structured(dtype, cell, num_layers, bidirectional, lengths, rate)


@pytest.mark.parametrize("cell", impls.CELLS)
def test_dropout_on_a_plain_model_matches_the_oracle(cell):
    """Dropout on one layer, one direction (the head's mask only) takes the layered path."""
    _check_structured(np.float64, cell, 1, False, VARIABLE_LENGTHS, 0.3)


@pytest.mark.parametrize("cell", impls.CELLS)
@pytest.mark.parametrize("batch_size", [1, 12])
def test_stacked_blocks_and_blas_paths_agree_with_numpy(batch_size, cell, monkeypatch):
    """The layer kernels at batch 1 and 12 (BLAS recurrent matmuls; the oracle cases run
    the loop nest at 4) and in 1 KiB blocks: the input gradient and the gradient from the
    layer above cross block boundaries. numpy's numbers, forward and backward."""
    from impls import numba_backend as nb
    monkeypatch.setattr(nb, "BLOCK_BYTES", 1024)
    backend, reference = _backend(), impls.get("numpy")
    params, x, dlogits = seeded_inputs(batch_size, 20, 3, 6, 2, seed=6, cell=cell,
                                       num_layers=2, bidirectional=True)
    lengths = np.arange(batch_size) * 7 % 20 + 1
    masks = impls.masks_for(params, x.shape, 0.3, seed=7)
    ref_logits, ref_cache = reference.forward(params, x, lengths, masks)
    ref_grads = reference.backward(params, ref_cache, dlogits)
    native = backend.from_numpy(params)
    logits, cache = backend.forward(native, backend.asarray(x), backend.asarray(lengths),
                                    backend.as_dropout(masks))
    grads = backend.to_numpy(backend.backward(native, cache, backend.asarray(dlogits)))
    np.testing.assert_allclose(backend.to_numpy(logits), ref_logits, rtol=1e-10, atol=1e-12)
    assert set(grads) == set(ref_grads)
    for key in ref_grads:
        np.testing.assert_allclose(grads[key], ref_grads[key], rtol=1e-10, atol=1e-12, err_msg=key)


def test_layer_kernels_compile_one_signature_per_dtype():
    """Absent optional arrays (no head gradient below the last layer, nothing from above
    the last, no input gradient for the first, no x to gather) are empty arrays, not None:
    every layer of every structure runs one compiled signature per dtype of each layer
    kernel, around the recurrence the fused kernels compile (keep: True or False)."""
    backend = _backend()
    from numba import types
    from impls import numba_backend as nb
    for num_layers, bidirectional in [(1, False), *STRUCTURES]:
        params, x, dlogits = seeded_inputs(2, 3, 3, 4, 2, seed=0, dtype=np.float32, cell="gru",
                                           num_layers=num_layers, bidirectional=bidirectional)
        native = backend.from_numpy(params)
        backend.predict(native, backend.asarray(x))
        _, cache = backend.forward(native, backend.asarray(x))
        backend.backward(native, cache, backend.asarray(dlogits))
    states_kernel, bptt_kernel, _ = nb._LAYER_KERNELS["gru"]
    for kernel, most in ((states_kernel, 1), (bptt_kernel, 1), (nb._gru_recurrence, 2)):
        weight_dtypes = [signature[1].dtype for signature in kernel.signatures]  # a weight's
        assert weight_dtypes.count(types.float32) <= most, (kernel, kernel.signatures)


def test_backward_refuses_params_of_another_forward():
    """The kernels index by the cache's shapes unchecked: params of another cell, structure
    or hidden size than the forward's are refused, not read past their ends."""
    backend = _backend()
    params, x, dlogits = seeded_inputs(2, 3, 3, 4, 2, seed=0, cell="lstm")
    _, cache = backend.forward(backend.from_numpy(params), backend.asarray(x))
    for other in (seeded_inputs(2, 3, 3, 4, 2, seed=0, cell="gru")[0],
                  seeded_inputs(2, 3, 3, 5, 2, seed=0, cell="lstm")[0],
                  seeded_inputs(2, 3, 3, 4, 2, seed=0, cell="lstm", bidirectional=True)[0]):
        with pytest.raises(ValueError, match="not those of this cache"):
            backend.backward(backend.from_numpy(other), cache, backend.asarray(dlogits))
    stacked = seeded_inputs(2, 3, 3, 4, 2, seed=0, cell="lstm", num_layers=2)[0]
    _, cache = backend.forward(backend.from_numpy(stacked), backend.asarray(x))
    with pytest.raises(ValueError, match=r"not those of this cache's forward \(lstm, 2 layer"):
        backend.backward(backend.from_numpy(params), cache, backend.asarray(dlogits))


def test_native_arrays_and_device():
    backend = _backend()
    params = backend.from_numpy(impls.init_params(3, 4, 2, seed=0))
    x = backend.asarray(np.zeros((2, 3, 3), np.float32))
    logits = backend.predict(params, x)
    assert backend._is_native(logits) and not backend._is_native(np.asarray(logits))
    with pytest.raises(ValueError, match="cpu only"):
        impls.get("numba", "cuda")


_FIRST_CALL = textwrap.dedent("""
    import time, numpy as np, impls
    backend = impls.get("numba")
    params = backend.from_numpy(impls.init_params(3, 4, 2, seed=0))
    x = backend.asarray(np.zeros((2, 3, 3), np.float32))
    start = time.perf_counter()
    backend.predict(params, x)
    print(time.perf_counter() - start)
""")


def test_compile_cache_makes_a_second_process_start_fast(tmp_path):
    """cache=True: the first process compiles (what compile_s records), a second one with
    the same NUMBA_CACHE_DIR loads machine code. Measured here 4.5 s vs 0.15 s; asserting
    3x leaves room for a loaded CI machine."""
    pytest.importorskip("numba")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}

    def first_call_s():
        out = subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, cwd=ROOT,
                             capture_output=True, text=True, check=True)
        return float(out.stdout.split()[-1])

    cold, warm = first_call_s(), first_call_s()
    print(f"first predict: cold {cold:.2f} s, cached {warm:.3f} s")
    assert any(tmp_path.rglob("*.nbi")), "numba wrote no cache index"
    assert warm * 3 < cold, f"first call: cold {cold:.2f} s, cached {warm:.2f} s"


def test_unavailable_without_numba():
    code = textwrap.dedent("""
        import sys; sys.modules["numba"] = None  # import numba now raises ImportError
        import impls
        from impls import numba_backend  # the module itself imports without numba
        try:
            numba_backend.create()
        except impls.Unavailable as exc:
            print("REASON", exc)
        status = impls.available()["numba"]
        assert not status and "numba" in status.reason, status
        assert impls.available()["numpy"]
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert re.search(r"REASON numba is not installed .*pip install numba", out.stdout), out.stdout


def _backend():
    try:
        return impls.get("numba")
    except impls.Unavailable as exc:
        pytest.skip(f"numba unavailable: {exc}")
