"""Named points where the crash-safety tests kill a sweep: with RNNBENCH_CRASH_AT=name
(or name:N, the N-th time the point is reached) the process SIGKILLs itself there, so a
test hits a window of microseconds (between two writes, inside a file replacement) every
time instead of hoping a timer lands in it. Unset, a point costs one dict lookup; none
sits inside a timed region.

Refinements for the distributed sweep's tests, whose victims are worker processes that a
test cannot reach into: `name@TEXT` kills only where the point's detail (the case, for
"case") contains TEXT; RNNBENCH_CRASH_ONCE_AT takes a second target of the same form that
kills only the first process to create the file RNNBENCH_CRASH_ONCE names (atomically),
so a case that killed one worker completes on the next while the other target kills
every time."""
from __future__ import annotations

import os
import signal

ENV = "RNNBENCH_CRASH_AT"
ONCE_AT_ENV = "RNNBENCH_CRASH_ONCE_AT"
ONCE_ENV = "RNNBENCH_CRASH_ONCE"
POINTS = ("calibration", "case", "between-raw-and-row", "meta-replace")
_reached: dict[tuple[str, str], int] = {}


def _hit(spec: str, name: str, detail: str) -> bool:
    """Whether the target `spec` (name[:N][@TEXT]) is reached now, counting the visit."""
    spec, _, text = spec.partition("@")
    target, _, nth = spec.partition(":")
    if target != name or text not in detail:
        return False
    key = (spec, text)
    _reached[key] = _reached.get(key, 0) + 1
    return _reached[key] >= int(nth or 1)


def crash_point(name: str, detail: str = "") -> None:
    always, once = os.environ.get(ENV), os.environ.get(ONCE_AT_ENV)
    if not (always or once):
        return
    if always and _hit(always, name, detail):
        os.kill(os.getpid(), signal.SIGKILL)
    if once and _hit(once, name, detail):
        try:
            os.close(os.open(os.environ[ONCE_ENV], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:  # another process died here already
            return
        os.kill(os.getpid(), signal.SIGKILL)
