"""Peak memory of one call, measured the same way for every CPU backend.

tracemalloc sees only Python's allocator, not torch's or ONNX Runtime's, so we read the
kernel's resident-set high-water mark instead: reset it (`5` to /proc/self/clear_refs),
record the resident set, run the phase once, read VmHWM. The difference is what the call
touched on top of what was already resident, whoever allocated it.

Freed heap that glibc keeps mapped would hide a call's allocations (they would reuse
pages already resident), so each measurement first collects garbage and trims the heap
(malloc_trim): the baseline is then what is really in use. The allocator's own policy is
left as users have it: timing must see the same allocator behaviour they do.

A full collection walks every tracked object, and with torch, numba and ONNX Runtime
imported that is ~200,000 objects and ~0.17 s a case on the 2-core VM (24 s of the quick
preset's 3 minutes). `freeze_long_lived()` moves what is alive once a backend is made
(modules, the backends) out of the collector's sight (gc.freeze), so each measurement
walks only what was made since; the garbage of earlier cases is never frozen, because
it is collected first.
"""
from __future__ import annotations

import ctypes
import gc
from pathlib import Path

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def supported() -> bool:
    return _CLEAR_REFS.exists() and _STATUS.exists()


def _status_bytes(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"{field} missing from {_STATUS}")


def freeze_long_lived() -> None:
    """Collect, then freeze what survives (see the module doc). Call it only where no
    short-lived object is alive (the sweep: right after making a backend, between cases):
    frozen cyclic garbage is never collected."""
    gc.collect()
    gc.freeze()


def peak_bytes(fn, sync=lambda: None) -> int:
    """Resident memory `fn()` added at its peak, in bytes (page granularity)."""
    if not supported():
        raise OSError("peak memory needs Linux's /proc/self/clear_refs")
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
    _CLEAR_REFS.write_text("5")  # reset VmHWM to the current VmRSS
    baseline = _status_bytes("VmRSS")
    result = fn()
    sync()
    peak = _status_bytes("VmHWM")
    del result
    return max(0, peak - baseline)
