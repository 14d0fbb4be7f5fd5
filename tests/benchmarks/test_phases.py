"""pytest-benchmark suites: forward and train_step per implementation x cell x a few sizes,
and a stacked bidirectional model (2 layers, both directions) at the article's size.

The same rules as the harness: inputs converted once outside the timed function, a
warm-up call (JIT, first allocations) before timing, sync() inside it, one thread.
The test run (`python -m pytest`) disables benchmarking, so each runs once as a test;
`tox -e bench` times them for real and saves the JSON.
"""
import numpy as np
import pytest

import impls
from bench.measure.analytic import phase_flops
from bench.measure.machine import use_threads
from bench.run.bind import make_phase
from bench.spec import Case
from conftest import backend_or_skip, impl_params

pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed")

# (batch_size, seq_len, input_size, hidden_size): per-call overhead, the article's scale,
# and a GEMM-bound size
SIZE_NAMES = ("batch_size", "seq_len", "input_size", "hidden_size")
SIZES = {"B1-T16-H64": (1, 16, 32, 64), "B32-T64-H128": (32, 64, 32, 128),
         "B64-T32-H512": (64, 32, 32, 512)}
# (size, (num_layers, bidirectional)): every size of the plain model, the structured one at
# the article's size only (each structure is more graphs for a compiling backend)
MODELS = [pytest.param(size, (1, False), id=label) for label, size in SIZES.items()] + [
    pytest.param(SIZES["B32-T64-H128"], (2, True), id="B32-T64-H128-L2-bi")]


@pytest.mark.parametrize("size, structure", MODELS)
@pytest.mark.parametrize("phase", ["forward", "train_step"])
@pytest.mark.parametrize("cell", list(impls.CELLS))
@pytest.mark.parametrize("name", impl_params())
def test_phase(benchmark, name, cell, phase, size, structure):
    backend = backend_or_skip(name)
    if phase == "train_step" and not backend.supports_backward:
        pytest.skip(f"{name} is forward-only")
    reason = backend.cell_reason(cell) or backend.structure_reason(*structure)
    if reason:
        pytest.skip(reason)
    case = Case(name, phase, *size, cell=cell, num_layers=structure[0], bidirectional=structure[1])
    model = "" if structure == (1, False) else f" L{structure[0]}{'-bi' if structure[1] else ''}"
    benchmark.group = f"{cell}{model} {phase} B{size[0]} T{size[1]} I{size[2]} H{size[3]}"
    # the whole results key (bench.record.KEY_COLUMNS): `rnnbench compare` pairs benchmarks
    # with each other and with sweep rows by it
    benchmark.extra_info.update(impl=name, cell=cell, num_layers=structure[0], bidirectional=structure[1],
                                phase=phase, **dict(zip(SIZE_NAMES, size)), dtype=case.dtype,
                                device=backend.device, threads=1,
                                flops=phase_flops(phase, *size, 10, cell, *structure))
    with use_threads(1):
        work = make_phase(backend, case)

        def one_call():
            result = work()
            backend.sync()
            return result

        one_call()  # warm-up outside the timed region
        result = benchmark(one_call)
    assert result is not None
    logits = backend.to_numpy(result if phase == "forward" else backend.predict(
        result, backend.asarray(np.zeros((1, size[1], size[2]), np.float32))))
    assert np.isfinite(logits).all()
