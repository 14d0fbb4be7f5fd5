"""The registry: every implementation by name, built from one creator signature
`create(device=None) -> Backend`, imported lazily so a missing optional package makes
that one implementation unavailable (with the reason) and nothing else fails.

Tolerances live here, next to the implementation they describe, not in the tests: the
max error relative to scale (see bench.oracle.rel_error) allowed against the float64
oracle, for logits and for every gradient.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from .base import Backend, Unavailable


@dataclass(frozen=True)
class Entry:
    name: str
    module: str  # impls.<module> defines create(device=None) -> Backend
    description: str
    requires: str  # what a missing import means is missing
    extra: str  # the pyproject extra that installs it
    # dtype name -> allowed relative error vs the float64 oracle (logits and gradients)
    tolerance: dict[str, float] = field(default_factory=dict)
    # files under impls/ whose code is this implementation's (the report counts their
    # lines as "development effort"; shared math counts for every user of it)
    sources: tuple[str, ...] = ()
    factory: str = "create"  # the module's creator function, same signature for all
    # Each new shape costs seconds of compilation: test suites run a subset by default.
    compile_heavy: bool = False


# float32 bounds: a handful of float32 ulps (6e-8) amplified through up to a few hundred
# recurrent steps; measured max over the conformance shapes is ~1e-6, bounds leave 10x+.
REGISTRY: dict[str, Entry] = {e.name: e for e in (
    Entry("numpy", "numpy_backend", "NumPy, vectorised over the batch, hand-written BPTT",
          "numpy", "cpu", {"float64": 1e-10, "float32": 2e-5},
          ("numpy_backend.py", "reference.py")),
    Entry("torch", "torch_backend", "PyTorch eager: nn.RNN kernel + linear head, autograd",
          "torch", "torch", {"float64": 1e-10, "float32": 2e-5},
          ("torch_backend.py",)),
    Entry("numba", "numba_backend", "Numba @njit forward and BPTT, vectorisable tanh",
          "numba", "numba", {"float64": 1e-10, "float32": 2e-5},
          ("numba_backend.py",)),
    Entry("torchscript", "torchscript_backend",
          "TorchScript-scripted cell loop, autograd (deprecated upstream)",
          "torch", "torch", {"float64": 1e-10, "float32": 2e-5},
          ("torchscript_backend.py", "torch_loop.py")),
    Entry("torch_compile", "torch_compile_backend", "torch.compile'd cell loop (inductor), autograd",
          "torch", "torch", {"float64": 1e-10, "float32": 5e-5},
          ("torch_compile_backend.py", "torch_loop.py"), compile_heavy=True),
    Entry("onnx_fp32", "onnx_backend", "ONNX Runtime, CPUExecutionProvider, exported cell graph, forward-only",
          "onnxruntime onnx", "onnx", {"float64": 1e-10, "float32": 2e-5},
          ("onnx_backend.py",), factory="create_fp32"),
    Entry("onnx_int8", "onnx_backend", "ONNX Runtime, dynamic int8 quantised matmuls, forward-only",
          "onnxruntime onnx", "onnx", {"float64": 5e-2, "float32": 5e-2},
          ("onnx_backend.py",), factory="create_int8"),
    # No onnx_native_int8: ORT's DynamicQuantizeLSTM (the only recurrent operator it
    # quantises) scales activations per tensor, so logits depend on batchmates and padding.
    Entry("onnx_native", "onnx_native",
          "ONNX Runtime, ONNX's own RNN/LSTM/GRU operator, one file for every seq_len, float32 only, "
          "forward-only (no int8: ORT's DynamicQuantizeLSTM makes logits depend on batchmates)",
          "onnxruntime onnx", "onnx", {"float32": 2e-5},
          ("onnx_native.py", "onnx_backend.py")),
    Entry("torch_cuda", "torch_backend", "PyTorch eager on a CUDA GPU: cuDNN's RNN kernel, autograd",
          "torch", "gpu", {"float64": 1e-10, "float32": 2e-5},
          ("torch_backend.py",), factory="create_cuda"),
    Entry("torch_compile_cuda", "torch_compile_backend",
          "torch.compile'd cell loop on a CUDA GPU (Triton kernels), autograd",
          "torch", "gpu", {"float64": 1e-10, "float32": 5e-5},
          ("torch_compile_backend.py", "torch_loop.py"), factory="create_cuda", compile_heavy=True),
    Entry("cupy", "cupy_backend", "CuPy on a CUDA GPU: the NumPy reference math, fused kernels",
          "cupy-cuda12x", "gpu", {"float64": 1e-10, "float32": 2e-5},
          ("cupy_backend.py", "reference.py")),
)}


@dataclass(frozen=True)
class Status:
    available: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.available


def names() -> list[str]:
    """Every registered implementation, available here or not."""
    return list(REGISTRY)


def entry(name: str) -> Entry:
    if name not in REGISTRY:
        raise ValueError(f"unknown implementation {name!r}; registered: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def get(name: str, device: str | None = None) -> Backend:
    """The backend `name` (on `device`, default its usual one), or Unavailable saying why."""
    spec = entry(name)
    try:
        module = importlib.import_module(f"{__package__}.{spec.module}")
    except ImportError as exc:
        raise Unavailable(f"{name} needs {spec.requires} ({exc}); install it with the "
                          f"project's extra: pip install -e \".[{spec.extra}]\"") from exc
    except Exception as exc:  # installed but broken: a library that cannot load, ...
        raise Unavailable(f"{name}: importing its dependencies failed: "
                          f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc
    return getattr(module, spec.factory)(device)


def available(device: str | None = None) -> dict[str, Status]:
    """name -> Status(available, reason why not) for every registered implementation."""
    result = {}
    for name in REGISTRY:
        try:
            get(name, device)
        except Unavailable as exc:
            result[name] = Status(False, str(exc))
        except ValueError as exc:  # e.g. a device this backend never runs on
            result[name] = Status(False, str(exc))
        else:
            result[name] = Status(True)
    return result


def tolerance(name: str, dtype) -> float:
    import numpy as np
    key = np.dtype(dtype).name
    tolerances = entry(name).tolerance
    if key not in tolerances:
        raise ValueError(f"no tolerance registered for {name} in {key}")
    return tolerances[key]
