"""`rnnbench study NAME|all [--impl numpy] [--seeds 3] [--epochs E] [--out DIR] [--resume]`."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from bench.study.studies import STUDIES

DEFAULT_OUT = "runs/study"


def add_parser(sub) -> None:
    study = sub.add_parser(
        "study", help="measure one of the article's pieces of advice (or all): a small resumable "
                      "training sweep over seeds, with plots and a verdict in report.md")
    study.add_argument("name", choices=[*STUDIES, "all"],
                       help="; ".join(f"{s.name}: {s.title}" for s in STUDIES.values()))
    study.add_argument("--impl", default=None,
                       help="the implementation that trains (default: numba where installed, the "
                            "fastest CPU trainer at these sizes, measured ~3x numpy on lstm/gru; else numpy)")
    study.add_argument("--seeds", type=int, default=3,
                       help="seeds per setting (default 3: mean and std need several)")
    study.add_argument("--epochs", type=int, default=None,
                       help="epochs per setting instead of each study's default budget (fewer "
                            "steps, never fewer settings; the report states it)")
    study.add_argument("--out", default=DEFAULT_OUT, help=f"run folder (default {DEFAULT_OUT}); "
                                                          "each study writes OUT/NAME/")
    study.add_argument("--threads", type=int, default=1, help="BLAS/torch threads per training (default 1)")
    study.add_argument("--jobs", type=int, default=None,
                       help="trainings at once (default: one per core for the accuracy-only studies, "
                            "1 for optimisation and hidden, whose seconds are measured)")
    study.add_argument("--resume", action="store_true",
                       help="run only the setting x seed rows missing from an existing folder")
    study.add_argument("--quiet", action="store_true", help="no per-row progress lines")


def default_impl() -> str:
    """numba if it is installed (all implementations compute one function; this one trains
    these small models fastest: ~4 vs ~12 ms a T=250 rnn_tanh update at B=64, H=32 here,
    17 vs 56 ms for lstm), else the reference numpy."""
    import impls

    try:
        impls.get("numba")
    except impls.Unavailable:
        return "numpy"
    return "numba"


def cmd_study(args) -> int:
    from bench.study.report import write_index, write_report
    from bench.study.run import run_study

    if args.seeds < 1 or any(v is not None and v < 1 for v in (args.epochs, args.jobs)):
        raise ValueError("--seeds, --epochs and --jobs must be >= 1")
    names = list(STUDIES) if args.name == "all" else [args.name]
    impl = args.impl or default_impl()
    start = time.perf_counter()

    def progress(row, seconds):
        if not args.quiet:
            accuracy = row.get("test_accuracy", float("nan"))
            print(f"{row['study']:>14}  {row['label']:<44} seed {row['seed']}  {row['status']:<8} "
                  f"test accuracy {accuracy:.3f}  ({seconds:.1f} s)", file=sys.stderr, flush=True)

    for name in names:
        run_study(STUDIES[name], args.out, impl=impl, seeds=args.seeds, epochs=args.epochs,
                  resume=args.resume, threads=args.threads, jobs=args.jobs, progress=progress)
        print(f"{name}: {write_report(Path(args.out) / name)}")
    if args.name == "all":
        print(f"all studies: {write_index(Path(args.out))}")
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0
