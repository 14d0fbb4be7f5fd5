"""GPU-side harness checks. They run on a machine with an NVIDIA GPU (bench/gpu_check.sh,
tox -e gpu) and skip here with the reason; the script's no-GPU path is checked anywhere."""
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import impls
from bench.results import load_run
from bench.spec import build_grid
from bench.run.sweep import run_sweep
from conftest import backend_or_skip

ROOT = Path(__file__).resolve().parents[1]
FAST = {"min_samples": 3, "min_time_s": 0.01, "warmup_s": 0.0}


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi")
def test_gpu_check_refuses_cleanly_without_a_gpu(tmp_path):
    result = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "no NVIDIA GPU" in result.stderr


@pytest.mark.parametrize("name", ["torch_cuda", "cupy"])
def test_gpu_train_step_device_memory_grows_with_seq_len(name):
    backend = backend_or_skip(name)
    from bench.run.bind import make_phase
    from bench.spec import Case

    peaks = [backend.peak_memory_bytes(make_phase(backend, Case(name, "train_step", 32, t, 16, 256)))
             for t in (16, 256)]
    assert peaks[0] is not None and peaks[1] > peaks[0] > 0


def test_gpu_sweep_rows_carry_device_time_and_memory(tmp_path):
    gpus = [n for n in ("torch_cuda", "cupy") if impls.available()[n]]
    if not gpus:
        pytest.skip("no CUDA GPU: GPU sweeps run on a GPU machine via bench/gpu_check.sh (tox -e gpu)")
    grid = build_grid("quick", impls=gpus, phases=["forward", "train_step", "transfer"],
                      batch_size=[4], seq_len=[8], hidden_size=[32], input_size=[8], accuracy=False,
                      footprint=False)
    frame = load_run(run_sweep(grid, tmp_path / "run", progress=False, timing=FAST))
    assert set(frame["status"]) == {"ok"}, frame[["impl", "phase", "reason"]]
    assert frame["device"].str.startswith("cuda").all()
    assert frame["peak_mem_bytes"].notna().all()
    timed = frame[frame["phase"] != "transfer"]
    assert (timed["max_err"] < 1e-4).all()


def test_torch_cuda_matches_torch_cpu():
    gpu = backend_or_skip("torch_cuda")
    cpu = impls.get("torch")
    params = impls.init_params(4, 16, 3, seed=0, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((5, 7, 4))
    outputs = [b.to_numpy(b.predict(b.from_numpy(params), b.asarray(x))) for b in (cpu, gpu)]
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-10)
