"""The scenario library: every expectation each scenario of configs/scenarios/ states for a
preset holds under that preset (configs/history.toml runs the same table over more seeds)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from workbench.experiment import experiment_from_data
from workbench.discovery import load_plugins
from workbench.runner import run_one

SCENARIOS = Path(__file__).parent.parent / "configs" / "scenarios"
PRESETS = ("no-reaper", "patch", "v4.6", "modern")
SEEDS = (1, 2)


def _cells() -> list:
    cells = []
    for path in sorted(SCENARIOS.glob("*.toml")):
        expect = tomllib.loads(path.read_text()).get("expect", {})
        cells += [pytest.param(path, preset, id=f"{path.stem}-{preset}")
                  for preset in PRESETS if preset in expect]
    return cells


def test_the_library_covers_every_preset():
    """Each scenario states what all four presets do."""
    for path in sorted(SCENARIOS.glob("*.toml")):
        expect = tomllib.loads(path.read_text()).get("expect", {})
        assert set(PRESETS) <= set(expect), f"{path.name}: no expectations for " \
                                            f"{sorted(set(PRESETS) - set(expect))}"


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


@pytest.mark.parametrize("path, preset", _cells())
def test_each_expectation_holds(path, preset, plugins, tmp_path):
    exp = experiment_from_data({"scenarios": [str(path)], "seeds": list(SEEDS),
                                "arm": [{"name": preset, "preset": preset}]},
                               tmp_path / "history.toml", plugins)
    failed = []
    for seed in SEEDS:
        r = run_one(exp.scenarios[0], exp.arms[0], seed, tmp_path, plugins.describe())
        failed += [f"seed {seed}: {f}" for f in r.summary["expect_failed"]]
        assert r.summary["outcome"] != "error", r.summary["errors"]
    assert not failed, failed
