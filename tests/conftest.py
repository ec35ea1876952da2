"""Fixtures: `run` runs a scenario in its own directory (helpers.py builds small scenarios)."""

from __future__ import annotations

import pytest

pytest_plugins = ["workbench.testing"]     # the fixtures third-party plugins use


@pytest.fixture
def run(tmp_path):
    """run(scenario_toml, **kw) -> workbench.testing.Run, each in its own directory."""
    from workbench.testing import run_scenario
    counter = iter(range(1000))

    def _run(scenario, **kw):
        d = tmp_path / f"r{next(counter)}"
        d.mkdir()
        return run_scenario(scenario, d, **kw)
    return _run
