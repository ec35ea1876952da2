"""`workbench plot`: a picture per scenario from a run directory."""

from __future__ import annotations

import sys

from helpers import process, scenario

from workbench import cli

HOLDER = process("holder", heap="4MiB", program=['{ lock = "m" }', '{ sleep = "300ms" }',
                                                 '{ kalloc = "64MiB" }', '{ unlock = "m" }'])
VICTIM = process("victim", heap="256MiB", program=['{ alloc = "230MiB", vma = "heap" }',
                                                   '{ lock = "m" }', '{ unlock = "m" }'])
CGROUP = '[[cgroup]]\nname = "a"\nmemory_max = "200MiB"\n'


def _runs(tmp_path, capsys):
    memcg = process("m", heap="256MiB", program=['{ alloc = "256MiB", vma = "heap" }'],
                    extra='cgroup = "a"')
    (tmp_path / "sc").mkdir()
    (tmp_path / "sc" / "s03.toml").write_text(scenario("s03", HOLDER, VICTIM, time="3s"))
    (tmp_path / "sc" / "cg.toml").write_text(scenario("cg", memcg, extra=CGROUP, time="3s"))
    (tmp_path / "exp.toml").write_text('scenarios = ["sc/*.toml"]\n'
                                       '[[arm]]\nname = "no-reaper"\npreset = "no-reaper"\n'
                                       '[[arm]]\nname = "patch"\npreset = "patch"\n')
    assert cli.main(["run", str(tmp_path / "exp.toml"), "--out", str(tmp_path / "runs"),
                     "--quiet"]) in (0, 1)
    capsys.readouterr()
    return tmp_path / "runs"


def test_a_png_per_scenario(tmp_path, capsys):
    runs = _runs(tmp_path, capsys)
    assert cli.main(["plot", str(runs)]) == 0
    written = capsys.readouterr().out.split()
    assert sorted(written) == [str(runs / "plots" / "cg.png"), str(runs / "plots" / "s03.png")]
    for path in written:
        data = open(path, "rb").read()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000


def test_svg_elsewhere_and_one_seed(tmp_path, capsys):
    runs = _runs(tmp_path, capsys)
    assert cli.main(["plot", str(runs), "-o", str(tmp_path / "pics"), "--format", "svg",
                     "--seed", "1"]) == 0
    svg = (tmp_path / "pics" / "s03.svg").read_text()
    assert "<svg" in svg and "lockup" in svg and "recovered" in svg     # the panels' titles


def test_without_matplotlib_it_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)             # import fails
    assert cli.main(["plot", str(tmp_path)]) == 2
    assert "matplotlib is not installed: pip install 'oom-workbench[plot]'" in \
        capsys.readouterr().err
