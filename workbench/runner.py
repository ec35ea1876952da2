"""Running one (scenario, arm, seed) - and many of them, in parallel processes.

A run is a pure function of its config and seed: Trio's scheduler is made
deterministic and seeded (its private switch; trio is pinned for it), every
workload random number comes from the seed, and the log holds no wall-clock
value.  The log is written as .jsonl.tmp and renamed once the summary is in.
"""

from __future__ import annotations

import contextlib
import gc
import json
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import trio
import trio.testing
from trio._core import _run as trio_run_module

from workbench.experiment import ArmSpec, Experiment
from workbench.kernel.core import Kernel
from workbench.log import SCHEMA_VERSION, EventLog
from workbench.metrics import Metrics
from workbench.plugin import PolicyError, RunPolicies, package_versions
from workbench.units import kb, seconds
from workbench.workload.spec import ScenarioSpec


@dataclass(frozen=True)
class RunResult:
    scenario: str
    arm: str
    seed: int
    path: Path
    summary: dict[str, Any]
    wall_s: float


class Interrupt:
    """Ctrl-C during runs: a flag the kernel's clock checks between time
    steps, so that the signal cannot land in the middle of kernel code or in a
    finalizer (where Python would drop it), and every finished log stays intact."""

    requested = False

    @classmethod
    @contextlib.contextmanager
    def handled(cls) -> Iterator[None]:
        def handler(_signum: int, _frame: object) -> None:
            if cls.requested:                   # a second Ctrl-C: stop at once
                raise KeyboardInterrupt
            cls.requested = True
        cls.requested = False
        try:
            previous = signal.signal(signal.SIGINT, handler)
        except ValueError:                      # not the main thread: leave it alone
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    @classmethod
    def check(cls) -> None:
        if cls.requested:
            raise KeyboardInterrupt


def deterministic_scheduling(seed: int) -> None:
    """Make Trio's run loop order a pure function of the seed: batches are
    sorted by spawn order and shuffled by the seeded generator
    (perf-baseline/README.md §5)."""
    trio_run_module._ALLOW_DETERMINISTIC_SCHEDULING = True
    trio_run_module._r.seed(seed)


def log_path(out: Path, scenario: str, arm: str, seed: int) -> Path:
    return out / scenario / arm / f"seed-{seed}.jsonl"


def run_one(scenario: ScenarioSpec, arm: ArmSpec, seed: int, out: Path,
            plugins_desc: list[dict[str, str]],
            instruments: Iterable[trio.abc.Instrument] = ()) -> RunResult:
    started = time.perf_counter()
    path = log_path(out, scenario.name, arm.name, seed)
    metrics = Metrics()
    clock_ns: list[Callable[[], int]] = [lambda: 0]
    log = EventLog(path, {"arm": arm.name, "scenario": scenario.name, "seed": seed},
                   lambda: clock_ns[0](), [metrics.feed])
    try:
        summary = _simulate(scenario, arm, seed, log, clock_ns, plugins_desc, metrics,
                            instruments)
    except BaseException:
        log.abandon()
        raise
    log.enabled = True
    log.emit("summary", **summary)
    log.commit()
    return RunResult(scenario.name, arm.name, seed, path, summary,
                     time.perf_counter() - started)


def _simulate(scenario: ScenarioSpec, arm: ArmSpec, seed: int, log: EventLog,
              clock_ns: list, plugins_desc: list, metrics: Metrics,
              instruments: Iterable[trio.abc.Instrument]) -> dict[str, Any]:
    config = {"scenario": scenario.to_json(), "machine": asdict(scenario.machine),
              "limits": {"time_s": seconds(scenario.limits.time_ns),
                         "stall_s": seconds(scenario.limits.stall_ns),
                         "steps": scenario.limits.steps,
                         "steps_per_instant": scenario.limits.steps_per_instant},
              "arm": arm.to_json(), "expect": scenario.expect.get(arm.name)}
    header = {"schema": SCHEMA_VERSION, "versions": package_versions(),
              "plugins": plugins_desc, "python": sys.version.split()[0]}
    try:
        kernel = Kernel(scenario, RunPolicies(arm.instantiate(scenario.machine)), seed, log,
                        Interrupt.check)
    except PolicyError as e:
        log.emit("header", config=config, **header)
        log.emit("error", policy=e.policy, hook=e.hook, problem=str(e))
        return metrics.summary()
    zone = kernel.zone
    config["zone"] = {"managed_kb": kb(zone.managed), "min_kb": kb(zone.wmark_min),
                      "low_kb": kb(zone.wmark_low), "high_kb": kb(zone.wmark_high)}
    clock_ns[0] = lambda: kernel.clock.now
    log.emit("header", config=config, **header)
    deterministic_scheduling(seed)
    gc.freeze()         # keep the collector off what existed before the run (perf-baseline §GC)
    try:
        trio.run(kernel.main, clock=trio.testing.MockClock(), instruments=list(instruments))
    except BaseExceptionGroup as group:       # Ctrl-C arrives wrapped by the nursery
        if group.subgroup(KeyboardInterrupt) is not None:
            raise KeyboardInterrupt from None
        raise
    finally:
        gc.unfreeze()
    return metrics.summary()


def _job(args: tuple) -> RunResult:
    return run_one(*args)


def run_all(exp: Experiment, scenarios: list[ScenarioSpec], arms: list[ArmSpec],
            seeds: list[int], out: Path, plugins_desc: list[dict[str, str]], jobs: int,
            on_result: Callable[[RunResult], None]) -> list[RunResult]:
    """Every scenario x arm x seed; results come back in that order."""
    todo = [(s, a, seed, out, plugins_desc) for s in scenarios for a in arms for seed in seeds]
    jobs = min(jobs, len(todo))
    started = time.time()
    results: list[RunResult] = []
    try:
        with Interrupt.handled():
            if jobs <= 1:
                for args in todo:
                    Interrupt.check()
                    results.append(_job(args))
                    on_result(results[-1])
            else:
                _run_parallel(todo, jobs, results, on_result)
    finally:
        write_manifest(exp, out, results, started, len(todo))
    return results


def _run_parallel(todo: list[tuple], jobs: int, results: list[RunResult],
                  on_result: Callable[[RunResult], None]) -> None:
    """Results in submission order, while watching for Ctrl-C."""
    pool = ProcessPoolExecutor(max_workers=jobs)
    try:
        for future in [pool.submit(_job, args) for args in todo]:
            while not future.done():
                Interrupt.check()
                wait([future], timeout=0.1)
            results.append(future.result())
            on_result(results[-1])
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in multiprocessing.active_children():   # their runs stay unfinished
            worker.terminate()
        raise
    pool.shutdown()


def write_manifest(exp: Experiment, out: Path, results: list[RunResult], started: float,
                   planned: int) -> None:
    """Wall-clock times and versions of the whole invocation (never in a run's log)."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "config": str(exp.path), "title": exp.title, "argv": sys.argv[1:],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_s": round(time.time() - started, 3), "versions": package_versions(),
        "python": sys.version.split()[0], "planned_runs": planned,
        "runs": [{"scenario": r.scenario, "arm": r.arm, "seed": r.seed,
                  "log": os.path.relpath(r.path, out), "outcome": r.summary["outcome"],
                  "expect_failed": r.summary["expect_failed"], "wall_s": round(r.wall_s, 3)}
                 for r in results],
    }
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out / "manifest.json")
