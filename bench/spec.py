"""What a sweep runs: frozen cases, grids and presets. (What was measured is a record,
bench.record / bench.results; how it is shown, bench.report: the three are kept apart.)"""
from __future__ import annotations

import itertools
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from bench.record import KEY_COLUMNS

# transfer: host->device copy of the inputs plus device->host copy of the logits, the
# copies every other phase excludes from its timed region (a memcpy on the CPU).
PHASES = ("forward", "backward", "train_step", "transfer")
PHASE_ORDER = ("train_step", "forward", "backward", "transfer")  # the order a sweep runs them in
DTYPES = ("float32", "float64")


@dataclass(frozen=True, order=True)
class Case:
    """One measurement: an implementation at one size, phase, dtype and thread count."""
    impl: str
    phase: str  # forward (inference, `predict`), backward (given a cache), train_step
    batch_size: int
    seq_len: int
    input_size: int
    hidden_size: int
    dtype: str = "float32"
    threads: int = 1
    num_classes: int = 10

    def key(self) -> tuple:
        """Identifies the row in results.csv (resume skips keys already there)."""
        return tuple(getattr(self, column) for column in KEY_COLUMNS)

    def size(self) -> tuple[int, int, int, int]:
        return (self.batch_size, self.seq_len, self.input_size, self.hidden_size)


@dataclass(frozen=True)
class Grid:
    """A cartesian sweep; `extra` lists cases outside the product (DeepBench's pairs)."""
    impls: tuple[str, ...] = ()  # empty: every registered implementation
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
    accuracy: bool = True  # train/evaluate each implementation on digits too
    # the timing budget of a case: samples are taken until both this much time and 7
    # samples; 0.25 s keeps the IQR of a ~1 ms call near 1-3 % on a quiet 2-core VM
    min_time_s: float = 0.25

    def cases(self, registered: list[str]) -> list[Case]:
        impls = self.impls or tuple(registered)
        # Implementations innermost: the cases that are compared with each other run back
        # to back, so drift in the machine's state (other tenants, thermals) hits them alike.
        # train_step before forward before backward: a compiling backend pays its training
        # compile (forward + backward graphs) in the train_step row's compile_s, its inference
        # compile in the forward row's; backward then reuses the training graphs.
        phases = sorted(self.phases, key=PHASE_ORDER.index)
        product = itertools.product(phases, self.dtype, self.threads, self.batch_size,
                                    self.seq_len, self.input_size, self.hidden_size, impls)
        cases = []
        for phase, dtype, threads, batch, seq_len, input_size, hidden, impl in product:
            if self.input_equals_hidden:
                input_size = hidden
            cases.append(Case(impl, phase, batch, seq_len, input_size, hidden, dtype, threads))
        cases += [replace(c, impl=impl) for c in self.extra for impl in impls]  # impls innermost too
        return list(dict.fromkeys(cases))  # de-duplicated, order kept


def all_cores() -> int:
    return len(os.sched_getaffinity(0))


def _deepbench() -> Grid:
    # Baidu DeepBench's vanilla RNN sizes (code/kernels/rnn_problems.h): training
    # hidden 1760/2048/2560 x batch 16/32/64/128 x T=50, input = hidden; its vanilla
    # inference cases (hidden 32, T=672 and hidden 64, T=96, batch 1).
    inference = tuple(Case("", "forward", 1, seq_len, hidden, hidden)
                      for hidden, seq_len in ((32, 672), (64, 96)))
    return Grid(phases=("forward", "train_step"), batch_size=(16, 32, 64, 128), seq_len=(50,),
                hidden_size=(1760, 2048, 2560), input_equals_hidden=True, extra=inference,
                accuracy=False)


GPU_IMPLS = ("torch_cuda", "cupy", "torch_compile_cuda")


def _gpu() -> Grid:
    # DeepBench's vanilla training sizes (see _deepbench) on the GPU, plus the article's
    # scale, where per-launch overhead rather than the GEMMs decides.
    article = tuple(Case("", phase, batch, 64, 32, hidden)
                    for phase in ("forward", "train_step", "transfer")
                    for batch in (1, 32) for hidden in (128, 512))
    return replace(_deepbench(), impls=GPU_IMPLS, phases=("forward", "train_step", "transfer"),
                   extra=_deepbench().extra + article)


PRESETS: dict[str, callable] = {
    # The main job: every available implementation, a small grid, a few minutes here.
    # (a shorter timing budget per case keeps it within ~3 minutes with cold JIT caches)
    "quick": lambda: Grid(phases=("forward", "backward", "train_step"), batch_size=(1, 32),
                          seq_len=(16, 64), hidden_size=(64, 128), min_time_s=0.15),
    "default": lambda: Grid(phases=PHASES, batch_size=(1, 8, 32, 128), seq_len=(16, 64, 256),
                            hidden_size=(32, 64, 128, 256, 512), dtype=DTYPES,
                            threads=tuple(sorted({1, all_cores()}))),
    "deepbench": _deepbench,
    # for `bench/gpu_check.sh`: every GPU implementation, DeepBench sizes and small ones
    "gpu": _gpu,
}

GRID_KEYS = {f.name for f in fields(Grid)} - {"extra"}
SCALAR_KEYS = ("preset", "accuracy", "input_equals_hidden", "min_time_s")


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
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            data[key] = [value]  # `batch_size = 32` means the list [32]
        elif not isinstance(value, list):
            raise ValueError(f"{path}: {key} must be a list (or one value), got {value!r}")
    return data


INT_LISTS = ("batch_size", "seq_len", "input_size", "hidden_size", "threads")
STR_LISTS = ("impls", "phases", "dtype")
BOOL_KEYS = ("accuracy", "input_equals_hidden")


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
    for key in BOOL_KEYS:
        if not isinstance(getattr(grid, key), bool):
            raise ValueError(f"{key} must be true or false, got {getattr(grid, key)!r}")
    if isinstance(grid.min_time_s, bool) or not isinstance(grid.min_time_s, (int, float)) \
            or not grid.min_time_s > 0:
        raise ValueError(f"min_time_s must be a positive number of seconds, got {grid.min_time_s!r}")


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
    bad_phases = set(grid.phases) - set(PHASES)
    if bad_phases:
        raise ValueError(f"unknown phases {sorted(bad_phases)}; phases: {', '.join(PHASES)}")
    bad_dtypes = set(grid.dtype) - set(DTYPES)
    if bad_dtypes:
        raise ValueError(f"unknown dtypes {sorted(bad_dtypes)}; dtypes: {', '.join(DTYPES)}")
    return grid

