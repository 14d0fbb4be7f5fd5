"""Sweeps on Dask (bench.run.distributed), against real clusters: a distributed.LocalCluster
of worker processes, and a `dask scheduler` + `dask worker` pair started as commands. What
must hold: the rows are the in-process sweep's (keys), each host's rows carry its own
calibration peak, a worker killed mid-case costs that case one attempt (then it runs
elsewhere, or becomes an error row after the in-process attempt limit), and a killed client
leaves a valid CSV that --resume completes, with or without the cluster.

All tiny numpy grids: the whole file runs in well under a minute on 2 cores (marked
`distributed`: `pytest -m "not distributed"` leaves it out)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.faults import ENV as CRASH_ENV, ONCE_AT_ENV, ONCE_ENV
from bench.record import row_key
from bench.results import done_keys, read_meta, read_rows
from bench.run.sweep import MAX_ATTEMPTS, run_sweep
from bench.spec import build_grid

distributed = pytest.importorskip("distributed", reason="the dist extra (dask.distributed) is not installed")
pytestmark = [pytest.mark.distributed, pytest.mark.usefixtures("fixed_peak")]

ROOT = Path(__file__).resolve().parents[1]
FAST = {"min_samples": 3, "min_time_s": 0.01, "warmup_s": 0.0}
TINY = dict(impls=["numpy"], cell=["rnn_tanh"], phases=["forward", "train_step"], batch_size=[1, 2, 3],
            seq_len=[3], hidden_size=[4], input_size=[2], accuracy=False, footprint=False)


def tiny_grid(**overrides):
    return build_grid("quick", **{**TINY, **overrides})


# Two cases kill the workers that run them (bench.faults): H=5's forward B2 the first
# time only, H=6's train_step B3 every time. No other grid here has those sizes.
KILLED_ONCE = "case@numpy rnn_tanh forward B2 T3 H5"
KILLS_ALWAYS = "case@numpy rnn_tanh train_step B3 T3 H6"


@pytest.fixture(scope="module")
def cluster_address(tmp_path_factory):
    """Two worker processes with one thread and the bench resource each. Worker processes
    read the crash targets from the environment they start with, and the nannies that
    restart a killed one live in this process: the targets stay set for the module (the
    in-process sweeps here never run those sizes)."""
    marker = tmp_path_factory.mktemp("crash") / "died-once"
    saved = {k: os.environ.get(k) for k in (CRASH_ENV, ONCE_AT_ENV, ONCE_ENV)}
    os.environ.update({CRASH_ENV: KILLS_ALWAYS, ONCE_AT_ENV: KILLED_ONCE, ONCE_ENV: str(marker)})
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      resources={"bench": 1}, dashboard_address=":0") as cluster:
            cluster.died_once = marker
            yield cluster
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.update({key: value})


@pytest.fixture
def client(cluster_address):
    with distributed.Client(cluster_address.scheduler_address) as c:
        yield c


def in_process_keys(grid, folder):
    return done_keys(run_sweep(grid, folder, progress=False, timing=FAST, accuracy_epochs=1))


def test_groups_keep_the_implementations_of_one_size_together():
    from bench.run.distributed import groups

    grid = tiny_grid(impls=["numpy", "torch"])
    cases = grid.cases(["numpy", "torch"])
    tasks = groups(cases)
    assert [c for group in tasks for c in group] == cases  # every case once, in order
    assert len(tasks) == len(cases) // 2
    for group in tasks:
        assert [c.impl for c in group] == ["numpy", "torch"]
        assert len({(c.phase, c.batch_size) for c in group}) == 1


def test_a_local_cluster_sweep_has_the_in_process_rows_and_each_hosts_own_peak(client, tmp_path):
    """... and a backend a worker lacks (cupy: no GPU) is `unavailable` rows of its host."""
    grid = tiny_grid(impls=["numpy", "cupy"], accuracy=True)
    out = run_sweep(grid, tmp_path / "dist", progress=False, timing=FAST, accuracy_epochs=1, cluster=client)
    rows = read_rows(out)
    assert done_keys(out) == in_process_keys(grid, tmp_path / "local")
    assert len(rows) == len(done_keys(out))  # no case written twice
    assert {r["status"] for r in rows if r["impl"] == "numpy"} == {"ok"}, [r["reason"] for r in rows]
    assert {r["status"] for r in rows if r["impl"] == "cupy"} == {"unavailable"}
    meta = read_meta(out)
    hosts = meta["hosts"]
    assert {r["host"] for r in rows} == set(hosts) and len(hosts) == 2  # both workers ran cases
    for row in rows:
        if row["impl"] == "numpy" and row["phase"] != "accuracy":
            peaks = [c["gemm_gflops"]["peak"] for c in hosts[row["host"]]["calibration"]]
            assert float(row["peak_gflops"]) == pytest.approx(peaks[0])
    assert all(h["machine"]["cores"] for h in hosts.values())
    assert meta["distributed"]["resource"] == "bench=1" and meta["finished"]
    # the report (its text: the plots are tested elsewhere) shows both hosts, each with its peak
    from bench.report.document import in_run_order, render
    from bench.results import load_run

    report = render(in_run_order(load_run(out), meta), meta, [], out.name)
    section = report.split("## Hosts", 1)[1].split("\n## ", 1)[0]
    for name, info in hosts.items():
        line = next(x for x in section.splitlines() if x.startswith(f"| {name} "))
        assert f"{info['calibration'][0]['gemm_gflops']['peak']:.1f}" in line
    # compare reads one host of the run like a run of its own: its rows, its machine
    from bench.compare.sources import load_sources

    first = sorted(hosts)[0]
    whole, one = load_sources([out, f"{out}@{first}"])
    assert one.label.endswith(f"@{first}") and one.machine == hosts[first]["machine"]
    assert set(one.entries) == {row_key(r) for r in rows if r["host"] == first} < set(whole.entries)
    assert whole.machine == {}  # several hosts, none named: no one machine to compare
    with pytest.raises(ValueError, match="no row was measured on host"):
        load_sources([f"{out}@nowhere"])


def test_a_worker_killed_mid_case_runs_the_case_again_elsewhere(client, cluster_address, tmp_path):
    """The first worker to reach the case dies there; it runs again and every row is
    there, once."""
    out = run_sweep(tiny_grid(hidden_size=[5]), tmp_path / "run", progress=False, timing=FAST,
                    cluster=client, notify=lambda message: None)
    assert cluster_address.died_once.exists()  # a worker did die in that case
    rows = read_rows(out)
    assert len(rows) == len(done_keys(out)) == 6
    assert all(r["status"] == "ok" for r in rows), [(r["batch_size"], r["reason"]) for r in rows]


def test_a_case_that_kills_every_worker_is_an_error_after_the_attempt_limit(client, tmp_path):
    out = run_sweep(tiny_grid(hidden_size=[6]), tmp_path / "run", progress=False, timing=FAST,
                    cluster=client, notify=lambda message: None)
    rows = {(r["phase"], r["batch_size"]): r for r in read_rows(out)}
    assert len(rows) == 6
    killer = rows[("train_step", "3")]
    assert killer["status"] == "error" and f"died in this case {MAX_ATTEMPTS} times" in killer["reason"]
    assert all(r["status"] == "ok" for key, r in rows.items() if key != ("train_step", "3"))


# --- a scheduler and a worker as commands, and the CLI as the client -------------------
def _env():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    for key in (CRASH_ENV, ONCE_AT_ENV, ONCE_ENV):
        env.pop(key, None)
    return env


def _dask(*args):
    return [sys.executable, "-m", "distributed.cli.dask_" + args[0], *args[1:]]


@pytest.fixture
def scheduler_file(tmp_path):
    """`dask scheduler` and one `dask worker --nthreads 1 --resources bench=1` as processes."""
    path = tmp_path / "scheduler.json"
    procs = [subprocess.Popen(_dask("scheduler", "--scheduler-file", str(path), "--port", "0",
                                    "--no-dashboard"), env=_env(), cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 30
        while not path.exists():
            assert time.monotonic() < deadline, "the scheduler wrote no scheduler file"
            time.sleep(0.1)
        procs.append(subprocess.Popen(_dask("worker", "--scheduler-file", str(path), "--nthreads", "1",
                                            "--resources", "bench=1", "--name", "w1", "--no-dashboard"),
                                      env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        yield path
    finally:
        for proc in procs:  # no graceful close to wait for: nothing of theirs is kept
            proc.kill()
            proc.wait()


SWEEP = ["sweep", "--impl", "numpy", "--cell", "rnn_tanh", "--phase", "forward,train_step",
         "--seq-len", "3", "--hidden-size", "4", "--input-size", "2", "--no-accuracy", "--quiet",
         "--config", str(ROOT / "tests" / "data" / "fast_timing.toml")]


def _cli(*args):
    return [sys.executable, "-m", "bench.cli", *args]


def test_commands_a_killed_client_and_a_resume_without_the_cluster(scheduler_file, tmp_path):
    """rnnbench sweep --scheduler-file against a `dask scheduler` and a `dask worker`,
    SIGKILLed once rows arrive; --resume in-process completes it to the in-process keys."""
    run = tmp_path / "killed"
    sizes = ",".join(str(b) for b in range(1, 13))
    client = subprocess.Popen(_cli(*SWEEP, "--batch-size", sizes, "--scheduler-file", str(scheduler_file),
                                   "--out", str(run)), env=_env(), cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not ((run / "results.csv").exists() and len(read_rows(run)) >= 2):
        assert time.monotonic() < deadline and client.poll() is None, "no rows arrived"
        time.sleep(0.05)
    client.send_signal(signal.SIGKILL)
    client.wait()
    partial = read_rows(run)  # a valid CSV (a torn last line is dropped on reading)
    assert 2 <= len(partial) < 24
    assert all(r["host"].endswith("/w1") for r in partial)  # measured by the worker named w1
    assert set(read_meta(run)["command"]) >= {"--scheduler-file"}
    resumed = subprocess.run(_cli(*SWEEP, "--batch-size", sizes, "--out", str(run), "--resume"),
                             env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    rows = read_rows(run)
    assert len(rows) == len(done_keys(run)) == 24  # only what was missing ran
    assert done_keys(run) == {c.key() for c in tiny_grid(batch_size=list(range(1, 13))).cases(["numpy"])}
    import socket

    hosts = read_meta(run)["hosts"]  # the worker's, and this machine's for what it resumed
    assert socket.gethostname() in hosts and hosts[socket.gethostname()]["calibration"]
    keep = {(r["phase"], r["batch_size"]): r["host"] for r in partial}
    assert all(keep.get((r["phase"], r["batch_size"]), r["host"]) == r["host"] for r in rows)


def test_an_unreachable_scheduler_is_one_line_not_a_traceback(tmp_path):
    done = subprocess.run(_cli(*SWEEP, "--batch-size", "1", "--scheduler", "tcp://127.0.0.1:9",
                               "--wait-workers-s", "1", "--out", str(tmp_path / "run")),
                          env={**_env(), "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip().splitlines()[0]], done.stderr
    assert done.stderr.startswith("rnnbench: error: cannot reach the scheduler"), done.stderr
    assert "Traceback" not in done.stderr
