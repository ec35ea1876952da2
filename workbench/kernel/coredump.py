"""A core dump to a pipe (fs/coredump.c do_coredump() with a `|` core_pattern, 4.5).

A `core_dump = "PIPE"` step: the thread's process starts a group core dump
(SIGNAL_GROUP_COREDUMP, so 4.5's task_will_free_mem() is false for it),
takes mmap_sem only briefly (coredump_wait()), then writes its anonymous
memory into the pipe, 16 pages at a time (PIPE_DEF_BUFFERS), without
mmap_sem: get_dump_page() per page.  A page the OOM reaper freed meanwhile is
a hole in the core (dump_skip()), and the dump is incomplete.  When the pipe
is full the dumper waits in pipe_write().  The model takes that wait as one
SIGKILL does not end (in 4.5 a SIGKILL makes dump_interrupted() end the dump;
a dumper stuck where the signal is not checked is the case that motivated
the reaper).  After the dump the process exits.

A `pipe_read = "PIPE"` step is the core_pattern helper (abrt-hook-ccpp): it
reads the pipe until the dump ends and writes what it read to a file, which
allocates page cache (a kalloc of the same size) - the allocation that needs
the victim's memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.kernel import signal
from workbench.kernel.sched import TASK_INTERRUPTIBLE, TASK_UNINTERRUPTIBLE, Task, WaitQueue
from workbench.units import kb

if TYPE_CHECKING:
    from workbench.kernel.core import Kernel

PIPE_DEF_BUFFERS = 16            # pages a pipe holds
SIGSEGV_CORE = 128 + 11


class Pipe:
    def __init__(self, k: Kernel, name: str):
        self.k = k
        self.name = name
        self.pages = 0
        self.closed = False
        self.readers = WaitQueue(k)
        self.writers = WaitQueue(k)

    async def write(self, task: Task, n: int) -> None:
        while n:
            while self.pages >= PIPE_DEF_BUFFERS:
                await self.writers.wait(task, TASK_UNINTERRUPTIBLE, f"pipe_write:{self.name}")
            put = min(n, PIPE_DEF_BUFFERS - self.pages)
            self.pages += put
            n -= put
            self.readers.wake_up_all()

    async def read(self, task: Task) -> int:
        """Pages read (all there are), 0 at the end of the dump; -1 if a
        fatal signal ended the wait."""
        while not self.pages and not self.closed:
            if not await self.readers.wait(task, TASK_INTERRUPTIBLE, f"pipe_read:{self.name}"):
                return -1
        n, self.pages = self.pages, 0
        self.writers.wake_up_all()
        return n

    def close(self) -> None:
        self.closed = True
        self.readers.wake_up_all()


async def do_coredump(k: Kernel, task: Task, pipe: Pipe) -> None:
    proc = task.process
    mm = task.mm
    proc.core_dumping = True
    await mm.mmap_sem.down_read(task, TASK_UNINTERRUPTIBLE)    # coredump_wait()
    plan = [(vma, vma.anon) for vma in mm.vmas if vma.anonymous]
    mm.mmap_sem.up_read()
    ids = {"pid": task.pid, "tgid": task.tgid, "comm": task.comm, "pipe": pipe.name}
    k.log.emit("core_dump_start", **ids, size_kb=kb(sum(n for _, n in plan)))
    written = holes = 0
    rate = k.machine.fault_rate
    for vma, left in plan:
        while left:
            if vma.anon < left:                  # reaped under the dump: holes
                holes += left - vma.anon
                left = vma.anon
                continue
            n = min(left, PIPE_DEF_BUFFERS)
            await k.clock.sleep(task, k.machine.cost_ns(n, rate), TASK_UNINTERRUPTIBLE,
                                "dump_emit")
            await pipe.write(task, n)
            written += n
            left -= n
    pipe.close()
    k.log.emit("core_dump", **ids, written_kb=kb(written), holes_kb=kb(holes),
               complete=holes == 0)
    signal.group_exit(k, proc, SIGSEGV_CORE)


async def read_core(k: Kernel, task: Task, pipe: Pipe, write_out) -> None:
    """The helper's loop: read what is there, write it to a file, until EOF."""
    while True:
        n = await pipe.read(task)
        if n <= 0:
            return
        await write_out(n)
