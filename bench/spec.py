"""What a sweep runs: frozen cases, grids and presets. (What was measured is a record,
bench.record / bench.results; how it is shown, bench.report: the three are kept apart.)"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

from bench.record import KEY_COLUMNS

# transfer: host->device copy of the inputs plus device->host copy of the logits, the
# copies every other phase excludes from its timed region (a memcpy on the CPU).
PHASES = ("forward", "backward", "train_step", "transfer")
PHASE_ORDER = ("train_step", "forward", "backward", "transfer")  # the order a sweep runs them in
DTYPES = ("float32", "float64")


CELLS = ("rnn_tanh", "lstm", "gru")  # impls.CELLS (a test checks they agree; no impls import here)


@dataclass(frozen=True, order=True)
class Case:
    """One measurement: an implementation of one cell and structure (layers, directions) at
    one size, phase, dtype and thread count."""
    impl: str
    phase: str  # forward (inference, `predict`), backward (given a cache), train_step
    batch_size: int
    seq_len: int
    input_size: int
    hidden_size: int
    dtype: str = "float32"
    threads: int = 1
    num_classes: int = 10
    cell: str = "rnn_tanh"  # after the sizes: positional Case(...) calls written before cells still read right
    # last, for the same reason: the plain model (one layer, one direction) unless asked
    num_layers: int = 1
    bidirectional: bool = False

    def key(self) -> tuple:
        """Identifies the row in results.csv (resume skips keys already there)."""
        return tuple(getattr(self, column) for column in KEY_COLUMNS)

    def size(self) -> tuple[int, int, int, int]:
        return (self.batch_size, self.seq_len, self.input_size, self.hidden_size)

    def structure(self) -> tuple[int, bool]:
        """(num_layers, bidirectional), as impls.structure_of reads it off params."""
        return (self.num_layers, self.bidirectional)


@dataclass(frozen=True)
class Grid:
    """A cartesian sweep; `extra` lists cases outside the product (DeepBench's problem
    sets), each with its own size, cell and phase: `cell` and `phases` select among them;
    like dtype and threads, the structures (num_layers x bidirectional) apply to them all."""
    impls: tuple[str, ...] = ()  # empty: every registered implementation
    cell: tuple[str, ...] = ("rnn_tanh",)  # the product runs each; extra cases of other cells are left out
    # The model's structure: stacked layers, and one or both directions (every combination
    # runs). A backend that runs one-layer unidirectional models only gets a skipped row.
    num_layers: tuple[int, ...] = (1,)
    bidirectional: tuple[bool, ...] = (False,)
    phases: tuple[str, ...] = ("forward", "train_step")
    batch_size: tuple[int, ...] = (1, 32)
    seq_len: tuple[int, ...] = (16, 64)
    input_size: tuple[int, ...] = (32,)
    hidden_size: tuple[int, ...] = (64, 128)
    dtype: tuple[str, ...] = ("float32",)
    threads: tuple[int, ...] = (1,)
    # input_size = hidden_size, as DeepBench's kernels do, when set
    input_equals_hidden: bool = False
    extra: tuple[Case, ...] = field(default=())
    cartesian: bool = True  # False: only `extra` runs (DeepBench's lists are not products)
    # The cells compile-heavy implementations (impls.Entry.compile_heavy) run; None: all,
    # (): none. A compiled loop is a graph per (cell, seq_len, phase, batch/hidden
    # specialisation): torch.compile's tanh graphs took ~30 s each at T=64 here and its
    # LSTM graphs 11-93 s (T 16-64), more than the whole quick preset may take. What is
    # left out is a `skipped` row saying so; naming the implementation or cell runs it.
    compile_heavy_cells: tuple[str, ...] | None = None
    accuracy: bool = True  # train/evaluate each implementation on digits too
    # epochs of each accuracy row's training (a fixed budget, so times compare): 15 reach
    # 0.93-0.96 test accuracy on digits; the quick preset's 10 reach 0.92-0.93 in 2/3 the time
    accuracy_epochs: int = 15
    # the timing budget of a case: samples are taken until both this much time and 7
    # samples; 0.25 s keeps the IQR of a ~1 ms call near 1-3 % on a quiet 2-core VM
    min_time_s: float = 0.25
    # after every timed case: footprint and cold start per implementation (footprint.csv,
    # bench.measure.footprint), fresh processes that would disturb the timings if they ran
    # alongside; off unless a preset (default) or --footprint turns it on
    footprint: bool = False

    def compile_skip(self, cell: str, compile_heavy: bool) -> str | None:
        """Why a compile-heavy implementation does not run `cell` in this grid, or None."""
        if not compile_heavy or self.compile_heavy_cells is None or cell in self.compile_heavy_cells:
            return None
        runs = (f"runs it on {', '.join(self.compile_heavy_cells)} only" if self.compile_heavy_cells
                else "leaves it out")
        # the "compile-heavy:" prefix is what a resume retries (bench.results.RETRY_SKIPPED_PREFIX)
        return (f"compile-heavy: this grid {runs} (each graph compiles for tens of seconds); "
                f"name it to run it: --impl IMPL or --cell {cell}")

    def cases(self, registered: list[str]) -> list[Case]:
        impls = self.impls or tuple(registered)
        # Implementations innermost: the cases that are compared with each other run back
        # to back, so drift in the machine's state (other tenants, thermals) hits them alike.
        # train_step before forward before backward: a compiling backend pays its training
        # compile (forward + backward graphs) in the train_step row's compile_s, its inference
        # compile in the forward row's; backward then reuses the training graphs.
        # The cell and structure outside the sizes: one model's sizes run together, as its
        # compiled graphs do.
        phases = sorted(self.phases, key=PHASE_ORDER.index)
        product = itertools.product(phases, self.dtype, self.threads, self.cell, self.num_layers,
                                    self.bidirectional, self.batch_size, self.seq_len,
                                    self.input_size, self.hidden_size, impls)
        cases = []
        for phase, dtype, threads, cell, layers, bidirectional, batch, seq_len, input_size, hidden, impl in (
                product if self.cartesian else ()):
            if self.input_equals_hidden:
                input_size = hidden
            cases.append(Case(impl, phase, batch, seq_len, input_size, hidden, dtype, threads, cell=cell,
                              num_layers=layers, bidirectional=bidirectional))
        cases += [replace(c, impl=impl, dtype=dtype, threads=threads, num_layers=layers,
                          bidirectional=bidirectional)
                  for dtype, threads, layers, bidirectional in itertools.product(
                      self.dtype, self.threads, self.num_layers, self.bidirectional)
                  for c in self.extra if c.cell in self.cell and c.phase in self.phases
                  for impl in impls]  # impls innermost too
        return list(dict.fromkeys(cases))  # de-duplicated, order kept

    def structures(self) -> list[tuple[int, bool]]:
        """Every (num_layers, bidirectional) the grid runs, in its order."""
        return list(itertools.product(self.num_layers, self.bidirectional))


def all_cores() -> int:
    return len(os.sched_getaffinity(0))


# Baidu DeepBench's RNN problem sets (code/kernels/rnn_problems.h): (hidden, batch,
# time steps, cell), input size = hidden size. Training runs forward and train_step,
# inference forward only. Sizes this machine cannot hold or finish in --max-case-s are
# skipped before running, with the estimate as the reason.
_DEEPBENCH_TRAINING = (
    *((hidden, batch, 50, "rnn_tanh") for hidden in (1760, 2048, 2560) for batch in (16, 32, 64, 128)),
    *((hidden, batch, 25, "lstm") for hidden in (512, 1024, 2048, 4096) for batch in (16, 32, 64, 128)),
    *((1536, batch, 50, "lstm") for batch in (8, 16, 32)),
    *((256, batch, 150, "lstm") for batch in (16, 32, 64)),
    # (2816, 32, 1500) is commented out in DeepBench's file
    *((hidden, 32, steps, "gru") for hidden in (2816, 2048, 1536, 2560) for steps in (750, 375, 187)),
    *((hidden, 32, 1500, "gru") for hidden in (2048, 1536, 2560)),
    (512, 32, 1, "gru"), (1024, 32, 1500, "gru"), (1024, 64, 1500, "gru"),
)
_DEEPBENCH_INFERENCE = (
    # the server set: batch 1, 2, 4
    *((hidden, batch, steps, "lstm") for hidden, steps in ((512, 25), (1024, 25), (2048, 25),
                                                           (1536, 50), (256, 150))
      for batch in (1, 2, 4)),
    *((hidden, batch, steps, "gru") for hidden in (2816, 2048, 1536, 2560) for batch in (1, 2, 4)
      for steps in (1500, 750, 375, 187)),
    *((512, batch, 1, "gru") for batch in (1, 2, 4)),
    *((1024, batch, 1500, "gru") for batch in (1, 2, 4)),
    # the device set
    (32, 1, 672, "rnn_tanh"), (64, 1, 96, "rnn_tanh"), (256, 1, 150, "lstm"),
)


def _problems(problems, phases) -> tuple[Case, ...]:
    return tuple(Case("", phase, batch, steps, hidden, hidden, cell=cell)
                 for phase in phases for hidden, batch, steps, cell in problems)


def _deepbench() -> Grid:
    return Grid(cell=CELLS, phases=("forward", "train_step"), cartesian=False, accuracy=False,
                extra=(_problems(_DEEPBENCH_TRAINING, ("train_step", "forward"))
                       + _problems(_DEEPBENCH_INFERENCE, ("forward",))))


GPU_IMPLS = ("torch_cuda", "cupy", "torch_compile_cuda")


def _gpu() -> Grid:
    # A subset of DeepBench's training sets that fits ~8 minutes on one GPU (a compiled loop
    # is a graph per seq_len: few lengths), plus the article's scale per cell, where
    # per-launch overhead rather than the GEMMs decides.
    training = tuple(p for p in _DEEPBENCH_TRAINING  # B=64 H=1760: the cupy-vs-cuDNN target's size
                     if (p[3] == "rnn_tanh" and p[1] in (16, 64, 128))
                     or (p[3] == "lstm" and p[0] in (512, 1024) and p[2] == 25)
                     or (p[3] == "gru" and p[0] == 1536 and p[2] == 187))
    article = tuple(Case("", phase, batch, 64, 32, hidden, cell=cell)
                    for cell in CELLS for phase in ("forward", "train_step", "transfer")
                    for batch in (1, 32) for hidden in (128, 512)
                    if phase != "transfer" or cell == "rnn_tanh")  # a copy is the same for every cell
    # torch_compile_cuda on rnn_tanh only: ~24 LSTM/GRU graphs at tens of seconds each
    # would not fit the ~8 minutes (name it with --cell to run them)
    return Grid(impls=GPU_IMPLS, cell=CELLS, phases=("forward", "train_step", "transfer"),
                cartesian=False, accuracy=False, compile_heavy_cells=("rnn_tanh",),
                extra=_problems(training, ("train_step", "forward")) + article)


PRESETS: dict[str, callable] = {
    # The main job: every available implementation and cell at the article's size and B=1,
    # within 3 minutes on 2 cores with cold JIT caches (measured: 6 min with torch.compile
    # and 4 sizes, of which its compiles took 2 min): a shorter timing budget per case
    # (0.1 s: still >= 7 samples; numba's first compiles alone take ~60 s of the budget),
    # compile-heavy implementations only when named (--impl torch_compile), and each
    # implementation's footprint and cold start last (~45 s of fresh processes).
    "quick": lambda: Grid(cell=CELLS, phases=("forward", "backward", "train_step"), batch_size=(1, 32),
                          seq_len=(64,), hidden_size=(128,), min_time_s=0.1, accuracy_epochs=10,
                          compile_heavy_cells=(), footprint=True),
    "default": lambda: Grid(cell=CELLS, phases=PHASES, batch_size=(1, 8, 32, 128), seq_len=(16, 64, 256),
                            hidden_size=(32, 64, 128, 256, 512), dtype=DTYPES,
                            threads=tuple(sorted({1, all_cores()})), footprint=True),
    "deepbench": _deepbench,
    # for `bench/gpu_check.sh`: every GPU implementation, DeepBench sizes and small ones
    "gpu": _gpu,
}

GRID_KEYS = {f.name for f in fields(Grid)} - {"extra"}
SCALAR_KEYS = ("preset", "accuracy", "input_equals_hidden", "cartesian", "min_time_s", "footprint",
               "accuracy_epochs")


def load_config(path: str | Path) -> dict:
    """A TOML file whose keys are Grid's fields (lists), e.g. `batch_size = [1, 32]`."""
    with open(path, "rb") as handle:
        data = tomllib.load(handle)
    unknown = set(data) - GRID_KEYS - {"preset"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(GRID_KEYS | {'preset'})}")
    for key, value in data.items():
        if key in SCALAR_KEYS:
            if key == "preset" and not isinstance(value, str):
                raise ValueError(f"{path}: preset must be a preset name, got {value!r}")
            continue
        if isinstance(value, (str, int)) and (key in BOOL_LISTS or not isinstance(value, bool)):
            data[key] = [value]  # `batch_size = 32` means the list [32], `bidirectional = true` [true]
        elif not isinstance(value, list):
            raise ValueError(f"{path}: {key} must be a list (or one value), got {value!r}")
    return data


INT_LISTS = ("batch_size", "seq_len", "input_size", "hidden_size", "threads", "num_layers")
SIZE_KEYS = ("batch_size", "seq_len", "input_size", "hidden_size", "input_equals_hidden")
STR_LISTS = ("impls", "cell", "phases", "dtype")
BOOL_KEYS = ("accuracy", "input_equals_hidden", "cartesian", "footprint")
BOOL_LISTS = ("bidirectional",)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is not a batch size


def _check_types(grid: Grid) -> None:
    """ValueError naming the key whose values have the wrong type (a TOML file can hold
    anything: "a", 2.5, true)."""
    for key in INT_LISTS:
        values = getattr(grid, key)
        if not values or not all(_is_int(v) and v >= 1 for v in values):
            raise ValueError(f"{key} needs positive integers, got {list(values)!r}")
    for key in STR_LISTS:
        values = getattr(grid, key)
        if not all(isinstance(v, str) for v in values) or (key != "impls" and not values):
            raise ValueError(f"{key} needs names (strings), got {list(values)!r}")
    for key in BOOL_LISTS:
        values = getattr(grid, key)
        if not values or not all(isinstance(v, bool) for v in values):
            raise ValueError(f"{key} needs true/false values, got {list(values)!r}")
    for key in BOOL_KEYS:
        if not isinstance(getattr(grid, key), bool):
            raise ValueError(f"{key} must be true or false, got {getattr(grid, key)!r}")
    heavy = grid.compile_heavy_cells
    if heavy is not None and not all(isinstance(v, str) for v in heavy):
        raise ValueError(f"compile_heavy_cells needs names (strings), got {list(heavy)!r}")
    if isinstance(grid.min_time_s, bool) or not isinstance(grid.min_time_s, (int, float)) \
            or not grid.min_time_s > 0:
        raise ValueError(f"min_time_s must be a positive number of seconds, got {grid.min_time_s!r}")
    if not _is_int(grid.accuracy_epochs) or grid.accuracy_epochs < 1:
        raise ValueError(f"accuracy_epochs must be a positive integer, got {grid.accuracy_epochs!r}")


def build_grid(preset: str | None = None, **overrides) -> Grid:
    """A preset (default `quick`) with any non-None field overridden; validated."""
    name = preset or "quick"
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    grid = PRESETS[name]()
    changes = {k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items() if v is not None}
    unknown = set(changes) - {f.name for f in fields(Grid)}
    if unknown:
        raise ValueError(f"unknown grid keys {sorted(unknown)}; keys: {', '.join(sorted(GRID_KEYS))}")
    grid = replace(grid, **changes)
    _check_types(grid)
    ignored = sorted(set(changes) & set(SIZE_KEYS)) if not grid.cartesian else []
    if ignored:
        raise ValueError(f"preset {name!r} runs its own list of problems (cartesian = false): "
                         f"{', '.join(ignored)} would have no effect; select with cell and phases, "
                         "or set cartesian = true in a config to sweep a product")
    bad_phases = set(grid.phases) - set(PHASES)
    if bad_phases:
        raise ValueError(f"unknown phases {sorted(bad_phases)}; phases: {', '.join(PHASES)}")
    bad_dtypes = set(grid.dtype) - set(DTYPES)
    if bad_dtypes:
        raise ValueError(f"unknown dtypes {sorted(bad_dtypes)}; dtypes: {', '.join(DTYPES)}")
    bad_cells = (set(grid.cell) | set(grid.compile_heavy_cells or ())) - set(CELLS)
    if bad_cells:
        raise ValueError(f"unknown cells {sorted(bad_cells)}; cells: {', '.join(CELLS)}")
    return grid

