"""The source article's qualitative comparison table, regenerated in numbers: for each of
its four dimensions, the article's claim, then what the run measured, one column per
implementation. Reads the results frame and the run's meta.json only."""
from __future__ import annotations

from bench.report.selection import (TIMING_PHASES, baseline_for, cells_in, geomean_speedups,
                                    impl_order, matching, ok_timing, representative, size_label,
                                    speedups)
from bench.report.tables import NONE, fmt

DIMENSIONS = ("compute efficiency", "gradients", "devices", "development effort")
# The article's table, verbatim; a column per library it compared.
ARTICLE = {
    "compute efficiency": {"PyTorch": "automatic parallelism", "NumPy": "needs hand optimisation"},
    "gradients": {"PyTorch": "autograd", "NumPy": "hand-derived"},
    "devices": {"PyTorch": "automatic GPU acceleration", "NumPy": "manual memory management"},
    "development effort": {"PyTorch": "modular components", "NumPy": "implement every detail"},
}
# Which article column an implementation inherits its claim from: torch variants are
# PyTorch; numba and cupy run the same hand-written math as numpy (ONNX is neither).
ARTICLE_FAMILY = {"numpy": "NumPy", "torch": "PyTorch", "torchscript": "PyTorch",
                  "torch_compile": "PyTorch", "numba": "NumPy", "cupy": "NumPy"}


def _claim(dimension: str, impl: str) -> str:
    family = ARTICLE_FAMILY.get(impl)
    if family is None:
        return NONE + " (not in the article)"
    claim = ARTICLE[dimension][family]
    return claim if impl in ("numpy", "torch") else f"{claim} (the article's {family} column)"


def _efficiency(frame, names, rep, meta):
    phases = [p for p in TIMING_PHASES if p in set(ok_timing(frame)["phase"])]
    base = baseline_for(frame)
    if base not in set(ok_timing(frame)["impl"]):
        yield f"speed-up vs {base}", {n: f"{base} has no ok row in this run" for n in names}
    elif phases:
        means = geomean_speedups(frame, base)
        at_rep = speedups(matching(frame, rep), base)
        for phase in phases:
            hit = means[means["phase"] == phase].set_index("impl")
            yield f"speed-up vs {base}, {phase}: geo-mean over shared ok cases", {
                n: "1 (baseline)" if n == base else
                f"{hit.at[n, 'geomean']:.2f}× (n={hit.at[n, 'n']})" if n in hit.index else NONE
                for n in names}
        cells = cells_in(ok_timing(frame))
        for phase in phases:  # one row per phase, every cell in it: not three tables
            hit = at_rep[at_rep["phase"] == phase].drop_duplicates(["impl", "cell"], keep="last") \
                .set_index(["impl", "cell"])["speedup"]
            label = f"speed-up vs {base}, {phase}, at {size_label(rep)}" + (
                f" ({' · '.join(cells)})" if len(cells) > 1 else "")
            yield label, {n: "1 (baseline)" if n == base else " · ".join(
                fmt(hit.get((n, c)), ".2f", "×") for c in cells) for n in names}
    rows = ok_timing(frame)
    cells = {}
    for n in names:
        pct = rows.loc[rows["impl"] == n, "pct_peak"].dropna()
        cells[n] = f"{pct.max():.3g} % / {pct.median():.3g} %" if len(pct) else NONE
    yield "% of measured GEMM peak (same dtype and threads): best / median", cells


def _backward_status(frame, name) -> str:
    rows = frame[(frame["impl"] == name) & frame["phase"].isin(("backward", "train_step"))]
    if (rows["status"] == "ok").any():
        return "yes"
    if (rows["status"] == "skipped").any():  # e.g. "<impl> is forward-only"
        return f"no ({rows.loc[rows['status'] == 'skipped', 'reason'].iloc[0]})"
    if (rows["status"] == "error").any():
        return "failed (see the failed rows)"
    if (rows["status"] == "unavailable").any():
        return "unknown (not available here)"
    return "not measured in this run"


def _gradients(frame, names, rep, meta):
    yield "backward available (an ok backward or train_step row)", {
        n: _backward_status(frame, n) for n in names}
    rows = ok_timing(frame)
    grads = rows[rows["phase"].isin(("backward", "train_step"))]
    yield "max relative gradient error vs float64 oracle", {
        n: fmt(grads.loc[grads["impl"] == n, "max_err"].max(), ".1e") for n in names}
    logits = rows[rows["phase"] == "forward"]
    yield "max relative logits error vs float64 oracle", {
        n: fmt(logits.loc[logits["impl"] == n, "max_err"].max(), ".1e") for n in names}


def _devices(frame, names, rep, meta):
    gpus = (meta or {}).get("machine", {}).get("gpus") or []
    where = f"this machine's GPUs: {', '.join(map(str, gpus)) if gpus else 'none'}"
    ok = frame[frame["status"] == "ok"]
    yield f"devices it ran on ({where})", {
        n: ", ".join(sorted(set(ok.loc[ok["impl"] == n, "device"].dropna()))) or NONE
        for n in names}
    cells = {}
    for n in names:
        gone = frame[(frame["impl"] == n) & (frame["status"] == "unavailable")]
        cells[n] = f"unavailable: {gone['reason'].iloc[0]}" if len(gone) else "available"
    yield "available here", cells


def _effort(frame, names, rep, meta):
    """Code lines per source file as the sweep counted them when it started (meta.json):
    an old run shows the code it measured, whatever the checkout holds now."""
    recorded = (meta or {}).get("implementations") or {}
    cells = {}
    for n in names:
        loc = (recorded.get(n) or {}).get("code_lines") or {}
        missing = [f for f, c in loc.items() if c is None]
        cells[n] = (NONE if not loc else f"n/a: {', '.join(missing)} missing when the run started"
                    if missing else f"{sum(loc.values())} ("
                    + " + ".join(f"{f} {c}" for f, c in loc.items()) + ")")
    yield "lines of code when the run started (non-blank, non-comment, docstrings excluded)", cells


MEASURES = {"compute efficiency": _efficiency, "gradients": _gradients, "devices": _devices,
            "development effort": _effort}


def comparison_table(frame, meta: dict | None = None):
    """The article's table in numbers: rows (dimension, measure) — each dimension's first
    row the article's claim, the rest what this run measured — columns one per impl."""
    import pandas as pd

    names, rep = impl_order(frame), representative(frame)
    rows = {}
    for dimension in DIMENSIONS:
        rows[(dimension, "article's claim")] = {n: _claim(dimension, n) for n in names}
        for measure, cells in MEASURES[dimension](frame, names, rep, meta):
            rows[(dimension, measure)] = cells
    table = pd.DataFrame([rows[k] for k in rows], columns=names)
    table.index = pd.MultiIndex.from_tuples(list(rows), names=["dimension", "measure"])
    return table


def flat(table):
    """A (dimension, measure) index as columns, each dimension named on its first row only."""
    flat = table.reset_index()
    flat["dimension"] = flat["dimension"].where(~flat["dimension"].duplicated(), "")
    return flat
