"""Follow-ups, presets, and the core mechanisms the later kernels changed (docs/history.md)."""

from __future__ import annotations

import pytest
from helpers import process, scenario

from workbench import cli
from workbench.config import ConfigError
from workbench.kernel.features import Features
from workbench.discovery import load_plugins
from workbench.testing import experiment

HOG = process("hog", heap="300MiB", program=['{ alloc = "300MiB", vma = "heap" }'])


def test_each_preset_extends_the_one_before_it():
    presets = load_plugins().registry.presets
    assert presets["no-reaper"].follow_ups == ()
    assert presets["patch"].follow_ups == ("oom-reaper",)
    assert presets["v4.6"].follow_ups[:1] == ("oom-reaper",)
    assert set(presets["v4.6"].follow_ups) < set(presets["modern"].follow_ups)
    # 6.19 has every follow-up, listed in catalogue (mainline) order
    assert presets["modern"].follow_ups == tuple(load_plugins().registry.follow_ups)


def test_an_arm_adds_and_removes_follow_ups(tmp_path):
    exp = experiment(scenario("s", HOG), tmp_path, preset="v4.6",
                     arm={"follow_ups": ["+oom-reaper-delay", "-reap-queue-lifo"]})
    arm = exp.arms[0]
    assert "oom-reaper-delay" in arm.follow_ups and "reap-queue-lifo" not in arm.follow_ups
    reaper = arm.options["reaper"]
    assert reaper.queue == "slot" and str(reaper.delay) == "2s"
    assert reaper.after_reap == "exit_oom_victim" and not arm.pure_preset
    assert arm.features == Features(oom_reaper_report=True, gfp_flag_names=True)
    assert arm.to_json()["kernel"] == {"oom_reaper_report": True, "gfp_flag_names": True}


def test_follow_ups_apply_in_catalogue_order_so_later_ones_win(tmp_path):
    # clear-tif-memdie-after-reap (4.6) is superseded by mmf-oom-skip (4.9).
    arm = experiment(scenario("s", HOG), tmp_path, preset="modern").arms[0]
    assert arm.options["reaper"].after_reap == "oom_skip"
    assert arm.options["victim"].oom_mm_victims and not arm.options["victim"].child_sacrifice


@pytest.mark.parametrize("change, message", [
    ("+oom-reaper-dealy", "unknown follow-up 'oom-reaper-dealy' (did you mean 'oom-reaper-delay'?"),
    ("oom-reaper-delay", 'expected "+NAME" to add a follow-up or "-NAME" to remove one'),
    ("+oom-reaper", "preset 'v4.6' already has 'oom-reaper'"),
    ("-reap-mlocked", "preset 'v4.6' does not have 'reap-mlocked'"),
])
def test_a_wrong_follow_up_change_is_named(tmp_path, change, message):
    with pytest.raises(ConfigError) as e:
        experiment(scenario("s", HOG), tmp_path, preset="v4.6", arm={"follow_ups": [change]})
    assert any(f"arm[0].follow_ups[0]: {message}" in p for p in e.value.problems), e.value.problems


def test_a_policy_the_arm_chooses_owns_its_concern(run):
    r = run(scenario("s", HOG), preset="modern", arm={"reaper": "none"})
    arm = r.events[0]["config"]["arm"]
    assert arm["reaper"] == "none" and "oom-reaper-delay" in arm["follow_ups_not_applied"]
    assert r.summary["outcome"] == "recovered" and r.summary["reap_attempts"] == 0


def test_a_preset_arm_of_another_name_answers_to_its_expectations(run):
    text = scenario("s", HOG) + '\n[expect.modern]\nkills = 2\n'
    r = run(text, preset="modern")
    assert r.summary["expect_failed"] == ["kills 1, expected 2"]
    r = run(text, preset="modern", arm={"follow_ups": ["-oom-reaper-delay"]})
    assert r.summary["expect_failed"] == []          # changed: no longer the preset


def test_plugins_lists_each_presets_follow_ups(capsys):
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "follow-ups (applied in this order):" in out
    assert "  oom-reaper-delay               5.18" in out
    assert "follow-ups: oom-reaper, no-exiting-abort, reap-queue-lifo" in out


# -- the core under the switches -----------------------------------------------------

def _lowest_free(run, arm):
    """Twenty threads of one victim fault at once on a machine with 32 pages of
    min reserve; the lowest free page count while they die."""
    seen = []

    async def watch(k, task):
        for _ in range(3000):
            seen.append(k.zone.free)
            await k.clock.sleep(task, 100_000, "D")

    threads = [(f"t{i}", ['{ alloc = "3MiB", vma = "heap" }', '{ sleep = "1s" }'])
               for i in range(20)]
    victim = process("victim", heap="128MiB", resident="40MiB", threads=threads)
    text = scenario("s", victim, process("watch"), memory="64MiB").replace(
        "[machine]", '[machine]\nmin_free = "128KiB"\nfault_rate = "1GiB/s"')
    r = run(text, preset="no-reaper", arm=arm, calls={"watch/main": watch})
    assert r.summary["kills"] == 1
    return min(seen)


def test_dying_threads_take_one_page_each_and_4_14_keeps_half_the_reserve(run):
    # 4.5: each dying thread's shortcut grants it TIF_MEMDIE and one page
    # below min - not a chunk; 4.14's ALLOC_OOM stops them at half of min.
    full = _lowest_free(run, None)
    partial = _lowest_free(run, {"follow_ups": ["+alloc-oom-partial-reserves"]})
    assert 32 - 20 - 2 <= full < 16 <= partial


def test_a_woken_mutex_waiter_can_lose_the_lock_to_a_trylock(run):
    """4.5 releases a mutex before waking its first waiter."""
    order = []

    async def holder(k, task):
        m = k.mutex("m")
        await m.lock(task)
        await k.clock.sleep(task, 1_000_000, "D")
        m.unlock(task)
        order.append(("stolen", m.trylock(task)))      # before the waiter runs
        await k.clock.sleep(task, 1_000_000, "D")
        m.unlock(task)

    async def waiter(k, task):
        await k.clock.sleep(task, 100_000, "D")
        await k.mutex("m").lock(task)
        order.append(("waiter", k.clock.now))
        k.mutex("m").unlock(task)

    run(scenario("s", process("a"), process("b")), calls={"a/main": holder, "b/main": waiter})
    assert order == [("stolen", True), ("waiter", 2_000_000)]


def test_a_killable_mmap_writer_before_4_7_waits_uninterruptibly(run):
    holder = process("p", heap="4MiB", threads=[
        ("reader", ['{ mmap_lock = "read" }', '{ sleep = "1s", mode = "uninterruptible" }',
                    '{ mmap_unlock = true }']),
        ("writer", ['{ sleep = "10ms" }', '{ mmap_lock = "write", mode = "killable" }',
                    '{ mmap_unlock = true }']),
        ("killer", ['{ sleep = "20ms" }', '{ exit = 1 }'])])
    old = run(scenario("s", holder), preset="v4.6")
    assert "down_write_killable() is 4.7" in old.events[0]["notes"][0]
    new = run(scenario("s", holder), preset="modern")
    assert "notes" not in new.events[0]
    ended = {r: x.first("exit", thread="writer")["t"] for r, x in (("old", old), ("new", new))}
    assert ended["new"] == pytest.approx(0.02) and ended["old"] == pytest.approx(1.0)


# -- the language the reproducers need ------------------------------------------------

def test_a_vfork_parent_waits_until_its_child_exits(run):
    parent = process("parent", heap="8MiB", resident="8MiB",
                     program=['{ sleep = "100ms" }', '{ vfork = "child" }'])
    child = process("child", program=['{ sleep = "400ms" }'],
                    extra='parent = "parent"\nvfork = true')
    r = run(scenario("s", parent, child))
    assert r.first("fork", comm="child")["t"] == pytest.approx(0.1)
    assert r.first("exit", comm="parent")["t"] >= r.first("exit", comm="child")["t"] == \
        pytest.approx(0.5)


@pytest.mark.parametrize("program, extra, message", [
    ('{ vfork = "child" }', "", "'child' must be declared with vfork = true and parent = 'p'"),
    ('{ repeat = 2, do = [{ vfork = "child" }, { sleep = "1s" }] }', 'vfork = true\n'
     'parent = "p"', "a process is forked once: not inside a repeat"),
    ('{ vfork = "child" }', 'vfork = true\nparent = "p"\nstart = "1s"',
     "'child' starts when this step runs: give it no start"),
    ('{ lock = "m" }', "", None),
])
def test_a_wrong_vfork_step_is_named(tmp_path, program, extra, message):
    text = scenario("s", process("p", heap="4MiB", program=[program]),
                    process("child", program=['{ sleep = "1s" }'], extra=extra))
    if message is None:
        experiment(text, tmp_path)
        return
    with pytest.raises(ConfigError) as e:
        experiment(text, tmp_path)
    assert any(message in p for p in e.value.problems), e.value.problems


@pytest.mark.parametrize("thread, message", [
    ('robust_list = "nowhere"', "robust_list: no vma named 'nowhere' in this process's mm"),
    ('program = [{ futex_unlock = "f" }]', "futex_unlock: 'f' is not held here"),
    ('program = [{ futex_lock = "f" }, { futex_lock = "f" }]', "'f' is already held here"),
    ('program = [{ lock = "m" }, { core_dump = "core" }]', "release the locks first"),
    ('program = [{ futex_lock = "f", robust = true }]',
     "program[0].robust: a robust mutex goes on the thread's robust list"),
    ('program = [{ core_dump = "core" }]\n[[process.thread]]\nname = "t2"',
     "core dumps are modelled for single-threaded processes only"),
])
def test_wrong_futex_and_core_dump_steps_are_named(tmp_path, thread, message):
    text = scenario("s", '[[process]]\nname = "p"\n[[process.vma]]\nname = "heap"\nkind = "anon"\n'
                         f'size = "4MiB"\n[[process.thread]]\nname = "main"\n{thread}\n')
    with pytest.raises(ConfigError) as e:
        experiment(text, tmp_path)
    assert any(message in p for p in e.value.problems), e.value.problems


@pytest.mark.parametrize("preset, header, kill", [
    ("patch", "gfp_mask=0x24000c0, order=0", "Killed process 3 (hog) total-vm:307200kB"),
    ("v4.6", "gfp_mask=0x24000c0(GFP_KERNEL), order=0", "Killed process 3 (hog) total-vm"),
    ("modern", "gfp_mask=0xcc0(GFP_KERNEL), order=0",
     "Out of memory: Killed process 3 (hog) total-vm:307200kB"),
])
def test_the_report_is_worded_as_each_era_printed_it(run, preset, header, kill):
    r = run(scenario("s", HOG), preset=preset)
    assert header in r.first("oom_header")["msg"]
    assert r.first("kill")["msg"].startswith(kill)
    assert r.count("oom_cpuset") == (0 if preset == "modern" else 1)
    if preset == "modern":
        assert r.first("select_victim")["msg"].startswith("oom-kill:constraint=CONSTRAINT_NONE,")
        assert "UID:1000 pgtables:" in r.first("kill")["msg"]


def test_only_robust_mutexes_are_marked_owner_died(run):
    """A thread's robust list holds only the PTHREAD_MUTEX_ROBUST mutexes it took."""
    holder = process("holder", heap="4MiB", threads=[("main", [
        '{ futex_lock = "r", robust = true }', '{ futex_lock = "p" }', '{ sleep = "10ms" }'])]
    ).replace('name = "main"', 'name = "main"\nrobust_list = "heap"')
    waiters = [process(f"w{m}", program=['{ sleep = "1ms" }', f'{{ futex_lock = "{m}" }}',
                                         f'{{ futex_unlock = "{m}" }}']) for m in "rp"]
    r = run(scenario("s", holder, *waiters, stall="1s"))
    assert [e["futex"] for e in r.of("robust_list")] == ["r"]
    assert r.first("futex_owner_died")["comm"] == "wr"
    assert r.summary["outcome"] == "hang"                   # wp sleeps for ever


def test_from_5_9_a_negative_badness_still_picks_the_biggest(run):
    """-900 each: clamped to 1 before 5.9, a tie the later process wins in the
    per-process scan; 5.9's signed scores rank them (mm/oom_kill.c oom_badness(), 6.19)."""
    def hog(name, size):
        return process(name, heap=size, resident=size, program=['{ sleep = "5s" }'],
                       extra="oom_score_adj = -900")
    alloc = process("alloc", heap="600MiB", program=['{ alloc = "600MiB", vma = "heap" }'],
                    extra='oom_score_adj = -1000\nstart = "100ms"')
    text = scenario("s", hog("big", "500MiB"), hog("small", "100MiB"), alloc, memory="1GiB")
    assert run(text, preset="modern").summary["killed"] == ["big"]
    clamped = run(text, preset="modern", arm={"follow_ups": ["-signed-badness"]})
    assert clamped.summary["killed"][0] == "small"
