"""VMA filters: which of the victim's mappings the reaper unmaps."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from workbench.kernel.mm import MmStruct, Vma
from workbench.policy import Policy, ZapDetails, hookimpl


class LinuxOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    reap_mlocked: bool = Field(False, description="unmap VM_LOCKED VMAs too (5.18 a213e5cf71cb)")
    zap_details: bool = Field(True, description="pass the seed's zap_details: leave file pages "
                              "with a dirty pte (dropped in 4.10)")


class Linux(Policy):
    """The reaper's VMA filter.  The defaults are the seed: skip hugetlb and
    VM_LOCKED; unmap anonymous or private VMAs, leaving file pages with a
    dirty pte and dropping swap entries."""

    name = "linux"
    concern = "vma_filter"
    Options = LinuxOptions

    @hookimpl
    def workbench_reap_vma(self, vma: Vma, mm: MmStruct) -> ZapDetails | None:
        if vma.hugetlb_page:
            return None
        # mlocked VMAs require explicit munlocking before unmap (until 5.18).
        if vma.locked and not self.options.reap_mlocked:
            return None
        # Only anonymous pages have a good chance to be dropped without further
        # steps; reclaimable file pages have been reclaimed already.
        if vma.anonymous or not vma.shared:
            return ZapDetails(ignore_dirty=self.options.zap_details, check_swap_entries=True)
        return None


class Seed(Linux):
    """The seed's VMA filter (aac453635549): the defaults of `linux` (the
    name older configs use)."""

    name = "seed"


@hookimpl
def workbench_register_policies(registry: object) -> None:
    registry.add_policy(Linux)
    registry.add_policy(Seed)
