"""`rnnbench`: list, check, train, evaluate, sweep, report and profile the implementations.

Bad arguments and bad data end in one clear line on stderr and a non-zero exit, never
a traceback: every error the library raises on purpose is a ValueError, Unavailable or
an OSError about a file.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import json
import os
import sys
from pathlib import Path

import numpy as np

import impls
from bench.spec import CELLS, DTYPES, PHASES, PRESETS
from bench.compare import command as compare_command
from bench.study import command as study_command

EXIT_FAILED_CHECK = 1
EXIT_USAGE = 2

# (batch_size, seq_len, input_size, hidden_size, num_classes): small, long, and typical
CHECK_SHAPES = [(1, 1, 1, 4, 2), (3, 200, 4, 16, 5), (32, 16, 32, 64, 10)]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or a positive number, got {text}")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a rate in [0, 1), got {text}")
    return value


def cmd_list(args) -> int:
    from bench.report.tables import format_table

    yes_no = lambda flag: "yes" if flag else "no"  # noqa: E731
    rows = []
    for name in impls.names():
        try:
            backend = impls.get(name)  # once: building some backends has side effects
        except (impls.Unavailable, ValueError) as exc:
            rows.append([name, "no", "-", "-", "-", "-", "-", "-", f"unavailable: {exc}"])
            continue
        rows.append([name, "yes", backend.device, ",".join(d.name for d in backend.dtypes),
                     ",".join(backend.cells), yes_no(backend.supports_backward),
                     yes_no(backend.structured), yes_no(backend.supports_dropout),
                     impls.entry(name).description])
    # structures: runs stacked (--num-layers > 1) and bidirectional models
    print(format_table(["impl", "available", "device", "dtypes", "cells", "backward", "structures",
                        "dropout", "notes"], rows))
    return 0


def cmd_check(args) -> int:
    from bench.oracle import seeded_inputs, compare

    try:
        import torch  # noqa: F401  (the oracle is PyTorch autograd in float64)
    except ImportError as exc:
        raise impls.Unavailable("the float64 oracle needs torch: pip install 'rnnbench[cpu]'") from exc
    from bench.report.selection import structure_label
    from bench.report.tables import format_table

    names = args.impl.split(",") if args.impl else impls.names()
    cells = args.cell.split(",") if args.cell else list(impls.CELLS)
    unknown = set(cells) - set(impls.CELLS)
    if unknown:
        raise ValueError(f"unknown cells {sorted(unknown)}; cells: {', '.join(impls.CELLS)}")
    structures = list(itertools.product(args.num_layers or [1], args.bidirectional or [False]))
    rows, failed = [], 0
    for name in names:
        try:
            backend = impls.get(name)
        except impls.Unavailable as exc:
            rows.append([name, "-", "-", "-", "-", "-", "-", f"skipped: unavailable: {exc}"])
            continue
        for cell, (layers, bidirectional) in itertools.product(cells, structures):
            model = [name, cell, structure_label(layers, bidirectional)]
            reason = backend.cell_reason(cell) or backend.structure_reason(layers, bidirectional)
            if reason:
                rows.append([*model, "-", "-", "-", "-", f"skipped: {reason}"])
                continue
            for dtype in backend.dtypes:
                bound = impls.tolerance(name, dtype)
                worst = max(max(compare(backend, *seeded_inputs(
                    *shape, seed=0, dtype=dtype, cell=cell, num_layers=layers,
                    bidirectional=bidirectional)).values()) for shape in CHECK_SHAPES)
                failed += not worst <= bound
                rows.append([*model, dtype.name, "logits+grads" if backend.supports_backward else "logits",
                             f"{worst:.2e}", f"{bound:.0e}", "ok" if worst <= bound else "FAILED"])
    print(format_table(["impl", "cell", "structure", "dtype", "compared", "max rel error", "tolerance",
                        "result"], rows))
    print(f"shapes (batch, seq_len, input, hidden, classes): {CHECK_SHAPES}; oracle: torch autograd, float64")
    print("all checks passed" if not failed else f"{failed} check(s) FAILED")
    return EXIT_FAILED_CHECK if failed else 0


def _load_data(args):
    from bench.train.data import load_dataset

    dataset = load_dataset(args.dataset, seed=args.seed)
    return dataset.astype(np.dtype(args.dtype))


def cmd_train(args) -> int:
    from tqdm import tqdm

    from bench.train.loop import TrainConfig, train

    backend = impls.get(args.impl)
    if not backend.supports_backward:
        raise ValueError(f"{args.impl} is forward-only and cannot train; train with another "
                         f"backend, then: rnnbench evaluate --impl {args.impl} --params P.npz")
    # a flag not given leaves TrainConfig's default
    config = TrainConfig(**{k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k) is not None})
    reason = backend.structure_reason(config.num_layers, config.bidirectional)
    if reason:
        raise ValueError(f"{reason}; `rnnbench list` shows which implementations run structured models")
    dataset = _load_data(args)
    print(f"training {args.impl} on {dataset.name}: {len(dataset.y_train)} train / "
          f"{len(dataset.y_val)} val / {len(dataset.y_test)} test, seq_len {dataset.seq_len}, "
          f"input_size {dataset.input_size}, {dataset.num_classes} classes, {config}")
    bar = tqdm(total=config.epochs, unit="epoch", file=sys.stderr, disable=args.quiet)

    def on_epoch(record):
        bar.update(1)
        bar.write(f"epoch {record['epoch']:>3}  train loss {record['train_loss']:.4f}  "
                  f"val loss {record['val_loss']:.4f}  val accuracy {record['val_accuracy']:.4f}")

    result = train(backend, dataset, config, progress=on_epoch)
    bar.close()
    if result.stopped_early:
        print(f"early stop: best validation loss at epoch {result.best_epoch}; restored those weights")
    if args.save:
        np.savez(args.save, **result.params)
        # beside the weights, what `evaluate` needs to score on the same test split
        sidecar = {"dataset": args.dataset, "seed": args.seed, "impl": args.impl,
                   "dtype": args.dtype, "test_accuracy": result.test_accuracy,
                   "config": dataclasses.asdict(config)}
        _sidecar(args.save).write_text(json.dumps(sidecar, indent=2) + "\n")
        print(f"saved canonical parameters to {args.save} (and how they were trained to {_sidecar(args.save)})")
    print(f"test accuracy {result.test_accuracy:.4f}")
    return 0


def _sidecar(params_path) -> Path:
    path = Path(params_path)
    return path.with_name(path.name + ".json")


def _check_same_split(args) -> None:
    """The split depends on --dataset and --seed: evaluating weights on another seed's
    test split would score them partly on their own training data."""
    path = _sidecar(args.params)
    if not path.exists():
        return
    trained = json.loads(path.read_text())
    if (trained.get("dataset"), trained.get("seed")) != (args.dataset, args.seed):
        raise ValueError(f"{args.params} was trained on {trained.get('dataset')} with --seed "
                         f"{trained.get('seed')}; evaluate with the same --dataset and --seed "
                         "(the train/test split depends on them)")


def load_params(path: str) -> dict:
    """Canonical parameters from an .npz written by `train --save` (never unpickles):
    exactly the canonical names and shapes, finite values."""
    from bench.train.data import read_plain_npz

    params = read_plain_npz(path)
    try:
        impls.check_params(params)
        impls.check_finite(params)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    return params


def cmd_evaluate(args) -> int:
    from bench.report.selection import structure_label
    from bench.train.loop import evaluate

    backend = impls.get(args.impl)
    params = load_params(args.params)
    cell = impls.cell_of(params)
    if args.cell and args.cell != cell:
        raise ValueError(f"{args.params} holds {cell} weights, not {args.cell}")
    _check_same_split(args)
    dataset = _load_data(args)
    input_size, _, num_classes = impls.infer_sizes(params)
    if (input_size, num_classes) != (dataset.input_size, dataset.num_classes):
        raise ValueError(f"{args.params} was trained for input_size {input_size} and {num_classes} "
                         f"classes; {dataset.name} has input_size {dataset.input_size} and "
                         f"{dataset.num_classes} classes")
    structure = impls.structure_of(params)  # read off the names: W_hh_l1, W_hh_reverse
    reason = backend.structure_reason(*structure)
    if reason:
        raise ValueError(f"{args.params} holds a {structure_label(*structure)} model: {reason}")
    params = {k: v.astype(args.dtype) for k, v in params.items()}
    loss, accuracy = evaluate(backend, params, dataset.x_test, dataset.y_test, dataset.lengths_test)
    model = cell if impls.is_plain(params) else f"{cell}, {structure_label(*structure)}"
    print(f"{args.impl} ({model}) on {dataset.name} test set ({len(dataset.y_test)} sequences): loss {loss:.4f}")
    print(f"test accuracy {accuracy:.4f}")
    return 0


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _bool_list(text: str) -> list[bool]:
    values = [v.strip().lower() for v in text.split(",") if v.strip()]
    if not values or not set(values) <= set(BOOL_TEXT):
        raise argparse.ArgumentTypeError(f"expected comma-separated false/true, got {text!r}")
    return [BOOL_TEXT[v] for v in values]


def _str_list(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return values


def cmd_sweep(args) -> int:
    from bench.run.sweep import run_sweep
    from bench.spec import build_grid, load_config

    config = load_config(args.config) if args.config else {}
    preset = args.preset or config.pop("preset", None)
    overrides = {k: v for k, v in config.items() if k != "preset"}
    cli = {"impls": args.impl, "cell": args.cell, "phases": args.phase, "batch_size": args.batch_size,
           "hidden_size": args.hidden_size, "seq_len": args.seq_len, "input_size": args.input_size,
           "dtype": args.dtype, "threads": args.threads, "num_layers": args.num_layers,
           "bidirectional": args.bidirectional}
    overrides.update({k: v for k, v in cli.items() if v is not None})
    if "cell" in overrides or "impls" in overrides:  # asked for by name: compiled loops run too
        overrides.setdefault("compile_heavy_cells", overrides.get("cell") or list(CELLS))
    if args.no_accuracy:
        overrides["accuracy"] = False
    if args.footprint is not None:
        overrides["footprint"] = args.footprint
    grid = build_grid(preset, **overrides)  # checks every key's type first
    unknown = set(grid.impls) - set(impls.names())
    if unknown:
        raise ValueError(f"unknown implementations {sorted(unknown)}; registered: {', '.join(impls.names())}")
    if args.out is None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
        args.out = Path("runs") / f"{preset or 'quick'}-{stamp}"
    cluster = None
    if args.scheduler or args.scheduler_file:
        from bench.run.distributed import connect, wait_for_workers

        cluster = connect(args.scheduler, args.scheduler_file, args.wait_workers_s)
        workers = wait_for_workers(cluster, args.wait_workers_s)
        if grid.footprint:  # fresh-process starts belong to one host (bench.run.distributed)
            print("rnnbench: a distributed sweep measures no footprint: run `rnnbench footprint "
                  "RUN_DIR` on a host", file=sys.stderr)
            grid = dataclasses.replace(grid, footprint=False)
        if not args.quiet:
            print(f"rnnbench: {workers} worker(s) at {cluster.scheduler.address}", file=sys.stderr)
    try:
        out = run_sweep(grid, args.out, resume=args.resume, force=args.force, progress=not args.quiet,
                        command=["rnnbench", *sys.argv[1:]], max_case_s=args.max_case_s,
                        allow_oversubscribe=args.allow_oversubscribe, cluster=cluster)
    finally:
        if cluster is not None:
            cluster.close()
    print(f"results: {out / 'results.csv'}")
    if args.report:
        from bench.report.document import write_report
        print(f"report: {write_report(out)}")
    return 0


def cmd_footprint(args) -> int:
    from bench.measure.footprint import FootprintConfig, format_rows, run_footprint
    from bench.results import read_footprint_rows

    names = args.impl or impls.names()
    unknown = set(names) - set(impls.names())
    if unknown:
        raise ValueError(f"unknown implementations {sorted(unknown)}; registered: {', '.join(impls.names())}")
    say = None if args.quiet else (lambda message: print(f"rnnbench: {message}", file=sys.stderr))
    run_footprint(args.run_dir, names, FootprintConfig(repeats=args.repeats),
                  command=["rnnbench", *sys.argv[1:]], again=args.again, notify=say)
    print(format_rows(read_footprint_rows(args.run_dir)))
    print(f"footprint: {Path(args.run_dir) / 'footprint.csv'}")
    return 0


def cmd_report(args) -> int:
    from bench.report.document import write_report

    print(f"report: {write_report(args.run_dir)}")
    return 0


def cmd_profile(args) -> int:
    from bench.profile import profile

    result = profile(args.impl, batch_size=args.batch_size, seq_len=args.seq_len,
                     input_size=args.input_size, hidden_size=args.hidden_size, dtype=args.dtype,
                     threads=args.threads, out_dir=args.out, cell=args.cell,
                     num_layers=args.num_layers, bidirectional=args.bidirectional,
                     allow_oversubscribe=args.allow_oversubscribe)
    print(result.summary)
    return 0


BOOL_TEXT = {"false": False, "true": True}
# `train` flags -> the TrainConfig field of the same name; a flag not given keeps its default
TRAIN_FLAGS = ("cell", "hidden_size", "num_layers", "bidirectional", "dropout", "epochs", "lr",
               "optimizer", "batch_size", "weight_decay", "clip_norm", "patience", "schedule",
               "warmup", "seed", "dtype")


def structure_args(parser, what: str) -> None:
    """--num-layers and --bidirectional as dimensions (sweep, check): lists like the others;
    a bare --bidirectional is `true`."""
    parser.add_argument("--num-layers", type=_int_list, help=f"comma-separated integers: stacked "
                                                             f"layers; {what}")
    parser.add_argument("--bidirectional", type=_bool_list, nargs="?", const=[True], metavar="false,true",
                        help="comma-separated false/true: one or both directions (bare: true)")


def train_args(parser) -> None:
    """The model and training flags of `train`, each a TrainConfig field: defaults are
    TrainConfig's, quoted in the help, never restated here."""
    from bench.train.loop import TrainConfig
    from bench.train.optim import SCHEDULES

    default = lambda name: f"(default {getattr(TrainConfig, name)})"  # noqa: E731
    parser.add_argument("--cell", choices=list(impls.CELLS),
                        help=f"rnn_tanh (the article's), lstm or gru {default('cell')}")
    parser.add_argument("--hidden-size", type=_positive_int, help=default("hidden_size"))
    parser.add_argument("--num-layers", type=_positive_int, help=f"stacked layers {default('num_layers')}")
    parser.add_argument("--bidirectional", action="store_true", default=None,
                        help="a second direction reading each sequence backwards (default: one direction)")
    parser.add_argument("--dropout", type=_rate, help=f"rate on each stacked layer's output and the "
                                                      f"head's input, in training {default('dropout')}")
    parser.add_argument("--epochs", type=_positive_int, help=f"an upper bound: early stopping may end sooner {default('epochs')}")
    parser.add_argument("--lr", type=_positive_float, help=default("lr"))
    parser.add_argument("--optimizer", choices=["adam", "sgd"], help=default("optimizer"))
    parser.add_argument("--batch-size", type=_positive_int, help=default("batch_size"))
    parser.add_argument("--weight-decay", type=_non_negative_float,
                        help=f"L2 on the weight matrices {default('weight_decay')}")
    parser.add_argument("--clip-norm", type=_non_negative_float,
                        help=f"global gradient-norm bound, 0: none {default('clip_norm')}")
    parser.add_argument("--patience", type=_positive_int,
                        help=f"early stop after this many epochs without a better val loss {default('patience')}")
    parser.add_argument("--schedule", choices=SCHEDULES, help=f"learning-rate schedule {default('schedule')}")
    parser.add_argument("--warmup", type=_non_negative_int, help=f"linear warm-up epochs {default('warmup')}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="implementations: available or why not, device, dtypes, backward, "
                                "structures (stacked/bidirectional), dropout")
    check = sub.add_parser("check", help="every available backend against the float64 oracle")
    check.add_argument("--impl", help="comma-separated names (default: all)")
    check.add_argument("--cell", help="comma-separated cells (default: rnn_tanh,lstm,gru)")
    structure_args(check, "checks each combination with --bidirectional (default: 1 and false, "
                          "the plain model)")

    def data_args(p):
        p.add_argument("--impl", required=True, choices=impls.names())
        p.add_argument("--dataset", default="digits",
                       help="digits | digits-pixels | synthetic | PATH.npz (default digits)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--dtype", choices=DTYPES, default=DTYPES[0])

    train = sub.add_parser("train", help="train one implementation, print test accuracy")
    data_args(train)
    train_args(train)
    train.add_argument("--save", metavar="PARAMS.npz", help="write the canonical parameters")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate = sub.add_parser("evaluate", help="test accuracy of saved weights")
    data_args(evaluate)
    evaluate.add_argument("--params", required=True, metavar="PARAMS.npz")
    evaluate.add_argument("--cell", choices=list(impls.CELLS),
                          help="the cell the weights must be (default: read off the weights)")

    sweep = sub.add_parser("sweep", help="time, memory, FLOPs and accuracy over a grid of sizes")
    sweep.add_argument("--preset", help=f"{' | '.join(PRESETS)} (default quick; gpu is what "
                                        "bench/gpu_check.sh runs)")
    sweep.add_argument("--config", metavar="FILE.toml", help="grid keys as in bench.spec.Grid")
    sweep.add_argument("--impl", type=_str_list, help="comma-separated (default: all registered)")
    sweep.add_argument("--cell", type=_str_list, help=f"comma-separated: {','.join(impls.CELLS)} "
                                                      "(default: the preset's; quick runs all three)")
    sweep.add_argument("--phase", type=_str_list, help=",".join(PHASES))
    for name in ("batch-size", "hidden-size", "seq-len", "input-size", "threads"):
        sweep.add_argument(f"--{name}", type=_int_list, help="comma-separated integers")
    sweep.add_argument("--dtype", type=_str_list, help=",".join(DTYPES))
    structure_args(sweep, "runs each combination with --bidirectional (default: the preset's, "
                          "1 and false, the plain model)")
    sweep.add_argument("--out", metavar="DIR",
                       help="run folder (default runs/<preset>-<UTC time>: never an existing one)")
    sweep.add_argument("--resume", action="store_true", help="run only what DIR is missing")
    sweep.add_argument("--force", action="store_true", help="overwrite the run in DIR")
    sweep.add_argument("--max-case-s", type=_positive_float, default=120.0,
                       help="skip (before running) cases estimated to take longer (default 120)")
    sweep.add_argument("--no-accuracy", action="store_true", help="no training/accuracy rows")
    sweep.add_argument("--footprint", action=argparse.BooleanOptionalAction, default=None,
                       help="after the timed cases, footprint and cold start per implementation "
                            "(footprint.csv; default: the preset's, on for quick and default)")
    sweep.add_argument("--allow-oversubscribe", action="store_true",
                       help="run thread counts above the cores available (rows say so)")
    sweep.add_argument("--scheduler", metavar="ADDRESS",
                       help="run the cases on a Dask cluster (tcp://HOST:8786; one worker per host, "
                            "started with --nthreads 1 --resources bench=1; needs .[dist])")
    sweep.add_argument("--scheduler-file", metavar="FILE",
                       help="as --scheduler, the address read from a scheduler file")
    sweep.add_argument("--wait-workers-s", type=_positive_float, default=60.0,
                       help="with --scheduler: wait this long for the scheduler and a first worker (default 60)")
    sweep.add_argument("--report", action="store_true", help="write DIR/report.md afterwards")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")

    footprint = sub.add_parser("footprint", help="installed size, import time, memory and cold/warm "
                                                  "start per implementation, in fresh processes")
    footprint.add_argument("run_dir", metavar="DIR", help="a run folder (existing or new): "
                                                          "writes DIR/footprint.csv")
    footprint.add_argument("--impl", type=_str_list, help="comma-separated (default: all registered)")
    footprint.add_argument("--repeats", type=_positive_int, default=5,
                           help="fresh processes per median, after one warm-up (default 5)")
    footprint.add_argument("--again", action="store_true",
                           help="measure implementations that already have an ok row again")
    footprint.add_argument("--quiet", action="store_true", help="no line per implementation")

    report = sub.add_parser("report", help="plots and report.md from a run folder")
    report.add_argument("run_dir", metavar="DIR")

    prof = sub.add_parser("profile", help="where the time of one forward and one train step goes")
    prof.add_argument("--impl", required=True, choices=impls.names())
    prof.add_argument("--cell", choices=list(impls.CELLS), default="rnn_tanh")
    prof.add_argument("--num-layers", type=_positive_int, default=1, help="stacked layers (default 1)")
    prof.add_argument("--bidirectional", action="store_true",
                      help="a second direction (the per-part breakdown is the plain model's only)")
    prof.add_argument("--batch-size", type=_positive_int, default=32)
    prof.add_argument("--seq-len", type=_positive_int, default=64)
    prof.add_argument("--input-size", type=_positive_int, default=32)
    prof.add_argument("--hidden-size", type=_positive_int, default=128)
    prof.add_argument("--dtype", choices=DTYPES, default=DTYPES[0])
    prof.add_argument("--threads", type=_positive_int, default=1)
    prof.add_argument("--allow-oversubscribe", action="store_true",
                      help="allow more threads than cores available")
    prof.add_argument("--out", default="profiles", metavar="DIR",
                      help="where the pstats / Chrome trace files go (default profiles/)")
    study_command.add_parser(sub)
    compare_command.add_parser(sub)
    return parser


COMMANDS = {"list": cmd_list, "check": cmd_check, "train": cmd_train, "evaluate": cmd_evaluate,
            "sweep": cmd_sweep, "footprint": cmd_footprint, "report": cmd_report, "profile": cmd_profile,
            "study": study_command.cmd_study, "compare": compare_command.cmd_compare}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe is met here, not in the interpreter's exit
        return status
    except BrokenPipeError:  # `rnnbench list | head`: the reader left, nothing went wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        hint = (" (finished rows are saved: continue with --resume)"
                if args.command in ("sweep", "study") else "")
        print(f"rnnbench: interrupted{hint}", file=sys.stderr)
        return 130
    except (ValueError, impls.Unavailable, OSError, FloatingPointError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"rnnbench: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
