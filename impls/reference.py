"""The RNN classifier's math with full backpropagation through time, written once against
an array namespace `xp` (NumPy here, CuPy on a GPU, array-api-strict in the portability
test). Only array-API functions are used, so the same code runs unchanged on each.

    h_0 = c_0 = 0                                           t = 1..T
    rnn_tanh  h_t = tanh(x_t W_xh^T + h_{t-1} W_hh^T + b_h)
    lstm      [i f g o] = x_t W_xh^T + h_{t-1} W_hh^T + b_h;  i, f, o = sigma, g = tanh
              c_t = f * c_{t-1} + i * g,  h_t = o * tanh(c_t)
    gru       [r z] = sigma(x_t W_x{r,z}^T + h_{t-1} W_h{r,z}^T + b_{r,z})
              n = tanh(x_t W_xn^T + b_in + r * (h_{t-1} W_hn^T + b_hn)),  h_t = (1 - z) * n + z * h_{t-1}
    logits = h_L W_hy^T + b_y                               L = T, or lengths[i] per sequence

The cell is read off the params (impls.params). For every cell the input projection of
all steps is one GEMM before the loop, one fused recurrent GEMM of all gates per step, and
the weight gradients are GEMMs over all steps after the backward loop.

Shapes: B batch_size, T seq_len, I input_size, H hidden_size, C num_classes, G gates
(1, 4, 3).
"""
from __future__ import annotations

from .params import cell_fast


def _last_step_mask(xp, lengths, seq_len, dtype):
    """(T, B, 1) one-hot over time: 1 where t+1 == lengths[b]. Selecting h by a mask (not
    fancy indexing) keeps this array-API portable; it costs one extra multiply-add."""
    steps = xp.reshape(xp.arange(1, seq_len + 1, dtype=lengths.dtype), (seq_len, 1))  # (T, 1)
    mask = xp.astype(steps == xp.reshape(lengths, (1, -1)), dtype)  # (T, B)
    return xp.reshape(mask, (*mask.shape, 1))  # (T, B, 1)


class Kernels:
    """The element-wise steps of the recurrence, overridable by a backend that fuses them
    (CuPy: one kernel launch instead of three); these defaults are plain array-API code."""

    @staticmethod
    def tanh_step(xp, pre_t, recurrent):
        return xp.tanh(pre_t + recurrent)  # h_t

    @staticmethod
    def tanh_backward(xp, dh, h):
        return dh * (1 - h * h)  # d tanh(a) = 1 - tanh(a)^2, from the output h


# --- the parts of a forward and a backward, named so `rnnbench profile` times these very
# functions one by one (bench/profile.py), not a copy of them ------------------------------

def time_major_rows(xp, x, *, copy: bool):
    """(B, T, I) -> (T*B, I), time-major rows for one GEMM over every step. With copy=True
    the result never aliases x (a cache must not change if the caller reuses x's buffer)."""
    batch_size, seq_len, input_size = x.shape
    xs = xp.reshape(xp.permute_dims(x, (1, 0, 2)), (seq_len * batch_size, input_size))  # (T*B, I)
    if copy and (batch_size == 1 or seq_len == 1):
        # then the reshape is a view of x (with B, T > 1 the reshape already copies)
        xs = xp.asarray(xs, copy=True)
    return xs


def input_projection(xp, xs, W_xh, b_h, seq_len: int, batch_size: int):
    """Every step's x_t W_xh^T + b_h as one GEMM, outside the recurrence -> (T, B, H)."""
    pre_x = xs @ W_xh.T  # (T*B, H)
    pre_x += b_h  # in place: no second (T*B, H) array
    return xp.reshape(pre_x, (seq_len, batch_size, W_xh.shape[0]))  # (T, B, H)


def transposed_copy(xp, W):
    """A C-ordered copy of W^T, not the transposed view: OpenBLAS's AVX-512 kernels run
    h @ W^T about 1.8x faster from it at B=32, H=128 (measured; same speed under AVX2).
    Reshaping through 1-D is the array-API way to force the copy (no order= there)."""
    return xp.reshape(xp.reshape(W.T, (-1,)), W.shape[::-1])


def head(h_last, W_hy, b_y):
    return h_last @ W_hy.T + b_y  # (B, C)


def sigmoid(xp, a):
    """1 / (1 + exp(-a)) as 0.5 * (1 + tanh(a / 2)): the same function, no overflow for
    large negative a, and tanh is in the array API."""
    return 0.5 * (1 + xp.tanh(0.5 * a))


def forward(xp, params, x, lengths=None, *, keep_states=True, kernels=Kernels):
    """-> (logits (B, C), cache) for the params' cell. With keep_states=False only the
    running state is kept: O(B*H) memory instead of O(T*B*H), for inference."""
    cell = cell_fast(params)
    if cell == "lstm":
        return lstm_forward(xp, params, x, lengths, keep_states=keep_states)
    if cell == "gru":
        return gru_forward(xp, params, x, lengths, keep_states=keep_states)
    return tanh_forward(xp, params, x, lengths, keep_states=keep_states, kernels=kernels)


def backward(xp, params, cache, dlogits, *, kernels=Kernels):
    """Gradients of sum(logits * dlogits), canonical keys of the params' cell. Calling it
    again on the same cache is safe: every slot of the scratch is rewritten."""
    cell = cell_fast(params)
    if cell == "lstm":
        return lstm_backward(xp, params, cache, dlogits)
    if cell == "gru":
        return gru_backward(xp, params, cache, dlogits)
    return tanh_backward(xp, params, cache, dlogits, kernels=kernels)


def tanh_forward(xp, params, x, lengths=None, *, keep_states=True, kernels=Kernels):
    """rnn_tanh: -> (logits (B, C), cache). With keep_states=False only the running h is kept:
    O(B*H) memory instead of O(T*B*H), for inference.

    Large temporaries are few on purpose: each fresh (T, B, H) array costs page faults
    on first touch, which measured as much as the GEMM that fills it on this machine.
    """
    batch_size, seq_len, _ = x.shape
    hidden_size = params["W_hh"].shape[0]
    xs = time_major_rows(xp, x, copy=keep_states)  # (T*B, I)
    pre_x = input_projection(xp, xs, params["W_xh"], params["b_h"], seq_len, batch_size)  # (T, B, H)
    W_hh_T = transposed_copy(xp, params["W_hh"])  # (H, H)
    h = xp.zeros((batch_size, hidden_size), dtype=x.dtype)
    states = None
    if keep_states:
        states = xp.empty((seq_len + 1, batch_size, hidden_size), dtype=x.dtype)  # (T+1, B, H)
        states[0, ...] = h
    mask = None if lengths is None else _last_step_mask(xp, lengths, seq_len, x.dtype)
    h_last = xp.zeros_like(h) if (mask is not None and not keep_states) else None
    for t in range(seq_len):
        h = kernels.tanh_step(xp, pre_x[t, ...], h @ W_hh_T)  # (B, H)
        if keep_states:
            states[t + 1, ...] = h
        elif h_last is not None:
            h_last = h_last + mask[t, ...] * h
    if mask is None:
        h_last = h
    elif keep_states:
        h_last = xp.sum(states[1:, ...] * mask, axis=0)  # (B, H)
    logits = head(h_last, params["W_hy"], params["b_y"])  # (B, C)
    # pre_x is dead after the loop; backward reuses its memory for the per-step gradients.
    cache = {"batch_size": batch_size, "xs": xs, "states": states, "h_last": h_last,
             "mask": mask, "scratch": pre_x if keep_states else None}
    return logits, cache


def head_backward(xp, dlogits, h_last, W_hy):
    """-> (dW_hy (C, H), db_y (C,), dL/dh_L (B, H))."""
    return dlogits.T @ h_last, xp.sum(dlogits, axis=0), dlogits @ W_hy


def weight_gradients(xp, dpre, xs, states):
    """The recurrence's weight gradients as GEMMs over all steps at once, after the loop:
    dpre (T, B, G*H) per-step gate pre-activation gradients -> (dW_xh (G*H, I),
    dW_hh (G*H, H), db_h (G*H,))."""
    seq_len, batch_size, gate_rows = dpre.shape
    dpre = xp.reshape(dpre, (seq_len * batch_size, gate_rows))  # (T*B, G*H)
    h_prev = xp.reshape(states[:-1, ...], (seq_len * batch_size, states.shape[2]))  # (T*B, H)
    return dpre.T @ xs, dpre.T @ h_prev, xp.sum(dpre, axis=0)


def tanh_backward(xp, params, cache, dlogits, *, kernels=Kernels):
    """rnn_tanh: gradients of sum(logits * dlogits). The loop carries only dh through time;
    the weight gradients of the recurrence are GEMMs over all steps at once, after it."""
    W_hh = params["W_hh"]
    states, mask = cache["states"], cache["mask"]
    seq_len = states.shape[0] - 1
    dW_hy, db_y, dh_head = head_backward(xp, dlogits, cache["h_last"], params["W_hy"])
    dpre = cache["scratch"]  # (T, B, H): gradient w.r.t. each step's pre-activation
    dh = xp.zeros_like(dh_head) if mask is not None else dh_head
    for t in range(seq_len - 1, -1, -1):
        if mask is not None:
            dh = dh + mask[t, ...] * dh_head  # the head reads h at each sequence's own last step
        da = kernels.tanh_backward(xp, dh, states[t + 1, ...])  # (B, H): through tanh
        dpre[t, ...] = da
        if t > 0:  # h_0 is a constant zero: no gradient flows into it
            dh = da @ W_hh
    dW_xh, dW_hh, db_h = weight_gradients(xp, dpre, cache["xs"], states)
    return {"W_xh": dW_xh, "W_hh": dW_hh, "b_h": db_h, "W_hy": dW_hy, "b_y": db_y}


def _classify(xp, params, states, mask, h, h_last):
    """(h at each sequence's last step, logits): h_last as accumulated by an inference loop,
    else the final h, or the mask-selected stored state."""
    if h_last is None:
        h_last = h if mask is None else xp.sum(states[1:, ...] * mask, axis=0)  # (B, H)
    return h_last, head(h_last, params["W_hy"], params["b_y"])


# --- lstm --------------------------------------------------------------------------------

def lstm_forward(xp, params, x, lengths=None, *, keep_states=True):
    """-> (logits (B, C), cache). Gate rows in PyTorch's order i, f, g, o."""
    batch_size, seq_len, _ = x.shape
    H = params["W_hy"].shape[1]
    xs = time_major_rows(xp, x, copy=keep_states)  # (T*B, I)
    pre_x = input_projection(xp, xs, params["W_xh"], params["b_h"], seq_len, batch_size)  # (T, B, 4H)
    W_hh_T = transposed_copy(xp, params["W_hh"])  # (H, 4H)
    h = xp.zeros((batch_size, H), dtype=x.dtype)
    c = xp.zeros_like(h)
    mask = None if lengths is None else _last_step_mask(xp, lengths, seq_len, x.dtype)
    states = cells = acts = tanh_c = None
    if keep_states:
        states = xp.empty((seq_len + 1, batch_size, H), dtype=x.dtype)  # (T+1, B, H): h_0..h_T
        cells = xp.empty((seq_len + 1, batch_size, H), dtype=x.dtype)  # (T+1, B, H): c_0..c_T
        acts = xp.empty((seq_len, batch_size, 4 * H), dtype=x.dtype)  # (T, B, 4H): i f g o
        tanh_c = xp.empty((seq_len, batch_size, H), dtype=x.dtype)  # (T, B, H)
        states[0, ...], cells[0, ...] = h, c
    h_last = xp.zeros_like(h) if (mask is not None and not keep_states) else None
    for t in range(seq_len):
        a = pre_x[t, ...] + h @ W_hh_T  # (B, 4H): all gates in one recurrent GEMM
        gates = sigmoid(xp, a)  # i, f, o are read from here; the g quarter is replaced below
        i, f, o = gates[:, :H], gates[:, H:2 * H], gates[:, 3 * H:]
        g = xp.tanh(a[:, 2 * H:3 * H])
        c = f * c + i * g
        tc = xp.tanh(c)
        h = o * tc  # (B, H)
        if keep_states:
            states[t + 1, ...], cells[t + 1, ...], tanh_c[t, ...] = h, c, tc
            acts[t, ...] = gates
            acts[t, :, 2 * H:3 * H] = g
        elif h_last is not None:
            h_last = h_last + mask[t, ...] * h
    h_last, logits = _classify(xp, params, states, mask, h, h_last)  # (B, H), (B, C)
    cache = {"batch_size": batch_size, "xs": xs, "states": states, "cells": cells, "acts": acts,
             "tanh_c": tanh_c, "h_last": h_last, "mask": mask,
             "scratch": pre_x if keep_states else None}  # pre_x is dead: backward's dpre
    return logits, cache


def lstm_backward(xp, params, cache, dlogits):
    """Gradients of sum(logits * dlogits); dh and dc carried back through time."""
    states, cells, acts, tanh_c, mask = (cache[k] for k in ("states", "cells", "acts", "tanh_c", "mask"))
    seq_len, H = acts.shape[0], states.shape[2]
    W_hh = params["W_hh"]  # (4H, H)
    dW_hy, db_y, dh_head = head_backward(xp, dlogits, cache["h_last"], params["W_hy"])
    dpre = cache["scratch"]  # (T, B, 4H): gradient w.r.t. each step's gate pre-activations
    dh = xp.zeros_like(dh_head) if mask is not None else dh_head
    dc = xp.zeros_like(dh_head)
    for t in range(seq_len - 1, -1, -1):
        if mask is not None:
            dh = dh + mask[t, ...] * dh_head
        i, f, g, o = (acts[t, :, k * H:(k + 1) * H] for k in range(4))  # (B, H) each
        tc = tanh_c[t, ...]
        dc = dc + dh * o * (1 - tc * tc)  # through h_t = o * tanh(c_t)
        dpre[t, :, :H] = dc * g * i * (1 - i)  # through i = sigma
        dpre[t, :, H:2 * H] = dc * cells[t, ...] * f * (1 - f)  # through f = sigma
        dpre[t, :, 2 * H:3 * H] = dc * i * (1 - g * g)  # through g = tanh
        dpre[t, :, 3 * H:] = dh * tc * o * (1 - o)  # through o = sigma
        dc = dc * f  # to c_{t-1}
        if t > 0:  # h_0 is a constant zero: no gradient flows into it
            dh = dpre[t, ...] @ W_hh  # (B, 4H) @ (4H, H)
    dW_xh, dW_hh, db_h = weight_gradients(xp, dpre, cache["xs"], states)
    return {"W_xh": dW_xh, "W_hh": dW_hh, "b_h": db_h, "W_hy": dW_hy, "b_y": db_y}


# --- gru ---------------------------------------------------------------------------------

def gru_forward(xp, params, x, lengths=None, *, keep_states=True):
    """-> (logits (B, C), cache). Gate rows in PyTorch's order r, z, n; b_h holds
    b_ir + b_hr, b_iz + b_hz and b_in, b_hn stays inside the reset product."""
    batch_size, seq_len, _ = x.shape
    H = params["W_hy"].shape[1]
    xs = time_major_rows(xp, x, copy=keep_states)  # (T*B, I)
    pre_x = input_projection(xp, xs, params["W_xh"], params["b_h"], seq_len, batch_size)  # (T, B, 3H)
    W_hh_T = transposed_copy(xp, params["W_hh"])  # (H, 3H)
    b_hn = params["b_hn"]
    h = xp.zeros((batch_size, H), dtype=x.dtype)
    mask = None if lengths is None else _last_step_mask(xp, lengths, seq_len, x.dtype)
    states = acts = hns = None
    if keep_states:
        states = xp.empty((seq_len + 1, batch_size, H), dtype=x.dtype)  # (T+1, B, H): h_0..h_T
        acts = xp.empty((seq_len, batch_size, 3 * H), dtype=x.dtype)  # (T, B, 3H): r z n
        hns = xp.empty((seq_len, batch_size, H), dtype=x.dtype)  # (T, B, H): h W_hn^T + b_hn
        states[0, ...] = h
    h_last = xp.zeros_like(h) if (mask is not None and not keep_states) else None
    for t in range(seq_len):
        hw = h @ W_hh_T  # (B, 3H): all gates in one recurrent GEMM
        rz = sigmoid(xp, pre_x[t, :, :2 * H] + hw[:, :2 * H])  # (B, 2H)
        r, z = rz[:, :H], rz[:, H:]
        hn = hw[:, 2 * H:] + b_hn  # (B, H)
        n = xp.tanh(pre_x[t, :, 2 * H:] + r * hn)
        h = n + z * (h - n)  # (1 - z) * n + z * h_{t-1}
        if keep_states:
            states[t + 1, ...], hns[t, ...] = h, hn
            acts[t, :, :2 * H] = rz
            acts[t, :, 2 * H:] = n
        elif h_last is not None:
            h_last = h_last + mask[t, ...] * h
    h_last, logits = _classify(xp, params, states, mask, h, h_last)  # (B, H), (B, C)
    cache = {"batch_size": batch_size, "xs": xs, "states": states, "acts": acts, "hns": hns,
             "h_last": h_last, "mask": mask, "scratch": pre_x if keep_states else None}
    return logits, cache


def gru_backward(xp, params, cache, dlogits):
    """Gradients of sum(logits * dlogits). The x side and the h side of each gate differ
    only for n (r multiplies the h side), so two (T, B, 3H) gradients are kept: dpre for
    W_xh and b_h, dhw for W_hh and b_hn."""
    states, acts, hns, mask = (cache[k] for k in ("states", "acts", "hns", "mask"))
    seq_len, batch_size, H = acts.shape[0], states.shape[1], states.shape[2]
    W_hh = params["W_hh"]  # (3H, H)
    dW_hy, db_y, dh_head = head_backward(xp, dlogits, cache["h_last"], params["W_hy"])
    dpre = cache["scratch"]  # (T, B, 3H): w.r.t. x W_xh^T + b_h
    dhw = xp.empty((seq_len, batch_size, 3 * H), dtype=dlogits.dtype)  # (T, B, 3H): w.r.t. h W_hh^T (+ b_hn)
    dh = xp.zeros_like(dh_head) if mask is not None else dh_head
    for t in range(seq_len - 1, -1, -1):
        if mask is not None:
            dh = dh + mask[t, ...] * dh_head
        r, z, n = (acts[t, :, k * H:(k + 1) * H] for k in range(3))  # (B, H) each
        dan = dh * (1 - z) * (1 - n * n)  # through h_t's n term and n = tanh
        dz = dh * (states[t, ...] - n) * z * (1 - z)  # through h_t's z terms and z = sigma
        dr = dan * hns[t, ...] * r * (1 - r)  # through r * (h W_hn^T + b_hn) and r = sigma
        dpre[t, :, :H], dpre[t, :, H:2 * H], dpre[t, :, 2 * H:] = dr, dz, dan
        dhw[t, :, :H], dhw[t, :, H:2 * H], dhw[t, :, 2 * H:] = dr, dz, dan * r
        if t > 0:  # h_0 is a constant zero: no gradient flows into it
            dh = dh * z + dhw[t, ...] @ W_hh  # direct path + (B, 3H) @ (3H, H)
    xs = cache["xs"]
    dpre_2d = xp.reshape(dpre, (seq_len * batch_size, 3 * H))  # (T*B, 3H)
    dhw_2d = xp.reshape(dhw, (seq_len * batch_size, 3 * H))  # (T*B, 3H)
    h_prev = xp.reshape(states[:-1, ...], (seq_len * batch_size, H))  # (T*B, H)
    return {"W_xh": dpre_2d.T @ xs, "W_hh": dhw_2d.T @ h_prev, "b_h": xp.sum(dpre_2d, axis=0),
            "b_hn": xp.sum(dhw_2d[:, 2 * H:], axis=0), "W_hy": dW_hy, "b_y": db_y}
