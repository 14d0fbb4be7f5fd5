"""`torch`: PyTorch eager, the article's nn.RNN(batch_first=True) + nn.Linear on the final state.

Bias mapping: nn.RNN and nn.LSTM keep two biases, b_ih and b_hh, that only ever appear
as a sum. The canonical b_h is that sum: loading sets b_ih = b_h and b_hh = 0; reading a
module back gives b_h = b_ih + b_hh (`to_module` / `from_module`, round trip tested). The
gradient of b_h is the gradient of b_ih. nn.GRU's n gate multiplies its hidden bias by the
reset gate, so that one is kept apart: b_ih = b_h = [b_ir + b_hr, b_iz + b_hz, b_in] and
b_hh = [0, 0, b_hn]; reading back gives b_h = b_ih + [b_hr, b_hz, 0] and b_hn = b_hh's last H.

Forward calls torch.rnn_tanh / torch.lstm / torch.gru, the ATen kernels nn.RNN / nn.LSTM /
nn.GRU.forward themselves call, with the canonical tensors. Routing a params dict through the module with torch.func.functional_call
computes the same thing but was measured at +37 us a call here (B=1, T=8: +50 %), a cost
no nn.RNN user pays; the test suite checks this path against a real nn.RNN + nn.Linear.
Backward is autograd on the graph kept in `cache`.

Structure (impls.params): the same ATen kernels take num_layers and bidirectional, with the
weights of every layer-direction in one flat list (PyTorch's order). A variable-length batch
is packed (pack_padded_sequence, enforce_sorted=False) and run through the kernels' packed
overload, as nn.LSTM runs a PackedSequence: that is what makes the reverse direction read
each sequence backwards from its own last step, and h_n each direction's final state. The
kernels' own dropout draws from torch's RNG, so with our masks (impls.dropout) the layers
run one call each and the masks are multiplied in between. On a CUDA device, packing copies
the lengths to the host (a sync), as it does for every nn.LSTM user of packed sequences.

Packing, not reversal by index (each direction a one-direction kernel call on its input
reversed within length, as impls.torch_loop composes): it is what an nn.LSTM user runs, and
one call takes every layer and both directions (cuDNN fuses them). Measured on a 2-core
CPU, float32, 2 layers, bidirectional, variable lengths, B/T/H = 1/8/32, 16/32/64, 64/32/128:
rnn_tanh and gru forward 1.3-2x faster packed, training 1.3-1.7x faster at B=1 and B=64,
equal at B=16; lstm within 1.4x either way, except training at B=16 (2x slower packed:
oneDNN's fused LSTM layer takes padded batches only, so the packed kernel runs per-step ops,
as nn.LSTM on a PackedSequence does).
A full-length batch needs no packing (a flip is the reversal) and runs the padded kernel.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence

from .base import Backend, Unavailable
from .params import cell_fast, cell_of, directions, is_plain, layer_params, structure_of, suffix

_TO_NUMPY_DTYPE = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64,
                   torch.int8: np.int8, torch.int16: np.int16, torch.int32: np.int32,
                   torch.int64: np.int64, torch.uint8: np.uint8, torch.bool: np.bool_}


MODULES = {"rnn_tanh": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


class RNNClassifier(torch.nn.Module):
    """The source article's model, verbatim in structure; `cell` picks nn.RNN, nn.LSTM or
    nn.GRU, of `num_layers` layers and one or both directions. `dropout` is nn.RNN's between
    layers and the article's nn.Dropout before the head: where impls.dropout's masks apply
    (the units differ: these draw from torch's RNG).

    The head reads h_n, each direction's final state of the last layer, forward first. Not
    out[:, -1]: for the reverse direction that is its state after one step (step T alone),
    and with padding the forward direction's state past the sequence's end."""

    def __init__(self, input_size: int, hidden_size: int, num_classes: int, cell: str = "rnn_tanh",
                 num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0):
        super().__init__()
        self.cell = cell
        self.rnn = MODULES[cell](input_size, hidden_size, num_layers=num_layers, batch_first=True,
                                 bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = torch.nn.Dropout(dropout)
        self.fc = torch.nn.Linear(len(directions(bidirectional)) * hidden_size, num_classes)

    def forward(self, x, lengths=None):
        """x (B, T, I); `lengths` (B,): sequence i is x[i, :lengths[i]] (packed, any order)."""
        if lengths is not None:
            x = pack_padded_sequence(x, torch.as_tensor(lengths).cpu(), batch_first=True,
                                     enforce_sorted=False)
        _, h_n = self.rnn(x)  # h_n (L*D, B, H); h_0 (and c_0) default to zeros
        if self.cell == "lstm":
            h_n = h_n[0]  # (h_n, c_n)
        if self.rnn.bidirectional:
            h_last = torch.cat((h_n[-2], h_n[-1]), 1)  # (B, 2H): the last layer's two directions
        else:
            h_last = h_n[-1]  # (B, H)
        return self.fc(self.dropout(h_last))  # (B, C)


def module_suffix(layer: int, reverse: bool) -> str:
    """PyTorch's name ending of a layer-direction's weights: _l0, _l1_reverse, ..."""
    return f"_l{layer}" + ("_reverse" if reverse else "")


def to_module(params: dict, device="cpu", dropout: float = 0.0) -> RNNClassifier:
    """The canonical numpy dict as the article's nn.Module, of the params' cell and
    structure (bias mapping in the module docstring, per layer-direction)."""
    cell = cell_of(params)
    num_layers, bidirectional = structure_of(params)
    num_classes = params["W_hy"].shape[0]
    hidden_size = params["W_hh"].shape[1]
    model = RNNClassifier(params["W_xh"].shape[1], hidden_size, num_classes, cell, num_layers,
                          bidirectional, dropout)
    dtype = torch.from_numpy(np.asarray(params["W_xh"])).dtype
    model.to(device=device, dtype=dtype)
    state = {"fc.weight": params["W_hy"], "fc.bias": params["b_y"]}
    for layer in range(num_layers):
        for reverse in directions(bidirectional):
            p, end = layer_params(params, layer, reverse), module_suffix(layer, reverse)
            b_hh = np.zeros_like(p["b_h"])
            if cell == "gru":
                b_hh[2 * hidden_size:] = p["b_hn"]
            state.update({f"rnn.weight_ih{end}": p["W_xh"], f"rnn.weight_hh{end}": p["W_hh"],
                          f"rnn.bias_ih{end}": p["b_h"], f"rnn.bias_hh{end}": b_hh})
    model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state.items()})
    return model


def from_module(model: RNNClassifier) -> dict:
    """An RNNClassifier's weights as the canonical numpy dict of its cell and structure."""
    rnn, fc = model.rnn, model.fc
    as_np = lambda t: t.detach().cpu().numpy().copy()  # noqa: E731
    params = {"W_hy": as_np(fc.weight), "b_y": as_np(fc.bias)}
    hidden_size = rnn.hidden_size
    for layer in range(rnn.num_layers):
        for reverse in directions(rnn.bidirectional):
            end, ours = module_suffix(layer, reverse), suffix(layer, reverse)
            b_ih, b_hh = getattr(rnn, f"bias_ih{end}"), getattr(rnn, f"bias_hh{end}")
            params.update({f"W_xh{ours}": as_np(getattr(rnn, f"weight_ih{end}")),
                           f"W_hh{ours}": as_np(getattr(rnn, f"weight_hh{end}"))})
            if isinstance(rnn, torch.nn.GRU):
                merged = torch.cat([b_hh[:2 * hidden_size], torch.zeros_like(b_hh[2 * hidden_size:])])
                params.update({f"b_h{ours}": as_np(b_ih + merged),
                               f"b_hn{ours}": as_np(b_hh[2 * hidden_size:])})
            else:
                params[f"b_h{ours}"] = as_np(b_ih + b_hh)
    return params


def _weights(cell: str, p: dict) -> list:
    """One layer-direction's weights in the kernels' order, [w_ih, w_hh, b_ih, b_hh], from
    params under the single-layer names: b_ih = b_h, b_hh = 0 (gru: [0, 0, b_hn])."""
    if cell == "gru":
        b_hh = torch.cat([p["b_hn"].new_zeros(2 * p["b_hn"].shape[0]), p["b_hn"]])
    else:
        b_hh = torch.zeros_like(p["b_h"])
    return [p["W_xh"], p["W_hh"], p["b_h"], b_hh]


KERNELS = {"rnn_tanh": torch.rnn_tanh, "lstm": torch.lstm, "gru": torch.gru}


def _run_kernel(cell: str, inputs, batch_sizes, h0, weights: list, num_layers: int, bidirectional: bool):
    """The ATen kernel nn.RNN / nn.LSTM / nn.GRU.forward calls -> (outputs, h_n (L*D, B, H)).
    batch_sizes None: `inputs` is a padded batch-first (B, T, In) batch; else the data
    (N, In) of a PackedSequence and its batch_sizes (the packed overload)."""
    hx = [h0, torch.zeros_like(h0)] if cell == "lstm" else h0  # lstm: (h_0, c_0)
    # after the weights: has_biases, num_layers, dropout, train, bidirectional[, batch_first]
    if batch_sizes is None:
        result = KERNELS[cell](inputs, hx, weights, True, num_layers, 0.0, False, bidirectional, True)
    else:
        result = KERNELS[cell](inputs, batch_sizes, hx, weights, True, num_layers, 0.0, False,
                               bidirectional)
    return result[0], result[1]  # lstm's third is c_n


class TorchBackend(Backend):
    name = "torch"
    math = "torch"  # torch operators: rnnbench profile reads them with torch.profiler
    cells = ("rnn_tanh", "lstm", "gru")
    structured = True
    supports_dropout = True

    def __init__(self, device: str = "cpu"):
        self.torch_device = torch.device(device)
        self.device = str(self.torch_device)

    def _from_numpy_array(self, arr):
        return torch.tensor(arr, device=self.torch_device)  # a copy: never aliases caller memory

    def _to_numpy_array(self, arr):
        return arr.detach().cpu().numpy()

    def _is_native(self, arr):
        return isinstance(arr, torch.Tensor)

    def _dtype_of(self, arr):
        if arr.dtype not in _TO_NUMPY_DTYPE:
            raise ValueError(f"dtype {arr.dtype} has no numpy equivalent; backend {self.name!r} "
                             f"runs {', '.join(map(str, self.dtypes))}")
        return np.dtype(_TO_NUMPY_DTYPE[arr.dtype])

    def _all_finite(self, arr):
        return bool(torch.isfinite(arr).all())

    def sync(self):
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize(self.torch_device)

    def peak_memory_bytes(self, fn) -> int | None:
        if self.torch_device.type != "cuda":
            return None  # host memory: the harness reads the process's RSS instead
        torch.cuda.synchronize(self.torch_device)
        torch.cuda.reset_peak_memory_stats(self.torch_device)
        baseline = torch.cuda.memory_allocated(self.torch_device)
        result = fn()
        torch.cuda.synchronize(self.torch_device)
        del result
        return torch.cuda.max_memory_allocated(self.torch_device) - baseline

    def _logits(self, p, x, lengths, dropout=None):
        if is_plain(p):
            h_last = self._plain_final_state(p, x, lengths)  # (B, H)
        else:
            h_last = self._stack_final_states(p, x, lengths, dropout)  # (B, D*H)
        if dropout is not None:
            h_last = h_last * dropout["head"]
        return F.linear(h_last, p["W_hy"], p["b_y"])  # (B, C)

    def _plain_final_state(self, p, x, lengths):
        """One layer, one direction: h at each sequence's last step, read off the padded
        output (no packing: the forward direction never sees the padding before it)."""
        batch_size = x.shape[0]
        h0 = x.new_zeros((1, batch_size, p["W_hh"].shape[1]))
        cell = cell_fast(p)
        out, _ = _run_kernel(cell, x, None, h0, _weights(cell, p), 1, False)  # (B, T, H)
        if lengths is None:
            return out[:, -1, :]
        return out[torch.arange(batch_size, device=x.device), lengths - 1, :]  # (B, H)

    def _stack_final_states(self, p, x, lengths, dropout):
        """Any structure: each direction's final state of the last layer, forward first
        (B, D*H), from h_n of the kernels run on the packed batch when lengths are given."""
        cell, (num_layers, bidirectional) = cell_fast(p), structure_of(p)
        num_directions = len(directions(bidirectional))
        batch_size, hidden_size = x.shape[0], p["W_hh"].shape[1]
        inputs, batch_sizes, packed = x, None, None
        if lengths is not None:
            host_lengths = lengths.cpu()
            pack = lambda t: pack_padded_sequence(t, host_lengths, batch_first=True,  # noqa: E731
                                                  enforce_sorted=False)
            packed = pack(x)
            inputs, batch_sizes = packed.data, packed.batch_sizes  # (N, I): N = sum(lengths)
        # Without masks every layer goes in one call; with them, a call per layer, the mask between.
        spans = [range(num_layers)] if dropout is None else [range(k, k + 1) for k in range(num_layers)]
        for span in spans:
            weights = [w for layer in span for reverse in directions(bidirectional)
                       for w in _weights(cell, layer_params(p, layer, reverse))]
            h0 = x.new_zeros((len(span) * num_directions, batch_size, hidden_size))
            inputs, h_n = _run_kernel(cell, inputs, batch_sizes, h0, weights, len(span), bidirectional)
            if dropout is not None and span[-1] < num_layers - 1:
                mask = dropout[f"l{span[-1]}"]  # (B, T, D*H), batch-first like x
                inputs = inputs * (mask if packed is None else pack(mask).data)  # (B, T, D*H) or (N, D*H)
        finals = h_n[-num_directions:]  # (D, B, H): the last layer's directions
        if packed is not None:
            finals = finals.index_select(1, packed.unsorted_indices)  # packing sorted the batch
        return finals.transpose(0, 1).reshape(batch_size, num_directions * hidden_size)  # (B, D*H)

    def _forward(self, params, x, lengths, dropout=None):
        # Fresh leaves each call: the graph belongs to this call's cache alone (the masks
        # are in that graph; the cache keeps them too, for whoever reads it).
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        logits = self._logits(leaves, x, lengths, dropout)
        return logits, {"batch_size": x.shape[0], "leaves": leaves, "logits": logits, "dropout": dropout}

    def _predict(self, params, x, lengths):
        with torch.inference_mode():
            return self._logits(params, x, lengths)

    def _backward(self, params, cache, dlogits):
        names = list(cache["leaves"])
        # retain_graph: backward on one cache may be called again (the harness times it).
        grads = torch.autograd.grad(cache["logits"], [cache["leaves"][k] for k in names], dlogits,
                                    retain_graph=True)
        return dict(zip(names, grads))


def checked_device(device: str | None, default: str = "cpu") -> str:
    """`device` (default `default`) for any torch backend, or Unavailable saying why a
    CUDA device cannot be used here (a CPU build, no GPU, no driver)."""
    device = device or default
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise Unavailable(f"torch {torch.__version__} sees no CUDA GPU "
                          f"(torch.version.cuda={torch.version.cuda})")
    return device


def create(device: str | None = None) -> TorchBackend:
    return TorchBackend(checked_device(device))


def create_cuda(device: str | None = None) -> TorchBackend:
    """The same backend on a CUDA GPU (cuDNN's RNN kernel): registered as torch_cuda."""
    backend = TorchBackend(checked_device(device, "cuda"))
    full_float32_on_cuda()
    return backend


def full_float32_on_cuda() -> None:
    """float32 means float32: PyTorch lets cuDNN's RNN and cuBLAS use TF32 (10-bit
    mantissa) by default on Ampere and later, which would compare a faster, less exact
    computation with everyone else's float32 (and break the oracle tolerance)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
