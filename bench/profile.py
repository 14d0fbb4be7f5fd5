"""Where the time of one forward (inference) and one train step goes, for one implementation.

Three paths, chosen from what the backend declares (`Backend.math`), never from its name:

- "reference" (numpy, cupy: impls.reference on the backend's `xp` and `kernels`): every
  part of the computation (input projection, the recurrent loop's GEMM and tanh step, the
  head, the backward loop, the weight-gradient GEMMs, loss, optimizer) is the very
  function of impls.reference that the phase runs, re-run alone with the same shapes and
  arrays and timed warm (median, bench.measure.timing.measure). The whole phase is timed
  the same way; "Python/framework overhead" is the whole minus the parts. The parts are
  not hooked into the real code: hooks would add the very overhead we measure. cProfile
  over N repetitions is saved too: it sees the Python calls, but charges the time of `@`
  and ufuncs (which are not calls to it) to the function that runs them.
- "torch": torch.profiler operator table and a Chrome trace.
- "native" (anything else): cProfile only, so future backends are profiled unchanged.

A stacked or bidirectional model (num_layers > 1, bidirectional) is profiled whole on every
path, but the reference path's per-part breakdown re-runs the plain model's functions
(impls.reference.forward's one layer): for such a model it falls back to cProfile, and
says so.

    result = profile("numpy", batch_size=32, seq_len=64, input_size=32, hidden_size=128,
                     out_dir="profiles")
    print(result.summary)
"""
from __future__ import annotations

import cProfile
import pstats
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import impls
from bench.measure.machine import oversubscribed, use_threads
from bench.measure.timing import measure
from bench.report.selection import structure_label
from bench.report.tables import format_table
from bench.run.bind import TRAIN_LR, make_phase
from bench.spec import DTYPES, Case
from bench.train.data import random_labels, random_sequences
from bench.train.losses import cross_entropy
from bench.train.optim import Adam
from impls import reference

PHASES = ("forward", "train_step")
NUM_CLASSES = 10
TOTAL_TIME_S = 0.3  # per whole-phase median
PART_TIME_S = 0.05  # per part: many parts, each cheap and stable once warm
PROFILE_TIME_S = 0.3  # cProfile repetitions are sized to about this much work
TORCH_REPEATS = 5  # "a few": a trace stays small enough to open in a browser
TOP_FUNCTIONS = 8
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addmv", "aten::mv")


@dataclass
class ProfileResult:
    impl: str
    summary: str  # for the terminal
    files: list[Path] = field(default_factory=list)
    totals_ms: dict[str, float] = field(default_factory=dict)  # phase -> median ms per call
    # phase -> [(part, kind, ms)], the last row the overhead (reference path only). kind is
    # gemm, elementwise, loss+optim or overhead.
    breakdown: dict[str, list[tuple[str, str, float]]] = field(default_factory=dict)


def profile(impl: str, *, batch_size: int, seq_len: int, input_size: int, hidden_size: int,
            dtype: str = "float32", threads: int = 1, out_dir, cell: str = "rnn_tanh",
            num_layers: int = 1, bidirectional: bool = False,
            allow_oversubscribe: bool = False) -> ProfileResult:
    """Profile one forward (predict) and one train_step of `impl`'s `cell` model of this
    structure at one size; files go to out_dir. ValueError for an unknown impl, cell,
    structure or bad sizes, or one the backend does not run; impls.Unavailable says why not."""
    impls.entry(impl)  # ValueError naming the registered ones
    sizes = {"batch_size": batch_size, "seq_len": seq_len, "input_size": input_size,
             "hidden_size": hidden_size, "threads": threads}
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    oversubscribed([threads], allow_oversubscribe)
    backend = impls.get(impl)
    if np.dtype(dtype) not in backend.dtypes:
        raise ValueError(f"{impl} does not run {dtype}; it runs {', '.join(map(str, backend.dtypes))}")
    impls.param_names(cell, num_layers, bidirectional)  # ValueError naming the cells, or the structure's
    reason = backend.cell_reason(cell) or backend.structure_reason(num_layers, bidirectional)
    if reason:
        raise ValueError(reason)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = {phase: Case(impl, phase, batch_size, seq_len, input_size, hidden_size, dtype, threads,
                         NUM_CLASSES, cell=cell, num_layers=num_layers, bidirectional=bidirectional)
             for phase in PHASES if phase == "forward" or backend.supports_backward}
    plain = (num_layers, bidirectional) == (1, False)
    with use_threads(threads):
        if backend.math == "torch":
            result = _profile_torch(backend, cases, out_dir)
        else:
            result = _profile_python(backend, cases, out_dir, by_parts=backend.math == "reference" and plain)
    model = cell if plain else f"{cell}, {structure_label(num_layers, bidirectional)},"
    header = (f"profile {impl} {model} on {backend.device}: B={batch_size} T={seq_len} I={input_size} "
              f"H={hidden_size} C={NUM_CLASSES}, {dtype}, threads={threads}")
    totals = "  ".join(f"{p}: median {ms:.3f} ms/call" for p, ms in result.totals_ms.items())
    skipped = [] if backend.supports_backward else [f"train_step skipped: {impl} is forward-only"]
    if backend.math == "reference" and not plain:
        skipped.append("per-part breakdown: the plain model's (1-layer unidirectional) only; "
                       "cProfile of the whole phase below")
    files = ["files: " + ", ".join(str(f) for f in result.files)]
    summary = "\n".join([header, totals, *skipped, "", result.summary, "", *files, result.interpretation])
    return ProfileResult(impl, summary, result.files, result.totals_ms, result.breakdown)


@dataclass
class _Partial:  # what a path hands back before the common header is added
    summary: str
    interpretation: str
    files: list[Path]
    totals_ms: dict[str, float]
    breakdown: dict = field(default_factory=dict)


def _structure_suffix(case) -> str:
    """'' for the plain model (its file names are unchanged), else e.g. _2layer_bidirectional."""
    if case.structure() == (1, False):
        return ""
    return f"_{case.num_layers}layer" + ("_bidirectional" if case.bidirectional else "")


def _median_ms(fn, sync, min_time_s: float) -> float:
    return 1e3 * measure(fn, sync=sync, min_time_s=min_time_s, warmup_s=0.02).median


# ----------------------------------------------------------------- generic / reference path

def _profile_python(backend, cases, out_dir, by_parts: bool) -> _Partial:
    sections, files, totals, breakdown, notes = [], [], {}, {}, []
    for phase, case in cases.items():
        fn = make_phase(backend, case).run
        totals[phase] = _median_ms(fn, backend.sync, TOTAL_TIME_S)
        if by_parts:
            parts, flops = _measure_parts(backend, case)
            parts.append((("Python/framework overhead" if case.cell == "rnn_tanh" else
                           "gate arithmetic + Python/framework overhead") + " (total - parts)", "overhead",
                          totals[phase] - sum(ms for _, _, ms in parts)))
            breakdown[phase] = parts
            sections.append(_parts_table(phase, parts, totals[phase], flops))
            notes.append(_interpret_parts(phase, parts, totals[phase]))
        reps = max(3, min(200, round(PROFILE_TIME_S * 1e3 / totals[phase])))
        path = out_dir / f"{case.impl}_{case.cell}{_structure_suffix(case)}_{phase}.pstats"
        stats = _cprofile(fn, backend.sync, reps, path)
        files.append(path)
        sections.append(_top_functions(phase, stats, reps))
        if not by_parts:  # the generic path's reading: where the most own time is spent
            func, own = max(stats.stats.items(), key=lambda kv: kv[1][2])
            notes.append(f"{phase}: most own time in {_label(func)} "
                         f"({100 * own[2] / reps * 1e3 / totals[phase]:.0f} % of a call under cProfile)")
    return _Partial("\n\n".join(sections), "; ".join(notes), files, totals, breakdown)


def _repeat(op, n: int):
    """fn running op(i) for i < n: one loop's worth of a per-step operation."""
    def run():
        for i in range(n):
            op(i)
    return run


def _measure_parts(backend, case) -> tuple[list[tuple[str, str, float]], dict]:
    """([(part, kind, ms)], {part: FLOPs}): each part of the phase run alone, on real arrays
    of the real shapes, minus the cost of the _repeat harness (a no-op loop as long)."""
    specs = _part_specs(backend, case)
    per_call = _median_ms(_repeat(lambda i: None, 1000), backend.sync, PART_TIME_S) / 1000
    parts = [(name, kind, max(0.0, _median_ms(_repeat(op, n), backend.sync, PART_TIME_S) - n * per_call))
             for name, kind, op, n, _ in specs]
    return parts, {name: flops for name, _, _, _, flops in specs if flops}


def _part_specs(backend, case):
    """(name, kind, op(i), calls per phase, FLOPs per phase): the functions of
    impls.reference that the phase calls, with the backend's own xp and kernels. The tanh
    cell's element-wise step is a kernel timed alone; the gated cells' gate arithmetic is
    written inline, so it falls in the remainder row with the Python overhead."""
    xp, kernels = backend.xp, backend.kernels
    B, T, I, H = case.size()
    GH = impls.params.GATES[case.cell] * H  # gate rows: the GEMMs' width
    C = NUM_CLASSES
    train = case.phase == "train_step"
    p = backend.from_numpy(impls.init_params(I, H, NUM_CLASSES, seed=0, dtype=case.dtype, cell=case.cell))
    x = backend.asarray(random_sequences(B, T, I, seed=0, dtype=np.dtype(case.dtype)))
    logits, cache = reference.forward(xp, p, x, kernels=kernels)  # realistic operands below
    states, xs, h_last = cache["states"], cache["xs"], cache["h_last"]
    pre_x = reference.input_projection(xp, xs, p["W_xh"], p["b_h"], T, B)  # (T, B, GH)
    W_hh_T, h = reference.transposed_copy(xp, p["W_hh"]), states[T // 2 + 1, ...]  # (H, GH), (B, H)
    hw, store = h @ W_hh_T, xp.empty_like(states)
    specs = [
        ("input: x to time-major rows", "elementwise",
         lambda i: reference.time_major_rows(xp, x, copy=train), 1, 0),
        ("input: projection GEMM + b_h", "gemm",
         lambda i: reference.input_projection(xp, xs, p["W_xh"], p["b_h"], T, B), 1, 2 * T * B * I * GH),
        ("loop: C-ordered copy of W_hh^T", "elementwise",
         lambda i: reference.transposed_copy(xp, p["W_hh"]), 1, 0),
        ("loop: GEMM h W_hh^T", "gemm", lambda i: h @ W_hh_T, T, 2 * T * B * GH * H),
    ]
    if case.cell == "rnn_tanh":
        specs.append(("loop: tanh step (add pre_x[t], tanh)", "elementwise",
                      lambda i: kernels.tanh_step(xp, pre_x[i, ...], hw), T, 0))
    if train:
        specs.append(("loop: store h_t", "elementwise", lambda i: store.__setitem__((i + 1, ...), h), T, 0))
    specs.append(("head: GEMM + b_y", "gemm", lambda i: reference.head(h_last, p["W_hy"], p["b_y"]),
                  1, 2 * B * H * C))
    if train:
        specs += _train_part_specs(backend, p, logits, cache, case)
    return specs


def _train_part_specs(backend, p, logits, cache, case):
    """The parts a train step adds after the forward: loss, backward, Adam."""
    xp, kernels = backend.xp, backend.kernels
    B, T, I, H = case.size()
    GH = impls.params.GATES[case.cell] * H
    C = NUM_CLASSES
    labels = backend.asarray(random_labels(B, NUM_CLASSES, seed=0))
    _, dlogits = cross_entropy(logits, labels)
    states, xs, h_last = cache["states"], cache["xs"], cache["h_last"]
    grads = reference.backward(xp, p, cache, dlogits, kernels=kernels)
    dh, W_hh = dlogits @ p["W_hy"], p["W_hh"]  # (B, H), (GH, H)
    dpre = xp.zeros((T, B, GH), dtype=dh.dtype)  # (T, B, GH)
    optimizer = Adam(TRAIN_LR)
    specs = [
        ("loss: cross-entropy + dlogits", "loss+optim", lambda i: cross_entropy(logits, labels), 1, 0),
        ("head backward: GEMMs + sum", "gemm",
         lambda i: reference.head_backward(xp, dlogits, h_last, p["W_hy"]), 1, 4 * B * H * C),
        ("bwd loop: GEMM da W_hh", "gemm", lambda i: dpre[i, ...] @ W_hh, T - 1, 2 * (T - 1) * B * GH * H),
    ]
    if case.cell == "rnn_tanh":
        def tanh_grad(t):  # as the backward loop: through tanh, stored per step
            dpre[t, ...] = kernels.tanh_backward(xp, dh, states[t + 1, ...])
        specs.append(("bwd loop: tanh' + store", "elementwise", tanh_grad, T, 0))
    return specs + [
        ("weight grads: GEMMs dW_xh, dW_hh + db_h", "gemm",
         lambda i: reference.weight_gradients(xp, dpre, xs, states), 1, 2 * T * B * GH * (I + H)),
        ("optimizer: Adam step", "loss+optim", lambda i: optimizer.step(p, grads), 1, 0),
    ]


def _parts_table(phase, parts, total_ms, flops) -> str:
    def gflops(name, ms):  # how far a GEMM part is from the machine's peak, at a glance
        return f"{flops[name] / ms / 1e6:.1f}" if name in flops and ms > 0 else ""
    rows = [[name, kind, f"{ms:.4f}", f"{100 * ms / total_ms:.1f}", gflops(name, ms)]
            for name, kind, ms in parts]
    rows.append(["total (whole phase, measured)", "", f"{total_ms:.4f}", "100.0", ""])
    note = ("parts timed alone, warm (median); overhead = total - parts, negative when the "
            "parts run faster alone than inside the phase")
    return f"{phase}: breakdown\n{format_table(['part', 'kind', 'ms', '%', 'GFLOP/s'], rows)}\n({note})"


def _interpret_parts(phase, parts, total_ms) -> str:
    pct = lambda ms: 100 * ms / total_ms  # noqa: E731
    by_kind = {}
    for _, kind, ms in parts:
        by_kind[kind] = by_kind.get(kind, 0.0) + ms
    recurrent = sum(ms for name, kind, ms in parts if kind == "gemm" and "loop" in name)
    biggest = max(parts, key=lambda row: row[2])
    return (f"{phase}: GEMMs {pct(by_kind.get('gemm', 0)):.0f} % (recurrent {pct(recurrent):.0f} %), "
            f"element-wise {pct(by_kind.get('elementwise', 0)):.0f} %, "
            f"overhead {pct(by_kind['overhead']):.0f} %, largest: {biggest[0]} {pct(biggest[2]):.0f} %")


# ----------------------------------------------------------------------------- cProfile

def _cprofile(fn, sync, reps: int, path: Path) -> pstats.Stats:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(reps):
        fn()
        sync()
    profiler.disable()
    profiler.dump_stats(str(path))
    return pstats.Stats(profiler)


def _label(func: tuple) -> str:
    file, line, name = func
    return name if file == "~" else f"{Path(file).name}:{line}({name})"


def _top_functions(phase, stats: pstats.Stats, reps: int) -> str:
    """Top functions by cumulative and by own (total) time, per phase call."""
    blocks = []
    for title, column in (("cumulative", 3), ("own (tottime)", 2)):
        top = sorted(stats.stats.items(), key=lambda kv: kv[1][column], reverse=True)[:TOP_FUNCTIONS]
        rows = [[f"{1e3 * v[3] / reps:.4f}", f"{1e3 * v[2] / reps:.4f}", f"{v[1] / reps:g}", _label(k)]
                for k, v in top]
        table = format_table(["cum ms/call", "own ms/call", "calls/call", "function"], rows)
        blocks.append(f"{phase}: cProfile, {reps} calls, top by {title} (times include cProfile's "
                      f"own cost; `@` and ufuncs are charged to their caller)\n{table}")
    return "\n".join(blocks)


# -------------------------------------------------------------------------------- torch

def _profile_torch(backend, cases, out_dir) -> _Partial:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU]
    if backend.device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    sections, files, totals, notes = [], [], {}, []
    for phase, case in cases.items():
        fn = make_phase(backend, case).run
        totals[phase] = _median_ms(fn, backend.sync, TOTAL_TIME_S)  # also the warm-up
        with torch_profile(activities=activities, record_shapes=True) as prof:
            start = time.perf_counter()
            for _ in range(TORCH_REPEATS):
                fn()
                backend.sync()
            wall_us = 1e6 * (time.perf_counter() - start)
        path = out_dir / f"{case.impl}{_structure_suffix(case)}_{phase}.trace.json"
        prof.export_chrome_trace(str(path))
        files.append(path)
        averages = prof.key_averages()
        table = averages.table(sort_by="self_cpu_time_total", row_limit=15)
        sections.append(f"{phase}: torch.profiler, {TORCH_REPEATS} calls\n{table}")
        notes.append(_interpret_ops(phase, averages, wall_us, 1e3 * totals[phase]))
    return _Partial("\n\n".join(sections), "; ".join(notes), files, totals)


def _interpret_ops(phase, averages, wall_us: float, median_us: float) -> str:
    """Shares of the operators' self CPU time; their sum against the profiled wall time is
    how much of a call the ops cover (the rest: Python). The profiler records every op and
    perturbs the allocator, so a profiled call is slower than the unprofiled median: the
    ratio says how far to trust the table's absolute times."""
    self_us = {evt.key: evt.self_cpu_time_total for evt in averages}
    total = sum(self_us.values()) or 1.0
    gemm = sum(us for op, us in self_us.items() if op in GEMM_OPS)
    top = max(self_us, key=self_us.get)
    ops = sum(evt.count for evt in averages) / TORCH_REPEATS
    profiled = wall_us / TORCH_REPEATS
    return (f"{phase}: GEMM ops {100 * gemm / total:.0f} % of op self time, top {top} "
            f"{100 * self_us[top] / total:.0f} %, {ops:.0f} op events/call, ops cover "
            f"{100 * total / wall_us:.0f} % of profiled wall, profiled call {profiled / 1e3:.3f} ms "
            f"= {profiled / median_us:.1f}x the unprofiled median")
