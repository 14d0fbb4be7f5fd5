"""`tox -e compare`: `rnnbench compare` over the run folders the tox bench envs wrote.

tox does no globbing in commands, so this finds them: every folder directly under RUNS
(runs/tox/) that holds a results.csv, except the --out folder itself. A folder copied there
from another machine counts too.

Order: the base first, then the rest by name. The base is --base when given (an error if that
folder is missing); otherwise py311-cpu-oldest-bench, the first env of tox's `bench` label:
the oldest supported stack, so every other folder reads as "what newer releases, another
Python or another machine change". Without that folder the base is the first by name, and this
says so.

Fewer than two folders: nothing to compare; it says which it found and how to make more, and
exits 2 (a usage error, as rnnbench's own). Every other argument goes on to `rnnbench compare`
(--threshold, --alpha, --csv, --fail-on-regression), and its exit status is this one's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.results import RESULTS_CSV

DEFAULT_BASE = "py311-cpu-oldest-bench"
EXIT_USAGE = 2


def run_folders(runs: Path, out: Path) -> list[Path]:
    """The run folders directly under `runs`, by name; `out` (compare's own output) is not one."""
    if not runs.is_dir():
        return []
    return sorted((path for path in runs.iterdir()
                   if path.is_dir() and (path / RESULTS_CSV).is_file() and path.resolve() != out.resolve()),
                  key=lambda path: path.name)


def base_first(folders: list[Path], base: str | None) -> tuple[list[Path], str | None]:
    """-> (folders with the base first, a note when the default base was missing).

    Raises ValueError when `base` was asked for by name and is not among `folders`."""
    by_name = {path.name: path for path in folders}
    if base is not None and base not in by_name:
        raise ValueError(f"--base {base}: no such run folder; found: {', '.join(by_name) or 'none'}")
    chosen = base or (DEFAULT_BASE if DEFAULT_BASE in by_name else folders[0].name)
    note = (None if base or chosen == DEFAULT_BASE
            else f"no {DEFAULT_BASE} folder: comparing against {chosen} (the first by name)")
    return [by_name[chosen], *(path for path in folders if path.name != chosen)], note


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tox_compare",
        description="rnnbench compare over every run folder under RUNS; other options go to it")
    parser.add_argument("runs", type=Path, metavar="RUNS", help="folder holding one run folder per tox env")
    parser.add_argument("--out", type=Path, required=True, help="where compare.md goes")
    parser.add_argument("--base", help=f"run folder name to compare against (default {DEFAULT_BASE}, "
                                       "else the first by name)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args, compare_options = build_parser().parse_known_args(argv)
    folders = run_folders(args.runs, args.out)
    if len(folders) < 2:
        found = ", ".join(path.name for path in folders) or "none"
        print(f"tox -e compare: nothing to compare: it needs two run folders under {args.runs}, "
              f"found {found}. Make them with `tox -m bench` or e.g. "
              "`tox -e py311-cpu-oldest-bench,py311-cpu-newest-bench`.", file=sys.stderr)
        return EXIT_USAGE
    try:
        ordered, note = base_first(folders, args.base)
    except ValueError as exc:
        print(f"tox -e compare: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if note:
        print(f"tox -e compare: {note}")
    from bench.cli import main as rnnbench  # after the checks: a usage error needs no pandas

    return rnnbench(["compare", *map(str, ordered), "--out", str(args.out), *compare_options])


if __name__ == "__main__":
    sys.exit(main())
