"""The machine a run measured: thread control, the calibration GEMM peak, and meta.json.

One thread count for every implementation in a comparison: `use_threads(n)` sets it for
every library that keeps its own pool — BLAS/OpenMP through threadpoolctl, torch (whose
statically linked MKL threadpoolctl cannot see) through torch.set_num_threads, numba when
it is loaded. Backends that create sessions (ONNX Runtime) read `backend.threads`, which
the sweep sets per case.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np


def cores_available() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset
    narrow), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def oversubscribed(threads, allow: bool = False) -> list[int]:
    """The thread counts above cores_available(). Without `allow` any such count is a
    ValueError (more threads than cores time the scheduler, not the code: every case,
    and the calibration, slows down by a large factor); with it, they are returned so the
    caller can flag what ran oversubscribed."""
    cores = cores_available()
    over = sorted({int(t) for t in threads if int(t) > cores})
    if over and not allow:
        raise ValueError(f"threads {', '.join(map(str, over))} exceed the {cores} core(s) available "
                         "to this process (os.sched_getaffinity); use at most "
                         f"{cores}, or pass --allow-oversubscribe to run and flag them anyway")
    return over


@contextlib.contextmanager
def use_threads(n: int):
    """Pin every loaded library's thread pool to n inside the block (see the module doc)."""
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    numba = sys.modules.get("numba")
    previous = (torch.get_num_threads() if torch else None,
                numba.get_num_threads() if numba else None)
    try:
        with threadpool_limits(limits=n):
            if torch:
                torch.set_num_threads(n)
            if numba:
                numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
            yield
    finally:
        if torch and previous[0]:
            torch.set_num_threads(previous[0])
        if numba and previous[1]:
            numba.set_num_threads(previous[1])


def gemm_peak_gflops(dtype: str, threads: int, size: int = 1024, seconds: float = 0.5,
                     device: str = "cpu") -> dict:
    """Measured peak: the best GFLOP/s of square GEMMs in numpy (OpenBLAS), torch (MKL) and
    ONNX Runtime (MLAS) at this dtype and thread count, or on a CUDA device through torch
    and CuPy. It is the roofline every row's pct_peak refers to."""
    from bench.measure.timing import measure

    if device.startswith("cuda"):
        return gpu_gemm_peak_gflops(dtype, device, seconds=seconds)

    a = np.random.default_rng(0).standard_normal((size, size)).astype(dtype)
    b = a.T.copy()
    flops = 2 * size ** 3
    result = {}
    with use_threads(threads):
        m = measure(lambda: a @ b, min_time_s=seconds)
        result["numpy"] = flops / m.median / 1e9
        try:
            import torch
        except ImportError:
            pass
        else:
            # set here: use_threads can only pin torch if it was imported before entering
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                ta, tb = torch.from_numpy(a), torch.from_numpy(b)
                m = measure(lambda: ta @ tb, min_time_s=seconds)
                result["torch"] = flops / m.median / 1e9
            finally:
                torch.set_num_threads(previous)
        matmul = _onnxruntime_matmul(dtype, threads)
        if matmul is not None:
            m = measure(lambda: matmul(a, b), min_time_s=seconds)
            result["onnxruntime"] = flops / m.median / 1e9
    result["peak"] = max(result.values())
    return result


def _onnxruntime_matmul(dtype: str, threads: int):
    """ONNX Runtime's own GEMM (MLAS) as a function, or None without onnxruntime. It is in
    the calibration because on some CPUs (AMD's, where MKL avoids its best paths) MLAS is
    the fastest GEMM on the machine: a peak that ignored it would be no peak."""
    try:
        import onnx
        import onnxruntime
        from onnx import TensorProto, helper
    except ImportError:
        return None
    elem = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}[dtype]
    inputs = [helper.make_tensor_value_info(n, elem, ["m", "k"] if n == "a" else ["k", "n"]) for n in "ab"]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm", inputs,
                              [helper.make_tensor_value_info("c", elem, ["m", "n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    onnx.checker.check_model(model)
    return lambda a, b: session.run(None, {"a": a, "b": b})


def gpu_gemm_peak_gflops(dtype: str, device: str, size: int = 8192, seconds: float = 0.5) -> dict:
    """The GPU's GEMM rate in `dtype` (TF32 off: float32 means float32), synchronised."""
    from bench.measure.timing import measure

    flops, result = 2 * size ** 3, {}
    with contextlib.suppress(ImportError):
        import torch
        if torch.cuda.is_available():
            previous = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = False
            try:
                a = torch.randn(size, size, device=device, dtype=getattr(torch, dtype))
                sync = lambda: torch.cuda.synchronize(device)  # noqa: E731
                median = measure(lambda: a @ a, sync=sync, min_time_s=seconds).median
                result["torch"] = flops / median / 1e9
            finally:
                torch.backends.cuda.matmul.allow_tf32 = previous
    with contextlib.suppress(ImportError):
        import cupy
        if cupy.cuda.is_available():
            a = cupy.random.standard_normal((size, size), dtype=dtype)
            sync = cupy.cuda.Device().synchronize
            result["cupy"] = flops / measure(lambda: a @ a, sync=sync, min_time_s=seconds).median / 1e9
    if not result:
        raise OSError(f"no CUDA library could run a GEMM on {device}")
    result["peak"] = max(result.values())
    return result


def nvidia_smi() -> list[dict]:
    """GPU name and driver as nvidia-smi reports them (empty without one)."""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, check=True)
        return [dict(zip(("name", "driver", "memory"), (v.strip() for v in line.split(","))))
                for line in out.stdout.strip().splitlines()]
    return []


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# The instruction-set extensions that decide which BLAS / MLAS / inductor kernels run: two
# machines reporting the same model name (a VM's "AMD EPYC") can differ in these, and then
# in their GEMM rate by 2x and more.
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
              "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "asimd", "sve")


def cpu_features() -> dict:
    """CPU family/model/stepping and the SIMD extensions in SIMD_FLAGS it has (Linux)."""
    info = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key in ("cpu family", "model", "stepping", "vendor_id") and key not in info:
                info[key] = value
            elif key in ("flags", "Features") and "simd" not in info:
                present = set(value.split())
                info["simd"] = [flag for flag in SIMD_FLAGS if flag in present]
            if "simd" in info and "stepping" in info:
                break
    return info


def git_commit() -> str | None:
    root = Path(__file__).resolve().parents[1]
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    return None


def gpu_info() -> list[dict]:
    """GPUs torch can see (name, CUDA, cuDNN); empty on a CPU-only machine."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return []
    return [{"name": torch.cuda.get_device_name(i), "cuda": torch.version.cuda,
             "cudnn": torch.backends.cudnn.version()} for i in range(torch.cuda.device_count())]


def blas_info() -> list[dict]:
    from threadpoolctl import threadpool_info

    keep = ("internal_api", "version", "num_threads", "architecture", "filepath", "threading_layer")
    return [{k: info.get(k) for k in keep} for info in threadpool_info()]


def machine_meta() -> dict:
    torch = sys.modules.get("torch")
    return {
        "cpu_model": cpu_model(),
        "cpu_features": cpu_features(),
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in ("numpy", "torch", "numba", "onnxruntime", "cupy",
                                               "cupy-cuda12x", "cupy-cuda13x",
                                               "scikit-learn", "pandas", "threadpoolctl")},
        "blas": blas_info(),
        "torch_threads": torch.get_num_threads() if torch else None,
        "torch_mkl": bool(torch and torch.backends.mkl.is_available()),
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                               "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE")},
        "gpus": gpu_info(),
        "nvidia_smi": nvidia_smi(),
        "git_commit": git_commit(),
    }


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
