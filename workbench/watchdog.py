"""Guards around one run against policy code that will not return: a wall-clock
bound, and os._exit() turned into an exception.

Every run is bounded in virtual time and in steps (limits.steps,
limits.steps_per_instant), which stops a policy that lets the kernel spin.
A policy that never returns from a hook (`while True: pass`) takes no step,
so the run would hang; SIGALRM interrupts it.  The exception is raised in
whatever Python code is running: inside a policy's hook it becomes that
policy's error (outcome "error", naming it, with the traceback), elsewhere an
internal error.  It is raised again each second in case the code swallows
it.  The limit is a property of the invocation (`workbench run
--run-timeout`), never of a run's log, which stays the same whatever it is.
Code that catches even that is stopped by the parent process, which kills
the worker running it (workbench/runner.py).

os._exit() would end the worker (or, run in the parent, the whole
invocation) without a word; during a run it raises ProcessExit instead,
which a policy's hook turns into that policy's error.
"""

from __future__ import annotations

import contextlib
import os
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


class ProcessExit(Exception):
    """os._exit() was called during a run."""


@contextlib.contextmanager
def no_process_exit() -> Iterator[None]:
    real = os._exit

    def refuse(status: int) -> None:
        raise ProcessExit(f"os._exit({status!r}) called during a run")

    os._exit = refuse
    try:
        yield
    finally:
        os._exit = real
