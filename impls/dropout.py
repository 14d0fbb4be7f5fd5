"""Dropout masks, made on the host from a seed: the same units are dropped in every backend.

Dropout as nn.RNN(dropout=p) and the article use it: on each stacked layer's output that
feeds the next layer, and (as the article's nn.Dropout before nn.Linear) on the head's
input. Inverted dropout: a kept unit is scaled by 1/(1-p), so predict (which never drops)
needs no rescaling. The masks are an argument of `forward`, not state of a backend: the
contract stays functional, and two backends given one seed compute the same function.

    masks = impls.dropout_masks(0.2, seed=step, batch_size=B, seq_len=T, hidden_size=H,
                                num_layers=2, bidirectional=True)      # numpy, batch-first
    logits, cache = backend.forward(params, x, lengths, dropout=backend.as_dropout(masks))

Keys: "l{k}" (B, T, D*H) for layer k = 0 .. num_layers-2's outputs, "head" (B, D*H).
"""
from __future__ import annotations

import numpy as np

from .params import directions, infer_sizes, structure_of


def mask_shapes(batch_size: int, seq_len: int, hidden_size: int, num_layers: int,
                bidirectional: bool) -> dict[str, tuple[int, ...]]:
    width = len(directions(bidirectional)) * hidden_size  # D*H
    shapes = {f"l{layer}": (batch_size, seq_len, width) for layer in range(num_layers - 1)}
    shapes["head"] = (batch_size, width)
    return shapes


def dropout_masks(rate: float, *, seed: int, batch_size: int, seq_len: int, hidden_size: int,
                  num_layers: int = 1, bidirectional: bool = False,
                  dtype=np.float32) -> dict[str, np.ndarray] | None:
    """Masks of 0 and 1/(1-rate), each unit kept with probability 1 - rate; None for rate 0
    (no dropout: the forward is then exactly the undropped one). Drawn in float64 from
    np.random.default_rng(seed), in key order, then cast."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must lie in [0, 1), got {rate!r}")
    if rate == 0.0:
        return None
    rng = np.random.default_rng(seed)
    scale = 1.0 / (1.0 - rate)
    return {key: ((rng.random(shape) >= rate) * scale).astype(dtype)
            for key, shape in mask_shapes(batch_size, seq_len, hidden_size, num_layers,
                                          bidirectional).items()}


def masks_for(params: dict, x_shape: tuple, rate: float, *, seed: int) -> dict | None:
    """dropout_masks for canonical `params` (any structure) and an input of shape (B, T, I)."""
    num_layers, bidirectional = structure_of(params)
    return dropout_masks(rate, seed=seed, batch_size=x_shape[0], seq_len=x_shape[1],
                         hidden_size=infer_sizes(params)[1], num_layers=num_layers,
                         bidirectional=bidirectional, dtype=np.asarray(params["W_hy"]).dtype)
