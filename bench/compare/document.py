"""compare.md: what was compared, the machines (and the warning when they differ), how to
read the numbers, the summary, the timed pairs by effect, the single-measurement columns,
status changes and rows in one run only, and the plots; and the CSV of every pair.

With several OTHERs each table has one block of columns per OTHER, each compared with BASE
on its own (its own Holm family).
"""
from __future__ import annotations

import csv
import math
import shlex
import warnings
from pathlib import Path

from bench.compare import plots
from bench.compare.machines import machine_table, warning_lines
from bench.compare.pairing import (ACCURACY_DROP, MAX_ERR_WORSE, NEITHER_OK, ONLY_BASE, ONLY_OTHER,
                                   SINGLE_MEASUREMENT_BAND, STATUS_CHANGE, TIMED, Comparison)
from bench.compare.stats import FASTER, NOT_TESTED, SLOWER, UNCHANGED, geometric_mean
from bench.record import KEY_COLUMNS
from bench.report.selection import SIZE_DIMS, size_label
from bench.report.tables import NONE, cell, fmt, markdown_table

REPORT_NAME = "compare.md"
PLOTS = "plots"
MAX_LISTED = 100  # rows per list of rows in one run only; the CSV has them all
PHASE_ORDER = ("forward", "backward", "train_step", "transfer", "accuracy")


def case_label(named: dict) -> str:
    """'lstm, 2-layer bidirectional, B=32 T=64 I=32 H=128, float32, 1 thread'."""
    return size_label({k: named[k] for k in ("cell", "num_layers", "bidirectional", *SIZE_DIMS,
                                             "dtype", "threads")})


def _frame(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame(rows)


def _case(named: dict) -> dict:
    return {"impl": named["impl"], "phase": named["phase"], "case": case_label(named)}


def _prefix(comparisons: list[Comparison], comparison: Comparison) -> str:
    return f"{comparison.other.label}: " if len(comparisons) > 1 else ""


# ---------------------------------------------------------------- cells

def ratio_cell(timing) -> str:
    if timing is None or timing.ratio is None:
        return NONE
    interval = f" [{timing.low:.3f}, {timing.high:.3f}]" if timing.low is not None else ""
    return f"{timing.ratio:.3f}{interval}"


def p_cell(timing) -> str:
    return NONE if timing is None or timing.p is None else f"{timing.p:.2g} / {timing.p_holm:.2g}"


def verdict_cell(timing) -> str:
    if timing is None:
        return NONE
    word = f"**{timing.verdict}**" if timing.verdict in (SLOWER, FASTER) else timing.verdict
    return f"{word}: {timing.note}" if timing.note else word


# ---------------------------------------------------------------- sections

def _roles(sources) -> list[str]:
    return ["BASE", *["OTHER"] * (len(sources) - 1)]


def sources_section(comparisons: list[Comparison]) -> list[str]:
    sources = [comparisons[0].base, *(c.other for c in comparisons)]
    lines = []
    for role, source in zip(_roles(sources), sources):
        ok = sum(e.status == "ok" for e in source.entries.values())
        with_samples = sum(bool(e.samples) for e in source.entries.values())
        command = source.meta.get("command")
        command = shlex.join(map(str, command)) if isinstance(command, list) else command
        lines.append(f"- **{role}** `{source.label}`: {source.kind} `{source.path}`, "
                     f"{len(source.entries)} rows ({ok} ok, {with_samples} with raw samples); "
                     f"started {source.meta.get('started') or NONE}"
                     + (f"; `{command}`" if command else ""))
    return lines + [""]


def machines_section(comparisons: list[Comparison]) -> list[str]:
    sources = [comparisons[0].base, *(c.other for c in comparisons)]
    rows = []
    for row in machine_table([s.machine for s in sources]):
        mark = ("⚠️ differs" if row["level"] in ("machine", "blas") else "differs") if row["differs"] \
            else "unknown" if row["partial"] else "same"
        rows.append({"": row["field"], **{f"{role} {s.label}": cell(v) for role, s, v
                                          in zip(_roles(sources), sources, row["values"])},
                     "same?": mark})
    return ["## Machines and environments", "",
            "⚠️ marks a difference that makes times incomparable (CPU, GPU, BLAS kernel); "
            "*differs* one that may move them. `not recorded`: the source does not keep it.", "",
            markdown_table(_frame(rows)), ""]


def how_to_read(comparisons: list[Comparison]) -> list[str]:
    settings = comparisons[0].settings
    t, alpha = settings.threshold, settings.alpha
    families = ", ".join(f"{c.tested} for `{c.other.label}`" for c in comparisons)
    return ["## How to read this", "",
            f"- **ratio** = OTHER median / BASE median of the same case (same key: implementation, "
            f"cell, structure, phase, sizes, dtype, threads). **Above 1: OTHER is slower** "
            f"(1.25: it takes 25 % longer); below 1: OTHER is faster (0.80: 20 % less time).",
            f"- **interval**: the {settings.confidence * 100:g} % percentile bootstrap interval of that "
            f"ratio: each run's raw samples (one per timed call or group of calls, "
            f"raw_times.jsonl or pytest-benchmark's stats.data) resampled independently "
            f"{settings.resamples} times (seed {settings.seed}: the same inputs give the same report).",
            "- **p**: two-sided Mann–Whitney U test (scipy.stats.mannwhitneyu) on the two runs' "
            "raw samples: how often sample sets this different would arise if both runs timed "
            "the same thing. It assumes no normal distribution.",
            f"- **Holm p**: p adjusted with Holm–Bonferroni over all the tested timed pairs of one "
            f"OTHER against BASE ({families}): the chance that *any* pair of a comparison is called "
            f"slower or faster while nothing changed stays below alpha = {alpha:g}.",
            f"- **verdict**: *slower* needs both ratio ≥ {t:g} (the threshold) and Holm p < {alpha:g}; "
            f"*faster* needs ratio ≤ 1/{t:g} = {1 / t:.3f} and Holm p < {alpha:g}; anything else is "
            "*no significant change* (a note says when the test is significant but the change "
            "small, or the change large but not significant). *not tested*: too few raw samples "
            "(e.g. a pytest-benchmark JSON saved without --benchmark-save-data, accuracy rows "
            "timed once); the ratio is still shown and such pairs never fail --fail-on-regression.",
            f"- **memory, compile time, max_err, test accuracy** are one measurement per row "
            f"(no samples, no test): a change is listed when peak memory or compile time moved "
            f"beyond ×{SINGLE_MEASUREMENT_BAND:g} (they move by tens of percent between runs of "
            f"the same code), max_err by more than ×{MAX_ERR_WORSE:g}, or test accuracy at all; "
            f"flagged when max_err got more than ×{MAX_ERR_WORSE:g} worse (above the dtype's "
            f"epsilon), accuracy dropped by {ACCURACY_DROP * 100:g} points or more, or a row "
            f"that was ok is not any more (unless the OTHER sweep's grid left it out: "
            f"compile-heavy).", ""]


def summary_lines(comparison: Comparison) -> str:
    counts = comparison.counts()
    mean = geometric_mean([p.timing.ratio for p in comparison.timed])
    lost = sum(1 for p in comparison.of_kind(STATUS_CHANGE) if p.flags)
    flags = sum(1 for p in comparison.timed if p.flags)
    return (f"- `{comparison.other.label}` vs `{comparison.base.label}`: {len(comparison.timed)} timed "
            f"pairs: **{counts[SLOWER]} slower**, **{counts[FASTER]} faster**, {counts[UNCHANGED]} no "
            f"significant change, {counts[NOT_TESTED]} not tested; geometric mean ratio "
            f"{fmt(mean, '.3f')}. {lost} row(s) lost (ok → not ok), {flags} correctness/accuracy "
            f"flag(s); {len(comparison.of_kind(ONLY_BASE))} row(s) only in BASE, "
            f"{len(comparison.of_kind(ONLY_OTHER))} only in OTHER.")


def _phase_rank(phase: str) -> tuple:
    return (PHASE_ORDER.index(phase) if phase in PHASE_ORDER else len(PHASE_ORDER), phase)


def summary_table(comparisons: list[Comparison]):
    groups = dict.fromkeys((p.named["impl"], p.named["phase"]) for c in comparisons for p in c.timed)
    impls = list(dict.fromkeys(impl for impl, _ in groups))
    rows = []
    for impl, phase in sorted(groups, key=lambda g: (impls.index(g[0]), _phase_rank(g[1]))):
        row = {"impl": impl, "phase": phase}
        for c in comparisons:
            mine = [p for p in c.timed if (p.named["impl"], p.named["phase"]) == (impl, phase)]
            verdicts = [p.verdict for p in mine]
            prefix = _prefix(comparisons, c)
            row[f"{prefix}geo-mean ratio"] = fmt(geometric_mean([p.timing.ratio for p in mine]), ".3f")
            row[f"{prefix}slower / faster / unchanged / not tested"] = " / ".join(
                str(verdicts.count(v)) for v in (SLOWER, FASTER, UNCHANGED, NOT_TESTED))
        rows.append(row)
    return _frame(rows)


def _effect(pairs) -> float:
    logs = [abs(math.log(p.timing.ratio)) for p in pairs if p and p.timing and p.timing.ratio]
    return max(logs) if logs else -1.0


def _by_key(comparisons: list[Comparison], kinds) -> dict[tuple, list]:
    """key -> [the pair in each comparison, or None], for keys of `kinds` in any of them."""
    index = [{p.key: p for p in c.pairs} for c in comparisons]
    keys = dict.fromkeys(p.key for c in comparisons for p in c.pairs if p.kind in kinds)
    return {k: [i.get(k) if i.get(k) is not None and i[k].kind in kinds else None for i in index]
            for k in keys}


def timed_table(comparisons: list[Comparison]):
    rows = []
    for key, pairs in sorted(_by_key(comparisons, (TIMED,)).items(), key=lambda kv: -_effect(kv[1])):
        named = next(p for p in pairs if p).named
        row = _case(named)
        for c, pair in zip(comparisons, pairs):
            timing = pair.timing if pair else None
            prefix = _prefix(comparisons, c)
            row[f"{prefix}ratio [{c.settings.confidence * 100:g} % interval]"] = ratio_cell(timing)
            row[f"{prefix}p / Holm p"] = p_cell(timing)
            row[f"{prefix}samples"] = f"{timing.base_n} / {timing.other_n}" if timing else NONE
            row[f"{prefix}verdict"] = verdict_cell(timing)
        rows.append(row)
    return _frame(rows)


def _notable(pair) -> bool:
    m, band = pair.metrics, SINGLE_MEASUREMENT_BAND
    beyond = lambda r: r is not None and (r >= band or r <= 1 / band)  # noqa: E731
    before, after = m.max_err
    err_moved = (before is not None and after is not None and max(before, after) > 0
                 and (min(before, after) == 0 or max(after / before, before / after) > MAX_ERR_WORSE))
    return (beyond(m.peak_mem_ratio) or beyond(m.compile_ratio) or err_moved
            or bool(m.accuracy_change) or bool(pair.flags))


def metrics_table(comparisons: list[Comparison]):
    rows = []
    for key, pairs in _by_key(comparisons, (TIMED,)).items():
        if not any(p and _notable(p) for p in pairs):
            continue
        row = _case(next(p for p in pairs if p).named)
        for c, pair in zip(comparisons, pairs):
            m = pair.metrics if pair else None
            prefix = _prefix(comparisons, c)
            row[f"{prefix}peak memory ×"] = fmt(m.peak_mem_ratio if m else None, ".3g")
            row[f"{prefix}compile time ×"] = fmt(m.compile_ratio if m else None, ".3g")
            row[f"{prefix}max_err BASE → OTHER"] = (NONE if not m or m.max_err == (None, None) else
                                                    f"{fmt(m.max_err[0], '.2e')} → {fmt(m.max_err[1], '.2e')}")
            row[f"{prefix}test accuracy Δ"] = fmt(m.accuracy_change * 100 if m and m.accuracy_change
                                                   is not None else None, "+.1f", " points")
            row[f"{prefix}flag"] = "; ".join(pair.flags) if pair and pair.flags else ""
        rows.append(row)
    return _frame(rows)


def flags_table(comparisons: list[Comparison]):
    rows = [{**_case(p.named), "OTHER": c.other.label, "what": flag}
            for c in comparisons for p in c.flagged for flag in p.flags]
    return _frame(rows)


def status_table(comparisons: list[Comparison]):
    rows = [{**_case(p.named), "OTHER": c.other.label, "BASE status": p.base.status,
             "OTHER status": p.other.status, "OTHER reason": cell(p.other.reason or p.base.reason)}
            for c in comparisons for p in c.of_kind(STATUS_CHANGE)]
    return _frame(rows)


def one_run_only(comparisons: list[Comparison]) -> list[str]:
    rows = [{**_case(p.named), "OTHER": c.other.label,
             "in": f"BASE only" if p.kind == ONLY_BASE else "OTHER only",
             "status": (p.base or p.other).status}
            for c in comparisons for p in c.pairs if p.kind in (ONLY_BASE, ONLY_OTHER)]
    more = len(rows) - MAX_LISTED
    lines = [markdown_table(_frame(rows[:MAX_LISTED])), ""]
    if more > 0:
        lines += [f"... and {more} more (every pair is in the CSV: --csv PATH).", ""]
    return lines


def plots_section(comparisons: list[Comparison], out_dir: Path) -> list[str]:
    lines = ["## Plots", "", "Each point is a timed pair's ratio (OTHER / BASE, log axis) with "
             "its bootstrap interval, one panel per implementation, coloured by verdict; the "
             "shaded band is the threshold, inside which no change is reported.", ""]
    for old in (out_dir / PLOTS).glob(f"{plots.PREFIX}*.png"):
        old.unlink()  # never embed a figure of an earlier comparison
    for comparison in comparisons:
        try:
            path = plots.plot_comparison(comparison, out_dir / PLOTS, case_label)
        except Exception as exc:  # one odd plot must not cost the report
            warnings.warn(f"plot of {comparison.other.label} skipped: {type(exc).__name__}: {exc}",
                          stacklevel=2)
            path = None
        lines += ([f"![{comparison.other.label} vs {comparison.base.label}]({PLOTS}/{path.name})", ""]
                  if path else [f"_(no plot for `{comparison.other.label}`: no timed pair)_", ""])
    return lines


def render(comparisons: list[Comparison], out_dir: Path) -> str:
    base = comparisons[0].base
    out = [f"# rnnbench compare: {', '.join(c.other.label for c in comparisons)} vs {base.label}", ""]
    for c in comparisons:
        out += warning_lines(base.label, c.other.label, c.found)
    out += ["## What was compared", "", *sources_section(comparisons), *how_to_read(comparisons)]
    if not any(c.timed for c in comparisons):
        out += ["> No key is ok in BASE and an OTHER: nothing to time against each other "
                "(different grids, or keys that do not match).", ""]
    out += ["## Summary", "", *(summary_lines(c) for c in comparisons), "",
            "Per implementation and phase: the geometric mean of the ratios (×2 and ×0.5 "
            "cancel out) and the verdicts.", "", markdown_table(summary_table(comparisons)), "",
            "## Lost rows and correctness flags", "", markdown_table(flags_table(comparisons)), "",
            *machines_section(comparisons),
            "## Timed pairs, largest effect first", "",
            "`samples`: raw samples BASE / OTHER; `p / Holm p`: the test's p, then adjusted.", "",
            markdown_table(timed_table(comparisons)), "",
            "## Memory, compile time, max_err and accuracy (one measurement each)", "",
            "Pairs ok on both sides whose single-measurement columns moved (see How to read "
            "this); the rest are unchanged within those bands.", "",
            markdown_table(metrics_table(comparisons)), "",
            "## Status changes", "", markdown_table(status_table(comparisons)), "",
            "## Rows in one run only", "", *one_run_only(comparisons),
            *plots_section(comparisons, out_dir)]
    neither = sum(len(c.of_kind(NEITHER_OK)) for c in comparisons)
    if neither:
        out += [f"{neither} key(s) were not ok on either side, with the same status (not compared).", ""]
    return "\n".join(out)


CSV_COLUMNS = ("other", "base", *KEY_COLUMNS, "kind", "base_status", "other_status",
               "base_median_s", "other_median_s", "base_samples", "other_samples", "ratio",
               "ci_low", "ci_high", "p", "p_holm", "verdict", "note", "peak_mem_ratio",
               "compile_s_ratio", "base_max_err", "other_max_err", "test_accuracy_change", "flags")


def csv_rows(comparisons: list[Comparison]) -> list[dict]:
    rows = []
    for c in comparisons:
        for p in c.pairs:
            t, m = p.timing, p.metrics
            rows.append({"other": c.other.label, "base": c.base.label, **p.named, "kind": p.kind,
                         "base_status": p.base.status if p.base else None,
                         "other_status": p.other.status if p.other else None,
                         "base_median_s": p.base.median_s if p.base else None,
                         "other_median_s": p.other.median_s if p.other else None,
                         "base_samples": t.base_n if t else None, "other_samples": t.other_n if t else None,
                         "ratio": t.ratio if t else None, "ci_low": t.low if t else None,
                         "ci_high": t.high if t else None, "p": t.p if t else None,
                         "p_holm": t.p_holm if t else None, "verdict": t.verdict if t else None,
                         "note": t.note if t else None, "peak_mem_ratio": m.peak_mem_ratio,
                         "compile_s_ratio": m.compile_ratio, "base_max_err": m.max_err[0],
                         "other_max_err": m.max_err[1], "test_accuracy_change": m.accuracy_change,
                         "flags": "; ".join(p.flags) or None})
    return rows


def write_csv(comparisons: list[Comparison], path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in csv_rows(comparisons))
    return path


def write_document(comparisons: list[Comparison], out_dir) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_NAME
    path.write_text(render(comparisons, out_dir), encoding="utf-8")
    return path
