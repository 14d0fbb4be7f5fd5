"""The RNN classifier's math with full backpropagation through time, written once against
an array namespace `xp` (NumPy here, CuPy on a GPU, array-api-strict in the portability
test). Only array-API functions are used, so the same code runs unchanged on each.

    h_0 = 0
    h_t = tanh(x_t W_xh^T + h_{t-1} W_hh^T + b_h)          t = 1..T
    logits = h_L W_hy^T + b_y                               L = T, or lengths[i] per sequence

Shapes: B batch_size, T seq_len, I input_size, H hidden_size, C num_classes.
"""
from __future__ import annotations


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


def forward(xp, params, x, lengths=None, *, keep_states=True, kernels=Kernels):
    """-> (logits (B, C), cache). With keep_states=False only the running h is kept:
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
    dpre (T, B, H) per-step pre-activation gradients -> (dW_xh (H, I), dW_hh (H, H), db_h (H,))."""
    seq_len, batch_size, hidden_size = dpre.shape
    dpre = xp.reshape(dpre, (seq_len * batch_size, hidden_size))  # (T*B, H)
    h_prev = xp.reshape(states[:-1, ...], (seq_len * batch_size, hidden_size))  # (T*B, H)
    return dpre.T @ xs, dpre.T @ h_prev, xp.sum(dpre, axis=0)


def backward(xp, params, cache, dlogits, *, kernels=Kernels):
    """Gradients of sum(logits * dlogits). The loop carries only dh through time; the
    weight gradients of the recurrence are GEMMs over all steps at once, after it.
    Calling it again on the same cache is safe: every slot of the scratch is rewritten."""
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
