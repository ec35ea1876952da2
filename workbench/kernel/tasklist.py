"""The task list and the index of pending OOM victims (include/linux/sched.h
for_each_process(), for_each_process_thread(); mm/oom_kill.c, 4.5).

The list holds the forked processes in fork order; a process leaves it in
O(1) when its last thread is gone.  Beside it the kernel keeps an index of the
threads that can make select_bad_process() abort - TIF_MEMDIE, or PF_EXITING
(4.5's oom_scan_process_thread() aborts on both) - and of the processes with
signal->oom_mm (4.9's oom_evaluate_task() aborts on those), so that an
out_of_memory() call with a victim pending needs no walk of every thread.
The walk the kernel does is still what a run is charged: each thread or
process the scan would have looked at up to the one that makes it abort
counts as a step (limits.steps), from prefix counts of live entries by
list position.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from workbench.kernel.sched import TASK_DEAD

if TYPE_CHECKING:
    from workbench.kernel.sched import Process, Task


class LiveCounts:
    """How many live entries sit at or before a list position: a Fenwick
    tree over append-only slots, O(log n) per change or question."""

    def __init__(self) -> None:
        self._live: list[int] = []          # 1 or 0 per slot
        self._tree: list[int] = [0]         # 1-based Fenwick tree, len = capacity + 1

    def append(self) -> int:
        """A new live entry at the end; its slot."""
        slot = len(self._live)
        self._live.append(1)
        if len(self._live) >= len(self._tree):
            self._rebuild(2 * len(self._tree))
        else:
            self._add(slot, 1)
        return slot

    def kill(self, slot: int) -> None:
        if self._live[slot]:
            self._live[slot] = 0
            self._add(slot, -1)

    def through(self, slot: int) -> int:
        """Live entries at slots 0..slot."""
        tree, i, n = self._tree, slot + 1, 0
        while i > 0:
            n += tree[i]
            i &= i - 1
        return n

    def _add(self, slot: int, delta: int) -> None:
        tree, i = self._tree, slot + 1
        while i < len(tree):
            tree[i] += delta
            i += i & -i

    def _rebuild(self, size: int) -> None:
        tree = [0] * size
        for i, v in enumerate(self._live, 1):
            tree[i] += v
            j = i + (i & -i)
            if j < size:
                tree[j] += tree[i]
        self._tree = tree


class TaskList:
    """The forked processes in fork order, their live threads, and the
    pending victims, each kept in list order."""

    def __init__(self) -> None:
        self.processes: dict[Process, None] = {}    # ordered: O(1) removal
        self._threads = LiveCounts()
        self._procs = LiveCounts()
        self._pending: dict[Task, None] = {}        # TIF_MEMDIE or PF_EXITING, not dead
        self._victims: dict[Process, None] = {}     # signal->oom_mm set, still alive

    def __iter__(self) -> Iterator[Process]:
        return iter(self.processes)

    def add(self, proc: Process) -> None:
        """The process joins the end of the list (copy_process())."""
        self.processes[proc] = None
        proc.list_slot = self._procs.append()
        for t in proc.threads:
            t.list_slot = self._threads.append()

    def thread_died(self, task: Task) -> None:
        """The thread is TASK_DEAD; with its group's last thread the process
        is no longer alive (its removal follows in exit_notify)."""
        self._threads.kill(task.list_slot)
        self._pending.pop(task, None)
        proc = task.process
        if not proc.alive:
            self._procs.kill(proc.list_slot)
            self._victims.pop(proc, None)

    def remove(self, proc: Process) -> None:
        del self.processes[proc]

    def flags_changed(self, task: Task) -> None:
        """TIF_MEMDIE or PF_EXITING of a listed thread changed."""
        if task.list_slot < 0 or task.state == TASK_DEAD:
            return
        if task.tif_memdie or task.exiting:
            self._pending[task] = None
        else:
            self._pending.pop(task, None)

    def victim_marked(self, proc: Process) -> None:
        """signal->oom_mm was set (4.9 mark_oom_victim())."""
        if proc.list_slot >= 0 and proc.alive:
            self._victims[proc] = None

    def pending_threads(self) -> list[Task]:
        """TIF_MEMDIE or PF_EXITING threads, in for_each_process_thread() order."""
        return sorted(self._pending, key=_slot)

    def victim_processes(self) -> list[Process]:
        """Processes with signal->oom_mm, in for_each_process() order."""
        return sorted(self._victims, key=_slot)

    def threads_through(self, task: Task) -> int:
        """Live threads a walk of the list looks at up to and including task."""
        return self._threads.through(task.list_slot)

    def processes_through(self, proc: Process) -> int:
        return self._procs.through(proc.list_slot)

    def threads_ever(self) -> int:
        """Threads ever listed: a bound on what one walk of the list looks at."""
        return len(self._threads._live)


def _slot(entry: Task | Process) -> int:
    return entry.list_slot
