"""Analytic work and memory of the model, per cell and structure: the one place the formulas live.

FLOPs count a multiply-add as 2 and every element-wise operation (add, multiply, tanh,
sigmoid) as 1; B batch, T seq_len, I input, H hidden (one direction's), C classes, G gate
blocks (rnn_tanh 1, lstm 4, gru 3: the rows of W_hh over H).

Structure: L layers, D directions (2 when bidirectional). Each of the L x D layer-directions
runs the one-layer recurrence below on its own input width I_k: I for layer 0, D*H for layer
k >= 1 (both directions' outputs of layer k-1, concatenated). The head reads the D final
states of the last layer: D*H wide. L = D = 1 is the article's model, and every formula
reduces to the one-layer one. Reversing sequences and concatenating are copies: 0 FLOPs.

forward    per layer-direction: input projection 2BTI_k(GH) + BT(GH) (bias), recurrence
           2BT(GH)H (one fused GEMM of all gates) + E_f BTH (the cell's element-wise work);
           head 2B(DH)C + BC
backward   head: dW_hy 2B(DH)C, db_y BC, dh_T 2B(DH)C;
           per layer-direction: loop E_b BTH element-wise, dh W_hh 2B(T-1)(GH)H;
           after the loop: dW_xh 2BTI_k(GH), dW_hh 2BT(GH)H, db_h BT(GH) (gru: db_hn BTH);
           below the last layer, the layer above's output gradient added at every step BTH;
           for k >= 1 the input gradient dpre W_xh 2BT(GH)I_k, and the D directions' input
           gradients summed (D-1)BTI_k
train_step forward + backward + softmax cross-entropy (~5BC) + Adam (~12 per parameter)

E_f, E_b (per hidden unit and step; FORWARD_ELEMENTWISE / BACKWARD_ELEMENTWISE):
rnn_tanh   add, tanh = 2;            (1 - h^2) dh = 3
lstm       add 4 gates, 3 sigmoid + tanh g, c = f c + i g (3), tanh c, h = o tanh c = 13;
           dc += dh o (1 - tc^2) (5), di, df, dg, do (4 each), dc *= f (1) = 22
gru        add r z (2), 2 sigmoid, h W_hn + b_hn, r *, + x side, tanh, h = n + z (h - n) (3) = 11;
           dn (5), dz (5), dr (5), the h side of dn (1), dh z + (1) = 17

The timed phases run without dropout: its masks' multiplies are not counted.
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


def _directions(bidirectional: bool) -> int:
    return 2 if bidirectional else 1


def _layer_inputs(input_size: int, hidden_size: int, num_layers: int, bidirectional: bool) -> list[int]:
    """I_k, the input width of each layer: I, then D*H (impls.params.param_shapes' W_xh)."""
    return [input_size] + [_directions(bidirectional) * hidden_size] * (num_layers - 1)


def num_params(input_size: int, hidden_size: int, num_classes: int, cell: str = "rnn_tanh",
               num_layers: int = 1, bidirectional: bool = False) -> int:
    G, H, D = _gates(cell), hidden_size, _directions(bidirectional)
    b_hn = H if cell == "gru" else 0
    recurrent = sum(G * H * (I_k + H + 1) + b_hn
                    for I_k in _layer_inputs(input_size, H, num_layers, bidirectional))
    return D * recurrent + num_classes * (D * H + 1)


def _layer_forward_flops(B, T, I_k, H, cell) -> int:
    """One layer-direction's forward: input projection and recurrence."""
    GH = _gates(cell) * H
    projection = 2 * B * T * I_k * GH + B * T * GH
    return projection + 2 * B * T * GH * H + FORWARD_ELEMENTWISE[cell] * B * T * H


def _layer_backward_flops(B, T, I_k, H, cell) -> int:
    """One layer-direction's backward loop and weight gradients (no input gradient)."""
    GH = _gates(cell) * H
    loop = BACKWARD_ELEMENTWISE[cell] * B * T * H + 2 * B * (T - 1) * GH * H
    return loop + 2 * B * T * I_k * GH + 2 * B * T * GH * H + B * T * GH + (B * T * H if cell == "gru" else 0)


def forward_flops(batch_size, seq_len, input_size, hidden_size, num_classes=10, cell="rnn_tanh",
                  num_layers=1, bidirectional=False) -> int:
    B, T, H, C, D = batch_size, seq_len, hidden_size, num_classes, _directions(bidirectional)
    layers = sum(D * _layer_forward_flops(B, T, I_k, H, cell)
                 for I_k in _layer_inputs(input_size, H, num_layers, bidirectional))
    return layers + 2 * B * D * H * C + B * C


def backward_flops(batch_size, seq_len, input_size, hidden_size, num_classes=10, cell="rnn_tanh",
                   num_layers=1, bidirectional=False) -> int:
    B, T, H, C, D = batch_size, seq_len, hidden_size, num_classes, _directions(bidirectional)
    GH = _gates(cell) * H
    head = 2 * B * D * H * C + B * C + 2 * B * D * H * C
    total = head
    for k, I_k in enumerate(_layer_inputs(input_size, H, num_layers, bidirectional)):
        total += D * _layer_backward_flops(B, T, I_k, H, cell)
        if k < num_layers - 1:  # the layer above's output gradient enters every step
            total += D * B * T * H
        if k > 0:  # the input gradient, for the layer below, summed over the directions
            total += D * 2 * B * T * GH * I_k + (D - 1) * B * T * I_k
    return total


def phase_flops(phase, batch_size, seq_len, input_size, hidden_size, num_classes=10,
                cell="rnn_tanh", num_layers=1, bidirectional=False) -> int:
    args = (batch_size, seq_len, input_size, hidden_size, num_classes, cell, num_layers, bidirectional)
    if phase == "forward":
        return forward_flops(*args)
    if phase == "backward":
        return backward_flops(*args)
    if phase == "transfer":
        return 0  # copies, no arithmetic
    if phase == "train_step":
        return (forward_flops(*args) + backward_flops(*args) + 5 * batch_size * num_classes
                + ADAM_FLOPS_PER_PARAM * num_params(input_size, hidden_size, num_classes, cell,
                                                    num_layers, bidirectional))
    raise ValueError(f"unknown phase {phase!r}")


# What the backward needs of each step besides h_t, per hidden unit: lstm c_t, the four
# gate activations and tanh(c_t); gru the three gate activations and h W_hn + b_hn.
SAVED_PER_STEP = {"rnn_tanh": 0, "lstm": 6, "gru": 4}


def activation_bytes(phase, batch_size, seq_len, input_size, hidden_size, dtype="float32",
                     cell="rnn_tanh", num_layers=1, bidirectional=False) -> int:
    """What backpropagation through time must hold, by analysis, per layer-direction (L x D
    of them, summed): the hidden states of every step (B x (T+1) x H), what the cell saves
    per step (SAVED_PER_STEP) and the input projection (T x B x GH) for a training forward;
    in backward, the per-step gate gradients (T x B x GH; gru a second set for its h side)
    too, and for each layer k >= 1 the gradient w.r.t. its input (T x B x DH), which is the
    layer below's output gradient. Layer k >= 1 reads layer k-1's states, already counted.
    Inference keeps, per layer-direction, one state (lstm: and one cell state) beside the
    input projection, and below the last layer every step's output (T x B x H), which the
    layer above reads. Parameters and inputs are excluded (they exist before the phase)."""
    item = np.dtype(dtype).itemsize
    B, T, H = batch_size, seq_len, hidden_size
    L, D = num_layers, _directions(bidirectional)
    GH = _gates(cell) * H
    if phase == "transfer":
        return item * B * T * input_size  # the input's copy on the other side
    if phase == "forward":
        return item * (L * D * (T * B * GH + B * H * (2 if cell == "lstm" else 1)) + (L - 1) * D * T * B * H)
    states = L * D * ((T + 1) * B * H + SAVED_PER_STEP[cell] * T * B * H + T * B * GH)
    gradients = L * D * T * B * GH * (2 if cell == "gru" else 1) + (L - 1) * T * B * D * H
    if phase == "backward":
        return item * gradients
    if phase == "train_step":
        return item * (states + gradients)
    raise ValueError(f"unknown phase {phase!r}")
