"""`numpy`: the reference implementation, vectorised over the batch, full BPTT.

The math lives in impls.reference (xp-generic, shared with CuPy); this module only binds
it to NumPy. A from-scratch RNN as the source article builds it, minus its shortcuts: the
input projection is one GEMM for all steps, the weight gradients GEMMs over all steps.
"""
from __future__ import annotations

import numpy as np

from . import reference
from .base import HostArrayBackend, require_cpu


class NumpyBackend(HostArrayBackend):
    name = "numpy"
    supports_backward = True
    math = "reference"
    cells = ("rnn_tanh", "lstm", "gru")
    structured = True
    supports_dropout = True
    xp = np  # the namespace reference.* runs on (rnnbench profile times its parts on it)
    kernels = reference.Kernels

    def _forward(self, params, x, lengths, dropout=None):
        return reference.forward(self.xp, params, x, lengths, kernels=self.kernels, dropout=dropout)

    def _predict(self, params, x, lengths):
        return reference.forward(self.xp, params, x, lengths, keep_states=False,
                                 kernels=self.kernels)[0]

    def _backward(self, params, cache, dlogits):
        return reference.backward(self.xp, params, cache, dlogits, kernels=self.kernels)


def create(device: str | None = None) -> NumpyBackend:
    require_cpu("numpy", device)
    return NumpyBackend()
