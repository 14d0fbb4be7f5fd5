"""The canonical parameter set and its one seeded initialiser.

Every backend takes and returns parameters as a dict keyed by these names, with these
shapes, whatever its native layout is (PyTorch's two biases, an ONNX initializer, ...).
"""
from __future__ import annotations

import numpy as np

# The cell's parameter names and shapes, as functions of (input_size I, hidden_size H,
# num_classes C). Gates are stacked along the rows in PyTorch's order — lstm: i, f, g, o;
# gru: r, z, n — so a canonical dict loads into nn.LSTM / nn.GRU as it is (see
# impls.torch_backend for the bias mapping). A backend declares the cells it runs.
def _head():
    return {"W_hy": lambda I, H, C: (C, H), "b_y": lambda I, H, C: (C,)}


CELLS: dict[str, dict[str, callable]] = {
    "rnn_tanh": {"W_xh": lambda I, H, C: (H, I), "W_hh": lambda I, H, C: (H, H),
                 "b_h": lambda I, H, C: (H,), **_head()},
    # b_h = b_ih + b_hh of every gate: they only ever appear as a sum
    "lstm": {"W_xh": lambda I, H, C: (4 * H, I), "W_hh": lambda I, H, C: (4 * H, H),
             "b_h": lambda I, H, C: (4 * H,), **_head()},
    # b_h = [b_ir + b_hr, b_iz + b_hz, b_in]; b_hn sits inside the reset product
    # n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn)) and cannot be merged
    "gru": {"W_xh": lambda I, H, C: (3 * H, I), "W_hh": lambda I, H, C: (3 * H, H),
            "b_h": lambda I, H, C: (3 * H,), "b_hn": lambda I, H, C: (H,), **_head()},
}
GATES = {"rnn_tanh": 1, "lstm": 4, "gru": 3}  # rows of W_hh over H
DEFAULT_CELL = "rnn_tanh"
PARAM_NAMES: tuple[str, ...] = tuple(CELLS[DEFAULT_CELL])  # the rnn_tanh cell's
# Weight matrices (decayed by L2 regularisation); the rest are biases.
WEIGHT_NAMES: tuple[str, ...] = ("W_xh", "W_hh", "W_hy")


def param_names(cell: str = DEFAULT_CELL) -> tuple[str, ...]:
    _known(cell)
    return tuple(CELLS[cell])


def _known(cell: str) -> None:
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; known: {', '.join(CELLS)}")


def param_shapes(input_size: int, hidden_size: int, num_classes: int,
                 cell: str = DEFAULT_CELL) -> dict[str, tuple[int, ...]]:
    _known(cell)
    for label, value in (("input_size", input_size), ("hidden_size", hidden_size),
                         ("num_classes", num_classes)):
        if int(value) != value or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    return {name: shape(input_size, hidden_size, num_classes)
            for name, shape in CELLS[cell].items()}


def init_params(input_size: int, hidden_size: int, num_classes: int, *, seed: int,
                dtype=np.float32, cell: str = DEFAULT_CELL) -> dict[str, np.ndarray]:
    """PyTorch's default initialisation, seeded: every entry ~ U(-1/sqrt(H), 1/sqrt(H)).

    That is what nn.RNN/nn.LSTM/nn.GRU do for all their weights and biases, and what
    nn.Linear's kaiming-uniform(a=sqrt(5)) reduces to for a layer with fan_in = H, so a
    user who knows PyTorch gets the distribution they expect. Values are drawn in float64
    and then cast, so the float32 and float64 parameter sets of one seed are the same
    numbers up to rounding (which is what makes cross-dtype comparisons meaningful).
    """
    shapes = param_shapes(input_size, hidden_size, num_classes, cell)
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(hidden_size)
    return {name: rng.uniform(-bound, bound, size=shape).astype(dtype)
            for name, shape in shapes.items()}


def _dims(params: dict, name: str, ndim: int) -> tuple[int, ...]:
    if name not in params:
        raise ValueError(f"params have no {name}; a canonical dict has {', '.join(PARAM_NAMES)} "
                         "(+ b_hn for gru)")
    shape = tuple(params[name].shape)
    if len(shape) != ndim or 0 in shape:
        raise ValueError(f"param {name} must be a non-empty {ndim}-D array, got shape {shape}")
    return shape


def cell_of(params: dict) -> str:
    """The cell a canonical dict is for: H from W_hy (C, H), then W_hh's rows over H (1: rnn_tanh,
    4: lstm, 3: gru, which alone has b_hn). ValueError naming both cells when the names of
    one come with the shapes of another."""
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict keyed by the canonical names, got {type(params).__name__}")
    hidden_size = _dims(params, "W_hy", 2)[1]
    rows = _dims(params, "W_hh", 2)[0]
    by_rows = {GATES[c] * hidden_size: c for c in CELLS}
    if rows not in by_rows:
        raise ValueError(f"W_hh has {rows} rows; with H={hidden_size} (from W_hy) a cell has H, 4H "
                         f"(lstm) or 3H (gru) rows")
    cell = by_rows[rows]
    if "b_hn" in params and cell != "gru":
        raise ValueError(f"params have b_hn, a gru parameter, but W_hh has {rows} = "
                         f"{GATES[cell]}H rows, the shape of {cell}: one cell's names with "
                         "another's shapes")
    if cell == "gru" and "b_hn" not in params:
        raise ValueError(f"W_hh has {rows} = 3H rows, the shape of gru, but there is no b_hn "
                         f"(gru's); names of {'rnn_tanh or lstm'} with gru's shapes")
    return cell


def cell_fast(params: dict) -> str:
    """The cell of params already checked by cell_of (bind, from_numpy), in two lookups:
    for the hot path of every timed call, where cell_of's full checks would be overhead."""
    if "b_hn" in params:
        return "gru"
    return "rnn_tanh" if params["W_hh"].shape[0] == params["W_hy"].shape[1] else "lstm"


def infer_sizes(params: dict) -> tuple[int, int, int]:
    """(input_size, hidden_size, num_classes) read off a canonical parameter dict."""
    num_classes, hidden_size = _dims(params, "W_hy", 2)
    input_size = _dims(params, "W_xh", 2)[1]
    return int(input_size), int(hidden_size), int(num_classes)


def check_params(params: dict, cell: str | None = None) -> str:
    """The params' cell (cell_of), after a ValueError unless `params` has exactly that
    cell's names with consistent shapes. `cell` given: params of another cell are refused."""
    found = cell_of(params)
    if cell is not None and found != cell:
        raise ValueError(f"params are for the {found} cell, not {cell}")
    expected_names = set(CELLS[found])
    if set(params) != expected_names:
        missing = sorted(expected_names - set(params))
        extra = sorted(set(params) - expected_names)
        raise ValueError(f"params must have exactly the keys {sorted(expected_names)} ({found}); "
                         f"missing {missing}, unexpected {extra}")
    expected = param_shapes(*infer_sizes(params), found)
    for name, shape in expected.items():
        got = tuple(params[name].shape)
        if got != shape:
            raise ValueError(f"param {name} has shape {got}, expected {shape} for {found} "
                             f"(from W_xh {tuple(params['W_xh'].shape)} and W_hy {tuple(params['W_hy'].shape)})")
    return found


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
