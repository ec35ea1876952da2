"""Shared scenario snippets: small machines, so each run takes milliseconds."""

from __future__ import annotations

import pytest

from workbench.testing import run_scenario


@pytest.fixture
def run(tmp_path):
    """run(scenario_toml, **kw) -> workbench.testing.Run, each in its own directory."""
    counter = iter(range(1000))

    def _run(scenario, **kw):
        d = tmp_path / f"r{next(counter)}"
        d.mkdir()
        return run_scenario(scenario, d, **kw)
    return _run


def process(name, *, heap=None, resident=None, program=(), extra="", threads=None):
    """A [[process]] table: one anon VMA "heap" and one thread "main" by default."""
    out = f'[[process]]\nname = "{name}"\n{extra}\n'
    if heap:
        out += f'[[process.vma]]\nname = "heap"\nkind = "anon"\nsize = "{heap}"\n'
        if resident:
            out += f'resident = "{resident}"\n'
    for tname, prog in (threads or [("main", program)]):
        out += f'[[process.thread]]\nname = "{tname}"\nprogram = [{", ".join(prog)}]\n'
    return out


def scenario(name, *processes, memory="256MiB", time="5s", stall="2s", extra=""):
    return (f'name = "{name}"\n{extra}\n[machine]\nmemory = "{memory}"\n'
            f'[limits]\ntime = "{time}"\nstall = "{stall}"\n' + "\n".join(processes))
