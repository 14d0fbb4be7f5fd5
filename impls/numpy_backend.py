"""`numpy`: the reference implementation, vectorised over the batch, full BPTT.

The math lives in impls.reference (xp-generic, shared with CuPy); this module only binds
it to NumPy. A from-scratch RNN as the source article builds it, minus its shortcuts: the
input projection is one GEMM for all steps, the weight gradients GEMMs over all steps.
"""
from __future__ import annotations

import numpy as np

from . import reference
from .base import Backend


class NumpyBackend(Backend):
    name = "numpy"
    device = "cpu"
    supports_backward = True

    def _from_numpy_array(self, arr):
        return arr.copy()  # like every backend: never alias the caller's memory

    def _to_numpy_array(self, arr):
        return np.asarray(arr)

    def _is_native(self, arr):
        return isinstance(arr, np.ndarray)

    def _dtype_of(self, arr):
        return arr.dtype

    def _all_finite(self, arr):
        return bool(np.isfinite(arr).all())

    def _forward(self, params, x, lengths):
        return reference.forward(np, params, x, lengths)

    def _predict(self, params, x, lengths):
        return reference.forward(np, params, x, lengths, keep_states=False)[0]

    def _backward(self, params, cache, dlogits):
        return reference.backward(np, params, cache, dlogits)


def create(device: str | None = None) -> NumpyBackend:
    if device not in (None, "cpu"):
        raise ValueError(f"numpy runs on the cpu only, not {device!r}")
    return NumpyBackend()
