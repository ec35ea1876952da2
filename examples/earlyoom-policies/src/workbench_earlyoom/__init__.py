"""An example third-party plugin for the OOM workbench.

Two policies, written against workbench.api only:

- `fifo` (reaper): every killed mm is queued in kill order and reaped in that
  order; none is dropped.
- `earlyoom-names` (victim): Linux 4.5's oom_badness() adjusted as earlyoom's
  --prefer / --avoid / --ignore name patterns adjust /proc/PID/oom_score.

The entry point `[project.entry-points.workbench] earlyoom = "workbench_earlyoom"`
makes the workbench call workbench_register_policies() below at start-up.
"""

from __future__ import annotations

from workbench.api import PolicyRegistry, hookimpl
from workbench_earlyoom.fifo import Fifo
from workbench_earlyoom.names import EarlyoomNames

__all__ = ["EarlyoomNames", "Fifo", "workbench_register_policies"]
__version__ = "0.1.0"


@hookimpl
def workbench_register_policies(registry: PolicyRegistry) -> None:
    registry.add_policy(Fifo)
    registry.add_policy(EarlyoomNames)
