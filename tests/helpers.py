"""TOML builders for small test scenarios (tests/ is on sys.path via pytest's `pythonpath`)."""

from __future__ import annotations


def process(name, *, heap=None, resident=None, program=(), extra="", threads=None):
    """A [[process]] table: one anon VMA "heap" and one thread "main" by default."""
    out = f'[[process]]\nname = "{name}"\n{extra}\n'
    if heap:
        out += f'[[process.vma]]\nname = "heap"\nkind = "anon"\nsize = "{heap}"\n'
        if resident:
            out += f'resident = "{resident}"\n'
    for tname, prog in (threads or [("main", program)]):
        out += f'[[process.thread]]\nname = "{tname}"\nprogram = [{", ".join(prog)}]\n'
    return out


def mmap_writer_victim(hold, size="160MiB"):
    """S04's victim: a sleeping main thread and a thread holding its mmap_sem
    for write in D state for `hold`; plus an allocator that runs the machine out."""
    victim = process("victim", heap=size, resident=size, threads=[
        ("main", ['{ sleep = "10s" }']),
        ("writer", ['{ mmap_lock = "write" }', f'{{ sleep = "{hold}", mode = "uninterruptible" }}',
                    '{ mmap_unlock = true }'])])
    return victim + process("kalloc", program=['{ sleep = "1ms" }', '{ kalloc = "128MiB" }'])


def scenario(name, *processes, memory="256MiB", time="5s", stall="2s", extra=""):
    return (f'name = "{name}"\n{extra}\n[machine]\nmemory = "{memory}"\n'
            f'[limits]\ntime = "{time}"\nstall = "{stall}"\n' + "\n".join(processes))
