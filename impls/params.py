"""The canonical parameter set and its one seeded initialiser.

Every backend takes and returns parameters as a dict keyed by these names, with these
shapes, whatever its native layout is (PyTorch's two biases, an ONNX initializer, ...).
"""
from __future__ import annotations

import numpy as np

# The cell's parameter names and shapes, as functions of (input_size I, hidden_size H,
# num_classes C). Keyed by cell so LSTM/GRU can be added without changing the contract:
# a backend declares the cells it runs, and the validation reads shapes from here.
CELLS: dict[str, dict[str, callable]] = {
    "rnn_tanh": {
        "W_xh": lambda I, H, C: (H, I),
        "W_hh": lambda I, H, C: (H, H),
        "b_h": lambda I, H, C: (H,),
        "W_hy": lambda I, H, C: (C, H),
        "b_y": lambda I, H, C: (C,),
    },
}
DEFAULT_CELL = "rnn_tanh"
PARAM_NAMES: tuple[str, ...] = tuple(CELLS[DEFAULT_CELL])
# Weight matrices (decayed by L2 regularisation); the rest are biases.
WEIGHT_NAMES: tuple[str, ...] = ("W_xh", "W_hh", "W_hy")


def param_shapes(input_size: int, hidden_size: int, num_classes: int,
                 cell: str = DEFAULT_CELL) -> dict[str, tuple[int, ...]]:
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; known: {', '.join(CELLS)}")
    for label, value in (("input_size", input_size), ("hidden_size", hidden_size),
                         ("num_classes", num_classes)):
        if int(value) != value or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    return {name: shape(input_size, hidden_size, num_classes)
            for name, shape in CELLS[cell].items()}


def init_params(input_size: int, hidden_size: int, num_classes: int, *, seed: int,
                dtype=np.float32, cell: str = DEFAULT_CELL) -> dict[str, np.ndarray]:
    """PyTorch's default initialisation, seeded: every entry ~ U(-1/sqrt(H), 1/sqrt(H)).

    That is what nn.RNN does for all its weights and biases, and what nn.Linear's
    kaiming-uniform(a=sqrt(5)) reduces to for a layer with fan_in = H, so a user who
    knows PyTorch gets the distribution they expect. Values are drawn in float64 and
    then cast, so the float32 and float64 parameter sets of one seed are the same
    numbers up to rounding (which is what makes cross-dtype comparisons meaningful).
    """
    shapes = param_shapes(input_size, hidden_size, num_classes, cell)
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(hidden_size)
    return {name: rng.uniform(-bound, bound, size=shape).astype(dtype)
            for name, shape in shapes.items()}


def infer_sizes(params: dict, cell: str = DEFAULT_CELL) -> tuple[int, int, int]:
    """(input_size, hidden_size, num_classes) read off a canonical parameter dict."""
    hidden_size, input_size = tuple(params["W_xh"].shape)
    num_classes = tuple(params["W_hy"].shape)[0]
    return int(input_size), int(hidden_size), int(num_classes)


def check_params(params: dict, cell: str = DEFAULT_CELL) -> None:
    """Raise ValueError unless `params` has exactly the cell's names with consistent shapes."""
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict keyed by {PARAM_NAMES}, got {type(params).__name__}")
    expected_names = set(CELLS[cell])
    if set(params) != expected_names:
        missing = sorted(expected_names - set(params))
        extra = sorted(set(params) - expected_names)
        raise ValueError(f"params must have exactly the keys {sorted(expected_names)}; "
                         f"missing {missing}, unexpected {extra}")
    if len(tuple(params["W_xh"].shape)) != 2 or len(tuple(params["W_hy"].shape)) != 2:
        raise ValueError("W_xh and W_hy must be 2-D")
    expected = param_shapes(*infer_sizes(params, cell), cell)
    for name, shape in expected.items():
        got = tuple(params[name].shape)
        if got != shape:
            raise ValueError(f"param {name} has shape {got}, expected {shape} "
                             f"(from W_xh {tuple(params['W_xh'].shape)} and W_hy {tuple(params['W_hy'].shape)})")


def check_finite(params: dict) -> None:
    """ValueError naming the first parameter that holds NaN or inf (weights that blew up in
    training would otherwise evaluate to a silent chance-level accuracy)."""
    for name, value in params.items():
        value = np.asarray(value)
        if value.dtype.kind not in "fiu":
            raise ValueError(f"param {name} must hold real numbers, got dtype {value.dtype}")
        if not np.isfinite(value).all():
            bad = int((~np.isfinite(value)).sum())
            raise ValueError(f"param {name} holds {bad} NaN/inf value(s); parameters must be finite")
