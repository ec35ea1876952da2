"""The swap device and swap entries (mm/swapfile.c, mm/swap_state.c, 4.5).

One swap area of `machine.swap` bytes: `total` slots (total_swap_pages) of
which `free` are free (nr_swap_pages, what get_nr_swap_pages() reads).  A
swap entry lives in a VMA's page tables (Vma.swap) and is counted in the mm's
MM_SWAPENTS (mm.swapents) and, for cgroup v1 memory+swap accounting, in its
memcg's swap count (memsw = usage + swap).

- swap_out(): reclaim wrote an anonymous page out: try_to_unmap_one() turns
  the pte into a swap entry (dec MM_ANONPAGES, inc MM_SWAPENTS),
  get_swap_page() took the slot, __remove_mapping() frees the page and
  mem_cgroup_swapout() moves its charge from memory to swap.
- swap_in(): do_swap_page() maps the page again (inc MM_ANONPAGES, dec
  MM_SWAPENTS).  The model frees the slot at once, as 4.5 does for a write
  fault on an exclusive page (reuse_swap_page() -> delete_from_swap_cache());
  the swap cache is not modelled otherwise.
- free_swap_and_cache(): a zap of a swap entry (exit_mmap(), munmap(), the
  reaper with zap_details.check_swap_entries) drops the slot's last
  reference: swap_entry_free() returns it (atomic_long_inc(&nr_swap_pages))
  and mem_cgroup_uncharge_swap() uncharges it.

Memory is never materialised: all of it is counters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.kernel import memcontrol

if TYPE_CHECKING:
    from workbench.kernel.core import Kernel
    from workbench.kernel.mm import MmStruct, Vma


class SwapDevice:
    """total_swap_pages and nr_swap_pages."""

    def __init__(self, k: Kernel, total: int):
        self.k = k
        self.total = total
        self.free = total

    @property
    def used(self) -> int:
        return self.total - self.free

    def full(self) -> bool:
        """get_nr_swap_pages() <= 0: get_swap_page() fails, get_scan_count()
        scans no anon, zone_reclaimable_pages() leaves the anon LRU out."""
        return self.free <= 0

    def get_swap_pages(self, n: int) -> int:
        """get_swap_page() n times: the slots granted."""
        got = min(n, self.free)
        self.free -= got
        return got

    def swap_entry_free(self, n: int) -> None:
        self.free += n
        if self.free > self.total:
            self.k.violation(f"free swap {self.free} above the device's {self.total}")
            self.free = self.total


def populate(k: Kernel, mm: MmStruct, vma: Vma, n: int) -> None:
    """A VMA's `swapped` pages at process start: swap entries, with their
    slots and page tables, charged to the mm's memcg swap."""
    got = k.swap.get_swap_pages(n)
    if got < n:
        k.swap.swap_entry_free(got)
        k.scenario_error(f"vma {vma.name}: its {n * 4}kB swapped do not fit in the "
                         f"{got * 4}kB of swap free at its start")
    vma.swap += n
    mm.swapents += n
    memcontrol.swap_charge(mm.memcg, n)
    ptes = mm.extend_pgtables(vma)
    if ptes:
        got = k.zone.take(ptes, -1)
        k.zone.pgtables += got
        if got < ptes:
            k.scenario_error(f"vma {vma.name}: the page tables of its swap entries do not fit "
                             "in free memory at its start")


def swap_out(k: Kernel, mm: MmStruct, vma: Vma, n: int) -> int:
    """Write up to n anonymous pages of vma out; returns the pages freed."""
    n = k.swap.get_swap_pages(min(n, vma.anon))
    if not n:
        return 0
    mm.sub_anon(vma, n)
    vma.swap += n
    mm.swapents += n
    memcontrol.swap_charge(mm.memcg, n)              # mem_cgroup_swapout(): memsw keeps it
    memcontrol.free_pages(k, mm.memcg, n)            # the page itself is freed and uncharged
    return n


def swap_in(k: Kernel, mm: MmStruct, vma: Vma, n: int) -> None:
    """n pages of vma's swap entries were faulted back in (the pages are
    already allocated and charged by the fault)."""
    vma.swap -= n
    mm.swapents -= n
    k.swap.swap_entry_free(n)
    memcontrol.swap_uncharge(k, mm.memcg, n)


def free_swap_and_cache(k: Kernel, mm: MmStruct, vma: Vma, n: int) -> None:
    """zap_pte_range() dropped n swap entries of vma."""
    vma.swap -= n
    mm.swapents -= n
    k.swap.swap_entry_free(n)
    memcontrol.swap_uncharge(k, mm.memcg, n)
