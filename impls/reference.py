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

from .params import cell_fast, directions, is_plain, layer_params, structure_of, suffix


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


def forward(xp, params, x, lengths=None, *, keep_states=True, kernels=Kernels, dropout=None):
    """-> (logits (B, C), cache) for the params' cell and structure. With keep_states=False
    only the running state of the last layer is kept: O(B*H) memory instead of O(T*B*H),
    for inference. `dropout`: masks as impls.dropout makes them (training only)."""
    if dropout is not None or not is_plain(params):
        return stack_forward(xp, params, x, lengths, keep_states=keep_states, kernels=kernels,
                             dropout=dropout)
    cell = cell_fast(params)
    batch_size, seq_len, _ = x.shape
    xs = time_major_rows(xp, x, copy=keep_states)  # (T*B, I)
    mask = None if lengths is None else _last_step_mask(xp, lengths, seq_len, x.dtype)
    h_last, cache = LAYERS[cell][0](xp, params, xs, seq_len, batch_size, mask,
                                    keep_states=keep_states, kernels=kernels)
    logits = head(h_last, params["W_hy"], params["b_y"])  # (B, C)
    cache.update(batch_size=batch_size, h_last=h_last, mask=mask)
    return logits, cache


def backward(xp, params, cache, dlogits, *, kernels=Kernels):
    """Gradients of sum(logits * dlogits), canonical keys of the params' cell. Calling it
    again on the same cache is safe: every slot of the scratch is rewritten."""
    if "layers" in cache:
        return stack_backward(xp, params, cache, dlogits, kernels=kernels)
    cell = cell_fast(params)
    dW_hy, db_y, dh_head = head_backward(xp, dlogits, cache["h_last"], params["W_hy"])
    grads, _ = LAYERS[cell][1](xp, params, cache, dh_head, cache["mask"], kernels=kernels)
    grads.update(W_hy=dW_hy, b_y=db_y)
    return grads


# --- one layer-direction of each cell: xs (T*B, In) time-major rows in, its states out ---
# `mask` (T, B, 1) marks each sequence's last step (None: step T). The backward of a layer
# takes the head's gradient w.r.t. its final state (dh_head, None for a layer below the
# last) and `dout` (T, B, H), the gradient w.r.t. every step's output from the layer above.

def _initial_dh(xp, dh_head, mask, batch_size, hidden_size, dtype):
    if dh_head is not None and mask is None:
        return dh_head  # the head reads h_T: its gradient enters at the first backward step
    return xp.zeros((batch_size, hidden_size), dtype=dtype)


def _into_step(dh, t, dh_head, mask, dout):
    """dh at step t plus what reaches h_t from outside the recurrence."""
    if dh_head is not None and mask is not None:
        dh = dh + mask[t, ...] * dh_head  # the head reads h at each sequence's own last step
    if dout is not None:
        dh = dh + dout[t, ...]  # the layer above (or the next direction's input) reads h_t
    return dh


def _input_gradient(xp, dpre, W_xh, need_dx: bool):
    """dL/dxs (T*B, In) = dpre (T, B, G*H) @ W_xh, one GEMM after the loop, when a layer
    below needs it."""
    if not need_dx:
        return None
    seq_len, batch_size, gate_rows = dpre.shape
    return xp.reshape(dpre, (seq_len * batch_size, gate_rows)) @ W_xh  # (T*B, In)


def _final_state(xp, states, mask, h, h_last):
    """h at each sequence's last step: h_last as accumulated by an inference loop, else the
    final h, or the mask-selected stored state."""
    if h_last is not None:
        return h_last
    return h if mask is None else xp.sum(states[1:, ...] * mask, axis=0)  # (B, H)


def tanh_layer(xp, p, xs, seq_len, batch_size, mask, *, keep_states=True, kernels=Kernels):
    """rnn_tanh: -> (h at each sequence's last step (B, H), cache).

    Large temporaries are few on purpose: each fresh (T, B, H) array costs page faults
    on first touch, which measured as much as the GEMM that fills it on this machine.
    """
    hidden_size = p["W_hh"].shape[0]
    pre_x = input_projection(xp, xs, p["W_xh"], p["b_h"], seq_len, batch_size)  # (T, B, H)
    W_hh_T = transposed_copy(xp, p["W_hh"])  # (H, H)
    h = xp.zeros((batch_size, hidden_size), dtype=xs.dtype)
    states = None
    if keep_states:
        states = xp.empty((seq_len + 1, batch_size, hidden_size), dtype=xs.dtype)  # (T+1, B, H)
        states[0, ...] = h
    h_last = xp.zeros_like(h) if (mask is not None and not keep_states) else None
    for t in range(seq_len):
        h = kernels.tanh_step(xp, pre_x[t, ...], h @ W_hh_T)  # (B, H)
        if keep_states:
            states[t + 1, ...] = h
        elif h_last is not None:
            h_last = h_last + mask[t, ...] * h
    # pre_x is dead after the loop; backward reuses its memory for the per-step gradients.
    cache = {"xs": xs, "states": states, "scratch": pre_x if keep_states else None}
    return _final_state(xp, states, mask, h, h_last), cache


def head_backward(xp, dlogits, h_last, W_hy):
    """-> (dW_hy (C, D*H), db_y (C,), dL/dh_L (B, D*H))."""
    return dlogits.T @ h_last, xp.sum(dlogits, axis=0), dlogits @ W_hy


def weight_gradients(xp, dpre, xs, states):
    """The recurrence's weight gradients as GEMMs over all steps at once, after the loop:
    dpre (T, B, G*H) per-step gate pre-activation gradients -> (dW_xh (G*H, I),
    dW_hh (G*H, H), db_h (G*H,))."""
    seq_len, batch_size, gate_rows = dpre.shape
    dpre = xp.reshape(dpre, (seq_len * batch_size, gate_rows))  # (T*B, G*H)
    h_prev = xp.reshape(states[:-1, ...], (seq_len * batch_size, states.shape[2]))  # (T*B, H)
    return dpre.T @ xs, dpre.T @ h_prev, xp.sum(dpre, axis=0)


def tanh_layer_backward(xp, p, cache, dh_head, mask, dout=None, *, need_dx=False, kernels=Kernels):
    """rnn_tanh: -> (grads of W_xh, W_hh, b_h; dL/dxs or None). The loop carries only dh
    through time; the weight gradients are GEMMs over all steps at once, after it."""
    W_hh = p["W_hh"]
    states = cache["states"]
    seq_len, batch_size, hidden_size = states.shape[0] - 1, states.shape[1], states.shape[2]
    dpre = cache["scratch"]  # (T, B, H): gradient w.r.t. each step's pre-activation
    dh = _initial_dh(xp, dh_head, mask, batch_size, hidden_size, states.dtype)
    for t in range(seq_len - 1, -1, -1):
        dh = _into_step(dh, t, dh_head, mask, dout)
        da = kernels.tanh_backward(xp, dh, states[t + 1, ...])  # (B, H): through tanh
        dpre[t, ...] = da
        if t > 0:  # h_0 is a constant zero: no gradient flows into it
            dh = da @ W_hh
    dW_xh, dW_hh, db_h = weight_gradients(xp, dpre, cache["xs"], states)
    return {"W_xh": dW_xh, "W_hh": dW_hh, "b_h": db_h}, _input_gradient(xp, dpre, p["W_xh"], need_dx)


# --- lstm --------------------------------------------------------------------------------

def lstm_layer(xp, p, xs, seq_len, batch_size, mask, *, keep_states=True, kernels=Kernels):
    """-> (h at each sequence's last step (B, H), cache). Gate rows in PyTorch's order i, f, g, o."""
    H = p["W_hh"].shape[1]
    pre_x = input_projection(xp, xs, p["W_xh"], p["b_h"], seq_len, batch_size)  # (T, B, 4H)
    W_hh_T = transposed_copy(xp, p["W_hh"])  # (H, 4H)
    h = xp.zeros((batch_size, H), dtype=xs.dtype)
    c = xp.zeros_like(h)
    states = cells = acts = tanh_c = None
    if keep_states:
        states = xp.empty((seq_len + 1, batch_size, H), dtype=xs.dtype)  # (T+1, B, H): h_0..h_T
        cells = xp.empty((seq_len + 1, batch_size, H), dtype=xs.dtype)  # (T+1, B, H): c_0..c_T
        acts = xp.empty((seq_len, batch_size, 4 * H), dtype=xs.dtype)  # (T, B, 4H): i f g o
        tanh_c = xp.empty((seq_len, batch_size, H), dtype=xs.dtype)  # (T, B, H)
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
    cache = {"xs": xs, "states": states, "cells": cells, "acts": acts, "tanh_c": tanh_c,
             "scratch": pre_x if keep_states else None}  # pre_x is dead: backward's dpre
    return _final_state(xp, states, mask, h, h_last), cache


def lstm_layer_backward(xp, p, cache, dh_head, mask, dout=None, *, need_dx=False, kernels=Kernels):
    """-> (grads of W_xh, W_hh, b_h; dL/dxs or None); dh and dc carried back through time."""
    states, cells, acts, tanh_c = (cache[k] for k in ("states", "cells", "acts", "tanh_c"))
    seq_len, batch_size, H = acts.shape[0], states.shape[1], states.shape[2]
    W_hh = p["W_hh"]  # (4H, H)
    dpre = cache["scratch"]  # (T, B, 4H): gradient w.r.t. each step's gate pre-activations
    dh = _initial_dh(xp, dh_head, mask, batch_size, H, states.dtype)
    dc = xp.zeros((batch_size, H), dtype=states.dtype)
    for t in range(seq_len - 1, -1, -1):
        dh = _into_step(dh, t, dh_head, mask, dout)
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
    return {"W_xh": dW_xh, "W_hh": dW_hh, "b_h": db_h}, _input_gradient(xp, dpre, p["W_xh"], need_dx)


# --- gru ---------------------------------------------------------------------------------

def gru_layer(xp, p, xs, seq_len, batch_size, mask, *, keep_states=True, kernels=Kernels):
    """-> (h at each sequence's last step (B, H), cache). Gate rows in PyTorch's order r, z,
    n; b_h holds b_ir + b_hr, b_iz + b_hz and b_in, b_hn stays inside the reset product."""
    H = p["W_hh"].shape[1]
    pre_x = input_projection(xp, xs, p["W_xh"], p["b_h"], seq_len, batch_size)  # (T, B, 3H)
    W_hh_T = transposed_copy(xp, p["W_hh"])  # (H, 3H)
    b_hn = p["b_hn"]
    h = xp.zeros((batch_size, H), dtype=xs.dtype)
    states = acts = hns = None
    if keep_states:
        states = xp.empty((seq_len + 1, batch_size, H), dtype=xs.dtype)  # (T+1, B, H): h_0..h_T
        acts = xp.empty((seq_len, batch_size, 3 * H), dtype=xs.dtype)  # (T, B, 3H): r z n
        hns = xp.empty((seq_len, batch_size, H), dtype=xs.dtype)  # (T, B, H): h W_hn^T + b_hn
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
    cache = {"xs": xs, "states": states, "acts": acts, "hns": hns,
             "scratch": pre_x if keep_states else None}
    return _final_state(xp, states, mask, h, h_last), cache


def gru_layer_backward(xp, p, cache, dh_head, mask, dout=None, *, need_dx=False, kernels=Kernels):
    """-> (grads of W_xh, W_hh, b_h, b_hn; dL/dxs or None). The x side and the h side of each
    gate differ only for n (r multiplies the h side), so two (T, B, 3H) gradients are kept:
    dpre for W_xh and b_h, dhw for W_hh and b_hn."""
    states, acts, hns = (cache[k] for k in ("states", "acts", "hns"))
    seq_len, batch_size, H = acts.shape[0], states.shape[1], states.shape[2]
    W_hh = p["W_hh"]  # (3H, H)
    dpre = cache["scratch"]  # (T, B, 3H): w.r.t. x W_xh^T + b_h
    dhw = xp.empty((seq_len, batch_size, 3 * H), dtype=states.dtype)  # (T, B, 3H): w.r.t. h W_hh^T (+ b_hn)
    dh = _initial_dh(xp, dh_head, mask, batch_size, H, states.dtype)
    for t in range(seq_len - 1, -1, -1):
        dh = _into_step(dh, t, dh_head, mask, dout)
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
    grads = {"W_xh": dpre_2d.T @ xs, "W_hh": dhw_2d.T @ h_prev, "b_h": xp.sum(dpre_2d, axis=0),
             "b_hn": xp.sum(dhw_2d[:, 2 * H:], axis=0)}
    return grads, _input_gradient(xp, dpre, p["W_xh"], need_dx)


# (forward, backward) of one layer-direction, per cell
LAYERS = {"rnn_tanh": (tanh_layer, tanh_layer_backward), "lstm": (lstm_layer, lstm_layer_backward),
          "gru": (gru_layer, gru_layer_backward)}


# --- stacked and bidirectional models, with dropout --------------------------------------
# Layer k >= 1 reads the concatenated outputs of both directions of layer k-1 (dropout'd
# in training); the reverse direction reads each sequence reversed within its own length
# (steps lengths[i]..1, as PyTorch's packed sequences do), so its final state has seen the
# whole sequence and right-padding never reaches it. The head reads every direction's final
# state of the last layer, forward first.

def reversal_index(xp, lengths, seq_len: int, batch_size: int):
    """Flat row indices (T*B,) that reverse each sequence of time-major rows within its
    length: row (t, b) <- (lengths[b]-1-t, b) for t < lengths[b], itself after. It is its
    own inverse. None when every sequence has length T: then a flip does it."""
    if lengths is None:
        return None
    steps = xp.reshape(xp.arange(seq_len, dtype=lengths.dtype), (seq_len, 1))  # (T, 1)
    n = xp.reshape(lengths, (1, batch_size))  # (1, B)
    source = xp.where(steps < n, n - 1 - steps, steps)  # (T, B)
    columns = xp.reshape(xp.arange(batch_size, dtype=lengths.dtype), (1, batch_size))
    return xp.reshape(source * batch_size + columns, (-1,))  # (T*B,)


def reverse_rows(xp, rows, index, seq_len: int, batch_size: int):
    """(T*B, F) time-major rows, each sequence reversed in time within its length."""
    if index is not None:
        return xp.take(rows, index, axis=0)
    steps = xp.reshape(rows, (seq_len, batch_size, rows.shape[1]))  # (T, B, F)
    return xp.reshape(xp.flip(steps, axis=0), rows.shape)


def stack_forward(xp, params, x, lengths=None, *, keep_states=True, kernels=Kernels, dropout=None,
                  layers=None):
    """-> (logits (B, C), cache) of a model of any depth and direction count. `layers`:
    {cell: (layer forward, layer backward)} with LAYERS' signatures (default LAYERS): a
    backend with its own per-layer kernels (numba) composes them here, written once."""
    cell, (num_layers, bidirectional) = cell_fast(params), structure_of(params)
    layer_forward = (layers or LAYERS)[cell][0]
    batch_size, seq_len, _ = x.shape
    mask = None if lengths is None else _last_step_mask(xp, lengths, seq_len, x.dtype)
    index = reversal_index(xp, lengths, seq_len, batch_size) if bidirectional else None
    rows = time_major_rows(xp, x, copy=True)  # (T*B, I)
    per_layer = []
    for layer in range(num_layers):
        last = layer == num_layers - 1
        finals, caches, outputs = [], [], []
        for reverse in directions(bidirectional):
            inputs = reverse_rows(xp, rows, index, seq_len, batch_size) if reverse else rows
            h_last, cache = layer_forward(xp, layer_params(params, layer, reverse), inputs,
                                          seq_len, batch_size, mask,
                                          keep_states=keep_states or not last, kernels=kernels)
            finals.append(h_last)
            caches.append(cache)
            if not last:
                out = xp.reshape(cache["states"][1:, ...], (seq_len * batch_size, -1))  # (T*B, H)
                outputs.append(reverse_rows(xp, out, index, seq_len, batch_size) if reverse else out)
        per_layer.append(caches)
        if not last:
            rows = xp.concat(outputs, axis=1) if bidirectional else outputs[0]  # (T*B, D*H)
            if dropout is not None:
                rows = rows * time_major_rows(xp, dropout[f"l{layer}"], copy=False)
    h_final = xp.concat(finals, axis=1) if bidirectional else finals[0]  # (B, D*H)
    if dropout is not None:
        h_final = h_final * dropout["head"]
    logits = head(h_final, params["W_hy"], params["b_y"])  # (B, C)
    cache = {"batch_size": batch_size, "layers": per_layer, "h_final": h_final, "mask": mask,
             "index": index, "dropout": dropout}
    return logits, cache


def stack_backward(xp, params, cache, dlogits, *, kernels=Kernels, layers=None):
    """Gradients of sum(logits * dlogits) for every layer and direction: down the layers,
    each direction's input gradient summed into the layer below's output gradient."""
    cell, (num_layers, bidirectional) = cell_fast(params), structure_of(params)
    layer_backward = (layers or LAYERS)[cell][1]
    mask, index, dropout = cache["mask"], cache["index"], cache["dropout"]
    dW_hy, db_y, dh_final = head_backward(xp, dlogits, cache["h_final"], params["W_hy"])
    if dropout is not None:
        dh_final = dh_final * dropout["head"]  # (B, D*H)
    grads = {"W_hy": dW_hy, "b_y": db_y}
    hidden_size = params["W_hh"].shape[1]
    batch_size = dlogits.shape[0]
    seq_len = cache["layers"][0][0]["states"].shape[0] - 1
    dout_rows = None  # (T*B, D*H): gradient w.r.t. this layer's outputs, from the layer above
    for layer in range(num_layers - 1, -1, -1):
        last = layer == num_layers - 1
        dinputs = None  # (T*B, In): gradient w.r.t. this layer's input rows
        for d, reverse in enumerate(directions(bidirectional)):
            columns = slice(d * hidden_size, (d + 1) * hidden_size)
            dout = None
            if dout_rows is not None:
                dout = dout_rows[:, columns]  # (T*B, H), time order
                if reverse:
                    dout = reverse_rows(xp, dout, index, seq_len, batch_size)  # its own frame
                dout = xp.reshape(dout, (seq_len, batch_size, hidden_size))  # (T, B, H)
            g, dxs = layer_backward(xp, layer_params(params, layer, reverse), cache["layers"][layer][d],
                                    dh_final[:, columns] if last else None, mask, dout,
                                    need_dx=layer > 0, kernels=kernels)
            grads.update({name + suffix(layer, reverse): value for name, value in g.items()})
            if layer > 0:
                if reverse:
                    dxs = reverse_rows(xp, dxs, index, seq_len, batch_size)  # back to time order
                dinputs = dxs if dinputs is None else dinputs + dxs
        if layer > 0:
            if dropout is not None:
                dinputs = dinputs * time_major_rows(xp, dropout[f"l{layer - 1}"], copy=False)
            dout_rows = dinputs
    return grads
