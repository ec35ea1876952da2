"""Ctrl-C and SIGTERM during runs.

Both set a flag that the kernel's clock checks between time steps, so that
the signal cannot land in the middle of kernel code or in a finalizer (where
Python would drop it), and every finished log stays intact.  A second signal
stops at once.  Exit status: 128 + the signal's number, as shells report it.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupt:
    requested = False
    signum = signal.SIGINT

    @classmethod
    @contextlib.contextmanager
    def handled(cls) -> Iterator[None]:
        def handler(signum: int, _frame: object) -> None:
            if cls.requested:                   # a second signal: stop at once
                raise KeyboardInterrupt
            cls.requested, cls.signum = True, signum
        cls.requested = False
        previous = {}
        try:
            for s in SIGNALS:
                previous[s] = signal.signal(s, handler)
        except ValueError:                      # not the main thread: leave them alone
            pass
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

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
