"""`onnx_fp32` and `onnx_int8`: the classifier as an ONNX graph run by ONNX Runtime on the
CPUExecutionProvider (named explicitly), for every cell (rnn_tanh, lstm, gru). Forward-only:
train elsewhere, evaluate here. (`onnx_native`, impls.onnx_native, shares the machinery.)

The graph is written with onnx.helper from the canonical numpy parameters (no torch, no
tracing, so no exporter can fix a dimension behind our back); seq_len T is fixed per file,
the batch is dynamic ("batch"; the tests run three batch sizes on one file). G gates:

    px  = Split_T(MatMul(Reshape(Transpose(x), (T*B, I)), W_xh^T))   one input GEMM (T*B, G*H)
    hb_t = MatMul(h_{t-1}, W_hh^T) + b        one fused recurrent product of all G gates
    rnn_tanh  h_t = Tanh(px_t + hb_t)
    lstm      Split_4(px_t + hb_t) -> Sigmoid i, f, o, Tanh g;  c_t = f*c + i*g, h_t = o*Tanh(c_t)
    gru       (b_h on px, b = [0, 0, b_hn]) Split(px_t), Split(hb_t) -> r, z = Sigmoid(..),
              n = Tanh(px_n + r * hb_n), h_t = n + z * (h_{t-1} - n)
    logits = MatMul(h_L, W_hy^T) + b_y      (lengths: h_L = GatherND of the stacked h's)

(h_0 = c_0 = 0: step 1 has no recurrent product.)

Stacked and bidirectional models (impls.params' structure): every layer-direction is that
recurrence on its own time-major input rows, its weights and tensors suffixed as the
canonical names are (W_hh_l1_reverse_T, h_l1_reverse_3; the plain model's are unchanged):

    rows_0 = x rows (T*B, I);  rows_k = Concat_axis1(layer k-1's outputs, forward first) (T*B, D*H)
    reverse direction: Rev(rows_k) in, Rev(its Concat_T(h_t)) out   Rev: each sequence reversed
        within its length (ReverseSequence on the (T, B, F) view), a flip (Slice, step -1)
        without lengths; it is its own inverse
    logits = MatMul(Concat(h_L of each direction of the last layer), W_hy^T) + b_y

The reverse direction's final state is selected exactly as the forward one's (step
lengths[b] of its own frame: it has then read steps lengths[b]..1), so padding never
reaches it.

Unrolled, not ONNX's RNN/LSTM/GRU or Loop/Scan: ORT never quantises RNN and GRU (and its
int8 LSTM is not batch-invariant: see impls.onnx_native), and a Scan body is quantised
only with EnableSubgraph and pays a subgraph call per step. The price: one file per
(cell, structure, seq_len) (cached per shape and content in `cache_dir`) and O(L*D*T)
nodes, so export + session creation (compile_s) grow with T: at T=64, 20-60 ms for a plain
rnn_tanh, 60-130 ms for lstm/gru; onnx_int8 adds quantize_dynamic, 100-510 ms in all
(onnx_native: 3-30 ms, once for every seq_len).

int8: onnxruntime.quantization.quantize_dynamic quantises every MatMul (int8 weights per
output channel); `_batch_invariant` then replaces its activation quantiser, whose one
scale per tensor (per batch) makes a sequence's logits depend on its batchmates and on
their padding (a padded 1e3 sets everyone's scale), breaking test_conformance's contract:
  - h lies in [-1, 1] by construction for every cell (tanh; lstm's o * tanh(c); gru's
    convex mix of tanh and h_{t-1}): fixed scale 1/127, zero point 128 (u8 x s8, MLAS'
    fast path); a product is QuantizeLinear + one MatMulIntegerToFloat (ORT's own
    com.microsoft op, bias fused; the file loads in plain onnxruntime). The chains are
    found by name: only hidden states and rows made of them (h_last, h_final, a stacked
    layer's input rows h_rows_l{k}, h_out) are called h_*;
  - x (the input GEMM): a per-row dynamic scale max|row|/127, computed in the graph.
The gates' Sigmoid/Tanh and the cell update stay float32.

Measured side by side (one process, 1 thread, B=32, T=64, I=32, float32, predict, median
of 30 after warm-up; 2-core AMD EPYC, AVX2 without VNNI, so 7-bit weights (reduce_range)
and MLAS' int16-pair u8s8 kernel), onnx_fp32 time / onnx_int8 time:
median (range) of 5 runs on a machine shared with other jobs (load ~3):
    cell       H=128              H=256
    rnn_tanh   1.04 (1.00-1.16)   1.23 (1.14-1.49)
    lstm       1.09 (1.01-1.18)   1.18 (1.15-1.81)
    gru        1.10 (0.98-1.12)   1.16 (1.07-1.31)
ORT's profile of lstm at H=128: the products take 3.6 ms in int8 against 5.7 ms in fp32,
the elementwise nodes (10-12 per lstm/gru step, ~5 us each) ~6 ms in both.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
from collections import OrderedDict, defaultdict
from pathlib import Path

import numpy as np

from .base import HostArrayBackend, Unavailable, require_cpu
from .params import (CELLS, cell_fast, directions, infer_sizes, is_plain, layer_params,
                     param_names, structure_of, suffix)

PROVIDERS = ["CPUExecutionProvider"]  # named explicitly: never a silent fallback
OPSET = 21  # Split(num_outputs) needs 18+, QuantizeLinear per-tensor u8 any
IR_VERSION = 10  # what onnxruntime >= 1.17 reads; onnx's newest default may be newer
MAX_SESSIONS = 8  # LRU bound: a sweep makes new params per case, sessions hold weights
ZERO_POINT = 128  # activations: symmetric int8 stored as uint8 (u8s8 is MLAS' fast path)
H_SCALE = 1.0 / 127  # h is in [-1, 1] for every cell: the exact range, no calibration needed
INT_MATMULS = {"MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearMatMul"}
FLOAT_MATMULS = {"MatMul", "Gemm"}
RECURRENT_OPS = {"RNN", "LSTM", "GRU"}


def _missing(why) -> Unavailable:
    return Unavailable(f"the ONNX backends need onnx and onnxruntime ({why}); "
                       "install them with: pip install onnxruntime onnx")


def _runtime():
    """(onnx, onnxruntime), imported here only, or Unavailable saying what to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise _missing(exc) from exc
    return onnx, onnxruntime


def _installed():
    """onnxruntime, imported, with onnx located but not imported (or Unavailable): onnx,
    with the ml_dtypes it imports (1.3 s of a 1.5 s start here), is needed only to export
    a model, so a process that finds its model in cache_dir starts on ONNX Runtime alone
    (rnnbench footprint's warm start)."""
    import importlib.util

    try:
        import onnxruntime
    except ImportError as exc:
        raise _missing(exc) from exc
    if importlib.util.find_spec("onnx") is None:
        raise _missing("No module named 'onnx'")
    return onnxruntime


# --- the unrolled graph ----------------------------------------------------------------
def initializer(name, value, dtype=None):
    """A graph constant (TensorProto) named `name` holding `value`."""
    from onnx import numpy_helper

    return numpy_helper.from_array(np.ascontiguousarray(value, dtype), name)


def build_model(params: dict, seq_len: int, with_lengths: bool):
    """The unrolled ModelProto of the params' cell and structure for one seq_len, in the
    params' dtype. Tensors named h_* are hidden states, or rows of them (in [-1, 1] for
    every cell: `_batch_invariant`)."""
    _runtime()
    from onnx import TensorProto, helper

    cell, (num_layers, bidirectional) = cell_fast(params), structure_of(params)
    input_size, hidden_size, _ = infer_sizes(params)
    inits = [initializer("xs_shape", [-1, input_size], np.int64)]
    if cell == "gru":
        inits.append(initializer("gru_split", [2 * hidden_size, hidden_size], np.int64))
    if with_lengths:  # exact selection (no mask arithmetic): padding can't leak in
        inits += [initializer("states_shape", [0, seq_len, hidden_size], np.int64),
                  initializer("one", 1, np.int64), initializer("axis_1", [1], np.int64)]
    if bidirectional:  # the widths reversed: layer 0's input; below the last layer, a
        # direction's output and the next layer's input
        widths = {input_size} | ({hidden_size, 2 * hidden_size} if num_layers > 1 else set())
        inits += _reversal_inits(seq_len, widths, with_lengths)
    node = helper.make_node
    nodes = [node("Transpose", ["x"], ["x_tmajor"], perm=[1, 0, 2]),  # (T, B, I)
             node("Reshape", ["x_tmajor", "xs_shape"], ["xs"])]  # (T*B, I), rows t*B + b
    rows = "xs"
    for layer in range(num_layers):
        last = layer == num_layers - 1
        results = []  # per direction, forward first: final states (last layer) or outputs
        for reverse in directions(bidirectional):
            p, tag = layer_params(params, layer, reverse), suffix(layer, reverse)
            inits += _layer_inits(p, tag)
            direction_nodes, result = _direction(node, p, tag, reverse, rows, last, seq_len,
                                                 with_lengths)
            nodes += direction_nodes
            results.append(result)
        if len(results) == 1:
            rows = results[0]
        else:  # the next layer's input rows (T*B, D*H), or the head's input (B, D*H)
            rows = "h_final" if last else f"h_rows_l{layer + 1}"
            nodes.append(node("Concat", results, [rows], axis=1))
    return classifier_model(params, nodes, inits, rows, seq_len,
                            TensorProto.INT64 if with_lengths else None, f"unrolled {cell}")


def _layer_inits(p: dict, tag: str):
    """One layer-direction's weights (`p`: impls.params.layer_params), names suffixed by `tag`."""
    inits = [initializer(f"W_xh{tag}_T", p["W_xh"].T), initializer(f"W_hh{tag}_T", p["W_hh"].T),
             initializer(f"b_h{tag}", p["b_h"])]
    if "b_hn" in p:  # gru: b_hn rides on the recurrent product, zeros for the r, z columns
        b_hn = p["b_hn"]
        b_rec = np.concatenate([np.zeros(2 * b_hn.shape[0], b_hn.dtype), b_hn])
        inits += [initializer(f"b_hn{tag}", b_hn), initializer(f"b_rec{tag}", b_rec)]
    return inits


def _direction(node, p: dict, tag: str, reverse: bool, rows: str, last: bool, seq_len: int,
               with_lengths: bool):
    """One layer-direction (`p`: its layer_params, names suffixed by `tag`) over the
    layer's time-major input rows (T*B, In) -> (nodes, its final state (B, H) when `last`,
    else its outputs as time-ordered rows (T*B, H)). The reverse direction runs on each
    sequence reversed within its length and its outputs are reversed back (the reversal
    is its own inverse); its final state has then read the whole sequence, at the same
    step as the forward one's (lengths[b], or T)."""
    (_, width), hidden_size = p["W_xh"].shape, p["W_hh"].shape[1]
    nodes, source = [], rows
    if reverse:
        source = f"{rows}_reversed"
        nodes += _reversed_rows(node, rows, source, width, with_lengths)
    recurrence, states = _recurrence(node, cell_fast(p), seq_len, source, tag)
    nodes += recurrence
    if last:
        if not with_lengths:
            return nodes, states[-1]
        return nodes + _select_last(node, states, tag), f"h_last{tag}"
    out = f"h_out{tag}"
    own_frame = f"{out}_reversed" if reverse else out
    nodes.append(node("Concat", states, [own_frame], axis=0))  # (T*B, H), rows t*B + b
    if reverse:
        nodes += _reversed_rows(node, own_frame, out, hidden_size, with_lengths)
    return nodes, out


def _reversal_inits(seq_len: int, widths, with_lengths: bool):
    """The constants of `_reversed_rows` for rows of these widths."""
    inits = [] if with_lengths else [
        initializer("flip_start", [-1], np.int64), initializer("flip_step", [-1], np.int64),
        initializer("flip_end", [np.iinfo(np.int64).min], np.int64),  # to the first step
        initializer("axis_0", [0], np.int64)]
    for width in sorted(widths):
        inits += [initializer(f"steps_shape_{width}", [seq_len, -1, width], np.int64),
                  initializer(f"rows_shape_{width}", [-1, width], np.int64)]
    return inits


def _reversed_rows(node, rows: str, out: str, width: int, with_lengths: bool):
    """Time-major rows (T*B, width) with each sequence reversed in time within its length
    (ReverseSequence; steps past the length stay where they are), or flipped when every
    sequence is T long."""
    steps, flipped = f"{rows}_steps", f"{rows}_steps_reversed"
    if with_lengths:
        reversal = node("ReverseSequence", [steps, "lengths"], [flipped], batch_axis=1, time_axis=0)
    else:
        reversal = node("Slice", [steps, "flip_start", "flip_end", "axis_0", "flip_step"],
                        [flipped])
    return [node("Reshape", [rows, f"steps_shape_{width}"], [steps]),  # (T, B, width)
            reversal, node("Reshape", [flipped, f"rows_shape_{width}"], [out])]  # (T*B, width)


def classifier_model(params: dict, nodes, inits, h_last: str, seq_len, lengths_type, what: str):
    """The model around a recurrence: inputs x (batch, seq_len, I) [and lengths (batch,)
    of `lengths_type`], the head logits = h_last W_hy^T + b_y, checked. seq_len: an int, or
    a name for a dynamic dimension. h_last: the head's input (batch, D*H)."""
    onnx, _ = _runtime()
    from onnx import helper

    input_size, hidden_size, num_classes = infer_sizes(params)
    num_layers, bidirectional = structure_of(params)
    elem = helper.np_dtype_to_tensor_dtype(params["W_xh"].dtype)  # float32 or float64
    inputs = [helper.make_tensor_value_info("x", elem, ["batch", seq_len, input_size])]
    if lengths_type is not None:
        inputs.append(helper.make_tensor_value_info("lengths", lengths_type, ["batch"]))
    nodes = [*nodes, helper.make_node("MatMul", [h_last, "W_hy_T"], ["hy"], name="head"),
             helper.make_node("Add", ["hy", "b_y"], ["logits"])]
    inits = [*inits, initializer("W_hy_T", params["W_hy"].T), initializer("b_y", params["b_y"])]
    outputs = [helper.make_tensor_value_info("logits", elem, ["batch", num_classes])]
    graph = helper.make_graph(nodes, "rnn_classifier", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="rnnbench", ir_version=IR_VERSION)
    structure = "" if is_plain(params) else \
        f", {num_layers} layer(s){', bidirectional' if bidirectional else ''}"
    model.doc_string = (f"{what} classifier (H={hidden_size}{structure}): "
                        f"x (batch, {seq_len}, {input_size}) "
                        + (f"and lengths (batch,) {helper.tensor_dtype_to_np_dtype(lengths_type)} in "
                           "[1, seq_len] " if lengths_type is not None else "")
                        + "-> logits (batch, num_classes), in x's dtype")
    onnx.checker.check_model(model)
    return model


def _recurrence(node, cell: str, seq_len: int, rows: str = "xs", tag: str = ""):
    """-> (nodes, names of h_1..h_T) of one layer-direction (weights and tensor names
    suffixed by `tag`) reading time-major `rows` (T*B, In): one input GEMM for every
    step, then per step one fused recurrent product of all gates (h_{t-1} W_hh^T, h_0 = 0:
    none at the first step) and the cell's elementwise update (_STEPS). The bias rides on
    the recurrent product (a GEMM epilogue: Gemm in float32, MatMulIntegerToFloat's bias in
    int8), not on the (T*B, G*H) projection; gru's b_h goes on the projection, b_hn inside
    r * (.) needing the recurrent side."""
    px = [f"px{tag}_{t}" for t in range(seq_len)]
    projection = f"px_raw{tag}" if cell == "gru" else f"px{tag}"
    nodes = [node("MatMul", [rows, f"W_xh{tag}_T"], [projection], name=f"input_projection{tag}")]
    if cell == "gru":
        nodes.append(node("Add", [projection, f"b_h{tag}"], [f"px{tag}"]))
    nodes.append(node("Split", [f"px{tag}"], px, axis=0, num_outputs=seq_len))  # (B, G*H) per step
    step, bias = _STEPS[cell], f"b_rec{tag}" if cell == "gru" else f"b_h{tag}"
    states = []
    for t in range(seq_len):
        hb = None
        if t:
            nodes += [node("MatMul", [states[-1], f"W_hh{tag}_T"], [f"hw{tag}_{t}"],
                           name=f"recurrent{tag}_{t}"),
                      node("Add", [f"hw{tag}_{t}", bias], [f"hb{tag}_{t}"])]
            hb = f"hb{tag}_{t}"
        states.append(f"h{tag}_{t + 1}")
        nodes += step(node, t, px[t], hb, states, tag)
    return nodes, states


# A step's tensors are named {v}{tag}_{t}, `tag` the layer-direction's suffix ("" for the
# plain model's one layer).
def _tanh_step(node, t, px, hb, states, tag=""):
    """h_t = tanh(px_t + h_{t-1} W_hh^T + b_h)."""
    a = f"a{tag}_{t}"
    return [node("Add", [px, hb or f"b_h{tag}"], [a]), node("Tanh", [a], [states[-1]])]


def _lstm_step(node, t, px, hb, states, tag=""):
    """[i f g o] = px_t + h_{t-1} W_hh^T + b_h; c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t)."""
    a, i, f, g, o, c, fc, ig, tc = (f"{v}{tag}_{t}"
                                    for v in ("a", "i", "f", "g", "o", "c", "fc", "ig", "tc"))
    nodes = [node("Add", [px, hb or f"b_h{tag}"], [a]),
             node("Split", [a], [f"{a}i", f"{a}f", f"{a}g", f"{a}o"], axis=1, num_outputs=4),
             node("Sigmoid", [f"{a}i"], [i]), node("Tanh", [f"{a}g"], [g]),
             node("Sigmoid", [f"{a}o"], [o])]
    if t:  # c_0 = 0: the first step has no forget product
        nodes += [node("Sigmoid", [f"{a}f"], [f]), node("Mul", [f, f"c{tag}_{t - 1}"], [fc]),
                  node("Mul", [i, g], [ig]), node("Add", [fc, ig], [c])]
    else:
        nodes.append(node("Mul", [i, g], [c]))
    return nodes + [node("Tanh", [c], [tc]), node("Mul", [o, tc], [states[-1]])]


def _gru_step(node, t, px, hb, states, tag=""):
    """[r z] = sigma(px_t[:2H] + hb_t[:2H]), n = tanh(px_t[2H:] + r * hb_t[2H:]) with
    hb_t = h_{t-1} W_hh^T + [0, 0, b_hn]; h_t = n + z * (h_{t-1} - n)."""
    rz, r, z, n, pxrz, pxn, hbrz, hbn, arz, rn, an, d, zd, zn = (
        f"{v}{tag}_{t}" for v in ("rz", "r", "z", "n", "pxrz", "pxn", "hbrz", "hbn", "arz", "rn",
                                  "an", "d", "zd", "zn"))
    nodes = [node("Split", [px, "gru_split"], [pxrz, pxn], axis=1)]
    if hb:
        nodes += [node("Split", [hb, "gru_split"], [hbrz, hbn], axis=1),
                  node("Add", [pxrz, hbrz], [arz]), node("Sigmoid", [arz], [rz])]
    else:  # h_0 = 0: the recurrent side is its bias alone
        nodes.append(node("Sigmoid", [pxrz], [rz]))
    nodes += [node("Split", [rz], [r, z], axis=1, num_outputs=2),
              node("Mul", [r, hbn if hb else f"b_hn{tag}"], [rn]),
              node("Add", [pxn, rn], [an]), node("Tanh", [an], [n])]
    if hb:
        return nodes + [node("Sub", [states[-2], n], [d]), node("Mul", [z, d], [zd]),
                        node("Add", [n, zd], [states[-1]])]
    return nodes + [node("Mul", [z, n], [zn]), node("Sub", [n, zn], [states[-1]])]


_STEPS = {"rnn_tanh": _tanh_step, "lstm": _lstm_step, "gru": _gru_step}


def _select_last(node, states, tag=""):
    """h_last[b] = h_{lengths[b]}: stack the states (B, T, H), GatherND per sequence. (Each
    direction computes its own index: two int ops on (B,), merged by ORT's CSE.)"""
    flat, stacked, last, last_2d = (f"{v}{tag}" for v in
                                    ("states_flat", "states", "last_step", "last_step_2d"))
    return [node("Concat", states, [flat], axis=1),  # (B, T*H)
            node("Reshape", [flat, "states_shape"], [stacked]),
            node("Sub", ["lengths", "one"], [last]),
            node("Unsqueeze", [last, "axis_1"], [last_2d]),
            node("GatherND", [stacked, last_2d], [f"h_last{tag}"], batch_dims=1)]


# --- int8: the tool, then batch-invariant activation quantisers ---------------------
def quantise(fp32_path: Path, int8_path: Path, *, per_channel: bool, reduce_range: bool,
             io_dtype=np.float32):
    """Dynamic int8 with onnxruntime's quantize_dynamic, then `_batch_invariant`."""
    onnx, _ = _runtime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # its "consider pre-processing" advice, every call
    try:
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "tool.onnx"
            quantize_dynamic(fp32_path, raw, op_types_to_quantize=["MatMul"],
                             per_channel=per_channel, reduce_range=reduce_range,
                             weight_type=QuantType.QInt8)
            model = onnx.load(raw)
    finally:
        logging.disable(previous)
    _batch_invariant(model)
    if np.dtype(io_dtype) == np.float64:
        _float64_io(model)
    onnx.checker.check_model(model)
    _save(model, int8_path)


def _float64_io(model) -> None:
    """float64 params and inputs: the int8 model computes in float32 (the quantiser works
    on float32 only); a Cast at each end gives it the caller's dtype."""
    from onnx import TensorProto, helper

    graph = model.graph
    for n in graph.node:
        n.input[:] = ["x_f32" if i == "x" else i for i in n.input]
        n.output[:] = ["logits_f32" if o == "logits" else o for o in n.output]
    graph.node.insert(0, helper.make_node("Cast", ["x"], ["x_f32"], to=TensorProto.FLOAT))
    graph.node.append(helper.make_node("Cast", ["logits_f32"], ["logits"], to=TensorProto.DOUBLE))
    graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    graph.output[0].type.tensor_type.elem_type = TensorProto.DOUBLE


def _batch_invariant(model) -> None:
    """Swap the tool's per-tensor activation quantiser for a per-row or fixed one (module
    doc) in each of its product chains; the tool's int8 weights and scales are kept."""
    from onnx import helper, numpy_helper

    graph = model.graph
    graph.initializer.extend(numpy_helper.from_array(np.array(v, dtype), name) for name, v, dtype in (
        ("q_h_scale", H_SCALE, np.float32), ("q_unit", 1.0, np.float32),
        ("q_zero_point", ZERO_POINT, np.uint8), ("q_last_axis", [-1], np.int64),
        ("q_tiny", 1e-30, np.float32)))  # 127/1e-30 stays finite: 0 * inv is 0, not NaN
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    producer = {out: n for n in graph.node for out in n.output}
    consumers = defaultdict(list)
    for n in graph.node:
        for name in n.input:
            consumers[name].append(n)
    replacement, removed = {}, set()
    for mmi in [n for n in graph.node if n.op_type == "MatMulInteger"]:
        chain, a, w_scale = _tool_chain(mmi, producer, consumers)
        out, bias = chain[-1].output[0], _const_bias(graph, consumers[chain[-1].output[0]])
        if a.startswith("h_"):
            if bias is not None:  # b_h / b_y: fused into the GEMM's epilogue
                chain.append(bias)
                out, bias = bias.output[0], bias.input[1]
            new = _fixed_scale(helper, a, mmi.input[1], w_scale, mmi.input[3], out, bias)
        else:
            new = _per_row(helper, a, mmi.input[1], w_scale, mmi.input[3], out)
        replacement[id(chain[0])] = new
        removed |= {id(n) for n in chain}
    nodes = []
    for n in graph.node:  # the new chain takes the old one's place: order stays topological
        nodes += replacement.get(id(n), [] if id(n) in removed else [n])
    del graph.node[:]
    graph.node.extend(nodes)


def _tool_chain(mmi, producer, consumers):
    """quantize_dynamic's DynamicQuantizeLinear(a) -> MatMulInteger -> Cast -> Mul(., s)
    with s = Mul(a_scale, w_scale): -> (those five nodes, a, w_scale)."""
    dql = producer[mmi.input[0]]
    (cast,) = consumers[mmi.output[0]]
    (final,) = consumers[cast.output[0]]
    scales = producer[next(i for i in final.input if i != cast.output[0])]
    if dql.op_type != "DynamicQuantizeLinear" or len(consumers[dql.output[0]]) != 1 \
            or scales.op_type != "Mul":
        raise RuntimeError(f"unexpected quantize_dynamic output around {mmi.name}")
    w_scale = next(i for i in scales.input if i != dql.output[1])
    return [dql, scales, mmi, cast, final], dql.input[0], w_scale


def _const_bias(graph, users):
    """The Add(product, b) right after a product, when b is a 1-D initializer."""
    inits = {i.name: i for i in graph.initializer}
    if len(users) == 1 and users[0].op_type == "Add" and users[0].input[1] in inits \
            and len(inits[users[0].input[1]].dims) == 1:
        return users[0]
    return None


def _fixed_scale(helper, a, w_q, w_scale, w_zp, out, bias=None):
    """h in [-1, 1]: 2 nodes per step (1 pass to quantise, 1 fused int8 GEMM + rescale + bias)."""
    inputs = [a + "_q", w_q, "q_h_scale", w_scale, "q_zero_point", w_zp] + ([bias] if bias else [])
    return [helper.make_node("QuantizeLinear", [a, "q_h_scale", "q_zero_point"], [a + "_q"]),
            helper.make_node("MatMulIntegerToFloat", inputs, [out], domain="com.microsoft")]


def _per_row(helper, a, w_q, w_scale, w_zp, out):
    """Per-row dynamic scale s_i = max|a_i|/127. MatMulIntegerToFloat's a_scale must be a
    scalar (and ORT's fusion pass, given a per-row one, silently mis-scales), so the
    product runs with a_scale 1 and the row scale is applied after: one extra pass.
    Row statistics stay 1-D until use: ORT's broadcasting over (M, 1) is slow."""
    node = helper.make_node
    return [node("Abs", [a], [a + "_abs"]),
            node("ReduceMax", [a + "_abs", "q_last_axis"], [a + "_max"], keepdims=0),
            node("Max", [a + "_max", "q_tiny"], [a + "_max_safe"]),  # an all-zero row (padding)
            node("Mul", [a + "_max_safe", "q_h_scale"], [a + "_scale"]),  # (M,)
            node("Div", ["q_unit", a + "_scale"], [a + "_inv"]),
            node("Unsqueeze", [a + "_scale", "q_last_axis"], [a + "_scale_col"]),  # (M, 1)
            node("Unsqueeze", [a + "_inv", "q_last_axis"], [a + "_inv_col"]),
            node("Mul", [a, a + "_inv_col"], [a + "_scaled"]),  # in [-127, 127]
            node("QuantizeLinear", [a + "_scaled", "q_unit", "q_zero_point"], [a + "_q"]),
            node("MatMulIntegerToFloat", [a + "_q", w_q, "q_unit", w_scale, "q_zero_point", w_zp],
                 [a + "_acc"], domain="com.microsoft"),
            node("Mul", [a + "_acc", a + "_scale_col"], [out])]


def coverage(model) -> dict:
    """How many matrix products run in integer arithmetic and how many stayed float. A
    native recurrent operator (RNN/LSTM/GRU) counts as its two float products, x W^T and
    the per-step h R^T (onnx_native)."""
    ops = [n.op_type for n in model.graph.node]
    return {"quant_int_matmuls": sum(op in INT_MATMULS for op in ops),
            "quant_float_matmuls": sum(op in FLOAT_MATMULS for op in ops)
            + 2 * sum(op in RECURRENT_OPS for op in ops)}


def _save(model, path: Path) -> None:
    """Atomically: a crash or a concurrent run never leaves a half-written file to reuse."""
    import onnx

    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    onnx.save(model, tmp)
    os.replace(tmp, path)


def _arrays(params: dict) -> tuple:
    """The params' arrays in canonical order, every layer and direction's (on every timed
    call: the names are looked up, not rebuilt; param_names takes ~8 us)."""
    return tuple(params[k] for k in _names(cell_fast(params), *structure_of(params)))


@functools.lru_cache(maxsize=None)
def _names(cell: str, num_layers: int, bidirectional: bool) -> tuple[str, ...]:
    return param_names(cell, num_layers, bidirectional)


def structure_tag(params: dict) -> str:
    """The structure in a file name: "" for the plain model (its names are unchanged),
    else e.g. "-2layers-bidirectional"."""
    if is_plain(params):
        return ""
    num_layers, bidirectional = structure_of(params)
    return f"-{num_layers}layers" + ("-bidirectional" if bidirectional else "")


def params_digest(arrays) -> str:
    digest = hashlib.blake2b(digest_size=10)
    for arr in arrays:
        digest.update(f"{arr.shape}{arr.dtype}".encode())
        digest.update(np.ascontiguousarray(arr).data)
    return digest.hexdigest()


# --- the backend ----------------------------------------------------------------------
class OnnxArray(np.ndarray):
    """The native array: numpy memory that went through backend.asarray / from_numpy (a
    plain host array is refused, as on every backend). Slicing, np.take and the array
    API keep working on it; ORT is fed a plain view of it (no copy)."""


class _Entry:  # one session, the arrays it was made for, its file
    def __init__(self, arrays, path: Path, session):
        self.arrays, self.path, self.session = arrays, path, session
        self._info = None

    def info(self) -> dict:
        if self._info is None:  # after timing (diagnostics), never inside a timed call
            import onnx
            self._info = {**coverage(onnx.load(self.path)), "model_bytes": self.path.stat().st_size}
        return self._info


class OnnxBackend(HostArrayBackend):
    """Params from `from_numpy` are read-only copies, so a session is found by the identity
    of the cell's arrays plus (seq_len, lengths or not, threads): O(1) per call, inside the
    timed region, and never stale. The first call for new arrays hashes their bytes to
    find (or write) the exported file and creates the session: the harness' compile_s.
    Writable params (a dict not from from_numpy) are hashed on every call instead.

    A subclass with another graph overrides `_build` (and `kind`, the file names' tag);
    `seq_dynamic`: one file and session serve every seq_len."""
    supports_backward = False
    native_type = OnnxArray  # numpy memory under a marker type (HostArrayBackend)
    # onnx_fp32 builds the graph in the params' dtype (ORT runs float64 MatMul/Tanh/Sigmoid);
    # onnx_int8 computes int8/float32 inside and only takes and returns float64.
    dtypes = (np.dtype(np.float32), np.dtype(np.float64))
    cells = tuple(CELLS)
    structured = True  # any depth and direction count (forward-only: dropout is refused)
    kind = "unrolled"
    seq_dynamic = False
    lengths_dtype = np.int64  # what the graph's lengths input takes

    def __init__(self, name: str, int8: bool, per_channel: bool = True, reduce_range: bool | None = None):
        self.name, self.int8, self.per_channel = name, int8, per_channel
        self.reduce_range = _needs_reduce_range() if reduce_range is None else reduce_range
        self.exports = 0  # files written by this instance (the tests check cache reuse)
        self._sessions: OrderedDict = OrderedDict()
        self._tmp = None

    def from_numpy(self, params: dict) -> dict:
        native = super().from_numpy(params)
        for arr in native.values():
            arr.flags.writeable = False  # what makes identity-keyed caching safe
        return native

    def _forward(self, params, x, lengths):
        return self._predict(params, x, lengths), {"batch_size": int(x.shape[0])}

    def _predict(self, params, x, lengths):
        entry = self._entry(params, int(x.shape[1]), lengths is not None)
        feeds = {"x": np.ascontiguousarray(x).view(np.ndarray)}
        if lengths is not None:
            feeds["lengths"] = np.asarray(lengths, dtype=self.lengths_dtype)
        return entry.session.run(None, feeds)[0].view(OnnxArray)

    def diagnostics(self, params: dict, x) -> dict:
        return self._entry(params, int(x.shape[1]), False).info()

    def _build(self, params, seq_len: int, with_lengths: bool):
        return build_model(params, seq_len, with_lengths)

    # caching
    def _entry(self, params, seq_len: int, with_lengths: bool) -> _Entry:
        arrays = _arrays(params)  # every layer and direction's: the structure is in the key
        frozen = all(not a.flags.writeable for a in arrays)
        ident = tuple(map(id, arrays)) if frozen else params_digest(arrays)
        key = (ident, None if self.seq_dynamic else seq_len, with_lengths, self.threads)
        entry = self._sessions.get(key)
        if entry is not None and (not frozen or all(a is b for a, b in zip(entry.arrays, arrays))):
            self._sessions.move_to_end(key)
            return entry
        path = self._export(params, seq_len, with_lengths)
        entry = _Entry(arrays if frozen else None, path, self._new_session(path))
        self._sessions[key] = entry  # holding the arrays keeps their ids from being reused
        if len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return entry

    def _folder(self) -> Path:
        if self.cache_dir is None:
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="rnnbench-onnx-")
            return Path(self._tmp.name)
        folder = Path(self.cache_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _export(self, params, seq_len: int, with_lengths: bool) -> Path:
        """The model file for (kind, cell, structure, params content, seq_len, lengths),
        written once per folder; onnx_fp32 and onnx_int8 share a folder, so int8 reuses
        fp32's float32 export."""
        io_dtype = params["W_xh"].dtype
        if self.int8:  # int8 compute is float32 inside whatever the I/O dtype
            params = {k: np.asarray(v, np.float32) for k, v in params.items()}
        digest = params_digest(_arrays(params))
        steps = "Tany" if self.seq_dynamic else f"T{seq_len}"
        stem = (f"{cell_fast(params)}-{self.kind}{structure_tag(params)}_{digest}_{steps}_"
                f"{'lengths' if with_lengths else 'last'}")
        folder = self._folder()
        source = folder / f"{stem}.{params['W_xh'].dtype}.onnx"
        if not source.exists():
            _save(self._build(params, seq_len, with_lengths), source)
            self.exports += 1
        if not self.int8:
            return source
        tags = f"{'-pc' if self.per_channel else ''}{'-rr' if self.reduce_range else ''}"
        int8 = folder / f"{stem}.int8{tags}.{io_dtype}-io.onnx"
        if not int8.exists():
            quantise(source, int8, per_channel=self.per_channel, reduce_range=self.reduce_range,
                     io_dtype=io_dtype)
            self.exports += 1
        return int8

    def _new_session(self, path: Path):
        ort = _installed()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads or 0  # 0: ORT's default (all cores)
        options.inter_op_num_threads = 1  # a chain of dependent steps: nothing to overlap
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # unused-initializer notes after fusion are noise
        return ort.InferenceSession(str(path), options, providers=PROVIDERS)


def _needs_reduce_range() -> bool:
    """7-bit weights on x86 without VNNI: MLAS' AVX2 u8s8 kernel sums pairs of u8*s8
    products in int16, which saturates with full-range weights (ORT's documented advice)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx2" in flags and "vnni" not in flags


def _create(name: str, int8: bool, device: str | None) -> OnnxBackend:
    require_cpu(f"{name} (CPUExecutionProvider)", device)
    _installed()
    return OnnxBackend(name, int8)


def create_fp32(device: str | None = None) -> OnnxBackend:
    return _create("onnx_fp32", False, device)


def create_int8(device: str | None = None) -> OnnxBackend:
    return _create("onnx_int8", True, device)
