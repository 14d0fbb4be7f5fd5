"""`torch_compile`: the hand-written cell loop compiled by torch.compile (dynamo + inductor).

Why not nn.RNN: dynamo graph-breaks on it and runs it eagerly, so "compiled" numbers would
be eager numbers. The cell loop below traces into one graph, and that is enforced, not
hoped for: `fullgraph=True` makes any graph break an error, and
`fail_on_recompile_limit_hit` makes hitting the recompile limit an error instead of a
silent fall back to eager. Every seq_len is a new graph (dynamo unrolls the loop and
guards on its length), so a sweep over many lengths needs more than dynamo's default of
8 recompiles: the limit is raised to RECOMPILE_LIMIT for this process.

Shapes: torch.compile's default (automatic dynamic shapes). The first graph is
specialised to its batch and hidden size; when a second size arrives, dynamo recompiles
once with those dimensions symbolic and that graph serves every later size. So which rows
run specialised code depends on the sweep's order, and the rows say so: `recompiles` is
the number of graphs compiled during that row (0: it reused a graph). dynamic=False would
compile one graph per (batch, hidden, seq_len), which at seconds each does not fit a sweep.

Inductor bakes the thread count into its CPU kernels and dynamo does not guard on it, so
the compiled code is dropped (torch._dynamo.reset) when the thread count changes.

Stacked and bidirectional models (and dropout): one layer-direction's loop is compiled
(torch_loop.LAYER_LOOPS: the input projection stays outside it, so its input is (T, B, G*H)
at every layer) and composed in plain torch ops (torch_loop.stack_logits). Every layer and
direction of a model then runs the same graph: a new model shape costs one compile (per
grad mode), not one per layer.

Compiles are counted by wrapping inductor in a counting backend (`counters`); graph
breaks are 0 by construction. Backward is autograd through the compiled graph
(AOTAutograd compiles the backward too).
"""
from __future__ import annotations

import importlib
import importlib.util

import torch

from .base import Unavailable
from .torch_backend import TorchBackend, checked_device, full_float32_on_cuda
from .params import is_plain
from .torch_loop import LAYER_LOOPS, LOOPS, loop_args, stack_logits

RECOMPILE_LIMIT = 64  # a default sweep has a few dozen (shape, dtype, grad-mode) graphs


class TorchCompileBackend(TorchBackend):
    name = "torch_compile"

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self.compiles = 0
        self._threads = torch.get_num_threads()
        self._compiled = self._compiled_layers = None  # wrapped at the first call: _wrap

    def _wrap(self) -> None:
        """Configure dynamo and wrap the loops (each compiled at its first call). Not in
        __init__: importing dynamo takes ~2 s, which a sweep that only skips this
        compile-heavy implementation (the quick preset) would pay for nothing."""
        import torch._dynamo

        config = torch._dynamo.config
        config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
        config.fail_on_recompile_limit_hit = True
        # The contract lets backward run again on one cache (the harness times it so), which
        # needs retain_graph; AOTAutograd's donated buffers forbid that, so they are off.
        torch._functorch.config.donated_buffer = False
        self._compiled = self._compile(LOOPS)
        self._compiled_layers = self._compile(LAYER_LOOPS)

    def _compile(self, loops: dict) -> dict:
        return {cell: torch.compile(loop, backend=self._counting_inductor, fullgraph=True)
                for cell, loop in loops.items()}

    def _counting_inductor(self, graph_module, example_inputs):
        from torch._inductor.compile_fx import compile_fx

        self.compiles += 1
        return compile_fx(graph_module, example_inputs)

    def _logits(self, p, x, lengths, dropout=None):
        if self._compiled is None:
            self._wrap()
        if torch.get_num_threads() != self._threads:  # kernels built for another count
            torch._dynamo.reset()
            self._threads = torch.get_num_threads()
        if dropout is None and is_plain(p):
            cell, args = loop_args(p, x, lengths)
            return self._compiled[cell](*args)
        return stack_logits(self._compiled_layers, p, x, lengths, dropout)

    def counters(self) -> dict:
        from torch._dynamo.utils import counters

        return {"graph_breaks": sum(counters["graph_break"].values()), "recompiles": self.compiles}


def _build(device: str) -> TorchCompileBackend:
    # located, not imported: importing inductor takes ~2 s, which a sweep that skips
    # this compile-heavy implementation (the quick preset) would pay for nothing;
    # torch.compile imports it at the first compile, inside compile_s
    if importlib.util.find_spec("torch._inductor") is None:
        raise Unavailable(f"torch {torch.__version__} has no inductor compiler (torch._inductor)")
    return TorchCompileBackend(device)


def create(device: str | None = None) -> TorchCompileBackend:
    return _build(checked_device(device))


def create_cuda(device: str | None = None) -> TorchCompileBackend:
    """The same compiled loop on a CUDA GPU (inductor emits Triton kernels)."""
    backend = _build(checked_device(device, "cuda"))
    full_float32_on_cuda()
    return backend
