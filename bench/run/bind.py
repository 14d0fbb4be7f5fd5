"""A phase of a Case as a named, public thing to time (as fastrnns' ModelDef names what it
times): its inputs built and checked once, through `backend.bind`, and a zero-argument
callable doing exactly one unit of the phase's work on them.

Nothing the timed callable runs is run here: its first call stays the one that pays any
compilation (the harness's compile_s).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

import impls
from bench.spec import Case
from bench.train.data import random_labels, random_sequences
from bench.train.losses import cross_entropy
from bench.train.optim import Adam

TRAIN_LR = 1e-4  # small enough that thousands of timed steps never blow the weights up


@dataclass(frozen=True, eq=False)  # compared by identity: it holds arrays
class Phase:
    """What the harness times for one case: `run()` is one call of the phase on `bound`'s
    inputs (native arrays, checked once: no validation and no host<->device copy inside,
    except in the transfer phase, whose work is the copy)."""
    case: Case
    bound: impls.Bound
    run: Callable[[], object]

    def __call__(self):
        return self.run()


def bind_inputs(backend, case: Case, seed: int = 0) -> impls.Bound:
    """The case's seeded params (its cell and structure) and inputs as native arrays,
    bound (checked once)."""
    host = impls.init_params(case.input_size, case.hidden_size, case.num_classes, seed=seed,
                             dtype=case.dtype, cell=case.cell, num_layers=case.num_layers,
                             bidirectional=case.bidirectional)
    x = random_sequences(case.batch_size, case.seq_len, case.input_size, seed=seed,
                         dtype=np.dtype(case.dtype))  # (B, T, I)
    return backend.bind(backend.from_numpy(host), backend.asarray(x))


def make_phase(backend, case: Case, seed: int = 0) -> Phase:
    """The Phase of `case` on `backend`: forward (predict), backward (on one cache),
    train_step (forward + loss + backward + Adam) or transfer (the copies the others skip)."""
    bound = bind_inputs(backend, case, seed)
    if case.phase == "forward":
        return Phase(case, bound, bound.predict)
    if case.phase == "transfer":
        return Phase(case, bound, _transfer(backend, bound))
    labels = backend.asarray(random_labels(case.batch_size, case.num_classes, seed=seed))
    if case.phase == "backward":
        logits, cache = backend.forward(bound.params, bound.x)
        _, dlogits = cross_entropy(logits, labels)  # (B, C) in the backend's dtype by construction
        return Phase(case, bound, lambda: bound.backward(cache, dlogits))
    if case.phase == "train_step":
        return Phase(case, bound, _train_step(bound, labels))
    raise ValueError(f"unknown phase {case.phase!r}")


def _transfer(backend, bound: impls.Bound):
    host_x = backend.to_numpy(bound.x)  # (B, T, I)
    logits = backend.predict(bound.params, bound.x)  # (B, C), on the device

    def transfer():
        on_device = backend.asarray(host_x)  # host -> device
        backend.sync()
        return on_device, backend.to_numpy(logits)  # device -> host
    return transfer


def _train_step(bound: impls.Bound, labels):
    optimizer = Adam(TRAIN_LR)
    state = {"params": bound.params}  # each step's update feeds the next

    def train_step():
        logits, cache = bound.forward(state["params"])
        _, dlogits = cross_entropy(logits, labels)
        grads = bound.backward(cache, dlogits, state["params"])
        state["params"] = optimizer.step(state["params"], grads)
        return state["params"]
    return train_step
