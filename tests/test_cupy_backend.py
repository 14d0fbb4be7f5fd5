"""The cupy backend. Without a GPU (this project's machines, CI): how it reports being
unavailable, the math of its fused kernels (the same functions run on NumPy arrays), and
its wiring, run against a NumPy stand-in for cupy. On a GPU (tox -e gpu): what only a
GPU can show. Conformance against the float64 oracle is tests/test_conformance.py's job,
which picks `cupy` up from the registry like every backend."""
import importlib
import sys
import time
import types

import numpy as np
import pytest

import impls
from bench.oracle import seeded_inputs
from impls import reference

MODULE = "impls.cupy_backend"
GPU_SKIP = "no CUDA GPU: cupy backend tests run on a GPU machine via tox -e gpu"
NO_DEVICE = "cudaErrorNoDevice: no CUDA-capable device is detected"


@pytest.fixture
def fresh_module():
    """impls.cupy_backend imported anew against whatever `cupy` a test puts in sys.modules,
    and the previous module (the real one, on a GPU machine) put back afterwards."""
    saved = sys.modules.pop(MODULE, None)
    saved_attr = getattr(impls, "cupy_backend", None)
    yield
    sys.modules.pop(MODULE, None)
    if saved is not None:
        sys.modules[MODULE] = saved
    if saved_attr is None:
        vars(impls).pop("cupy_backend", None)
    else:
        impls.cupy_backend = saved_attr


def numpy_stand_in(available=True, devices=1):
    """A `cupy` module made of NumPy: exactly the API surface the backend uses, nothing
    more, so the wiring runs here. `fused` logs each call of a fused kernel."""
    fake, cuda = types.ModuleType("cupy"), types.ModuleType("cupy.cuda")
    fake.__version__, fake.cuda, fake.fused = "0.0-stand-in", cuda, []
    fake.ndarray, fake.asnumpy, fake.isfinite, fake.tanh = np.ndarray, np.asarray, np.isfinite, np.tanh
    fake.array = lambda a: np.array(a)  # a copy, like cupy.array

    def fuse(kernel_name):
        def decorate(f):
            return lambda *args: (fake.fused.append(kernel_name), f(*args))[1]
        return decorate
    fake.fuse = fuse

    class Device:
        syncs = 0

        def __init__(self, device_id=0):
            self.id = device_id

        def __enter__(self):
            return self

        def __exit__(self, *_):
            return None

        def synchronize(self):
            Device.syncs += 1

    class MemoryHook:  # the pool never calls it: NumPy has no pool
        def __enter__(self):
            return self

        def __exit__(self, *_):
            return None

    class MemoryPool:
        def malloc(self, size):
            raise AssertionError("the stand-in allocates nothing on a device")

    def get_device_count():
        if not available:
            raise RuntimeError(NO_DEVICE)
        return devices

    cuda.is_available = lambda: available
    cuda.runtime = types.SimpleNamespace(getDeviceCount=get_device_count)
    cuda.Device, cuda.MemoryHook, cuda.MemoryPool = Device, MemoryHook, MemoryPool
    cuda.get_allocator = lambda pool=MemoryPool(): pool.malloc
    return fake


# --- without a GPU ------------------------------------------------------------------------

def test_missing_cupy_says_which_package_to_install(monkeypatch, fresh_module):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    with pytest.raises(impls.Unavailable, match=r"cupy-cuda12x.*\.\[gpu\]"):
        impls.get("cupy")


def test_cupy_without_a_gpu_is_unavailable_and_says_so(monkeypatch, fresh_module):
    monkeypatch.setitem(sys.modules, "cupy", numpy_stand_in(available=False))
    with pytest.raises(impls.Unavailable) as info:
        impls.get("cupy")
    message = str(info.value)
    assert "no CUDA GPU" in message and NO_DEVICE in message, message


@pytest.mark.parametrize("device", ["cpu", "gpu", "cuda:", "cuda:x", "CUDA:0", "cuda:0:1", 0])
def test_device_strings_are_checked_before_looking_for_a_gpu(monkeypatch, fresh_module, device):
    monkeypatch.setitem(sys.modules, "cupy", numpy_stand_in(available=False))
    with pytest.raises(ValueError, match="'cuda' or 'cuda:N'"):
        impls.get("cupy", device)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_formulas_equal_the_reference_kernels(monkeypatch, fresh_module, dtype):
    """cupy.fuse compiles exactly these functions (given cupy.tanh); given np.tanh they
    are NumPy code, and must agree bitwise with reference.Kernels' defaults."""
    monkeypatch.setitem(sys.modules, "cupy", numpy_stand_in())
    tanh_step, tanh_backward = importlib.import_module(MODULE).formulas(np.tanh)
    rng = np.random.default_rng(0)
    a, b, dh = (rng.standard_normal((7, 5)).astype(dtype) for _ in range(3))
    h = np.tanh(3 * a)  # includes values near +-1, where 1 - h*h cancels
    step, back = tanh_step(a, b), tanh_backward(dh, h)
    assert step.dtype == dtype and back.dtype == dtype
    np.testing.assert_array_equal(step, reference.Kernels.tanh_step(np, a, b))
    np.testing.assert_array_equal(back, reference.Kernels.tanh_backward(np, dh, h))


def test_peak_hook_counts_net_bytes_of_its_device(monkeypatch, fresh_module):
    monkeypatch.setitem(sys.modules, "cupy", numpy_stand_in())
    hook = importlib.import_module(MODULE)._peak_hook_class()(0)
    malloc = lambda dev, size, ptr=1: hook.malloc_postprocess(  # noqa: E731
        device_id=dev, size=size, mem_size=size, mem_ptr=ptr, pmem_id=ptr)
    free = lambda dev, size: hook.free_postprocess(  # noqa: E731
        device_id=dev, mem_size=size, mem_ptr=1, pmem_id=1)
    malloc(0, 1024)
    malloc(0, 512)
    free(0, 1024)  # peak 1536, now 512
    malloc(1, 10**9)  # another GPU's: ignored
    malloc(0, 0, ptr=0)  # a failed malloc: ignored
    free(0, 2048)  # memory allocated before the hook was entered: net, may go below 0
    malloc(0, 512)
    assert (hook.peak, hook.current) == (1536, -1024)


@pytest.mark.parametrize("lengths", [None, [6, 2, 4]], ids=["full", "lengths"])
def test_backend_wiring_on_a_numpy_stand_in(monkeypatch, fresh_module, lengths):
    """The whole backend (device parsing, conversions, fused kernels plugged into the
    reference math, sync, peak memory) with cupy played by NumPy: bitwise the numpy
    backend's results, because it is the same math."""
    fake = numpy_stand_in(devices=2)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    module = importlib.import_module(MODULE)
    monkeypatch.setattr(module, "_namespace", lambda: np)  # array_api_compat.cupy needs cupy
    backend, numpy_backend = impls.get("cupy", "cuda:1"), impls.get("numpy")
    assert (backend.device, impls.get("cupy").device, impls.get("cupy", "cuda").device) == \
        ("cuda:1", "cuda:0", "cuda:0")
    with pytest.raises(impls.Unavailable, match="cupy sees 2 CUDA GPU"):
        impls.get("cupy", "cuda:2")

    params, x, dlogits = seeded_inputs(3, 6, 4, 5, 3, seed=1)
    lengths = None if lengths is None else np.array(lengths)
    native, xn = backend.from_numpy(params), backend.asarray(x)
    assert all(native[k] is not params[k] for k in params)  # (x: numpy is "native" here)
    ln = None if lengths is None else backend.asarray(lengths)
    logits, cache = backend.forward(native, xn, ln)
    grads = backend.backward(native, cache, backend.asarray(dlogits))
    want_logits, want_cache = numpy_backend.forward(params, x, lengths)
    want_grads = numpy_backend.backward(params, want_cache, dlogits)
    np.testing.assert_array_equal(backend.to_numpy(logits), want_logits)
    for key in want_grads:
        np.testing.assert_array_equal(backend.to_numpy(grads)[key], want_grads[key])
    np.testing.assert_array_equal(backend.to_numpy(backend.predict(native, xn, ln)), want_logits)
    assert {"rnn_tanh_step", "rnn_tanh_backward"} <= set(fake.fused)

    syncs = fake.cuda.Device.syncs
    backend.sync()
    assert fake.cuda.Device.syncs == syncs + 1
    assert backend.peak_memory_bytes(lambda: backend.predict(native, xn, ln)) == 0


# --- on a GPU -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gpu():
    try:
        backend = impls.get("cupy")
    except impls.Unavailable as exc:
        pytest.skip(f"{GPU_SKIP} ({exc})")
    import cupy
    return backend, cupy


def _queue_gpu_work(cp, milliseconds):
    """Queue about `milliseconds` of matmuls on the current stream (calibrated on this GPU)
    and return an event recorded after them: not done until they all ran."""
    a = cp.ones((4096, 4096), dtype=cp.float32)
    a @ a  # cuBLAS handle and workspace: not part of the calibration
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    a @ a
    end.record()
    end.synchronize()
    per_matmul = max(cp.cuda.get_elapsed_time(start, end), 1e-3)
    for _ in range(int(milliseconds / per_matmul) + 1):
        a @ a
    done = cp.cuda.Event()
    done.record()
    return done


def _native_case(backend, shape, dtype, lengths=None, seed=0):
    params, x, dlogits = seeded_inputs(*shape, seed=seed, dtype=dtype)
    native = (backend.from_numpy(params), backend.asarray(x), backend.asarray(dlogits),
              None if lengths is None else backend.asarray(np.asarray(lengths)))
    return (params, x, dlogits), native


def test_gpu_round_trip_and_placement(gpu):
    backend, cp = gpu
    for dtype in (np.float32, np.float64):
        (params, x, _), (native, xn, _, ln) = _native_case(backend, (4, 5, 3, 6, 2), dtype, [5, 1, 3, 2])
        for key, value in native.items():
            assert isinstance(value, cp.ndarray) and value.device.id == backend.device_id
            assert value.dtype == dtype
            np.testing.assert_array_equal(backend.to_numpy(value), params[key])
        assert backend.asarray(xn) is xn and ln.dtype == np.int64
        x[...] = 0  # the device copy does not alias the host array
        assert backend.to_numpy(xn).any()


@pytest.mark.parametrize("lengths", [None, [9, 1, 4, 9, 6]], ids=["full", "lengths"])
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 2e-5)], ids=["float64", "float32"])
def test_gpu_matches_numpy_and_keeps_dtype_and_device(gpu, dtype, rtol, lengths):
    backend, cp = gpu
    (params, x, dlogits), (native, xn, dn, ln) = _native_case(backend, (5, 9, 3, 12, 4), dtype, lengths)
    logits, cache = backend.forward(native, xn, ln)
    grads = backend.backward(native, cache, dn)
    predicted = backend.predict(native, xn, ln)
    # Host transfers happen only in to_numpy: everything a call returns is on the GPU.
    device_arrays = [logits, predicted, *grads.values(),
                     *(v for k, v in cache.items() if k != "batch_size" and v is not None)]
    assert all(isinstance(a, cp.ndarray) and a.dtype == dtype for a in device_arrays)
    backend.sync()
    numpy_backend = impls.get("numpy")
    host_lengths = None if lengths is None else np.array(lengths)
    want_logits, want_cache = numpy_backend.forward(params, x, host_lengths)
    want = {"logits": want_logits, "predict": want_logits,
            **numpy_backend.backward(params, want_cache, dlogits)}
    got = {"logits": logits, "predict": predicted, **grads}
    for key, value in want.items():
        scale = max(np.abs(value).max(), 1.0)
        np.testing.assert_allclose(cp.asnumpy(got[key]), value, rtol=rtol, atol=rtol * scale, err_msg=key)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_fused_kernels_equal_the_unfused_defaults(gpu, dtype):
    backend, cp = gpu
    rng = np.random.default_rng(1)
    a, b, dh = (cp.asarray(rng.standard_normal((33, 65)).astype(dtype)) for _ in range(3))
    h = cp.tanh(3 * a)
    xp, fused, plain = backend.xp, backend.kernels, reference.Kernels
    tol = 8 * np.finfo(dtype).eps  # FMA contraction inside a fused kernel moves an ulp or two
    for got, want in [(fused.tanh_step(xp, a, b), plain.tanh_step(xp, a, b)),
                      (fused.tanh_backward(xp, dh, h), plain.tanh_backward(xp, dh, h))]:
        assert isinstance(got, cp.ndarray) and got.dtype == dtype
        np.testing.assert_allclose(cp.asnumpy(got), cp.asnumpy(want), rtol=tol, atol=tol * 4)


def test_gpu_sync_waits_for_queued_work(gpu):
    backend, cp = gpu
    (params, x, _), (native, xn, _, _) = _native_case(backend, (4, 8, 3, 16, 2), np.float32)
    with cp.cuda.Device(backend.device_id):
        bound = backend.bind(native, xn)  # checked before the busy work is queued
        busy = _queue_gpu_work(cp, 300)
        logits, _ = bound.forward()  # queued behind the busy work
        backend.sync()
        assert busy.done
    want = impls.get("numpy").forward(params, x)[0]
    np.testing.assert_allclose(cp.asnumpy(logits), want, rtol=2e-5, atol=2e-5)


def test_gpu_forward_and_backward_never_wait_for_the_device(gpu):
    """No host transfer and no sync inside the hooks: with seconds of work queued ahead,
    forward + backward + predict return while that work still runs. (A device -> host
    copy would have to wait for it.) Inputs are bound first: the public forward's
    validation reads one bool back (its finiteness check), on purpose."""
    backend, cp = gpu
    _, (native, xn, dn, ln) = _native_case(backend, (8, 32, 16, 64, 10), np.float32, [32, 5] * 4)
    bound = backend.bind(native, xn, ln)

    def run():
        logits, cache = bound.forward()
        return bound.backward(cache, dn), bound.predict()

    run()  # warm: compiles the fused kernels, fills the memory pool with these sizes
    backend.sync()
    start = time.perf_counter()
    run()
    backend.sync()
    host_ms = 1e3 * (time.perf_counter() - start)
    with cp.cuda.Device(backend.device_id):
        busy = _queue_gpu_work(cp, max(300.0, 20 * host_ms))
        run()
        returned_early = not busy.done
        backend.sync()
    assert returned_early, "forward/backward/predict waited for the GPU: a host transfer or sync inside"


def test_gpu_peak_memory_grows_with_seq_len(gpu):
    backend, _ = gpu
    batch, hidden, itemsize = 16, 256, 4

    def peaks(seq_len):
        _, (native, xn, dn, _) = _native_case(backend, (batch, seq_len, 32, hidden, 10), np.float32)

        def train():
            logits, cache = backend.forward(native, xn)
            return backend.backward(native, cache, dn)
        train()  # warm
        backend.sync()
        return (backend.peak_memory_bytes(train),
                backend.peak_memory_bytes(lambda: backend.predict(native, xn)))

    (short, _), (long, long_predict) = peaks(16), peaks(256)
    assert isinstance(long, int) and long > short > 0
    # training keeps every hidden state for backward: (T+1, B, H), and more per extra step
    assert long >= (256 + 1) * batch * hidden * itemsize
    assert long - short >= (256 - 16) * batch * hidden * itemsize
    assert long_predict < long  # inference keeps only the running state


def test_gpu_device_strings_and_placement(gpu):
    backend, cp = gpu
    count = cp.cuda.runtime.getDeviceCount()
    assert impls.get("cupy", "cuda:0").device == "cuda:0"
    with cp.cuda.Device(count - 1):
        assert impls.get("cupy", "cuda").device == f"cuda:{count - 1}"
    with pytest.raises(impls.Unavailable, match="cupy sees"):
        impls.get("cupy", f"cuda:{count}")
    with pytest.raises(ValueError):
        impls.get("cupy", "cpu")
    if count > 1:  # arrays land on the backend's GPU whatever the current device is
        other = impls.get("cupy", "cuda:1")
        _, (native, xn, _, _) = _native_case(other, (2, 3, 2, 4, 2), np.float32)
        with cp.cuda.Device(0):
            assert xn.device.id == 1 and other.predict(native, xn).device.id == 1


def test_gpu_rejects_non_finite_input(gpu):
    backend, _ = gpu
    (_, x, _), (native, _, _, _) = _native_case(backend, (2, 3, 2, 4, 2), np.float32)
    x[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        backend.forward(native, backend.asarray(x))
