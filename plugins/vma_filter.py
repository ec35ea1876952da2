"""VMA filters: which of the victim's mappings the reaper unmaps."""

from __future__ import annotations

from workbench.kernel.mm import MmStruct, Vma
from workbench.policy import Policy, ZapDetails, hookimpl


class SeedFilter(Policy):
    """The seed: skip hugetlb and VM_LOCKED; unmap anonymous or private VMAs, leaving
    file pages with a dirty pte and dropping swap entries."""

    name = "seed"
    concern = "vma_filter"

    @hookimpl
    def workbench_reap_vma(self, vma: Vma, mm: MmStruct) -> ZapDetails | None:
        if vma.hugetlb_page:
            return None
        # mlocked VMAs require explicit munlocking before unmap: skipped.
        if vma.locked:
            return None
        # Only anonymous pages have a good chance to be dropped without further
        # steps; reclaimable file pages have been reclaimed already.
        if vma.anonymous or not vma.shared:
            return ZapDetails(ignore_dirty=True, check_swap_entries=True)
        return None


@hookimpl
def workbench_register_policies(registry: object) -> None:
    registry.add_policy(SeedFilter)
