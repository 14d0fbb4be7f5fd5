"""One writer per run folder: an advisory lock (fcntl.flock) on DIR/.lock, held for the
whole sweep, resume or --force. The operating system drops it when the holder exits, by
any means (SIGKILL too), so a lock file left behind by a dead process never blocks a resume;
a live holder is named (pid, start time, command) in the refusal.
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

LOCK_FILE = ".lock"


class RunLocked(ValueError):
    """Another live process holds the run folder (a ValueError: the CLI's one-line error)."""


class RunLock:
    def __init__(self, run_dir, holder: dict):
        self.path = Path(run_dir) / LOCK_FILE
        self.holder = {"pid": os.getpid(), **holder}
        self._handle = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            text = handle.read()
            handle.close()
            raise RunLocked(f"{self.path.parent} is in use by another sweep: {describe(text)}; "
                            "wait for it to finish or stop it, then --resume") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(self.holder) + "\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing drops the flock; the file stays (harmless)
            self._handle = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def describe(text: str) -> str:
    """'pid 1234, started 2026-12-01T10:00:00+00:00 (rnnbench sweep ...)' from a lock file."""
    try:
        holder = json.loads(text)
        command = " ".join(map(str, holder.get("command") or []))
        return (f"pid {holder.get('pid')}, started {holder.get('started')}"
                + (f" ({command})" if command else ""))
    except (ValueError, AttributeError):
        return "a process whose lock file is unreadable"
