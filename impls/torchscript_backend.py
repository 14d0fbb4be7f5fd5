"""`torchscript`: the cell loop written out by hand and compiled with torch.jit.script,
the approach of PyTorch's own RNN benchmarks (fastrnns): TorchScript's executor fuses
and schedules the loop, no fused nn.RNN kernel (MKL/cuDNN) does the work. Backward is
autograd through the scripted graph.

TorchScript is deprecated upstream: torch 2.13 emits a DeprecationWarning when a function
is scripted. The warning is real and stays visible to users; `rnnbench list` and the
report say "deprecated upstream".
"""
from __future__ import annotations

import torch

from .base import Unavailable
from .torch_backend import TorchBackend, checked_device
from .torch_loop import cell_loop_logits


class TorchScriptBackend(TorchBackend):
    cells = ("rnn_tanh",)  # the hand-written cell loop is the tanh cell's (LSTM/GRU loops: issue 10)
    name = "torchscript"

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self._script = torch.jit.script(cell_loop_logits)

    def _logits(self, p, x, lengths):
        return self._script(x, p["W_xh"], p["W_hh"], p["b_h"], p["W_hy"], p["b_y"], lengths)


def create(device: str | None = None) -> TorchScriptBackend:
    device = checked_device(device)
    if not hasattr(torch.jit, "script"):
        raise Unavailable(f"torch {torch.__version__} no longer ships TorchScript")
    return TorchScriptBackend(device)
