"""Named points where the crash-safety tests kill a sweep: with RNNBENCH_CRASH_AT=name
(or name:N, the N-th time the point is reached) the process SIGKILLs itself there, so a
test hits a window of microseconds (between two writes, inside a file replacement) every
time instead of hoping a timer lands in it. Unset, a point costs one dict lookup; none
sits inside a timed region."""
from __future__ import annotations

import os
import signal

ENV = "RNNBENCH_CRASH_AT"
POINTS = ("calibration", "case", "between-raw-and-row", "meta-replace")
_reached: dict[str, int] = {}


def crash_point(name: str) -> None:
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    target, _, nth = wanted.partition(":")
    if target != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
