"""`DIR/report.md`: one run folder turned into a document — machine, the source article's
qualitative comparison table regenerated in numbers, key results, plots, accuracy, and
every row that was noisy, skipped, unavailable or failed.

Everything here reads the results frame (bench.results.load_run) and meta.json only;
nothing is re-measured. The functions take a DataFrame, so a caller may pass several runs
concatenated (bench.results.load_runs): speed-ups then pair rows of the same run only.
pandas and matplotlib are imported inside functions so that importing this module is cheap.
"""
from __future__ import annotations

import ast
import io
import math
import shlex
import tokenize
from pathlib import Path

# Row selection (ok rows, the representative size, speed-ups) lives in bench.plots, which
# imports matplotlib only inside its functions: both modules show the same rows.
from bench.plots import (SIZE_DIMS, baseline_for, TIMING_PHASES, impl_order, matching, ok_timing,
                         representative, size_label, speedups)
from bench.targets import evaluate_targets

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
# Columns from backend.diagnostics() (compilers, quantised models), shown when present.
DIAGNOSTICS = ("graph_breaks", "recompiles", "quant_int_matmuls", "quant_float_matmuls",
               "model_bytes")
NONE = "—"


# ---------------------------------------------------------------- derived numbers

def geomean_speedups(frame, baseline: str | None = None):
    """impl x phase: geometric mean of the speed-ups over every shared ok case, and n."""
    ratios = speedups(frame, baseline)
    grouped = ratios.groupby(["impl", "phase"])["speedup"]
    return grouped.apply(lambda s: math.exp(sum(math.log(v) for v in s) / len(s))).to_frame(
        "geomean").join(grouped.size().rename("n")).reset_index()


def _docstring_spans(tree) -> list[tuple]:
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                spans.append(((first.lineno, first.col_offset),
                              (first.end_lineno, first.end_col_offset)))
    return spans


def count_code_lines(path) -> int:
    """Lines holding code: blank lines, comment-only lines and docstrings excluded, found
    with the tokenizer and the syntax tree (a '#' in a string or a docstring-like string
    assigned to a name still counts as code)."""
    source = Path(path).read_text(encoding="utf-8")
    spans = _docstring_spans(ast.parse(source))
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENCODING, tokenize.ENDMARKER}
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in skip:
            continue
        if tok.type == tokenize.STRING and any(s <= tok.start and tok.end <= e for s, e in spans):
            continue
        lines.update(range(tok.start[0], tok.end[0] + 1))
    return len(lines)


def impl_loc(name: str) -> dict[str, int | None] | None:
    """file -> code lines (None: file missing) for each of the registry's `sources` of
    `name`; None if the name is not registered here or lists no sources."""
    import impls

    if name not in impls.REGISTRY or not impls.entry(name).sources:
        return None
    folder = Path(impls.__file__).parent
    return {f: count_code_lines(folder / f) if (folder / f).exists() else None
            for f in impls.entry(name).sources}


# ---------------------------------------------------------------- formatting

def _isnan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt(value, spec: str = ".3g", suffix: str = "") -> str:
    return NONE if _isnan(value) else f"{value:{spec}}{suffix}"


def fmt_bytes(value) -> str:
    if _isnan(value):
        return NONE
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.0f} B"


def _cell(value) -> str:
    # a '|' would end the cell and a newline the row
    return NONE if _isnan(value) else str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame) -> str:
    """A DataFrame as a GitHub markdown table: pandas' to_markdown when `tabulate` is
    installed (it is optional in pandas), else the same layout written here."""
    if frame.empty:
        return "_(none)_"
    try:
        import tabulate  # noqa: F401
    except ImportError:
        cells = [[_cell(c) for c in frame.columns]] + [[_cell(v) for v in row]
                                                      for row in frame.itertuples(index=False)]
        widths = [max(3, *(len(r[i]) for r in cells)) for i in range(len(frame.columns))]
        lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
        lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
        return "\n".join(lines)
    return frame.map(_cell).to_markdown(index=False)


# ---------------------------------------------------------------- the comparison table

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
        for phase in phases:
            hit = at_rep[at_rep["phase"] == phase].set_index("impl")["speedup"]
            yield f"speed-up vs {base}, {phase}, at {size_label(rep)}", {
                n: "1 (baseline)" if n == base else fmt(hit.get(n), ".2f", "×") for n in names}
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
    cells = {}
    for n in names:
        loc = impl_loc(n) or {}
        missing = [f for f, c in loc.items() if c is None]
        cells[n] = (NONE if not loc else f"n/a: {', '.join(missing)} not in this checkout"
                    if missing else f"{sum(loc.values())} ("
                    + " + ".join(f"{f} {c}" for f, c in loc.items()) + ")")
    yield "lines of code (non-blank, non-comment, docstrings excluded)", cells


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


def _flat(table):
    """A (dimension, measure) index as columns, each dimension named on its first row only."""
    flat = table.reset_index()
    flat["dimension"] = flat["dimension"].where(~flat["dimension"].duplicated(), "")
    return flat


# ---------------------------------------------------------------- the other tables

def key_results(frame, rep: dict):
    """impl x phase at the representative size: the numbers a reader quotes."""
    import pandas as pd

    at = matching(frame[frame["phase"].isin(TIMING_PHASES)], rep) if rep else frame.iloc[:0]
    records = []
    for phase in TIMING_PHASES:
        for name in impl_order(frame):
            hit = at[(at["impl"] == name) & (at["phase"] == phase)]
            if hit.empty or hit.iloc[-1]["status"] == "unavailable":  # listed once, below
                continue
            r = hit.iloc[-1]
            if r["status"] != "ok":  # its reason is in the section on such rows
                records.append({"impl": name, "phase": phase, "median ms ± IQR": f"{r['status']} (see below)"})
                continue
            records.append({
                "impl": name, "phase": phase,
                "median ms ± IQR": f"{r['median_s'] * 1e3:.3g} ± {r['iqr_s'] * 1e3:.2g}"
                                   + (" (noisy)" if r["noisy"] is True else ""),
                "seq/s": fmt(r["seq_per_s"], ",.0f"), "GFLOP/s": fmt(r["gflops"], ".3g"),
                "% peak": fmt(r["pct_peak"], ".2g"),
                "memory measured / analytic": f"{fmt_bytes(r['peak_mem_bytes'])} / "
                                              f"{fmt_bytes(r['analytic_mem_bytes'])}",
                "first call s": fmt(r["compile_s"], ".2g"), "max err": fmt(r["max_err"], ".1e"),
                "diagnostics": ", ".join(f"{c} {r[c]:g}" for c in DIAGNOSTICS
                                         if not _isnan(r.get(c))) or NONE})
    table = pd.DataFrame(records)
    if "diagnostics" in table and (table["diagnostics"].isna() | (table["diagnostics"] == NONE)).all():
        table = table.drop(columns="diagnostics")  # only compilers and quantised models report any
    return table


def _size_of(row) -> str:
    return size_label({k: row[k] for k in (*SIZE_DIMS, "dtype", "threads")})


def noisy_rows(frame):
    import pandas as pd

    rows = ok_timing(frame)
    rows = rows[rows["noisy"].eq(True)]
    return pd.DataFrame([{"impl": r["impl"], "phase": r["phase"], "size": _size_of(r),
                          "median ms": f"{r['median_s'] * 1e3:.3g}",
                          "IQR / median": f"{100 * r['iqr_s'] / r['median_s']:.1f} %"}
                         for _, r in rows.iterrows()])


def _phase_rank(phase: str) -> int:
    order = (*TIMING_PHASES, "accuracy")
    return order.index(phase) if phase in order else len(order)


def problem_rows(frame):
    """Every row not ok, grouped by (impl, status, reason): one unavailable implementation
    is one line, not one per case."""
    import pandas as pd

    rows = frame[frame["status"] != "ok"]
    records = []
    for (name, status, reason), group in rows.groupby(
            ["impl", "status", rows["reason"].fillna("(no reason recorded)")], sort=False):
        sizes = sorted({_size_of(r) for _, r in group.iterrows()})
        records.append({"impl": name, "status": status, "rows": len(group),
                        "phases": ", ".join(sorted(set(group["phase"]), key=_phase_rank)),
                        "sizes": sizes[0] if len(sizes) == 1 else f"{len(sizes)} sizes",
                        "reason": reason})
    return pd.DataFrame(records)


def accuracy_table(frame):
    import pandas as pd

    rows = frame[frame["phase"] == "accuracy"]
    return pd.DataFrame([{
        "impl": r["impl"], "status": r["status"], "dataset": _cell(r["dataset"]),
        "test accuracy": fmt(r["test_accuracy"] * 100 if not _isnan(r["test_accuracy"]) else None,
                             ".1f", " %"),
        "time to 90 % val. accuracy": fmt(r["time_to_accuracy_s"], ".3g", " s"),
        "training time": fmt(r["median_s"], ".3g", " s"), "note": _cell(r["reason"])}
        for _, r in rows.iterrows()])


# ---------------------------------------------------------------- the document

def header(frame, meta: dict) -> list[str]:
    """Machine, versions, command and date, then the calibration peaks."""
    import pandas as pd

    machine = meta.get("machine", {})
    blas = "; ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')}, "
                     f"{b.get('threading_layer')}, {b.get('num_threads')} threads)"
                     for b in machine.get("blas") or []) or NONE
    versions = ", ".join(f"{k} {v}" for k, v in (machine.get("versions") or {}).items() if v)
    threads = ", ".join(str(t) for t in sorted(set(ok_timing(frame)["threads"]))) or NONE
    command = meta.get("command")
    lines = [f"- **CPU**: {machine.get('cpu_model', NONE)}, {machine.get('cores', NONE)} cores "
             f"({machine.get('cores_available', NONE)} available to the run); {machine.get('platform', '')}",
             f"- **threads used**: {threads}", f"- **BLAS**: {blas}",
             f"- **GPUs**: {', '.join(map(str, machine.get('gpus') or [])) or 'none'}",
             f"- **versions**: Python {machine.get('python', '?')}, {versions or NONE}",
             f"- **git commit**: `{machine.get('git_commit', NONE)}`",
             f"- **date**: {meta.get('started', NONE)} → {meta.get('finished', NONE)}",
             f"- **command**: `{shlex.join(map(str, command)) if isinstance(command, list) else command}`",
             f"- **memory measured as**: {meta.get('memory_method', NONE)}", ""]
    peaks = pd.DataFrame([{"dtype": c["dtype"], "threads": c["threads"],
                           **{f"{k} GEMM GFLOP/s": fmt(v, ".1f") for k, v in c["gemm_gflops"].items()}}
                          for c in meta.get("calibration", [])])
    lines += ["Calibration: the best GEMM rate measured on this machine per dtype and thread "
              "count (`peak`, the denominator of every % of peak):", "", markdown_table(peaks), ""]
    return lines


HOW_TO_READ = """\
- Every ratio pairs two medians measured **in this run, side by side** (implementations
  interleaved case by case), never numbers from different runs or machines.
- A time is the median of repeated samples, ± its interquartile range (IQR). A row is
  *noisy* when IQR / median > 10 %; plots draw noisy points hollow. On a shared VM other
  tenants steal cycles: treat differences under ~10-20 % as noise unless they repeat.
- % of peak divides achieved GFLOP/s (analytic FLOPs / median) by the best GEMM rate
  measured on this machine for the same dtype and threads (the best of OpenBLAS, MKL and
  ONNX Runtime's MLAS): small problems are far from it. Quantised rows (`onnx_int8`) count
  their int8 matmuls against that float peak, so they can pass 100 %.
- Measured memory is the RSS high-water increase of one call (page-granular, includes
  allocator caching); analytic memory is the BPTT activations by formula (bench/flops.py).
"""

FIGURES = (  # file-name prefix -> heading
    ("throughput_", "Throughput"), ("speedup_", "Speed-up over the torch baseline"),
    ("pct_peak", "Percent of peak"), ("memory", "Memory"), ("compile_", "First call (compile) time"),
    ("accuracy", "Accuracy vs throughput"))


def _frame(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame(rows)


def implementations_table(frame):
    """Every registered implementation: what it is, and whether this run has it."""
    import impls

    def in_run(name):
        rows = frame[frame["impl"] == name]
        if (rows["status"] == "ok").any():
            return "ran"
        if len(rows):
            return f"{rows['status'].iloc[0]}: {rows['reason'].iloc[0]}"
        return "not in this run"

    return _frame([{"impl": name, "what it is": impls.entry(name).description,
                    "in this run": in_run(name)} for name in impls.names()])


def render(frame, meta: dict, figures: list[Path], title: str) -> str:
    rep = representative(frame)
    out = [f"# rnnbench report: {title}", "", *header(frame, meta), "## How to read this", "",
           HOW_TO_READ, f"Representative size (key results, fixed axes of the plots): "
           f"**{size_label(rep) or NONE}**.", "",
           "## The article's comparison, in numbers", "",
           "Each dimension's first row is the source article's qualitative claim; the rows "
           "under it are what this run measured.", "",
           markdown_table(_flat(comparison_table(frame, meta))), "",
           f"## Key results at {size_label(rep) or NONE}", "", markdown_table(key_results(frame, rep)), "",
           "## Performance targets", "",
           "The targets the project set itself, evaluated on this run's medians (bench/targets.py).", "",
           markdown_table(_frame(evaluate_targets(frame))), "",
           "## Implementations", "", markdown_table(implementations_table(frame)), ""]
    out += ["## Plots", ""]
    for prefix, heading in FIGURES:
        mine = [f for f in figures if f.name.startswith(prefix)]
        if mine:
            out += [f"### {heading}", ""] + [f"![{f.stem}](plots/{f.name})\n" for f in mine]
    if not figures:
        out += ["_(no plot: the run lacks the data any plot needs)_", ""]
    out += ["## Accuracy", "", markdown_table(accuracy_table(frame)), "",
            "## Noisy rows (IQR / median > 10 %)", "", markdown_table(noisy_rows(frame)), "",
            "## Skipped, unavailable and failed rows", "", markdown_table(problem_rows(frame)), ""]
    return "\n".join(out)


def write_report(run_dir) -> Path:
    """Write DIR/plots/*.png and DIR/report.md from DIR's results; return the report path."""
    from bench import plots
    from bench.results import load_run, read_meta

    run_dir = Path(run_dir)
    frame = load_run(run_dir)
    figures = plots.make_plots(frame, run_dir / "plots")
    path = run_dir / "report.md"
    path.write_text(render(frame, read_meta(run_dir), figures, run_dir.name), encoding="utf-8")
    return path
