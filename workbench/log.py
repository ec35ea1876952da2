"""The event log of one run (docs/events.md): JSON lines through structlog.

Keys are sorted and times are virtual, so the same config and seed give a
byte-identical file.  The vocabulary is closed: `EVENTS` lists every event
name with what it records (docs/events.md's table is checked against it).
An event carries `msg` only where the modelled kernel printed a line, worded
as 4.5 worded it.  Lines are written through orjson into a buffered file that
is not flushed per line (a flush would cost more than the event); the run
writes `.jsonl.tmp` and renames it once its summary is written.

A livelock calls out_of_memory() once per slow-path round and every call
aborts the same way: `AbortFolds` folds consecutive identical aborted calls
of one task into one event with a count and the time of the last call
(docs/events.md says exactly which), so an hour of livelock is not 600 MB.
"""

from __future__ import annotations

import contextlib
import os
import re
import traceback
from pathlib import Path
from typing import Any, BinaryIO, Callable

import orjson

from workbench.files import open_new

SCHEMA_VERSION = 1

EVENTS: dict[str, str] = {
    "header": "First line: schema version, resolved config, package versions, plugins.",
    "fork": "A process started: pid, comm, ppid, uid, oom_score_adj, mm, cgroup, threads.",
    "exit": "A thread finished do_exit(): pid, tgid, thread, code (137 after SIGKILL, 139 "
            "after SIGSEGV, N after exit = N, else 0).",
    "alloc_stall": "An allocation chunk left the slow path: since, stall_s, pages, gfp_mask, "
                   "result ok | failed | open (still stalled when the run ended).",
    "alloc_fail": "The allocator failed a request (warn_alloc_failed's line).",
    "meminfo": "Free memory (free_kb) and each cgroup's usage (cgroups), when they changed: "
               "at most one sample per 10 ms of virtual time, and one at the end.",
    "out_of_memory": "out_of_memory() ran: constraint, result shortcut | abort | kill | panic "
                     "| none (a memcg with nothing eligible) | nofs (4.7+: no kill for "
                     "!__GFP_FS). Consecutive identical aborted calls of one task are one "
                     "event: t of the first, count (2 or more) and until (t of the last).",
    "oom_header": "dump_header(): the 'invoked oom-killer' line.",
    "oom_cpuset": "dump_header(): the cpuset line (not under modern-oom-report).",
    "oom_meminfo": "dump_header(): the zone's free pages and watermarks (show_mem), no msg; "
                   "with swap also free_swap_kb and total_swap_kb (show_swap_cache_info).",
    "oom_dump_tasks": "dump_tasks(): the table's header row (modern-oom-report: two lines, "
                      "'Tasks state ...' and the header, one event each).",
    "oom_dump_task": "dump_tasks(): one row per process with an mm.",
    "select_victim": "oom_kill_process(): 'Kill process ... score ... or sacrifice child' "
                     "(modern-oom-report: the 'oom-kill:constraint=...' line).",
    "kill": "The OOM victim was sent SIGKILL: 'Killed process ...' with its rss.",
    "kill_sharer": "A process sharing the victim's mm was sent SIGKILL.",
    "mark_victim": "TIF_MEMDIE set on a thread (via kill | shortcut | exiting).",
    "exit_oom_victim": "TIF_MEMDIE cleared as the thread passed exit_mm().",
    "panic": "The kernel panicked; the run ends.",
    "reaper_skip": "The mm was not offered to the reaper: a sharer was not killed.",
    "mm_pinned": "A global-init sharer keeps the victim's mm: it is hidden (MMF_OOM_SKIP), "
                 "'oom killer ... has mm pinned by ...' (4.8+).",
    "oom_group_kill": "memory.oom.group: every task of the cgroup is killed too (4.19+).",
    "reaper_requeue_skip": "MMF_OOM_REAP_QUEUED: the mm was handed to the reaper before (5.0+).",
    "reaper_timer": "The mm waits OOM_REAPER_DELAY before it is queued: delay_s (5.18+).",
    "reaper_timer_skip": "The delay ended with the mm already MMF_OOM_SKIP: not queued.",
    "reaper_queued": "wake_oom_reaper() queued the mm.",
    "reaper_dropped": "wake_oom_reaper() found no room: the mm was dropped.",
    "reap_attempt": "One down_read_trylock(mmap_sem) by the reaper: result locked | contended.",
    "reap_exit_race": "The reaper found mm_users at 0: the exit got there first.",
    "reap_done": "The reaper unmapped the mm: reaped_kb and the rss left; with swap also "
                 "swap_kb, the swap entries it freed (check_swap_entries).",
    "reap_give_up": "The reaper gave up after its last attempt.",
    "oom_skip": "MMF_OOM_SKIP set on an mm: by oom_reaper | exit_mmap (4.9+).",
    "exit_mmap": "An address space was torn down: freed_kb, in whose context; with swap "
                 "also swap_kb, the swap entries it freed.",
    "lock_wait": "A thread waited for a lock: lock, since, wait_s, result.",
    "segv": "A fault outside its VMA: the process gets SIGSEGV.",
    "robust_list": "exit_robust_list() for a futex the dying thread held: result owner_died "
                   "| lost (the reaper zapped the list's VMA first).",
    "futex_owner_died": "A thread took a futex whose owner died: EOWNERDEAD.",
    "core_dump_start": "A process began a core dump to a pipe: size_kb of anonymous memory.",
    "core_dump": "The core dump ended: written_kb, holes_kb (reaped under it), complete.",
    "exit_group": "A thread called exit_group(): its process's other threads are killed.",
    "userspace_start": "The arm's userspace OOM killer daemon started: policy (no pid: it is "
                       "off the task list).",
    "userspace_kill": "The userspace OOM killer sent SIGKILL through kill(2), not the OOM "
                      "killer: pid, comm, policy, reason, and the meminfo it acted on "
                      "(mem_available_kb, mem_total_kb, anon_pages_kb).",
    "kswapd_start": "kswapd0 was first woken with reclaimable pages in the zone: free_kb, "
                    "high_kb (it has no pid: it is off the task list).",
    "kswapd_sleep": "kswapd0 found the zone balanced (free above high, or nothing "
                    "zone_reclaimable()) and went to sleep: free_kb.",
    "kswapd_wake": "kswapd0 was woken by an allocation below the low watermark or a "
                   "throttled reclaimer: free_kb.",
    "reclaim_throttle": "throttle_direct_reclaim(): a direct reclaimer waited on "
                        "pfmemalloc_wait (free at or below half the min watermark): since, "
                        "wait_s, killed (a SIGKILL ended the wait).",
    "writeback": "The flusher (no pid) wrote dirty page cache back and went idle: "
                 "written_kb since it was woken, dirty_kb left.",
    "task_state": "At the end of the run, one line per live thread: state, waiting_on, since.",
    "memcg_charge_fail": "A charge failed in a memcg at its limit (-ENOMEM, no OOM kill).",
    "memcg_oom_info": "mem_cgroup_print_oom_info(): its lines.",
    "invariant": "A kernel invariant was violated (outcome error).",
    "error": "The run cannot go on (outcome error): a policy raised or answered wrongly "
             "(policy, hook, problem, traceback), or a scenario, step-limit or internal "
             "problem (policy empty).",
    "summary": "Last line: outcome and metrics (docs/metrics.md).",
}


class AbortFolds:
    """Aborted out_of_memory() calls not written yet, one fold per task, in
    the order of their first call.  A call joins its task's fold when every
    field but the time is the same; any other event, or a call of that task
    that differs, writes the folds first (EventLog.emit), so the log keeps
    its order and its times never go back."""

    def __init__(self) -> None:
        self._open: dict[int, list] = {}     # pid -> [fields, first ns, last ns, count]

    def __bool__(self) -> bool:
        return bool(self._open)

    def add(self, fields: dict[str, Any], now: int) -> bool:
        """Fold in one call; False if its task's open fold differs (write first)."""
        fold = self._open.get(fields["pid"])
        if fold is None:
            self._open[fields["pid"]] = [fields, now, now, 1]
            return True
        if fold[0] != fields:
            return False
        fold[2] = now
        fold[3] += 1
        return True

    def take(self) -> list[list]:
        folds = list(self._open.values())
        self._open.clear()
        return folds


class LogWriteError(Exception):
    """The log file could not be written (a full disk): the run must end."""


class _JsonLinesFile:
    """A structlog logger that writes rendered lines without flushing each."""

    def __init__(self, log: EventLog, f: BinaryIO):
        self._log = log
        self._write = f.write

    def msg(self, line: bytes) -> None:
        try:
            self._write(line + b"\n")
        except OSError as e:
            raise self._log.failed_with(e) from None


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def scrub(text: str) -> str:
    """text without the memory addresses a repr() may hold ("<object at
    0x7f...>"): they differ from run to run, and logs must not."""
    return _ADDRESS.sub("", text)


def internal_error(e: Exception) -> dict[str, str]:
    """The `error` event's fields for a bug of the workbench itself."""
    return {"policy": "", "hook": "", "problem": scrub(f"internal error: {type(e).__name__}: {e}"),
            "traceback": short_traceback(e)}


def short_traceback(e: BaseException) -> str:
    """The traceback of e for an `error` event: file names cut to the part
    after site-packages or the project's root, so the log holds no
    absolute path and stays the same from machine to machine."""
    frames = traceback.extract_tb(e.__traceback__)
    lines = [f'  File "{_short_path(f.filename)}", line {f.lineno}, in {f.name}'
             for f in frames]
    return scrub("\n".join(["Traceback (most recent call last):", *lines,
                            *traceback.format_exception_only(type(e), e)]).rstrip())


def _short_path(filename: str) -> str:
    parts = Path(filename).parts
    for anchor in ("site-packages", "dist-packages"):
        if anchor in parts:
            return "/".join(parts[len(parts) - parts[::-1].index(anchor):])
    for root in ("workbench", "plugins", "tests"):
        if root in parts:
            return "/".join(parts[len(parts) - 1 - parts[::-1].index(root):])
    return Path(filename).name


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


class EventLog:
    """Writes one run's events; `observers` see each event dict before it
    is rendered (the metrics reducer)."""

    def __init__(self, path: Path, identity: dict[str, Any], now_ns: Callable[[], int],
                 observers: list[Callable[[dict], None]]):
        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        self._file = open_new(self.tmp, buffering=1 << 16)
        self.enabled = True
        self.failure: OSError | None = None
        self._now_ns = now_ns
        self._folds = AbortFolds()
        # structlog: for a run only, validating a config does not need it (30 ms)
        import structlog

        def add_time(_logger: Any, _method: str, event: dict) -> dict:
            if "t" not in event:                # a fold carries the time of its first call
                event["t"] = now_ns() / 1e9
            return event

        def observe(_logger: Any, _method: str, event: dict) -> dict:
            for observer in observers:
                observer(event)
            return event

        self._log = structlog.wrap_logger(
            _JsonLinesFile(self, self._file),
            processors=[add_time, observe,
                        structlog.processors.JSONRenderer(serializer=orjson.dumps,
                                                          option=orjson.OPT_SORT_KEYS)],
            wrapper_class=structlog.BoundLogger,
        ).bind(**identity)

    def emit(self, event: str, **fields: Any) -> None:
        if self.enabled:
            if event not in EVENTS:
                raise ValueError(f"event {event!r} is not in the vocabulary (workbench/log.py)")
            if event == "out_of_memory" and fields.get("result") == "abort":
                now = self._now_ns()
                if not self._folds.add(fields, now):
                    self.flush()
                    self._folds.add(fields, now)
                return
            if self._folds:
                self.flush()
            self._log.msg(event, **fields)

    def flush(self) -> None:
        """Write the open folds of aborted out_of_memory() calls (before any
        other event, and at the end of the run)."""
        for fields, first, last, count in self._folds.take():
            if not self.enabled:
                return
            if count > 1:
                fields = {**fields, "count": count, "until": last / 1e9}
            self._log.msg("out_of_memory", t=first / 1e9, **fields)

    def failed_with(self, e: OSError) -> LogWriteError:
        """Writing failed: nothing more is written, and the run is to end."""
        self.enabled = False
        self.failure = self.failure or e
        return LogWriteError(f"cannot write {self.tmp}: {e.strerror or e}")

    def commit(self) -> None:
        """Close the file and give it its final name (after the summary)."""
        self.enabled = False
        try:
            self._file.close()
            os.replace(self.tmp, self.path)
        except OSError as e:
            error = self.failed_with(e)
            self.abandon()
            raise error from None

    def abandon(self) -> None:
        """Close the file, keeping the .tmp of a run that did not finish;
        a log that failed to write is removed (it may end mid-line)."""
        self.enabled = False
        try:
            self._file.close()
        except OSError as e:
            self.failure = self.failure or e
        if self.failure is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
