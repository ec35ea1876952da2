"""Property-based fuzzing of `workbench validate` and `workbench run` (hypothesis).

Three generators feed the command line, in-process (`cli.main`, `--jobs 1`):

1. valid experiments: small machines, 1 to 5 processes with anon/file/shmem VMAs,
   threads whose programs allocate, lock, sleep, repeat and exit, optional
   cgroups, start times, sharing of mms, the "patch" and "no-reaper" presets;
2. mutations of those: keys deleted or misspelt, values of the wrong type,
   negative or huge, empty or non-ASCII strings, names with "../", repeats
   nested deep, references to names that do not exist, steps replaced or
   inserted, lock steps of one family written as the other's;
3. raw bytes: truncations, flipped, inserted and deleted bytes of a valid file.

The contract, for every input: exit status 0, 1 or 2; no traceback; every log
of a finished run ends with its `summary` and no `.tmp` is left behind; the
manifest names every log, and the exit status is 1 exactly when a run ended
in "error" or failed an expectation; `validate` and `run` agree on whether the
config is valid; nothing is written outside `out`.  For configs that validate
(generated valid, or mutated and still valid) also: no invariant violation and
no internal error in any run; and for generated valid ones, a rerun of a config
and seed (all of it, or one run picked by --scenario/--arm/--seed) gives
byte-identical logs.  Outcome "error" from a step limit or a scenario problem
found at run time is allowed: hypothesis's statistics count them
(`--hypothesis-show-statistics`).

Profiles: "ci" (the default: few examples, derandomized, so CI is
deterministic and fast) and "long" (HYPOTHESIS_PROFILE=long, for fuzzing by
hand).  Each example gets a fresh temporary directory of its own.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from workbench import cli

# -- hypothesis profiles ---------------------------------------------------------

# Examples are slow (each runs simulations) and large: no deadline, no health
# checks about it.  No example database either: it would be written into the
# project's directory, and the ci profile is derandomized anyway.
_SUPPRESS = [getattr(HealthCheck, name) for name in
             ("too_slow", "data_too_large", "filter_too_much", "large_base_example")
             if hasattr(HealthCheck, name)]
settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True,
                          database=None, suppress_health_check=_SUPPRESS, print_blob=False)
settings.register_profile("long", max_examples=1500, deadline=None, derandomize=False,
                          database=None, suppress_health_check=_SUPPRESS, print_blob=True)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
# Applied to these tests only (not loaded globally), so other test files keep theirs.
FUZZ = settings(settings.get_profile(PROFILE if PROFILE in ("ci", "long") else "ci"))


# -- a tiny TOML emitter -----------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
INLINE_KEYS = {"program", "do"}           # step lists read better inline, as people write them


def toml_string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_key(k: str) -> str:
    return k if _BARE_KEY.match(k) else toml_string(k)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        text = repr(v)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(v, str):
        return toml_string(v)
    # (loops, not generator expressions: one frame a level for repeats nested deep)
    if isinstance(v, list):
        items = []
        for x in v:
            items.append(toml_value(x))
        return "[" + ", ".join(items) + "]"
    if isinstance(v, dict):
        items = []
        for k, x in v.items():
            items.append(f"{toml_key(k)} = {toml_value(x)}")
        return "{ " + ", ".join(items) + " }"
    raise TypeError(f"no TOML for {v!r}")


def _table_array(k: str, v: Any) -> bool:
    return (isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)
            and k not in INLINE_KEYS)


def to_toml(d: dict[str, Any], path: tuple[str, ...] = ()) -> str:
    """d as TOML: scalars and inline values first, then [tables] and [[arrays]]."""
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in d.items()
             if not isinstance(v, dict) and not _table_array(k, v)]
    for k, v in d.items():
        sub = path + (k,)
        header = ".".join(toml_key(p) for p in sub)
        if isinstance(v, dict):
            lines += ["", f"[{header}]", to_toml(v, sub)]
        elif _table_array(k, v):
            for item in v:
                lines += ["", f"[[{header}]]", to_toml(item, sub)]
    return "\n".join(lines).strip("\n") + ("" if path else "\n")


# -- strategy 1: valid experiments -------------------------------------------------------

MiB = 1 << 20
PAGE = 4096


def size_text(draw, nbytes: int) -> Any:
    """nbytes in one of the spellings memparse takes."""
    forms: list[Any] = [nbytes, f"{nbytes}B", f"{nbytes}b"]
    if nbytes % 1024 == 0:
        forms += [f"{nbytes // 1024}KiB", f"{nbytes // 1024}K", f"{nbytes // 1024}kB"]
    if nbytes % MiB == 0:
        forms += [f"{nbytes // MiB}MiB"] * 4 + [f"{nbytes // MiB}M", f"{nbytes // MiB}MB"]
    if nbytes % (MiB // 2) == 0 and nbytes % MiB:
        forms.append(f"{nbytes / MiB}MiB")                       # "1.5MiB"
    return draw(st.sampled_from(forms))


def draw_size(draw, max_bytes: int, min_bytes: int = PAGE) -> int:
    """A size in [min_bytes, max_bytes]: mostly whole MiB or pages, now and then odd bytes."""
    max_bytes = max(max_bytes, min_bytes)
    kind = draw(st.sampled_from(["max", "max", "mib", "mib", "page", "page", "bytes"]))
    if kind == "max":                           # the whole of it: enough to run out of memory
        return max_bytes
    if kind == "mib" and max_bytes >= MiB and max_bytes // MiB >= max(1, -(-min_bytes // MiB)):
        return draw(st.integers(max(1, -(-min_bytes // MiB)), max_bytes // MiB)) * MiB
    if kind in ("mib", "page") and max_bytes // PAGE >= -(-min_bytes // PAGE):
        return draw(st.integers(-(-min_bytes // PAGE), max_bytes // PAGE)) * PAGE
    return draw(st.integers(min_bytes, max_bytes))


def duration_ms(draw, lo: int, hi: int, hz: int | None = None) -> str:
    ms = draw(st.integers(lo, hi))
    forms = [f"{ms}ms"] * 3 + [f"{ms * 1000}us", f"{ms * 1_000_000}ns"]
    if ms % 1000 == 0:
        forms.append(f"{ms // 1000}s")
    if ms % 100 == 0:
        forms.append(f"{ms / 1000}s")
    if hz and (ms * hz) % 1000 == 0 and ms * hz // 1000 >= 1:
        forms.append(f"{ms * hz // 1000}jiffies")
    return draw(st.sampled_from(forms))


MACHINE_OPTIONS = {
    "min_free": ["auto", "1MiB", "4MiB", "128KiB", 0],
    "fault_rate": ["4GiB/s", "1GiB/s", "100MiB/s", "64GiB/s"],
    "exit_rate": ["2GiB/s", "256MiB/s", "32GiB/s"],
    "reap_rate": ["4GiB/s", "100MiB/s", "64GiB/s"],
    "reclaim_rate": ["1GiB/s", "10MiB/s", "16GiB/s"],
    "reclaim_round": ["1ms", "100us", "10ms", "1jiffies"],
    "quantum": ["1ms", "100us", "10ms", "1jiffies"],
    "swap": ["0B", 0],
}
MMAP = ("mmap_sem",)      # the mm's mmap_sem among a program's held locks (not a name)
# Lock names are any string: "mmap_sem" and "oom_lock" are the kernel's own names too.
LOCK_NAMES = ["i_mutex", "a", "b", "mmap_sem", "oom_lock", "", "\u00e9 1"]
FUTEX_NAMES = ["shm", "a", "\u00e9"]
ALLOC_GFP = ["GFP_KERNEL", "GFP_HIGHUSER_MOVABLE", "GFP_NOFS", "GFP_NOIO", "GFP_USER",
             "GFP_KERNEL|__GFP_NORETRY", "GFP_KERNEL|__GFP_NOFAIL", "GFP_KERNEL | __GFP_NOWARN"]
KALLOC_GFP = ALLOC_GFP + ["GFP_ATOMIC", "GFP_NOWAIT", "GFP_ATOMIC|__GFP_NOMEMALLOC"]
SLEEP_MODES = ["interruptible", "uninterruptible", "killable"]


class Ctx:
    """What a thread's program may touch."""

    def __init__(self, memory: int, vmas: dict[str, int], has_mm: bool, hz: int | None,
                 pressure: bool = False):
        self.memory, self.vmas, self.has_mm, self.hz = memory, vmas, has_mm, hz
        self.pressure = pressure            # fault whole VMAs in, to run out of memory


def draw_sleep(draw, ctx: Ctx) -> dict[str, Any]:
    step: dict[str, Any] = {"sleep": duration_ms(draw, 1, 200, ctx.hz)}
    if draw(st.booleans()):
        step["mode"] = draw(st.sampled_from(SLEEP_MODES))
    if draw(st.integers(0, 5)) == 0:
        step["jitter"] = duration_ms(draw, 1, 50)
    return step


def draw_locked(draw, ctx: Ctx, budget: int, depth: int, held: set, lock: dict,
                unlock: dict) -> list[dict]:
    """lock, up to two steps with it held (held includes it), unlock."""
    if draw(st.booleans()):
        lock["mode"] = draw(st.sampled_from(["uninterruptible", "killable"]))
    inner = draw_block(draw, ctx, draw(st.integers(0, min(2, budget - 2))), depth, held)
    return [lock, *inner, unlock]


def draw_block(draw, ctx: Ctx, budget: int, depth: int, held: set) -> list[dict]:
    """At most `budget` steps (a pair counts as two), balanced locks."""
    steps: list[dict] = []
    while budget > 0:
        # (the first is what hypothesis tries most: the interesting one)
        # a fault or munmap takes mmap_sem: not while this thread holds it
        kinds = ["alloc", "alloc", "alloc", "free"] if ctx.vmas and MMAP not in held else []
        kinds += ["sleep", "lock", "kalloc", "kfree"]
        if ctx.has_mm and MMAP not in held:
            kinds.append("mmap")
        if ctx.has_mm:
            kinds.append("futex")
        if depth < 2 and budget >= 2:
            kinds.append("repeat")
        kinds.append("exit")
        kind = draw(st.sampled_from(kinds))
        if kind == "sleep":
            steps.append(draw_sleep(draw, ctx))
            budget -= 1
        elif kind == "alloc":
            vma = draw(st.sampled_from(sorted(ctx.vmas)))
            size = ctx.vmas[vma] if ctx.pressure and draw(st.booleans()) else \
                draw_size(draw, ctx.vmas[vma], 1)
            step = {"alloc": size_text(draw, size), "vma": vma}
            if draw(st.integers(0, 3)) == 0:
                step["gfp"] = draw(st.sampled_from(ALLOC_GFP))
            steps.append(step)
            budget -= 1
        elif kind == "free":
            vma = draw(st.sampled_from(sorted(ctx.vmas)))
            steps.append({"free": size_text(draw, draw_size(draw, ctx.vmas[vma], 1)), "vma": vma})
            budget -= 1
        elif kind == "kalloc":
            step = {"kalloc": size_text(draw, draw_size(draw, ctx.memory // 4, 1))}
            if draw(st.integers(0, 2)) == 0:
                step["gfp"] = draw(st.sampled_from(KALLOC_GFP))
            steps.append(step)
            budget -= 1
        elif kind == "kfree":
            steps.append({"kfree": size_text(draw, draw_size(draw, ctx.memory // 4, 1))})
            budget -= 1
        elif kind == "lock":
            free = [n for n in LOCK_NAMES if n not in held]
            if not free or budget < 2:
                continue
            name = draw(st.sampled_from(free))
            pair = draw_locked(draw, ctx, budget, depth, held | {name},
                               {"lock": name}, {"unlock": name})
            steps += pair
            budget -= len(pair)
        elif kind == "futex":
            free = [n for n in FUTEX_NAMES if f"futex:{n}" not in held]
            if not free or budget < 2:
                continue
            name = draw(st.sampled_from(free))
            lock: dict[str, Any] = {"futex_lock": name}
            if ctx.vmas and draw(st.booleans()):
                lock["robust"] = True           # the thread then gets a robust_list
            pair = draw_locked(draw, ctx, budget, depth, held | {f"futex:{name}"}, lock,
                               {"futex_unlock": name})
            if depth == 0 and draw(st.integers(0, 2)) == 0:
                pair = pair[:-1]                # held at exit: robust or not
            steps += pair
            budget -= len(pair)
        elif kind == "mmap":
            if budget < 2:
                continue
            pair = draw_locked(draw, ctx, budget, depth, held | {MMAP},
                               {"mmap_lock": draw(st.sampled_from(["read", "write"]))},
                               {"mmap_unlock": True})
            steps += pair
            budget -= len(pair)
        elif kind == "repeat":
            body = [draw_sleep(draw, ctx)]
            body += draw_block(draw, ctx, draw(st.integers(0, min(2, budget - 1))), depth + 1,
                               held)
            body = draw(st.permutations(body)) if not any(
                k in s for s in body for k in ("lock", "unlock", "mmap_lock", "mmap_unlock",
                                                "futex_lock", "futex_unlock")) \
                else body
            steps.append({"repeat": draw(st.integers(1, 4)), "do": body})
            budget -= 1 + len(body)
        else:
            steps.append({"exit": draw(st.sampled_from([0, 1, 42, 255]))})
            budget -= 1
            if not held:
                break                                   # nothing after exit_group matters
    return steps


_NAME_CHARS = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789._+é日"
                              " %{}\\\"'\t/\u202e")


def odd_name(draw, default: str) -> str:
    """default, or now and then any string ending with it (names need only be unique)."""
    if draw(st.integers(0, 4)) == 0:
        return "".join(draw(st.lists(_NAME_CHARS, min_size=1, max_size=6))) + default
    return default


# process names that are also the kernel's (comm is any string of up to 15 characters)
SPECIAL_NAMES = ["init", "oom_reaper", "kthreadd", "swapper", "systemd"]


@st.composite
def scenarios(draw, name: str) -> dict[str, Any]:
    """A scenario that `workbench validate` should accept."""
    memory = draw(st.integers(16, 512)) * MiB
    hz = draw(st.sampled_from([None, None, None, 100, 250, 1000, 300, 24, 10, 1]))
    machine: dict[str, Any] = {"memory": size_text(draw, memory)}
    if hz:
        machine["hz"] = hz
    for key, values in MACHINE_OPTIONS.items():
        if draw(st.integers(0, 7)) == 0:
            machine[key] = draw(st.sampled_from(values))
    limits = {"time": duration_ms(draw, 500, 3000, hz), "stall": duration_ms(draw, 200, 2000, hz)}
    if draw(st.integers(0, 7)) == 0:
        limits["steps_per_instant"] = draw(st.sampled_from([1000, 10_000, 1_000_000]))
    if draw(st.integers(0, 7)) == 0:
        limits["steps"] = draw(st.sampled_from([100_000, 1_000_000]))
    scen: dict[str, Any] = {"name": name}
    if draw(st.integers(0, 3)) == 0:
        scen["description"] = draw(st.text(max_size=30))
    scen["machine"], scen["limits"] = machine, limits

    cgroups = [odd_name(draw, f"cg{i}") for i in range(draw(st.integers(0, 2)))]
    if cgroups:
        scen["cgroup"] = [{"name": c, "memory_max": size_text(draw, draw_size(draw, memory, MiB))}
                          for c in cgroups]

    resident_budget = memory * 6 // 10
    pressure = draw(st.sampled_from([True, False]))
    processes: list[dict[str, Any]] = []
    info: list[dict[str, Any]] = []          # per process: name, own vmas, start, kind
    have_init = False
    for i in range(draw(st.sampled_from([3, 2, 4, 1, 5]))):
        base = "".join(draw(st.lists(_NAME_CHARS, min_size=1, max_size=8))) + str(i)
        special = [n for n in SPECIAL_NAMES if n not in [q["name"] for q in info]]
        if draw(st.integers(0, 5)) == 0 and special:
            base = draw(st.sampled_from(special))
        p: dict[str, Any] = {"name": base}
        # an mm to share: any process's that has one (sharing chains are fine)
        owners = [q for q in info if q["has_mm"] and not q["count"]]
        kind = draw(st.sampled_from(["normal"] * 8 + ["kthread", "sharer", "vfork", "init",
                                                      "use_mm"]))
        if kind in ("sharer", "vfork", "use_mm") and not owners:
            kind = "normal"
        if kind == "init" and (have_init or processes):
            kind = "normal"
        start_ms = 0
        if kind != "init" and draw(st.integers(0, 2)) == 0:
            start_ms = draw(st.integers(0, 800))
        ref = None
        if kind in ("sharer", "vfork", "use_mm"):
            ref = draw(st.sampled_from(owners))
            start_ms = ref["latest_start"]   # later, the mm's users may be gone already
        if start_ms:
            p["start"] = f"{start_ms}ms"
        jitter = 0
        if kind not in ("init", "sharer", "vfork", "use_mm") and draw(st.integers(0, 5)) == 0:
            jitter = draw(st.integers(1, 100))
            p["start_jitter"] = f"{jitter}ms"
        if kind == "kthread":
            p["kthread"] = True
        elif kind == "init":
            p["init"] = True
            have_init = True
        elif kind == "sharer":
            p["shares_mm_with"] = ref["name"]
        elif kind == "use_mm":                     # a kthread working on a user mm
            p["kthread"], p["shares_mm_with"] = True, ref["name"]
        elif kind == "vfork":
            p["parent"], p["vfork"] = ref["name"], True
        if kind in ("normal", "kthread") and info and draw(st.integers(0, 3)) == 0:
            parents = [q for q in info if not q["count"] and q["latest_start"] <= start_ms]
            if parents:
                p["parent"] = draw(st.sampled_from(parents))["name"]
        if draw(st.booleans()):
            p["uid"] = draw(st.sampled_from([0, 1000]))
        if draw(st.integers(0, 2)) == 0:
            p["oom_score_adj"] = draw(st.one_of(st.sampled_from([-1000, -999, 0, 500, 1000]),
                                                st.integers(-1000, 1000)))
        if cgroups and kind != "kthread" and draw(st.booleans()):
            p["cgroup"] = draw(st.sampled_from(cgroups))
        count = None
        if kind == "normal" and draw(st.integers(0, 5)) == 0:
            count = draw(st.integers(1, 3))
        copies = count or 1                  # each of count processes has the VMAs
        own_mm = kind in ("normal", "init")
        vmas: dict[str, int] = {}
        if own_mm:
            vma_list = []
            for j in range(draw(st.sampled_from([1, 2, 0]))):
                vkind = draw(st.sampled_from(["anon", "file", "shmem"] * 4 + ["hugetlb"]))
                size = (draw(st.integers(memory // 4 // PAGE, memory * 3 // 4 // PAGE)) * PAGE
                        if pressure else draw_size(draw, memory * 3 // 4))
                if vkind == "hugetlb":          # its pool is taken from memory at boot
                    if size * copies > resident_budget:
                        vkind = "anon"
                    else:
                        resident_budget -= size * copies
                v: dict[str, Any] = {"name": odd_name(draw, draw(st.sampled_from(
                                         ["heap", "buf", "lib", "data"])) + str(j)),
                                     "kind": vkind, "size": size_text(draw, size)}
                if draw(st.booleans()) and resident_budget // copies >= 2 * PAGE:
                    res = draw_size(draw, min(size, resident_budget // copies - PAGE), PAGE)
                    res = min(res, size)
                    resident_budget -= (-(-res // PAGE) * PAGE + PAGE) * copies
                    v["resident"] = size_text(draw, res)
                    if vkind == "file" and draw(st.booleans()):
                        v["dirty"] = size_text(draw, draw(st.integers(0, res)))
                if draw(st.integers(0, 3)) == 0:
                    v["locked"] = True
                if vkind == "file" and draw(st.integers(0, 3)) == 0:
                    v["shared"] = draw(st.booleans())
                elif vkind == "shmem" and draw(st.integers(0, 3)) == 0:
                    v["shared"] = True
                elif vkind == "anon" and draw(st.integers(0, 3)) == 0:
                    v["shared"] = False
                vmas[v["name"]] = size
                vma_list.append(v)
            if vma_list:
                p["vma"] = vma_list
        elif kind in ("sharer", "vfork", "use_mm"):
            vmas = dict(ref["vmas"])
        has_mm = kind != "kthread"
        ctx = Ctx(memory, vmas, has_mm=has_mm, hz=hz, pressure=pressure)
        threads = []
        for t in range(draw(st.sampled_from([1, 2, 3]))):
            program = draw_block(draw, ctx, draw(st.sampled_from([4, 3, 6, 2, 1, 5])), 0, set())
            if pressure and t == 0 and own_mm and vmas and draw(st.sampled_from([True, False])):
                vma = draw(st.sampled_from(sorted(vmas)))      # a hog: fault it all in
                after_first = bool(program) and "mmap_lock" not in program[0] and draw(
                    st.booleans())                  # not inside an mmap_lock pair
                program.insert(int(after_first), {"alloc": size_text(draw, vmas[vma]),
                                                  "vma": vma})
            thread = {"name": odd_name(draw, ["main", "worker", "writer"][t]),
                      "program": program}
            if _robust(program):
                thread["robust_list"] = draw(st.sampled_from(sorted(vmas)))
            threads.append(thread)
        p["thread"] = threads
        if count:
            p["count"] = count
        processes.append(p)
        info.append({"name": base, "has_mm": has_mm, "vmas": vmas, "count": count,
                     "latest_start": start_ms + jitter})
    scen["process"] = processes
    return scen


def _robust(steps: list) -> bool:
    return any(s.get("robust") or _robust(s.get("do", [])) for s in steps)


OUTCOME_NAMES = ["error", "panic", "lockup", "hang", "recovered", "no-oom"]
ARMS = [{"name": "patch", "preset": "patch"}, {"name": "no-reaper", "preset": "no-reaper"},
        {"name": "v4.6", "preset": "v4.6"}, {"name": "modern", "preset": "modern"}]


@st.composite
def bundles(draw, max_scenarios: int = 2) -> dict[str, Any]:
    """{"exp": experiment dict, "files": {file name: scenario dict}}: a valid experiment."""
    names = draw(st.lists(st.sampled_from(["s01", "s02", "hog", "lock.y", "a+b", "x_1"]),
                          min_size=1, max_size=max_scenarios, unique=True))
    scens = [draw(scenarios(n)) for n in names]
    arms = draw(st.sampled_from([[ARMS[0]], [ARMS[1]], [ARMS[3]], ARMS[:2], ARMS[2:], ARMS,
                                 ARMS[::-1]]))
    arms = [dict(a) for a in arms]
    for arm in arms:
        if arm["preset"] == "patch" and draw(st.integers(0, 3)) == 0:
            opts: dict[str, Any] = {}
            if draw(st.booleans()):
                opts["attempts"] = draw(st.integers(1, 20))
            if draw(st.booleans()):
                opts["sleep"] = duration_ms(draw, 10, 200)
            arm["options"] = {"reaper": opts}
        if draw(st.integers(0, 4)) == 0:           # a custom arm name on the same preset
            arm["name"] = arm["name"] + "-2"
    for s in scens:
        if draw(st.integers(0, 3)) == 0:
            arm = draw(st.sampled_from(arms))["name"]
            s["expect"] = {arm: {"outcome": draw(st.lists(st.sampled_from(OUTCOME_NAMES),
                                                          min_size=1, max_size=3, unique=True))}}
            if draw(st.booleans()):
                s["expect"][arm]["invariant_violations"] = 0
    exp: dict[str, Any] = {}
    if draw(st.booleans()):
        exp["title"] = draw(st.text(max_size=20))
    exp["seeds"] = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3, unique=True))
    files: dict[str, dict] = {}
    if draw(st.integers(0, 3)) == 0:
        exp["scenario"] = scens                             # inline [[scenario]] tables
    else:
        for i, s in enumerate(scens):
            files[f"scen{i}.toml"] = s
        exp["scenarios"] = draw(st.sampled_from([sorted(files), ["scen*.toml"]]))
    exp["arm"] = arms
    if draw(st.integers(0, 4)) == 0:               # defaults for every scenario
        key = draw(st.sampled_from(sorted(MACHINE_OPTIONS)))
        exp["machine"] = {key: draw(st.sampled_from(MACHINE_OPTIONS[key]))}
    if draw(st.integers(0, 4)) == 0:
        exp["limits"] = {"steps_per_instant": draw(st.sampled_from([10_000, 100_000]))}
    if draw(st.integers(0, 2)) == 0:
        exp["out"] = "out-a"       # the file's out, relative to the current directory
    return {"exp": exp, "files": files}


# -- running the command line, and the contract -----------------------------------------

class Invocation:
    def __init__(self, argv: list[str]):
        self.argv = argv
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                self.rc = cli.main(argv)
            except SystemExit as e:              # argparse's usage errors
                self.rc = e.code if isinstance(e.code, int) else 2
            except BaseException as e:           # what a user would see as a traceback
                raise AssertionError(f"cli.main({argv}) raised {type(e).__name__}: {e}\n"
                                     f"stderr: {err.getvalue()[-2000:]}") from e
        self.out, self.err = out.getvalue(), err.getvalue()
        assert self.rc in (0, 1, 2), f"exit status {self.rc} for {argv}\n{self.err[-2000:]}"
        assert "Traceback" not in self.out + self.err, f"traceback from {argv}:\n{self.out}{self.err}"


def write_bundle(root: Path, bundle: dict[str, Any]) -> Path:
    for name, scen in bundle["files"].items():
        text = scen if isinstance(scen, (str, bytes)) else to_toml(scen)
        _write(root / name, text)
    exp = bundle["exp"]
    _write(root / "exp.toml", exp if isinstance(exp, (str, bytes)) else to_toml(exp))
    return root / "exp.toml"


def _write(path: Path, text: str | bytes) -> None:
    data = text if isinstance(text, bytes) else text.encode("utf-8")
    path.write_bytes(data)
    note(f"--- {path.name}\n{data.decode('utf-8', 'backslashreplace')}")


def tree(root: Path, skip: set[Path]) -> dict[str, bytes]:
    """Every file and directory under root, with contents, except under skip."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = [n for n in dirnames if d / n not in skip]
        for n in dirnames:
            out[str((d / n).relative_to(root)) + "/"] = b""
        for n in filenames:
            out[str((d / n).relative_to(root))] = (d / n).read_bytes()
    return out


def check_out(out: Path, inv: Invocation) -> dict[str, tuple[bytes, dict]]:
    """The logs under out: well formed, each ending with its summary, no .tmp
    left; the manifest names them all.  Returns relpath -> (bytes, summary)."""
    if not out.exists():
        return {}
    leftovers = [str(p) for p in out.rglob("*.tmp")]
    assert not leftovers, f"left behind after {inv.argv}: {leftovers}"
    logs: dict[str, tuple[bytes, dict]] = {}
    for p in sorted(out.rglob("*.jsonl")):
        data = p.read_bytes()
        assert data.endswith(b"\n"), f"{p}: the last line is cut short"
        events = [json.loads(line) for line in data.splitlines()]
        assert events and events[0]["event"] == "header", f"{p}: no header first"
        assert events[-1]["event"] == "summary", f"{p}: ends with {events[-1]['event']!r}, " \
                                                 "not the summary"
        assert [e["event"] for e in events].count("summary") == 1, f"{p}: two summaries"
        logs[str(p.relative_to(out))] = (data, events[-1])
    manifest = out / "manifest.json"
    if inv.rc in (0, 1):
        m = json.loads(manifest.read_text())
        assert m["planned_runs"] == len(m["runs"]), m
        named = {r["log"] for r in m["runs"] if r["log"]}
        assert named == set(logs), f"manifest names {sorted(named)}, out holds {sorted(logs)}"
        failed = any(r["outcome"] == "error" or r["expect_failed"] for r in m["runs"])
        assert inv.rc == (1 if failed else 0), f"exit status {inv.rc}, runs failed: {failed}"
    return logs


def check_summaries(logs: dict[str, tuple[bytes, dict]]) -> None:
    """A valid config's runs: no broken invariant, no internal error.  Other
    errors (step limits, scenario problems found at run time) are allowed."""
    for path, (_, s) in logs.items():
        assert s["invariant_violations"] == 0, f"{path}: invariant violated: {s['errors']} " \
                                               + _invariants(logs[path][0])
        for problem in s["errors"]:
            assert not problem.startswith("internal error"), f"{path}: {problem}\n" \
                + _tracebacks(logs[path][0])
        event(f"outcome: {s['outcome']}")
        event(f"kills: {min(s['kills'], 3)}{'+' if s['kills'] > 3 else ''}")
        if s["outcome"] == "error":
            for problem in s["errors"]:
                event("error: " + re.sub(r"[0-9.]+", "N", re.sub(r"process \S+", "process P",
                                                                  problem))[:70])
                note(f"{path}: outcome error: {problem}")


def _invariants(data: bytes) -> str:
    return "; ".join(json.loads(line)["problem"] for line in data.splitlines()
                     if b'"event":"invariant"' in line)


def _tracebacks(data: bytes) -> str:
    return "\n".join(json.loads(line).get("traceback", "") for line in data.splitlines()
                     if b'"event":"error"' in line)


@contextlib.contextmanager
def workdir():
    """A fresh directory per example, also the current directory meanwhile
    (so that a write relative to it is seen)."""
    with tempfile.TemporaryDirectory(prefix="wb-fuzz-") as d:
        old = os.getcwd()
        os.chdir(d)
        try:
            yield Path(d)
        finally:
            os.chdir(old)


def run_and_check(root: Path, config: Path, *, valid_expected: bool,
                  file_out: bool = False) -> dict:
    """validate, then run into root/out-a (--out, or file_out: the file's
    own `out = "out-a"`); the contract for any input.  Returns the logs
    (empty if the config was refused)."""
    out = root / "out-a"
    before = tree(root, {out})
    v = Invocation(["validate", str(config)])
    r = Invocation(["run", str(config), *([] if file_out else ["--out", str(out)]),
                    "--jobs", "1"])
    assert tree(root, {out}) == before, "a file was written outside out"
    event(f"validate exit {v.rc}")
    if v.rc == 2:
        assert r.rc == 2, f"validate refused the config, run exited {r.rc}:\n{v.err}"
        assert not out.exists() or not any(out.rglob("*.jsonl")), "a refused config ran"
        assert v.err.strip(), "refused without saying why"
        if valid_expected:
            note(f"the generated config was refused:\n{v.err}")
        return {}
    assert v.rc == 0, v.err
    assert r.rc in (0, 1), f"validate accepted the config, run exited {r.rc}:\n{r.err}"
    logs = check_out(out, r)
    planned = json.loads((out / "manifest.json").read_text())["planned_runs"]
    said = re.search(r"= (\d+) runs$", v.out.strip())
    assert said and int(said.group(1)) == planned, f"validate said {v.out!r}, run planned {planned}"
    if not planned:
        event("accepted with nothing to run (arm = [])")      # exit 0, and no log
    else:
        assert logs, "a run that finished left no log"
    check_summaries(logs)
    return logs


# -- the tests ----------------------------------------------------------------------

@FUZZ
@given(bundle=bundles(), rerun_all=st.booleans())
def test_valid_configs_run_cleanly_and_rerun_identically(bundle, rerun_all):
    check_valid(bundle, rerun_all)


def check_valid(bundle: dict[str, Any], rerun_all: bool) -> None:
    with workdir() as root:
        config = write_bundle(root, bundle)
        logs = run_and_check(root, config, valid_expected=True,
                             file_out=bundle["exp"].get("out") == "out-a")
        if not logs:
            return
        # every scenario x arm x seed has its log
        exp = bundle["exp"]
        scen_names = [s["name"] for s in (exp.get("scenario") or bundle["files"].values())]
        want = {f"{s}/{a['name']}/seed-{n}.jsonl" for s in scen_names for a in exp["arm"]
                for n in exp["seeds"]}
        assert set(logs) == want
        # the same config and seed again, into another out: the same bytes
        # (all of them, or one run picked by --scenario/--arm/--seed)
        out_b = root / "out-b"
        before = tree(root, {root / "out-a", out_b})
        argv = ["run", str(config), "--out", str(out_b), "--jobs", "1"]
        if not rerun_all:
            s, a, n = scen_names[-1], exp["arm"][-1]["name"], exp["seeds"][-1]
            argv += ["--scenario", s, "--arm", a, "--seed", str(n)]
            want = {f"{s}/{a}/seed-{n}.jsonl"}
        r = Invocation(argv)
        assert tree(root, {root / "out-a", out_b}) == before, "a file was written outside out"
        again = check_out(out_b, r)
        assert set(again) == want
        for path in want:
            assert again[path][0] == logs[path][0], f"{path}: the rerun's log differs"


# -- strategy 2: mutations -------------------------------------------------------------

HUGE = [10**30, -(10**30), 2**63, 2**64, -1, 0, "9" * 50 + "GiB", "9" * 50, "-1MiB",
        "4PiB", "4097TiB", "1e3MiB", "0x10MiB", "1.5", 1.5, float("nan"), float("inf"), -0.0,
        "9" * 50 + "ms", "-5s", "0s", "1ns", "99999999999jiffies"]
STRINGS = ["", " ", "héllo", "日本語", "\u202e", "\x00", "a\nb", "../x", "../../etc/passwd",
           "a/b", "/abs", ".", "..", "x" * 100, "manifest.json", "CON", "nul", "-", "--help"]
WRONG_TYPES = [True, False, [], [1, 2], {}, {"a": 1}, [{"a": 1}], "forever", "killable",
               "write", "GFP_ATOMIC", "GFP_BOGUS", 1, 7, "hugetlb", "shmem", "auto", "1GiB/s"]
STEP_SNIPPETS = [{"unlock": "mmap_sem"}, {"lock": "mmap_sem"}, {"mmap_unlock": True},
                 {"mmap_lock": "read"}, {"mmap_lock": "write", "mode": "killable"},
                 {"unlock": "a"}, {"lock": "a"}, {"exit": 0}, {"kfree": "1GiB"},
                 {"free": "1GiB", "vma": "heap0"}, {"alloc": "4KiB", "vma": "heap0"},
                 {"kalloc": "1GiB", "gfp": "GFP_ATOMIC|__GFP_NOFAIL"},
                 {"kalloc": "1MiB", "gfp": "GFP_KERNEL|__GFP_NOFAIL"},
                 {"sleep": "1s", "mode": "uninterruptible"}, {"sleep": 0},
                 {"repeat": "forever", "do": [{"sleep": "10ms"}]},
                 {"repeat": 3, "do": [{"kfree": "4KiB"}]}, {"alloc": "1MiB", "vma": "heap0",
                                                              "gfp": "GFP_NOIO"}]
NEAR_MISS = [lambda k: k[:-1], lambda k: k + "s", lambda k: k.upper(), lambda k: k[1:],
             lambda k: k[:1] + k[2:1:-1] + k[1:2] + k[3:] if len(k) > 3 else k + "_",
             lambda k: k.replace("_", "-"), lambda k: " " + k, lambda k: k + "\u00e9"]


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into a dict/list tree."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


def _get(node: Any, path: tuple) -> Any:
    for p in path:
        node = node[p]
    return node


def _names_in(bundle: dict, key: str) -> list[str]:
    return [v for p in _paths(bundle) if p and p[-1] == key
            and isinstance(v := _get(bundle, p), str)]


def deep_copy(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: deep_copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [deep_copy(v) for v in x]
    return x


@st.composite
def mutated(draw) -> dict[str, Any]:
    b = deep_copy(draw(bundles(max_scenarios=1)))
    for _ in range(draw(st.integers(1, 3))):
        # paths into the experiment and the scenario files (never the file names)
        paths = [p for p in _paths(b) if len(p) >= 2 and not (p[0] == "files" and len(p) == 2)]
        path = draw(st.sampled_from(paths))
        parent, key = _get(b, path[:-1]), path[-1]
        op = draw(st.sampled_from(["delete", "rename", "huge", "string", "type", "nest",
                                   "reference", "duplicate", "unknown", "empty", "swap",
                                   "restep", "relock"]))
        if op == "delete":
            if isinstance(parent, dict):
                del parent[key]
            elif len(parent) > 0:
                parent.pop(key)
        elif op == "rename" and isinstance(parent, dict) and isinstance(key, str):
            new = draw(st.sampled_from(NEAR_MISS))(key)
            if new and new not in parent:
                parent[new] = parent.pop(key)
        elif op == "huge":
            parent[key] = draw(st.sampled_from(HUGE))
        elif op == "string":
            parent[key] = draw(st.one_of(st.sampled_from(STRINGS),
                                         st.text(st.characters(blacklist_categories=("Cs",)),
                                                 max_size=20)))
        elif op == "type":
            parent[key] = draw(st.sampled_from(WRONG_TYPES))
        elif op == "nest":
            # a step wrapped in repeats, deeper than the language allows now and then
            steps = [p for p in _paths(b) if len(p) >= 2 and p[-2] in ("program", "do")]
            if steps:
                at = draw(st.sampled_from(steps))
                holder, i = _get(b, at[:-1]), at[-1]
                step = holder[i]
                for _ in range(draw(st.sampled_from([1, 2, 16, 17, 40, 200]))):
                    step = {"repeat": draw(st.sampled_from([1, 2, "forever"])), "do": [step]}
                holder[i] = step
        elif op == "reference":
            key_name = draw(st.sampled_from(["vma", "parent", "shares_mm_with", "cgroup",
                                             "unlock", "lock"]))
            where = [p for p in _paths(b) if p and p[-1] == key_name]
            bogus = draw(st.sampled_from(["nosuch", "init", "", "../x", "heap0", "main",
                                          "mmap_sem", "oom_lock", "oom_reaper",
                                          *(_names_in(b, "name")[:5])]))
            if where:
                at = draw(st.sampled_from(where))
                _get(b, at[:-1])[at[-1]] = bogus
            else:
                procs = [p for p in _paths(b) if len(p) >= 2 and p[-2] == "process"]
                if procs:
                    _get(b, draw(st.sampled_from(procs)))[key_name] = bogus
        elif op == "duplicate" and isinstance(parent, list) and parent:
            parent.insert(key, deep_copy(parent[key]))
        elif op == "unknown":
            target = _get(b, path)
            if isinstance(target, dict):
                target[draw(st.sampled_from(["memroy", "nmae", "x", "Name", "thread ",
                                             "stall"]))] = 1
        elif op == "empty":
            parent[key] = draw(st.sampled_from([[], {}, ""]))
        elif op == "restep":
            # a step replaced by, or a step inserted before, one of another kind
            steps = [p for p in _paths(b) if len(p) >= 2 and p[-2] in ("program", "do")]
            if steps:
                at = draw(st.sampled_from(steps))
                holder, i = _get(b, at[:-1]), at[-1]
                step = deep_copy(draw(st.sampled_from(STEP_SNIPPETS)))
                if draw(st.booleans()):
                    holder[i] = step
                else:
                    holder.insert(i, step)
        elif op == "relock":
            # a lock step of one family written as the other's, as a user might confuse
            # them: mmap_lock <-> lock = "mmap_sem", mmap_unlock <-> unlock = "mmap_sem"
            steps = [p for p in _paths(b) if len(p) >= 2 and p[-2] in ("program", "do")
                     and isinstance(st_ := _get(b, p), dict)
                     and {"lock", "unlock", "mmap_lock", "mmap_unlock"} & set(st_)]
            if steps:
                at = draw(st.sampled_from(steps))
                holder, i = _get(b, at[:-1]), at[-1]
                old = holder[i]
                if "mmap_lock" in old:
                    holder[i] = {"lock": "mmap_sem", **({"mode": old["mode"]} if "mode" in old
                                                        else {})}
                elif "mmap_unlock" in old:
                    holder[i] = {"unlock": "mmap_sem"}
                elif "lock" in old:
                    holder[i] = {"mmap_lock": draw(st.sampled_from(["read", "write"]))}
                else:
                    holder[i] = {"mmap_unlock": True}
        elif op == "swap":
            others = [p for p in _paths(b) if len(p) >= 2 and p[0] == path[0]
                      and not (p[0] == "files" and len(p) == 2)]
            other = draw(st.sampled_from(others))
            if other[:len(path)] != path and path[:len(other)] != other:
                parent[key] = deep_copy(_get(b, other))
    return b


@FUZZ
@given(bundle=mutated())
def test_mutated_configs_are_refused_cleanly(bundle):
    check_any(bundle)


def check_any(bundle: dict[str, Any]) -> None:
    """Any input: the contract; and if it is valid after all, a valid run's."""
    with workdir() as root:
        config = write_bundle(root, bundle)
        run_and_check(root, config, valid_expected=False)


# -- strategy 3: raw bytes ---------------------------------------------------------------

@st.composite
def byte_mutations(draw, data: bytes) -> bytes:
    for _ in range(draw(st.integers(1, 3))):
        n = len(data)
        op = draw(st.sampled_from(["truncate", "truncate", "flip", "insert", "delete",
                                   "dupline", "random", "bom", "nest", "nul"]))
        at = draw(st.integers(0, n))
        if op == "truncate":
            data = data[:at]
        elif op == "flip" and n:
            at = min(at, n - 1)
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
        elif op == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
        elif op == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 16)):]
        elif op == "dupline":
            lines = data.split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            data = b"\n".join(lines)
        elif op == "random":
            data = draw(st.binary(max_size=200))
        elif op == "bom":
            data = b"\xef\xbb\xbf" + data
        elif op == "nest":
            depth = draw(st.sampled_from([10, 500, 5000]))
            data = data[:at] + b"\nx = " + b"[" * depth + b"]" * depth + b"\n" + data[at:]
        else:
            data = data[:at] + b"\x00" + data[at:]
    return data


@st.composite
def raw_bundles(draw) -> dict[str, Any]:
    b = draw(bundles(max_scenarios=1))
    files = {name: to_toml(s).encode() for name, s in b["files"].items()}
    exp = to_toml(b["exp"]).encode()
    target = draw(st.sampled_from(["exp", *files]))
    if target == "exp":
        exp = draw(byte_mutations(exp))
    else:
        files[target] = draw(byte_mutations(files[target]))
    return {"exp": exp, "files": files}


@FUZZ
@given(bundle=raw_bundles())
def test_raw_bytes_are_refused_cleanly(bundle):
    check_any(bundle)


def test_the_toml_emitter_round_trips():
    import tomllib
    d = {"a": 1, "b": "x\"\\\n\x00é", "c": [1, {"d": 2.5}], "e": {"f": [{"g": True}], "h": -0.0},
         "../k": float("inf"), "program": [{"sleep": "1ms"}], "t": [{"u": {"v": 1}}]}
    assert tomllib.loads(to_toml(d)) == d
