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
RECURRENT_NAMES = {cell: tuple(n for n in names if n not in ("W_hy", "b_y"))
                   for cell, names in CELLS.items()}  # one layer-direction's


def is_weight(name: str) -> bool:
    """A weight matrix of any layer and direction (W_xh_l1_reverse ...): what L2 decays."""
    return name.split("_l")[0].split("_reverse")[0] in WEIGHT_NAMES


# --- structure: layers and directions, named as PyTorch names them ---------------------
# Layer 0 forward keeps the single-layer names; layer k >= 1 adds _l{k}; the reverse
# direction adds _reverse (W_xh_l1_reverse). Layer k >= 1 reads the concatenated outputs
# of both directions of layer k-1: W_xh_l{k} is (G*H, D*H). The head W_hy (C, D*H) reads
# each direction's final state of the last layer, forward first.

def suffix(layer: int, reverse: bool) -> str:
    return (f"_l{layer}" if layer else "") + ("_reverse" if reverse else "")


def directions(bidirectional: bool) -> tuple[bool, ...]:
    """The `reverse` flags of a layer's directions, forward first."""
    return (False, True) if bidirectional else (False,)


def param_names(cell: str = DEFAULT_CELL, num_layers: int = 1,
                bidirectional: bool = False) -> tuple[str, ...]:
    _known(cell)
    _check_structure(num_layers, bidirectional)
    names = [name + suffix(layer, reverse) for layer in range(num_layers)
             for reverse in directions(bidirectional) for name in RECURRENT_NAMES[cell]]
    return tuple(names) + ("W_hy", "b_y")


def _known(cell: str) -> None:
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; known: {', '.join(CELLS)}")


def _check_structure(num_layers, bidirectional) -> None:
    if isinstance(num_layers, bool) or int(num_layers) != num_layers or num_layers < 1:
        raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
    if not isinstance(bidirectional, (bool, np.bool_)):
        raise ValueError(f"bidirectional must be True or False, got {bidirectional!r}")


def param_shapes(input_size: int, hidden_size: int, num_classes: int,
                 cell: str = DEFAULT_CELL, num_layers: int = 1,
                 bidirectional: bool = False) -> dict[str, tuple[int, ...]]:
    _known(cell)
    _check_structure(num_layers, bidirectional)
    for label, value in (("input_size", input_size), ("hidden_size", hidden_size),
                         ("num_classes", num_classes)):
        if int(value) != value or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    num_directions = len(directions(bidirectional))
    shapes = {}
    for layer in range(num_layers):
        layer_input = input_size if layer == 0 else num_directions * hidden_size
        for reverse in directions(bidirectional):
            for name in RECURRENT_NAMES[cell]:
                shapes[name + suffix(layer, reverse)] = CELLS[cell][name](layer_input, hidden_size, num_classes)
    shapes["W_hy"] = (num_classes, num_directions * hidden_size)
    shapes["b_y"] = (num_classes,)
    return shapes


def init_params(input_size: int, hidden_size: int, num_classes: int, *, seed: int,
                dtype=np.float32, cell: str = DEFAULT_CELL, num_layers: int = 1,
                bidirectional: bool = False) -> dict[str, np.ndarray]:
    """PyTorch's default initialisation, seeded: every entry ~ U(-1/sqrt(H), 1/sqrt(H)).

    That is what nn.RNN/nn.LSTM/nn.GRU do for all their weights and biases (every layer
    and direction), and what nn.Linear's kaiming-uniform(a=sqrt(5)) reduces to for a layer
    with fan_in = H, so a user who knows PyTorch gets the distribution they expect (for a
    bidirectional head, fan_in is 2H: we keep 1/sqrt(H), the recurrent layers' bound). Values
    are drawn in float64 and then cast, so the float32 and float64 parameter sets of one seed
    are the same numbers up to rounding (which is what makes cross-dtype comparisons
    meaningful). Draws follow param_names' order, so a single-layer set is unchanged by the
    structure arguments existing.
    """
    shapes = param_shapes(input_size, hidden_size, num_classes, cell, num_layers, bidirectional)
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(hidden_size)
    return {name: rng.uniform(-bound, bound, size=shape).astype(dtype)
            for name, shape in shapes.items()}


def _dims(params: dict, name: str, ndim: int) -> tuple[int, ...]:
    if name not in params:
        raise ValueError(f"params have no {name}; a canonical dict has {', '.join(PARAM_NAMES)} "
                         "(+ b_hn for gru, + _l{k} / _reverse copies for more layers / directions)")
    shape = tuple(params[name].shape)
    if len(shape) != ndim or 0 in shape:
        raise ValueError(f"param {name} must be a non-empty {ndim}-D array, got shape {shape}")
    return shape


def _hidden_size(params: dict) -> int:
    """H from the head W_hy (C, D*H), D = 2 when a reverse direction's W_hh is there."""
    width = _dims(params, "W_hy", 2)[1]
    num_directions = 2 if "W_hh_reverse" in params else 1
    if width % num_directions:
        raise ValueError(f"W_hy has {width} columns: a bidirectional head reads 2H, an even number")
    return width // num_directions


def cell_of(params: dict) -> str:
    """The cell a canonical dict is for: H from W_hy (C, D*H), then W_hh's rows over H (1:
    rnn_tanh, 4: lstm, 3: gru, which alone has b_hn). ValueError naming both cells when the
    names of one come with the shapes of another."""
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict keyed by the canonical names, got {type(params).__name__}")
    hidden_size = _hidden_size(params)
    rows = _dims(params, "W_hh", 2)[0]
    by_rows = {GATES[c] * hidden_size: c for c in CELLS}
    if rows not in by_rows:
        raise ValueError(f"W_hh has {rows} rows; with H={hidden_size} (from W_hy) a cell has H, "
                         f"4H (lstm) or 3H (gru) rows")
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
    rows, hidden_size = params["W_hh"].shape
    return "rnn_tanh" if rows == hidden_size else "lstm"


def structure_of(params: dict) -> tuple[int, bool]:
    """(num_layers, bidirectional) read off the names: W_hh_l{k} for every layer k >= 1,
    W_hh_reverse for a second direction. Cheap (a scan of the keys): the hot path uses it."""
    bidirectional = "W_hh_reverse" in params
    num_layers = 1
    while f"W_hh_l{num_layers}" in params:
        num_layers += 1
    return num_layers, bidirectional


def is_plain(params: dict) -> bool:
    """One layer, one direction: the article's model (and every backend's fused fast path)."""
    return "W_hh_l1" not in params and "W_hh_reverse" not in params


def layer_params(params: dict, layer: int, reverse: bool) -> dict:
    """One layer-direction's recurrent params under the single-layer names (W_xh, W_hh,
    b_h[, b_hn]): what a per-layer kernel takes."""
    end = suffix(layer, reverse)
    return {name: params[name + end] for name in RECURRENT_NAMES[cell_fast(params)]}


def infer_sizes(params: dict) -> tuple[int, int, int]:
    """(input_size, hidden_size, num_classes) read off a canonical parameter dict; H is one
    direction's hidden size (W_hy's columns over the directions)."""
    num_classes = _dims(params, "W_hy", 2)[0]
    hidden_size = _hidden_size(params)
    input_size = _dims(params, "W_xh", 2)[1]
    return int(input_size), int(hidden_size), int(num_classes)


def check_params(params: dict, cell: str | None = None) -> str:
    """The params' cell (cell_of), after a ValueError unless `params` has exactly the names
    of that cell and of its structure (structure_of) with consistent shapes. `cell` given:
    params of another cell are refused."""
    found = cell_of(params)
    if cell is not None and found != cell:
        raise ValueError(f"params are for the {found} cell, not {cell}")
    num_layers, bidirectional = structure_of(params)
    expected_names = set(param_names(found, num_layers, bidirectional))
    if set(params) != expected_names:
        missing = sorted(expected_names - set(params))
        extra = sorted(set(params) - expected_names)
        raise ValueError(f"params must have exactly the keys of a {found} model with {num_layers} "
                         f"layer(s){', bidirectional' if bidirectional else ''}: missing {missing}, "
                         f"unexpected {extra}")
    expected = param_shapes(*infer_sizes(params), found, num_layers, bidirectional)
    for name, shape in expected.items():
        got = tuple(params[name].shape)
        if got != shape:
            raise ValueError(f"param {name} has shape {got}, expected {shape} for {found} with "
                             f"{num_layers} layer(s){', bidirectional' if bidirectional else ''} "
                             f"(from W_xh {tuple(params['W_xh'].shape)}, W_hh "
                             f"{tuple(params['W_hh'].shape)} and W_hy {tuple(params['W_hy'].shape)})")
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
