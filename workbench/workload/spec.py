"""A scenario resolved for running: units converted, names checked, counts expanded.

These are the only inputs the simulated kernel takes besides the arm's
policies and the seed; `to_json()` is what the log header records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from workbench.units import NSEC_PER_SEC, PAGE_SIZE, jiffy_ns


WRITEBACK_RATE_DEFAULT = 128 << 20


@dataclass(frozen=True)
class MachineSpec:
    memory: int                 # bytes
    hz: int
    min_free_kbytes: int | None  # None: the 4.5 formula ("auto")
    fault_rate: int             # bytes per second
    exit_rate: int
    reap_rate: int
    reclaim_rate: int
    reclaim_round_ns: int
    quantum_ns: int
    swap: int = 0               # bytes of swap (total_swap_pages * PAGE_SIZE)
    swappiness: int = 60        # vm_swappiness
    swap_rate: int = 512 << 20  # bytes per second the swap device writes or reads
    writeback_rate: int = 128 << 20  # bytes per second the flusher writes dirty pages back

    SWAP_KEYS = ("swap", "swappiness", "swap_rate")

    def to_json(self) -> dict[str, Any]:
        """As the log header records it: the swap keys only for a machine
        with swap, writeback_rate only when it is not the default, so that the
        header of a machine using neither is what it always was."""
        d = asdict(self)
        if not self.swap:
            for key in self.SWAP_KEYS:
                del d[key]
        if self.writeback_rate == WRITEBACK_RATE_DEFAULT:
            del d["writeback_rate"]
        return d

    @property
    def swap_pages(self) -> int:
        return self.swap // PAGE_SIZE

    @property
    def jiffy_ns(self) -> int:
        return jiffy_ns(self.hz)

    def chunk(self, rate: int) -> int:
        """Pages handled in one quantum of virtual time at rate."""
        return max(1, rate * self.quantum_ns // (NSEC_PER_SEC * PAGE_SIZE))

    @staticmethod
    def cost_ns(pages: int, rate: int) -> int:
        """Virtual time to handle pages at rate (rounded up to a nanosecond)."""
        return -(-pages * PAGE_SIZE * NSEC_PER_SEC // rate)


@dataclass(frozen=True)
class LimitsSpec:
    time_ns: int
    stall_ns: int
    steps: int                  # per run
    steps_per_instant: int      # with no virtual time passing


@dataclass(frozen=True)
class VmaSpec:
    name: str
    kind: str
    size: int                   # pages
    resident: int               # pages
    dirty: int                  # pages (file VMAs)
    locked: bool
    shared: bool
    swapped: int = 0            # pages swapped out at start (anon VMAs): swap entries


@dataclass(frozen=True)
class ThreadSpec:
    name: str
    program: tuple              # workload.program steps
    robust_list: str | None = None   # the VMA holding its robust futex list


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    start_ns: int
    start_jitter_ns: int
    uid: int
    oom_score_adj: int | None   # None: inherited from the parent at fork
    parent: str | None
    cgroup: str | None
    kthread: bool
    init: bool
    shares_mm_with: str | None  # the process whose mm this one uses (CLONE_VM, vfork, use_mm)
    vfork: bool
    vmas: tuple[VmaSpec, ...]
    threads: tuple[ThreadSpec, ...]
    by_vfork_step: bool = False  # forked by its parent's `vfork` step, not at start_ns
    pid: int | None = None      # an explicit pid (None: the next free one in file order)
    comm: str | None = None     # what the kernel prints (None: the name)
    cap_sys_admin: bool | None = None   # None: uid 0
    pgtables: int | None = None  # page-table pages, overriding the derived ones

    @property
    def shown_comm(self) -> str:
        return self.comm if self.comm is not None else self.name


@dataclass(frozen=True)
class CgroupSpec:
    name: str
    memory_max: int             # pages
    oom_group: bool = False     # memory.oom.group (4.19)
    memsw_max: int | None = None  # memory.memsw.limit_in_bytes in pages (None: unlimited)


@dataclass(frozen=True)
class ScenarioSpec:
    name: str
    description: str
    source: str                 # the file, relative to the experiment file
    machine: MachineSpec
    limits: LimitsSpec
    cgroups: tuple[CgroupSpec, ...]
    processes: tuple[ProcessSpec, ...]
    expect: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The resolved scenario as the log header records it."""
        return {
            "name": self.name, "description": self.description, "source": self.source,
            "cgroups": [_compact(asdict(c), {"memsw_max": None}) for c in self.cgroups],
            "processes": [_process_json(p) for p in self.processes],
        }


# Keys the header leaves out at their neutral value, so that the header of a
# scenario that does not use them stays what it was before they existed.
_PROCESS_NEUTRAL = {"pid": None, "comm": None, "cap_sys_admin": None, "pgtables": None}
_VMA_NEUTRAL = {"swapped": 0}


def _compact(d: dict[str, Any], neutral: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in neutral or v != neutral[k]}


def _process_json(p: ProcessSpec) -> dict[str, Any]:
    d = _compact(asdict(p), _PROCESS_NEUTRAL)
    d["vmas"] = [_compact(v, _VMA_NEUTRAL) for v in d["vmas"]]
    d["threads"] = [{"name": t.name, "program": [s.to_json() for s in t.program],
                     **({"robust_list": t.robust_list} if t.robust_list else {})}
                    for t in p.threads]
    return d
