"""A wall-clock bound on one run, for code that loops without ever returning to the kernel.

Every run is bounded in virtual time and in steps (limits.steps,
limits.steps_per_instant), which stops a policy that lets the kernel spin.
A policy that never returns from a hook (`while True: pass`) takes no step,
so the run would hang; SIGALRM interrupts it.  The exception is raised in
whatever Python code is running: inside a policy's hook it becomes that
policy's error (outcome "error", naming it, with the traceback), elsewhere an
internal error.  It is raised again each second in case the code swallows
it.  The limit is a property of the invocation (`workbench run
--run-timeout`), never of a run's log, which stays the same whatever it is.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

DEFAULT_S = 600.0


class WallClockLimit(Exception):
    """The run has taken more wall-clock time than --run-timeout allows."""


@contextlib.contextmanager
def wall_clock_limit(seconds: float | None) -> Iterator[None]:
    """Raise WallClockLimit in this thread after `seconds` (None or 0: no
    limit; only the main thread can take signals)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum: int, frame: object) -> None:
        raise WallClockLimit(f"the run took more than {seconds:g} s of wall-clock time "
                             "(workbench run --run-timeout): code that never returns")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
