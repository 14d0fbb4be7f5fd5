"""A sweep on a Dask cluster: `rnnbench sweep ... --scheduler tcp://HOST:8786` (or
`--scheduler-file FILE`). Without either flag nothing here is imported (the in-process
sweep, bench.run.sweep, stays the embedded default), and dask is an optional extra
(`pip install -e ".[dist]"`).

What the engine must not disturb, and how it is kept out of the timings:
- one worker process per host with one task thread, and every task asks for the
  host-exclusive resource `bench=1` (`dask worker ADDR --nthreads 1 --resources bench=1`):
  a host runs one case at a time, as the in-process sweep does;
- a task is a *group*: the cases that are compared with each other (every implementation
  of one cell, structure, phase and size), run back to back on one host in the order the
  in-process sweep interleaves them, so a ratio always pairs two medians from the same host
  and the same minutes; an accuracy task trains every implementation of one cell;
- each host calibrates its own GEMM peak (on its first case at each dtype and thread
  count, as in-process) and reports its machine metadata once: rows carry `host`, their
  `peak_gflops` is that host's, and meta.json gains `hosts` {host: {machine, calibration}}.

The client is the only writer (bench.results.RowWriter: every line fsync'ed). Workers send
each row the moment its case ends, through a queue held by the scheduler, so a worker that
dies loses only the case it was running; the client writes rows in the order they arrive.
Attempts are counted where a dead worker cannot lose them, in the scheduler's metadata: a
worker marks a case started before running it and done after sending its row; a group run
again (the scheduler reschedules the task of a dead worker, or the client resubmits one
that ran out of the scheduler's allowed failures) skips done cases and turns a case that
was started MAX_ATTEMPTS times without finishing into an `error` row, as the in-process
sweep's in_progress.json does. A worker that lacks a backend writes `unavailable` rows for
its host. A killed client leaves a valid CSV; `--resume`, with or without a cluster, runs
what is missing. The run folder's lock and resume rules are the in-process sweep's.

Footprints are not measured in a distributed sweep: a fresh-process start belongs to one
host, and `rnnbench footprint RUN_DIR` on that host measures it (meta.json says so).
"""
from __future__ import annotations

import atexit
import itertools
import json
import shutil
import socket
import tempfile
import time
import traceback
import uuid
from pathlib import Path

from bench.record import KEY_COLUMNS, TRACEBACK_FIELD, empty_row
from bench.spec import Case, Grid

RESOURCE = "bench"  # the host-exclusive resource every task asks for (one unit per worker)
POLL_S = 0.2  # how long the client waits on the queue before looking at its tasks again
# A group whose task ran out of the scheduler's allowed failures is submitted again; each
# resubmission follows at least one more worker death in one of its cases, and a case is
# never run after MAX_ATTEMPTS deaths, so this bound is only a guard.
MAX_RESUBMITS = 20


class DistributedUnavailable(OSError):
    """dask.distributed is not installed, the scheduler cannot be reached, or no worker
    offers the resource (the CLI prints it as one line, like any OSError)."""


def _distributed():
    try:
        import distributed
    except ImportError as exc:
        raise DistributedUnavailable(
            f"--scheduler needs dask.distributed ({exc}); install it with: pip install -e \".[dist]\"") from exc
    return distributed


def connect(address: str | None = None, scheduler_file: str | None = None, timeout_s: float = 30):
    """A Client of the scheduler at `address` (tcp://HOST:PORT) or in `scheduler_file`."""
    distributed = _distributed()
    try:
        if scheduler_file:
            return distributed.Client(scheduler_file=scheduler_file, timeout=timeout_s)
        return distributed.Client(address, timeout=timeout_s)
    except (OSError, TimeoutError) as exc:
        raise DistributedUnavailable(f"cannot reach the scheduler {address or scheduler_file}: "
                                     f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc


def groups(cases: list[Case]) -> list[list[Case]]:
    """The cases in tasks: consecutive cases that differ only in impl (Grid.cases puts the
    implementations innermost), in their order."""
    def without_impl(case: Case) -> tuple:
        return tuple(v for k, v in zip(KEY_COLUMNS, case.key()) if k != "impl")
    return [list(group) for _, group in itertools.groupby(cases, key=without_impl)]


def _key_text(case: Case) -> str:
    return json.dumps(list(case.key()))  # metadata keys must be strings


# --- on a worker ------------------------------------------------------------------------
_STATES: dict[str, object] = {}  # run id -> the worker's bench.run.sweep._Sweep for it


def host_name(worker) -> str:
    """The host a worker's rows name: its machine's name, and the worker's own name when
    it was given one (`dask worker --name`, or LocalCluster's 0, 1, ...) so that two
    workers on one machine stay apart."""
    machine_name = socket.gethostname()
    name = getattr(worker, "name", None)
    if name is None or str(name) in (getattr(worker, "address", None), machine_name):
        return machine_name
    return f"{machine_name}/{name}"


def _worker_state(run_id: str):
    """The state this worker keeps for one run across its tasks: backends, calibration
    peaks and oracle results, as one in-process sweep keeps them."""
    from bench.measure import machine
    from bench.run.sweep import _Sweep

    if run_id not in _STATES:
        for earlier in _STATES.values():  # one run at a time per worker: an earlier run's goes
            shutil.rmtree(earlier.run_dir, ignore_errors=True)
        _STATES.clear()
        folder = Path(tempfile.mkdtemp(prefix="rnnbench-worker-"))  # exported models
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        state = _Sweep({"machine": machine.machine_meta()}, folder)
        state.sent_calibrations = 0
        state.sent_machine = False
        _STATES[run_id] = state
    return _STATES[run_id]


def _host_message(state, host: str) -> dict | None:
    """What the client does not yet know about this host: its machine (once) and the
    calibrations made since the last message."""
    calibrations = state.meta.get("calibration", [])
    new = calibrations[state.sent_calibrations:]
    if state.sent_machine and not new:
        return None
    message = {"host": host, "calibration": new}
    if not state.sent_machine:
        message["machine"] = state.meta["machine"]
    state.sent_machine, state.sent_calibrations = True, len(calibrations)
    return message


def run_group(run_id: str, queue_name: str, grid: Grid, cases: list[Case], max_case_s: float,
              timing: dict, max_attempts: int, allow_oversubscribe: bool) -> int:
    """A task: run `cases` back to back on this worker, sending each row as it ends;
    -> how many rows it sent (the rows themselves travel through the queue)."""
    from distributed import Queue, get_client, get_worker

    from bench.measure import machine

    client, worker = get_client(), get_worker()
    host, queue, state = host_name(worker), Queue(queue_name, client=client), _worker_state(run_id)
    cores, sent = machine.cores_available(), 0
    for case in cases:
        started = [run_id, "started", _key_text(case)]
        done = [run_id, "done", _key_text(case)]
        if client.get_metadata(done, False):
            continue  # sent by an earlier run of this group
        attempts = int(client.get_metadata(started, 0)) + 1
        client.set_metadata(started, attempts)
        if attempts > max_attempts:
            row = empty_row(case, "error", f"the worker died in this case {max_attempts} times "
                            "(killed, crashed or out of memory); not run again")
        elif case.threads > cores and not allow_oversubscribe:
            row = empty_row(case, "skipped", f"{case.threads} threads exceed the {cores} core(s) "
                            f"of host {host} (--allow-oversubscribe runs them)")
        else:
            row = state.row(case, max_case_s, timing, grid)
        row["host"] = host
        message = _host_message(state, host)
        queue.put({"row": row, **({"host": message} if message else {})})
        client.set_metadata(done, True)
        sent += 1
    return sent


def run_accuracy(run_id: str, queue_name: str, grid: Grid, names: list[str], epochs: int,
                 cell: str, num_layers: int, bidirectional: bool) -> int:
    """A task: the accuracy rows of one cell and structure (bench.run.sweep.accuracy_rows)."""
    from distributed import Queue, get_client, get_worker

    from bench.run.sweep import accuracy_rows

    client, worker = get_client(), get_worker()
    host, queue, state = host_name(worker), Queue(queue_name, client=client), _worker_state(run_id)
    rows = accuracy_rows(state, grid, names, epochs, cell, num_layers, bidirectional)
    message = _host_message(state, host)
    for row in rows:
        row["host"] = host
        queue.put({"row": row, **({"host": message} if message else {})})
        message = None
    return len(rows)


# --- on the client ----------------------------------------------------------------------
class _Task:
    """One submitted group (or accuracy task) and what the client knows of it."""

    def __init__(self, cases: list[Case], submit):
        self.cases, self._submit, self.submissions = cases, submit, 0
        self.future = None
        self.resubmit()

    def resubmit(self) -> None:
        self.submissions += 1
        self.future = self._submit()


def run_on_cluster(client, out: Path, grid: Grid, cases: list[Case], accuracy: list[tuple],
                   meta: dict, writer, *, max_case_s: float, timing: dict, accuracy_epochs: int,
                   max_attempts: int, allow_oversubscribe: bool, progress: bool, notify) -> None:
    """Submit every group and accuracy task, write each row as it arrives (skipping one
    that a re-run group sent again), and give every case that never came back an error
    row. `accuracy`: (names, cell, num_layers, bidirectional) per accuracy task."""
    from distributed import Queue
    from tqdm import tqdm

    run_id = uuid.uuid4().hex
    queue_name = f"rnnbench-rows-{run_id}"
    queue = Queue(queue_name, client=client)
    meta["distributed"] = {"scheduler": client.scheduler.address, "run_id": run_id,
                           "workers": _workers(client), "resource": f"{RESOURCE}=1",
                           "footprint": "not measured: run `rnnbench footprint RUN_DIR` on a host"}
    meta.setdefault("hosts", {})
    tasks = []
    for number, group in enumerate(groups(cases)):
        submit = _submitter(client, run_group, f"rnnbench-{run_id}-group{number}", run_id, queue_name,
                            grid, group, max_case_s, timing, max_attempts, allow_oversubscribe)
        tasks.append(_Task(group, submit))
    for number, (names, cell, layers, bidirectional) in enumerate(accuracy):
        submit = _submitter(client, run_accuracy, f"rnnbench-{run_id}-accuracy{number}", run_id,
                            queue_name, grid, names, accuracy_epochs, cell, layers, bidirectional)
        tasks.append(_Task([], submit))
    expected = len(cases) + sum(len(names) for names, *_ in accuracy)
    seen: set[tuple] = set()
    bar = tqdm(total=expected, unit="row", disable=not progress)
    try:
        pending = list(tasks)
        while pending:
            _drain(queue, writer, meta, seen, bar, out)
            still = []
            for task in pending:
                if not task.future.done():
                    still.append(task)
                elif _finished(task, writer, seen, notify):
                    continue
                else:
                    still.append(task)  # submitted again
            pending = still
            if pending and client.status not in ("running", "connecting"):
                raise DistributedUnavailable(f"lost the scheduler ({client.status}); the rows so far "
                                             "are saved: --resume runs what is missing")
            if pending:
                _wait_any([t.future for t in pending], POLL_S)
        _drain(queue, writer, meta, seen, bar, out)
        for case in cases:
            if case.key() not in seen:
                row = empty_row(case, "error", "no row came back from the cluster for this case")
                writer.write(row)
                seen.add(case.key())
    finally:
        bar.close()
        for task in tasks:
            if task.future is not None and not task.future.done():
                task.future.cancel()


def _submitter(client, fn, key: str, *args):
    counter = itertools.count()

    def submit():
        # a fresh key per submission: a key the scheduler gave up on stays erred
        return client.submit(fn, *args, key=f"{key}-{next(counter)}", pure=False,
                             resources={RESOURCE: 1})
    return submit


def _workers(client) -> dict:
    info = client.scheduler_info().get("workers", {})
    return {address: {"name": str(w.get("name")), "nthreads": w.get("nthreads"),
                      "resources": w.get("resources", {})} for address, w in info.items()}


def _wait_any(futures, timeout_s: float) -> None:
    from distributed import wait

    try:
        wait(futures, timeout=timeout_s, return_when="FIRST_COMPLETED")
    except TimeoutError:
        pass


def _drain(queue, writer, meta: dict, seen: set, bar, out: Path) -> None:
    """Write every row in the queue now; a row whose key was written already (a group run
    again after its worker died sends the cases before the dead one again only if their
    done mark was lost with it) is dropped. What a host reports of itself goes to
    meta.json at once, before its rows: a killed client keeps it."""
    from bench.results import write_meta

    while True:
        try:
            items = queue.get(batch=True)
        except Exception:  # an empty or closing queue
            return
        if not items:
            return
        hosts = [item["host"] for item in items if "host" in item]
        for message in hosts:
            _add_host(meta, message)
        if hosts:
            write_meta(out, meta)
        for item in items:
            row = item["row"]
            key = tuple(row[k] for k in KEY_COLUMNS)
            if key in seen:
                continue
            writer.write(row)
            seen.add(key)
            bar.update(1)


def _add_host(meta: dict, message: dict) -> None:
    entry = meta["hosts"].setdefault(message["host"], {"machine": None, "calibration": []})
    if message.get("machine"):
        entry["machine"] = message["machine"]
    entry["calibration"].extend(message.get("calibration", []))


def _finished(task: _Task, writer, seen: set, notify) -> bool:
    """Handle a task that ended: True if it is over, False if it was submitted again."""
    future = task.future
    if future.status == "finished":
        return True
    if future.status == "cancelled":
        exc = RuntimeError("the task was cancelled")
        text = ""
    else:
        exc = future.exception()
        text = "".join(traceback.format_exception(type(exc), exc, future.traceback()))
    from distributed import KilledWorker

    if isinstance(exc, KilledWorker) and task.submissions < MAX_RESUBMITS:
        notify(f"a worker died {task.submissions} time(s) running {future.key}: submitting it again "
               "(each case that killed one is counted, and not run past the attempt limit)")
        task.resubmit()
        return False
    reason = f"the cluster task failed: {type(exc).__name__}: {exc}".splitlines()[0]
    for case in task.cases:
        if case.key() not in seen:
            writer.write({**empty_row(case, "error", reason), TRACEBACK_FIELD: text})
            seen.add(case.key())
    if not task.cases:  # an accuracy task: its rows are made on the worker
        notify(f"{future.key}: {reason}")
    return True


def wait_for_workers(client, timeout_s: float = 60) -> int:
    """Block until at least one worker offering the resource has joined; -> their count."""
    deadline = time.monotonic() + timeout_s
    while True:
        workers = [w for w in client.scheduler_info().get("workers", {}).values()
                   if w.get("resources", {}).get(RESOURCE)]
        if workers:
            return len(workers)
        if time.monotonic() > deadline:
            raise DistributedUnavailable(
                f"no worker with the resource {RESOURCE}=1 joined the scheduler within {timeout_s:g} s; "
                f"start one per host: dask worker ADDRESS --nthreads 1 --resources {RESOURCE}=1")
        time.sleep(0.5)
