"""`workbench compare`: arms side by side over the seeds, read from run directories."""

from __future__ import annotations

import csv
import io
import json

import pytest
from helpers import process, scenario

from workbench import cli

HOLDER = process("holder", heap="4MiB", program=['{ lock = "m" }', '{ sleep = "300ms" }',
                                                 '{ kalloc = "64MiB" }', '{ unlock = "m" }'])
VICTIM = process("victim", heap="256MiB", program=['{ alloc = "230MiB", vma = "heap" }',
                                                   '{ lock = "m" }', '{ unlock = "m" }'])


def _run(tmp_path, capsys, name="out", memory="256MiB", seeds=(1, 2)):
    d = tmp_path / name
    d.mkdir()
    (d / "s.toml").write_text(scenario("s03", HOLDER, VICTIM, memory=memory, time="4s"))
    (d / "exp.toml").write_text(f'seeds = {list(seeds)}\nscenarios = ["s.toml"]\n'
                                '[[arm]]\nname = "no-reaper"\npreset = "no-reaper"\n'
                                '[[arm]]\nname = "patch"\npreset = "patch"\n')
    cli.main(["run", str(d / "exp.toml"), "--out", str(d / "runs"), "--jobs", "1"])
    capsys.readouterr()
    return d / "runs"


def _compare(capsys, *argv):
    rc = cli.main(["compare", *map(str, argv)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_the_lockup_turned_into_a_recovery_in_every_format(tmp_path, capsys):
    runs = _run(tmp_path, capsys)
    rc, table, err = _compare(capsys, runs)
    assert rc == 0 and err == ""
    assert "lockup 2/2" in table and "recovered 2/2" in table and "vs no-reaper" in table
    rows = json.loads(_compare(capsys, runs, "--format", "json")[1])
    by_arm = {r["arm"]: r for r in rows}
    assert by_arm["no-reaper"]["outcomes"] == "lockup 2/2"
    assert by_arm["no-reaper"]["recovery_s_median"] is None
    patch = by_arm["patch"]
    assert patch["outcomes"] == "recovered 2/2" and patch["baseline"] == "no-reaper"
    assert patch["max_stall_s_diff"] < -1 and patch["ci_low"] <= patch["ci_high"] < 0
    assert "too few seeds to tell: 2 against 2" in patch["note"]
    parsed = list(csv.DictReader(io.StringIO(_compare(capsys, runs, "--format", "csv")[1])))
    assert [r["arm"] for r in parsed] == ["no-reaper", "patch"]
    assert float(parsed[1]["max_stall_s_diff"]) == patch["max_stall_s_diff"]
    markdown = _compare(capsys, runs, "--format", "markdown")[1].splitlines()
    assert markdown[0].startswith("| scenario | arm |") and markdown[1].startswith("|---|")
    assert len({line.count("|") for line in markdown[:4]}) == 1        # a table


def test_the_output_is_the_same_every_time(tmp_path, capsys):
    runs = _run(tmp_path, capsys)
    assert _compare(capsys, runs, "--baseline", "patch") == \
        _compare(capsys, runs, "--baseline", "patch")


def test_runs_from_several_directories_are_matched_but_never_mixed(tmp_path, capsys):
    first = _run(tmp_path, capsys, "a")
    more = _run(tmp_path, capsys, "b", seeds=(2, 3))
    other = _run(tmp_path, capsys, "c", memory="300MiB", seeds=(4,))
    rc, out, err = _compare(capsys, first, more, other, "--format", "json")
    assert rc == 1
    assert "seed 2 of s03 / patch is already counted from" in err
    assert "is defined differently here than in" in err
    assert {r["arm"]: r["runs"] for r in json.loads(out)} == {"no-reaper": 3, "patch": 3}


def test_an_unknown_baseline_is_refused(tmp_path, capsys):
    runs = _run(tmp_path, capsys)
    with pytest.raises(SystemExit) as e:
        cli.main(["compare", str(runs), "--baseline", "v4.6"])
    assert e.value.code == 2
    assert "--baseline: no arm 'v4.6' in these runs (arms: no-reaper, patch)" in \
        capsys.readouterr().err


def test_the_csv_and_the_json_load_with_pandas(tmp_path, capsys):
    pandas = pytest.importorskip("pandas")
    runs = _run(tmp_path, capsys)
    from_csv = pandas.read_csv(io.StringIO(_compare(capsys, runs, "--format", "csv")[1]))
    from_json = pandas.read_json(io.StringIO(_compare(capsys, runs, "--format", "json")[1]))
    for df in (from_csv, from_json):
        row = df.set_index("arm").loc["patch"]
        assert row["outcomes"] == "recovered 2/2" and row["baseline"] == "no-reaper"
        assert row["max_stall_s_diff"] < -1
