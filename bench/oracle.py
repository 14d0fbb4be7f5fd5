"""The float64 oracle: PyTorch autograd on the model written out step by step.

It shares no code with any implementation (no impls.reference, no nn.RNN kernel): plain
tensor ops and autograd, in float64, from the canonical parameters. The test suite checks
the oracle itself against nn.RNN and against central differences, so a backend that
agrees with it agrees with the math.
"""
from __future__ import annotations

import numpy as np

from impls.params import PARAM_NAMES

_TINY = 1e-300


def float64_logits_and_grads(params: dict, x: np.ndarray, dlogits: np.ndarray | None = None,
                             lengths: np.ndarray | None = None):
    """-> (logits, grads or None) in float64 numpy; grads of sum(logits * dlogits)."""
    import torch

    p = {k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True) for k, v in params.items()}
    xt = torch.tensor(np.asarray(x, dtype=np.float64))
    batch_size, seq_len, _ = xt.shape
    h = torch.zeros(batch_size, p["W_hh"].shape[0], dtype=torch.float64)
    states = []
    for t in range(seq_len):
        h = torch.tanh(xt[:, t, :] @ p["W_xh"].T + h @ p["W_hh"].T + p["b_h"])
        states.append(h)
    if lengths is None:
        h_last = h
    else:
        h_last = torch.stack([states[int(n) - 1][i] for i, n in enumerate(lengths)])
    logits = h_last @ p["W_hy"].T + p["b_y"]
    if dlogits is None:
        return logits.detach().numpy(), None
    grads = torch.autograd.grad(logits, [p[k] for k in PARAM_NAMES],
                                torch.tensor(np.asarray(dlogits, dtype=np.float64)))
    return logits.detach().numpy(), {k: g.numpy() for k, g in zip(PARAM_NAMES, grads)}


def rel_error(actual, expected) -> float:
    """max |actual - expected| / max |expected|: an error relative to the array's scale,
    which unlike an element-wise relative error stays meaningful for entries near 0."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise ValueError(f"shape mismatch: {actual.shape} vs expected {expected.shape}")
    scale = max(float(np.max(np.abs(expected), initial=0.0)), _TINY)
    return float(np.max(np.abs(actual - expected), initial=0.0)) / scale


def compare(backend, params: dict, x: np.ndarray, dlogits: np.ndarray,
            lengths: np.ndarray | None = None, *, grads: bool = True,
            expected: tuple | None = None) -> dict[str, float]:
    """Relative errors of `backend` (run in params' dtype) vs the float64 oracle:
    {'logits': e, 'W_xh': e, ...}; gradients only for backward-capable backends and when
    asked (grads=False checks inference alone, through `predict`). `expected`: the
    oracle's (logits, grads) for exactly these inputs, when a caller already has them
    (a sweep computes them once per size for every implementation)."""
    native = backend.from_numpy(params)
    x_native = backend.asarray(x.astype(params["W_xh"].dtype))
    len_native = None if lengths is None else backend.asarray(lengths)
    want_grads = backend.supports_backward and grads
    if expected is None:
        expected = float64_logits_and_grads(params, x, dlogits if want_grads else None, lengths)
    ref_logits, ref_grads = expected
    if want_grads:
        logits, cache = backend.forward(native, x_native, len_native)
        grads = backend.to_numpy(backend.backward(
            native, cache, backend.asarray(dlogits.astype(params["W_xh"].dtype))))
    else:
        logits, grads = backend.predict(native, x_native, len_native), {}
    errors = {"logits": rel_error(backend.to_numpy(logits), ref_logits)}
    errors.update({k: rel_error(grads[k], ref_grads[k]) for k in grads})
    return errors


def seeded_inputs(batch_size: int, seq_len: int, input_size: int, hidden_size: int,
                  num_classes: int, *, seed: int, dtype=np.float64):
    """(params, x, dlogits) for one conformance case: canonical params, inputs and an
    upstream gradient, seeded. It builds inputs only; `compare` does the checking."""
    from impls.params import init_params

    rng = np.random.default_rng(seed + 1)
    params = init_params(input_size, hidden_size, num_classes, seed=seed, dtype=dtype)
    x = rng.standard_normal((batch_size, seq_len, input_size)).astype(dtype)
    dlogits = rng.standard_normal((batch_size, num_classes)).astype(dtype)
    return params, x, dlogits
