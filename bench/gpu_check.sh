#!/usr/bin/env bash
# The one-shot GPU check: on a machine with an NVIDIA GPU, install what is missing, run the
# GPU tests, run the `gpu` sweep preset (part of DeepBench's vanilla, LSTM and GRU training
# sets, and the article's scale for every cell: cuDNN vs CuPy vs compiled loops) and
# write results + report into OUT_DIR. Meant to finish within ~8 minutes on an H100.
#
#   bash bench/gpu_check.sh OUT_DIR
#
# Offline machines: set RNNBENCH_WHEELS=DIR to install from wheel files instead of PyPI.
set -euo pipefail
out="${1:?usage: bash bench/gpu_check.sh OUT_DIR}"
root="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-python3}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$root"

if ! nvidia-smi > "$out/nvidia-smi.txt" 2>&1; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi failed; see $out/nvidia-smi.txt)" >&2
    exit 2
fi

pip_install() {
    if [ -n "${RNNBENCH_WHEELS:-}" ]; then
        "$py" -m pip install -q --no-index --find-links "$RNNBENCH_WHEELS" "$@"
    else
        "$py" -m pip install -q "$@"
    fi
}

# A CUDA build of torch and CuPy: kept when they already work, installed otherwise. A CPU
# build of torch (rnnbench's [cpu] extra pins one) must be replaced, not kept.
torch_state=$("$py" -c "import torch; print('gpu' if torch.cuda.is_available() else ('cpu-build' if torch.version.cuda is None else 'no-gpu'))" 2>/dev/null || echo missing)
case "$torch_state" in
    gpu) ;;
    missing) pip_install torch ;;
    cpu-build) pip_install --force-reinstall --no-deps torch ;;
    no-gpu) echo "gpu_check: torch is a CUDA build but sees no GPU (driver? CUDA_VISIBLE_DEVICES?)" >&2; exit 2 ;;
esac
"$py" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" || {
    echo "gpu_check: no CUDA build of torch could be installed; install one matching your driver (pytorch.org)" >&2; exit 2; }
"$py" -c "import cupy; cupy.cuda.runtime.getDeviceCount()" 2>/dev/null \
    || pip_install "cupy-cuda12x[ctk]"
# rnnbench itself without its pinned CPU torch, and what its tests need.
pip_install --no-deps -e .
for requirement in array-api-compat scikit-learn tqdm pandas matplotlib threadpoolctl \
                   pytest pytest-benchmark array-api-strict; do
    "$py" -c "import importlib.metadata as m; m.version('$requirement')" 2>/dev/null \
        || pip_install "$requirement"
done

start=$(date +%s)
"$py" - <<'PY' | tee "$out/environment.txt"
import impls, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
for name, status in impls.available().items():
    print(f"{name:20s} {'available' if status else 'unavailable: ' + status.reason}")
PY
set +e
"$py" -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_cupy_backend.py \
    tests/test_conformance.py tests/test_validation.py -k "cuda or cupy or gpu" 2>&1 | tee "$out/gpu_tests.log"
tests_status=${PIPESTATUS[0]}
set -e
"$py" -m bench.cli sweep --preset gpu --out "$out/run" --max-case-s 60 --quiet --report
echo "gpu_check: tests exit ${tests_status}; sweep + report in $out/run; $(( $(date +%s) - start )) s"
exit "$tests_status"
