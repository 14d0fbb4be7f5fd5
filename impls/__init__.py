"""Interchangeable RNN-classifier implementations behind one functional contract.

    backend = impls.get("numpy")
    params = backend.from_numpy(impls.init_params(8, 64, 10, seed=0, dtype=np.float32))
    logits, cache = backend.forward(params, backend.asarray(x))
    grads = backend.backward(params, cache, dlogits)
    bound = backend.bind(params, x)   # checked once; bound.predict() etc. do not check again
"""
from .dropout import dropout_masks, mask_shapes, masks_for
from .base import Backend, BackwardUnsupported, Bound, HostArrayBackend, Unavailable
from .params import (CELLS, PARAM_NAMES, WEIGHT_NAMES, cell_of, check_finite, check_params,
                     infer_sizes, init_params, is_plain, is_weight, param_names, param_shapes,
                     structure_of)
from .registry import REGISTRY, Entry, Status, available, entry, get, names, tolerance

__all__ = ["CELLS", "dropout_masks", "mask_shapes", "masks_for", "cell_of", "param_names", "Backend", "BackwardUnsupported", "Bound", "Entry", "HostArrayBackend", "PARAM_NAMES", "REGISTRY", "Status",
           "Unavailable", "WEIGHT_NAMES", "available", "check_finite", "check_params", "entry", "get",
           "infer_sizes", "init_params", "is_plain", "is_weight", "structure_of", "names", "param_shapes", "tolerance"]
