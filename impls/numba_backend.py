"""`numba`: predict, forward and full BPTT as @njit kernels, float32 and float64, for the
rnn_tanh, lstm and gru cells (the cell is read off the params: impls.params.cell_fast).

One compiled call per predict, forward or backward: at batch 1 a framework's cost is
per-op dispatch (NumPy ~1-3 us an op, a few ops a step, T steps), which compiled code
does not pay. Inside the kernels:

- tanh is ours (`tanh32`, `tanh64`; error bounds in their docstrings, tested over the
  whole float range): numba's np.tanh is a scalar libm call, ~30x slower than NumPy's
  SIMD tanh, which made a straight port tanh-bound at batch 32. Ours are branch-free
  arithmetic that LLVM vectorises (16 float32 lanes with AVX-512): 4096 values in 1.3 us
  float32 / 3.9 us float64, vs NumPy's 1.0 / 3.5 and numba's np.tanh 35 / 33.
- GEMMs are BLAS (np.dot in numba calls scipy's cython BLAS) where BLAS is fast: the input
  projection and the weight gradients, in blocks of BLOCK_BYTES (not all T*B rows at once:
  see _block_steps), and the recurrent (B, H) @ (H, H) of each step at B = 1 (OpenBLAS's
  gemv path) and B > LOOP_MAX_BATCH. For 2..LOOP_MAX_BATCH sequences a loop nest measured
  2-4x faster than OpenBLAS's small-M sgemm (_matmul_nt).
- fastmath is {"contract", "nsz"} (FMA contraction, no signed zeros), plus "reassoc" in
  _matmul_nt alone, whose dot products need it to vectorise: reassociation anywhere else
  could fold tanh64's two-part ln2 range reduction and break its bound. Elementwise loops
  run over contiguous H last. error_model="numpy": no zero-division branch in the loops.
- lstm and gru run the same design (_lstm_recurrence, _gru_recurrence and their backward
  kernels, the math and derivation of impls.reference): one input-projection GEMM per
  block for all gates, one fused recurrent (B, H) @ (H, G*H) per step written straight
  into that step's gate record (acts[t]; predict: one step's scratch) and activated in
  place, sigma(x) = 0.5 tanh(x/2) + 0.5 on our tanh (`sigmoid32`, `sigmoid64`). Each
  elementwise loop holds one tanh and runs over 1-D per-gate row views: the first version,
  one loop of five tanh over 2-D [b, k*H + j] indexing, did not vectorise (LSTM, B=32,
  H=128 float32: 130 us a step vs ~25 us split; its backward loop 25 vs 6.5 us). Backward
  carries dh (and dc) only; gru keeps two gate gradients per step, dpre for W_xh/b_h and
  dhw for W_hh/b_hn (r multiplies the h side of n). Side by side with numpy (float32,
  T=64 I=32 H=128, 1 thread, medians of 21 alternating calls, 5 runs; a shared 2-core
  AVX2 VM, so +-15 %): B=32 lstm forward 1.9x faster, forward+backward 1.35x; gru 1.4x
  and 1.3x (rnn_tanh there 1.25x, 1.05x). B=1: lstm 3.9x and 3.5x, gru 5x and 4.4x.
  At B=32 the gated cells are GEMM-bound and numba's BLAS is scipy's: its OpenBLAS
  (0.3.30 here) ran the step's (32, 128) @ (128, 512) in 90 us against numpy's OpenBLAS
  (0.3.31) 65 us, which is why the lead there is smaller than at B=1.
- Stacked and bidirectional models, and dropout (of any model), run impls.reference's
  stack_forward / stack_backward over per-layer kernels (_LAYERS): one compiled call per
  layer-direction, the same code the fused kernels inline (_*_states, _*_bptt), with the
  reversal within each length, the concatenation, the masks and the head in numpy between
  the calls. The backward of a layer takes the gradient from the layer above (dout) and
  gives its input gradient (dxs) block by block, as GEMMs like the weight gradients.
  Predict keeps every layer's states (O(T*B*H), not the plain predict's ring). Against
  numpy (2 layers, bidirectional, dropout 0.2, float32, T=64 I=32 H=128, best of 15 on
  the loaded VM): B=32 forward / forward+backward lstm 1.5x / 1.65x faster, gru 1.2x /
  1.4x, rnn_tanh 1.15x / 1.0x; B=1 lstm 3.4x / 3.3x, gru 3.6x / 3.8x, rnn_tanh 2.3x / 2.1x.
- No prange. The harness pins 1 thread, where prange runs serially; with more threads,
  OpenBLAS called inside numba's OpenMP region prints "Detect OpenMP Loop and this
  application may hang" (seen here), and parallel=True made compiling 2-3x slower. With
  n threads, OpenBLAS threads the GEMMs that are large enough, under the harness's limit.

Compilation is lazy: the first predict, forward or backward per dtype compiles its kernel
(the harness's `compile_s`), and `cache=True` writes the machine code to numba's cache
(impls/__pycache__, or NUMBA_CACHE_DIR), so another process loads it instead. Measured
here: a first train step 6.9 s cold vs 0.25 s cached, a first predict in a fresh process
4.5 s vs 0.15 s (tests/test_numba_backend.py checks the second process is >= 3x faster).
Each cell has its own kernels, compiled on its first use; lstm's and gru's take about as
long as rnn_tanh's (side by side in fresh processes, CPU time of a first float32 train
step: 17 s lstm, 18 s gru, 16 s rnn_tanh on the loaded VM above; 0.4 s each cached). A
first stacked or bidirectional train step then compiles the per-layer kernels around the
already compiled recurrence, 5-6 s more, and its predict nothing (one compiled signature
per dtype serves every layer and structure: absent optional arrays are empty, not None).

Shapes: B batch_size, T seq_len, I input_size, H hidden_size, C num_classes.
"""
from __future__ import annotations

import math

import numpy as np

from . import reference
from .base import HostArrayBackend, Unavailable, require_cpu
from .params import (CELLS, RECURRENT_NAMES, cell_fast, is_plain, param_names,
                     structure_of)

try:
    import numba
    from numba import njit, types
    from numba.extending import overload
except ImportError as exc:  # impls must import without numba; create() says why
    numba, types, _IMPORT_ERROR = None, None, exc

    def njit(*args, **kwargs):
        return lambda fn: fn

    def overload(*args, **kwargs):
        return lambda fn: fn

# The recurrent matmul of 2..LOOP_MAX_BATCH sequences is a loop nest, else BLAS (_matmul_nt).
LOOP_MAX_BATCH = 8
# Size of a block of (steps x sequences, H) rows: see _block_steps.
BLOCK_BYTES = 256 * 1024
_FASTMATH = {"contract", "nsz"}
_JIT = dict(cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy")
# The parts shared by a fused plain kernel and the per-layer calls of a stacked model
# (_*_states, _*_bptt and their helpers) are inlined at numba-IR level into the fused
# kernels, which so compile as one function as before: as separate functions, each level
# of calls re-optimised its callees' linked code (CPU time of compiling a first float32
# lstm train step, fresh cache: 26 s, against 18 s inlined and 17-20 s before the split).
_INLINE = dict(_JIT, inline="always")

# --- tanh ---------------------------------------------------------------------------------
# float32: the [13/6] rational minimax of Eigen's generic_fast_tanh_float (their
# coefficients), on |x| clamped to 9, evaluated in float32.
_F32 = np.float32
_A32 = tuple(_F32(c) for c in (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05,
                                5.12229709037114e-08, -8.60467152213735e-11, 2.00018790482477e-13,
                                -2.76076847742355e-16))
_B32 = tuple(_F32(c) for c in (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04,
                                1.19825839466702e-06))
_A0, _A1, _A2, _A3, _A4, _A5, _A6 = _A32
_B0, _B1, _B2, _B3 = _B32
_CLAMP32 = _F32(9.0)  # the rational is 1 - 2.5e-8 there (tanh(9) = 1 - 3.0e-8), > 1 past 9.1
_TINY32 = _F32(4e-4)  # below: tanh(x) = x to < 2^-24 relative (x^3/3 term), denormals too


def tanh32(x):
    """float32 tanh, branch-free. Error against np.tanh (in float64) over a dense grid of
    every finite float32 (denormals, 1e-30, +-1e-8, moderate, +-9, +-20, +-1e30, +-3.4e38;
    tests/test_numba_backend.py): abs and rel error < 5e-7 (~8 float32 ulps; measured
    2.9e-7 with FMA contraction, 3.9e-7 without). Returns x exactly for |x| < 4e-4
    (denormals included), is odd, never exceeds 1 in magnitude and is within one ulp of +-1
    for |x| >= 9. The rational itself is within 3e-8; float32 rounding dominates."""
    a = abs(x)
    c = min(a, _CLAMP32)
    z = c * c
    p = (((((_A6 * z + _A5) * z + _A4) * z + _A3) * z + _A2) * z + _A1) * z + _A0
    q = ((_B3 * z + _B2) * z + _B1) * z + _B0
    r = min(c * p / q, _F32(1.0))  # rounding may land a hair above 1 near the clamp
    tiny = _F32(a < _TINY32)  # a 0/1 blend, not a branch: both terms are finite
    return np.copysign(tiny * a + (_F32(1.0) - tiny) * r, x)


# float64, |x| < 0.4: the [7/6] Pade approximant (the continued fraction
# tanh x = x/(1 + x^2/(3 + x^2/(5 + ...))) cut after 7 levels), exact rational coefficients;
# its truncation error at 0.4 is ~1e-17, and it returns x exactly for tiny/denormal x.
_P1, _P2, _P3 = 5.0 / 39.0, 2.0 / 715.0, 1.0 / 135135.0
_Q1, _Q2, _Q3 = 6.0 / 13.0, 10.0 / 429.0, 4.0 / 19305.0
# |x| >= 0.4: 1 - 2/(exp(2|x|) + 1) with exp(y) = 2^n exp(r), n = round(y / ln 2),
# r = y - n ln2 in two parts (Cody-Waite, |r| <= ln2/2), exp(r) by its degree-13 Taylor
# polynomial (remainder < 4e-18), 2^n (n <= 58) exactly from the bits of n.
_LOG2E = 1.4426950408889634
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10
(_E0, _E1, _E2, _E3, _E4, _E5, _E6, _E7, _E8, _E9, _E10, _E11, _E12,
 _E13) = (1.0 / math.factorial(k) for k in range(14))


def tanh64(x):
    """float64 tanh, branch-free (both branches computed, one selected). Error against
    np.tanh over a dense grid of every finite float64 (denormals to +-1.8e308; tested):
    rel error < 6e-16 (measured 4.4e-16; np.tanh itself is within 2.2e-16 of the true
    value). Exactly x for tiny x (denormals included), exactly +-1 for |x| >= 20."""
    a = abs(x)
    c = min(a, 0.4)  # clamped: the unused branch must stay finite for the blend
    z = c * c
    small = c * (((_P3 * z + _P2) * z + _P1) * z + 1.0) / (((_Q3 * z + _Q2) * z + _Q1) * z + 1.0)
    y = 2.0 * min(a, 20.0)  # tanh(20) rounds to 1.0 in float64
    n = np.floor(y * _LOG2E + 0.5)
    r = (y - n * _LN2_HI) - n * _LN2_LO
    e = ((((((((((((_E13 * r + _E12) * r + _E11) * r + _E10) * r + _E9) * r + _E8) * r + _E7)
                * r + _E6) * r + _E5) * r + _E4) * r + _E3) * r + _E2) * r + _E1) * r + _E0
    m = np.int64(n)  # 2^m = prod over set bits i of 2^(2^i); every product is exact
    s = ((1.0 + (m & 1)) * (1.0 + 3.0 * ((m >> 1) & 1)) * (1.0 + 15.0 * ((m >> 2) & 1))
         * (1.0 + 255.0 * ((m >> 3) & 1)) * (1.0 + 65535.0 * ((m >> 4) & 1))
         * (1.0 + 4294967295.0 * ((m >> 5) & 1)))
    big = 1.0 - 2.0 / (e * s + 1.0)
    w = np.float64(a < 0.4)  # a 0/1 blend, not a branch (ternaries upset numba's IR inliner)
    return np.copysign(w * small + (1.0 - w) * big, x)


def _tanh(x):
    """Typed dispatch to tanh32/tanh64 inside kernels (the Python body is never used)."""
    return np.tanh(x)


# inline="always" inlines at numba-IR level: LLVM's own inliner declined tanh64 (too large),
# and a call in the loop body stops vectorisation (measured 26 us vs 3.6 us / 4096 values).
@overload(_tanh, inline="always")
def _tanh_overload(x):
    if x == types.float32:
        return tanh32
    if x == types.float64:
        return tanh64


def sigmoid32(x):
    """float32 logistic sigma(x) = 1/(1 + exp(-x)) as 0.5 tanh(x/2) + 0.5 on our tanh:
    vectorises like it, stays in [0, 1] exactly, abs error < 2.6e-7 (half tanh32's bound
    plus one rounding)."""
    return _F32(0.5) * _tanh(_F32(0.5) * x) + _F32(0.5)


def sigmoid64(x):
    """float64 sigma(x) as 0.5 tanh(x/2) + 0.5 (sigmoid32's form): abs error < 4e-16."""
    return 0.5 * _tanh(0.5 * x) + 0.5


def _sigmoid(x):
    """Typed dispatch to sigmoid32/sigmoid64 inside kernels (the Python body is never used)."""
    return 0.5 * np.tanh(0.5 * x) + 0.5


@overload(_sigmoid, inline="always")
def _sigmoid_overload(x):
    if x == types.float32:
        return sigmoid32
    if x == types.float64:
        return sigmoid64


@njit(**_JIT)
def tanh_array(a):
    """Elementwise kernel tanh of an array (for tests and measurement)."""
    flat = a.ravel()
    out = np.empty_like(flat)
    for i in range(flat.size):
        out[i] = _tanh(flat[i])
    return out.reshape(a.shape)


@njit(**_JIT)
def sigmoid_array(a):
    """Elementwise kernel sigmoid of an array (for tests and measurement)."""
    flat = a.ravel()
    out = np.empty_like(flat)
    for i in range(flat.size):
        out[i] = _sigmoid(flat[i])
    return out.reshape(a.shape)


# --- kernels ------------------------------------------------------------------------------
@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FASTMATH | {"reassoc"})
def _matmul_nt(a, mt, out):
    """out = a @ mt.T: a (b, K), mt (N, K) row-major, out (b, N) C-contiguous.

    BLAS at b = 1 (OpenBLAS's gemv path: as fast as any loop here) and above
    LOOP_MAX_BATCH; in between, OpenBLAS's small-M sgemm measured 2-4x slower than this
    loop nest (H = 64..256). j outer: each row of mt is reused from L1 by every b."""
    if a.shape[0] == 1 or a.shape[0] > LOOP_MAX_BATCH:
        np.dot(a, mt.T, out)
        return
    zero = out.dtype.type(0.0)  # typed: a float literal would promote float32 to float64
    for j in range(mt.shape[0]):
        row = mt[j]
        for b in range(a.shape[0]):
            s = zero
            for k in range(a.shape[1]):
                s += a[b, k] * row[k]
            out[b, j] = s


@njit(**_JIT)
def _gather_steps(x, t0, n, out):
    """out[s*B + b] = x[b, t0 + s] for s < n: n steps of batch-first x, time-major rows."""
    B = x.shape[0]
    for s in range(n):
        for b in range(B):
            out[s * B + b] = x[b, t0 + s]


@njit(**_JIT)
def _forward_kernel(x, W_xh, W_hh, b_h, W_hy, b_y, lengths, block_steps):
    """-> logits (B, C), xs (T*B, I) = x time-major, states (T+1, B, H) with states[t] = h_t
    (h_0 = 0), h_last (B, H): what backward needs."""
    B, T, I = x.shape
    xs = np.empty((T * B, I), x.dtype)  # (T*B, I): row t*B + b is x[b, t]
    h_last, states = _tanh_states(x, xs, W_xh, W_hh, b_h, lengths, block_steps)
    return _head(h_last, W_hy, b_y), xs, states, h_last


@njit(**_INLINE)
def _tanh_states(x, xs, W_xh, W_hh, b_h, lengths, block_steps):
    """One layer-direction's forward, keeping what its backward needs: -> h_last (B, H),
    states (T+1, B, H). x (B, T, I) is gathered into xs (T*B, I) on the way; an empty x
    means xs holds the time-major input rows already (a layer of a stacked model)."""
    B, H = lengths.shape[0], W_hh.shape[1]
    T = xs.shape[0] // B
    states = np.empty((T + 1, B, H), xs.dtype)  # (T+1, B, H)
    states[0] = 0.0
    h_last = _recurrence(x, W_xh, W_hh, b_h, lengths, xs, states, True, block_steps)
    return h_last, states


@njit(**_JIT)
def _predict_kernel(x, W_xh, W_hh, b_h, W_hy, b_y, lengths, block_steps):
    """-> logits (B, C), keeping only h_{t-1}, h_t and one block of inputs: for inference."""
    B, T, I = x.shape
    H = W_hh.shape[0]
    xbuf = np.empty((block_steps * B, I), x.dtype)  # (block_steps*B, I)
    ring = np.zeros((2, B, H), x.dtype)  # (2, B, H)
    h_last = _recurrence(x, W_xh, W_hh, b_h, lengths, xbuf, ring, False, block_steps)
    return _head(h_last, W_hy, b_y)


@njit(**_JIT)
def _head(h_last, W_hy, b_y):  # the classifier on the selected states
    logits = np.dot(h_last, W_hy.T)  # (B, C)
    for b in range(logits.shape[0]):
        logits[b] += b_y
    return logits


@njit(**_INLINE)
def _head_backward(dlogits, h_last, W_hy):
    """-> dW_hy (C, H), db_y (C,), dL/dh at each sequence's last step (B, H)."""
    return np.dot(dlogits.T, h_last), dlogits.sum(axis=0), np.dot(dlogits, W_hy)


@njit(**_INLINE)
def _steps_of(x, xs, B):
    """(gather, T): whether x (B, T, I) is to be gathered into xs block by block, and T.
    An empty x: xs holds all T steps' time-major rows already (then keep is True)."""
    if x.shape[0] == 0:
        return False, xs.shape[0] // B
    return True, x.shape[1]


@njit(**_JIT)
def _recurrence(x, W_xh, W_hh, b_h, lengths, xs, states, keep, block_steps):
    """h_t = tanh(x_t W_xh^T + h_{t-1} W_hh^T + b_h), t = 1..T. keep: h_t into states[t]
    and x time-major into xs (T*B, I); else a ring of two states and a one-block xs.
    Blocks of block_steps steps (see _block_steps). -> h_last (B, H): h at step lengths[b]."""
    B, H = states.shape[1], states.shape[2]
    gather, T = _steps_of(x, xs, B)
    h_last = np.empty((B, H), xs.dtype)
    pbuf = np.empty((block_steps * B, H), xs.dtype)  # (block_steps*B, H): input projections
    for t0 in range(0, T, block_steps):
        n = min(block_steps, T - t0)
        rows = xs[t0 * B:(t0 + n) * B] if keep else xs[:n * B]  # (n*B, I)
        if gather:
            _gather_steps(x, t0, n, rows)
        np.dot(rows, W_xh.T, pbuf[:n * B])  # one GEMM for the block's inputs
        for s in range(n):
            t = t0 + s
            prev, h = (states[t], states[t + 1]) if keep else (states[t & 1], states[(t + 1) & 1])
            _matmul_nt(prev, W_hh, h)  # (B, H): h_{t-1} W_hh^T
            p = pbuf[s * B:(s + 1) * B]  # (B, H): x_t W_xh^T
            for b in range(B):
                for j in range(H):
                    h[b, j] = _tanh(h[b, j] + (p[b, j] + b_h[j]))
                if lengths[b] == t + 1:  # the head reads each sequence's own last step
                    h_last[b] = h[b]
    return h_last


@njit(**_JIT)
def _backward_kernel(W_xh, W_hh, W_hy, xs, states, h_last, lengths, dlogits, block_steps):
    """Gradients of sum(logits * dlogits): (dW_xh, dW_hh, db_h, dW_hy, db_y)."""
    dW_hy, db_y, dh_head = _head_backward(dlogits, h_last, W_hy)
    dout, dxs = _one_layer(xs)
    dW_xh, dW_hh, db_h = _tanh_bptt(W_xh, W_hh, xs, states, dh_head, lengths, dout, dxs,
                                    block_steps)
    return dW_xh, dW_hh, db_h, dW_hy, db_y


@njit(**_INLINE)
def _one_layer(xs):
    """(dout, dxs) of the one layer of a plain model: nothing from a layer above, no input
    gradient wanted. Empty arrays, not None: one compiled signature of each _*_bptt serves
    the plain kernels and every layer of a stacked model."""
    return np.empty((0, 0, 0), xs.dtype), np.empty((0, 0), xs.dtype)


@njit(**_INLINE)
def _into_step(dh, t, dh_head, lengths, dout):
    """dh (B, H) += what reaches h_t from outside the recurrence: the head's gradient
    dh_head (B, H) at each sequence's last step lengths[b], and dout[t] (dout (T, B, H): the
    gradient from the layer above). Either is empty when there is none."""
    B, H = dh.shape
    if dh_head.shape[0] > 0:
        for b in range(B):
            if lengths[b] == t + 1:  # the head read h_t of this sequence
                for j in range(H):
                    dh[b, j] += dh_head[b, j]
    if dout.shape[0] > 0:
        above = dout[t]  # (B, H)
        for b in range(B):
            for j in range(H):
                dh[b, j] += above[b, j]


@njit(**_INLINE)
def _tanh_bptt(W_xh, W_hh, xs, states, dh_head, lengths, dout, dxs, block_steps):
    """One layer-direction's BPTT -> (dW_xh, dW_hh, db_h), from the gradients that reach
    its states from outside (_into_step: dh_head, dout). Only dh is carried back through
    time; each block's pre-activation gradients then enter the weight gradients as GEMMs,
    and when dxs (T*B, I) is not empty, dL/dxs = da W_xh (a layer above the first). Reads
    the cache, writes only fresh arrays and dxs: repeatable."""
    T, B, H = states.shape[0] - 1, states.shape[1], states.shape[2]
    I = xs.shape[1]
    one = xs.dtype.type(1.0)  # typed: a float literal would promote float32 to float64
    W_hh_T = np.ascontiguousarray(W_hh.T)  # (H, H): da W_hh = da (W_hh^T)^T for _matmul_nt
    dW_xh, dW_hh = np.zeros((H, I), xs.dtype), np.zeros((H, H), xs.dtype)
    db_h = np.zeros(H, xs.dtype)
    dbuf = np.empty((block_steps * B, H), xs.dtype)  # (block_steps*B, H): dL/d(pre-activation), time-major
    dh, dh_prev = np.zeros((B, H), xs.dtype), np.empty((B, H), xs.dtype)  # dL/dh_t, _{t-1}
    for t1 in range(T, 0, -block_steps):  # blocks [t0, t1), the last one first
        t0 = max(0, t1 - block_steps)
        n = t1 - t0
        for s in range(n - 1, -1, -1):
            t = t0 + s
            da = dbuf[s * B:(s + 1) * B]  # (B, H)
            h = states[t + 1]
            _into_step(dh, t, dh_head, lengths, dout)
            for b in range(B):
                for j in range(H):
                    da[b, j] = dh[b, j] * (one - h[b, j] * h[b, j])  # tanh' = 1 - tanh^2
                    db_h[j] += da[b, j]
            if t > 0:  # h_0 is a constant zero: no gradient flows into it
                _matmul_nt(da, W_hh_T, dh_prev)  # dL/dh_{t-1} = da W_hh
                dh, dh_prev = dh_prev, dh
        _block_gradients(dbuf[:n * B], dbuf[:n * B], xs, states, t0, t1, dW_xh, dW_hh, W_xh, dxs)
    return dW_xh, dW_hh, db_h


@njit(**_INLINE)
def _block_gradients(dpre, dhw, xs, states, t0, t1, dW_xh, dW_hh, W_xh, dxs):
    """A block's [t0, t1) time-major gate gradients (n*B, G*H) into the weight gradients:
    dpre w.r.t. x W_xh^T + b_h into dW_xh (G*H, I), dhw w.r.t. h W_hh^T into dW_hh (G*H, H)
    (the same array but for gru), and dpre W_xh into dxs's rows when dxs is not empty."""
    n, B, H = t1 - t0, states.shape[1], states.shape[2]
    # xs and states are time-major: slices, no copies
    dW_xh += np.dot(dpre.T, xs[t0 * B:t1 * B])  # (G*H, I)
    dW_hh += np.dot(dhw.T, states[t0:t1].reshape(n * B, H))  # (G*H, H): h_{t-1} rows
    if dxs.shape[0] > 0:
        np.dot(dpre, W_xh, dxs[t0 * B:t1 * B])  # (n*B, I): dL/dx_t = dpre W_xh


# --- lstm: gate rows i, f, g, o ------------------------------------------------------------
@njit(**_JIT)
def _lstm_forward_kernel(x, W_xh, W_hh, b_h, W_hy, b_y, lengths, block_steps):
    """-> logits (B, C), xs (T*B, I), states (T+1, B, H) h_0..h_T, cells (T+1, B, H)
    c_0..c_T, acts (T, B, 4H) the activated gates i f g o, tanh_c (T, B, H), h_last."""
    B, T, I = x.shape
    xs = np.empty((T * B, I), x.dtype)  # (T*B, I): row t*B + b is x[b, t]
    h_last, states, cells, acts, tanh_c = _lstm_states(x, xs, W_xh, W_hh, b_h, lengths,
                                                       block_steps)
    return _head(h_last, W_hy, b_y), xs, states, cells, acts, tanh_c, h_last


@njit(**_INLINE)
def _lstm_states(x, xs, W_xh, W_hh, b_h, lengths, block_steps):
    """One layer-direction's forward, keeping what its backward needs (as _tanh_states):
    -> h_last (B, H), states, cells (T+1, B, H), acts (T, B, 4H), tanh_c (T, B, H)."""
    B, H = lengths.shape[0], W_hh.shape[1]
    T = xs.shape[0] // B
    states = np.empty((T + 1, B, H), xs.dtype)  # (T+1, B, H)
    cells = np.empty((T + 1, B, H), xs.dtype)  # (T+1, B, H)
    acts = np.empty((T, B, 4 * H), xs.dtype)  # (T, B, 4H)
    tanh_c = np.empty((T, B, H), xs.dtype)  # (T, B, H)
    states[0] = 0.0
    cells[0] = 0.0
    h_last = _lstm_recurrence(x, W_xh, W_hh, b_h, lengths, xs, states, cells, acts, tanh_c,
                              True, block_steps)
    return h_last, states, cells, acts, tanh_c


@njit(**_JIT)
def _lstm_predict_kernel(x, W_xh, W_hh, b_h, W_hy, b_y, lengths, block_steps):
    """-> logits (B, C), keeping two h, two c, one step's gates and one block of inputs."""
    B, T, I = x.shape
    H = W_hy.shape[1]
    xbuf = np.empty((block_steps * B, I), x.dtype)  # (block_steps*B, I)
    ring = np.zeros((2, B, H), x.dtype)  # (2, B, H): h_{t-1}, h_t
    cring = np.zeros((2, B, H), x.dtype)  # (2, B, H): c_{t-1}, c_t
    acts = np.empty((1, B, 4 * H), x.dtype)  # (1, B, 4H): this step's gates
    tanh_c = np.empty((1, B, H), x.dtype)  # (1, B, H)
    h_last = _lstm_recurrence(x, W_xh, W_hh, b_h, lengths, xbuf, ring, cring, acts, tanh_c,
                              False, block_steps)
    return _head(h_last, W_hy, b_y)


@njit(**_JIT)
def _lstm_recurrence(x, W_xh, W_hh, b_h, lengths, xs, states, cells, acts, tanh_c, keep,
                     block_steps):
    """[i f g o] = x_t W_xh^T + h_{t-1} W_hh^T + b_h (one recurrent (B, H) @ (H, 4H) per
    step, written straight into acts[t] and activated in place), c_t = f c_{t-1} + i g,
    h_t = o tanh(c_t). keep: every step's h, c, gates, tanh c and time-major x; else rings
    of two h and c, one step's gates, a one-block xs (as _recurrence). -> h_last (B, H)."""
    B, H = states.shape[1], states.shape[2]
    gather, T = _steps_of(x, xs, B)
    one, half = xs.dtype.type(1.0), xs.dtype.type(0.5)  # typed: literals would promote float32
    h_last = np.empty((B, H), xs.dtype)
    pbuf = np.empty((block_steps * B, 4 * H), xs.dtype)  # (block_steps*B, 4H): input projections
    for t0 in range(0, T, block_steps):
        n = min(block_steps, T - t0)
        rows = xs[t0 * B:(t0 + n) * B] if keep else xs[:n * B]  # (n*B, I)
        if gather:
            _gather_steps(x, t0, n, rows)
        np.dot(rows, W_xh.T, pbuf[:n * B])  # one GEMM for the block's inputs, all gates
        for s in range(n):
            t = t0 + s
            if keep:
                prev, h, a, tc = states[t], states[t + 1], acts[t], tanh_c[t]
                c_prev, c = cells[t], cells[t + 1]
            else:
                prev, h, a, tc = states[t & 1], states[(t + 1) & 1], acts[0], tanh_c[0]
                c_prev, c = cells[t & 1], cells[(t + 1) & 1]
            _matmul_nt(prev, W_hh, a)  # (B, 4H): h_{t-1} W_hh^T
            p = pbuf[s * B:(s + 1) * B]  # (B, 4H): x_t W_xh^T
            for b in range(B):
                ar, pr = a[b], p[b]  # (4H,)
                for k in range(4):  # gate k: sigma(v) = 0.5 tanh(0.5 v) + 0.5, g: tanh(v)
                    sc = one if k == 2 else half
                    lo, hi = k * H, (k + 1) * H
                    ag, pg, bg = ar[lo:hi], pr[lo:hi], b_h[lo:hi]
                    for j in range(H):
                        ag[j] = sc * _tanh(sc * ((pg[j] + bg[j]) + ag[j])) + (one - sc)
                ai, af, ag, ao = ar[:H], ar[H:2 * H], ar[2 * H:3 * H], ar[3 * H:]
                cp, cr, tr, hr = c_prev[b], c[b], tc[b], h[b]  # (H,)
                for j in range(H):
                    cj = af[j] * cp[j] + ai[j] * ag[j]
                    tj = _tanh(cj)
                    cr[j], tr[j], hr[j] = cj, tj, ao[j] * tj
                if lengths[b] == t + 1:  # the head reads each sequence's own last step
                    h_last[b] = h[b]
    return h_last


@njit(**_JIT)
def _lstm_backward_kernel(W_xh, W_hh, W_hy, xs, states, cells, acts, tanh_c, h_last, lengths,
                          dlogits, block_steps):
    """Gradients (dW_xh, dW_hh, db_h, dW_hy, db_y)."""
    dW_hy, db_y, dh_head = _head_backward(dlogits, h_last, W_hy)
    dout, dxs = _one_layer(xs)
    dW_xh, dW_hh, db_h = _lstm_bptt(W_xh, W_hh, xs, states, cells, acts, tanh_c, dh_head,
                                    lengths, dout, dxs, block_steps)
    return dW_xh, dW_hh, db_h, dW_hy, db_y


@njit(**_INLINE)
def _lstm_bptt(W_xh, W_hh, xs, states, cells, acts, tanh_c, dh_head, lengths, dout, dxs,
               block_steps):
    """One layer-direction's BPTT -> (dW_xh, dW_hh, db_h): dh and dc carried back through
    time, each block's gate pre-activation gradients (B, 4H) per step then enter the weight
    gradients (and dxs) as GEMMs (as _tanh_bptt). Writes only fresh arrays and dxs."""
    T, B, H = tanh_c.shape
    I = xs.shape[1]
    one = xs.dtype.type(1.0)
    W_hh_T = np.ascontiguousarray(W_hh.T)  # (H, 4H): da W_hh = da (W_hh^T)^T for _matmul_nt
    dW_xh, dW_hh = np.zeros((4 * H, I), xs.dtype), np.zeros((4 * H, H), xs.dtype)
    db_h = np.zeros(4 * H, xs.dtype)
    dbuf = np.empty((block_steps * B, 4 * H), xs.dtype)  # (block_steps*B, 4H), time-major
    dh, dh_prev = np.zeros((B, H), xs.dtype), np.empty((B, H), xs.dtype)  # dL/dh_t, _{t-1}
    dc = np.zeros((B, H), xs.dtype)  # dL/dc_t, then (after the step) dL/dc_{t-1}
    for t1 in range(T, 0, -block_steps):
        t0 = max(0, t1 - block_steps)
        n = t1 - t0
        for s in range(n - 1, -1, -1):
            t = t0 + s
            da = dbuf[s * B:(s + 1) * B]  # (B, 4H)
            a, tc, c_prev = acts[t], tanh_c[t], cells[t]
            _into_step(dh, t, dh_head, lengths, dout)
            for b in range(B):
                ar, dar = a[b], da[b]  # (4H,)
                ai, af, ag, ao = ar[:H], ar[H:2 * H], ar[2 * H:3 * H], ar[3 * H:]
                di, df, dg, do = dar[:H], dar[H:2 * H], dar[2 * H:3 * H], dar[3 * H:]
                tr, cp, dhr, dcr = tc[b], c_prev[b], dh[b], dc[b]  # (H,)
                for j in range(H):
                    gi, gf, gg, go, tj = ai[j], af[j], ag[j], ao[j], tr[j]
                    dcj = dcr[j] + dhr[j] * go * (one - tj * tj)  # through h_t = o tanh(c_t)
                    di[j] = dcj * gg * gi * (one - gi)  # sigma' = sigma (1 - sigma)
                    df[j] = dcj * cp[j] * gf * (one - gf)
                    dg[j] = dcj * gi * (one - gg * gg)  # tanh' = 1 - tanh^2
                    do[j] = dhr[j] * tj * go * (one - go)
                    dcr[j] = dcj * gf  # to c_{t-1}
                for j in range(4 * H):
                    db_h[j] += dar[j]
            if t > 0:  # h_0 is a constant zero: no gradient flows into it
                _matmul_nt(da, W_hh_T, dh_prev)  # (B, H): dL/dh_{t-1} = da W_hh
                dh, dh_prev = dh_prev, dh
        _block_gradients(dbuf[:n * B], dbuf[:n * B], xs, states, t0, t1, dW_xh, dW_hh, W_xh, dxs)
    return dW_xh, dW_hh, db_h


# --- gru: gate rows r, z, n ----------------------------------------------------------------
@njit(**_JIT)
def _gru_forward_kernel(x, W_xh, W_hh, b_h, b_hn, W_hy, b_y, lengths, block_steps):
    """-> logits (B, C), xs (T*B, I), states (T+1, B, H) h_0..h_T, acts (T, B, 3H) the
    gates r z n, hns (T, B, H) h_{t-1} W_hn^T + b_hn, h_last."""
    B, T, I = x.shape
    xs = np.empty((T * B, I), x.dtype)  # (T*B, I)
    h_last, states, acts, hns = _gru_states(x, xs, W_xh, W_hh, b_h, b_hn, lengths, block_steps)
    return _head(h_last, W_hy, b_y), xs, states, acts, hns, h_last


@njit(**_INLINE)
def _gru_states(x, xs, W_xh, W_hh, b_h, b_hn, lengths, block_steps):
    """One layer-direction's forward, keeping what its backward needs (as _tanh_states):
    -> h_last (B, H), states (T+1, B, H), acts (T, B, 3H), hns (T, B, H)."""
    B, H = lengths.shape[0], W_hh.shape[1]
    T = xs.shape[0] // B
    states = np.empty((T + 1, B, H), xs.dtype)  # (T+1, B, H)
    acts = np.empty((T, B, 3 * H), xs.dtype)  # (T, B, 3H)
    hns = np.empty((T, B, H), xs.dtype)  # (T, B, H)
    states[0] = 0.0
    h_last = _gru_recurrence(x, W_xh, W_hh, b_h, b_hn, lengths, xs, states, acts, hns, True,
                             block_steps)
    return h_last, states, acts, hns


@njit(**_JIT)
def _gru_predict_kernel(x, W_xh, W_hh, b_h, b_hn, W_hy, b_y, lengths, block_steps):
    """-> logits (B, C), keeping two h, one step's gates and one block of inputs."""
    B, T, I = x.shape
    H = W_hy.shape[1]
    xbuf = np.empty((block_steps * B, I), x.dtype)  # (block_steps*B, I)
    ring = np.zeros((2, B, H), x.dtype)  # (2, B, H)
    acts = np.empty((1, B, 3 * H), x.dtype)  # (1, B, 3H)
    hns = np.empty((1, B, H), x.dtype)  # (1, B, H)
    h_last = _gru_recurrence(x, W_xh, W_hh, b_h, b_hn, lengths, xbuf, ring, acts, hns, False,
                             block_steps)
    return _head(h_last, W_hy, b_y)


@njit(**_JIT)
def _gru_recurrence(x, W_xh, W_hh, b_h, b_hn, lengths, xs, states, acts, hns, keep, block_steps):
    """hw = h_{t-1} W_hh^T (one (B, H) @ (H, 3H) per step, into acts[t]), [r z] =
    sigma(x_t W_x{r,z}^T + b_{r,z} + hw_{r,z}), n = tanh(x_t W_xn^T + b_in + r (hw_n + b_hn)),
    h_t = n + z (h_{t-1} - n). keep/else as _lstm_recurrence. -> h_last (B, H)."""
    B, H = states.shape[1], states.shape[2]
    gather, T = _steps_of(x, xs, B)
    h_last = np.empty((B, H), xs.dtype)
    pbuf = np.empty((block_steps * B, 3 * H), xs.dtype)  # (block_steps*B, 3H): input projections
    for t0 in range(0, T, block_steps):
        n = min(block_steps, T - t0)
        rows = xs[t0 * B:(t0 + n) * B] if keep else xs[:n * B]  # (n*B, I)
        if gather:
            _gather_steps(x, t0, n, rows)
        np.dot(rows, W_xh.T, pbuf[:n * B])
        for s in range(n):
            t = t0 + s
            if keep:
                prev, h, a, hn = states[t], states[t + 1], acts[t], hns[t]
            else:
                prev, h, a, hn = states[t & 1], states[(t + 1) & 1], acts[0], hns[0]
            _matmul_nt(prev, W_hh, a)  # (B, 3H): h_{t-1} W_hh^T
            p = pbuf[s * B:(s + 1) * B]  # (B, 3H): x_t W_xh^T
            for b in range(B):
                ar, pr = a[b], p[b]  # (3H,)
                for j in range(2 * H):  # r, z
                    ar[j] = _sigmoid((pr[j] + b_h[j]) + ar[j])
                ar_, az, an = ar[:H], ar[H:2 * H], ar[2 * H:]
                pn, bn = pr[2 * H:], b_h[2 * H:]
                hp, hr, hnr = prev[b], h[b], hn[b]  # (H,)
                for j in range(H):
                    hnj = an[j] + b_hn[j]
                    nj = _tanh((pn[j] + bn[j]) + ar_[j] * hnj)
                    an[j], hnr[j], hr[j] = nj, hnj, nj + az[j] * (hp[j] - nj)
                if lengths[b] == t + 1:
                    h_last[b] = h[b]
    return h_last


@njit(**_JIT)
def _gru_backward_kernel(W_xh, W_hh, W_hy, xs, states, acts, hns, h_last, lengths, dlogits,
                         block_steps):
    """Gradients (dW_xh, dW_hh, db_h, db_hn, dW_hy, db_y)."""
    dW_hy, db_y, dh_head = _head_backward(dlogits, h_last, W_hy)
    dout, dxs = _one_layer(xs)
    dW_xh, dW_hh, db_h, db_hn = _gru_bptt(W_xh, W_hh, xs, states, acts, hns, dh_head, lengths,
                                          dout, dxs, block_steps)
    return dW_xh, dW_hh, db_h, db_hn, dW_hy, db_y


@njit(**_INLINE)
def _gru_bptt(W_xh, W_hh, xs, states, acts, hns, dh_head, lengths, dout, dxs, block_steps):
    """One layer-direction's BPTT -> (dW_xh, dW_hh, db_h, db_hn) (as _tanh_bptt). r
    multiplies the h side of n, so each step has two (B, 3H) gradients: dpre w.r.t.
    x W_xh^T + b_h (for dW_xh, db_h, dxs) and dhw w.r.t. h W_hh^T (+ b_hn) (for dW_hh, db_hn,
    and dh_{t-1} = dh z + dhw W_hh). Writes only fresh arrays and dxs: repeatable."""
    T, B, H = hns.shape
    I = xs.shape[1]
    one = xs.dtype.type(1.0)
    W_hh_T = np.ascontiguousarray(W_hh.T)  # (H, 3H)
    dW_xh, dW_hh = np.zeros((3 * H, I), xs.dtype), np.zeros((3 * H, H), xs.dtype)
    db_h, db_hn = np.zeros(3 * H, xs.dtype), np.zeros(H, xs.dtype)
    dpre = np.empty((block_steps * B, 3 * H), xs.dtype)  # (block_steps*B, 3H), time-major
    dhw = np.empty((block_steps * B, 3 * H), xs.dtype)  # (block_steps*B, 3H), time-major
    dh, dh_prev = np.zeros((B, H), xs.dtype), np.empty((B, H), xs.dtype)  # dL/dh_t, _{t-1}
    for t1 in range(T, 0, -block_steps):
        t0 = max(0, t1 - block_steps)
        n = t1 - t0
        for s in range(n - 1, -1, -1):
            t = t0 + s
            dp, dw = dpre[s * B:(s + 1) * B], dhw[s * B:(s + 1) * B]  # (B, 3H) each
            a, hn, prev = acts[t], hns[t], states[t]
            _into_step(dh, t, dh_head, lengths, dout)
            for b in range(B):
                ar, dpr, dwr = a[b], dp[b], dw[b]  # (3H,)
                ar_, az, an = ar[:H], ar[H:2 * H], ar[2 * H:]
                dp_r, dp_z, dp_n = dpr[:H], dpr[H:2 * H], dpr[2 * H:]
                dw_r, dw_z, dw_n = dwr[:H], dwr[H:2 * H], dwr[2 * H:]
                dhr, hp, hnr = dh[b], prev[b], hn[b]  # (H,)
                for j in range(H):
                    r, z, nj, dhj = ar_[j], az[j], an[j], dhr[j]
                    dan = dhj * (one - z) * (one - nj * nj)  # through h_t's n term, n = tanh
                    dz = dhj * (hp[j] - nj) * z * (one - z)  # through h_t's z terms
                    dr = dan * hnr[j] * r * (one - r)  # through r (hw_n + b_hn)
                    dp_r[j], dp_z[j], dp_n[j] = dr, dz, dan
                    dw_r[j], dw_z[j], dw_n[j] = dr, dz, dan * r
                for j in range(3 * H):
                    db_h[j] += dpr[j]
                for j in range(H):
                    db_hn[j] += dw_n[j]
            if t > 0:  # h_0 is a constant zero: no gradient flows into it
                _matmul_nt(dw, W_hh_T, dh_prev)  # (B, H): dhw W_hh
                for b in range(B):
                    dpv, dhr, az = dh_prev[b], dh[b], a[b, H:2 * H]  # (H,)
                    for j in range(H):
                        dpv[j] += dhr[j] * az[j]  # + the direct path dh z
                dh, dh_prev = dh_prev, dh
        _block_gradients(dpre[:n * B], dhw[:n * B], xs, states, t0, t1, dW_xh, dW_hh, W_xh, dxs)
    return dW_xh, dW_hh, db_h, db_hn


# --- the backend --------------------------------------------------------------------------
class NumbaArray(np.ndarray):
    """The backend's native array: a plain ndarray subclass, so host arrays are never taken
    silently (the contract's rule) while numpy code (losses, optimisers) still runs on it.
    Kernels get base-class views: numba types an exact ndarray on its fast C path."""
    __slots__ = ()


def _native(arr):
    return arr.view(NumbaArray)


_NAMES = {cell: param_names(cell) for cell in CELLS}  # kernel argument and gradient order
# Per cell: (forward, predict, backward) kernels. forward -> (logits, *saved), saved being
# what backward takes after (W_xh, W_hh, W_hy) and before (lengths, dlogits, block_steps).
_KERNELS = {
    "rnn_tanh": (_forward_kernel, _predict_kernel, _backward_kernel),
    "lstm": (_lstm_forward_kernel, _lstm_predict_kernel, _lstm_backward_kernel),
    "gru": (_gru_forward_kernel, _gru_predict_kernel, _gru_backward_kernel),
}


def _block_steps(shape, W_hh) -> int:
    """Steps per block: the input projection and the weight gradients are GEMMs over a
    block of steps x sequences rows of about BLOCK_BYTES, not over all T*B: temporaries
    are O(block), so predict holds no (T, B, H) array (the harness reports peak memory)
    and a block stays in L2. Measured at B=32 float32 against whole-sequence GEMMs: forward
    700 vs 1230 us at H=128, 2190 vs 3300 us at H=256 (large temporaries fault their pages
    in on every call), backward within noise (1150 vs 1210 us at H=128); 128-512 KiB
    blocks all alike."""
    batch_size, seq_len = shape[0], shape[1]
    return max(1, min(seq_len, BLOCK_BYTES // (batch_size * W_hh.shape[0] * W_hh.itemsize)))


# --- one layer-direction of a stacked or bidirectional model -------------------------------
# impls.reference.stack_forward / stack_backward compose the layers (reversal within each
# length, concatenation, dropout, the head: numpy, O(T*B*H) a layer); each layer-direction
# is one call of what the fused plain kernels inline (_*_states, _*_bptt), on xs rows that
# are time-major already (an empty x: nothing to gather). Their recurrence is the fused
# kernels' own compiled one (keep=True); a first stacked forward compiles _*_states around
# it, a first stacked backward compiles _*_bptt. Per cell: those two, and the names of the
# arrays _*_states returns after h_last, which _*_bptt takes after (W_xh, W_hh, xs).
_LAYER_KERNELS = {
    "rnn_tanh": (_tanh_states, _tanh_bptt, ("states",)),
    "lstm": (_lstm_states, _lstm_bptt, ("states", "cells", "acts", "tanh_c")),
    "gru": (_gru_states, _gru_bptt, ("states", "acts", "hns")),
}


def _lengths_of(mask, seq_len: int, batch_size: int) -> np.ndarray:
    """reference's last-step mask (T, B, 1) one-hot, or None (step T), as the kernels'
    lengths (B,) int64."""
    if mask is None:
        return np.full(batch_size, seq_len, np.int64)
    return np.argmax(mask[:, :, 0], axis=0).astype(np.int64) + 1


def _given(arr, ndim: int, dtype) -> np.ndarray:
    """An optional kernel argument: arr as a plain contiguous array, or empty for None (the
    kernels take arrays only: one compiled signature for every layer)."""
    return np.empty((0,) * ndim, dtype) if arr is None else np.ascontiguousarray(arr)


def _layer_functions(cell: str):
    """(forward, backward) of one layer-direction of `cell` on the kernels, with the
    signatures of impls.reference.LAYERS[cell] (xp is numpy; kernels= is reference's
    element-wise hooks, which ours replace)."""
    states_kernel, bptt_kernel, kept = _LAYER_KERNELS[cell]
    names = RECURRENT_NAMES[cell]

    def layer_forward(xp, p, xs, seq_len, batch_size, mask, *, keep_states=True, kernels=None):
        # keep_states=False (predict's last layer) keeps every step all the same: the
        # recurrence's ring would need x gathered block by block, and a stacked model's
        # layers below hold O(T*B*H) anyway.
        xs = np.ascontiguousarray(xs)  # (T*B, In)
        w = [np.ascontiguousarray(p[name]) for name in names]
        h_last, *saved = states_kernel(np.empty((0, 0, 0), xs.dtype), xs, *w,
                                       _lengths_of(mask, seq_len, batch_size),
                                       _block_steps((batch_size, seq_len), w[1]))
        return h_last, {"xs": xs, **dict(zip(kept, saved))}

    def layer_backward(xp, p, cache, dh_head, mask, dout=None, *, need_dx=False, kernels=None):
        xs, states = cache["xs"], cache["states"]
        seq_len, batch_size = states.shape[0] - 1, states.shape[1]
        dxs = np.empty(xs.shape if need_dx else (0, 0), xs.dtype)  # (T*B, In): the kernel fills it
        W_hh = np.ascontiguousarray(p["W_hh"])
        grads = bptt_kernel(np.ascontiguousarray(p["W_xh"]), W_hh, xs,
                            *(cache[name] for name in kept), _given(dh_head, 2, xs.dtype),
                            _lengths_of(mask, seq_len, batch_size), _given(dout, 3, xs.dtype),
                            dxs, _block_steps((batch_size, seq_len), W_hh))
        return dict(zip(names, grads)), dxs if need_dx else None

    return layer_forward, layer_backward


_LAYERS = {cell: _layer_functions(cell) for cell in CELLS}  # reference.stack_*'s layers=


def _host(arrays: dict | None) -> dict | None:
    """Base-class views of native arrays, for reference's numpy code and the kernels."""
    return None if arrays is None else {k: np.asarray(v) for k, v in arrays.items()}


def _model(cell: str, structure: tuple, hidden_size: int) -> str:
    num_layers, bidirectional = structure
    return (f"{cell}, {num_layers} layer(s){', bidirectional' if bidirectional else ''}, "
            f"H={hidden_size}")


class NumbaBackend(HostArrayBackend):
    name = "numba"
    supports_backward = True
    native_type = NumbaArray
    cells = ("rnn_tanh", "lstm", "gru")
    structured = True
    supports_dropout = True

    @staticmethod
    def _operands(params, x, lengths):
        # Plain contiguous arrays: one compiled specialisation per dtype, never one per
        # layout, and an exact ndarray is what numba's dispatcher types fastest.
        cell = cell_fast(params)
        p = [np.ascontiguousarray(params[k]) for k in _NAMES[cell]]
        lens = (np.full(x.shape[0], x.shape[1], np.int64) if lengths is None
                else np.asarray(lengths, dtype=np.int64))
        return cell, p, lens, _block_steps(x.shape, p[1])

    def _forward(self, params, x, lengths, dropout=None):
        if dropout is not None or not is_plain(params):
            return self._stacked(params, x, lengths, dropout, keep_states=True)
        cell, p, lens, block_steps = self._operands(params, x, lengths)
        logits, *saved = _KERNELS[cell][0](np.ascontiguousarray(x), *p, lens, block_steps)
        cache = {"batch_size": x.shape[0], "cell": cell, "structure": (1, False),
                 "saved": tuple(saved), "lengths": lens, "block_steps": block_steps}
        return _native(logits), cache

    def _predict(self, params, x, lengths):
        if not is_plain(params):
            return self._stacked(params, x, lengths, None, keep_states=False)[0]
        cell, p, lens, block_steps = self._operands(params, x, lengths)
        return _native(_KERNELS[cell][1](np.ascontiguousarray(x), *p, lens, block_steps))

    @staticmethod
    def _stacked(params, x, lengths, dropout, *, keep_states):
        """A stacked or bidirectional model, or any with dropout: reference's composition
        of the layers (_LAYERS) -> (logits, cache)."""
        logits, cache = reference.stack_forward(
            np, _host(params), np.asarray(x), None if lengths is None else np.asarray(lengths),
            keep_states=keep_states, dropout=_host(dropout), layers=_LAYERS)
        cache.update(cell=cell_fast(params), structure=structure_of(params))
        return _native(logits), cache

    def _backward(self, params, cache, dlogits):
        cell = cache["cell"]
        states = cache["layers"][0][0]["states"] if "layers" in cache else cache["saved"][1]
        model = (cell_fast(params), structure_of(params), params["W_hh"].shape[1])
        if model != (cell, cache["structure"], states.shape[2]):
            # the kernels index by the cache's shapes, unchecked: refuse, never read past ends
            raise ValueError(f"params ({_model(*model)}) are not those of this cache's forward "
                             f"({_model(cell, cache['structure'], states.shape[2])})")
        if "layers" in cache:
            grads = reference.stack_backward(np, _host(params), cache, np.asarray(dlogits),
                                             layers=_LAYERS)
            return {k: _native(g) for k, g in grads.items()}
        weights = (np.ascontiguousarray(params[k]) for k in ("W_xh", "W_hh", "W_hy"))
        grads = _KERNELS[cell][2](*weights, *cache["saved"], cache["lengths"],
                                  np.ascontiguousarray(dlogits), cache["block_steps"])
        return {k: _native(g) for k, g in zip(_NAMES[cell], grads)}


def create(device: str | None = None) -> NumbaBackend:
    if numba is None:
        raise Unavailable(f"numba is not installed ({_IMPORT_ERROR}); pip install numba")
    require_cpu("numba", device)
    try:  # np.dot inside kernels is scipy's BLAS; loading it now also puts it under
        import scipy.linalg.cython_blas  # noqa: F401  the harness's thread limits
    except ImportError as exc:
        raise Unavailable(f"numba's np.dot needs scipy ({exc}); pip install scipy") from exc
    return NumbaBackend()
