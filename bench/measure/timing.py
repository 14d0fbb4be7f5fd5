"""Timing that a demanding engineer can trust (the torch.utils.benchmark recipe):

- the first call is timed on its own and reported as `compile_s` (JIT compilation,
  graph capture, first-touch allocations): a result, never mixed into the steady state;
- warm-up calls follow, outside the measurement;
- each sample times a block of `number` calls, sized so the timer's own cost is under
  1 % of the sample (`timer_overhead_pct` records how much it really was);
- samples are collected until both a minimum count and a minimum total time are reached
  (autorange), and every raw per-call time is kept; median and IQR are derived.
- `sync()` runs after every call inside the timed region, so asynchronous devices are
  timed to completion, not to the launch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

# A row is flagged noisy when the spread of its samples is this large against the median.
NOISY_IQR_FRACTION = 0.10
# Target per-sample time: with ~0.1 us of timer overhead this keeps it far below 1 %.
MIN_SAMPLE_S = 2e-3


@dataclass(frozen=True)
class Measurement:
    times: tuple[float, ...]  # seconds per call, one entry per sample
    number: int  # calls per sample
    compile_s: float  # the first call, alone
    timer_overhead_s: float  # one perf_counter pair + one sync, per sample

    @property
    def median(self) -> float:
        return float(np.median(self.times))

    @property
    def iqr(self) -> float:
        q1, q3 = np.percentile(self.times, [25, 75])
        return float(q3 - q1)

    @property
    def repeats(self) -> int:
        return len(self.times) * self.number

    @property
    def noisy(self) -> bool:
        return self.iqr > NOISY_IQR_FRACTION * self.median

    @property
    def timer_overhead_pct(self) -> float:
        return 100.0 * self.timer_overhead_s / (self.median * self.number)


def _no_sync() -> None:
    pass


def timer_overhead(sync=_no_sync, trials: int = 200) -> float:
    """Median cost of what a sample adds besides the work: two clock reads and a sync."""
    costs = []
    for _ in range(trials):
        start = time.perf_counter()
        sync()
        costs.append(time.perf_counter() - start)
    return float(np.median(costs))


def measure(fn, *, sync=_no_sync, min_samples: int = 7, min_time_s: float = 0.25,
            max_time_s: float = 5.0, warmup_s: float = 0.05) -> Measurement:
    """Time `fn()` (which must do the whole unit of work) as described in the module doc."""
    start = time.perf_counter()
    fn()
    sync()
    compile_s = time.perf_counter() - start

    # Warm-up: at least two calls and warmup_s, which also estimates the per-call time.
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < warmup_s:
        fn()
        sync()
        calls += 1
    per_call = (time.perf_counter() - start) / calls
    number = max(1, int(np.ceil(MIN_SAMPLE_S / max(per_call, 1e-9))))

    times: list[float] = []
    began = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
            sync()
        times.append((time.perf_counter() - t0) / number)
        elapsed = time.perf_counter() - began
        if (len(times) >= min_samples and elapsed >= min_time_s) or elapsed >= max_time_s:
            break
    return Measurement(tuple(times), number, compile_s, timer_overhead(sync))
