import contextlib
import sys

import pytest

import impls
from impls.registry import REGISTRY, Entry

SLOW_OPTION = "--run-slow"


def pytest_addoption(parser):
    parser.addoption(SLOW_OPTION, action="store_true",
                     help="also run the slow tests (every shape of compile-heavy backends); tox -e full")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes of compilation; run with --run-slow")
    config.addinivalue_line("markers", "distributed: against real Dask clusters (tests/test_distributed.py)")
    config.addinivalue_line("markers", "real_calibration: a test module's fixed_peak does not apply")


FIXED_PEAK_GFLOPS = 100.0


@pytest.fixture
def fixed_peak(request, monkeypatch):
    """A fixed GEMM peak for sweeps whose rows and files are under test, not the roofline:
    calibrating (square GEMMs in numpy, torch and ONNX Runtime, ~2 s) was most of every
    tiny sweep's time in these tests. A test marked real_calibration calibrates for real
    (tests/test_sweep.py::test_rows_are_tidy_and_complete does, and checks the result)."""
    if request.node.get_closest_marker("real_calibration"):
        return
    from bench.measure import machine

    monkeypatch.setattr(machine, "gemm_peak_gflops", lambda dtype, threads, device="cpu", **_: {
        "numpy": FIXED_PEAK_GFLOPS, "peak": FIXED_PEAK_GFLOPS})


def pytest_collection_modifyitems(config, items):
    if config.getoption(SLOW_OPTION):
        return
    skip = pytest.mark.skip(reason=f"slow (compiles a graph per shape): run with {SLOW_OPTION} or tox -e full")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def backend_or_skip(name: str, device: str | None = None):
    """The backend, or a skip that states exactly why it cannot run here."""
    try:
        return impls.get(name, device)
    except impls.Unavailable as exc:
        pytest.skip(f"{name} unavailable: {exc}")


def impl_params(fast_for_heavy: bool = False) -> list:
    """impls.names() as parameters; compile-heavy backends are marked slow unless this test
    is one of the few that CI runs for them too (fast_for_heavy)."""
    return [pytest.param(name, marks=() if fast_for_heavy or not impls.entry(name).compile_heavy
                         else pytest.mark.slow) for name in impls.names()]


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(1234)


@pytest.fixture(params=impl_params())
def any_backend(request):
    """Every registered implementation (compile-heavy ones marked slow), or a skip."""
    return backend_or_skip(request.param)


@contextlib.contextmanager
def temporary_entry(name: str, module, *, requires: str = "nothing", compile_heavy: bool = False):
    """Register `module` (an object with create(device=None)) as impls.<name> for a test;
    None makes an entry whose import fails, i.e. an unavailable implementation."""
    module_name = f"_temporary_{name}"
    REGISTRY[name] = Entry(name, module_name, f"temporary {name}", requires, "cpu", {"float32": 1e-5},
                           compile_heavy=compile_heavy)
    sys.modules[f"impls.{module_name}"] = module  # None makes the import raise ImportError
    try:
        yield
    finally:
        REGISTRY.pop(name, None)
        sys.modules.pop(f"impls.{module_name}", None)
