"""The cell loops written out in torch ops, one function per cell: what TorchScript
(`torchscript`) and torch.compile (`torch_compile`) compile, instead of nn.RNN's / nn.LSTM's /
nn.GRU's fused kernels. Annotated so that torch.jit.script accepts them; dynamo traces the
same functions unchanged. Gate rows in PyTorch's order (lstm i, f, g, o; gru r, z, n)."""
from __future__ import annotations

from typing import Optional

import torch

from .params import cell_fast


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


def _last_states(h: torch.Tensor, states: list[torch.Tensor], lengths: Optional[torch.Tensor]) -> torch.Tensor:
    if lengths is None:
        return h
    stacked = torch.stack(states, dim=1)  # (B, T, H)
    return stacked[torch.arange(h.size(0), device=h.device), lengths - 1]  # (B, H)


def lstm_loop_logits(x: torch.Tensor, W_xh: torch.Tensor, W_hh: torch.Tensor, b_h: torch.Tensor,
                     W_hy: torch.Tensor, b_y: torch.Tensor,
                     lengths: Optional[torch.Tensor]) -> torch.Tensor:
    batch_size, seq_len, hidden_size = x.size(0), x.size(1), W_hy.size(1)
    pre = torch.matmul(x, W_xh.t()) + b_h  # (B, T, 4H): every step's input projection at once
    W_hh_t = W_hh.t()
    h = torch.zeros(batch_size, hidden_size, dtype=x.dtype, device=x.device)
    c = torch.zeros_like(h)
    states: list[torch.Tensor] = []
    for t in range(seq_len):
        i, f, g, o = (pre[:, t] + torch.mm(h, W_hh_t)).chunk(4, 1)  # (B, H) each
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        if lengths is not None:
            states.append(h)
    return torch.addmm(b_y, _last_states(h, states, lengths), W_hy.t())  # (B, C)


def gru_loop_logits(x: torch.Tensor, W_xh: torch.Tensor, W_hh: torch.Tensor, b_h: torch.Tensor,
                    b_hn: torch.Tensor, W_hy: torch.Tensor, b_y: torch.Tensor,
                    lengths: Optional[torch.Tensor]) -> torch.Tensor:
    batch_size, seq_len, hidden_size = x.size(0), x.size(1), W_hy.size(1)
    pre = torch.matmul(x, W_xh.t()) + b_h  # (B, T, 3H): [b_ir + b_hr, b_iz + b_hz, b_in] included
    W_hh_t = W_hh.t()
    h = torch.zeros(batch_size, hidden_size, dtype=x.dtype, device=x.device)
    states: list[torch.Tensor] = []
    for t in range(seq_len):
        x_r, x_z, x_n = pre[:, t].chunk(3, 1)  # (B, H) each
        h_r, h_z, h_n = torch.mm(h, W_hh_t).chunk(3, 1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * (h_n + b_hn))
        h = n + z * (h - n)  # (1 - z) * n + z * h_{t-1}
        if lengths is not None:
            states.append(h)
    return torch.addmm(b_y, _last_states(h, states, lengths), W_hy.t())  # (B, C)


def loop_args(p: dict, x, lengths) -> tuple:
    """(cell, arguments of its loop) for canonical params `p`."""
    cell = cell_fast(p)
    if cell == "gru":
        return cell, (x, p["W_xh"], p["W_hh"], p["b_h"], p["b_hn"], p["W_hy"], p["b_y"], lengths)
    return cell, (x, p["W_xh"], p["W_hh"], p["b_h"], p["W_hy"], p["b_y"], lengths)


LOOPS = {"rnn_tanh": cell_loop_logits, "lstm": lstm_loop_logits, "gru": gru_loop_logits}
