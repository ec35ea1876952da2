"""The workbench's scale benchmark (not a test): python benchmarks/scale.py [--quick]

Scenarios generated in code, each run in a fresh child process (so that its
peak RSS is its own):
1. N = 10 / 100 / 1,000 / 10,000 processes, idle (each wakes about once a
   second) or active (each wakes about ten times a second and takes its
   mmap_sem),
   with or without an OOM livelock beside them: S05's shape, a PF_EXITING
   thread stuck behind its process's mmap writer, which allocates, so that
   every out_of_memory() call aborts (4.5) for the rest of the run;
2. the livelock alone beside N idle processes at two lengths: the difference
   is the cost of one more virtual second of livelock, which should not
   depend on N (the ABORT decision comes from the index of pending victims);
3. 10,000 processes (each waking about once a minute) for 10 s, 100 s and
   1 h of virtual time with periodic OOM episodes: hogs forked at random times (each killed, its memory reaped),
   and two S04-style lockups (a victim whose mmap writer sleeps in D state
   for 20 s, so that neither exit nor the reaper can free it meanwhile).

For each run: wall time, Trio task steps (a trio.abc.Instrument), events and
bytes of log, peak RSS, and Trio steps per wall second against a bare
trio.sleep loop run in the same child process (benchmarks/bench.py's floor);
then the growth exponent of wall time between sizes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
SIZES = (10, 100, 1000, 10000)


# -- scenarios ---------------------------------------------------------------------

def _proc(name: str, program: list[str], *, count: int = 1, heap: str = "", resident: str = "",
          extra: str = "", threads: list[tuple[str, list[str]]] | None = None) -> str:
    out = f'[[process]]\nname = "{name}"\n'
    if count > 1:
        out += f"count = {count}\n"
    out += extra
    if heap:
        out += f'[[process.vma]]\nname = "heap"\nkind = "anon"\nsize = "{heap}"\n'
        if resident:
            out += f'resident = "{resident}"\n'
    for tname, prog in threads or [("main", program)]:
        out += f'[[process.thread]]\nname = "{tname}"\nprogram = [{", ".join(prog)}]\n'
    return out


def _scenario(name: str, processes: list[str], *, memory_gib: int, time_s: int) -> str:
    return (f'name = "{name}"\n[machine]\nmemory = "{memory_gib}GiB"\n'
            f'[limits]\ntime = "{time_s}s"\nstall = "5s"\nsteps = {10**12}\n'
            f'steps_per_instant = {10**8}\n\n' + "\n".join(processes))


def _workers(n: int, kind: str) -> str:
    """N processes with 1 MiB resident each: idle ones sleep about a second at
    a time, active ones wake about ten times a second and take their mmap_sem
    (they do not allocate: a livelock would catch every allocator, and N
    allocators retrying each millisecond cost N per millisecond whatever the
    index does); calm ones wake about once a minute; parked ones sleep past
    the end of the run."""
    if kind == "parked":
        program = ['{ sleep = "7200s" }']
    elif kind == "calm":
        program = ['{ repeat = "forever", do = [{ sleep = "30s", jitter = "60s" }] }']
    elif kind == "idle":
        program = ['{ repeat = "forever", do = [{ sleep = "500ms", jitter = "1s" }] }']
    else:
        body = ('{ sleep = "50ms", jitter = "100ms" }, { mmap_lock = "read" }, '
                '{ mmap_unlock = true }')
        program = [f'{{ repeat = "forever", do = [{body}] }}']
    return _proc("w", program, count=n, heap="2MiB", resident="1MiB")


def _livelock(memory_gib: int) -> str:
    """S05: the exiter is PF_EXITING in exit_mm()'s down_read behind the writer,
    which holds mmap_sem for write and allocates more than there is: every
    out_of_memory() aborts on the exiting thread (4.5), nobody is killed."""
    return _proc("app", [], heap="128MiB", resident="128MiB", threads=[
        ("writer", ['{ mmap_lock = "write" }', '{ sleep = "10ms" }',
                    f'{{ kalloc = "{memory_gib}GiB" }}', '{ mmap_unlock = true }']),
        ("exiter", ['{ sleep = "5ms" }'])])


def workload(n: int, kind: str, livelock: bool, time_s: int) -> str:
    memory = 4 + n // 256                          # the workers' pages and room to spare
    processes = [_workers(n, kind)]
    if livelock:
        processes.append(_livelock(memory))
    return _scenario(f"{kind}-{n}{'-livelock' if livelock else ''}", processes,
                     memory_gib=memory, time_s=time_s)


def episodes(n: int, time_s: int) -> str:
    """N calm processes and OOM episodes: a hog forked at a random time every
    few minutes faults in more than is free and is killed (the reaper reaps
    it), and at a third and two thirds of the run an S04 lockup: the victim's
    mmap writer sleeps 20 s in D state holding mmap_sem, so its exit and the
    reaper both wait, and the allocator stalls past limits.stall."""
    memory = 4 + n // 256
    hogs = max(2, time_s // 300)
    parts = [_workers(n, "calm"),
             _proc("hog", [f'{{ alloc = "{memory}GiB", vma = "heap" }}', '{ sleep = "7200s" }'],
                   count=hogs, heap=f"{memory}GiB",
                   extra=f'start = "1s"\nstart_jitter = "{max(1, time_s - 30)}s"\n')]
    for i, at in enumerate((time_s // 3, 2 * time_s // 3)):
        parts.append(_proc(f"locked{i}", [], heap="1GiB", resident="1GiB",
                           extra=f'start = "{at}s"\n', threads=[
                               ("main", ['{ sleep = "7200s" }']),
                               ("writer", ['{ mmap_lock = "write" }',
                                           '{ sleep = "20s", mode = "uninterruptible" }',
                                           '{ mmap_unlock = true }'])]))
        # Half a GiB more than is free then: only the locked victim's exit covers it.
        more = f'"{memory * 1024 - n - 512}MiB"'
        parts.append(_proc(f"kalloc{i}", ['{ sleep = "1ms" }', f'{{ kalloc = {more} }}',
                                          f'{{ kfree = {more} }}', '{ sleep = "7200s" }'],
                           extra=f'start = "{at}s"\n'))
    return _scenario(f"episodes-{n}", parts, memory_gib=memory, time_s=time_s)


# -- one case, in a child process ----------------------------------------------------------

def run_case(text: str, preset: str) -> dict:
    sys.path.insert(0, str(HERE))
    from bench import StepCounter, bare_sleep_loop

    from workbench.discovery import load_plugins
    from workbench.runner import run_one
    from workbench.testing import experiment

    plugins = load_plugins()
    with tempfile.TemporaryDirectory() as tmp:
        exp = experiment(text, Path(tmp), preset=preset, plugins=plugins)
        counter = StepCounter()
        started = time.perf_counter()
        result = run_one(exp.scenarios[0], exp.arms[0], 1, Path(tmp) / "runs",
                         plugins.describe(), [counter])
        wall = time.perf_counter() - started
        data = result.path.read_bytes()
    bare = bare_sleep_loop(tasks=10, sleeps=1000)
    s = result.summary
    return {"wall_s": wall, "steps": counter.steps, "events": data.count(b"\n"),
            "log_bytes": len(data), "virtual_s": s["end_s"], "outcome": s["outcome"],
            "kills": s["kills"], "oom_calls": s.get("oom_invocations"),
            "errors": s.get("errors", []),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "vs_bare": counter.steps / wall / bare["steps_per_s"]}


def in_child(name: str, text: str, preset: str, timeout: float) -> dict:
    started = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, __file__, "--case", preset], input=text, text=True,
                           capture_output=True, timeout=timeout, cwd=ROOT, check=False)
    except subprocess.TimeoutExpired:
        return {"name": name, "error": f"over {timeout:.0f} s wall"}
    if p.returncode != 0:
        return {"name": name, "error": p.stderr.strip().splitlines()[-1:]}
    row = json.loads(p.stdout)
    row.update(name=name, child_wall_s=time.perf_counter() - started)
    return row


# -- the tables ------------------------------------------------------------------------

def print_rows(rows: list[dict]) -> None:
    """vs bare: the run's Trio task steps per wall second over a bare trio.sleep
    loop's.  A thread that runs alone passes virtual time without a Trio step
    (kernel/clock.py), so a lone livelock's ratio is low: it does its work
    between steps."""
    print(f"{'case':<28}{'wall s':>8}{'steps':>10}{'events':>9}{'log MB':>8}{'RSS MiB':>9}"
          f"{'virt s':>8}{'vs bare':>8}  outcome")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:<28}  {r['error']}")
            continue
        print(f"{r['name']:<28}{r['wall_s']:>8.2f}{r['steps']:>10}{r['events']:>9}"
              f"{r['log_bytes'] / 1e6:>8.2f}{r['peak_rss_mib']:>9.0f}{r['virtual_s']:>8.0f}"
              f"{r['vs_bare']:>8.2f}  {r['outcome']} (kills {r['kills']})")


def exponents(rows: dict[tuple, dict], kinds: list[tuple], sizes: tuple) -> None:
    print("\ngrowth exponent of wall time, d log(wall) / d log(N), between sizes:")
    for kind in kinds:
        cells = []
        for a, b in itertools.pairwise(sizes):
            ra, rb = rows.get((*kind, a)), rows.get((*kind, b))
            if ra and rb and "error" not in ra and "error" not in rb:
                cells.append(f"{a}->{b}: {math.log(rb['wall_s'] / ra['wall_s']) / math.log(b / a):.2f}")
        print(f"  {'/'.join(map(str, kind)):<22}" + "   ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="sizes up to 1,000, 10 s runs, the episodes for 100 s only")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--case", help=argparse.SUPPRESS)     # internal: one run, in a child
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(sys.stdin.read(), args.case)))
        return
    sizes = SIZES[:3] if args.quick else SIZES
    out: list[dict] = []
    keyed: dict[tuple, dict] = {}
    print("1. N processes, 10 s of virtual time (preset patch)\n")
    kinds = [(k, ll) for k in ("idle", "active") for ll in ("", "livelock")]
    rows = []
    for kind, ll in kinds:
        for n in sizes:
            row = in_child(f"{kind}{'+' + ll if ll else ''} N={n}",
                           workload(n, kind, bool(ll), 10), "patch", 600)
            keyed[(kind, ll or "-", n)] = row
            rows.append(row)
    print_rows(rows)
    exponents(keyed, [(k, ll or "-") for k, ll in kinds], sizes)
    out += rows

    print("\n2. one more virtual second of livelock beside N parked processes\n")
    # Both lengths past the filling: at 10,000 processes the writer needs ~10 s to run out.
    lengths = (10, 30) if args.quick else (20, 100)
    rows, per_s = [], {}
    for n in (100, sizes[-1]):
        pair = [in_child(f"livelock N={n} {t}s", workload(n, "parked", True, t), "patch", 900)
                for t in lengths]
        rows += pair
        if all("error" not in r for r in pair):
            per_s[n] = (pair[1]["wall_s"] - pair[0]["wall_s"]) / (lengths[1] - lengths[0])
    print_rows(rows)
    for n, cost in per_s.items():
        print(f"  N={n}: {cost * 1000:.1f} ms wall per virtual second of livelock")
    if len(per_s) == 2:
        a, b = per_s.values()
        print(f"  ratio N={sizes[-1]} / N=100: {b / a:.2f}")
    out += rows

    n = 1000 if args.quick else 10000
    print(f"\n3. {n:,} processes with OOM episodes (kills, reaps, two lockups; preset patch)\n")
    rows = [in_child(f"episodes N={n} {t}s", episodes(n, t), "patch", 900)
            for t in ((100,) if args.quick else (10, 100, 3600))]
    print_rows(rows)
    out += rows
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
