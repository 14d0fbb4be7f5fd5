"""Interchangeable RNN-classifier implementations behind one functional contract.

    backend = impls.get("numpy")
    params = backend.from_numpy(impls.init_params(8, 64, 10, seed=0, dtype=np.float32))
    logits, cache = backend.forward(params, backend.asarray(x))
    grads = backend.backward(params, cache, dlogits)
    bound = backend.bind(params, x)   # checked once; bound.predict() etc. do not check again
"""
from .base import Backend, BackwardUnsupported, Bound, HostArrayBackend, Unavailable
from .params import (CELLS, PARAM_NAMES, WEIGHT_NAMES, cell_of, check_finite, check_params,
                     infer_sizes, init_params, param_names, param_shapes)
from .registry import REGISTRY, Entry, Status, available, entry, get, names, tolerance

__all__ = ["CELLS", "cell_of", "param_names", "Backend", "BackwardUnsupported", "Bound", "Entry", "HostArrayBackend", "PARAM_NAMES", "REGISTRY", "Status",
           "Unavailable", "WEIGHT_NAMES", "available", "check_finite", "check_params", "entry", "get",
           "infer_sizes", "init_params", "names", "param_shapes", "tolerance"]
