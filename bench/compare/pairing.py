"""BASE and one OTHER, row by row: every key of either source becomes a Pair of one kind —
timed (ok on both sides: tested by bench.compare.stats), a status change (ok on one side
only: a lost implementation is news), only in one run, or not ok on either — with the
changes of the single-measurement columns (memory, compile time, max_err, accuracy) and
the correctness regressions among them flagged.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from bench.compare.machines import Comparability, comparability
from bench.compare.sources import Entry, Source
from bench.compare.stats import NOT_TESTED, SLOWER, VERDICTS, Settings, Timing, compare_timings, ratio_of
from bench.results import RETRY_SKIPPED_PREFIX

TIMED, STATUS_CHANGE, ONLY_BASE, ONLY_OTHER, NEITHER_OK = (
    "timed", "status change", "only in BASE", "only in OTHER", "not ok in either")
# Peak memory (page-granular RSS, allocator state) and compile time (the first call: caches,
# JIT) are one measurement each and move by tens of percent between two runs of the same
# code: a change is worth listing beyond this factor, not at the timing threshold.
SINGLE_MEASUREMENT_BAND = 1.5
MAX_ERR_WORSE = 10.0  # a max_err this many times larger (and above the dtype's epsilon) is flagged
ACCURACY_DROP = 0.02  # test accuracy this much lower (2 points) is flagged: one training run each


@dataclass(frozen=True)
class Metrics:
    """The single-measurement columns of a pair ok on both sides (None: not measured)."""
    peak_mem_ratio: float | None = None  # OTHER / BASE
    compile_ratio: float | None = None  # OTHER / BASE compile_s
    max_err: tuple[float | None, float | None] = (None, None)  # BASE, OTHER
    accuracy_change: float | None = None  # OTHER - BASE test_accuracy


@dataclass
class Pair:
    key: tuple
    base: Entry | None
    other: Entry | None
    kind: str
    timing: Timing | None = None
    metrics: Metrics = field(default_factory=Metrics)
    flags: list[str] = field(default_factory=list)  # correctness regressions, status lost

    @property
    def named(self) -> dict:
        return (self.base or self.other).named()

    @property
    def verdict(self) -> str | None:
        return self.timing.verdict if self.timing else None


@dataclass
class Comparison:
    base: Source
    other: Source
    pairs: list[Pair]
    found: Comparability
    settings: Settings

    def of_kind(self, kind: str) -> list[Pair]:
        return [p for p in self.pairs if p.kind == kind]

    @property
    def timed(self) -> list[Pair]:
        return self.of_kind(TIMED)

    @property
    def slower(self) -> list[Pair]:
        return [p for p in self.timed if p.verdict == SLOWER]

    @property
    def flagged(self) -> list[Pair]:
        return [p for p in self.pairs if p.flags]

    def counts(self) -> dict[str, int]:
        found = Counter(p.verdict for p in self.timed)
        return {v: found.get(v, 0) for v in VERDICTS}

    @property
    def tested(self) -> int:
        return sum(p.verdict != NOT_TESTED for p in self.timed)


def _ok(entry: Entry | None) -> bool:
    return entry is not None and entry.status == "ok"


def _kind(base: Entry | None, other: Entry | None) -> str:
    if base is None:
        return ONLY_OTHER
    if other is None:
        return ONLY_BASE
    if _ok(base) and _ok(other):
        return TIMED
    return STATUS_CHANGE if _ok(base) or _ok(other) or base.status != other.status else NEITHER_OK


def metrics_of(base: Entry, other: Entry) -> Metrics:
    change = (None if base.test_accuracy is None or other.test_accuracy is None
              else other.test_accuracy - base.test_accuracy)
    return Metrics(ratio_of(base.peak_mem_bytes, other.peak_mem_bytes),
                   ratio_of(base.compile_s, other.compile_s), (base.max_err, other.max_err), change)


def _epsilon(dtype: str) -> float:
    try:
        return float(np.finfo(np.dtype(dtype)).eps)
    except TypeError:
        return 0.0


def flags_of(pair: Pair) -> list[str]:
    """Correctness regressions and lost rows: what a reader must not miss."""
    base, other = pair.base, pair.other
    if pair.kind == STATUS_CHANGE and _ok(base):
        if other.status == "skipped" and other.reason.startswith(RETRY_SKIPPED_PREFIX):
            return []  # the grid left it out (a choice of the sweep), not the code or machine
        why = f": {other.reason}" if other.reason else ""
        return [f"lost: ok → {other.status}{why}"]
    if pair.kind != TIMED:
        return []
    flags = []
    before, after = pair.metrics.max_err
    # errors under the dtype's epsilon are the rounding of a correct result, whatever
    # their ratio
    if (before is not None and after is not None and after > _epsilon(base.named()["dtype"])
            and after > MAX_ERR_WORSE * before):
        flags.append(f"max_err {before:.2e} → {after:.2e} (more than ×{MAX_ERR_WORSE:g} worse)")
    change = pair.metrics.accuracy_change
    if change is not None and change <= -ACCURACY_DROP:
        flags.append(f"test accuracy {base.test_accuracy:.3f} → {other.test_accuracy:.3f} "
                     f"({change * 100:+.1f} points)")
    return flags


def compare(base: Source, other: Source, settings: Settings) -> Comparison:
    keys = list(dict.fromkeys([*base.entries, *other.entries]))
    pairs = [Pair(k, base.entries.get(k), other.entries.get(k),
                  _kind(base.entries.get(k), other.entries.get(k))) for k in keys]
    timed = [p for p in pairs if p.kind == TIMED]
    timings = compare_timings([(p.base.median_s, p.base.samples, p.other.median_s, p.other.samples)
                               for p in timed], settings)
    for pair, timing in zip(timed, timings):
        pair.timing = timing
        pair.metrics = metrics_of(pair.base, pair.other)
    for pair in pairs:
        pair.flags = flags_of(pair)
    return Comparison(base, other, pairs, comparability(base.machine, other.machine), settings)
