"""Analytic work and memory of the model: the one place the formulas live.

FLOPs count a multiply-add as 2 and every element-wise operation (add, multiply,
tanh) as 1; B batch, T seq_len, I input, H hidden, C classes.

forward    input projection 2BTIH + BTH (bias), recurrence 2BTH^2 + BTH (add) + BTH (tanh),
           head 2BHC + BC
backward   head: dW_hy 2BHC, db_y BC, dh_T 2BHC;
           loop: (1 - h^2) * dh 3BTH, dh W_hh 2B(T-1)H^2;
           after the loop: dW_xh 2BTIH, dW_hh 2BTH^2, db_h BTH
train_step forward + backward + softmax cross-entropy (~5BC) + Adam (~12 per parameter)
"""
from __future__ import annotations

import numpy as np

ADAM_FLOPS_PER_PARAM = 12  # two moment updates, bias corrections, sqrt, divide, step


def num_params(input_size: int, hidden_size: int, num_classes: int) -> int:
    return hidden_size * (input_size + hidden_size + 1) + num_classes * (hidden_size + 1)


def forward_flops(batch_size, seq_len, input_size, hidden_size, num_classes=10) -> int:
    B, T, I, H, C = batch_size, seq_len, input_size, hidden_size, num_classes
    return 2 * B * T * I * H + B * T * H + 2 * B * T * H * H + 2 * B * T * H + 2 * B * H * C + B * C


def backward_flops(batch_size, seq_len, input_size, hidden_size, num_classes=10) -> int:
    B, T, I, H, C = batch_size, seq_len, input_size, hidden_size, num_classes
    head = 2 * B * H * C + B * C + 2 * B * H * C
    loop = 3 * B * T * H + 2 * B * (T - 1) * H * H
    after = 2 * B * T * I * H + 2 * B * T * H * H + B * T * H
    return head + loop + after


def phase_flops(phase, batch_size, seq_len, input_size, hidden_size, num_classes=10) -> int:
    args = (batch_size, seq_len, input_size, hidden_size, num_classes)
    if phase == "forward":
        return forward_flops(*args)
    if phase == "backward":
        return backward_flops(*args)
    if phase == "transfer":
        return 0  # copies, no arithmetic
    if phase == "train_step":
        return (forward_flops(*args) + backward_flops(*args) + 5 * batch_size * num_classes
                + ADAM_FLOPS_PER_PARAM * num_params(input_size, hidden_size, num_classes))
    raise ValueError(f"unknown phase {phase!r}")


def activation_bytes(phase, batch_size, seq_len, input_size, hidden_size, dtype="float32") -> int:
    """What backpropagation through time must hold, by analysis: the hidden states of every
    step (B x (T+1) x H) plus the input projection (T x B x H) for a training forward; in
    backward, the per-step gradients (T x B x H) too. Inference keeps one state (B x H)
    beside the input projection. Parameters and inputs are excluded (they exist before
    the phase)."""
    item = np.dtype(dtype).itemsize
    B, T, H = batch_size, seq_len, hidden_size
    if phase == "transfer":
        return item * B * T * input_size  # the input's copy on the other side
    if phase == "forward":
        return item * (T * B * H + B * H)
    states = (T + 1) * B * H + T * B * H
    if phase == "backward":
        return item * T * B * H
    if phase == "train_step":
        return item * (states + T * B * H)
    raise ValueError(f"unknown phase {phase!r}")
