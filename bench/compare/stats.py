"""The statistics of one OTHER-vs-BASE comparison of timed pairs.

Per pair: ratio = OTHER median / BASE median (> 1: OTHER is slower), a percentile bootstrap
interval of that ratio resampling the two runs' raw samples independently, and a two-sided
Mann–Whitney U test on the same samples (does one run's per-call time tend to be larger?
no normality assumed: timings are skewed, with a long right tail).

A sweep holds hundreds of pairs: at alpha = 0.05 each, a few would test "significant" by
chance alone. The p values of one comparison are therefore adjusted together with
Holm–Bonferroni, which keeps the family-wise error rate at alpha: the chance that *any*
pair of the comparison is called faster or slower while nothing changed stays below alpha.
That is the guarantee a CI gate (--fail-on-regression) needs; a false-discovery-rate
correction (Benjamini–Hochberg, scipy.stats.false_discovery_control) would instead let
alpha of the flagged pairs be false alarms, i.e. fail CI on noise now and then.

A verdict needs both a large effect and evidence for it: slower when ratio >= threshold
and Holm p < alpha; faster when ratio <= 1 / threshold and Holm p < alpha; else no
significant change. Small but real changes (significant, under the threshold) and large
but unproven ones (over the threshold, not significant) say so in a note.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import numpy as np

SLOWER, FASTER, UNCHANGED, NOT_TESTED = "slower", "faster", "no significant change", "not tested"
VERDICTS = (SLOWER, FASTER, UNCHANGED, NOT_TESTED)
MIN_SAMPLES = 2  # per side: a bootstrap needs two observations to resample anything
# bounds the bootstrap's (resamples x samples) array per batch: pytest-benchmark keeps
# thousands of rounds of a fast benchmark
BOOTSTRAP_CELLS_PER_BATCH = 2_000_000


@dataclass(frozen=True)
class Settings:
    threshold: float = 1.10  # asv's default factor: a change under 10 % is not reported
    alpha: float = 0.05  # family-wise (Holm) over the timed pairs of one comparison
    confidence: float = 0.95  # of the ratio's interval
    resamples: int = 2000  # bootstrap resamples: the 2.5 % tail holds 50 of them
    seed: int = 0  # the bootstrap's: the same inputs give the same report, byte for byte

    def __post_init__(self):
        if not self.threshold > 1:
            raise ValueError(f"--threshold must be > 1 (a ratio such as 1.10), got {self.threshold}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"--alpha must be in (0, 1), got {self.alpha}")


@dataclass(frozen=True)
class Timing:
    """What the statistics say of one timed pair (None: not computed, see verdict/note)."""
    ratio: float | None
    low: float | None  # the ratio's bootstrap interval
    high: float | None
    p: float | None  # Mann–Whitney U, two-sided
    p_holm: float | None  # p adjusted over the comparison's tested pairs
    verdict: str
    note: str
    base_n: int  # raw samples on each side
    other_n: int


def median_of(median_s: float | None, samples) -> float | None:
    """The median of the samples (what the interval and the test see; the sweep and
    pytest-benchmark write exactly that as the row's median), else the row's median."""
    return float(np.median(samples)) if len(samples) else median_s


def ratio_of(base_median: float | None, other_median: float | None) -> float | None:
    if base_median is None or other_median is None or not base_median > 0 or not other_median > 0:
        return None
    return other_median / base_median


def smallest_p(n_base: int, n_other: int) -> float:
    """The smallest two-sided p Mann–Whitney U can give with these sample counts (all of
    one side above all of the other, no ties): 2 / C(n_base + n_other, n_base)."""
    return min(1.0, 2 / math.comb(n_base + n_other, n_base))


def why_untestable(n_base: int, n_other: int, alpha: float) -> str | None:
    """Why a pair cannot be tested (too few samples to ever reach p < alpha), or None."""
    if min(n_base, n_other) == 0:
        side = "either run" if n_base == n_other == 0 else "BASE" if n_base == 0 else "OTHER"
        return f"no raw samples in {side} (one median only: nothing to test)"
    if min(n_base, n_other) < MIN_SAMPLES:
        return f"{n_base} vs {n_other} samples: one sample has no spread to compare"
    if smallest_p(n_base, n_other) >= alpha:
        return (f"{n_base} vs {n_other} samples: Mann–Whitney U cannot reach p < {alpha:g} "
                "with so few")
    return None


def mann_whitney_p(base, other) -> float:
    from scipy.stats import mannwhitneyu

    if np.ptp(np.concatenate([base, other])) == 0:
        return 1.0  # every sample the same: no evidence of a difference (and a zero variance)
    return float(mannwhitneyu(other, base, alternative="two-sided").pvalue)


def _median_ratio(base, other, axis=-1):
    return np.median(other, axis=axis) / np.median(base, axis=axis)


def _seeded(seed: int) -> dict:
    """The bootstrap's seed argument: `rng` since scipy 1.15, `random_state` before."""
    from scipy.stats import bootstrap

    name = "rng" if "rng" in inspect.signature(bootstrap).parameters else "random_state"
    return {name: np.random.default_rng(seed)}


def ratio_interval(base, other, settings: Settings) -> tuple[float, float]:
    """The percentile bootstrap interval of median(other) / median(base), the two sample
    sets resampled independently (two runs, not paired calls)."""
    from scipy.stats import bootstrap

    if np.ptp(base) == 0 and np.ptp(other) == 0:  # constant: every resample gives the ratio
        ratio = float(_median_ratio(base, other))
        return ratio, ratio
    batch = max(1, BOOTSTRAP_CELLS_PER_BATCH // (len(base) + len(other)))
    result = bootstrap((base, other), _median_ratio, paired=False, vectorized=True,
                       method="percentile", n_resamples=settings.resamples, batch=batch,
                       confidence_level=settings.confidence, **_seeded(settings.seed))
    interval = result.confidence_interval
    return float(interval.low), float(interval.high)


def holm(pvalues) -> np.ndarray:
    """Holm–Bonferroni adjusted p values (step-down: the k-th smallest of m is multiplied
    by m - k + 1, then made monotone and capped at 1); reject where adjusted < alpha.
    scipy has no Holm (false_discovery_control is Benjamini–Hochberg/-Yekutieli)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, kind="stable")
    stepped = (len(p) - np.arange(len(p))) * p[order]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(stepped))
    return adjusted


def verdict(ratio: float, p_holm: float, settings: Settings) -> tuple[str, str]:
    significant = p_holm < settings.alpha
    beyond = ratio >= settings.threshold or ratio <= 1 / settings.threshold
    if significant and beyond:
        return (SLOWER if ratio > 1 else FASTER), ""
    if significant and ratio != 1:
        return UNCHANGED, f"significant, but within the ×{settings.threshold:g} threshold"
    if beyond:
        return UNCHANGED, "beyond the threshold, but not significant"
    return UNCHANGED, ""


def compare_timings(pairs, settings: Settings) -> list[Timing]:
    """One Timing per (base_median, base_samples, other_median, other_samples), the p
    values adjusted together (Holm) over the pairs that could be tested."""
    prepared = []
    for base_median, base_samples, other_median, other_samples in pairs:
        base = np.asarray(base_samples, dtype=float)
        other = np.asarray(other_samples, dtype=float)
        ratio = ratio_of(median_of(base_median, base), median_of(other_median, other))
        reason = "no median on one side" if ratio is None else why_untestable(len(base), len(other),
                                                                              settings.alpha)
        prepared.append((base, other, ratio, reason))
    tested = [i for i, (_, _, _, reason) in enumerate(prepared) if reason is None]
    p = {i: mann_whitney_p(prepared[i][0], prepared[i][1]) for i in tested}
    adjusted = dict(zip(tested, holm([p[i] for i in tested]))) if tested else {}
    timings = []
    for i, (base, other, ratio, reason) in enumerate(prepared):
        if reason is not None:
            timings.append(Timing(ratio, None, None, None, None, NOT_TESTED, reason, len(base), len(other)))
            continue
        low, high = ratio_interval(base, other, settings)
        word, note = verdict(ratio, float(adjusted[i]), settings)
        timings.append(Timing(ratio, low, high, p[i], float(adjusted[i]), word, note,
                              len(base), len(other)))
    return timings


def geometric_mean(ratios) -> float | None:
    """exp(mean(log ratio)): the typical ratio, where ×2 and ×0.5 cancel out."""
    logs = [math.log(r) for r in ratios if r is not None and r > 0]
    return math.exp(sum(logs) / len(logs)) if logs else None
