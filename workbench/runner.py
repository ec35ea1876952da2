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
import pickle
import signal
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import trio
from trio._core import _run as trio_run_module

from workbench.experiment import ArmSpec, Experiment
from workbench.kernel.core import Kernel
from workbench.kernel.clock import VirtualClock
from workbench.files import OutError, contained_dir, prepare_out, write_atomic
from workbench.interrupt import Interrupt
from workbench.log import SCHEMA_VERSION, EventLog, LogWriteError, internal_error
from workbench.metrics import Metrics
from workbench.discovery import package_versions
from workbench.plugin import PolicyError, RunPolicies
from workbench.watchdog import DEFAULT_S, no_process_exit, wall_clock_limit
from workbench.units import kb, seconds
from workbench.workload.spec import ScenarioSpec


@dataclass(frozen=True)
class RunResult:
    scenario: str
    arm: str
    seed: int
    path: Path | None           # None when the log could not be written
    summary: dict[str, Any]
    wall_s: float


def deterministic_scheduling(seed: int) -> None:
    """Make Trio's run loop order a pure function of the seed: batches are
    sorted by spawn order and shuffled by the seeded generator (trio's
    private _ALLOW_DETERMINISTIC_SCHEDULING switch; trio is pinned for it)."""
    trio_run_module._ALLOW_DETERMINISTIC_SCHEDULING = True
    trio_run_module._r.seed(seed)


def log_path(out: Path, scenario: str, arm: str, seed: int) -> Path:
    return contained_dir(out, scenario, arm) / f"seed-{seed}.jsonl"


def run_one(scenario: ScenarioSpec, arm: ArmSpec, seed: int, out: Path,
            plugins_desc: list[dict[str, str]],
            instruments: Iterable[trio.abc.Instrument] = (),
            timeout_s: float | None = DEFAULT_S) -> RunResult:
    """One run, whatever goes wrong in it: a policy's fault, a bug of the
    workbench or a log that cannot be written ends this run with outcome
    "error" and leaves the others alone.  Only an interrupt propagates."""
    started = time.perf_counter()
    metrics = Metrics()
    clock_ns: list[Callable[[], int]] = [lambda: 0]
    try:
        path = log_path(out, scenario.name, arm.name, seed)
        log = EventLog(path, {"arm": arm.name, "scenario": scenario.name, "seed": seed},
                       lambda: clock_ns[0](), [metrics.feed])
    except (OSError, OutError) as e:
        return _unlogged(scenario, arm, seed, f"cannot write the log: {e}", started)
    _freeze_what_exists()
    try:
        with wall_clock_limit(timeout_s), no_process_exit():
            summary = _simulate(scenario, arm, seed, log, clock_ns, plugins_desc, metrics,
                                instruments)
        log.enabled = True
        log.emit("summary", **summary)
        log.commit()
    except LogWriteError as e:
        log.abandon()
        return _unlogged(scenario, arm, seed, str(e), started)
    except Exception as e:                    # a bug of the workbench: this run only
        fields = internal_error(e)
        try:
            log.enabled = True
            log.emit("error", **fields)
            summary = metrics.summary()
            log.emit("summary", **summary)
            log.commit()
        except Exception:                     # not even that can be written
            log.abandon()
            return _unlogged(scenario, arm, seed, fields["problem"], started)
    except BaseException:
        log.abandon()
        raise
    return RunResult(scenario.name, arm.name, seed, path, summary,
                     time.perf_counter() - started)


def _freeze_what_exists() -> None:
    """gc.freeze() the objects that exist before the first run (modules,
    plugins, the config), once: the cyclic collector never scans them again,
    and each run's garbage is collected as usual.  Freezing around every run
    instead would freeze the last run's uncollected garbage for good, and a
    long invocation would grow run by run."""
    global _frozen
    if not _frozen:
        gc.collect()
        gc.freeze()
        _frozen = True


_frozen = False


def _unlogged(scenario: ScenarioSpec, arm: ArmSpec, seed: int, problem: str,
              started: float) -> RunResult:
    """The result of a run that has no log: outcome "error" with the reason."""
    metrics = Metrics()
    metrics.feed({"event": "error", "t": 0.0, "problem": problem})
    return RunResult(scenario.name, arm.name, seed, None, metrics.summary(),
                     time.perf_counter() - started)


def header(scenario: ScenarioSpec, arm: ArmSpec, plugins_desc: list) -> dict[str, Any]:
    """The header event's fields (the zone is added once the kernel has booted)."""
    config = {"scenario": scenario.to_json(), "machine": scenario.machine.to_json(),
              "limits": {"time_s": seconds(scenario.limits.time_ns),
                         "stall_s": seconds(scenario.limits.stall_ns),
                         "steps": scenario.limits.steps,
                         "steps_per_instant": scenario.limits.steps_per_instant},
              "arm": arm.to_json(), "expect": scenario.expect.get(arm.expect_key(scenario.expect))}
    out = {"config": config, "schema": SCHEMA_VERSION, "versions": package_versions(),
           "plugins": plugins_desc, "python": sys.version.split()[0]}
    notes = arm.features.unsupported(scenario)
    if notes:
        out["notes"] = notes
    return out


def _simulate(scenario: ScenarioSpec, arm: ArmSpec, seed: int, log: EventLog,
              clock_ns: list, plugins_desc: list, metrics: Metrics,
              instruments: Iterable[trio.abc.Instrument]) -> dict[str, Any]:
    fields = header(scenario, arm, plugins_desc)
    try:
        kernel = Kernel(scenario, RunPolicies(arm.instantiate(scenario.machine)), seed, log,
                        Interrupt.check, arm.features)
    except PolicyError as e:
        log.emit("header", **fields)
        log.emit("error", **e.fields())
        return metrics.summary()
    zone = kernel.zone
    fields["config"]["zone"] = {"managed_kb": kb(zone.managed), "min_kb": kb(zone.wmark_min),
                                "low_kb": kb(zone.wmark_low), "high_kb": kb(zone.wmark_high)}
    clock_ns[0] = lambda: kernel.clock.now
    log.emit("header", **fields)
    deterministic_scheduling(seed)
    try:
        trio.run(kernel.main, clock=VirtualClock(), instruments=list(instruments))
    except BaseExceptionGroup as group:       # Ctrl-C arrives wrapped by the nursery
        if group.subgroup(KeyboardInterrupt) is not None:
            raise KeyboardInterrupt from None
        raise
    finally:
        end = kernel.clock.now                # the summary's time; the kernel may go
        clock_ns[0] = lambda: end
    if log.failure is not None:
        raise log.failed_with(log.failure)
    return metrics.summary()


def _job(args: tuple) -> RunResult:
    return run_one(*args)


def run_all(exp: Experiment, scenarios: list[ScenarioSpec], arms: list[ArmSpec],
            seeds: list[int], out: Path, plugins_desc: list[dict[str, str]], jobs: int,
            on_result: Callable[[RunResult], None],
            timeout_s: float | None = DEFAULT_S) -> tuple[list[RunResult], bool]:
    """Every scenario x arm x seed; results come back in that order, with
    whether the manifest was written (it is, however the runs end)."""
    todo = [(s, a, seed, out, plugins_desc, (), timeout_s)
            for s in scenarios for a in arms for seed in seeds]
    jobs = min(jobs, len(todo))
    started = time.time()
    results: list[RunResult] = []
    try:
        with Interrupt.handled():
            # Worker processes even for --jobs 1: a policy that crashes its
            # process or never returns then costs only its own run.
            _run_parallel(todo, max(jobs, 1), results, on_result, timeout_s)
    finally:
        manifest = write_manifest(exp, out, results, started, len(todo),
                                  {"seeds": seeds, "jobs": jobs, "timeout_s": timeout_s,
                                   "plugins": plugins_desc,
                                   "arms": [a.to_json() for a in arms],
                                   "scenarios": [s.name for s in scenarios]})
    return results, manifest


def _worker_init() -> None:
    """A pool worker leaves Ctrl-C to the parent (which ends the pool), dies
    at once when the parent terminates it (not the parent's handler, which
    fork copied), and dies with the parent however it dies (PR_SET_PDEATHSIG)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(Exception):
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG


def _picklable(obj: object) -> bool:
    try:
        pickle.dumps(obj)
    except Exception:
        return False
    return True


def _run_parallel(todo: list[tuple], jobs: int, results: list[RunResult],
                  on_result: Callable[[RunResult], None], timeout_s: float | None) -> None:
    """Results in submission order, while watching for Ctrl-C.  An arm whose
    policies cannot be sent to a worker process (a class defined inside a
    function) runs each run in a child forked for it instead, which inherits
    the arm rather than unpickling it: same logs, one core."""
    local = {a.name for a in {id(t[1]): t[1] for t in todo}.values() if not _picklable(a)}
    pool = _pool(jobs)
    try:
        futures = [None if args[1].name in local else pool.submit(_job, args) for args in todo]
        for i, (args, future) in enumerate(zip(todo, futures)):
            if future is None:
                result = _forked(args, timeout_s)
            else:
                try:
                    result = _result(future, timeout_s)
                except (BrokenProcessPool, _Hung) as e:
                    # A worker died (a signal, a crash) or will not return:
                    # start a new pool for the rest, and (for a death) find
                    # out whether this run was the cause.
                    _stop(pool)
                    pool = _pool(jobs)
                    for j in range(i + 1, len(todo)):
                        if futures[j] is not None:
                            futures[j] = pool.submit(_job, todo[j])
                    result = (_isolated(args, timeout_s) if isinstance(e, BrokenProcessPool)
                              else _lost(args, _hung(args[1], timeout_s)))
                except Exception as e:
                    result = _lost(args, "the run could not be sent to a worker process: "
                                   f"{type(e).__name__}: {e}")
            results.append(result)
            on_result(result)
    except BaseException:
        _stop(pool)                                    # their runs stay unfinished
        raise
    pool.shutdown()


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, initializer=_worker_init)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Shut the pool down now, its workers with it (a stuck one ignores the
    shutdown).  _processes is the executor's own map of its workers."""
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        worker.terminate()


class _Hung(Exception):
    """A run went on past --run-timeout and its grace: its worker is stuck."""


def _grace(timeout_s: float) -> float:
    """Beyond --run-timeout: the worker's own SIGALRM goes first."""
    return min(10.0, max(1.0, timeout_s))


def _deadline(timeout_s: float | None) -> float | None:
    """When a run waited for from now is given up: --run-timeout plus a
    grace, counted from when this run is the one waited for, so that a run
    is given at least that much of its own."""
    return time.monotonic() + timeout_s + _grace(timeout_s) if timeout_s else None


def _result(future: Future, timeout_s: float | None) -> RunResult:
    """The future's result, looking for Ctrl-C while it is not there yet."""
    deadline = _deadline(timeout_s)
    while not future.done():
        Interrupt.check()
        if deadline is not None and time.monotonic() > deadline:
            raise _Hung
        wait([future], timeout=0.1)
    return future.result()


def _lost(args: tuple, problem: str) -> RunResult:
    """The result of a job whose worker could not give one back."""
    return _unlogged(args[0], args[1], args[2], problem, time.perf_counter())


def _policies_of(arm: ArmSpec) -> str:
    return ", ".join(f"{c}={cls.name}" for c, cls in arm.policies.items())


def _hung(arm: ArmSpec, timeout_s: float | None) -> str:
    return (f"the run did not end within --run-timeout = {timeout_s:g} s (and "
            f"{_grace(timeout_s):g} s more): its worker process was killed; a policy of arm "
            f"{arm.name!r} ({_policies_of(arm)}) that never returns and catches the timeout")


def _forked(args: tuple, timeout_s: float | None) -> RunResult:
    """One run in a child of its own (fork: the arguments are inherited, not
    pickled); only its result comes back, through a pipe."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_fork_child, args=(args, send), daemon=True)
    child.start()
    send.close()
    deadline = _deadline(timeout_s)
    try:
        while not receive.poll(0.1):
            Interrupt.check()
            if not child.is_alive() and not receive.poll(0):
                return _lost(args, _died(args[1]))
            if deadline is not None and time.monotonic() > deadline:
                return _lost(args, _hung(args[1], timeout_s))
        return receive.recv()
    except EOFError:                        # it died while sending
        return _lost(args, _died(args[1]))
    finally:
        receive.close()
        if child.is_alive():
            child.terminate()
        child.join()


def _fork_child(args: tuple, send: Any) -> None:
    _worker_init()
    send.send(_job(args))


def _died(arm: ArmSpec) -> str:
    return (f"the worker process running it died: a policy of arm {arm.name!r} "
            f"({_policies_of(arm)}) that crashes its process or kills it")


def _isolated(args: tuple, timeout_s: float | None) -> RunResult:
    """Run one job alone in a fresh worker; if that dies too, the run did it."""
    pool = _pool(1)
    try:
        return _result(pool.submit(_job, args), timeout_s)
    except BrokenProcessPool:
        return _lost(args, _died(args[1]))
    except _Hung:
        return _lost(args, _hung(args[1], timeout_s))
    finally:
        _stop(pool)


def write_manifest(exp: Experiment, out: Path, results: list[RunResult], started: float,
                   planned: int, invocation: dict[str, Any]) -> bool:
    """Wall-clock times and versions of the whole invocation (never in a
    run's log): what was asked for, and exactly the runs that finished.
    False, with the reason on stderr, if it cannot be written."""
    manifest = {**invocation, "interrupted": len(results) < planned,
        "config": str(exp.path), "title": exp.title, "argv": sys.argv[1:],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_s": round(time.time() - started, 3), "versions": package_versions(),
        "python": sys.version.split()[0], "planned_runs": planned,
        "runs": [{"scenario": r.scenario, "arm": r.arm, "seed": r.seed,
                  "log": os.path.relpath(r.path, out) if r.path else None,
                  "outcome": r.summary["outcome"],
                  "expect_failed": r.summary["expect_failed"], "wall_s": round(r.wall_s, 3)}
                 for r in results],
    }
    try:
        prepare_out(out)
        write_atomic(out / "manifest.json",
                     (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    except (OSError, OutError) as e:
        print(f"workbench: cannot write {out / 'manifest.json'}: {e}", file=sys.stderr)
        return False
    return True
