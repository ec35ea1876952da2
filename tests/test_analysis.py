"""docs/analysis.md: every example runs on a real run directory, and workbench.analysis."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import process, scenario

from workbench import cli
from workbench.analysis import LogError, event_rows, runs, summary_rows

DOC = Path(__file__).parent.parent / "docs" / "analysis.md"
HOG = process("hog", heap="300MiB", program=['{ alloc = "300MiB", vma = "heap" }'])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("analysis")
    (d / "s.toml").write_text(scenario("s", HOG))
    (d / "exp.toml").write_text('seeds = [1, 2]\nscenarios = ["s.toml"]\n'
                                '[[arm]]\nname = "no-reaper"\npreset = "no-reaper"\n'
                                '[[arm]]\nname = "modern"\npreset = "modern"\n')
    assert cli.main(["run", str(d / "exp.toml"), "--out", str(d / "runs"), "--jobs", "1",
                     "--quiet"]) == 0
    return d / "runs"


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"^```{kind}\n(.*?)^```$", DOC.read_text(), re.M | re.S)


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
@pytest.mark.parametrize("block", _blocks("bash"))
def test_each_shell_example_runs(block, run_dir):
    r = subprocess.run(["bash", "-c", "set -euo pipefail\n" + block], capture_output=True,
                       text=True, env={**os.environ, "RUN_DIR": str(run_dir)})
    assert r.returncode == 0 and r.stdout.strip() and "modern" in r.stdout, r.stderr


@pytest.mark.parametrize("block", _blocks("python"))
def test_each_python_example_runs(block, run_dir, capsys):
    exec(compile(block, str(DOC), "exec"), {"RUN_DIR": str(run_dir)})
    out = capsys.readouterr().out
    assert "modern" in out and "no-reaper" in out


def test_rows_carry_the_identity_and_the_fields(run_dir):
    rows = summary_rows(run_dir)
    assert [(r["arm"], r["seed"]) for r in rows] == [("modern", 1), ("modern", 2),
                                                     ("no-reaper", 1), ("no-reaper", 2)]
    assert rows[0]["experiment"] == "runs" and rows[0]["outcome"] == "recovered"
    assert rows[0]["killed"] == '["hog"]'                  # lists as JSON text
    kills = event_rows(run_dir, "kill")
    assert len(kills) == 4 and {k["comm"] for k in kills} == {"hog"}
    assert next(runs(run_dir)).summary["killed"] == ["hog"]


def test_an_unreadable_log_is_named_unless_skipped(run_dir, tmp_path):
    broken = tmp_path / "runs"
    (broken / "s" / "patch").mkdir(parents=True)
    (broken / "s" / "patch" / "seed-1.jsonl").write_text('{"event": "header"')
    with pytest.raises(LogError, match="seed-1.jsonl: line 1 is not JSON"):
        list(runs(broken))
    assert list(runs(broken, strict=False)) == []
