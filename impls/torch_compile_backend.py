"""`torch_compile`: the hand-written cell loop compiled by torch.compile (dynamo + inductor).

Why not nn.RNN: dynamo graph-breaks on it and runs it eagerly, so "compiled" numbers would
be eager numbers. The cell loop below traces into one graph, and that is enforced, not
hoped for: `fullgraph=True` makes any graph break an error, and
`fail_on_recompile_limit_hit` makes hitting the recompile limit an error instead of a
silent fall back to eager. Every seq_len is a new graph (dynamo unrolls the loop and
guards on its length), so a sweep over many lengths needs more than dynamo's default of
8 recompiles: the limit is raised to RECOMPILE_LIMIT for this process.

Compiles are counted by wrapping inductor in a counting backend; `diagnostics` reports
graph breaks (0 by construction) and the graphs compiled so far. Backward is autograd
through the compiled graph (AOTAutograd compiles the backward too).
"""
from __future__ import annotations

import importlib

import torch

from .base import Unavailable
from .torch_backend import TorchBackend

RECOMPILE_LIMIT = 64  # a default sweep has a few dozen (shape, dtype, grad-mode) graphs


def _cell_loop_logits(x, W_xh, W_hh, b_h, W_hy, b_y, lengths=None):
    batch_size, seq_len = x.shape[0], x.shape[1]
    pre = torch.matmul(x, W_xh.t()) + b_h  # (B, T, H): every step's input projection at once
    W_hh_t = W_hh.t()
    h = x.new_zeros((batch_size, W_hh.shape[0]))
    states = []
    for t in range(seq_len):
        h = torch.tanh(pre[:, t] + h @ W_hh_t)  # (B, H)
        states.append(h)
    if lengths is not None:
        stacked = torch.stack(states, dim=1)  # (B, T, H)
        h = stacked[torch.arange(batch_size, device=x.device), lengths - 1]  # (B, H)
    return torch.addmm(b_y, h, W_hy.t())  # (B, C)


class TorchCompileBackend(TorchBackend):
    name = "torch_compile"

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        import torch._dynamo

        config = torch._dynamo.config
        config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
        config.fail_on_recompile_limit_hit = True
        # The contract lets backward run again on one cache (the harness times it so), which
        # needs retain_graph; AOTAutograd's donated buffers forbid that, so they are off.
        torch._functorch.config.donated_buffer = False
        self.compiles = 0
        self._compiled = torch.compile(_cell_loop_logits, backend=self._counting_inductor,
                                       fullgraph=True)

    def _counting_inductor(self, graph_module, example_inputs):
        from torch._inductor.compile_fx import compile_fx

        self.compiles += 1
        return compile_fx(graph_module, example_inputs)

    def _logits(self, p, x, lengths):
        return self._compiled(x, p["W_xh"], p["W_hh"], p["b_h"], p["W_hy"], p["b_y"], lengths)

    def diagnostics(self, params, x) -> dict:
        from torch._dynamo.utils import counters

        return {"graph_breaks": sum(counters["graph_break"].values()), "recompiles": self.compiles}


def create(device: str | None = None) -> TorchCompileBackend:
    device = device or "cpu"
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise Unavailable(f"torch {torch.__version__} sees no CUDA GPU")
    try:
        importlib.import_module("torch._inductor.compile_fx")
    except ImportError as exc:
        raise Unavailable(f"torch {torch.__version__} has no inductor compiler ({exc})") from exc
    return TorchCompileBackend(device)


def create_cuda(device: str | None = None) -> TorchCompileBackend:
    """The same compiled loop on a CUDA GPU (inductor emits Triton kernels)."""
    return create(device or "cuda")
