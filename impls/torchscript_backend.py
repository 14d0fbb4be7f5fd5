"""`torchscript`: the cell loop written out by hand and compiled with torch.jit.script,
the approach of PyTorch's own RNN benchmarks (fastrnns): TorchScript's executor fuses
and schedules the loop, no fused nn.RNN kernel (MKL/cuDNN) does the work. Backward is
autograd through the scripted graph.

Stacked and bidirectional models: each layer-direction's loop is scripted
(torch_loop.LAYER_LOOPS) and composed in plain torch ops (torch_loop.stack_logits), where
the reversal within each length, the concatenation of directions and the dropout masks are.

TorchScript is deprecated upstream: torch 2.13 emits a DeprecationWarning when a function
is scripted. The warning is real and stays visible to users; `rnnbench list` and the
report say "deprecated upstream".
"""
from __future__ import annotations

import torch

from .base import Unavailable
from .torch_backend import TorchBackend, checked_device
from .params import is_plain
from .torch_loop import LAYER_LOOPS, LOOPS, loop_args, stack_logits


class TorchScriptBackend(TorchBackend):
    name = "torchscript"

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self._scripts = {cell: torch.jit.script(loop) for cell, loop in LOOPS.items()}
        self._layer_scripts = {cell: torch.jit.script(loop) for cell, loop in LAYER_LOOPS.items()}

    def _logits(self, p, x, lengths, dropout=None):
        if dropout is None and is_plain(p):
            cell, args = loop_args(p, x, lengths)
            return self._scripts[cell](*args)
        return stack_logits(self._layer_scripts, p, x, lengths, dropout)


def create(device: str | None = None) -> TorchScriptBackend:
    device = checked_device(device)
    if not hasattr(torch.jit, "script"):
        raise Unavailable(f"torch {torch.__version__} no longer ships TorchScript")
    return TorchScriptBackend(device)
