"""`torch`: PyTorch eager, the article's nn.RNN(batch_first=True) + nn.Linear on the last step.

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
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .base import Backend, Unavailable
from .params import cell_fast

_TO_NUMPY_DTYPE = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64,
                   torch.int8: np.int8, torch.int16: np.int16, torch.int32: np.int32,
                   torch.int64: np.int64, torch.uint8: np.uint8, torch.bool: np.bool_}


MODULES = {"rnn_tanh": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


class RNNClassifier(torch.nn.Module):
    """The source article's model, verbatim in structure; `cell` picks nn.RNN, nn.LSTM or nn.GRU."""

    def __init__(self, input_size: int, hidden_size: int, num_classes: int, cell: str = "rnn_tanh"):
        super().__init__()
        self.cell = cell
        self.rnn = MODULES[cell](input_size, hidden_size, batch_first=True)
        self.fc = torch.nn.Linear(hidden_size, num_classes)

    def forward(self, x):
        out, _ = self.rnn(x)  # (B, T, H); h_0 (and c_0) default to zeros
        return self.fc(out[:, -1, :])  # (B, C)


def to_module(params: dict, device="cpu") -> RNNClassifier:
    """The canonical numpy dict as the article's nn.Module, of the params' cell (bias
    mapping in the module docstring)."""
    from .params import cell_of

    cell = cell_of(params)
    num_classes, hidden_size = params["W_hy"].shape
    model = RNNClassifier(params["W_xh"].shape[1], hidden_size, num_classes, cell)
    dtype = torch.from_numpy(np.asarray(params["W_xh"])).dtype
    model.to(device=device, dtype=dtype)
    b_hh = np.zeros_like(params["b_h"])
    if cell == "gru":
        b_hh[2 * hidden_size:] = params["b_hn"]
    state = {"rnn.weight_ih_l0": params["W_xh"], "rnn.weight_hh_l0": params["W_hh"],
             "rnn.bias_ih_l0": params["b_h"], "rnn.bias_hh_l0": b_hh,
             "fc.weight": params["W_hy"], "fc.bias": params["b_y"]}
    model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state.items()})
    return model


def from_module(model: RNNClassifier) -> dict:
    """An RNNClassifier's weights as the canonical numpy dict of its cell."""
    rnn, fc = model.rnn, model.fc
    as_np = lambda t: t.detach().cpu().numpy().copy()  # noqa: E731
    params = {"W_xh": as_np(rnn.weight_ih_l0), "W_hh": as_np(rnn.weight_hh_l0),
              "W_hy": as_np(fc.weight), "b_y": as_np(fc.bias)}
    if isinstance(rnn, torch.nn.GRU):
        hidden_size = rnn.hidden_size
        b_hh = rnn.bias_hh_l0
        merged = torch.cat([b_hh[:2 * hidden_size], torch.zeros_like(b_hh[2 * hidden_size:])])
        params.update(b_h=as_np(rnn.bias_ih_l0 + merged), b_hn=as_np(b_hh[2 * hidden_size:]))
    else:
        params["b_h"] = as_np(rnn.bias_ih_l0 + rnn.bias_hh_l0)
    return params


class TorchBackend(Backend):
    name = "torch"
    math = "torch"  # torch operators: rnnbench profile reads them with torch.profiler
    cells = ("rnn_tanh", "lstm", "gru")

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

    def _logits(self, p, x, lengths):
        batch_size = x.shape[0]
        hidden_size = p["W_hy"].shape[1]
        h0 = x.new_zeros((1, batch_size, hidden_size))
        # args after the weights: has_biases, num_layers, dropout, train, bidirectional, batch_first
        cell = cell_fast(p)
        if cell == "gru":  # b_hh = [0, 0, b_hn] (module docstring)
            b_hh = torch.cat([p["b_hn"].new_zeros(2 * hidden_size), p["b_hn"]])
            out, _ = torch.gru(x, h0, [p["W_xh"], p["W_hh"], p["b_h"], b_hh], True, 1, 0.0, False,
                               False, True)  # (B, T, H)
        elif cell == "lstm":
            weights = [p["W_xh"], p["W_hh"], p["b_h"], torch.zeros_like(p["b_h"])]
            out, _, _ = torch.lstm(x, [h0, torch.zeros_like(h0)], weights, True, 1, 0.0, False, False, True)
        else:
            weights = [p["W_xh"], p["W_hh"], p["b_h"], torch.zeros_like(p["b_h"])]
            out, _ = torch.rnn_tanh(x, h0, weights, True, 1, 0.0, False, False, True)  # (B, T, H)
        if lengths is None:
            h_last = out[:, -1, :]
        else:
            h_last = out[torch.arange(batch_size, device=x.device), lengths - 1, :]  # (B, H)
        return F.linear(h_last, p["W_hy"], p["b_y"])  # (B, C)

    def _forward(self, params, x, lengths):
        # Fresh leaves each call: the graph belongs to this call's cache alone.
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        logits = self._logits(leaves, x, lengths)
        return logits, {"batch_size": x.shape[0], "leaves": leaves, "logits": logits}

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
