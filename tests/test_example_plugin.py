"""examples/earlyoom-policies, a third-party plugin as its own distribution,
installed the way a user installs one: pip builds it offline into a
directory of its own (the main environment is not touched), and every check
runs in a subprocess with that directory on PYTHONPATH, so the workbench
finds it through its entry point and nothing else."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "earlyoom-policies"
DIST = "workbench-earlyoom-policies"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example installed into a fresh directory (its dist-info included)."""
    if importlib.util.find_spec("pip") is None:
        pytest.skip("pip is not installed in this environment")
    base = tmp_path_factory.mktemp("example-plugin")
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    src = base / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    target = base / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "--quiet", "--target", str(target),
         str(src)], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (target / "workbench_earlyoom" / "__init__.py").is_file()
    return target


def run(site: Path, *args: str, cwd: Path, autoload: bool = True,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORKBENCH_DISABLE_PLUGIN_AUTOLOAD", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    if not autoload:
        env["WORKBENCH_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return subprocess.run([sys.executable, *args], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_the_installed_distribution_lists_both_policies(site, tmp_path):
    done = run(site, "-m", "workbench", "plugins", "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["broken"] == []
    found = {(concern, p["name"]): p for concern, ps in data["policies"].items() for p in ps}
    for key in (("reaper", "fifo"), ("victim", "earlyoom-names")):
        policy = found[key]
        assert policy["distribution"] == DIST and policy["version"] == "0.1.0", policy
        assert policy["plugin"] == "earlyoom"
    (plugin,) = [p for p in data["plugins"] if p["name"] == "earlyoom"]
    assert plugin["module"] == "workbench_earlyoom"
    assert plugin["origin"] == {"kind": "distribution", "dist": DIST, "version": "0.1.0"}


def test_the_examples_compare_config_runs_and_meets_its_expectations(site, tmp_path):
    out = tmp_path / "out"
    done = run(site, "-m", "workbench", "run", str(EXAMPLE / "compare.toml"), "--out",
               str(out), "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    log = out / "twins" / "earlyoom" / "seed-1.jsonl"
    header = json.loads(log.read_text().splitlines()[0])
    arm = header["config"]["arm"]
    assert (arm["victim"], arm["reaper"]) == ("earlyoom-names", "fifo")
    assert {"name": "earlyoom", "module": "workbench_earlyoom",
            "dist": f"{DIST} 0.1.0"}.items() <= next(
        p for p in header["plugins"] if p["name"] == "earlyoom").items()


def test_with_autoload_off_the_policies_are_gone(site, tmp_path):
    done = run(site, "-m", "workbench", "plugins", "--format", "json", cwd=tmp_path,
               autoload=False)
    assert done.returncode == 0, done.stderr
    names = {p["name"] for ps in json.loads(done.stdout)["policies"].values() for p in ps}
    assert "linux" in names and not names & {"fifo", "earlyoom-names"}
    done = run(site, "-m", "workbench", "run", str(EXAMPLE / "compare.toml"), "--out",
               str(tmp_path / "out"), "--quiet", cwd=tmp_path, autoload=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "unknown victim policy" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.jsonl"))


def test_the_examples_own_tests_pass_against_the_installed_plugin(site, tmp_path):
    # -c and --rootdir: the example's pytest settings, not this repository's.
    done = run(site, "-m", "pytest", "-c", str(EXAMPLE / "pyproject.toml"), "--rootdir",
               str(EXAMPLE), "-p", "no:cacheprovider", "-q", "--basetemp",
               str(tmp_path / "basetemp"), str(EXAMPLE / "tests"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]
