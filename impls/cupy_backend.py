"""`cupy`: the NumPy reference math (impls.reference) on a CUDA GPU through CuPy.

One implementation, not a copy: forward and backward are reference.forward/backward with
xp = array_api_compat.cupy (CuPy 13's own namespace lacks array-API names the reference
uses, e.g. permute_dims and astype; the compat wrapper adds them and returns plain
cupy.ndarray). What differs from NumPy is only the two element-wise steps of the
recurrence, each fused into one kernel with cupy.fuse: add + tanh per forward step
(2 launches -> 1) and dh * (1 - h*h) per backward step (3 launches -> 1). On a GPU a
small launch costs more than its arithmetic, and these run once per time step.

Every call runs inside `with cupy.cuda.Device(n)`, so arrays and kernels land on the
backend's GPU whatever the caller's current device is. Host <-> device copies happen only
in from_numpy / asarray (cupy.array) and to_numpy (cupy.asnumpy). The shared validation
in base.Backend does synchronise: `_all_finite` returns a Python bool (one scalar
device -> host read) and a `lengths` check reads lengths back; the `_forward`/`_backward`
hooks themselves only enqueue work (tests/test_cupy_backend.py checks that on a GPU).

`peak_memory_bytes(fn)`: the net bytes `fn()` took from CuPy's memory pool at its peak,
counted by a cupy.cuda.MemoryHook (see PeakHook below).
"""
from __future__ import annotations

import contextlib
import functools
import gc
import re

import numpy as np

try:
    import cupy
except ImportError:
    raise  # the registry turns this into "pip install cupy-cuda12x"
except Exception as exc:  # installed but broken (e.g. a CUDA library it cannot load)
    raise ImportError(f"cupy is installed but failed to import: {type(exc).__name__}: {exc}") from exc

from . import reference
from .base import Backend, Unavailable

_DEVICE = re.compile(r"cuda(?::(\d+))?")


def formulas(tanh):
    """The fused steps as plain functions of arrays, given a tanh ufunc. cupy.fuse traces
    them with cupy.tanh into one kernel each; with np.tanh the very same functions run on
    NumPy arrays, which is how a machine without a GPU tests their math. They must stay
    exactly reference.Kernels' formulas (same operations, same order: same rounding)."""
    def tanh_step(pre_t, recurrent):
        return tanh(pre_t + recurrent)

    def tanh_backward(dh, h):
        return dh * (1 - h * h)  # Python 1 is a weak scalar: float32 stays float32

    return tanh_step, tanh_backward


@functools.cache
def fused_kernels():
    """reference.Kernels with both steps fused. Built once per process: cupy.fuse caches
    its compiled kernels (per dtype and ndim) on the decorated object, so sharing it
    across backends avoids recompiling."""
    step, backward = formulas(cupy.tanh)
    fused_step = cupy.fuse(kernel_name="rnn_tanh_step")(step)
    fused_backward = cupy.fuse(kernel_name="rnn_tanh_backward")(backward)

    class FusedKernels(reference.Kernels):
        @staticmethod
        def tanh_step(xp, pre_t, recurrent):
            return fused_step(pre_t, recurrent)

        @staticmethod
        def tanh_backward(xp, dh, h):
            return fused_backward(dh, h)

    return FusedKernels


def _namespace():
    import array_api_compat.cupy as xp  # imported late: it runs `from cupy import *`
    return xp


@functools.cache
def _peak_hook_class():
    class PeakHook(cupy.cuda.MemoryHook):
        """Net bytes this thread took from the memory pool of one GPU since the hook was
        entered, and the maximum of that. CuPy's pool keeps no peak counter, and polling
        used_bytes() misses what is freed between polls; the pool calls these hooks on
        every malloc and free, synchronously, in the allocating thread. Sizes are the
        pool's 512-byte-rounded chunk sizes, what the GPU really holds for each array.
        Frees of memory allocated before entry count too (net, like torch's
        max_memory_allocated minus the baseline), so a train step that replaces its
        params is not charged twice."""

        def __init__(self, device_id: int):
            self.name = f"rnnbench-peak-{id(self)}"  # hooks are registered by name
            self.device_id = device_id
            self.current = self.peak = 0

        def malloc_postprocess(self, **kw):  # device_id, size, mem_size, mem_ptr, pmem_id
            if kw["device_id"] == self.device_id and kw["mem_ptr"]:  # mem_ptr 0: failed
                self.current += kw["mem_size"]
                self.peak = max(self.peak, self.current)

        def free_postprocess(self, **kw):  # device_id, mem_size, mem_ptr, pmem_id
            if kw["device_id"] == self.device_id:
                self.current -= kw["mem_size"]

    return PeakHook


class CupyBackend(Backend):
    name = "cupy"
    supports_backward = True
    math = "reference"  # impls.reference on `xp` (CuPy through array-api-compat), `kernels` fused
    # every cell of impls.reference (the fused kernels are rnn_tanh's; lstm and gru run its
    # plain array-API code, which the array-api-strict test checks; not yet run on a GPU)
    cells = ("rnn_tanh", "lstm", "gru")
    structured = True  # impls.reference's stack: layers, directions, dropout
    supports_dropout = True

    def __init__(self, device_id: int):
        self.device_id = device_id
        self.device = f"cuda:{device_id}"
        self._cuda = cupy.cuda.Device(device_id)
        self.xp = _namespace()
        self.kernels = fused_kernels()

    def _from_numpy_array(self, arr):
        with self._cuda:
            return cupy.array(arr)  # host -> device copy: never aliases the caller's memory

    def _to_numpy_array(self, arr):
        return cupy.asnumpy(arr)  # device -> host, blocking (waits for the producing work)

    def _is_native(self, arr):
        return isinstance(arr, cupy.ndarray)

    def _dtype_of(self, arr):
        return np.dtype(arr.dtype)

    def _all_finite(self, arr):
        with self._cuda:
            return bool(cupy.isfinite(arr).all())  # reduced on the GPU; bool() syncs

    def _forward(self, params, x, lengths, dropout=None):
        with self._cuda:
            return reference.forward(self.xp, params, x, lengths, kernels=self.kernels,
                                     dropout=dropout)

    def _predict(self, params, x, lengths):
        with self._cuda:
            return reference.forward(self.xp, params, x, lengths, keep_states=False,
                                     kernels=self.kernels)[0]

    def _backward(self, params, cache, dlogits):
        with self._cuda:
            return reference.backward(self.xp, params, cache, dlogits, kernels=self.kernels)

    def sync(self) -> None:
        # The whole device, not one stream: work a caller queued on another stream of
        # this GPU must not leak into the next timed call either.
        self._cuda.synchronize()

    def peak_memory_bytes(self, fn) -> int:
        """Peak GPU memory `fn()` allocated, in bytes: the maximum over the call of the
        bytes it took from CuPy's pool net of those it returned (0 if it freed more than
        it took). The pool's cached free blocks are not counted, nor is memory a library
        allocates itself, outside CuPy's allocator (e.g. a cuBLAS workspace)."""
        hook = _peak_hook_class()(self.device_id)
        gc.collect()  # earlier garbage freed mid-call would offset fn's own allocations
        with self._cuda, self._pooled_allocator(), hook:
            result = fn()
            self.sync()
        del result
        return int(hook.peak)

    @staticmethod
    def _pooled_allocator():
        """Memory hooks fire only in a cupy.cuda.MemoryPool. The default allocator is one;
        if a caller swapped it (set_allocator), this call uses the default pool instead."""
        allocator = cupy.cuda.get_allocator()
        if isinstance(getattr(allocator, "__self__", None), cupy.cuda.MemoryPool):
            return contextlib.nullcontext()
        return cupy.cuda.using_allocator(cupy.get_default_memory_pool().malloc)


def _device_index(device) -> int | None:
    """None/"cuda" -> None (the current device), "cuda:N" -> N, anything else ValueError.
    Checked before looking for a GPU: a wrong string is wrong on every machine."""
    match = _DEVICE.fullmatch(device) if isinstance(device, str) else None
    if device is not None and match is None:
        raise ValueError(f"cupy runs on a CUDA GPU: device must be None, 'cuda' or 'cuda:N', "
                         f"not {device!r}")
    return None if match is None or match.group(1) is None else int(match.group(1))


def _no_gpu_detail() -> str:
    try:  # is_available() swallows the CUDA error; asking again recovers its text
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return f"getDeviceCount() = {count}"


def create(device: str | None = None) -> CupyBackend:
    index = _device_index(device)
    if not cupy.cuda.is_available():
        version = getattr(cupy, "__version__", "?")
        raise Unavailable(f"no CUDA GPU: cupy {version} is installed but cupy.cuda.is_available() "
                          f"is False ({_no_gpu_detail()}); the cupy backend needs an NVIDIA GPU "
                          "with a CUDA 12 driver")
    count = cupy.cuda.runtime.getDeviceCount()
    if index is None:
        index = cupy.cuda.Device().id  # the caller's current device, cuda:0 by default
    if index >= count:
        raise Unavailable(f"{device!r} asks for GPU {index} but cupy sees {count} CUDA GPU(s): "
                          f"cuda:0..cuda:{count - 1}")
    return CupyBackend(index)
