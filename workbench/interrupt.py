"""Ctrl-C, SIGTERM and SIGHUP during runs.

Both set a flag that the kernel's clock checks between time steps, so that
the signal cannot land in the middle of kernel code, Trio's run loop or a
finalizer (where Python would drop it), and every finished log stays intact.
Further signals change nothing: every run is bounded (limits.steps), so the
next check comes soon, and a KeyboardInterrupt raised inside Trio's own code
could leave its run loop waiting for ever.  Once a signal has come, later
ones are ignored until the process exits: it is on its way out, and must not
die by the signal instead of reporting.  Exit status: 128 + the signal's
number, as shells report it.
"""

from __future__ import annotations

import contextlib
import signal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

# SIGHUP: the terminal went away; its runs end as after Ctrl-C.
SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                if hasattr(signal, name))


class Interrupt:
    requested = False
    signalled = False                           # by a real signal, not a test
    signum = signal.SIGINT
    _depth = 0

    @classmethod
    @contextlib.contextmanager
    def handled(cls) -> Iterator[None]:
        """Signals set the flag while inside; nested uses share the outer one
        (the command line holds it from its first import on, so that a
        Ctrl-C cannot land inside the import machinery either)."""
        if cls._depth:
            cls._depth += 1
            try:
                yield
            finally:
                cls._depth -= 1
            return

        def handler(signum: int, _frame: object) -> None:
            if not cls.requested:
                cls.requested, cls.signalled, cls.signum = True, True, signum
        cls.requested = cls.signalled = False
        cls._depth = 1
        previous = {}
        try:
            for s in SIGNALS:
                previous[s] = signal.signal(s, handler)
        except ValueError:                      # not the main thread: leave them alone
            pass
        try:
            yield
        finally:
            cls._depth = 0
            for s, h in previous.items():
                signal.signal(s, signal.SIG_IGN if cls.signalled else h)

    @classmethod
    def check(cls) -> None:
        if cls.requested:
            raise KeyboardInterrupt

    @classmethod
    def genuine(cls, e: BaseException) -> bool:
        """Whether e is the user's interrupt, rather than a plugin raising
        KeyboardInterrupt itself."""
        return isinstance(e, KeyboardInterrupt) and cls.requested

    @classmethod
    def exit_status(cls) -> int:
        return 128 + int(cls.signum)
