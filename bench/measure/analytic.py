"""Analytic work and memory of the model, per cell: the one place the formulas live.

FLOPs count a multiply-add as 2 and every element-wise operation (add, multiply, tanh,
sigmoid) as 1; B batch, T seq_len, I input, H hidden, C classes, G gate blocks (rnn_tanh 1,
lstm 4, gru 3: the rows of W_hh over H).

forward    input projection 2BTI(GH) + BT(GH) (bias), recurrence 2BT(GH)H (one fused GEMM
           of all gates) + E_f BTH (the cell's element-wise work), head 2BHC + BC
backward   head: dW_hy 2BHC, db_y BC, dh_T 2BHC;
           loop: E_b BTH element-wise, dh W_hh 2B(T-1)(GH)H;
           after the loop: dW_xh 2BTI(GH), dW_hh 2BT(GH)H, db_h BT(GH) (gru: db_hn BTH)
train_step forward + backward + softmax cross-entropy (~5BC) + Adam (~12 per parameter)

E_f, E_b (per hidden unit and step; FORWARD_ELEMENTWISE / BACKWARD_ELEMENTWISE):
rnn_tanh   add, tanh = 2;            (1 - h^2) dh = 3
lstm       add 4 gates, 3 sigmoid + tanh g, c = f c + i g (3), tanh c, h = o tanh c = 13;
           dc += dh o (1 - tc^2) (5), di, df, dg, do (4 each), dc *= f (1) = 22
gru        add r z (2), 2 sigmoid, h W_hn + b_hn, r *, + x side, tanh, h = n + z (h - n) (3) = 11;
           dn (5), dz (5), dr (5), the h side of dn (1), dh z + (1) = 17
"""
from __future__ import annotations

import numpy as np

ADAM_FLOPS_PER_PARAM = 12  # two moment updates, bias corrections, sqrt, divide, step
GATES = {"rnn_tanh": 1, "lstm": 4, "gru": 3}  # impls.params.GATES (a test checks they agree)
FORWARD_ELEMENTWISE = {"rnn_tanh": 2, "lstm": 13, "gru": 11}
BACKWARD_ELEMENTWISE = {"rnn_tanh": 3, "lstm": 22, "gru": 17}


def _gates(cell: str) -> int:
    if cell not in GATES:
        raise ValueError(f"unknown cell {cell!r}; cells: {', '.join(GATES)}")
    return GATES[cell]


def num_params(input_size: int, hidden_size: int, num_classes: int, cell: str = "rnn_tanh") -> int:
    G, H = _gates(cell), hidden_size
    b_hn = H if cell == "gru" else 0
    return G * H * (input_size + H + 1) + b_hn + num_classes * (H + 1)


def forward_flops(batch_size, seq_len, input_size, hidden_size, num_classes=10, cell="rnn_tanh") -> int:
    B, T, I, H, C = batch_size, seq_len, input_size, hidden_size, num_classes
    GH = _gates(cell) * H
    projection = 2 * B * T * I * GH + B * T * GH
    recurrence = 2 * B * T * GH * H + FORWARD_ELEMENTWISE[cell] * B * T * H
    return projection + recurrence + 2 * B * H * C + B * C


def backward_flops(batch_size, seq_len, input_size, hidden_size, num_classes=10, cell="rnn_tanh") -> int:
    B, T, I, H, C = batch_size, seq_len, input_size, hidden_size, num_classes
    GH = _gates(cell) * H
    head = 2 * B * H * C + B * C + 2 * B * H * C
    loop = BACKWARD_ELEMENTWISE[cell] * B * T * H + 2 * B * (T - 1) * GH * H
    after = 2 * B * T * I * GH + 2 * B * T * GH * H + B * T * GH + (B * T * H if cell == "gru" else 0)
    return head + loop + after


def phase_flops(phase, batch_size, seq_len, input_size, hidden_size, num_classes=10,
                cell="rnn_tanh") -> int:
    args = (batch_size, seq_len, input_size, hidden_size, num_classes, cell)
    if phase == "forward":
        return forward_flops(*args)
    if phase == "backward":
        return backward_flops(*args)
    if phase == "transfer":
        return 0  # copies, no arithmetic
    if phase == "train_step":
        return (forward_flops(*args) + backward_flops(*args) + 5 * batch_size * num_classes
                + ADAM_FLOPS_PER_PARAM * num_params(input_size, hidden_size, num_classes, cell))
    raise ValueError(f"unknown phase {phase!r}")


# What the backward needs of each step besides h_t, per hidden unit: lstm c_t, the four
# gate activations and tanh(c_t); gru the three gate activations and h W_hn + b_hn.
SAVED_PER_STEP = {"rnn_tanh": 0, "lstm": 6, "gru": 4}


def activation_bytes(phase, batch_size, seq_len, input_size, hidden_size, dtype="float32",
                     cell="rnn_tanh") -> int:
    """What backpropagation through time must hold, by analysis: the hidden states of every
    step (B x (T+1) x H), what the cell saves per step (SAVED_PER_STEP) and the input
    projection (T x B x GH) for a training forward; in backward, the per-step gate
    gradients (T x B x GH; gru a second set for its h side) too. Inference keeps one state
    (lstm: and one cell state) beside the input projection. Parameters and inputs are
    excluded (they exist before the phase)."""
    item = np.dtype(dtype).itemsize
    B, T, H = batch_size, seq_len, hidden_size
    GH = _gates(cell) * H
    if phase == "transfer":
        return item * B * T * input_size  # the input's copy on the other side
    if phase == "forward":
        return item * (T * B * GH + B * H * (2 if cell == "lstm" else 1))
    states = (T + 1) * B * H + SAVED_PER_STEP[cell] * T * B * H + T * B * GH
    gradients = T * B * GH * (2 if cell == "gru" else 1)
    if phase == "backward":
        return item * gradients
    if phase == "train_step":
        return item * (states + gradients)
    raise ValueError(f"unknown phase {phase!r}")
