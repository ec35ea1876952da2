"""Bad input gets a clear error naming the file and the key, exit status 2, and
no traceback: one test per class of input that once crashed or hung."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import process, scenario

from workbench import cli

HOG = process("hog", heap="64MiB", program=['{ alloc = "64MiB", vma = "heap" }'])


def write(tmp_path, scenario_text: str = scenario("s", HOG), experiment: str = "",
          name: str = "s.toml") -> str:
    (tmp_path / name).write_text(scenario_text)
    (tmp_path / "exp.toml").write_text(f'scenarios = ["{name}"]\nout = "{tmp_path / "out"}"\n'
                                       + experiment)
    return str(tmp_path / "exp.toml")


def validate(capsys, config: str, *extra: str) -> tuple[int, str]:
    rc = cli.main(["validate", config, *extra])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, err


def refused(capsys, config: str, *expected: str) -> None:
    rc, err = validate(capsys, config)
    assert rc == 2, err
    for text in expected:
        assert text in err, err


def test_files_that_are_not_utf8_or_start_with_a_bom_are_named(tmp_path, capsys):
    config = write(tmp_path)
    (tmp_path / "s.toml").write_bytes(b'# caf\xe9\n' + scenario("s", HOG).encode())
    refused(capsys, config, f"{tmp_path / 's.toml'}: not UTF-8: byte 0xe9 at line 1, column 6")
    (tmp_path / "s.toml").write_bytes(b"\xef\xbb\xbf" + scenario("s", HOG).encode())
    refused(capsys, config, f"{tmp_path / 's.toml'}: starts with a UTF-8 byte-order mark")


@pytest.mark.parametrize("key, value, message", [
    ("memory", '"' + "9" * 300 + 'GiB"', "machine.memory: expected a size of at most 4PiB"),
    ("memory", '"8589934592TiB"', "machine.memory: expected a size of at most 4PiB"),
    ("reclaim_round", '"' + "9" * 300 + 's"', "machine.reclaim_round: expected a duration of at "
                                              "most 9223372036854775807ns"),
    ("quantum", '"' + "9" * 300 + 'jiffies"', "machine.quantum: expected at most"),
])
def test_numbers_beyond_what_the_kernel_and_the_log_hold_are_refused(tmp_path, capsys, key,
                                                                     value, message):
    refused(capsys, write(tmp_path, experiment=f"[machine]\n{key} = {value}\n"), message)


def test_seeds_must_fit_a_signed_64_bit_integer(tmp_path, capsys):
    refused(capsys, write(tmp_path, experiment="seeds = [18446744073709551616]\n"),
            "seeds[0]: Input should be less than or equal to 9223372036854775807")
    with pytest.raises(SystemExit) as e:
        cli.main(["run", write(tmp_path), "--seed", str(2**64)])
    assert e.value.code == 2
    assert "expected an integer from 0 to 9223372036854775807" in capsys.readouterr().err


@pytest.mark.parametrize("processes, message", [
    (process("kt", program=['{ sleep = "1s" }'], extra="kthread = true")
     + process("user", program=['{ sleep = "1s" }'], extra='shares_mm_with = "kt"'),
     "process[1].shares_mm_with: 'kt' uses the mm of kthread 'kt', which has none to share"),
    (process("systemd", heap="4MiB", program=['{ sleep = "10s" }'], extra="init = true")
     + process("user", program=['{ sleep = "1s" }'], extra='shares_mm_with = "init"'),
     "process[1].shares_mm_with: no process named 'init' (this scenario's init is 'systemd')"),
])
def test_sharing_an_mm_that_does_not_exist_is_refused(tmp_path, capsys, processes, message):
    d_state = process("d", program=['{ sleep = "5s", mode = "uninterruptible" }'])
    refused(capsys, write(tmp_path, scenario("s", processes, d_state)), message)


@pytest.mark.parametrize("make_out, message", [
    (lambda p: (p.write_text("x"), p)[1], "exists and is not a directory"),
    (lambda p: (p.write_text("x"), p / "sub")[1], "a part of the path is a file"),
    (lambda p: __import__("pathlib").Path("/proc/no/such"), "cannot create the directory"),
])
def test_an_out_that_cannot_be_a_directory_is_refused_before_any_run(tmp_path, capsys, make_out,
                                                                    message):
    out = make_out(tmp_path / "file")
    rc = cli.main(["run", write(tmp_path), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and f"workbench: --out: {out}: {message}" in err and "Traceback" not in err


def test_names_that_do_not_fit_the_terminal_are_escaped(tmp_path):
    config = write(tmp_path, scenario("s", HOG).replace('name = "hog"', 'name = "h\u00e9"')
                   .replace('name = "s"', 'name = "s\u00e9"'))
    env = dict(os.environ, PYTHONIOENCODING="ascii", LC_ALL="C")
    r = subprocess.run([sys.executable, "-m", "workbench", "validate", config], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "expected a name of 1 to 64 letters" in r.stderr and "s\\xe9" in r.stderr


@pytest.mark.parametrize("program, message", [
    ('{ repeat = 1000000000, do = [{ kfree = "4KiB" }] }',
     "program[0].repeat: 1000000000 passes of a body that takes no virtual time"),
    ('{ repeat = "forever", do = [{ sleep = "1ns" }] }',
     "more than limits.steps (2000000): give its steps more time, or raise limits.steps"),
])
def test_loops_too_long_for_the_step_limits_are_refused(tmp_path, capsys, program, message):
    refused(capsys, write(tmp_path, scenario("s", process("p", program=[program]))), message)


@pytest.mark.parametrize("experiment, message", [
    ('[machine]\nreclaim_round = "1ns"\n', "machine.reclaim_round: expected a duration of at "
                                           "least 10us"),
    ('[machine]\nquantum = "1ns"\n', "machine.quantum: expected a duration of at least 10us"),
    ('[[arm]]\nname = "a"\n[arm.options.reaper]\nsleep = "0ms"\n',
     "arm[0].options.reaper.sleep: expected a duration of more than 0"),
])
def test_machine_and_policy_options_that_would_spin_are_refused(tmp_path, capsys, experiment,
                                                                message):
    refused(capsys, write(tmp_path, experiment=experiment), message)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_matched_by_a_glob_is_named_not_read(tmp_path, capsys):
    config = write(tmp_path)
    (tmp_path / "exp.toml").write_text('scenarios = ["*.toml"]\n')
    os.mkfifo(tmp_path / "pipe.toml")
    refused(capsys, config, f"scenarios[0]: {tmp_path / 'pipe.toml'}: not a regular file")


@pytest.mark.parametrize("experiment, message", [
    ('scenarios = [""]\n', "exp.toml: scenarios[0]: expected a file name or glob"),
    ('scenarios = ["."]\n', "exp.toml: scenarios[0]: '.' matches only directories"),
    ("", "exp.toml: scenarios: no scenario to run"),
])
def test_scenario_lists_that_name_no_file_are_refused(tmp_path, capsys, experiment, message):
    (tmp_path / "exp.toml").write_text(experiment)
    refused(capsys, str(tmp_path / "exp.toml"), message)


@pytest.mark.parametrize("where, name, message", [
    ("scenario", "../../x", "name: expected a name of 1 to 64 letters"),
    ("scenario", "/abs/x", "name: expected a name of 1 to 64 letters"),
    ("scenario", "manifest.json", "name: manifest.json is the run's manifest"),
    ("scenario", "manifest", None),
    ("arm", "../y", "arm[0].name: expected a name of 1 to 64 letters"),
])
def test_names_cannot_climb_out_of_out(tmp_path, capsys, where, name, message):
    text = scenario("s", HOG)
    experiment = ""
    if where == "scenario":
        text = text.replace('name = "s"', f'name = "{name}"')
    else:
        experiment = f'[[arm]]\nname = "{name}"\n'
    config = write(tmp_path, text, experiment)
    if message is None:                                  # a fine name, written under out
        assert cli.main(["run", config]) == 0
        assert (tmp_path / "out" / name / "patch" / "seed-1.jsonl").is_file()
        assert (tmp_path / "out" / "manifest.json").is_file()
        return
    refused(capsys, config, message)
    assert not (tmp_path / "out").exists()


def test_names_that_differ_only_by_case_would_share_a_directory(tmp_path, capsys):
    config = write(tmp_path, experiment='[[arm]]\nname = "Patch"\n[[arm]]\nname = "patch"\n')
    refused(capsys, config, "exp.toml: arm: name 'patch' and 'Patch' differ only by case")


def test_an_alloc_larger_than_its_vma_is_refused(tmp_path, capsys):
    big = process("p", heap="1MiB", program=['{ alloc = "2MiB", vma = "heap" }'])
    refused(capsys, write(tmp_path, scenario("s", big)),
            "program[0].alloc: 2MiB is more than vma 'heap' holds (1MiB)")


def test_unknown_keys_get_the_nearest_valid_one(tmp_path, capsys):
    text = scenario("s", HOG).replace("[machine]", "[expect.patch]\noutcom = \"recovered\"\n"
                                      "[machine]\nmemroy = \"1GiB\"")
    refused(capsys, write(tmp_path, text), "machine.memroy: unknown key (did you mean 'memory'?)",
            "expect.patch.outcom: unknown key (did you mean 'outcome'? expect keys: outcome, ")


def test_a_mutex_named_mmap_sem_is_not_the_mms_mmap_sem(tmp_path, capsys):
    fine = process("p", heap="1MiB", program=['{ lock = "mmap_sem" }', '{ mmap_lock = "read" }',
                                              '{ mmap_unlock = true }', '{ unlock = "mmap_sem" }'])
    assert validate(capsys, write(tmp_path, scenario("s", fine)))[0] == 0
    crossed = process("p", heap="1MiB", program=['{ lock = "mmap_sem" }', '{ mmap_unlock = true }'])
    refused(capsys, write(tmp_path, scenario("s", crossed)),
            "program[1].mmap_unlock: mmap_sem is not held here")


def test_an_experiment_without_arms_is_refused(tmp_path, capsys):
    refused(capsys, write(tmp_path, experiment="arm = []\n"),
            "exp.toml: arm: List should have at least 1 item")


def test_a_second_run_into_an_out_in_use_is_refused(tmp_path, capsys):
    from workbench.files import lock_out
    config = write(tmp_path)
    (tmp_path / "out").mkdir()
    held = lock_out(tmp_path / "out")
    try:
        rc = cli.main(["run", config])
    finally:
        held.close()
    err = capsys.readouterr().err
    assert rc == 2 and "another workbench run is writing there" in err
    assert cli.main(["run", config]) == 0


@pytest.mark.parametrize("argv, message", [
    (["--seed", " 3"], "argument --seed: expected an integer from 0"),
    (["--seed", "\u0663"], "argument --seed: expected an integer from 0"),
    (["--jobs", "1_0"], "argument --jobs: expected a number of processes"),
    (["--out", ""], "argument --out: expected a directory"),
])
def test_command_line_numbers_are_plain_digits_and_out_is_not_empty(tmp_path, capsys, argv,
                                                                    message):
    with pytest.raises(SystemExit) as e:
        cli.main(["run", write(tmp_path), *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_output_that_cannot_be_written_is_one_line_not_a_traceback(tmp_path):
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "workbench", "plugins"], stdout=full,
                           stderr=subprocess.PIPE, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "No space left on device" in r.stderr


def test_faulting_or_unmapping_while_holding_mmap_sem_is_a_self_deadlock(tmp_path, capsys):
    held = process("p", heap="1MiB", program=['{ mmap_lock = "write" }',
                                              '{ alloc = "4KiB", vma = "heap" }',
                                              '{ mmap_unlock = true }'])
    refused(capsys, write(tmp_path, scenario("s", held)),
            "program[1]: a fault takes mmap_sem, which this thread holds here: a self-deadlock")


def test_sizes_round_up_to_whole_pages_as_mmap_does(tmp_path):
    from workbench.testing import experiment
    odd = process("p", heap="6KiB", resident="6KiB", program=['{ sleep = "1ms" }'])
    vma = experiment(scenario("s", odd), tmp_path).scenarios[0].processes[0].vmas[0]
    assert (vma.size, vma.resident) == (2, 2)


def test_a_fault_past_the_end_of_a_vma_is_shown_under_the_table(tmp_path, capsys):
    twice = process("p", heap="1MiB", program=['{ alloc = "1MiB", vma = "heap" }',
                                               '{ alloc = "1MiB", vma = "heap" }'])
    assert cli.main(["run", write(tmp_path, scenario("s", twice))]) == 0
    out = capsys.readouterr().out
    assert "s / patch / seed 1: SIGSEGV: p (vma heap): a fault past the end of the VMA" in out
