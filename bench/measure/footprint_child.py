"""One fresh process of `rnnbench footprint` (bench.measure.footprint): import an
implementation, load canonical weights from an .npz, predict one sequence, print the logits.

    python -m bench.measure.footprint_child '{"impl": "numpy", "params": "P.npz", "x": "X.npy",
                                             "cache_dir": "DIR"}'

This module imports only the standard library before its clock starts: whatever `import
impls; impls.get(impl)` pulls in (numpy, torch, ...) is the implementation's cost, not the
harness's. The argument is one JSON object (json is imported anyway; argparse would be
harness time inside the cold start the parent measures).

stdout, two lines, each flushed: first the measurement with the logits (the parent stops its
clock when that line arrives), then the top-level modules imported (for installed_bytes).
The process then leaves with os._exit: interpreter teardown (seconds for torch) is no part
of a start, and would only delay the next measurement.
"""
from __future__ import annotations

import json
import os
import sys
import time


def vm_rss_bytes() -> int | None:
    """This process's resident set now (Linux /proc), or None elsewhere."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run(config: dict) -> tuple[dict, dict]:
    """(measurement with the logits, what was imported) of one start, as the module doc says."""
    present = {name.partition(".")[0] for name in sys.modules}
    start = time.perf_counter()
    import impls

    backend = impls.get(config["impl"])
    import_s = time.perf_counter() - start
    rss = vm_rss_bytes()
    # the harness's pins (bench.measure.machine.use_threads) arrive as environment
    # variables set by the parent; sessions (ONNX Runtime) read this attribute instead
    backend.threads = 1
    backend.cache_dir = config.get("cache_dir")

    loaded_at = time.perf_counter()
    # `rnnbench evaluate`'s loader (bench.cli.load_params) without the CLI's own imports
    from bench.train.data import read_plain_npz
    import numpy as np

    params = read_plain_npz(config["params"])
    impls.check_params(params)
    impls.check_finite(params)
    x = np.load(config["x"], allow_pickle=False)
    weights_at = time.perf_counter()
    logits = backend.predict(backend.from_numpy(params), backend.asarray(x))
    backend.sync()
    logits = backend.to_numpy(logits)
    done = time.perf_counter()
    measured = {"import_s": import_s, "rss_after_import_bytes": rss,
                "load_s": weights_at - loaded_at, "first_prediction_s": done - weights_at,
                "device": backend.device, "logits": np.asarray(logits, np.float64).tolist()}
    torch = sys.modules.get("torch")
    imported = {"modules": sorted({name.partition(".")[0] for name in sys.modules} - present),
                "torch_threads": torch.get_num_threads() if torch else None}
    return measured, imported


def main(argv: list[str]) -> None:
    measured, imported = run(json.loads(argv[0]))
    for line in (measured, imported):
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
