"""What a user can do to a run folder and to rnnbench's inputs without meeting a traceback:
two sweeps on one folder, damaged run files, real-world .npz layouts, too many threads,
non-finite weights, files that are not what their name says, wrongly typed TOML."""
import csv
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import impls
from bench.measure.machine import cores_available
from bench.record import COLUMNS, LEGACY_COLUMNS
from bench.results import (DamagedFile, load_run, read_meta, read_rows, scan_csv)
from bench.run.lock import RunLock, RunLocked
from bench.run.sweep import run_sweep
from bench.spec import build_grid, load_config
from bench.train.data import load_npz

ROOT = Path(__file__).resolve().parents[1]
FAST = {"min_samples": 3, "min_time_s": 0.01, "warmup_s": 0.0}
# files, locks and resume are under test here, not the roofline (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("fixed_peak")
TINY = dict(impls=["numpy"], cell=["rnn_tanh"], phases=["forward"], batch_size=[1, 2], seq_len=[3],
            hidden_size=[4], input_size=[2], accuracy=False, footprint=False)


def tiny_grid(**overrides):
    return build_grid("quick", **{**TINY, **overrides})


def sweep(out, **kwargs):
    notes = []
    run_sweep(tiny_grid(**kwargs.pop("grid", {})), out, progress=False, timing=FAST,
              notify=notes.append, **kwargs)
    return notes


def cli(*args, cwd=ROOT, env=None):
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=env)


def one_line_error(result, pattern: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    # ours: "rnnbench: error: ..."; argparse's: "rnnbench sweep: error: ..." after the usage
    errors = [line for line in result.stderr.splitlines() if re.match(r"rnnbench( \w+)?: error: ", line)]
    assert len(errors) == 1, result.stderr
    assert pattern in errors[0], errors[0]
    return errors[0]


def keys_of(out) -> list[tuple]:
    return [(r["impl"], r["phase"], r["batch_size"]) for r in read_rows(out)]


# ------------------------------------------------------------------ 1. the run-folder lock

HOLD = textwrap.dedent("""\
    import sys, time
    from bench.run.lock import RunLock
    lock = RunLock(sys.argv[1], {"started": "2026-12-01T10:00:00+00:00", "command": ["rnnbench", "sweep"]}).acquire()
    print("locked", flush=True)
    time.sleep(120)
    """)


def test_a_held_run_folder_is_refused_and_a_dead_holder_blocks_nothing(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match=rf"pid {holder.pid}, started 2026-12-01T10:00:00"):
            sweep(out)
        for extra in ([], ["--resume"], ["--force"]):
            one_line_error(cli("sweep", "--impl", "numpy", "--out", str(out), "--quiet", *extra),
                           f"pid {holder.pid}")
        assert not (out / "results.csv").exists()  # nothing ran
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / ".lock").exists()  # the dead holder's file is still there ...
    sweep(out, resume=True)  # ... and blocks nothing: the kernel dropped its lock
    assert len(keys_of(out)) == 2


def test_the_lock_is_held_for_the_whole_sweep_and_released_after(tmp_path):
    out = tmp_path / "run"
    sweep(out)
    with RunLock(out, {"started": "now"}):  # free again once the sweep returned
        pass


# ------------------------------------------------------------------ 2. damaged run files

def _damage_line(path: Path, number: int, text: str) -> str:
    lines = path.read_text().splitlines(keepends=True)
    original = lines[number - 1]
    lines[number - 1] = text
    path.write_text("".join(lines))
    return original


@pytest.mark.parametrize("bad", ["numpy,forward,oops\n", "not,a,row,\"unclosed\n",
                                 "\udcff\udcfe garbage bytes\n"], ids=["short", "stray-quote", "binary"])
def test_a_damaged_csv_line_is_named_and_resume_sets_it_aside(tmp_path, bad):
    out = tmp_path / "run"
    sweep(out, grid={"batch_size": [1, 2, 3]})
    csv_path = out / "results.csv"
    lines = csv_path.read_text().splitlines(keepends=True)
    damaged = lines[2]  # the second row
    csv_path.write_bytes("".join([*lines[:2], bad, *lines[3:]]).encode("utf-8", "surrogateescape"))
    with pytest.raises(DamagedFile, match=r"results\.csv:3: damaged line"):
        load_run(out)
    one_line_error(cli("report", str(out)), "results.csv:3: damaged line")
    notes = sweep(out, grid={"batch_size": [1, 2, 3]}, resume=True)
    assert any("set aside into results.csv.damaged" in n for n in notes), notes
    assert sorted(keys_of(out)) == [("numpy", "forward", b) for b in ("1", "2", "3")]  # rerun, once each
    aside = (out / "results.csv.damaged").read_bytes().decode("utf-8", "surrogateescape")
    assert aside == bad and damaged not in aside  # never deleted: the bad line is kept verbatim
    assert read_meta(out)["recovered"]
    assert len(load_run(out)) == 3


@pytest.mark.parametrize("line", ["[1, 2]", '"text"', "5"])
def test_a_jsonl_line_that_is_json_but_not_an_object_is_set_aside(tmp_path, line):
    out = tmp_path / "run"
    sweep(out)
    _damage_line(out / "raw_times.jsonl", 1, line + "\n")
    notes = sweep(out, resume=True)
    assert any("raw_times.jsonl: 1 damaged line(s) (1: not a JSON object" in n for n in notes), notes
    assert (out / "raw_times.jsonl.damaged").read_text() == line + "\n"


@pytest.mark.parametrize("old_key", [
    ["numpy", "forward", 1, 3, 2, 4, "float32", 1],  # before the cell column
    ["numpy", "rnn_tanh", "forward", 1, 3, 2, 4, "float32", 1],  # before num_layers, bidirectional
], ids=["before-cell", "before-structure"])
def test_an_in_progress_key_from_an_older_version_still_counts(tmp_path, old_key):
    out = tmp_path / "run"
    sweep(out, grid={"batch_size": [1]})
    (out / "results.csv").write_text((out / "results.csv").read_text().splitlines(keepends=True)[0])
    (out / "in_progress.json").write_text(json.dumps({"key": old_key, "attempts": 2}))
    sweep(out, resume=True, grid={"batch_size": [1]})
    (row,) = read_rows(out)
    assert row["status"] == "error" and "died in this case 2 times" in row["reason"]


def test_damaged_jsonl_meta_and_in_progress_files(tmp_path):
    out = tmp_path / "run"
    sweep(out)
    _damage_line(out / "raw_times.jsonl", 1, '{"impl": "numpy", "times_s": [0.1\n')
    (out / "in_progress.json").write_text("{not json")
    good_meta = (out / "meta.json").read_text()
    (out / "meta.json").write_text(good_meta[: len(good_meta) // 2])
    with pytest.raises(DamagedFile, match=r"meta\.json: damaged JSON \(line \d+ column \d+"):
        read_meta(out)
    one_line_error(cli("report", str(out)), "meta.json: damaged JSON")
    notes = sweep(out, resume=True)
    joined = "\n".join(notes)
    for expected in ("raw_times.jsonl: 1 damaged line(s) (1:", "meta.json: damaged JSON",
                     "in_progress.json: damaged"):
        assert expected in joined, joined
    for sidecar in ("raw_times.jsonl.damaged", "meta.json.damaged", "in_progress.json.damaged"):
        assert (out / sidecar).exists(), sidecar
    raw = [json.loads(line) for line in (out / "raw_times.jsonl").read_text().splitlines()]
    ok = [r for r in read_rows(out) if r["status"] == "ok"]
    assert sorted(r["batch_size"] for r in raw) == sorted(int(r["batch_size"]) for r in ok)
    assert read_meta(out)["finished"]


def test_scan_keeps_a_reason_that_spans_lines(tmp_path):
    """A quoted newline in a reason is one record over two lines: sound, not damaged."""
    out = tmp_path / "run"
    sweep(out)
    path = out / "results.csv"
    lines = path.read_text().splitlines(keepends=True)
    cells = lines[1].rstrip("\n").split(",")
    cells[-1] = '"first line\nsecond line"'
    path.write_text(lines[0] + ",".join(cells) + "\n" + "".join(lines[2:]))
    text, bad = scan_csv(path)
    assert not bad and load_run(out)["reason"].iloc[0] == "first line\nsecond line"


def _as_written_by_version(out: Path, version: int) -> None:
    """Rewrite a run as an older rnnbench wrote it: without the columns added since
    (version 0: before the cell column, 1: before num_layers and bidirectional)."""
    columns = LEGACY_COLUMNS[version]
    rows = read_rows(out)
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    for name in ("raw_times.jsonl", "errors.jsonl"):
        lines = [json.loads(line) for line in (out / name).read_text().splitlines()]
        (out / name).write_text("".join(json.dumps({k: v for k, v in e.items() if k in columns or k not in COLUMNS})
                                        + "\n" for e in lines))


@pytest.mark.parametrize("version, missing", [(0, "cell, num_layers, bidirectional, host"),
                                              (1, "num_layers, bidirectional, host"), (2, "host")],
                         ids=["before-cell", "before-structure", "before-host"])
def test_a_run_from_an_older_version_loads_and_resumes_as_the_plain_tanh_model(tmp_path, version, missing):
    out = tmp_path / "run"
    sweep(out)
    before = keys_of(out)
    _as_written_by_version(out, version)
    assert (out / "results.csv").read_text().splitlines()[0] == ",".join(LEGACY_COLUMNS[version])
    assert ("num_layers" in (out / "raw_times.jsonl").read_text()) == (version >= 2)
    frame = load_run(out)
    assert list(frame["cell"]) == ["rnn_tanh", "rnn_tanh"]
    assert list(frame["num_layers"]) == [1, 1] and list(frame["bidirectional"]) == [False, False]
    notes = sweep(out, resume=True, grid={"cell": ["rnn_tanh", "lstm"], "bidirectional": [False, True]})
    assert any(f"written before the column(s) {missing};" in n for n in notes), notes
    rows = read_rows(out)
    assert (out / "results.csv").read_text().splitlines()[0] == ",".join(COLUMNS)
    model = lambda r: (r["cell"], r["bidirectional"])  # noqa: E731
    assert [(r["impl"], r["phase"], r["batch_size"]) for r in rows[:2]] == before  # kept, not run again
    assert [model(r) for r in rows] == [("rnn_tanh", "False")] * 2 + [
        (cell, bidirectional) for cell in ("rnn_tanh", "lstm") for bidirectional in ("False", "True")
        if (cell, bidirectional) != ("rnn_tanh", "False") for _ in before]
    assert {r["num_layers"] for r in rows} == {"1"}
    assert [r["host"] for r in rows[:2]] == ["", ""]  # not recorded then; the resumed rows say where
    assert all(r["host"] for r in rows[2:])
    raw = [json.loads(line) for line in (out / "raw_times.jsonl").read_text().splitlines()]
    assert [(e["cell"], e["num_layers"], e["bidirectional"]) for e in raw[:2]] == [("rnn_tanh", 1, False)] * 2
    assert len(raw) == len(rows)  # every timed row has its samples, old ones upgraded


# ------------------------------------------------------------------ 3. real-world .npz layouts

def test_splits_padded_to_different_lengths_are_accepted(tmp_path):
    """UEA/UCR archives pad each split to its own longest sequence (here 26 vs 29 steps)."""
    rng = np.random.default_rng(0)
    x_train, x_test = rng.standard_normal((40, 26, 3)), rng.standard_normal((12, 29, 3))
    y_train, y_test = np.arange(40) % 2, np.arange(12) % 2
    path = tmp_path / "uea.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    ds = load_npz(path)
    assert ds.seq_len == 29 and ds.x_train.shape[1] == ds.x_val.shape[1] == 29
    assert set(ds.lengths_train) == {26} and set(ds.lengths_val) == {26} and ds.lengths_test is None
    assert (ds.x_train[:, 26:] == 0).all()
    # exact, not approximate: the padded sequences give the logits of the unpadded ones
    backend = impls.get("numpy")
    params = backend.from_numpy(impls.init_params(3, 8, 2, seed=0, dtype=np.float64))
    padded = backend.predict(params, ds.x_train[:4], ds.lengths_train[:4])
    np.testing.assert_allclose(padded, backend.predict(params, np.ascontiguousarray(ds.x_train[:4, :26])),
                               rtol=1e-12)
    # lengths from the file win over the split's own length, and are checked against it
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
             lengths_train=np.full(40, 20), lengths_test=np.full(12, 29))
    ds = load_npz(path)
    assert set(ds.lengths_train) | set(ds.lengths_val) == {20} and set(ds.lengths_test) == {29}
    result = cli("train", "--impl", "numpy", "--dataset", str(path), "--epochs", "1", "--quiet")
    assert result.returncode == 0 and "test accuracy" in result.stdout, result.stderr


# ------------------------------------------------------------------ 4. oversubscription

def test_more_threads_than_cores_is_refused_or_run_and_flagged(tmp_path):
    too_many = cores_available() + 1
    with pytest.raises(ValueError, match=rf"threads {too_many} exceed the {cores_available()} core"):
        sweep(tmp_path / "refused", grid={"threads": [too_many]})
    assert not (tmp_path / "refused").exists()  # refused before anything was written
    one_line_error(cli("sweep", "--impl", "numpy", "--threads", "999", "--out", str(tmp_path / "cli")),
                   "--allow-oversubscribe")
    out = tmp_path / "flagged"
    sweep(out, grid={"threads": [too_many], "batch_size": [1]}, allow_oversubscribe=True)
    (row,) = read_rows(out)
    assert row["status"] == "ok" and f"oversubscribed: {too_many} threads" in row["reason"]
    assert read_meta(out)["oversubscribed"]["threads"] == [too_many]
    from bench.report.document import write_report
    assert "**OVERSUBSCRIBED**: 1 row(s)" in write_report(out).read_text()


# ------------------------------------------------------------------ 5. bad weights, files, TOML

def test_non_finite_weights_are_refused_by_name(tmp_path):
    params = impls.init_params(8, 4, 10, seed=0)
    params["W_hh"][1, 2] = np.nan
    with pytest.raises(ValueError, match="param W_hh holds 1 NaN/inf"):
        impls.get("numpy").from_numpy(params)
    path = tmp_path / "nan.npz"
    np.savez(path, **params)
    one_line_error(cli("evaluate", "--impl", "numpy", "--params", str(path)), "param W_hh holds 1 NaN/inf")


RANDOM_BYTES = b"\x07" + np.random.default_rng(5).bytes(255)  # no file signature starts so


@pytest.mark.parametrize("content, message", [
    (RANDOM_BYTES, "not an .npz archive"),
    (b"PK\x03\x04" + RANDOM_BYTES, "damaged .npz archive"),
    (pickle.dumps([1, 2, 3]), "pickled data"),
], ids=["random-bytes", "damaged-zip", "pickle"])
def test_files_that_are_not_npz_archives_say_what_they_are(tmp_path, content, message):
    path = tmp_path / "weights.npz"
    path.write_bytes(content)
    one_line_error(cli("evaluate", "--impl", "numpy", "--params", str(path)), message)
    one_line_error(cli("train", "--impl", "numpy", "--dataset", str(path)), message)


@pytest.mark.parametrize("toml, message", [
    ('batch_size = "a"', "batch_size needs positive integers, got ['a']"),
    ("batch_size = [true]", "batch_size needs positive integers, got [True]"),
    ("seq_len = [2.5]", "seq_len needs positive integers"),
    ("impls = [1]", "impls needs names"),
    ('accuracy = "yes"', "accuracy must be true or false"),
    ("min_time_s = 0", "min_time_s must be a positive number"),
    ("preset = 3", "preset must be a preset name"),
    ("batch_size = true", "batch_size must be a list"),
    ("num_layers = [0]", "num_layers needs positive integers, got [0]"),
    ('bidirectional = ["yes"]', "bidirectional needs true/false values, got ['yes']"),
    ("bidirectional = [1]", "bidirectional needs true/false values, got [1]"),
])
def test_wrongly_typed_toml_names_the_key(tmp_path, toml, message):
    path = tmp_path / "grid.toml"
    path.write_text(toml + "\n")
    with pytest.raises(ValueError) as caught:
        config = load_config(path)
        build_grid(config.pop("preset", None), **config)
    assert message in str(caught.value)
    one_line_error(cli("sweep", "--config", str(path), "--out", str(tmp_path / "run")), message.split(",")[0])


# ------------------------------------------------------------------ 7. killed at any moment

SWEEP_ARGS = ["sweep", "--impl", "numpy", "--cell", "rnn_tanh", "--phase", "forward,train_step", "--batch-size", "1,2",
              "--seq-len", "3", "--hidden-size", "4", "--input-size", "2", "--no-accuracy", "--no-footprint",
              "--quiet"]
EXPECTED_KEYS = {("numpy", phase, b) for phase in ("forward", "train_step") for b in ("1", "2")}


@pytest.mark.parametrize("point", ["calibration", "case:1", "case:3", "between-raw-and-row:2",
                                   "meta-replace:1", "meta-replace:2"])
def test_a_sweep_killed_anywhere_resumes_to_exactly_one_row_per_case(tmp_path, point):
    """SIGKILL at a named moment (bench.faults), then --resume: one row per case, one entry
    of raw times per timed row with as many samples as the row says, a valid meta.json."""
    from bench import faults

    out = tmp_path / "run"
    env = {**os.environ, faults.ENV: point}
    killed = cli(*SWEEP_ARGS, "--out", str(out), env=env)
    assert killed.returncode == -signal.SIGKILL, (point, killed.returncode, killed.stderr)
    grid = build_grid("quick", impls=["numpy"], cell=["rnn_tanh"], phases=["forward", "train_step"],
                      batch_size=[1, 2], seq_len=[3], hidden_size=[4], input_size=[2], accuracy=False,
                      footprint=False)
    run_sweep(grid, out, resume=True, progress=False, timing=FAST, notify=lambda note: None)
    rows = read_rows(out)
    assert sorted(keys_of(out)) == sorted(EXPECTED_KEYS)  # each case exactly once
    assert {r["status"] for r in rows} == {"ok"}
    raw = [json.loads(line) for line in (out / "raw_times.jsonl").read_text().splitlines()]
    by_key = {(r["impl"], r["phase"], str(r["batch_size"])): len(r["times_s"]) for r in raw}
    assert len(raw) == len(by_key) == len(rows)
    assert by_key == {(r["impl"], r["phase"], r["batch_size"]): int(r["samples"]) for r in rows}
    meta = read_meta(out)
    assert meta["finished"] and meta["implementations"] and meta["machine"]
    assert not (out / "in_progress.json").exists()


@pytest.mark.parametrize("flag", ["--impl", "--phase", "--dtype"])
def test_an_empty_name_list_is_an_error_not_everything(tmp_path, flag):
    """Found while fuzzing: `--impl ""` used to mean every implementation (an empty grid
    field), `--phase ""` a sweep of nothing."""
    one_line_error(cli("sweep", flag, "", "--out", str(tmp_path / "run")), "expected comma-separated names")
    with pytest.raises(ValueError, match="phases needs names"):
        build_grid("quick", phases=[])


def test_a_reader_that_leaves_early_is_not_an_error():
    """`rnnbench list | head -1`: the pipe closes before rnnbench writes."""
    process = subprocess.Popen([sys.executable, "-m", "bench.cli", "list"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # before the first line: the command is still importing
    assert process.wait(timeout=120) == 0
    assert b"error" not in process.stderr.read()
