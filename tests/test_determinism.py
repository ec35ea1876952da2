"""A run is a pure function of (config, seed): byte-identical logs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trio
from trio._core import _run as trio_run

from workbench.kernel.clock import trio_runner_queue

ROOT = Path(__file__).parent.parent


def test_trio_private_scheduling_switch_still_exists():
    """The runner relies on these two private names; trio is pinned for them."""
    assert hasattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING")
    assert hasattr(trio_run._r, "seed") and hasattr(trio_run._r, "shuffle")


def test_trio_private_run_queue_still_exists():
    """The clock reads Trio's run queue (private too) to know whether a task is alone."""
    async def main():
        queue = trio_runner_queue()
        assert hasattr(queue, "append") and len(queue) == 0   # this task runs: not queued
    trio.run(main)


def _cli_run(out: Path, seed: int, hashseed: str) -> dict[str, bytes]:
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    subprocess.run([sys.executable, "-m", "workbench", "run", "configs/compare-no-reaper.toml",
                    "--scenario", "s06-parallel-memcg-ooms", "--scenario", "s04-mmap-writer-d-state",
                    "--seed", str(seed), "--out", str(out)],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.jsonl"))}


def test_same_seed_gives_byte_identical_logs_across_processes(tmp_path):
    first = _cli_run(tmp_path / "a", 2, "0")
    second = _cli_run(tmp_path / "b", 2, "12345")
    assert len(first) == 4
    assert first == second


def test_logs_hold_no_wall_clock_or_absolute_path(tmp_path):
    logs = _cli_run(tmp_path / "a", 1, "0")
    for data in logs.values():
        assert str(tmp_path).encode() not in data
        assert str(ROOT).encode() not in data
    manifest = (tmp_path / "a" / "manifest.json").read_text()
    assert '"wall_s"' in manifest and '"started"' in manifest
