"""Fatal signals (kernel/signal.c).

Only group-wide fatal signals are modelled: SIGKILL from the OOM killer, a
fatal SIGSEGV, and exit_group()'s zap of the other threads.  Each sets
SIGNAL_GROUP_EXIT and cancels every thread's signal scope: killable waits end
at once, D-state waits keep the signal pending until they end
(workbench.kernel.sched).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.kernel.sched import Process

if TYPE_CHECKING:
    from workbench.kernel.core import Kernel

SIGKILL_EXIT = 128 + 9


def group_exit(k: Kernel, proc: Process, code: int) -> None:
    if proc.group_exit:
        return
    proc.group_exit = True
    proc.exit_code = code
    for t in proc.threads:
        t.signal_scope.cancel()


def send_sigkill(k: Kernel, proc: Process) -> None:
    """do_send_sig_info(SIGKILL, SEND_SIG_FORCED, p, true)."""
    group_exit(k, proc, SIGKILL_EXIT)
