"""`DIR/report.md`: one run folder turned into a document — machine, the source article's
qualitative comparison table regenerated in numbers, key results, plots, accuracy, and
every row that was noisy, skipped, unavailable or failed, with the tracebacks of failures.

Everything here reads the run folder only (results.csv, meta.json, errors.jsonl through
bench.results): nothing is re-measured, and nothing of today's checkout (impls, a backend,
the source files) is read, so a report of an old run stays what that run measured. The
functions take a DataFrame, so a caller may pass several runs concatenated
(bench.results.load_runs): speed-ups then pair rows of the same run only. pandas and
matplotlib are imported inside functions so that importing this module is cheap.
"""
from __future__ import annotations

import itertools
import shlex
from pathlib import Path

from bench.record import DIAGNOSTIC_COLUMNS, row_key
from bench.report import recommend
from bench.report.comparison import comparison_table, flat
from bench.report.plots import FIGURES
from bench.report.selection import (PLAIN, SIZE_DIMS, STRUCTURE_DIMS, TIMING_PHASES, cells_in,
                                    impl_order, in_run_order, matching, ok_timing, representative,
                                    size_label, structure_label, structures_in)
from bench.report.tables import NONE, cell, fmt, fmt_bytes, isnan, markdown_table
from bench.report.targets import evaluate_targets


def _median_text(r) -> str:
    return (f"{r['median_s'] * 1e3:.3g} ± {r['iqr_s'] * 1e3:.2g}"
            + (" (noisy)" if r["noisy"] is True else ""))


def _at(frame, name: str, phase: str, cell: str):
    """The last row of (impl, phase, cell) at the representative size, or None."""
    hit = frame[(frame["impl"] == name) & (frame["phase"] == phase) & (frame["cell"] == cell)]
    return None if hit.empty else hit.iloc[-1]


def cell_results(frame, rep: dict):
    """impl x phase at the representative size, one column per cell: median ms ± IQR and
    % of peak — the cells side by side, as measured in this run."""
    import pandas as pd

    at = matching(frame[frame["phase"].isin(TIMING_PHASES)], rep) if rep else frame.iloc[:0]
    cells, records = cells_in(at), []
    for phase in TIMING_PHASES:
        for name in impl_order(frame):
            found = {c: _at(at, name, phase, c) for c in cells}
            if all(r is None or r["status"] in ("unavailable", "skipped") for r in found.values()):
                continue  # listed once, with the reason, in the section on such rows
            record = {"impl": name, "phase": phase}
            for c, r in found.items():
                record[f"{c}: ms ± IQR (% peak)"] = (
                    NONE if r is None else f"{r['status']} (see below)" if r["status"] != "ok"
                    else f"{_median_text(r)} ({fmt(r['pct_peak'], '.2g')} %)")
            records.append(record)
    return pd.DataFrame(records)


def key_results(frame, rep: dict):
    """impl x phase x cell at the representative size: every measure a reader quotes."""
    import pandas as pd

    at = matching(frame[frame["phase"].isin(TIMING_PHASES)], rep) if rep else frame.iloc[:0]
    records = []
    for phase in TIMING_PHASES:
        for name, cell in itertools.product(impl_order(frame), cells_in(at)):
            r = _at(at, name, phase, cell)
            if r is None or r["status"] == "unavailable":  # listed once, below
                continue
            if r["status"] != "ok":  # its reason is in the section on such rows
                records.append({"impl": name, "cell": cell, "phase": phase,
                                "median ms ± IQR": f"{r['status']} (see below)"})
                continue
            records.append({
                "impl": name, "cell": cell, "phase": phase,
                "median ms ± IQR": _median_text(r),
                "seq/s": fmt(r["seq_per_s"], ",.0f"), "GFLOP/s": fmt(r["gflops"], ".3g"),
                "% peak": fmt(r["pct_peak"], ".2g"),
                "memory measured / analytic": f"{fmt_bytes(r['peak_mem_bytes'])} / "
                                              f"{fmt_bytes(r['analytic_mem_bytes'])}",
                "first call s": fmt(r["compile_s"], ".2g"), "max err": fmt(r["max_err"], ".1e"),
                "diagnostics": ", ".join(f"{c} {r[c]:g}" for c in DIAGNOSTIC_COLUMNS
                                         if not isnan(r.get(c))) or NONE})
    table = pd.DataFrame(records)
    if "diagnostics" in table and (table["diagnostics"].isna() | (table["diagnostics"] == NONE)).all():
        table = table.drop(columns="diagnostics")  # only compilers and quantised models report any
    return table


def structure_results(frame, rep: dict):
    """impl x cell x phase at the representative size, one column per structure (layers,
    directions): median ms ± IQR, and for the others the ratio to the plain model's median."""
    import pandas as pd

    at = matching(ok_timing(frame), {k: v for k, v in rep.items() if k not in STRUCTURE_DIMS})
    structures, records = structures_in(at), []
    for phase, name, cell in itertools.product(TIMING_PHASES, impl_order(frame), cells_in(at)):
        mine = at[(at["impl"] == name) & (at["phase"] == phase) & (at["cell"] == cell)]
        found = {s: matching(mine, dict(zip(STRUCTURE_DIMS, s))) for s in structures}
        found = {s: r.iloc[-1] for s, r in found.items() if len(r)}
        if not found:
            continue
        record = {"impl": name, "cell": cell, "phase": phase}
        for s in structures:
            r, plain = found.get(s), found.get(PLAIN)
            ratio = (f" ({r['median_s'] / plain['median_s']:.2g}× 1-layer)"
                     if r is not None and plain is not None and s != PLAIN else "")
            record[f"{structure_label(*s)}: ms ± IQR"] = NONE if r is None else _median_text(r) + ratio
        records.append(record)
    return pd.DataFrame(records)


def _size_of(row) -> str:
    return size_label({k: row[k] for k in ("cell", *STRUCTURE_DIMS, *SIZE_DIMS, "dtype", "threads")})


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
    several = len(structures_in(rows)) > 1 if len(rows) else False
    return pd.DataFrame([{
        "impl": r["impl"], "cell": r["cell"],
        **({"structure": structure_label(r["num_layers"], r["bidirectional"])} if several else {}),
        "status": r["status"], "dataset": cell(r["dataset"]),
        "test accuracy": fmt(r["test_accuracy"] * 100 if not isnan(r["test_accuracy"]) else None,
                             ".1f", " %"),
        "time to 90 % val. accuracy": fmt(r["time_to_accuracy_s"], ".3g", " s"),
        "training time": fmt(r["median_s"], ".3g", " s"), "note": cell(r["reason"])}
        for _, r in rows.iterrows()])


# ---------------------------------------------------------------- the document

def header(frame, meta: dict) -> list[str]:
    """Machine, versions, command and date, then the calibration peaks."""
    import pandas as pd

    machine = meta.get("machine", {})
    blas, simd, gpus = _blas_text(machine), _simd_text(machine), _gpus_text(machine)
    versions = ", ".join(f"{k} {v}" for k, v in (machine.get("versions") or {}).items() if v)
    threads = ", ".join(str(t) for t in sorted(set(ok_timing(frame)["threads"]))) or NONE
    command = meta.get("command")
    lines = [f"- **CPU**: {machine.get('cpu_model', NONE)}, {machine.get('cores', NONE)} cores "
             f"({machine.get('cores_available', NONE)} available to the run)"
             f"{f'; SIMD: {simd}' if simd else ''}; {machine.get('platform', '')}",
             f"- **threads used**: {threads}", f"- **BLAS**: {blas}",
             f"- **GPUs**: {gpus}",
             f"- **versions**: Python {machine.get('python', '?')}, {versions or NONE}",
             f"- **git commit**: `{machine.get('git_commit', NONE)}`",
             f"- **date**: {meta.get('started', NONE)} → {meta.get('finished', NONE)}",
             f"- **command**: `{shlex.join(map(str, command)) if isinstance(command, list) else command}`",
             f"- **memory measured as**: {meta.get('memory_method', NONE)}"]
    over = meta.get("oversubscribed")
    if over:
        rows = frame[frame["reason"].fillna("").str.contains("oversubscribed:")]
        lines.append(f"- **OVERSUBSCRIBED**: {len(rows)} row(s) ran with threads "
                     f"{', '.join(map(str, over.get('threads', [])))} on "
                     f"{over.get('cores_available', NONE)} available cores (--allow-oversubscribe): "
                     "their times measure the scheduler as much as the code")
    for entry in meta.get("recovered") or []:
        lines.append(f"- **recovered on resume** ({entry.get('at', NONE)}): {cell(entry.get('note'))}")
    if meta.get("hosts"):
        return lines[:1] + [f"- **measured on**: {len(meta['hosts'])} host(s) of a Dask cluster "
                            f"(`{(meta.get('distributed') or {}).get('scheduler', NONE)}`), each "
                            "below with its own machine and calibration; the machine above ran "
                            "the client, which measured nothing"] + lines[1:] + ["", *hosts_section(frame, meta)]
    lines.append("")
    peaks = pd.DataFrame([{"dtype": c["dtype"], "threads": c["threads"],
                           **{f"{k} GEMM GFLOP/s": fmt(v, ".1f") for k, v in c["gemm_gflops"].items()}}
                          for c in meta.get("calibration", [])])
    lines += ["Calibration: the best GEMM rate measured on this machine per dtype and thread "
              "count (`peak`, the denominator of every % of peak):", "", markdown_table(peaks), ""]
    return lines


def _blas_text(machine: dict) -> str:
    return "; ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')}, "
                     f"{b.get('threading_layer')}, {b.get('num_threads')} threads)"
                     for b in machine.get("blas") or []) or NONE


def _simd_text(machine: dict) -> str:
    return " ".join((machine.get("cpu_features") or {}).get("simd") or [])


def _gpus_text(machine: dict) -> str:
    return ", ".join(map(str, machine.get("gpus") or [])) or "none"


def hosts_section(frame, meta: dict) -> list[str]:
    """A distributed run's hosts side by side: machine, calibration peaks, rows measured."""
    import pandas as pd

    table = []
    for name, info in meta["hosts"].items():
        machine, mine = info.get("machine") or {}, frame[frame["host"] == name]
        peaks = "; ".join(f"{c['dtype']}, {c['threads']} thread(s): {fmt(c['gemm_gflops']['peak'], '.1f')}"
                          for c in info.get("calibration", []))
        table.append({"host": name, "CPU": machine.get("cpu_model", NONE),
                      "cores (available)": f"{machine.get('cores', NONE)} ({machine.get('cores_available', NONE)})",
                      "SIMD": _simd_text(machine) or NONE, "BLAS": _blas_text(machine),
                      "GPUs": _gpus_text(machine), "peak GEMM GFLOP/s": peaks or NONE,
                      "rows (ok)": f"{len(mine)} ({int((mine['status'] == 'ok').sum())})"})
    return ["## Hosts", "",
            "Each host calibrated its own GEMM peak, the denominator of the % of peak of the rows "
            "it measured (`host` column). The implementations of one size ran as one task on one "
            "host, back to back, so every ratio in this report pairs two medians from one host; a "
            "curve along batch, length or hidden size may join sizes measured on different hosts.",
            "", markdown_table(pd.DataFrame(table)), ""]


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
  allocator caching); analytic memory is the BPTT activations by formula (bench/measure/analytic.py).
"""

def _frame(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame(rows)


def implementations_table(frame, meta: dict):
    """Every implementation registered when the run started (meta.json): what it is, and
    whether this run has it. A run from before meta.json recorded them lists its rows'."""
    recorded = (meta or {}).get("implementations") or {}

    def in_run(name):
        rows = frame[frame["impl"] == name]
        if (rows["status"] == "ok").any():
            return "ran"
        if len(rows):
            return f"{rows['status'].iloc[0]}: {rows['reason'].iloc[0]}"
        return "not in this run"

    names = list(recorded) or impl_order(frame)
    return _frame([{"impl": name, "what it is": (recorded.get(name) or {}).get("description")
                    or "not recorded in this run's meta.json", "in this run": in_run(name)}
                   for name in names])


def error_details(frame, errors: dict) -> list[str]:
    """The traceback behind each `error` row still in the run (errors.jsonl), as markdown."""
    failed = frame[frame["status"] == "error"]
    out = []
    for _, row in failed.iterrows():
        entry = errors.get(row_key(row))
        if entry:
            out += [f"**{row['impl']} {row['phase']}, {_size_of(row)}**: {cell(row['reason'])}", "",
                    "```", entry["traceback"].rstrip(), "```", ""]
    return out


def _key_results_section(frame, rep: dict) -> list[str]:
    """One cell: the full table. Several: the cells side by side, then the full table
    folded (a reader opens it; the document stays one screen per section)."""
    full = markdown_table(key_results(frame, rep))
    where = _hosts_at(frame, rep)
    if len(cells_in(ok_timing(frame))) < 2:
        return [*where, full, ""]
    return [*where, markdown_table(cell_results(frame, rep)), "", "<details><summary>Every measure at this "
            "size, per cell (throughput, GFLOP/s, memory, first call, error, diagnostics)</summary>",
            "", full, "", "</details>", ""]


def _hosts_at(frame, rep: dict) -> list[str]:
    """Which host(s) measured the representative size, in a run with several hosts."""
    hosts = frame["host"].dropna()
    hosts = hosts[hosts != ""]
    if hosts.nunique() < 2:
        return []
    at = ok_timing(frame)
    for column, value in rep.items():
        if column in at.columns:
            at = at[at[column] == value]
    names = sorted(set(at["host"].dropna()))
    return [f"Measured on host {', '.join(f'`{n}`' for n in names) or NONE} (see Hosts).", ""]


def _structures_section(frame, rep: dict) -> list[str]:
    """A run of several structures: what depth and a second direction cost, side by side."""
    if len(structures_in(ok_timing(frame))) < 2:
        return []
    fixed = {k: v for k, v in rep.items() if k not in STRUCTURE_DIMS}
    return ["## Structures: layers and directions", "",
            f"Median ms per call at {size_label(fixed)} for each structure the run has "
            "(in parentheses: the ratio to the 1-layer unidirectional model's median).", "",
            markdown_table(structure_results(frame, rep)), ""]


def recommendation_section(frame, footprint) -> list[str]:
    return ["## Which implementation for which workload", "",
            "The fastest (or smallest) implementation this run measured for each workload, its "
            f"margin over the runner-up (under ×{recommend.TIE_RATIO:g}: a tie, within the noise of "
            "one run), the rows it is based on, and the source article's suggestion beside it. "
            "Derived from this run's rows alone: right for the machine it ran on. *agrees?* "
            "judges what is measured (speed, size, start-up), not the article's other reasons "
            "(autograd's convenience for prototyping, NumPy's clarity for teaching).", "",
            markdown_table(_frame(recommend.recommendations(frame, footprint))), ""]


def _yes_no(flag) -> str:
    return NONE if isnan(flag) else "yes" if bool(flag) else "no"


def footprint_section(footprint) -> list[str]:
    if footprint is None or footprint.empty:
        return []
    rows = []
    for _, r in footprint.iterrows():
        rows.append({"impl": r["impl"], "status": r["status"], "installed": fmt_bytes(r["installed_bytes"]),
                     "model file": fmt_bytes(r["model_bytes"]),
                     "import": fmt(r["import_s"], ".3g", " s"),
                     "RSS after import": fmt_bytes(r["rss_after_import_bytes"]),
                     "start, empty caches": fmt(r["cold_start_s"], ".3g", " s"),
                     "start, warm caches": fmt(r["warm_start_s"], ".3g", " s"),
                     "on-disk cache": cell(r["disk_cache"]) if r["disk_cache"] else "none",
                     "compiler at run time": cell(r["needs_compiler"]) if r["needs_compiler"] else "none",
                     "offline": _yes_no(r["runs_offline"]), "distributions": cell(r["distributions"]),
                     "note": cell(r["reason"])})
    return ["## Footprint and start-up", "",
            "What each implementation costs to *start*: the installed size of the distributions "
            "it imports (importlib.metadata), the median import time and resident memory after "
            "importing it in a fresh process, and a fresh process's time to the logits of one "
            "B=1 sequence from canonical weights in an .npz (interpreter, imports, loading, one "
            "prediction: what a serverless call or a CLI pays), with empty and with warm on-disk "
            "caches. `offline`: that start also ran without a network. The import breakdown "
            "(`python -X importtime`) of each is in `importtime/`.", "",
            markdown_table(_frame(rows)), ""]


def render(frame, meta: dict, figures: list[Path], title: str, errors: dict | None = None,
           footprint=None) -> str:
    rep = representative(frame)
    out = [f"# rnnbench report: {title}", "", *header(frame, meta), "## How to read this", "",
           HOW_TO_READ, f"Representative size (key results, fixed axes of the plots): "
           f"**{size_label(rep) or NONE}**.", "",
           "## The article's comparison, in numbers", "",
           "Each dimension's first row is the source article's qualitative claim; the rows "
           "under it are what this run measured.", "",
           markdown_table(flat(comparison_table(frame, meta))), "",
           *recommendation_section(frame, footprint),
           f"## Key results at {size_label(rep) or NONE}", "", *_key_results_section(frame, rep),
           *_structures_section(frame, rep), *footprint_section(footprint),
           "## Implementations", "", markdown_table(implementations_table(frame, meta)), ""]
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
    details = error_details(frame, errors or {})
    if details:
        out += ["### Tracebacks of the failed rows (errors.jsonl)", "", *details]
    out += ["## Performance targets (the project's own)", "",
            "The targets rnnbench's developers set themselves, evaluated on this run's medians "
            "(bench/report/targets.py): ours, not advice for the reader.", "",
            markdown_table(_frame(evaluate_targets(frame))), ""]
    return "\n".join(out)


def write_report(run_dir) -> Path:
    """Write DIR/plots/*.png and DIR/report.md from DIR's files alone; return the report path."""
    from bench.report import plots
    from bench.results import load_run, read_errors, read_footprint, read_meta

    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    frame = in_run_order(load_run(run_dir), meta)
    figures = plots.make_plots(frame, run_dir / "plots")
    path = run_dir / "report.md"
    text = render(frame, meta, figures, run_dir.name, read_errors(run_dir), read_footprint(run_dir))
    path.write_text(text, encoding="utf-8")
    return path
