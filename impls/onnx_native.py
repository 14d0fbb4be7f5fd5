"""`onnx_native`: the classifier on ONNX's own recurrent operators (RNN, LSTM, GRU; opset
21) run by ONNX Runtime's CPUExecutionProvider: one operator for the whole recurrence,
one file and one session for every seq_len (the seq dimension is dynamic), the batch
dynamic too. Forward-only; the caching, sessions and threads are OnnxBackend's.

    x_t    = Transpose(x)                           (seq, batch, I): ORT runs layout=0 only
    Y_h    = LSTM | GRU | RNN(x_t, W, R, B, sequence_lens=lengths)   (1, batch, H)
    logits = MatMul(Squeeze(Y_h), W_hy^T) + b_y

Stacked and bidirectional (impls.params' structure): one operator per layer, with
direction="bidirectional" for two directions (W, R, B of the directions stacked, forward
first: (D, G*H, .)). A layer below the last returns Y (seq, D, batch, H), which Transpose
and Reshape make (seq, batch, D*H), the next layer's input; the last returns Y_h
(D, batch, H) -> (batch, D*H), the head's input, forward first. With sequence_lens ORT's
reverse direction reads each sequence backwards within its own length (steps
lengths[b]..1, PyTorch's packed-sequence semantics; the tests check it against the oracle
with variable lengths, and padding up to +-3e38 changes nothing there either).

Mapping from the canonical params (`onnx_weights`): ONNX stacks the gates as LSTM i, o, f, c
(PyTorch i, f, g, o) and GRU z, r, h (PyTorch r, z, n); B = [Wb, Rb] holds canonical b_h in
Wb and zeros in Rb, except GRU's Rb h-part = b_hn with linear_before_reset=1, which is
PyTorch's n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn)). With sequence_lens the
operator's Y_h is each sequence's state at its own last step: ORT never lets steps past
it reach Y_h, whatever the padding holds (tests: padding up to +-3e38 changes nothing).
Batch-invariant to the bit, with one fix: ORT's RNN kernel (not LSTM's or GRU's) rounds
its GEMMs differently for a batch of 1 (~3e-8 apart; batches of 2 and more agree to the
bit), so the rnn_tanh graph pads one zero sequence onto every batch and drops its row.

What ORT's CPU kernels do not run (checked with onnxruntime 1.32): layout=1 (batch-major;
"Batchwise recurrent operations (layout == 1) are not supported"), hence the Transpose;
and double ("LSTM operator does not support double yet", same for GRU; RNN has no double
kernel), hence float32 only: float64 cases skip rather than pass off float32 math as float64.

No int8 variant: quantize_dynamic turns LSTM into com.microsoft's DynamicQuantizeLSTM
(int8 W and R per channel; GRU and RNN it leaves float), which quantises its activations
inside the kernel with one dynamic scale per tensor: x over the whole (T, batch, I) input
and h over the batch at each step. A sequence's logits then depend on its batchmates and
on their padding (measured: a batchmate scaled 5x moves the others' logits by ~3e-3, 1e3
padding by ~0.1, error vs the oracle ~2e-3 before any of that), which breaks the contract
the conformance tests hold every backend to (test_onnx_native checks it still does), and
the scales live inside the fused kernel where `onnx_backend._batch_invariant` cannot
reach. onnx_int8 (the unrolled graph) is the int8 ONNX Runtime row.

Measured side by side (one process, 1 thread, B=32, T=64, I=32, float32, predict, median
of 30 after warm-up; onnx_fp32 (unrolled) time / onnx_native time, > 1: native is faster;
median (range) of 5 runs on a 2-core AMD EPYC (AVX2) shared with other jobs):
    cell       H=128              H=256
    rnn_tanh   0.34 (0.22-0.36)   0.36 (0.35-0.39)   ORT's RNN kernel: ~3x slower
    lstm       1.35 (1.19-1.40)   1.21 (1.19-1.35)   one fused kernel vs ~12 nodes a step
    gru        1.11 (1.09-1.15)   1.05 (1.04-1.11)
Compile (export + session creation): 3-30 ms, once for every seq_len, against the
unrolled graph's 20-130 ms (onnx_int8: 100-510 ms) per seq_len at T=64.
"""
from __future__ import annotations

import numpy as np

from .base import require_cpu
from .onnx_backend import OnnxBackend, _installed, _runtime, classifier_model, initializer
from .params import cell_fast, directions, layer_params, structure_of

OPERATORS = {"rnn_tanh": "RNN", "lstm": "LSTM", "gru": "GRU"}
# ONNX's gate blocks, as indices of PyTorch's (canonical) blocks
GATE_ORDER = {"rnn_tanh": (0,), "lstm": (0, 3, 1, 2), "gru": (1, 0, 2)}


def onnx_weights(p: dict) -> dict:
    """One layer-direction's canonical params (impls.params.layer_params) -> the recurrent
    operator's W (G*H, In), R (G*H, H) and B (2*G*H,) = [Wb, Rb], in ONNX's gate order."""
    cell, hidden_size = cell_fast(p), p["W_hh"].shape[1]

    def gates(arr):
        return np.concatenate([arr[k * hidden_size:(k + 1) * hidden_size] for k in GATE_ORDER[cell]])

    recurrent_bias = np.zeros_like(p["b_h"])
    if cell == "gru":  # the h block is last in both orders
        recurrent_bias[2 * hidden_size:] = p["b_hn"]
    return {"W": gates(p["W_xh"]), "R": gates(p["W_hh"]),
            "B": np.concatenate([gates(p["b_h"]), recurrent_bias])}


def layer_weights(params: dict, layer: int) -> dict:
    """One layer's W (D, G*H, In), R (D, G*H, H), B (D, 2*G*H): its directions stacked,
    forward first (ONNX's order for direction="bidirectional")."""
    per_direction = [onnx_weights(layer_params(params, layer, reverse))
                     for reverse in directions(structure_of(params)[1])]
    return {k: np.stack([w[k] for w in per_direction]) for k in ("W", "R", "B")}


def build_native(params: dict, with_lengths: bool):
    """The ModelProto: x (batch, seq_len, I) with seq_len dynamic [and lengths int32]; one
    operator per layer, layer k >= 1 reading layer k-1's Y of every step."""
    _runtime()
    from onnx import TensorProto, helper

    cell, (num_layers, bidirectional) = cell_fast(params), structure_of(params)
    attributes = {"hidden_size": params["W_hh"].shape[1]}
    if cell == "gru":
        attributes["linear_before_reset"] = 1  # PyTorch's GRU (ONNX's default is 0)
    elif cell == "rnn_tanh":
        attributes["activations"] = ["Tanh"] * (2 if bidirectional else 1)  # one per direction
    if bidirectional:  # the reverse direction reads each sequence backwards within its length
        attributes["direction"] = "bidirectional"
    inits = [initializer("axis_0", [0], np.int64)]
    node = helper.make_node
    x, lengths, h_last = "x", "lengths" if with_lengths else "", "h_last"
    nodes = []
    if cell == "rnn_tanh":  # one zero sequence more: its GEMMs never see a batch of 1
        inits += [initializer("extra_row", [0, 0, 0, 1, 0, 0], np.int64),
                  initializer("extra_length", [0, 1], np.int64), initializer("one", 1, np.int32),
                  initializer("minus_one", [-1], np.int64)]
        nodes.append(node("Pad", ["x", "extra_row"], ["x_extra"]))
        x, h_last = "x_extra", "h_extra"
        if with_lengths:
            nodes.append(node("Pad", ["lengths", "extra_length", "one"], ["lengths_extra"]))
            lengths = "lengths_extra"
    if num_layers > 1:
        inits.append(initializer("merge_directions", [0, 0, -1], np.int64))
    nodes.append(node("Transpose", [x], ["x_tmajor"], perm=[1, 0, 2]))  # (seq, batch, I)
    seq = "x_tmajor"
    for layer in range(num_layers):
        tag, last = (f"_l{layer}" if layer else ""), layer == num_layers - 1  # W, W_l1, ...
        inits += [initializer(k + tag, v) for k, v in layer_weights(params, layer).items()]
        y = f"Y{tag}"  # the last layer's Y (every step) is not computed, only Y_h
        nodes.append(node(OPERATORS[cell], [seq, f"W{tag}", f"R{tag}", f"B{tag}", lengths],
                          ["", "Y_h"] if last else [y], name=f"recurrence{tag}", **attributes))
        if not last:  # Y (seq, D, batch, H) -> the next layer's input (seq, batch, D*H)
            nodes += [node("Transpose", [y], [f"{y}_steps"], perm=[0, 2, 1, 3]),  # (seq, B, D, H)
                      node("Reshape", [f"{y}_steps", "merge_directions"], [f"{y}_merged"])]
            seq = f"{y}_merged"
    if bidirectional:  # (D, batch, H) -> (batch, D*H), forward first
        inits.append(initializer("merge_final", [0, -1], np.int64))
        nodes += [node("Transpose", ["Y_h"], ["Y_h_batch"], perm=[1, 0, 2]),  # (batch, D, H)
                  node("Reshape", ["Y_h_batch", "merge_final"], [h_last])]
    else:
        nodes.append(node("Squeeze", ["Y_h", "axis_0"], [h_last]))  # (1, batch, H) -> (batch, H)
    if cell == "rnn_tanh":
        nodes.append(node("Slice", ["h_extra", "axis_0", "minus_one", "axis_0"], ["h_last"]))  # rows [0, -1)
    return classifier_model(params, nodes, inits, "h_last", "seq_len",
                            TensorProto.INT32 if with_lengths else None, f"ONNX {OPERATORS[cell]}")


class OnnxNativeBackend(OnnxBackend):
    """OnnxBackend with the recurrent operator's graph: one file per (params, lengths)."""
    dtypes = (np.dtype(np.float32),)  # ORT's CPU RNN/LSTM/GRU kernels run float32 only
    structured = True  # one operator per layer, direction="bidirectional" for two
    kind = "native"
    seq_dynamic = True
    lengths_dtype = np.int32  # sequence_lens is int32 in the ONNX spec

    def _build(self, params, seq_len: int, with_lengths: bool):
        return build_native(params, with_lengths)


def create(device: str | None = None) -> OnnxNativeBackend:
    require_cpu("onnx_native (CPUExecutionProvider)", device)
    _installed()
    return OnnxNativeBackend("onnx_native", int8=False)
