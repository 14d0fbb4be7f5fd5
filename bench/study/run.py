"""Running a study: every setting x seed trained once, one tidy row each, appended and
fsync'ed as it finishes (a killed run keeps every finished row; --resume runs the rest).

    rows = run_study(STUDIES["vanishing"], "runs/study", impl="numpy", seeds=3)

A training that diverges (non-finite loss) is a row with status "diverged", not a failed
study: divergences are one of the things the optimisation study counts.
"""
from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

import numpy as np

import impls
from bench.measure import machine
from bench.run.lock import RunLock
from bench.study.studies import Setting, Study
from bench.train import loop

CSV_NAME = "study.csv"
META_NAME = "meta.json"
# What a row holds, in order. Factors of every study are columns too (empty where a study
# does not vary them), so one CSV reads the same whatever ran.
COLUMNS = ("study", "label", "seed", "task", "seq_len", "impl", "cell", "num_layers", "bidirectional",
           "hidden_size", "dropout", "weight_decay", "early_stopping", "optimizer", "lr", "warmup",
           "clip_norm", "epochs_budget", "status", "epochs_run", "best_epoch", "test_accuracy",
           "val_accuracy", "train_accuracy", "train_val_gap", "seconds", "epochs_to_target",
           "seconds_to_target", "grad_ratio_init", "grad_ratio_trained", "error")


def study_dir(out: Path, study: Study) -> Path:
    return Path(out) / study.name


def done_keys(path: Path) -> set[tuple[str, int]]:
    """(label, seed) of the rows already in a study's CSV (a torn last line is ignored)."""
    if not path.exists():
        return set()
    with open(path, newline="") as handle:
        return {(row["label"], int(row["seed"])) for row in csv.DictReader(handle)
                if row.get("status") and row.get("seed", "").isdigit()}


class _Writer:
    """Appends rows to study.csv: header once, then one flushed, fsync'ed line per row."""

    def __init__(self, path: Path):
        fresh = not path.exists() or path.stat().st_size == 0
        self.handle = open(path, "a", newline="")
        self.writer = csv.DictWriter(self.handle, fieldnames=COLUMNS, extrasaction="raise")
        if fresh:
            self.writer.writeheader()

    def write(self, row: dict) -> None:
        self.writer.writerow({k: row.get(k, "") for k in COLUMNS})
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


def gradient_ratio(params: dict, dataset, samples: int = 64) -> float:
    """||dL/dh_1|| / ||dL/dh_T|| of the mean cross-entropy on the first `samples` validation
    sequences, by float64 autograd (bench.oracle's step, independent of every backend). NaN
    when torch is missing or the model is not one plain layer (the ratio is a single layer's)."""
    if not impls.is_plain(params):
        return math.nan
    try:
        import torch
    except ImportError:
        return math.nan
    from bench.oracle import _step

    x, y, _ = dataset.split("val")
    xt = torch.tensor(np.asarray(x[:samples], dtype=np.float64))  # (B, T, I)
    p = {k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True) for k, v in params.items()}
    cell = impls.cell_of(params)
    h = torch.zeros(xt.shape[0], p["W_hh"].shape[1], dtype=torch.float64)
    c = torch.zeros_like(h)
    states = []
    for t in range(xt.shape[1]):
        h, c = _step(cell, p, xt[:, t, :], h, c)
        h.retain_grad()
        states.append(h)
    loss = torch.nn.functional.cross_entropy(h @ p["W_hy"].T + p["b_y"], torch.tensor(y[:samples]))
    loss.backward()
    first, last = states[0].grad.norm().item(), states[-1].grad.norm().item()
    return first / last if last > 0 else math.nan


def _time_to_target(history: list[dict], target: float) -> tuple[float, float]:
    """(epochs, seconds) until the validation accuracy first reached `target`; NaN if never."""
    seconds = 0.0
    for record in history:
        seconds += record["seconds"]
        if record["val_accuracy"] >= target:
            return record["epoch"] + 1, seconds
    return math.nan, math.nan


def run_setting(study: Study, setting: Setting, fields: dict, seed: int, backend) -> dict:
    """Train one setting with one seed -> its row."""
    config = loop.TrainConfig(**{**fields, "seed": seed})
    row = {"study": study.name, "label": setting.label, "seed": seed, "task": setting.task.name,
           "seq_len": setting.factors.get("seq_len", setting.task.seq_len or ""),
           "impl": backend.name, "epochs_budget": config.epochs,
           "early_stopping": config.patience < config.epochs,
           **{k: getattr(config, k) for k in ("cell", "num_layers", "bidirectional", "hidden_size",
                                              "dropout", "weight_decay", "optimizer", "lr",
                                              "warmup", "clip_norm")}}
    dataset = setting.task.load().astype(np.dtype(config.dtype))
    row["seq_len"] = row["seq_len"] or dataset.seq_len
    initial = impls.init_params(dataset.input_size, config.hidden_size, dataset.num_classes,
                                seed=seed, dtype=np.dtype(config.dtype), cell=config.cell,
                                num_layers=config.num_layers, bidirectional=config.bidirectional)
    if study.gradient_ratio:
        row["grad_ratio_init"] = gradient_ratio(initial, dataset)
    try:
        result = loop.train(backend, dataset, config, params=initial)
    except FloatingPointError as exc:
        return {**row, "status": "diverged", "error": str(exc)}
    train_x, train_y, train_lengths = dataset.split("train")
    _, train_accuracy = loop.evaluate(backend, result.params, train_x, train_y, train_lengths)
    best = result.history[result.best_epoch]
    epochs_to, seconds_to = _time_to_target(result.history, study.target_accuracy)
    row.update(status="ok", epochs_run=len(result.history), best_epoch=result.best_epoch,
               test_accuracy=result.test_accuracy, val_accuracy=best["val_accuracy"],
               train_accuracy=train_accuracy, train_val_gap=train_accuracy - best["val_accuracy"],
               seconds=result.seconds, epochs_to_target=epochs_to, seconds_to_target=seconds_to)
    if study.gradient_ratio:
        row["grad_ratio_trained"] = gradient_ratio(result.params, dataset)
    return row


def default_jobs(study: Study) -> int:
    """Trainings run at once: one per available core for studies that report accuracy only;
    one for studies that report seconds (optimisation, hidden), whose timings would
    otherwise share the machine with another training."""
    return 1 if study.timed else machine.cores_available()


def run_study(study: Study, out, *, impl: str = "numpy", seeds: int = 3, epochs: int | None = None,
              resume: bool = False, threads: int = 1, jobs: int | None = None, progress=None) -> Path:
    """Run every setting x seed of `study` not yet in out/NAME/study.csv -> that folder.
    `jobs` > 1 trains that many settings at once in worker processes (each with `threads`
    threads); this process stays the only writer of the CSV."""
    folder = study_dir(Path(out), study)
    path = folder / CSV_NAME
    if path.exists() and not resume:
        raise ValueError(f"{path} exists: pass --resume to run what is missing, or another --out")
    backend = impls.get(impl)
    if not backend.supports_backward:
        raise ValueError(f"{impl} is forward-only and cannot train")
    jobs = default_jobs(study) if jobs is None else jobs
    folder.mkdir(parents=True, exist_ok=True)
    with RunLock(folder, {"command": sys.argv, "started": machine.now()}):
        _write_meta(folder, study, impl, seeds, epochs, threads, jobs)
        done = done_keys(path)
        todo = [(setting, fields, seed) for setting, fields in study.configs(epochs)
                for seed in range(seeds) if (setting.label, seed) not in done]
        writer = _Writer(path)
        try:
            for row, seconds in _results(study, todo, impl, threads, jobs):
                writer.write(row)
                if progress:
                    progress(row, seconds)
        finally:
            writer.close()
    return folder


def _results(study: Study, todo: list, impl: str, threads: int, jobs: int):
    """(row, wall seconds) of every (setting, fields, seed) in `todo`, as each finishes."""
    if jobs <= 1 or len(todo) <= 1:
        for setting, fields, seed in todo:
            yield _timed_row(study, setting, fields, seed, impl, threads)
        return
    # spawn, not fork: a forked BLAS thread pool can deadlock the child
    context = multiprocessing.get_context("spawn")
    # longest first: the last trainings to finish are short ones, so no core idles for
    # long at the end (a T=1000 gated training last left one core alone for ~a minute)
    todo = sorted(todo, key=lambda item: estimated_cost(item[0], item[1]), reverse=True)
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = [pool.submit(_timed_row, study, setting, fields, seed, impl, threads)
                   for setting, fields, seed in todo]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


# recurrent matmuls per step relative to rnn_tanh's one (gates)
_GATES = {"rnn_tanh": 1, "lstm": 4, "gru": 3}


def estimated_cost(setting: Setting, fields: dict) -> float:
    """A training's relative cost, for ordering only: steps x training sequences x epochs x
    gates x layers x directions x hidden size (digits: 8 steps; pixels: 64)."""
    task = setting.task
    steps = task.seq_len or (64 if task.name == "digits-pixels" else 8)
    sequences = 0.6 * task.samples if task.name.startswith("synthetic") else 1078
    config = loop.TrainConfig(**fields)
    return (steps * sequences * config.epochs * _GATES.get(config.cell, 4) * config.num_layers
            * (2 if config.bidirectional else 1) * config.hidden_size)


_BACKENDS: dict = {}


def _prepare(study: Study, backend, fields: dict) -> None:
    """Load every library the setting will use before its threads are limited: a thread pool
    that appears after the limit (numba's BLAS, loaded by its first compile; torch, imported
    by the gradient ratio) would otherwise run unlimited. Measured: an unlimited BLAS pool
    beside another training made a T=16 numba backward 95 ms instead of ~1 ms."""
    config = loop.TrainConfig(**fields)
    params = impls.init_params(2, 2, 2, seed=0, dtype=np.dtype(config.dtype), cell=config.cell,
                               num_layers=config.num_layers, bidirectional=config.bidirectional)
    native, x = backend.from_numpy(params), backend.asarray(np.zeros((1, 2, 2), config.dtype))
    masks = backend.as_dropout(impls.masks_for(params, (1, 2, 2), config.dropout, seed=0))
    logits, cache = backend.forward(native, x, None, masks)
    backend.backward(native, cache, backend.asarray(np.ones((1, 2), config.dtype)))
    if study.gradient_ratio:
        try:
            import torch  # noqa: F401
        except ImportError:
            pass


def _timed_row(study, setting, fields, seed, impl, threads) -> tuple[dict, float]:
    """One row, trained under the thread limit (in this process or a worker's)."""
    backend = _BACKENDS.get(impl) or _BACKENDS.setdefault(impl, impls.get(impl))
    _prepare(study, backend, fields)
    with machine.use_threads(threads):
        tic = time.perf_counter()
        row = run_setting(study, setting, fields, seed, backend)
        return row, time.perf_counter() - tic


def _write_meta(folder: Path, study: Study, impl: str, seeds: int, epochs: int | None, threads: int,
                jobs: int):
    """What was run (the budget, seeds, settings) and where: the report states it."""
    meta = {"study": study.name, "impl": impl, "seeds": seeds, "threads": threads, "jobs": jobs,
            "epochs": study.epochs if epochs is None else epochs, "default_epochs": study.epochs,
            "base": study.base, "settings": [{"label": s.label, "task": asdict(s.task),
                                              "config": s.config} for s in study.settings],
            "written": machine.now(), "machine": machine.machine_meta()}
    previous = folder / META_NAME
    if previous.exists():
        old = json.loads(previous.read_text())
        meta["first_written"] = old.get("first_written", old.get("written"))
        if old.get("epochs") != meta["epochs"] or old.get("impl") != impl:
            raise ValueError(f"{folder} was run with impl {old.get('impl')}, {old.get('epochs')} epochs; "
                             f"resume it with the same --impl and --epochs")
    (folder / META_NAME).write_text(json.dumps(meta, indent=2, default=str) + "\n")
