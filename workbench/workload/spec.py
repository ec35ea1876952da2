"""A scenario resolved for running: units converted, names checked, counts expanded.

These are the only inputs the simulated kernel takes besides the arm's
policies and the seed; `to_json()` is what the log header records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from workbench.units import NSEC_PER_SEC, PAGE_SIZE, jiffy_ns


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


@dataclass(frozen=True)
class CgroupSpec:
    name: str
    memory_max: int             # pages
    oom_group: bool = False     # memory.oom.group (4.19)


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
            "cgroups": [asdict(c) for c in self.cgroups],
            "processes": [_process_json(p) for p in self.processes],
        }


def _process_json(p: ProcessSpec) -> dict[str, Any]:
    d = asdict(p)
    d["threads"] = [{"name": t.name, "program": [s.to_json() for s in t.program],
                     **({"robust_list": t.robust_list} if t.robust_list else {})}
                    for t in p.threads]
    return d
