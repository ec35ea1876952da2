"""Why a run ended as a lockup or a hang, in kernel terms, from its events.

The run table prints these lines under the row: which task stalled how long
allocating what, what the victims still wait on, what the reaper dropped or
gave up, what the OOM killer answered, and for memcg scenarios which cgroups
recovered.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

MAX_VICTIMS = 3            # victims listed; the rest are counted


def why(events: list[dict[str, Any]], summary: dict[str, Any]) -> list[str]:
    if summary["outcome"] == "lockup":
        return _lockup(events, summary)
    if summary["outcome"] == "hang":
        return _hang(events, summary)
    return []


def _lockup(events: list[dict[str, Any]], summary: dict[str, Any]) -> list[str]:
    out = []
    stalls = [e for e in events if e["event"] == "alloc_stall"]
    if stalls:
        worst = max(stalls, key=lambda e: e["stall_s"])
        where = f" in memcg {worst['memcg']}" if worst.get("memcg") else ""
        out.append(f"{worst['comm']} ({worst['pid']}) stalled {worst['stall_s']:.3f}s "
                   f"allocating {worst['pages'] * 4}kB{where} since {worst['since']:.3f}s")
    out += _victims(events)
    out += _reaper(events)
    out += _killer(events, summary)
    cgroups = summary.get("cgroups") or {}
    if cgroups:
        out.append("cgroups: " + ", ".join(f"{name} {c['outcome']}"
                                           for name, c in sorted(cgroups.items())))
    return out


def _hang(events: list[dict[str, Any]], summary: dict[str, Any]) -> list[str]:
    out = []
    for e in events:
        if e["event"] == "lock_wait" and e["result"] == "open":
            out.append(f"{e['comm']} ({e['pid']}) waits on {e['lock']} since {e['since']:.3f}s")
        elif e["event"] == "robust_list" and e["result"] == "lost":
            out.append(f"the robust list of {e['comm']} ({e['pid']}) was lost: the reaper had "
                       f"zapped vma {e['vma']}, so {e['futex']} was never marked OWNER_DIED")
    return out


def _victims(events: list[dict[str, Any]]) -> list[str]:
    """Killed threads still alive at the end: where each is stuck."""
    stuck = [e for e in events if e["event"] == "task_state" and (e["killed"] or e["tif_memdie"])]
    out = []
    for e in stuck[:MAX_VICTIMS]:
        flag = ", TIF_MEMDIE" if e["tif_memdie"] else ""
        waits = f"on {e['waiting_on']} " if e["waiting_on"] else ""
        since = f"since {e['since']:.3f}s" if e.get("since") is not None else ""
        out.append(f"killed {e['comm']} ({e['pid']}{flag}) still in {e['state']} {waits}{since}"
                   .rstrip())
    if len(stuck) > MAX_VICTIMS:
        out.append(f"and {len(stuck) - MAX_VICTIMS} more killed threads still alive")
    return out


def _reaper(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in events:
        if e["event"] == "reaper_dropped":
            out.append(f"mm of {e['comm']} ({e['pid']}) dropped: reaper slot busy")
        elif e["event"] == "reap_give_up":
            out.append(f"the reaper gave up on {e['comm']} ({e['pid']}) after "
                       f"{e['attempts']} attempts: mmap_sem contended")
        elif e["event"] == "reaper_skip":
            out.append(f"mm of {e['comm']} ({e['pid']}) never offered to the reaper: "
                       f"{e['sharer_comm']} ({e['sharer']}) shares it and was not killed")
    return out


def _killer(events: list[dict[str, Any]], summary: dict[str, Any]) -> list[str]:
    results: Counter[str] = Counter()
    for e in events:
        if e["event"] == "out_of_memory":
            results[e["result"]] += e.get("count", 1)       # a fold of aborted calls
    if not results:
        return ["out_of_memory() never ran: the stalled allocations may not invoke the OOM "
                "killer (no __GFP_FS, or a memcg charge from kernel context)"]
    later = {r: n for r, n in results.items() if r != "kill"}
    if not later:
        return []
    reasons = {"abort": "a victim or an exiting task was pending",
               "nofs": "GFP_NOFS: no kill", "shortcut": "the caller was dying",
               "none": "nothing eligible in the memcg"}
    return ["out_of_memory(): " + ", ".join(f"{r} x{n} ({reasons.get(r, r)})"
                                            for r, n in sorted(later.items()))]
