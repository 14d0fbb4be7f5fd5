"""`rnnbench compare BASE OTHER [OTHER ...] [--out DIR] [--threshold 1.10] [--alpha 0.05]
[--csv PATH] [--fail-on-regression]`.

Nothing heavy at import (scipy, pandas and matplotlib load when the command runs): bench.cli
imports this module to register the subcommand.
"""
from __future__ import annotations

import argparse

DEFAULT_OUT = "runs/compare"
EXIT_REGRESSION = 1


def _ratio(text: str) -> float:
    value = float(text)
    if not value > 1 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a ratio above 1 (e.g. 1.10 for 10 %), got {text}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def add_parser(sub) -> None:
    compare = sub.add_parser(
        "compare", help="BASE against each OTHER (run folders or pytest-benchmark JSON): "
                        "faster/slower per case with a test, memory, accuracy and correctness "
                        "changes, and whether the machines are comparable, in compare.md")
    compare.add_argument("base", metavar="BASE", help="run folder (RUN_DIR@HOST: one host of a "
                                                     "distributed run) or pytest-benchmark JSON to compare against")
    compare.add_argument("others", metavar="OTHER", nargs="+",
                         help="run folder(s) (or RUN_DIR@HOST) or pytest-benchmark JSON(s); each compared with BASE")
    compare.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                         help=f"where compare.md and plots/ go (default {DEFAULT_OUT})")
    compare.add_argument("--threshold", type=_ratio, default=1.10,
                         help="smallest ratio of medians called slower (its inverse: faster), as "
                              "asv's --factor (default 1.10)")
    compare.add_argument("--alpha", type=_probability, default=0.05,
                         help="family-wise significance level per OTHER, Holm–Bonferroni over its "
                              "timed pairs (default 0.05)")
    compare.add_argument("--csv", metavar="PATH", help="also write every pair to this CSV")
    compare.add_argument("--fail-on-regression", action="store_true",
                         help=f"exit {EXIT_REGRESSION} when any pair is significantly slower beyond "
                              "the threshold, listing them (for CI)")


def run_compare(paths, out, settings, csv_path=None):
    """-> (compare.md path, one Comparison per OTHER)."""
    from bench.compare.document import write_csv, write_document
    from bench.compare.pairing import compare
    from bench.compare.sources import load_sources

    base, *others = load_sources(paths)
    comparisons = [compare(base, other, settings) for other in others]
    path = write_document(comparisons, out)
    if csv_path:
        write_csv(comparisons, csv_path)
    return path, comparisons


def cmd_compare(args) -> int:
    from bench.compare.document import case_label, summary_lines
    from bench.compare.stats import Settings

    settings = Settings(threshold=args.threshold, alpha=args.alpha)
    path, comparisons = run_compare([args.base, *args.others], args.out, settings, args.csv)
    print(f"compare: {path}")
    if args.csv:
        print(f"pairs: {args.csv}")
    for comparison in comparisons:
        print(summary_lines(comparison).removeprefix("- ").replace("**", ""))
        if not comparison.found.comparable:
            print(f"  WARNING: {comparison.other.label} and {comparison.base.label} come from "
                  f"different machines or BLAS kernels: {'; '.join(comparison.found.machine + comparison.found.blas)}")
    slower = [(c, p) for c in comparisons for p in c.slower]
    if args.fail_on_regression and slower:
        print(f"FAILED: {len(slower)} pair(s) significantly slower than ×{settings.threshold:g}:")
        for comparison, pair in slower:
            t = pair.timing
            print(f"  {comparison.other.label}: {pair.named['impl']} {pair.named['phase']} "
                  f"{case_label(pair.named)}: ratio {t.ratio:.3f} [{t.low:.3f}, {t.high:.3f}], "
                  f"Holm p {t.p_holm:.2g}")
        return EXIT_REGRESSION
    return 0
