"""The RNN cell loop written out in torch ops: what TorchScript (`torchscript`) and
torch.compile (`torch_compile`) compile, instead of nn.RNN's fused kernel. Annotated so
that torch.jit.script accepts it; dynamo traces the same function unchanged."""
from __future__ import annotations

from typing import Optional

import torch


def cell_loop_logits(x: torch.Tensor, W_xh: torch.Tensor, W_hh: torch.Tensor, b_h: torch.Tensor,
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
