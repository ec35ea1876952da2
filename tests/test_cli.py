"""The command line (docs/running.md): run, validate, plugins; exit statuses; files written."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

SCENARIO = '''
name = "hog"
[machine]
memory = "128MiB"
[limits]
time = "{time}"
[[process]]
name = "hog"
[[process.vma]]
name = "heap"
kind = "anon"
size = "1GiB"
[[process.thread]]
name = "main"
program = [{{ alloc = "1GiB", vma = "heap" }}, {{ sleep = "{sleep}" }}]
[expect.patch]
outcome = "recovered"
kills = {kills}
'''


def workbench(*args, cwd=ROOT, check=False):
    return subprocess.run([sys.executable, "-m", "workbench", *args], cwd=cwd,
                          capture_output=True, text=True, check=check)


def write(tmp_path, kills=1, time_limit="5s", sleep="1s", seeds="[1, 2]"):
    (tmp_path / "hog.toml").write_text(SCENARIO.format(kills=kills, time=time_limit, sleep=sleep))
    (tmp_path / "exp.toml").write_text(f'seeds = {seeds}\nscenarios = ["hog.toml"]\n'
                                       f'out = "{tmp_path / "out"}"\n'
                                       '[[arm]]\nname = "patch"\n[[arm]]\nname = "no-reaper"\n'
                                       'preset = "no-reaper"\n')
    return tmp_path / "exp.toml"


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_run_prints_the_table_and_writes_one_log_per_run(tmp_path):
    r = workbench("run", str(write(tmp_path)))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["scenario", "arm", "seed", "outcome", "kills", "recovery", "max",
                                "stall", "reaped", "expect"]
    assert [ln.split()[:4] for ln in lines[1:5]] == [
        ["hog", "patch", "1", "recovered"], ["hog", "patch", "2", "recovered"],
        ["hog", "no-reaper", "1", "recovered"], ["hog", "no-reaper", "2", "recovered"]]
    logs = sorted((tmp_path / "out").rglob("*.jsonl"))
    assert [p.relative_to(tmp_path / "out").as_posix() for p in logs] == [
        "hog/no-reaper/seed-1.jsonl", "hog/no-reaper/seed-2.jsonl",
        "hog/patch/seed-1.jsonl", "hog/patch/seed-2.jsonl"]
    for path in logs:
        events = read_log(path)
        assert events[0]["event"] == "header" and events[-1]["event"] == "summary"
        assert all(list(e) == sorted(e) for e in events)               # keys sorted
        assert all({"t", "event", "arm", "scenario", "seed"} <= set(e) for e in events)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(manifest["runs"]) == 4 and manifest["planned_runs"] == 4


def test_a_failed_expectation_exits_1_and_is_marked(tmp_path):
    r = workbench("run", str(write(tmp_path, kills=2)), "--arm", "patch", "--seed", "7")
    assert r.returncode == 1
    assert "FAIL" in r.stdout and "hog / patch / seed 7: kills 1, expected 2" in r.stdout


def test_bad_config_exits_2_without_a_traceback(tmp_path):
    (tmp_path / "exp.toml").write_text('seeds = "all"\n[machine]\nhz = 0\n')
    r = workbench("run", str(tmp_path / "exp.toml"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{tmp_path / 'exp.toml'}: seeds:" in r.stderr
    assert f"{tmp_path / 'exp.toml'}: machine.hz:" in r.stderr
    assert f"{tmp_path / 'exp.toml'}: scenarios: no scenario to run" in r.stderr
    assert "3 problems" in r.stderr


def test_bad_usage_exits_2(tmp_path):
    config = str(write(tmp_path))
    assert workbench("run", config, "--arm", "nope").returncode == 2
    assert workbench("run", config, "--jobs", "0").returncode == 2
    assert workbench("frobnicate").returncode == 2
    assert workbench("run", str(tmp_path / "missing.toml")).returncode == 2


def test_parallel_jobs_write_the_same_logs(tmp_path):
    config = write(tmp_path)
    assert workbench("run", str(config), "--jobs", "2", "--out", str(tmp_path / "p")).returncode == 0
    assert workbench("run", str(config), "--jobs", "1", "--out", str(tmp_path / "s")).returncode == 0
    for path in (tmp_path / "s").rglob("*.jsonl"):
        assert path.read_bytes() == (tmp_path / "p" / path.relative_to(tmp_path / "s")).read_bytes()


def test_validate_and_plugins(tmp_path):
    r = workbench("validate", str(write(tmp_path)))
    assert r.returncode == 0 and "1 scenarios x 2 arms x 2 seeds = 4 runs" in r.stdout
    r = workbench("plugins")
    assert r.returncode == 0
    for expected in ("presets:", "patch", "no-reaper", "linux-4.5", "option attempts = 10"):
        assert expected in r.stdout


def test_an_interrupted_run_keeps_finished_logs_intact(tmp_path):
    write(tmp_path)
    (tmp_path / "tick.toml").write_text('''
name = "tick"
[limits]
time = "600s"
[[process]]
name = "ticker"
[[process.thread]]
name = "main"
program = [{ repeat = "forever", do = [{ sleep = "1ms" }] }]
''')
    (tmp_path / "exp.toml").write_text(f'scenarios = ["hog.toml", "tick.toml"]\n'
                                       f'out = "{tmp_path / "out"}"\n')
    # A shell without job control starts background commands with SIGINT
    # ignored, and children inherit that: give this one the default handler.
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "run", str(tmp_path / "exp.toml"),
                             "--jobs", "1"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    finished = tmp_path / "out" / "hog" / "patch" / "seed-1.jsonl"
    unfinished = tmp_path / "out" / "tick" / "patch" / "seed-1.jsonl"
    deadline = time.monotonic() + 60
    while not unfinished.with_name(unfinished.name + ".tmp").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert read_log(finished)[-1]["event"] == "summary"
    assert not unfinished.exists()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [r["scenario"] for r in manifest["runs"]] == ["hog"]


def test_the_main_job_meets_every_expectation():
    r = workbench("run", "configs/default.toml", "--jobs", "2", "--out", "runs/test-main-job")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FAIL" not in r.stdout and "error" not in r.stdout


@pytest.mark.parametrize("argv", [["--help"], ["validate", "configs/default.toml"]])
def test_start_up_imports_no_run_machinery(argv):
    """--help and validate import neither Trio (0.1 s), nor pytest (trio.testing), nor
    structlog: a run needs them, a config does not (workbench/kernel/sched.py)."""
    code = ("import sys\nfrom workbench import cli\ntry:\n    cli.main(sys.argv[1:])\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in ('trio', 'pytest', 'structlog') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True,
                       text=True, check=True)
    assert r.stdout.strip().splitlines()[-1] == "[]"
