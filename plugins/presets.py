"""Presets: named plugin sets."""

from __future__ import annotations

from workbench.policy import hookimpl


@hookimpl
def workbench_register_policies(registry: object) -> None:
    registry.add_preset("patch", victim="linux-4.5", reaper="seed", vma_filter="seed",
                        doc="Linux 4.5 plus the oom reaper patch alone (aac453635549)")
    registry.add_preset("no-reaper", victim="linux-4.5", reaper="none", vma_filter="seed",
                        doc="Linux 4.5 as released: no OOM reaper")
