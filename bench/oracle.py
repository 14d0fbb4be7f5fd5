"""The float64 oracle: PyTorch autograd on the model written out step by step.

It shares no code with any implementation (no impls.reference, no nn.RNN kernel): plain
tensor ops and autograd, in float64, from the canonical parameters. The test suite checks
the oracle itself against nn.RNN and against central differences, so a backend that
agrees with it agrees with the math.
"""
from __future__ import annotations

import numpy as np

from impls.params import cell_of, is_plain

_TINY = 1e-300


def _step(cell: str, p: dict, x_t, h, c):
    """One step of `cell` written out from PyTorch's documented equations, gate rows in
    PyTorch's order (lstm i, f, g, o; gru r, z, n): -> (h, c)."""
    import torch

    H = h.shape[1]
    if cell == "rnn_tanh":
        return torch.tanh(x_t @ p["W_xh"].T + h @ p["W_hh"].T + p["b_h"]), c
    if cell == "lstm":
        W_i, W_f, W_g, W_o = (p["W_xh"][k * H:(k + 1) * H] for k in range(4))
        U_i, U_f, U_g, U_o = (p["W_hh"][k * H:(k + 1) * H] for k in range(4))
        b_i, b_f, b_g, b_o = (p["b_h"][k * H:(k + 1) * H] for k in range(4))
        i = torch.sigmoid(x_t @ W_i.T + h @ U_i.T + b_i)
        f = torch.sigmoid(x_t @ W_f.T + h @ U_f.T + b_f)
        g = torch.tanh(x_t @ W_g.T + h @ U_g.T + b_g)
        o = torch.sigmoid(x_t @ W_o.T + h @ U_o.T + b_o)
        c = f * c + i * g
        return o * torch.tanh(c), c
    W_r, W_z, W_n = (p["W_xh"][k * H:(k + 1) * H] for k in range(3))
    U_r, U_z, U_n = (p["W_hh"][k * H:(k + 1) * H] for k in range(3))
    b_r, b_z, b_in = (p["b_h"][k * H:(k + 1) * H] for k in range(3))
    r = torch.sigmoid(x_t @ W_r.T + h @ U_r.T + b_r)
    z = torch.sigmoid(x_t @ W_z.T + h @ U_z.T + b_z)
    n = torch.tanh(x_t @ W_n.T + b_in + r * (h @ U_n.T + p["b_hn"]))
    return (1 - z) * n + z * h, c


def _direction(cell: str, p: dict, inputs: list, lengths: list[int], reverse: bool):
    """One direction of one layer over `inputs` (a list over t of (B, In) tensors) ->
    (outputs: a list over t of (B, H), zero past each sequence's end; final states (B, H)).
    Each sequence i is read at steps 0..lengths[i]-1, forwards or backwards: written per
    sequence on purpose, sharing nothing with the backends' reversal by index."""
    import torch

    batch_size, hidden_size = inputs[0].shape[0], p["W_hh"].shape[1]
    outputs = [[None] * batch_size for _ in inputs]
    finals = []
    for i, n in enumerate(lengths):
        h = torch.zeros(1, hidden_size, dtype=torch.float64)
        c = torch.zeros_like(h)
        for t in (range(n - 1, -1, -1) if reverse else range(n)):
            h, c = _step(cell, p, inputs[t][i:i + 1], h, c)
            outputs[t][i] = h[0]
        for t in range(n, len(inputs)):
            outputs[t][i] = torch.zeros(hidden_size, dtype=torch.float64)
        finals.append(h[0])
    return [torch.stack(row) for row in outputs], torch.stack(finals)


def _logits(cell: str, p: dict, xt, lengths: list[int], dropout: dict | None):
    import torch

    from impls.params import layer_params, structure_of, directions

    num_layers, bidirectional = structure_of(p)
    seq_len = xt.shape[1]
    inputs = [xt[:, t, :] for t in range(seq_len)]
    for layer in range(num_layers):
        results = [_direction(cell, layer_params(p, layer, reverse), inputs, lengths, reverse)
                   for reverse in directions(bidirectional)]
        finals = torch.cat([final for _, final in results], dim=1)  # (B, D*H)
        inputs = [torch.cat([outs[t] for outs, _ in results], dim=1) for t in range(seq_len)]
        if dropout is not None and layer < num_layers - 1:
            mask = torch.tensor(np.asarray(dropout[f"l{layer}"], dtype=np.float64))  # (B, T, D*H)
            inputs = [inputs[t] * mask[:, t, :] for t in range(seq_len)]
    if dropout is not None:
        finals = finals * torch.tensor(np.asarray(dropout["head"], dtype=np.float64))
    return finals @ p["W_hy"].T + p["b_y"]  # (B, C)


def float64_logits_and_grads(params: dict, x: np.ndarray, dlogits: np.ndarray | None = None,
                             lengths: np.ndarray | None = None, dropout: dict | None = None):
    """-> (logits, grads or None) in float64 numpy; grads of sum(logits * dlogits). The
    cell (rnn_tanh, lstm, gru) and structure (layers, directions) are read off the params;
    h_0 = c_0 = 0. The head reads each direction's final state of the last layer, forward
    first (PyTorch's h_n); `dropout`: host masks (impls.dropout_masks) multiplied in."""
    import torch

    cell = cell_of(params)
    p = {k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True) for k, v in params.items()}
    xt = torch.tensor(np.asarray(x, dtype=np.float64))
    batch_size, seq_len, _ = xt.shape
    if lengths is None and dropout is None and is_plain(params):
        logits = _plain_logits(cell, p, xt)  # the batched loop: fast for the sweeps' oracle
    else:
        steps = [seq_len] * batch_size if lengths is None else [int(n) for n in lengths]
        logits = _logits(cell, p, xt, steps, dropout)
    if dlogits is None:
        return logits.detach().numpy(), None
    names = list(params)
    grads = torch.autograd.grad(logits, [p[k] for k in names],
                                torch.tensor(np.asarray(dlogits, dtype=np.float64)))
    return logits.detach().numpy(), {k: g.numpy() for k, g in zip(names, grads)}


def _plain_logits(cell: str, p: dict, xt):
    """One layer, one direction, full length: all sequences stepped together."""
    import torch

    h = torch.zeros(xt.shape[0], p["W_hh"].shape[1], dtype=torch.float64)
    c = torch.zeros_like(h)
    for t in range(xt.shape[1]):
        h, c = _step(cell, p, xt[:, t, :], h, c)
    return h @ p["W_hy"].T + p["b_y"]


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
            expected: tuple | None = None, dropout: dict | None = None) -> dict[str, float]:
    """Relative errors of `backend` (run in params' dtype) vs the float64 oracle:
    {'logits': e, 'W_xh': e, ...}; gradients only for backward-capable backends and when
    asked (grads=False checks inference alone, through `predict`; dropout host masks then
    are refused: predict never drops). `expected`: the
    oracle's (logits, grads) for exactly these inputs, when a caller already has them
    (a sweep computes them once per size for every implementation)."""
    native = backend.from_numpy(params)
    x_native = backend.asarray(x.astype(params["W_xh"].dtype))
    len_native = None if lengths is None else backend.asarray(lengths)
    want_grads = backend.supports_backward and grads
    if dropout is not None and not want_grads:
        raise ValueError("dropout is checked through forward and backward; predict never drops")
    if expected is None:
        expected = float64_logits_and_grads(params, x, dlogits if want_grads else None, lengths,
                                            dropout)
    ref_logits, ref_grads = expected
    if want_grads:
        masks = None if dropout is None else backend.as_dropout(
            {k: v.astype(params["W_xh"].dtype) for k, v in dropout.items()})
        logits, cache = backend.forward(native, x_native, len_native, masks)
        grads = backend.to_numpy(backend.backward(
            native, cache, backend.asarray(dlogits.astype(params["W_xh"].dtype))))
    else:
        logits, grads = backend.predict(native, x_native, len_native), {}
    errors = {"logits": rel_error(backend.to_numpy(logits), ref_logits)}
    errors.update({k: rel_error(grads[k], ref_grads[k]) for k in grads})
    return errors


def seeded_inputs(batch_size: int, seq_len: int, input_size: int, hidden_size: int,
                  num_classes: int, *, seed: int, dtype=np.float64, cell: str = "rnn_tanh",
                  num_layers: int = 1, bidirectional: bool = False):
    """(params, x, dlogits) for one conformance case: canonical params of `cell` and
    structure, inputs and an upstream gradient, seeded. It builds inputs only; `compare`
    does the checking."""
    from impls.params import init_params

    rng = np.random.default_rng(seed + 1)
    params = init_params(input_size, hidden_size, num_classes, seed=seed, dtype=dtype, cell=cell,
                         num_layers=num_layers, bidirectional=bidirectional)
    x = rng.standard_normal((batch_size, seq_len, input_size)).astype(dtype)
    dlogits = rng.standard_normal((batch_size, num_classes)).astype(dtype)
    return params, x, dlogits
