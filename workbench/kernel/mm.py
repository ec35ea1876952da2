"""mm_struct and vm_area_struct (include/linux/mm_types.h), counted in pages.

Memory is never materialised page by page: a VMA holds integer counters per
kind of page and the mm keeps the sums the OOM killer reads (get_mm_rss,
MM_SWAPENTS, nr_ptes).  mm_users counts users of the address space, mm_count
pins the struct itself; both are checked, so that using an mm after its last
mmdrop() or leaving a reference behind is a detected invariant violation
(kernel/fork.c mmput()/mmdrop(), 4.5).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from workbench.kernel.locking import RwSemaphore

if TYPE_CHECKING:
    from workbench.kernel.core import Kernel

PTRS_PER_PTE = 512                 # pages mapped by one page-table page (x86-64)
PTRS_PER_PMD = 512


class Vma:
    """One mapping.  kind: anon | file | shmem | hugetlb."""

    def __init__(self, name: str, kind: str, size: int, *, locked: bool, shared: bool):
        self.name = name
        self.kind = kind
        self.size = size                # pages
        self.locked = locked            # VM_LOCKED
        self.shared = shared            # VM_SHARED
        self.anon = 0                   # MM_ANONPAGES resident here
        self.file = 0                   # page-cache pages mapped (MM_FILEPAGES) ...
        self.dirty = 0                  # ... of which the pte is dirty
        self.shmem = 0                  # MM_SHMEMPAGES
        self.shmem_unmapped = 0         # shmem pages zapped but still owned by the shm object
        self.hugetlb = 0                # hugetlb pages (not in any RSS counter in 4.5)
        self.swap = 0                   # swap entries (MM_SWAPENTS) in its page tables
        self.touched = 0                # extent ever faulted, for page-table pages
        self.reaped = False             # the OOM reaper zapped pages of it

    @property
    def anonymous(self) -> bool:
        """vma_is_anonymous(): no vm_ops.  Shared anonymous memory is shmem."""
        return self.kind == "anon"

    @property
    def hugetlb_page(self) -> bool:
        return self.kind == "hugetlb"

    @property
    def resident(self) -> int:
        return self.anon + self.file + self.shmem + self.hugetlb

    def __repr__(self) -> str:
        return f"<Vma {self.name} {self.kind} {self.resident}/{self.size}>"


def _pagetables(touched: int, extent: int) -> tuple[int, int]:
    """PTE and PMD pages needed to grow a mapping from touched to extent pages."""
    if extent <= touched:
        return 0, 0
    per_pmd = PTRS_PER_PTE * PTRS_PER_PMD
    return (_div_up(extent, PTRS_PER_PTE) - _div_up(touched, PTRS_PER_PTE),
            _div_up(extent, per_pmd) - _div_up(touched, per_pmd))


def _div_up(a: int, b: int) -> int:
    return -(-a // b)


class MmStruct:
    """mm_struct: address space, counters, mmap_sem and the two refcounts."""

    def __init__(self, k: Kernel, owner_pid: int, vmas: list[Vma]):
        self.k = k
        self.id = owner_pid              # events name an mm by its first owner's pid
        self.vmas = vmas
        self.mmap_sem = RwSemaphore(k, f"mmap_sem:{owner_pid}")
        self.mm_users = 0
        self.mm_count = 1                # the users' collective reference
        self.holders: Counter[str] = Counter()   # who holds the mm_count pins (leak reports)
        self.anon = self.file = self.shmem = self.swapents = 0
        self.nr_ptes = self.nr_pmds = 0
        self.fixed_pgtables = False      # the scenario's `pgtables`: faults add none
        self.freed = False
        self.memcg = None                # mm->owner's memory cgroup
        # mm->flags bits of later kernels (only set under their follow-ups)
        self.oom_skip = False            # MMF_OOM_SKIP (4.9): reaped or gone, skip it
        self.oom_victim = False          # MMF_OOM_VICTIM (4.14): exit_mmap() must tell
        self.oom_reap_queued = False     # MMF_OOM_REAP_QUEUED (5.0)

    # -- counters -------------------------------------------------------------

    @property
    def total_vm(self) -> int:
        return sum(v.size for v in self.vmas)

    def get_mm_rss(self) -> int:
        return self.anon + self.file + self.shmem

    def vma(self, name: str) -> Vma:
        for v in self.vmas:
            if v.name == name:
                return v
        raise KeyError(name)

    def add_pages(self, vma: Vma, n: int) -> int:
        """Account n newly faulted pages in vma; returns the page-table pages
        this needs beyond the ones already there."""
        if vma.kind == "anon":
            vma.anon += n
            self.anon += n
        elif vma.kind == "file":
            vma.file += n
            self.file += n
        elif vma.kind == "shmem":
            vma.shmem += n
            self.shmem += n
        else:
            vma.hugetlb += n          # mapped by PMDs from the pool: no PTE pages
            return 0
        return self.extend_pgtables(vma)

    def extend_pgtables(self, vma: Vma) -> int:
        """Count the page-table pages vma's extent (pages present, swap
        entries, shmem unmapped) needs beyond those it has; returns how many."""
        if self.fixed_pgtables:
            return 0
        extent = vma.resident + vma.shmem_unmapped + vma.swap
        ptes, pmds = _pagetables(vma.touched, extent)
        if ptes or pmds:
            vma.touched = extent
            self.nr_ptes += ptes
            self.nr_pmds += pmds
        return ptes + pmds

    def ptes_for(self, vma: Vma, n: int) -> int:
        """Page-table pages that faulting n more pages into vma would need."""
        if vma.hugetlb_page or self.fixed_pgtables:
            return 0
        # faults map the untouched part first, then swap entries in: their ptes exist
        extent = vma.resident + vma.shmem_unmapped + vma.swap
        extent += min(n, max(0, vma.size - extent))
        return sum(_pagetables(vma.touched, extent))

    def sub_anon(self, vma: Vma, n: int) -> None:
        vma.anon -= n
        self.anon -= n

    def sub_file(self, vma: Vma, n: int, dirty: int) -> None:
        vma.file -= n
        vma.dirty -= dirty
        self.file -= n

    def sub_shmem(self, vma: Vma, n: int) -> None:
        vma.shmem -= n
        self.shmem -= n

    def rss_kb(self) -> dict[str, int]:
        """The counters the kernel prints about a victim, in KiB."""
        return {"total_vm_kb": self.total_vm * 4, "anon_rss_kb": self.anon * 4,
                "file_rss_kb": self.file * 4, "shmem_rss_kb": self.shmem * 4}

    # -- references -----------------------------------------------------------

    def check_alive(self, what: str) -> bool:
        if self.freed:
            self.k.violation(f"{what}: mm {self.id} used after its last mmdrop")
            return False
        return True

    def mmget(self) -> None:
        if self.check_alive("mmget"):
            self.mm_users += 1

    def mmget_not_zero(self) -> bool:
        """atomic_inc_not_zero(&mm->mm_users)."""
        if not self.check_alive("atomic_inc_not_zero(mm_users)") or self.mm_users == 0:
            return False
        self.mm_users += 1
        return True

    def mmgrab(self, holder: str) -> None:
        """atomic_inc(&mm->mm_count) on behalf of holder."""
        if self.check_alive(f"mmgrab by {holder}"):
            self.mm_count += 1
            self.holders[holder] += 1

    def mmdrop(self, holder: str | None) -> None:
        """Drop a pin; the last one frees the mm_struct.  holder None is the
        users' collective reference, dropped by __mmput()."""
        if not self.check_alive(f"mmdrop by {holder or '__mmput'}"):
            return
        if holder is not None:
            if self.holders[holder] <= 0:
                self.k.violation(f"mmdrop by {holder} which holds no reference to mm {self.id}")
                return
            self.holders[holder] -= 1
        self.mm_count -= 1
        if self.mm_count == 0:
            self.freed = True
