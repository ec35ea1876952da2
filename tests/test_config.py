"""Config and scenario language (docs/config.md): every problem at once, with file and key."""

from __future__ import annotations

import pytest

from workbench.config import ConfigError, key_path
from workbench.experiment import load_experiment
from workbench.discovery import load_plugins
from workbench.units import Duration, parse_duration, parse_rate, parse_size

GOOD_PROCESS = '''
[[process]]
name = "p"
[[process.vma]]
name = "heap"
kind = "anon"
size = "64MiB"
[[process.thread]]
name = "main"
program = [{ alloc = "1MiB", vma = "heap" }]
'''


def load(tmp_path, experiment: str, **scenarios: str):
    (tmp_path / "exp.toml").write_text(experiment)
    for name, text in scenarios.items():
        (tmp_path / f"{name}.toml").write_text(text)
    return load_experiment(tmp_path / "exp.toml", load_plugins())


def problems(tmp_path, experiment: str, **scenarios: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, experiment, **scenarios)
    return e.value.problems


@pytest.mark.parametrize("text, expected", [
    ("4KiB", 4096), ("1GB", 1 << 30), ("1GiB", 1 << 30), ("2gb", 2 << 30), ("512kB", 512 << 10),
    ("1.5MiB", 3 << 19), (4096, 4096), ("0B", 0), ("1TiB", 1 << 40), ("7M", 7 << 20),
])
def test_sizes_use_memparse_binary_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["lots", "1 parsec", "-1MiB", True, None, "GiB"])
def test_bad_sizes_say_what_was_expected(bad):
    with pytest.raises(ValueError, match="expected a size"):
        parse_size(bad)


def test_durations_are_exact_integer_nanoseconds():
    assert parse_duration("100ms").ns * 10 == parse_duration("1s").ns == 1_000_000_000
    assert parse_duration("1.5s").ns == 1_500_000_000
    assert parse_duration("2min").ns == 120 * 10**9
    assert parse_duration("3jiffies") == Duration(jiffies=3)
    assert Duration(jiffies=3).to_ns(250) == 12_000_000     # HZ=250: a jiffy is 4 ms
    assert parse_rate("4GiB/s") == 4 << 30
    with pytest.raises(ValueError, match="rate"):
        parse_rate("4GiB")


def test_key_paths_name_the_step_not_pydantics_union_tag():
    loc = ("process", 2, "thread", 0, "program", 3, "alloc", "vma")
    assert key_path(loc) == "process[2].thread[0].program[3].vma"
    assert key_path(("seeds", 1), "scenario[0]") == "scenario[0].seeds[1]"


def test_a_config_with_several_mistakes_gets_one_line_for_each(tmp_path):
    found = problems(tmp_path, '''
seeds = [1, -2]
scenarios = ["s.toml", "nothing-*.toml"]
colour = "blue"
[machine]
memory = "lots"
[[arm]]
name = "a"
preset = "nope"
[[arm]]
name = "b"
[arm.options.reaper]
attempts = 0
''', s='''
name = "s"
[limits]
stall = "10 parsecs"
[[process]]
name = "p0"
parent = "ghost"
[[process.vma]]
name = "heap"
kind = "anon"
size = "1GiB"
resident = "2GiB"
[[process.thread]]
name = "main"
program = [{ alloc = "1GiB", vma = "stack" }, { unlock = "m" },
           { repeat = "forever", do = [{ lock = "m" }, { unlock = "m" }] }]
[[process]]
name = "averyveryverylongname"
[[process.thread]]
name = "main"
program = [{ frobnicate = 1 }, { sleep = "1s", mode = "sometimes" }]
[expect.other]
kills = 1
''')
    exp, scn = str(tmp_path / "exp.toml"), str(tmp_path / "s.toml")
    expected = [
        (exp, "seeds[1]"), (exp, "colour: unknown key"), (exp, "machine.memory: expected a size"),
        (exp, "arm[0].preset: unknown preset 'nope' (known: modern, no-reaper, patch, v4.6)"),
        (exp, "arm[1].options.reaper.attempts"), (exp, "scenarios[1]: 'nothing-*.toml' matches no file"),
        (scn, "limits.stall: expected a duration"),
        (scn, "process[1].name: expected 1 to 15 bytes of printable UTF-8"),
        (scn, "process[1].thread[0].program[0]: expected a table with exactly one step key"),
        (scn, "process[1].thread[0].program[1].mode"),
        (scn, "process[0].parent: no process named 'ghost'"),
        (scn, "process[0].vma[0].resident: expected at most the VMA's size"),
        (scn, "process[0].thread[0].program[0].vma: no vma named 'stack'"),
        (scn, "process[0].thread[0].program[1].unlock: 'm' is not held here"),
        (scn, "process[0].thread[0].program[2].do: a repeat = \"forever\" body needs a step"),
        (scn, "expect.other: no arm or preset named 'other'"),
    ]
    for where, text in expected:
        assert any(p.startswith(f"{where}: ") and text in p for p in found), (text, found)
    assert len(found) == len(expected)


def test_toml_syntax_errors_give_line_and_column(tmp_path):
    found = problems(tmp_path, 'seeds = [1\ntitle = "x"\n')
    assert len(found) == 1 and "TOML syntax error" in found[0] and "line 2" in found[0]


def test_inline_scenarios_report_paths_under_scenario_index(tmp_path):
    found = problems(tmp_path, '''
[[scenario]]
name = "inline"
[[scenario.process]]
name = "p"
[[scenario.process.thread]]
name = "main"
program = [{ alloc = "1MiB", vma = "nope" }]
''')
    assert found == [f"{tmp_path / 'exp.toml'}: scenario[0].process[0].thread[0].program[0].vma: "
                     "no vma named 'nope' in this process's mm"]


@pytest.mark.parametrize("snippet, message", [
    ('[[process.vma]]\nname = "s"\nkind = "anon"\nsize = "1MiB"\nshared = true',
     'shared anonymous memory is shmem'),
    ('[[process.vma]]\nname = "s"\nkind = "anon"\nsize = "1MiB"\nresident="1MiB"\ndirty = "1MiB"',
     'only file VMAs have dirty page-cache pages'),
    ('[[process.vma]]\nname = "heap"\nkind = "anon"\nsize = "1MiB"', "vma 'heap' is defined twice"),
])
def test_vma_checks(tmp_path, snippet, message):
    found = problems(tmp_path, 'scenarios = ["s.toml"]',
                     s='name = "s"\n' + GOOD_PROCESS + snippet)
    assert len(found) == 1 and message in found[0]


def test_counted_processes_get_concrete_names_and_children(tmp_path):
    exp = load(tmp_path, 'scenarios = ["s.toml"]', s='name = "s"\n' + GOOD_PROCESS + '''
[[process]]
name = "kid"
count = 3
parent = "p"
[[process.thread]]
name = "main"
''')
    names = [(p.name, p.parent) for p in exp.scenarios[0].processes]
    assert names == [("p", None), ("kid-0", "p"), ("kid-1", "p"), ("kid-2", "p")]


def test_machine_and_limits_merge_experiment_then_scenario(tmp_path):
    exp = load(tmp_path, 'scenarios = ["s.toml"]\n[machine]\nmemory = "3GiB"\nhz = 250\n'
               '[limits]\nstall = "5s"', s='name = "s"\n[machine]\nhz = 100\n' + GOOD_PROCESS)
    s = exp.scenarios[0]
    assert (s.machine.memory, s.machine.hz, s.machine.fault_rate) == (3 << 30, 100, 4 << 30)
    assert (s.limits.stall_ns, s.limits.time_ns) == (5 * 10**9, 60 * 10**9)
    assert exp.out.as_posix() == "runs/exp" and exp.seeds == (1,)
    assert [a.name for a in exp.arms] == ["patch"]


@pytest.mark.parametrize("machine, message", [
    ('swap = "1000B"', 'machine.swap: expected a whole number of 4KiB pages'),
    ('swappiness = 101', 'machine.swappiness: Input should be less than or equal to 100'),
    ('swap_rate = "0B/s"', 'machine.swap_rate:'),
])
def test_bad_swap_settings_name_their_key(tmp_path, machine, message):
    found = problems(tmp_path, f'scenarios = ["s.toml"]\n[machine]\n{machine}',
                     s='name = "s"\n' + GOOD_PROCESS)
    assert len(found) == 1 and message in found[0], found


def test_swap_settings_are_resolved_and_only_a_swap_machine_logs_them(tmp_path):
    exp = load(tmp_path, 'scenarios = ["s.toml"]\n[machine]\nswap = "1GiB"\nswappiness = 10',
               s='name = "s"\n' + GOOD_PROCESS)
    m = exp.scenarios[0].machine
    assert (m.swap_pages, m.swappiness, m.swap_rate) == (262144, 10, 512 << 20)
    assert m.to_json()["swap"] == 1 << 30
    plain = load(tmp_path, 'scenarios = ["s.toml"]', s='name = "s"\n' + GOOD_PROCESS)
    assert "swap" not in plain.scenarios[0].machine.to_json()
    assert "writeback_rate" not in plain.scenarios[0].machine.to_json()
    slow = load(tmp_path, 'scenarios = ["s.toml"]\n[machine]\nwriteback_rate = "1MiB/s"',
                s='name = "s"\n' + GOOD_PROCESS)
    assert slow.scenarios[0].machine.to_json()["writeback_rate"] == 1 << 20


def test_expectations_refer_to_real_processes_and_cgroups(tmp_path):
    found = problems(tmp_path, 'scenarios = ["s.toml"]', s='name = "s"\n' + GOOD_PROCESS + '''
[expect.patch]
killed = ["q"]
[expect.patch.cgroups]
z = { outcome = "lockup" }
''')
    assert any("expect.patch.killed[0]: no process named 'q'" in p for p in found)
    assert any("expect.patch.cgroups.z: no cgroup named 'z'" in p for p in found)


@pytest.mark.parametrize("line, problem", [
    ('pid = "100"', "process[0].pid: Input should be a valid integer"),
    ("pid = 100.0", "process[0].pid: Input should be a valid integer"),
    ("uid = true", "process[0].uid: Input should be a valid integer"),
    ('comm = "ééééééééé"', "process[0].comm: expected 1 to 15 bytes of printable UTF-8"),
    ('comm = "a\\nb"', "process[0].comm: expected 1 to 15 bytes of printable UTF-8"),
])
def test_process_keys_take_what_toml_and_the_kernel_take(tmp_path, line, problem):
    """TASK_COMM_LEN counts bytes, and a comm is printed verbatim; an integer
    key is an integer, not a string or a bool that pydantic would coerce."""
    (tmp_path / "s.toml").write_text(f'name = "s"\n[[process]]\nname = "p"\n{line}\n'
                                     '[[process.thread]]\nname = "main"\n')
    (tmp_path / "e.toml").write_text('scenarios = ["s.toml"]\n')
    with pytest.raises(ConfigError) as e:
        load_experiment(tmp_path / "e.toml", load_plugins())
    assert any(problem in p for p in e.value.problems), e.value.problems
