"""`workbench report` and `workbench dmesg`: a run directory read back, never re-simulated."""

from __future__ import annotations

import json
import re

from helpers import process, scenario

from workbench import cli

HOG = process("hog", heap="300MiB", program=['{ alloc = "300MiB", vma = "heap" }'])


def _run(tmp_path, capsys, presets=("patch",)):
    (tmp_path / "s.toml").write_text(scenario("s", HOG) + '\n[expect.patch]\nkills = 1\n')
    arms = "".join(f'[[arm]]\nname = "{p}"\npreset = "{p}"\n' for p in presets)
    (tmp_path / "exp.toml").write_text(f'seeds = [1, 2]\nscenarios = ["s.toml"]\n{arms}')
    out = tmp_path / "out"
    assert cli.main(["run", str(tmp_path / "exp.toml"), "--out", str(out), "--jobs", "1"]) == 0
    return out, capsys.readouterr().out


def test_report_prints_the_table_run_printed(tmp_path, capsys):
    out, printed = _run(tmp_path, capsys)
    assert cli.main(["report", str(out)]) == 0
    assert sorted(capsys.readouterr().out.splitlines()) == sorted(printed.splitlines())


def test_report_names_unreadable_logs_and_reports_the_others(tmp_path, capsys):
    out, _ = _run(tmp_path, capsys)
    good = out / "s" / "patch" / "seed-1.jsonl"
    cut = out / "s" / "patch" / "seed-3.jsonl"
    cut.write_bytes(b"\n".join(good.read_bytes().splitlines()[:-1]))   # no summary
    (out / "s" / "patch" / "seed-4.jsonl.tmp").write_bytes(good.read_bytes()[:100])
    (out / "s" / "patch" / "seed-5.jsonl").write_bytes(b'{"event": "header"')
    assert cli.main(["report", str(out)]) == 1
    captured = capsys.readouterr()
    assert f"{cut}: no summary line at the end: the log is cut short" in captured.err
    assert "seed-4.jsonl.tmp: unfinished: the run did not end" in captured.err
    assert "seed-5.jsonl: line 1 is not JSON" in captured.err
    assert "Traceback" not in captured.err
    assert captured.out.count("  ok") == 2                    # seeds 1 and 2 still reported


def test_report_of_something_that_is_no_run_directory(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nowhere")]) == 1
    assert "not a directory of run logs" in capsys.readouterr().err
    assert cli.main(["report", str(tmp_path)]) == 1
    assert "no run logs" in capsys.readouterr().err


def test_dmesg_prints_the_kernel_lines_of_the_era_with_printk_timestamps(tmp_path, capsys):
    out, _ = _run(tmp_path, capsys, presets=("patch", "v4.6"))
    assert cli.main(["dmesg", str(out), "--arm", "v4.6", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(re.fullmatch(r"\[ {0,4}\d+\.\d{6}\] .+", line) for line in lines), lines
    text = "\n".join(lines)
    assert "invoked oom-killer: gfp_mask=0x24000c0(GFP_KERNEL), order=0" in text
    assert "] Out of memory: Kill process 3 (hog) score" in text
    assert "] oom_reaper: reaped process 3 (hog), now anon-rss:" in text
    assert cli.main(["dmesg", str(out), "--arm", "patch", "--seed", "1"]) == 0
    assert "oom_reaper:" not in capsys.readouterr().out          # the seed printed nothing


def test_dmesg_of_several_runs_heads_each_and_refuses_an_unknown_one(tmp_path, capsys):
    out, _ = _run(tmp_path, capsys)
    assert cli.main(["dmesg", str(out)]) == 0
    text = capsys.readouterr().out
    assert "==> s / patch / seed 1 <==" in text and "==> s / patch / seed 2 <==" in text
    try:
        cli.main(["dmesg", str(out), "--arm", "nope"])
    except SystemExit as e:
        assert e.code == 2
    assert "no run matches (runs: s / patch / seed 1; s / patch / seed 2)" in \
        capsys.readouterr().err


def test_several_arms_end_the_table_with_a_cell_per_scenario_and_arm(tmp_path, capsys):
    out, printed = _run(tmp_path, capsys, presets=("no-reaper", "patch"))
    assert re.search(r"^by scenario and arm +no-reaper +patch$", printed, re.M)
    assert re.search(r"^s +recovered k1 +recovered k1$", printed, re.M)
    assert cli.main(["report", str(out)]) == 0
    assert "by scenario and arm" in capsys.readouterr().out


def test_a_lockup_row_says_why_in_kernel_terms_and_no_expectations_show_as_a_dash(tmp_path,
                                                                                  capsys):
    holder = process("holder", heap="4MiB", program=[
        '{ lock = "m" }', '{ sleep = "300ms" }', '{ kalloc = "64MiB" }', '{ unlock = "m" }'])
    victim = process("victim", heap="256MiB", program=[
        '{ alloc = "230MiB", vma = "heap" }', '{ lock = "m" }', '{ unlock = "m" }'])
    (tmp_path / "s.toml").write_text(scenario("s", holder, victim, time="4s"))
    (tmp_path / "exp.toml").write_text('scenarios = ["s.toml"]\n'
                                       '[[arm]]\nname = "no-reaper"\npreset = "no-reaper"\n')
    assert cli.main(["run", str(tmp_path / "exp.toml"), "--out", str(tmp_path / "o"),
                     "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^s +no-reaper +1 +lockup .* -$", out, re.M)
    assert re.search(r"^    why: holder \(\d+\) stalled [\d.]+s allocating \d+kB since", out, re.M)
    assert re.search(r"^    why: killed victim \(\d+, TIF_MEMDIE\) still in D on mutex:m ", out,
                     re.M)
    assert "why: out_of_memory(): abort x" in out
    assert cli.main(["report", str(tmp_path / "o")]) == 0
    assert sorted(capsys.readouterr().out.splitlines()) == sorted(out.splitlines())


def test_a_second_run_into_the_same_out_leaves_only_its_own_logs(tmp_path, capsys):
    out, _ = _run(tmp_path, capsys)                        # seeds 1 and 2
    (out / "s" / "patch" / "seed-9.jsonl.tmp").write_text("x")
    assert cli.main(["run", str(tmp_path / "exp.toml"), "--out", str(out), "--seed", "2",
                     "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == f"1 runs; logs in {out}/"      # --quiet: no rows
    assert sorted(p.name for p in (out / "s" / "patch").iterdir()) == ["seed-2.jsonl"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["log"] for r in manifest["runs"]] == ["s/patch/seed-2.jsonl"]
    assert manifest["seeds"] == [2] and manifest["interrupted"] is False
    assert manifest["arms"][0]["preset"] == "patch" and manifest["jobs"] >= 1
    assert {"name": "presets", "module": "workbench.plugins.presets",
            "dist": "oom-workbench 0.1.0"} in manifest["plugins"]


def test_report_recomputes_exactly_the_summaries_run_wrote(tmp_path, capsys):
    from workbench.logs import read_run_dir
    out, _ = _run(tmp_path, capsys, presets=("no-reaper", "patch", "v4.6", "modern"))
    runs, problems = read_run_dir(out)
    assert len(runs) == 8 and not problems
    for run in runs:
        stored = {k: v for k, v in run.events[-1].items()
                  if k not in ("event", "t", "arm", "scenario", "seed")}
        assert run.summary == stored, run.path
