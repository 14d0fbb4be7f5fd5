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
from .torch_loop import LOOPS, loop_args


class TorchScriptBackend(TorchBackend):
    name = "torchscript"

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self._scripts = {cell: torch.jit.script(loop) for cell, loop in LOOPS.items()}

    def _logits(self, p, x, lengths):
        cell, args = loop_args(p, x, lengths)
        return self._scripts[cell](*args)


def create(device: str | None = None) -> TorchScriptBackend:
    device = checked_device(device)
    if not hasattr(torch.jit, "script"):
        raise Unavailable(f"torch {torch.__version__} no longer ships TorchScript")
    return TorchScriptBackend(device)
