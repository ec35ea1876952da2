"""Packaging traps: plugins/ ships as workbench.plugins, configs/scenarios/ as
workbench.library; nobody imports `plugins`."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_the_wheel_ships_every_plugin_module_as_workbench_plugins(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for source in (ROOT / "plugins").rglob("*.py"):
        assert f"workbench/plugins/{source.relative_to(ROOT / 'plugins').as_posix()}" in names
    for source in (ROOT / "workbench").rglob("*.py"):
        assert source.relative_to(ROOT).as_posix() in names
    for scenario in (ROOT / "configs" / "scenarios").glob("*.toml"):   # workbench.testing's library
        assert f"workbench/library/{scenario.name}" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[workbench]" in text and "workbench = workbench.cli:main" in text


def test_no_code_imports_the_plugins_directory_by_its_source_name():
    pattern = re.compile(r"^\s*(from|import)\s+plugins\b", re.M)
    for path in [*ROOT.glob("workbench/**/*.py"), *ROOT.glob("plugins/**/*.py"),
                 *ROOT.glob("tests/**/*.py"), *ROOT.glob("benchmarks/**/*.py")]:
        assert not pattern.search(path.read_text()), path
