"""Checks any policy must pass, whoever wrote it (workbench.testing.assert_conforms).

Each check runs small scenarios built to tempt a policy into breaking a rule
the kernel relies on, under the presets that matter, and reads the rule back
from the log.  RunPolicies already refuses an impossible answer (a kthread,
init, a dead task or one outside the memcg) with outcome "error"; these checks
add what only a whole run shows:

victim     never kills an OOM_SCORE_ADJ_MIN process, never ends a run in error,
           and honours the era's abort rule: no kill while an in-scope victim is
           pending (4.5-4.8: a TIF_MEMDIE thread; 4.9+: a victim process whose mm
           has no MMF_OOM_SKIP yet; mm/oom_kill.c oom_scan_process_thread(), 4.5,
           and oom_evaluate_task(), 4.9).
reaper     no run in error (the kernel reports a leaked or twice-dropped mm
           reference as an invariant), every mm it queued is finished by the end,
           and it gives up on an mm whose mmap_sem is never released in finite
           virtual time.
vma_filter never zaps a hugetlb VMA, nor a shared one unless its class says
           `reaps_shared = True`, and no run in error.
userspace  no run in error, and never kills an OOM_SCORE_ADJ_MIN process
           (earlyoom skips them since v1.6.1; the kernel's own rule).
"""

from __future__ import annotations

import inspect
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from workbench.policy import CONCERNS

PRESETS = ("no-reaper", "patch", "v4.6", "modern")
SEEDS = (1, 2)

# A big OOM_SCORE_ADJ_MIN process, init, a kthread and a killable hog: the
# only process the killer may take is the hog.
UNKILLABLE = """
name = "conformance-unkillable"
[machine]
memory = "512MiB"
[limits]
time = "10s"
[[process]]
name = "init"
init = true
uid = 0
[[process.vma]]
name = "heap"
kind = "anon"
size = "128MiB"
resident = "128MiB"
[[process.thread]]
name = "main"
program = [{ sleep = "20s" }]
[[process]]
name = "kworker"
kthread = true
[[process.thread]]
name = "main"
program = [{ sleep = "20s" }]
[[process]]
name = "protected"
oom_score_adj = -1000
[[process.vma]]
name = "heap"
kind = "anon"
size = "256MiB"
resident = "256MiB"
[[process.thread]]
name = "main"
program = [{ sleep = "20s" }]
[[process]]
name = "hog"
[[process.vma]]
name = "heap"
kind = "anon"
size = "1GiB"
[[process.thread]]
name = "main"
program = [{ alloc = "1GiB", vma = "heap" }]
"""

# A memcg OOM in "small" beside a much bigger process in "big".
SCOPE = """
name = "conformance-memcg-scope"
[machine]
memory = "2GiB"
[limits]
time = "10s"
[[cgroup]]
name = "small"
memory_max = "256MiB"
[[cgroup]]
name = "big"
memory_max = "1GiB"
[[process]]
name = "giant"
cgroup = "big"
[[process.vma]]
name = "heap"
kind = "anon"
size = "900MiB"
resident = "900MiB"
[[process.thread]]
name = "main"
program = [{ sleep = "20s" }]
[[process]]
name = "leaker"
cgroup = "small"
[[process.vma]]
name = "heap"
kind = "anon"
size = "1GiB"
[[process.thread]]
name = "main"
program = [{ alloc = "1GiB", vma = "heap" }]
"""

# A victim blocked on a mutex its allocator holds: it stays pending (TIF_MEMDIE)
# while the allocator keeps asking, and a bystander is there to be killed by a
# selector that does not wait for it.
PENDING = """
name = "conformance-pending-victim"
[machine]
memory = "1GiB"
[limits]
time = "3s"
stall = "2s"
[[process]]
name = "holder"
[[process.thread]]
name = "main"
program = [{ lock = "i_mutex" }, { sleep = "100ms" }, { kalloc = "900MiB" },
           { unlock = "i_mutex" }]
[[process]]
name = "victim"
[[process.vma]]
name = "heap"
kind = "anon"
size = "600MiB"
resident = "600MiB"
[[process.thread]]
name = "main"
program = [{ sleep = "10ms" }, { lock = "i_mutex" }, { unlock = "i_mutex" }]
[[process]]
name = "bystander"
[[process.vma]]
name = "heap"
kind = "anon"
size = "200MiB"
resident = "200MiB"
[[process.thread]]
name = "main"
program = [{ sleep = "10s" }]
"""

# The victim's mmap_sem is held for write in D state for longer than the
# run: it cannot exit, the reaper cannot lock it, the allocator keeps asking.
STUCK = """
name = "conformance-stuck-victim"
[machine]
memory = "256MiB"
[limits]
time = "2s"
stall = "2s"
[[process]]
name = "victim"
[[process.vma]]
name = "heap"
kind = "anon"
size = "160MiB"
resident = "160MiB"
[[process.thread]]
name = "main"
program = [{ sleep = "60min" }]
[[process.thread]]
name = "writer"
program = [{ mmap_lock = "write" }, { sleep = "60min", mode = "uninterruptible" },
           { mmap_unlock = true }]
[[process]]
name = "kalloc"
[[process.thread]]
name = "main"
program = [{ sleep = "1ms" }, { kalloc = "128MiB" }]
"""

# The victim is its own allocator (kernel memory: no mmap_sem needed), and
# another of its threads holds its mmap_sem for write in D state for an hour:
# its exit waits, the reaper can never lock the mm, nothing else asks for memory.
NEVER_RELEASED = """
name = "conformance-mmap-sem-never-released"
[machine]
memory = "256MiB"
[limits]
time = "{time}"
stall = "{time}"
[[process]]
name = "victim"
[[process.vma]]
name = "heap"
kind = "anon"
size = "160MiB"
resident = "160MiB"
[[process.thread]]
name = "writer"
program = [{{ mmap_lock = "write" }}, {{ sleep = "60min", mode = "uninterruptible" }},
           {{ mmap_unlock = true }}]
[[process.thread]]
name = "main"
program = [{{ sleep = "1ms" }}, {{ kalloc = "256MiB" }}]
"""
GIVE_UP_WITHIN = "10min"       # of virtual time: "finite", with room for any sane back-off


def check(concern: str, policy: str, *, plugins: Iterable[Any] = (),
          options: dict[str, Any] | None = None, presets: Iterable[str] = PRESETS,
          seeds: Iterable[int] = SEEDS) -> list[str]:
    """Every problem found with `policy` of `concern` (empty when it conforms)."""
    if concern not in CONCERNS:
        raise ValueError(f"concern must be one of {CONCERNS}, not {concern!r}")
    from workbench.discovery import load_plugins
    loaded = load_plugins(list(plugins))
    if policy not in loaded.registry.policies[concern]:
        known = ", ".join(sorted(loaded.registry.policies[concern]))
        return [f"no {concern} policy named {policy!r} (known: {known})"]
    arm = {concern: policy}
    if options:
        arm["options"] = {concern: options}
    checks = {"victim": _victim_checks, "reaper": _reaper_checks,
              "vma_filter": _vma_filter_checks, "userspace": _userspace_checks}[concern]
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="workbench-conformance-") as tmp:
        runner = _Runner(Path(tmp), arm, loaded)
        for preset in presets:
            for seed in seeds:
                problems += checks(runner, preset, seed)
        if concern == "vma_filter":
            problems += _vma_filter_answers(loaded.registry.policies[concern][policy], options)
    return problems


class _Runner:
    def __init__(self, base: Path, arm: dict[str, Any], plugins: Any):
        self.base, self.arm, self.plugins, self.n = base, arm, plugins, 0

    def __call__(self, scenario: str, preset: str, seed: int) -> Any:
        from workbench.testing import run_loaded
        self.n += 1
        d = self.base / f"r{self.n}"
        d.mkdir()
        return run_loaded(scenario, d, self.plugins, preset=preset, arm=self.arm, seed=seed)


def _where(run: Any, preset: str, seed: int) -> str:
    return f"{run.events[0]['scenario']} under {preset}, seed {seed}"


def _no_error(run: Any, preset: str, seed: int) -> list[str]:
    if run.summary["outcome"] != "error":
        return []
    return [f"{_where(run, preset, seed)}: the run ended in error: "
            f"{'; '.join(run.summary['errors']) or 'an invariant was violated'}"]


# -- victim selectors -----------------------------------------------------------

def _victim_checks(run: Callable, preset: str, seed: int) -> list[str]:
    problems = []
    for scenario in (UNKILLABLE, SCOPE, STUCK, PENDING):
        r = run(scenario, preset, seed)
        problems += _no_error(r, preset, seed)
        problems += [f"{_where(r, preset, seed)}: {p}" for p in _victim_rules(r.events)]
    return problems


def _victim_rules(events: list[dict[str, Any]]) -> list[str]:
    """Kills of OOM_SCORE_ADJ_MIN or out-of-scope processes, and kills while
    an in-scope victim was pending under the era's rule."""
    oom_mm_rule = bool(events[0]["config"]["arm"]["kernel"].get("oom_mm"))   # 4.9 signal->oom_mm
    procs: dict[int, dict[str, Any]] = {}
    live: dict[int, set[int]] = defaultdict(set)      # tgid -> threads not yet exited
    pending: dict[int, int] = {}          # TIF_MEMDIE thread (or victim tgid) -> tgid
    skipped: set[int] = set()             # mms with MMF_OOM_SKIP
    victim_mm: dict[int, int] = {}        # victim tgid -> its mm
    oom: dict[str, Any] | None = None
    problems = []
    for e in events:
        kind = e["event"]
        if kind == "fork":
            procs[e["pid"]] = e
            live[e["pid"]] = set(e["threads"])
        elif kind == "out_of_memory":
            oom = e
        elif kind == "mark_victim":
            pending[e["tgid"] if oom_mm_rule else e["pid"]] = e["tgid"]
        elif kind == "exit_oom_victim" and not oom_mm_rule:
            pending.pop(e["pid"], None)
        elif kind == "exit":
            live[e["tgid"]].discard(e["pid"])
            if not oom_mm_rule:
                pending.pop(e["pid"], None)
            elif not live[e["tgid"]]:         # off the task list: no longer scanned
                pending.pop(e["tgid"], None)
        elif kind == "oom_skip":
            skipped.add(e["mm"])
        elif kind == "kill":
            victim = procs.get(e["pid"], {})
            if victim.get("oom_score_adj") == -1000:
                problems.append(f"t={e['t']}: killed {victim['comm']!r}, whose oom_score_adj "
                                "is -1000 (OOM_SCORE_ADJ_MIN: never kill)")
            scope = oom.get("memcg") if oom else None
            if scope is not None and victim.get("cgroup") != scope:
                problems.append(f"t={e['t']}: a memcg OOM in {scope!r} killed {e['comm']!r} "
                                f"of cgroup {victim.get('cgroup')!r}")
            blocking = [tgid for key, tgid in pending.items()
                        if tgid != e["pid"] and (scope is None or
                                                 procs.get(tgid, {}).get("cgroup") == scope)
                        and not (oom_mm_rule and victim_mm.get(tgid) in skipped)]
            if oom is not None and oom.get("result") == "kill" and blocking:
                rule = ("its mm has no MMF_OOM_SKIP" if oom_mm_rule else "it has TIF_MEMDIE")
                problems.append(f"t={e['t']}: killed {e['comm']!r} while victim "
                                f"{procs.get(blocking[0], {}).get('comm')!r} was pending "
                                f"({rule}): the selector must return ABORT")
            victim_mm[e["pid"]] = e["mm"]
    return problems


# -- reaper policies ------------------------------------------------------------

def _reaper_checks(run: Callable, preset: str, seed: int) -> list[str]:
    problems = []
    for scenario in (NEVER_RELEASED.format(time=GIVE_UP_WITHIN), SCOPE):
        r = run(scenario, preset, seed)
        problems += _no_error(r, preset, seed)
        queued = {e["mm"] for e in r.events if e["event"] == "reaper_queued"}
        finished = {e["mm"] for e in r.events
                    if e["event"] in ("reap_done", "reap_give_up", "reap_exit_race")}
        for mm in sorted(queued - finished):
            problems.append(f"{_where(r, preset, seed)}: mm {mm} was queued and neither reaped "
                            "nor given up by the end of the run (with its mmap_sem never "
                            "released, the reaper must give up in finite virtual time)")
    return problems


# -- userspace OOM killers ---------------------------------------------------------

def _userspace_checks(run: Callable, preset: str, seed: int) -> list[str]:
    problems = []
    for scenario in (UNKILLABLE, SCOPE):
        r = run(scenario, preset, seed)
        problems += _no_error(r, preset, seed)
        adj = {e["pid"]: e["oom_score_adj"] for e in r.events if e["event"] == "fork"}
        problems += [f"{_where(r, preset, seed)}: t={e['t']}: killed {e['comm']!r}, whose "
                     "oom_score_adj is -1000 (OOM_SCORE_ADJ_MIN: never kill)"
                     for e in r.events if e["event"] == "userspace_kill"
                     and adj.get(e["pid"]) == -1000]
    return problems


# -- VMA filters ------------------------------------------------------------------

def _vma_filter_checks(run: Callable, preset: str, seed: int) -> list[str]:
    return _no_error(run(UNKILLABLE, preset, seed), preset, seed)


def _vma_filter_answers(cls: type, options: dict[str, Any] | None) -> list[str]:
    """Ask the filter directly about a shared and a hugetlb VMA of each kind."""
    from workbench.kernel.mm import MmStruct, Vma
    from workbench.testing import experiment
    with tempfile.TemporaryDirectory() as tmp:
        machine = experiment(UNKILLABLE, Path(tmp)).scenarios[0].machine
    policy = cls(cls.Options.model_validate(options or {}), machine)
    reaps_shared = getattr(cls, "reaps_shared", False)
    problems = []
    for kind, shared in (("hugetlb", True), ("hugetlb", False), ("file", True),
                         ("shmem", True)):
        vma = Vma(f"{'shared' if shared else 'private'}-{kind}", kind, 1024, locked=False,
                  shared=shared)
        mm = MmStruct(None, 1, [vma])
        hook = policy.workbench_reap_vma
        wants = inspect.signature(hook).parameters      # a hook may take fewer (pluggy)
        try:
            answer = hook(**{k: v for k, v in (("vma", vma), ("mm", mm)) if k in wants})
        except Exception as e:
            problems.append(f"workbench_reap_vma raised {type(e).__name__}: {e} for a "
                            f"{vma.name} VMA")
            continue
        if answer is None:
            continue
        if kind == "hugetlb":
            problems.append(f"workbench_reap_vma zaps a {vma.name} VMA: hugetlb VMAs are never "
                            "zapped page by page (return None)")
        elif not reaps_shared:
            problems.append(f"workbench_reap_vma zaps a {vma.name} VMA: a filter that reaps "
                            "shared mappings must say so (class attribute reaps_shared = True)")
    return problems
