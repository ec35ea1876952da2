"""The step language at run time: what a simulated thread does (docs/config.md).

Each step is a system call or a stretch of kernel code run by the thread:
`alloc` page faults, `kalloc`/`kfree` kernel memory, `free` munmap, `lock` and
`mmap_lock` kernel locks held across steps, `sleep`, `repeat`, `exit`
(exit_group).  Between steps the thread returns to user space, where a
pending fatal signal ends its program.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workbench.kernel import coredump, memcontrol, memory, mmap, page_alloc, signal
from workbench.kernel.sched import (TASK_INTERRUPTIBLE, TASK_KILLABLE, TASK_UNINTERRUPTIBLE,
                                    Task)
from workbench.units import format_duration

if TYPE_CHECKING:
    from workbench.kernel.core import Kernel

WAIT_STATES = {"interruptible": TASK_INTERRUPTIBLE, "killable": TASK_KILLABLE,
               "uninterruptible": TASK_UNINTERRUPTIBLE}


async def run(k: Kernel, task: Task, steps: tuple) -> None:
    for step in steps:
        if task.fatal_signal_pending():
            return
        k.step()
        await step.run(k, task)


@dataclass(frozen=True)
class Alloc:
    pages: int
    vma: str
    gfp: int

    async def run(self, k: Kernel, task: Task) -> None:
        await memory.fault_in(k, task, task.mm.vma(self.vma), self.pages, self.gfp)

    def to_json(self) -> dict[str, Any]:
        return {"alloc_pages": self.pages, "vma": self.vma, "gfp_mask": self.gfp}


@dataclass(frozen=True)
class Kalloc:
    pages: int
    gfp: int

    async def run(self, k: Kernel, task: Task) -> None:
        """Kernel memory (slab, page cache) in chunks; a chunk the allocator or
        the memcg refuses fails the step with -ENOMEM and the thread goes on."""
        memcg = task.process.cgroup
        remaining = self.pages
        while remaining and not task.fatal_signal_pending():
            n = min(remaining, k.fault_chunk)
            got = await page_alloc.alloc_pages(k, task, n, self.gfp)
            charged = await memcontrol.try_charge(k, task, memcg, got, self.gfp, may_oom=False)
            k.zone.give(got - charged)
            k.zone.kernel += charged
            task.process.kalloc += charged
            if charged:
                await k.clock.sleep(task, k.machine.cost_ns(charged, k.machine.fault_rate),
                                    TASK_UNINTERRUPTIBLE, "kalloc")
            if charged < n:
                return                                      # -ENOMEM
            remaining -= n

    def to_json(self) -> dict[str, Any]:
        return {"kalloc_pages": self.pages, "gfp_mask": self.gfp}


@dataclass(frozen=True)
class Kfree:
    pages: int

    async def run(self, k: Kernel, task: Task) -> None:
        n = min(self.pages, task.process.kalloc)
        task.process.kalloc -= n
        k.zone.kernel -= n
        memcontrol.free_pages(k, task.process.cgroup, n)

    def to_json(self) -> dict[str, Any]:
        return {"kfree_pages": self.pages}


@dataclass(frozen=True)
class Free:
    pages: int
    vma: str

    async def run(self, k: Kernel, task: Task) -> None:
        await mmap.do_munmap(k, task, task.mm.vma(self.vma), self.pages)

    def to_json(self) -> dict[str, Any]:
        return {"free_pages": self.pages, "vma": self.vma}


@dataclass(frozen=True)
class Lock:
    name: str
    mode: str

    async def run(self, k: Kernel, task: Task) -> None:
        mutex = k.mutex(self.name)
        if await mutex.lock(task, WAIT_STATES[self.mode]):
            task.held_locks.append(mutex)

    def to_json(self) -> dict[str, Any]:
        return {"lock": self.name, "mode": self.mode}


@dataclass(frozen=True)
class Unlock:
    name: str

    async def run(self, k: Kernel, task: Task) -> None:
        mutex = k.mutex(self.name)
        if mutex in task.held_locks:
            task.held_locks.remove(mutex)
        mutex.unlock(task)

    def to_json(self) -> dict[str, Any]:
        return {"unlock": self.name}


@dataclass(frozen=True)
class MmapLock:
    write: bool
    mode: str

    async def run(self, k: Kernel, task: Task) -> None:
        sem = task.mm.mmap_sem
        take = sem.down_write if self.write else sem.down_read
        mode = self.mode
        if self.write and not k.features.down_write_killable:
            mode = "uninterruptible"        # down_write_killable() is 4.7 (the header says so)
        if await take(task, WAIT_STATES[mode]):
            task.held_locks.append(sem)

    def to_json(self) -> dict[str, Any]:
        return {"mmap_lock": "write" if self.write else "read", "mode": self.mode}


@dataclass(frozen=True)
class MmapUnlock:
    async def run(self, k: Kernel, task: Task) -> None:
        sem = task.mm.mmap_sem
        task.held_locks.remove(sem)
        sem.release(task)

    def to_json(self) -> dict[str, Any]:
        return {"mmap_unlock": True}


@dataclass(frozen=True)
class FutexLock:
    name: str
    robust: bool

    async def run(self, k: Kernel, task: Task) -> None:
        await k.futex(self.name).lock(task, self.robust)

    def to_json(self) -> dict[str, Any]:
        return {"futex_lock": self.name, "robust": self.robust}


@dataclass(frozen=True)
class FutexUnlock:
    name: str

    async def run(self, k: Kernel, task: Task) -> None:
        k.futex(self.name).unlock(task)

    def to_json(self) -> dict[str, Any]:
        return {"futex_unlock": self.name}


@dataclass(frozen=True)
class CoreDump:
    pipe: str

    async def run(self, k: Kernel, task: Task) -> None:
        await coredump.do_coredump(k, task, k.pipe(self.pipe))

    def to_json(self) -> dict[str, Any]:
        return {"core_dump": self.pipe}


@dataclass(frozen=True)
class PipeRead:
    pipe: str
    gfp: int
    rate: int                   # bytes/s its writes reach the disk at; 0: no extra cost

    async def run(self, k: Kernel, task: Task) -> None:
        async def write_out(pages: int) -> None:       # to a file: page cache, then the disk
            await Kalloc(pages, self.gfp).run(k, task)
            if self.rate and not task.fatal_signal_pending():
                await k.clock.sleep(task, k.machine.cost_ns(pages, self.rate),
                                    TASK_UNINTERRUPTIBLE, "write")
        await coredump.read_core(k, task, k.pipe(self.pipe), write_out)

    def to_json(self) -> dict[str, Any]:
        return {"pipe_read": self.pipe, "gfp_mask": self.gfp, "rate": self.rate}


@dataclass(frozen=True)
class Vfork:
    child: str

    async def run(self, k: Kernel, task: Task) -> None:
        await k.vfork(task, self.child)

    def to_json(self) -> dict[str, Any]:
        return {"vfork": self.child}


@dataclass(frozen=True)
class Sleep:
    ns: int
    mode: str
    jitter_ns: int

    async def run(self, k: Kernel, task: Task) -> None:
        ns = self.ns
        if self.jitter_ns:
            ns += task.rng(k).randint(0, self.jitter_ns)
        await k.clock.sleep(task, ns, WAIT_STATES[self.mode], "sleep")

    def to_json(self) -> dict[str, Any]:
        return {"sleep": format_duration(self.ns), "mode": self.mode,
                "jitter": format_duration(self.jitter_ns)}


@dataclass(frozen=True)
class Repeat:
    times: int | None            # None: for ever
    body: tuple

    async def run(self, k: Kernel, task: Task) -> None:
        done = 0
        while (self.times is None or done < self.times) and not task.fatal_signal_pending():
            await run(k, task, self.body)
            done += 1

    def to_json(self) -> dict[str, Any]:
        return {"repeat": self.times if self.times is not None else "forever",
                "do": [s.to_json() for s in self.body]}


@dataclass(frozen=True)
class Exit:
    code: int

    async def run(self, k: Kernel, task: Task) -> None:
        k.log.emit("exit_group", pid=task.pid, tgid=task.tgid, comm=task.comm, code=self.code)
        signal.group_exit(k, task.process, self.code)

    def to_json(self) -> dict[str, Any]:
        return {"exit": self.code}
