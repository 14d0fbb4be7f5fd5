"""`torchscript`: the cell loop written out by hand and compiled with torch.jit.script,
the approach of PyTorch's own RNN benchmarks (fastrnns): TorchScript's executor fuses
and schedules the loop, no fused nn.RNN kernel (MKL/cuDNN) does the work. Backward is
autograd through the scripted graph.

TorchScript is deprecated upstream: torch 2.13 emits a DeprecationWarning when a function
is scripted. The warning is real and stays visible to users; `rnnbench list` and the
report say "deprecated upstream".
"""
from __future__ import annotations

from typing import Optional

import torch

from .base import Unavailable
from .torch_backend import TorchBackend


def _scripted_logits(x: torch.Tensor, W_xh: torch.Tensor, W_hh: torch.Tensor, b_h: torch.Tensor,
                     W_hy: torch.Tensor, b_y: torch.Tensor,
                     lengths: Optional[torch.Tensor]) -> torch.Tensor:
    batch_size, seq_len = x.size(0), x.size(1)
    pre = torch.matmul(x, W_xh.t()) + b_h  # (B, T, H): every step's input projection at once
    W_hh_t = W_hh.t()
    h = torch.zeros(batch_size, W_hh.size(0), dtype=x.dtype, device=x.device)
    states: list[torch.Tensor] = []
    for t in range(seq_len):
        h = torch.tanh(pre[:, t] + torch.mm(h, W_hh_t))  # (B, H)
        if lengths is not None:
            states.append(h)
    if lengths is not None:
        stacked = torch.stack(states, dim=1)  # (B, T, H)
        h = stacked[torch.arange(batch_size, device=x.device), lengths - 1]  # (B, H)
    return torch.addmm(b_y, h, W_hy.t())  # (B, C)


class TorchScriptBackend(TorchBackend):
    name = "torchscript"

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self._script = torch.jit.script(_scripted_logits)

    def _logits(self, p, x, lengths):
        return self._script(x, p["W_xh"], p["W_hh"], p["b_h"], p["W_hy"], p["b_y"], lengths)


def create(device: str | None = None) -> TorchScriptBackend:
    device = device or "cpu"
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise Unavailable(f"torch {torch.__version__} sees no CUDA GPU")
    if not hasattr(torch.jit, "script"):
        raise Unavailable(f"torch {torch.__version__} no longer ships TorchScript")
    return TorchScriptBackend(device)
