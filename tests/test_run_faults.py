"""Runs that once reported false results, wrote outside `out`, or never ended."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import process, scenario

import workbench.log
from workbench import cli
from workbench.kernel import memcontrol, memory, page_alloc

ROOT = Path(__file__).parent.parent
HOG = process("hog", heap="256MiB", program=['{ alloc = "256MiB", vma = "heap" }'])


def test_a_process_that_would_start_after_the_run_ends_is_no_leak(run):
    late = process("late", heap="1MiB", program=['{ sleep = "1s" }'], extra='start = "10s"')
    r = run(scenario("s", HOG, late, time="2s"))
    assert r.summary["outcome"] == "recovered" and r.summary["invariant_violations"] == 0
    init = process("systemd", heap="1MiB", program=['{ sleep = "10s" }'], extra="init = true")
    hog = process("hog", heap="256MiB", program=['{ alloc = "256MiB", vma = "heap" }'],
                  extra="oom_score_adj = -1000")
    r = run(scenario("s", init, hog, late, time="2s"))
    assert r.summary["outcome"] == "panic"


def test_resident_memory_that_does_not_fit_at_a_later_start_is_a_scenario_problem(run):
    hog = process("hog", heap="200MiB", program=['{ alloc = "200MiB", vma = "heap" }',
                                                 '{ sleep = "5s" }'])
    late = process("late", heap="128MiB", resident="128MiB", program=['{ sleep = "1s" }'],
                   extra='start = "2s"')
    r = run(scenario("s", hog, late, time="4s"))
    assert r.summary["outcome"] == "error" and r.summary["invariant_violations"] == 0
    assert r.summary["errors"][0].startswith("scenario: experiment.toml: process late: the "
                                             "131332kB resident in vma heap (with page tables) "
                                             "do not fit")


def test_a_fault_whose_page_tables_do_not_fit_maps_less_and_fails_as_4_5_does(run, monkeypatch):
    """A racing fault into the same VMA can need a page-table page the request
    did not count; with no page left, the fault maps what fits (a failed
    __pte_alloc is VM_FAULT_OOM) instead of breaking the page accounting."""
    real = page_alloc.alloc_pages
    seen = {}

    async def racing(k, task, n, gfp):
        got = await real(k, task, n, gfp)
        # Meanwhile another thread faults 512 pages into the VMA, and takes
        # the last free page.
        task.mm.add_pages(task.mm.vma("heap"), 512)
        memcontrol.force_charge(k, task.mm.memcg, 512)
        k.zone.free = 0
        return got

    async def fault(k, task):
        vma = task.mm.vma("heap")
        vma.touched = 8                  # an earlier fault left one PTE page
        monkeypatch.setattr(page_alloc, "alloc_pages", racing)
        seen["mapped"], _ = await memory._alloc_and_charge(k, task, task.mm, vma, 8, 0xd0)
        monkeypatch.setattr(page_alloc, "alloc_pages", real)

    proc = process("p", heap="8MiB", program=['{ sleep = "1ms" }'])
    # (ends at the time limit: the race above is not in the page accounting)
    sleeper = process("sleeper", program=['{ sleep = "1s" }'])
    r = run(scenario("s", proc, sleeper, time="10ms"), calls={"p/main": fault})
    assert r.summary["invariant_violations"] == 0, r.of("invariant")
    # 8 pages were granted and none for page tables: the 8th fault would
    # need a new PTE page, so 7 pages map and the 8th page holds the table.
    assert seen["mapped"] == 7


def test_a_symlink_left_at_a_tmp_name_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "precious"
    victim.write_text("keep me")
    out = tmp_path / "out"
    (out / "s" / "patch").mkdir(parents=True)
    os.symlink(victim, out / "s" / "patch" / "seed-1.jsonl.tmp")
    os.symlink(victim, out / "manifest.json.tmp")
    (tmp_path / "s.toml").write_text(scenario("s", HOG))
    (tmp_path / "exp.toml").write_text(f'scenarios = ["s.toml"]\nout = "{out}"\n')
    assert cli.main(["run", str(tmp_path / "exp.toml")]) == 0
    assert victim.read_text() == "keep me"
    assert json.loads((out / "s" / "patch" / "seed-1.jsonl").read_bytes().splitlines()[-1])[
        "event"] == "summary"
    assert (out / "manifest.json").is_file() and not (out / "manifest.json").is_symlink()


def test_a_symlinked_log_directory_leading_out_of_out_fails_that_run(tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(elsewhere, out / "s")
    (tmp_path / "s.toml").write_text(scenario("s", HOG))
    (tmp_path / "exp.toml").write_text(f'scenarios = ["s.toml"]\nout = "{out}"\n')
    assert cli.main(["run", str(tmp_path / "exp.toml")]) == 1
    assert list(elsewhere.iterdir()) == []
    assert "outside" in capsys.readouterr().out


def test_a_full_disk_ends_the_run_with_an_error_and_the_others_go_on(tmp_path, capsys,
                                                                    monkeypatch):
    real = workbench.log.open_new

    def disk_full_for_s(path, buffering=-1):
        if "full" in path.parts:
            return open("/dev/full", "wb", buffering=buffering)   # ENOSPC on every write
        return real(path, buffering)

    monkeypatch.setattr(workbench.log, "open_new", disk_full_for_s)
    long_hog = process("hog", heap="256MiB", program=[
        '{ repeat = "forever", do = [{ alloc = "256MiB", vma = "heap" }, '
        '{ free = "256MiB", vma = "heap" }] }'])
    (tmp_path / "full.toml").write_text(scenario("full", long_hog, time="20s"))
    (tmp_path / "ok.toml").write_text(scenario("ok", HOG))
    (tmp_path / "exp.toml").write_text(f'scenarios = ["full.toml", "ok.toml"]\n'
                                       f'out = "{tmp_path / "out"}"\n')
    started = time.monotonic()
    assert cli.main(["run", str(tmp_path / "exp.toml"), "--jobs", "1"]) == 1
    assert time.monotonic() - started < 30
    out = capsys.readouterr().out
    assert "error: cannot write" in out and "No space left on device" in out
    assert list((tmp_path / "out" / "full" / "patch").iterdir()) == []
    assert (tmp_path / "out" / "ok" / "patch" / "seed-1.jsonl").is_file()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [r["log"] for r in manifest["runs"]] == [None, "ok/patch/seed-1.jsonl"]


def test_an_error_while_booting_ends_the_run_beside_a_d_state_task(run):
    d_state = process("d", program=['{ sleep = "5s", mode = "uninterruptible" }'])
    full = process("full", heap="256MiB", resident="256MiB", program=['{ sleep = "1s" }'])
    r = run(scenario("s", d_state, full, time="10s"))
    assert r.summary["outcome"] == "error"
    assert "do not fit" in r.summary["errors"][0]


def _children(pid: int) -> set[int]:
    out = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        out |= {int(c) for c in (task / "children").read_text().split()}
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc")
def test_sigterm_to_a_parallel_run_stops_it_like_ctrl_c(tmp_path):
    tick = process("ticker", program=['{ repeat = "forever", do = [{ sleep = "1ms" }] }'])
    (tmp_path / "tick.toml").write_text(scenario("tick", tick, time="600s", stall="10s"))
    (tmp_path / "exp.toml").write_text(f'seeds = [1, 2, 3, 4]\nscenarios = ["tick.toml"]\n'
                                       f'out = "{tmp_path / "out"}"\n'
                                       '[limits]\nsteps = 100000000\n')
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "run", str(tmp_path / "exp.toml"),
                             "--jobs", "2"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while (len(list((tmp_path / "out").rglob("*.jsonl.tmp"))) < 2
           and time.monotonic() < deadline):
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert workers
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted" in err and "Traceback" not in err
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["runs"] == []
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(w) for w in workers)


# (the interpreter's own start-up, before any workbench code, is Python's)
@pytest.mark.parametrize("delay", [0.1, 0.2, 0.35, 0.5])
def test_ctrl_c_during_start_up_exits_quietly(tmp_path, delay):
    (tmp_path / "s.toml").write_text(scenario("s", HOG))
    (tmp_path / "exp.toml").write_text(f'scenarios = ["s.toml"]\nout = "{tmp_path / "out"}"\n')
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "run", str(tmp_path / "exp.toml")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 130), err
    assert "Traceback" not in err


def test_the_scans_of_a_long_livelock_count_against_limits_steps(run):
    """N allocators livelocked behind a victim that cannot die: each slow-path
    round scans every thread, so the run's work grows as N squared."""
    holder = process("holder", program=['{ lock = "L" }', '{ sleep = "100ms" }',
                                        '{ kalloc = "64MiB" }', '{ unlock = "L" }'])
    many = process("k", program=['{ sleep = "200ms" }', '{ kalloc = "64MiB" }'],
                   extra="count = 40")
    victim = process("victim", heap="240MiB", program=['{ alloc = "240MiB", vma = "heap" }',
                                                        '{ lock = "L" }', '{ unlock = "L" }'])
    text = scenario("s", holder, many, victim, time="60s", stall="30s").replace(
        "[limits]\n", "[limits]\nsteps = 200000\n")
    r = run(text, preset="no-reaper")
    assert r.summary["outcome"] == "error"
    assert r.summary["errors"][0].startswith("step limit: more than limits.steps = 200000")
    assert r.summary["end_s"] < 60


def test_signals_in_quick_succession_still_end_with_a_status_and_a_manifest(tmp_path):
    tick = process("ticker", program=['{ repeat = "forever", do = [{ sleep = "1ms" }] }'])
    (tmp_path / "tick.toml").write_text(scenario("tick", tick, time="600s", stall="10s"))
    (tmp_path / "exp.toml").write_text(f'scenarios = ["tick.toml"]\nout = "{tmp_path / "out"}"\n')
    # (two signals pending at once are handled in signal-number order: SIGINT first)
    for first, second, status in [(signal.SIGINT, signal.SIGINT, {130}),
                                  (signal.SIGTERM, signal.SIGINT, {130, 143}),
                                  (signal.SIGHUP, signal.SIGHUP, {129})]:
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
        proc = subprocess.Popen([sys.executable, "-m", "workbench", "run",
                                 str(tmp_path / "exp.toml"), "--jobs", "1"], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 60
        while not list((tmp_path / "out").rglob("*.jsonl.tmp")) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(first)
        proc.send_signal(second)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode in status, err
        assert "Traceback" not in err
        assert json.loads((tmp_path / "out" / "manifest.json").read_text())["runs"] == []
