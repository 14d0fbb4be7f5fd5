"""The contract every implementation shares, and the input validation written once for all.

A backend is functional: `forward(params, x) -> (logits, cache)` and
`backward(params, cache, dlogits) -> grads`, params and grads being dicts keyed by the
canonical names (impls.params). It keeps no state between calls, so a timer around a
call sees exactly that call's work. Subclasses implement the underscored hooks; the
public methods validate first, so no backend re-writes (or forgets) a check.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dropout import mask_shapes
from .params import DEFAULT_CELL, check_finite, check_params, infer_sizes, structure_of


class Unavailable(RuntimeError):
    """This implementation cannot run here; the message says why (package, GPU, ...)."""


class BackwardUnsupported(NotImplementedError):
    """Raised by `backward` of a forward-only backend."""


class Backend:
    name: str = "base"
    device: str = "cpu"
    supports_backward: bool = True
    dtypes: tuple[np.dtype, ...] = (np.dtype(np.float32), np.dtype(np.float64))
    cells: tuple[str, ...] = (DEFAULT_CELL,)
    # Runs models of more than one layer and/or both directions (impls.params' names).
    structured: bool = False
    # Takes dropout masks in forward (impls.dropout); predict never drops.
    supports_dropout: bool = False
    # Where the computation is written, for `rnnbench profile` (declared, never guessed):
    # "reference": impls.reference on the namespace `xp` with `kernels` (its parts are
    # timed one by one); "torch": torch operators (torch.profiler sees them); "native":
    # its own compiled kernels or runtime (cProfile only).
    math: str = "native"
    # Set by the harness before a case runs: the thread count a backend that creates its
    # own sessions or pools (ONNX Runtime) must use, and a folder for per-shape artefacts
    # (exported models) that outlive the process. None: the library default, a temp dir.
    threads: int | None = None
    cache_dir: str | None = None

    # --- hooks a backend implements -------------------------------------------------
    def _from_numpy_array(self, arr: np.ndarray):
        raise NotImplementedError

    def _to_numpy_array(self, arr) -> np.ndarray:
        raise NotImplementedError

    def _is_native(self, arr) -> bool:
        raise NotImplementedError

    def _dtype_of(self, arr) -> np.dtype:
        """The numpy dtype equivalent to a native array's dtype."""
        raise NotImplementedError

    def _all_finite(self, arr) -> bool:
        raise NotImplementedError

    def _forward(self, params, x, lengths, dropout=None):
        """dropout: None, or native masks (impls.dropout) when supports_dropout."""
        raise NotImplementedError

    def _backward(self, params, cache, dlogits):
        raise BackwardUnsupported(
            f"backend {self.name!r} is forward-only (supports_backward=False): it has no "
            "backward pass; train with a backward-capable backend and evaluate here")

    def _predict(self, params, x, lengths):
        return self._forward(params, x, lengths)[0]

    # --- conversions (done once, outside any timed region) --------------------------
    def from_numpy(self, params: dict) -> dict:
        """Canonical numpy dict -> this backend's native arrays, same keys. The values must
        be finite: NaN/inf weights are refused with the parameter's name."""
        self._check_cell(check_params(params))
        check_finite(params)
        dtypes = {np.asarray(p).dtype for p in params.values()}
        if len(dtypes) != 1:
            raise ValueError(f"params mix dtypes {sorted(map(str, dtypes))}; use one dtype")
        self._check_dtype(dtypes.pop(), "params")
        return {k: self._from_numpy_array(np.ascontiguousarray(v)) for k, v in params.items()}

    def asarray(self, x):
        """A host array (inputs, labels, lengths) -> this backend's native array."""
        if self._is_native(x):
            return x
        return self._from_numpy_array(np.ascontiguousarray(x))

    def to_numpy(self, obj):
        """Native array, or a dict/tuple/list of them -> the same structure of numpy arrays."""
        if isinstance(obj, dict):
            return {k: self.to_numpy(v) for k, v in obj.items()}
        if isinstance(obj, (tuple, list)):
            return type(obj)(self.to_numpy(v) for v in obj)
        if isinstance(obj, np.ndarray):
            return obj
        return self._to_numpy_array(obj)

    def sync(self) -> None:
        """Wait for asynchronous work (a device stream). A no-op on the CPU."""

    def peak_memory_bytes(self, fn) -> int | None:
        """Peak device memory `fn()` allocated, for backends whose arrays live on a device
        (GPU memory is invisible to the process's resident set). None: use host RSS."""
        return None

    def counters(self) -> dict:
        """Running counts of one-off events (compiles, graph breaks), cheap and free of side
        effects: the harness reports each row's increase. Default: none."""
        return {}

    def diagnostics(self, params: dict, x) -> dict:
        """Facts about how this backend ran (x, params) that belong in a results row:
        e.g. graph_breaks/recompiles of a compiler, quantisation coverage of a model.
        Keys must be diagnostics columns of the results (bench.record.DIAGNOSTIC_COLUMNS;
        the harness reports any other key as an error); default: nothing."""
        return {}

    # --- the contract ---------------------------------------------------------------
    def as_dropout(self, masks: dict | None) -> dict | None:
        """Host dropout masks (impls.dropout_masks) -> native arrays, once per step."""
        return None if masks is None else {k: self.asarray(v) for k, v in masks.items()}

    def bind(self, params: dict, x, lengths=None, dropout=None) -> "Bound":
        """Check (params, x, lengths) once, as forward does, and return them bound: the
        Bound's predict/forward/backward then run without checking again. That is what a
        benchmark times (validation is a finiteness scan, and a device sync on a GPU: at
        batch 1 it was 10-30 % of a call) and what a loop over the same inputs runs."""
        self.check_input(params, x, lengths, dropout)
        return Bound(self, params, x, lengths, dropout)

    def forward(self, params: dict, x, lengths=None, dropout=None):
        """logits (batch, num_classes) from the hidden state at each sequence's last step.

        `lengths` (optional, integer, shape (batch,)): sequence i is x[i, :lengths[i]];
        the classifier reads h at step lengths[i], so right-padding never changes a result.
        `dropout` (optional): native masks (backend.as_dropout(impls.dropout_masks(...))),
        for a training forward; backward then uses the same masks (kept in the cache).
        """
        self.check_input(params, x, lengths, dropout)
        return self._forward_with(params, x, lengths, dropout)

    def _forward_with(self, params, x, lengths, dropout):
        # a backend without dropout keeps the three-argument hook
        if dropout is None:
            return self._forward(params, x, lengths)
        return self._forward(params, x, lengths, dropout)

    def predict(self, params: dict, x, lengths=None):
        """Inference only: logits, no cache, no graph (what a deployed model runs)."""
        self.check_input(params, x, lengths)
        return self._predict(params, x, lengths)

    def backward(self, params: dict, cache, dlogits) -> dict:
        """Gradients of sum(logits * dlogits) w.r.t. every parameter, canonical keys."""
        if not self.supports_backward:
            return self._backward(params, cache, dlogits)
        if not self._is_native(dlogits):
            raise ValueError(f"dlogits must be a {self.name} native array (use backend.asarray), "
                             f"got {type(dlogits).__name__}")
        expected = (cache_batch_size(cache), infer_sizes(params)[2])  # (B, C)
        if tuple(dlogits.shape) != expected:
            raise ValueError(f"dlogits must have shape (batch, num_classes) = {expected}, "
                             f"got {tuple(dlogits.shape)}")
        params_dtype = self._dtype_of(params["W_xh"])
        if self._dtype_of(dlogits) != params_dtype:
            raise ValueError(f"dlogits has dtype {self._dtype_of(dlogits)} but params are {params_dtype}")
        return self._backward(params, cache, dlogits)

    # --- validation, shared by every backend ----------------------------------------
    def cell_reason(self, cell: str) -> str | None:
        """Why this backend does not run `cell` (for a skipped row or a refusal), or None."""
        if cell in self.cells:
            return None
        return f"{self.name} runs the {', '.join(self.cells)} cell(s), not {cell}"

    def structure_reason(self, num_layers: int, bidirectional: bool) -> str | None:
        """Why this backend does not run a model of this depth and direction count, or None."""
        if self.structured or (num_layers == 1 and not bidirectional):
            return None
        return (f"{self.name} runs one-layer unidirectional models only, not num_layers={num_layers}"
                f"{', bidirectional' if bidirectional else ''}")

    def dropout_reason(self) -> str | None:
        """Why this backend takes no dropout masks, or None."""
        if self.supports_dropout:
            return None
        if not self.supports_backward:
            return f"{self.name} is forward-only: dropout is a training-time operation"
        return f"{self.name} does not implement dropout"

    def _check_structure(self, params: dict) -> None:
        reason = self.structure_reason(*structure_of(params))
        if reason:
            raise ValueError(f"backend {reason}; see `rnnbench list`")

    def _check_cell(self, cell: str) -> None:
        reason = self.cell_reason(cell)
        if reason:
            raise ValueError(f"backend {reason}; implementations that run {cell}: see `rnnbench list`")

    def _check_dtype(self, dtype, what: str) -> None:
        if np.dtype(dtype) not in self.dtypes:
            runs = ", ".join(str(d) for d in self.dtypes)
            raise ValueError(f"{what} have dtype {dtype}; backend {self.name!r} runs {runs}")

    def check_input(self, params: dict, x, lengths=None, dropout=None) -> None:
        """ValueError, saying what was expected and what came, unless x can be run as is."""
        self._check_cell(check_params(params))
        self._check_structure(params)
        input_size = infer_sizes(params)[0]
        if not self._is_native(x):
            raise ValueError(f"x must be a {self.name} native array (convert once with "
                             f"backend.asarray), got {type(x).__name__}")
        shape = tuple(x.shape)
        if len(shape) != 3:
            raise ValueError(f"x must be 3-D (batch, seq_len, input_size={input_size}), "
                             f"got {len(shape)}-D shape {shape}")
        batch_size, seq_len, x_input_size = shape
        if batch_size == 0:
            raise ValueError(f"x has an empty batch: shape {shape}, need batch >= 1")
        if seq_len == 0:
            raise ValueError(f"x has seq_len 0: shape {shape}, need at least one time step")
        if x_input_size != input_size:
            raise ValueError(f"x has input_size {x_input_size} (shape {shape}) but W_xh expects "
                             f"input_size {input_size}")
        x_dtype, params_dtype = self._dtype_of(x), self._dtype_of(params["W_xh"])
        if x_dtype != params_dtype:  # first: the params' dtype is one this backend runs
            raise ValueError(f"x has dtype {x_dtype} but params are {params_dtype}; "
                             "convert one of them (dtypes are never mixed silently)")
        self._check_dtype(x_dtype, "inputs")
        if not self._all_finite(x):
            raise ValueError("x contains NaN or inf; inputs must be finite")
        if lengths is not None:
            self._check_lengths(lengths, batch_size, seq_len)
        if dropout is not None:
            self._check_dropout(params, dropout, batch_size, seq_len, params_dtype)

    def _check_dropout(self, params, dropout, batch_size: int, seq_len: int, dtype) -> None:
        reason = self.dropout_reason()
        if reason:
            raise ValueError(f"backend {reason}; pass dropout=None")
        if not isinstance(dropout, dict):
            raise ValueError(f"dropout must be a dict of masks (impls.dropout_masks), got {type(dropout).__name__}")
        expected = mask_shapes(batch_size, seq_len, infer_sizes(params)[1], *structure_of(params))
        if set(dropout) != set(expected):
            raise ValueError(f"dropout masks must have the keys {sorted(expected)} for this model, "
                             f"got {sorted(dropout)}")
        for key, shape in expected.items():
            mask = dropout[key]
            if not self._is_native(mask):
                raise ValueError(f"dropout mask {key} must be a {self.name} native array (backend.as_dropout)")
            if tuple(mask.shape) != shape or self._dtype_of(mask) != dtype:
                raise ValueError(f"dropout mask {key} must be {shape} {dtype}, got "
                                 f"{tuple(mask.shape)} {self._dtype_of(mask)}")

    def _check_lengths(self, lengths, batch_size: int, seq_len: int) -> None:
        if not self._is_native(lengths):
            raise ValueError(f"lengths must be a {self.name} native array (backend.asarray)")
        if tuple(lengths.shape) != (batch_size,):
            raise ValueError(f"lengths must have shape (batch,) = ({batch_size},), "
                             f"got {tuple(lengths.shape)}")
        if self._dtype_of(lengths).kind not in "iu":
            raise ValueError(f"lengths must be integers, got dtype {self._dtype_of(lengths)}")
        host = self._to_numpy_array(lengths)
        if host.min() < 1 or host.max() > seq_len:
            raise ValueError(f"lengths must lie in [1, seq_len={seq_len}], "
                             f"got min {host.min()} max {host.max()}")


@dataclass(frozen=True, eq=False)  # compared by identity: it holds arrays
class Bound:
    """Inputs checked once by `Backend.bind`, and the calls that run on them unchecked.

    `params` passed to forward/backward replaces the bound ones for that call: it is for
    an optimiser's update of them (same names, shapes and dtype: what bench.train.optim
    returns), as a timed train step makes. Anything else belongs in backend.forward,
    which checks every call. `dlogits` must be a native (batch, num_classes) array in the
    params' dtype, as the loss on this bound forward's logits gives."""
    backend: Backend
    params: dict
    x: object
    lengths: object = None
    dropout: object = None  # native masks of a training forward; predict never drops

    def predict(self):
        """Logits only: no cache, no graph (backend.predict without its checks)."""
        return self.backend._predict(self.params, self.x, self.lengths)

    def forward(self, params: dict | None = None):
        """(logits, cache), as backend.forward without its checks."""
        return self.backend._forward_with(self.params if params is None else params, self.x,
                                          self.lengths, self.dropout)

    def backward(self, cache, dlogits, params: dict | None = None) -> dict:
        """Gradients, canonical keys, as backend.backward without its checks."""
        return self.backend._backward(self.params if params is None else params, cache, dlogits)


class HostArrayBackend(Backend):
    """A CPU backend whose native arrays are numpy memory: np.ndarray itself, or a marker
    subclass (`native_type`) so that a plain host array is never taken silently (the
    contract's rule) while numpy code (losses, optimisers) still runs on it. A new CPU
    backend subclasses this and writes its math (_forward, _backward, _predict)."""
    device = "cpu"
    native_type: type = np.ndarray

    def _from_numpy_array(self, arr):
        copy = arr.copy()  # like every backend: never alias the caller's memory
        return copy if self.native_type is np.ndarray else copy.view(self.native_type)

    def _to_numpy_array(self, arr):
        return np.asarray(arr)  # a base-class view of the same memory

    def _is_native(self, arr):
        return isinstance(arr, self.native_type)

    def _dtype_of(self, arr):
        return arr.dtype

    def _all_finite(self, arr):
        return bool(np.isfinite(np.asarray(arr)).all())


def require_cpu(name: str, device) -> None:
    """ValueError unless `device` is None or "cpu": a CPU-only backend asked for another
    device is a wrong request on every machine, not a missing package."""
    if device not in (None, "cpu"):
        raise ValueError(f"{name} runs on the cpu only, not {device!r}")


def cache_batch_size(cache) -> int:
    """Every backend's cache records the batch size it was made for (see each _forward)."""
    return int(cache["batch_size"])
