"""Optimisers, gradient clipping, L2 regularisation and learning-rate schedules.

Written once against the array API (array_api_compat.array_namespace), so the same code
updates NumPy, PyTorch, CuPy or array-api-strict parameter dicts. Functional, like the
backend contract: `step(params, grads)` returns a NEW dict and never writes into the
arrays it was given, so a caller may keep references to old parameters (train.py keeps
the best epoch's that way). The optimiser's own state (momentum buffers, Adam moments,
step count) lives in the optimiser object.

The update rules are PyTorch's (torch.optim.SGD / Adam, clip_grad_norm_), term by term,
so a run here and a run of the article's PyTorch script take the same steps; the tests
check that to 1e-12 in float64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from array_api_compat import array_namespace

from impls.params import is_weight


def _namespace(arrays: dict):
    return array_namespace(*arrays.values())


class SGD:
    """Stochastic gradient descent, with optional (heavy-ball) momentum as in torch.optim.SGD:
    buf = momentum * buf + g;  p = p - lr * buf."""

    def __init__(self, lr: float, momentum: float = 0.0):
        if lr < 0 or not 0.0 <= momentum < 1.0:
            raise ValueError(f"need lr >= 0 and 0 <= momentum < 1, got lr={lr}, momentum={momentum}")
        self.lr, self.momentum = lr, momentum
        self.buffers: dict | None = None  # created lazily: shapes and namespace come with params

    def step(self, params: dict, grads: dict, lr: float | None = None) -> dict:
        lr = self.lr if lr is None else lr
        if self.momentum == 0.0:
            return {k: p - lr * grads[k] for k, p in params.items()}
        if self.buffers is None:
            xp = _namespace(params)
            self.buffers = {k: xp.zeros_like(p) for k, p in params.items()}
        # Starting from zero buffers, the first step's buf is exactly g, as torch's is.
        self.buffers = {k: self.momentum * self.buffers[k] + grads[k] for k in params}
        return {k: p - lr * self.buffers[k] for k, p in params.items()}


class Adam:
    """Adam (Kingma & Ba), bias-corrected, exactly as torch.optim.Adam computes it:
    m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
    p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)."""

    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if lr < 0 or eps < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"need lr >= 0, eps >= 0, 0 <= betas < 1; got {lr}, {eps}, {betas}")
        self.lr, self.betas, self.eps = lr, tuple(betas), eps
        self.t = 0
        self.m: dict | None = None
        self.v: dict | None = None

    def step(self, params: dict, grads: dict, lr: float | None = None) -> dict:
        lr = self.lr if lr is None else lr
        beta1, beta2 = self.betas
        if self.m is None:
            xp = _namespace(params)
            self.m = {k: xp.zeros_like(p) for k, p in params.items()}
            self.v = {k: xp.zeros_like(p) for k, p in params.items()}
        xp = _namespace(grads)
        self.t += 1
        self.m = {k: beta1 * self.m[k] + (1 - beta1) * grads[k] for k in params}
        self.v = {k: beta2 * self.v[k] + (1 - beta2) * (grads[k] * grads[k]) for k in params}
        step_size = lr / (1 - beta1 ** self.t)
        bias2_sqrt = math.sqrt(1 - beta2 ** self.t)
        return {k: p - step_size * (self.m[k] / (xp.sqrt(self.v[k]) / bias2_sqrt + self.eps))
                for k, p in params.items()}


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def make_optimizer(name: str, lr: float, *, momentum: float = 0.0):
    """'adam' or 'sgd' by name (what a config or command line holds)."""
    if name == "adam":
        return Adam(lr)
    if name == "sgd":
        return SGD(lr, momentum=momentum)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


# ------------------------------------------------------------------ gradient surgery

def global_norm(grads: dict) -> float:
    """sqrt of the sum of squares of every gradient entry: the L2 norm of all of them as one
    vector. Summed on the device, one transfer for the final scalar."""
    xp = _namespace(grads)
    total = sum(xp.sum(g * g) for g in grads.values())
    return float(xp.sqrt(total))


def clip_by_global_norm(grads: dict, max_norm: float | None) -> tuple[dict, float]:
    """-> (grads scaled so their global norm is at most max_norm, the norm before).

    Scales every gradient by the same factor, so the update keeps its direction (unlike
    clipping each entry). Same rule as torch.nn.utils.clip_grad_norm_, including its 1e-6
    guard against dividing by a zero norm. max_norm None or <= 0 disables clipping.
    """
    norm = global_norm(grads)
    if not max_norm or max_norm <= 0:
        return grads, norm
    scale = max_norm / (norm + 1e-6)
    if scale >= 1.0:
        return grads, norm
    return {k: g * scale for k, g in grads.items()}, norm


def add_weight_decay(grads: dict, params: dict, weight_decay: float,
                     names: tuple[str, ...] | None = None) -> dict:
    """grads + weight_decay * W for the weight matrices (`names`, default every layer's and
    direction's W_*: impls.params.is_weight); biases untouched.

    This is classic L2 regularisation (the gradient of weight_decay/2 * ||W||^2), i.e. what
    torch.optim.Adam(weight_decay=...) does, NOT AdamW's decoupled decay: under Adam the
    added term is rescaled by the adaptive denominator like any other gradient. Biases are
    left out on purpose: shrinking them towards 0 does not limit the model's capacity.
    """
    if weight_decay == 0:
        return grads
    decayed = is_weight if names is None else names.__contains__
    return {k: (g + weight_decay * params[k]) if decayed(k) else g for k, g in grads.items()}


# ------------------------------------------------------------------------ schedules

SCHEDULES = ("constant", "cosine", "step")


@dataclass(frozen=True)
class Schedule:
    """The learning rate of each epoch (0-based), set once per epoch.

    warmup > 0: epochs 0..warmup-1 ramp linearly, lr * (epoch + 1) / warmup, reaching
    the base lr at epoch warmup - 1 (starting a fresh Adam at a small lr keeps its first,
    poorly estimated steps small). After warm-up, with e = epoch - warmup and
    n = epochs - warmup:
      constant: lr
      cosine:   min_lr + (lr - min_lr) * (1 + cos(pi * e / n)) / 2, from lr down towards
                the floor min_lr (torch's CosineAnnealingLR with T_max = n)
      step:     lr * gamma ** (e // step_size)
    """
    lr: float
    kind: str = "constant"
    epochs: int = 1
    warmup: int = 0
    min_lr: float = 0.0
    step_size: int = 10
    gamma: float = 0.1

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; choose one of {', '.join(SCHEDULES)}")
        if self.warmup < 0 or self.step_size < 1 or self.epochs < 1:
            raise ValueError("need warmup >= 0, step_size >= 1, epochs >= 1")

    def __call__(self, epoch: int) -> float:
        if epoch < self.warmup:
            return self.lr * (epoch + 1) / self.warmup
        e, n = epoch - self.warmup, max(1, self.epochs - self.warmup)
        if self.kind == "cosine":
            return self.min_lr + (self.lr - self.min_lr) * (1 + math.cos(math.pi * min(e, n) / n)) / 2
        if self.kind == "step":
            return self.lr * self.gamma ** (e // self.step_size)
        return self.lr
