"""Userspace OOM killers: daemons that kill before the kernel's OOM killer
runs (docs/kernel.md, "Userspace OOM killers").  `none` is a machine without
one, the default of every preset."""

from __future__ import annotations

from workbench.policy import Policy, hookimpl


class NoUserspace(Policy):
    """No userspace OOM killer: the kernel's OOM killer alone (every preset)."""

    name = "none"
    concern = "userspace"

    @hookimpl
    def workbench_userspace_enabled(self) -> bool:
        return False


@hookimpl
def workbench_register_policies(registry: object) -> None:
    registry.add_policy(NoUserspace)
