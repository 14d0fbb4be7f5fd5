"""The cell loops written out in torch ops, one function per cell: what TorchScript
(`torchscript`) and torch.compile (`torch_compile`) compile, instead of nn.RNN's / nn.LSTM's /
nn.GRU's fused kernels. Annotated so that torch.jit.script accepts them; dynamo traces the
same functions unchanged. Gate rows in PyTorch's order (lstm i, f, g, o; gru r, z, n).

Each cell's recurrence is written once (`*_steps`, over a batch-first (B, T, G*H) input
projection). Two entry points use it: `LOOPS[cell]`, the one-layer unidirectional
classifier (projection, loop and head in one compiled function: the plain fast path), and
`LAYER_LOOPS[cell]`, one layer-direction's loop alone (pre -> every step's state), which
`stack_logits` composes in plain torch ops into a model of any depth and direction count.
The input projection stays outside the layer loop, so one compiled loop has the same
input width G*H for every layer (layer 0's input width I differs from D*H above it) and
serves every layer and direction of a model.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from .params import cell_fast, directions, layer_params, structure_of
from .reference import reversal_index

Steps = Tuple[torch.Tensor, List[torch.Tensor]]  # (final h (B, H), every step's h or [])


# --- the recurrences: pre (B, T, G*H) -> (final h (B, H), every step's h if keep_states) ---

def tanh_steps(pre: torch.Tensor, W_hh: torch.Tensor, keep_states: bool) -> Steps:
    W_hh_t = W_hh.t()
    h = torch.zeros(pre.size(0), W_hh.size(1), dtype=pre.dtype, device=pre.device)
    states: List[torch.Tensor] = []
    for t in range(pre.size(1)):
        h = torch.tanh(pre[:, t] + torch.mm(h, W_hh_t))  # (B, H)
        if keep_states:
            states.append(h)
    return h, states


def lstm_steps(pre: torch.Tensor, W_hh: torch.Tensor, keep_states: bool) -> Steps:
    W_hh_t = W_hh.t()
    h = torch.zeros(pre.size(0), W_hh.size(1), dtype=pre.dtype, device=pre.device)
    c = torch.zeros_like(h)
    states: List[torch.Tensor] = []
    for t in range(pre.size(1)):
        i, f, g, o = (pre[:, t] + torch.mm(h, W_hh_t)).chunk(4, 1)  # (B, H) each
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        if keep_states:
            states.append(h)
    return h, states


def gru_steps(pre: torch.Tensor, W_hh: torch.Tensor, b_hn: torch.Tensor, keep_states: bool) -> Steps:
    """pre includes b_h = [b_ir + b_hr, b_iz + b_hz, b_in]; b_hn sits inside the reset product."""
    W_hh_t = W_hh.t()
    h = torch.zeros(pre.size(0), W_hh.size(1), dtype=pre.dtype, device=pre.device)
    states: List[torch.Tensor] = []
    for t in range(pre.size(1)):
        x_r, x_z, x_n = pre[:, t].chunk(3, 1)  # (B, H) each
        h_r, h_z, h_n = torch.mm(h, W_hh_t).chunk(3, 1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * (h_n + b_hn))
        h = n + z * (h - n)  # (1 - z) * n + z * h_{t-1}
        if keep_states:
            states.append(h)
    return h, states


# --- the plain classifier: one layer, one direction, head included --------------------------

def _last_states(h: torch.Tensor, states: List[torch.Tensor],
                 lengths: Optional[torch.Tensor]) -> torch.Tensor:
    if lengths is None:
        return h
    stacked = torch.stack(states, dim=1)  # (B, T, H)
    return stacked[torch.arange(h.size(0), device=h.device), lengths - 1]  # (B, H)


def cell_loop_logits(x: torch.Tensor, W_xh: torch.Tensor, W_hh: torch.Tensor, b_h: torch.Tensor,
                     W_hy: torch.Tensor, b_y: torch.Tensor,
                     lengths: Optional[torch.Tensor]) -> torch.Tensor:
    pre = torch.matmul(x, W_xh.t()) + b_h  # (B, T, H): every step's input projection at once
    h, states = tanh_steps(pre, W_hh, lengths is not None)
    return torch.addmm(b_y, _last_states(h, states, lengths), W_hy.t())  # (B, C)


def lstm_loop_logits(x: torch.Tensor, W_xh: torch.Tensor, W_hh: torch.Tensor, b_h: torch.Tensor,
                     W_hy: torch.Tensor, b_y: torch.Tensor,
                     lengths: Optional[torch.Tensor]) -> torch.Tensor:
    pre = torch.matmul(x, W_xh.t()) + b_h  # (B, T, 4H): every step's input projection at once
    h, states = lstm_steps(pre, W_hh, lengths is not None)
    return torch.addmm(b_y, _last_states(h, states, lengths), W_hy.t())  # (B, C)


def gru_loop_logits(x: torch.Tensor, W_xh: torch.Tensor, W_hh: torch.Tensor, b_h: torch.Tensor,
                    b_hn: torch.Tensor, W_hy: torch.Tensor, b_y: torch.Tensor,
                    lengths: Optional[torch.Tensor]) -> torch.Tensor:
    pre = torch.matmul(x, W_xh.t()) + b_h  # (B, T, 3H): [b_ir + b_hr, b_iz + b_hz, b_in] included
    h, states = gru_steps(pre, W_hh, b_hn, lengths is not None)
    return torch.addmm(b_y, _last_states(h, states, lengths), W_hy.t())  # (B, C)


def loop_args(p: dict, x, lengths) -> tuple:
    """(cell, arguments of its loop) for canonical params `p`."""
    cell = cell_fast(p)
    if cell == "gru":
        return cell, (x, p["W_xh"], p["W_hh"], p["b_h"], p["b_hn"], p["W_hy"], p["b_y"], lengths)
    return cell, (x, p["W_xh"], p["W_hh"], p["b_h"], p["W_hy"], p["b_y"], lengths)


LOOPS = {"rnn_tanh": cell_loop_logits, "lstm": lstm_loop_logits, "gru": gru_loop_logits}


# --- one layer-direction: time-major pre (T, B, G*H) -> every step's state (T, B, H) --------
# Time-major in and out, so the composition below moves between layers with reshapes, not
# transposing copies; the loop reads pre[:, t] of the (B, T, G*H) view, a contiguous slice.

def tanh_layer(pre: torch.Tensor, W_hh: torch.Tensor) -> torch.Tensor:
    return torch.stack(tanh_steps(pre.transpose(0, 1), W_hh, True)[1])  # (T, B, H)


def lstm_layer(pre: torch.Tensor, W_hh: torch.Tensor) -> torch.Tensor:
    return torch.stack(lstm_steps(pre.transpose(0, 1), W_hh, True)[1])  # (T, B, H)


def gru_layer(pre: torch.Tensor, W_hh: torch.Tensor, b_hn: torch.Tensor) -> torch.Tensor:
    return torch.stack(gru_steps(pre.transpose(0, 1), W_hh, b_hn, True)[1])  # (T, B, H)


LAYER_LOOPS = {"rnn_tanh": tanh_layer, "lstm": lstm_layer, "gru": gru_layer}


def layer_args(cell: str, pre, p: dict) -> tuple:
    """Arguments of `cell`'s layer loop, for one layer-direction's params `p` (layer_params)."""
    return (pre, p["W_hh"], p["b_hn"]) if cell == "gru" else (pre, p["W_hh"])


def _reverse_rows(rows, index, seq_len: int, batch_size: int):
    """(T*B, F) time-major rows, each sequence reversed within its length (index: impls.
    reference.reversal_index, its own inverse; None: every length is T, a flip does it)."""
    if index is not None:
        return rows.index_select(0, index)
    return rows.reshape(seq_len, batch_size, -1).flip(0).reshape(rows.shape)


def _final_step(states, lengths):
    """(T, B, H) states -> (B, H) at each sequence's last step (its own frame: a reverse
    direction's last step is its state after reading the sequence back to step 1)."""
    if lengths is None:
        return states[-1]
    return states[lengths - 1, torch.arange(states.size(1), device=states.device)]


def stack_logits(layer_loops: dict, p: dict, x, lengths, dropout=None):
    """Logits (B, C) of a model of any depth and direction count (impls.params), each
    layer-direction run by `layer_loops[cell]` (LAYER_LOOPS scripted or compiled); the rest
    is plain torch ops, autograd through all of it. Semantics as impls.reference.stack_forward:
    the reverse direction reads each sequence reversed within its length, layer k+1 reads
    both directions of layer k (forward first) times mask "l{k}", the head reads each
    direction's final state of the last layer times mask "head"."""
    cell, (num_layers, bidirectional) = cell_fast(p), structure_of(p)
    batch_size, seq_len, input_size = x.shape
    index = None
    if bidirectional and lengths is not None:
        with torch.device(lengths.device):  # reversal_index's aranges, next to the lengths
            index = reversal_index(torch, lengths, seq_len, batch_size)  # (T*B,)
    rows = x.transpose(0, 1).reshape(seq_len * batch_size, input_size)  # (T*B, I), time-major
    for layer in range(num_layers):
        last = layer == num_layers - 1
        finals, outputs = [], []
        for reverse in directions(bidirectional):
            lp = layer_params(p, layer, reverse)
            inputs = _reverse_rows(rows, index, seq_len, batch_size) if reverse else rows
            pre = torch.addmm(lp["b_h"], inputs, lp["W_xh"].t()).view(seq_len, batch_size, -1)  # (T, B, G*H)
            states = layer_loops[cell](*layer_args(cell, pre, lp))  # (T, B, H), own frame
            finals.append(_final_step(states, lengths))
            if not last:
                out = states.reshape(seq_len * batch_size, -1)  # (T*B, H)
                outputs.append(_reverse_rows(out, index, seq_len, batch_size) if reverse else out)
        if not last:
            rows = torch.cat(outputs, 1) if bidirectional else outputs[0]  # (T*B, D*H)
            if dropout is not None:
                mask = dropout[f"l{layer}"]  # (B, T, D*H)
                rows = rows * mask.transpose(0, 1).reshape(rows.shape)
    h_final = torch.cat(finals, 1) if bidirectional else finals[0]  # (B, D*H)
    if dropout is not None:
        h_final = h_final * dropout["head"]
    return F.linear(h_final, p["W_hy"], p["b_y"])  # (B, C)
