"""The workbench's performance benchmark (not a test): python benchmarks/bench.py

Measures, in one process:
1. the wall time of the main job (configs/default.toml), run by run, with Trio
   task steps (counted by a trio.abc.Instrument), logged events and virtual
   seconds per wall second;
2. a bare trio.sleep loop under MockClock(autojump_threshold=0), the floor
   for one Trio task step on this machine;
3. one scenario (S03 in the shape of tests/test_scale.py) at 1 GiB and at
   1 TiB, sizes, rates and min_free scaled together so that the virtual
   timeline is the same (to a page-table page): the wall times should be too;
4. the same with swap (S17's shape, tests/test_scale.py scaled_swap()): a 1 GiB
   and a 1 TiB machine with as much swap, swapped full before the OOM kill.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import trio
import trio.testing

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_scale import scaled, scaled_swap  # noqa: E402  (the scenarios the scaling tests check)

from workbench.experiment import load_experiment  # noqa: E402
from workbench.discovery import load_plugins  # noqa: E402
from workbench.runner import run_one  # noqa: E402
from workbench.testing import experiment  # noqa: E402


class StepCounter(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1


def timed_run(spec, arm, seed, out, plugins) -> dict:
    counter = StepCounter()
    started = time.perf_counter()
    result = run_one(spec, arm, seed, out, plugins.describe(), [counter])
    wall = time.perf_counter() - started
    events = sum(1 for _ in open(result.path, "rb"))
    virtual = result.summary["end_s"]
    return {"scenario": spec.name, "seed": seed, "wall_s": wall, "steps": counter.steps,
            "events": events, "virtual_s": virtual, "outcome": result.summary["outcome"]}


def main_job(out: Path) -> list[dict]:
    plugins = load_plugins()
    exp = load_experiment(ROOT / "configs" / "default.toml", plugins)
    return [timed_run(s, arm, seed, out, plugins)
            for s in exp.scenarios for arm in exp.arms for seed in exp.seeds]


def bare_sleep_loop(tasks: int = 10, sleeps: int = 6000) -> dict:
    """N tasks x K trio.sleep of continuous delays (the usual way to model time in Trio)."""
    import random
    rng = random.Random(1)
    delays = [[rng.uniform(1e-3, 1e-2) for _ in range(sleeps)] for _ in range(tasks)]
    counter = StepCounter()

    async def worker(ds):
        for d in ds:
            await trio.sleep(d)

    async def main():
        async with trio.open_nursery() as n:
            for ds in delays:
                n.start_soon(worker, ds)

    started = time.perf_counter()
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0), instruments=[counter])
    wall = time.perf_counter() - started
    return {"wall_s": wall, "steps": counter.steps, "steps_per_s": counter.steps / wall}


def scaling(out: Path, reps: int = 10, shape=scaled) -> dict:
    """Best of `reps` for each size, the two sizes interleaved (the machine is noisy)."""
    plugins = load_plugins()
    sizes = {"1GiB": 1, "1TiB": 1024}
    exps = {label: experiment(shape(f, gib=1), out / label, plugins=plugins)
            for label, f in sizes.items()}
    rows: dict = {}
    for _ in range(reps):
        for label, exp in exps.items():
            r = timed_run(exp.scenarios[0], exp.arms[0], 1, out / label, plugins)
            if label not in rows or r["wall_s"] < rows[label]["wall_s"]:
                rows[label] = r
    rows["ratio"] = rows["1TiB"]["wall_s"] / rows["1GiB"]["wall_s"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        started = time.perf_counter()
        runs = main_job(out / "default")
        job_wall = time.perf_counter() - started
        bare = bare_sleep_loop()
        scale = scaling(out / "scale")
        swap_scale = scaling(out / "swap", shape=scaled_swap)

    steps = sum(r["steps"] for r in runs)
    sim_wall = sum(r["wall_s"] for r in runs)
    print(f"main job: configs/default.toml, {len(runs)} runs in {job_wall:.2f} s wall "
          f"(one process, runs in sequence)\n")
    print(f"{'scenario':<28}{'seed':>5}{'wall s':>9}{'steps':>9}{'events':>8}{'virtual s':>11}"
          f"{'steps/s':>10}{'virt s/s':>10}  outcome")
    for r in runs:
        print(f"{r['scenario']:<28}{r['seed']:>5}{r['wall_s']:>9.3f}{r['steps']:>9}{r['events']:>8}"
              f"{r['virtual_s']:>11.3f}{r['steps'] / r['wall_s']:>10.0f}"
              f"{r['virtual_s'] / r['wall_s']:>10.1f}  {r['outcome']}")
    print(f"{'all':<33}{sim_wall:>9.3f}{steps:>9}{sum(r['events'] for r in runs):>8}"
          f"{sum(r['virtual_s'] for r in runs):>11.3f}{steps / sim_wall:>10.0f}"
          f"{sum(r['virtual_s'] for r in runs) / sim_wall:>10.1f}")
    print(f"\nbare trio.sleep loop (10 tasks x 6000 sleeps, MockClock autojump): "
          f"{bare['steps_per_s']:.0f} steps/s")
    print(f"simulation / bare loop, Trio task steps per wall second: "
          f"{steps / sim_wall / bare['steps_per_s']:.2f}")
    print(f"\nscaling, S03 (best of 10): 1 GiB {scale['1GiB']['wall_s'] * 1000:.1f} ms, "
          f"{scale['1GiB']['steps']} steps; 1 TiB {scale['1TiB']['wall_s'] * 1000:.1f} ms, "
          f"{scale['1TiB']['steps']} steps; ratio {scale['ratio']:.2f}")
    print(f"scaling with swap, S17 (a hog swapping itself out until the swap is full, then "
          f"the OOM kill; best of 10): 1 GiB {swap_scale['1GiB']['wall_s'] * 1000:.1f} ms, "
          f"{swap_scale['1GiB']['steps']} steps; 1 TiB {swap_scale['1TiB']['wall_s'] * 1000:.1f} "
          f"ms, {swap_scale['1TiB']['steps']} steps; ratio {swap_scale['ratio']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"main_job_wall_s": job_wall, "runs": runs, "bare": bare,
                                         "scaling": scale, "swap_scaling": swap_scale},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
