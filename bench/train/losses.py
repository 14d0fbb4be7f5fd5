"""Softmax cross-entropy and accuracy, written once against the array API.

Every function looks up the namespace of its input (array_api_compat.array_namespace),
so the same code runs on NumPy, PyTorch, CuPy and array-api-strict arrays; nothing here
converts to NumPy except the scalar results (a Python float is what a log line needs).

Shapes: B batch_size, C num_classes. Labels are integer class indices, shape (B,), in the
same namespace (and on the same device) as the logits.
"""
from __future__ import annotations

from array_api_compat import array_namespace, device


def _without_graph(arr):
    """The torch backend's forward returns logits that still carry its autograd graph (its
    backward needs it). The loss is computed by hand, outside autograd, so it must not extend
    that graph: dlogits goes back into backward as a plain array. Duck-typed so that this
    module imports no framework; arrays of other libraries pass through untouched."""
    if getattr(arr, "requires_grad", False):
        return arr.detach()
    return arr


def log_softmax(logits):
    """log softmax over the last axis, stable: shifting by the row max makes every exp <= 1."""
    xp = array_namespace(logits)
    shifted = logits - xp.max(logits, axis=-1, keepdims=True)  # (..., C)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))


def softmax(logits):
    """softmax over the last axis, stable for any logit magnitude (see log_softmax)."""
    xp = array_namespace(logits)
    exps = xp.exp(logits - xp.max(logits, axis=-1, keepdims=True))  # (..., C), max entry 1
    return exps / xp.sum(exps, axis=-1, keepdims=True)


def one_hot(labels, num_classes: int, dtype):
    """(B,) integer labels -> (B, C) one-hot in `dtype`. Broadcast comparison rather than
    scatter or fancy indexing: the array API standardises neither for this."""
    xp = array_namespace(labels)
    classes = xp.arange(num_classes, dtype=labels.dtype, device=device(labels))  # (C,)
    return xp.astype(labels[:, None] == classes[None, :], dtype)  # (B, C)


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy over the batch -> (loss as float, dlogits).

    dlogits = (softmax(logits) - onehot(labels)) / B is the gradient of the MEAN loss with
    respect to the logits, i.e. exactly what backend.backward expects as its `dlogits`.
    """
    logits = _without_graph(logits)
    xp = array_namespace(logits, labels)
    batch_size, num_classes = logits.shape
    target = one_hot(labels, num_classes, logits.dtype)  # (B, C)
    log_probs = log_softmax(logits)  # (B, C)
    loss = -xp.sum(target * log_probs) / batch_size
    dlogits = (xp.exp(log_probs) - target) / batch_size  # (B, C)
    return float(loss), dlogits


def accuracy(logits, labels) -> float:
    """Fraction of rows whose arg-max logit is the label (ties go to the lowest class)."""
    logits = _without_graph(logits)
    xp = array_namespace(logits, labels)
    correct = xp.argmax(logits, axis=-1) == labels  # (B,) bool
    # Counted in the logits' own float dtype: not every device has float64 (Apple's MPS).
    return float(xp.mean(xp.astype(correct, logits.dtype)))
