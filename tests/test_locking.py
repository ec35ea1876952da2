"""Kernel sleeping locks and signals: hand-off, killable and D-state waits."""

from __future__ import annotations

from helpers import process, scenario

from workbench.kernel.sched import TASK_KILLABLE, TASK_UNINTERRUPTIBLE

MS = 1_000_000


def three(programs):
    return [process(name, program=prog) for name, prog in programs]


def test_a_mutex_hands_over_in_fifo_order(run):
    order = []

    def locker(delay_ms):
        async def body(k, task):
            await k.clock.sleep(task, delay_ms * MS, "D")
            m = k.mutex("m")
            assert await m.lock(task)
            order.append(task.comm)
            await k.clock.sleep(task, 10 * MS, "D")
            m.unlock(task)
        return body

    run(scenario("s", *three([("a", []), ("b", []), ("c", [])])),
        calls={"a/main": locker(0), "c/main": locker(1), "b/main": locker(2)})
    assert order == ["a", "c", "b"]


def test_killable_waits_end_at_sigkill_and_d_state_waits_do_not(run):
    times = {}

    def waiter(state):
        async def body(k, task):
            await k.clock.sleep(task, MS, "D")
            got = await k.mutex("m").lock(task, state)
            times[task.comm] = (k.clock.now, got, task.fatal_signal_pending())
            if got:
                k.mutex("m").unlock(task)
        return body

    async def holder(k, task):
        from workbench.kernel import signal
        assert await k.mutex("m").lock(task)
        await k.clock.sleep(task, 5 * MS, "D")
        for proc in k.processes:
            if proc.comm in ("killable", "dstate"):
                signal.send_sigkill(k, proc)
        await k.clock.sleep(task, 5 * MS, "D")
        k.mutex("m").unlock(task)

    r = run(scenario("s", *three([("holder", []), ("killable", []), ("dstate", [])])),
            calls={"holder/main": holder, "killable/main": waiter(TASK_KILLABLE),
                   "dstate/main": waiter(TASK_UNINTERRUPTIBLE)})
    assert times["killable"] == (5 * MS, False, True)        # -EINTR at the kill
    assert times["dstate"] == (10 * MS, True, True)          # only when the holder let go
    waits = {e["comm"]: e["result"] for e in r.of("lock_wait")}
    assert waits == {"killable": "interrupted", "dstate": "acquired"}


def test_a_killed_thread_drops_its_kernel_locks_as_it_unwinds(run):
    r = run(scenario("s", process("victim", heap="160MiB", resident="160MiB", program=[
        '{ lock = "m" }', '{ mmap_lock = "read" }', '{ sleep = "10s" }']),
        process("waiter", program=['{ sleep = "1ms" }', '{ lock = "m" }', '{ unlock = "m" }']),
        process("kalloc", program=['{ sleep = "2ms" }', '{ kalloc = "128MiB" }'])))
    kill_t = r.first("kill", comm="victim")["t"]
    wait = r.first("lock_wait", comm="waiter")
    assert wait["result"] == "acquired" and wait["t"] == kill_t
    assert r.summary["outcome"] == "recovered"


def test_mmap_sem_prefers_a_queued_writer_over_new_readers(run):
    log = []

    def reader(delay, hold):
        async def body(k, task):
            await k.clock.sleep(task, delay * MS, "D")
            sem = task.mm.mmap_sem
            log.append((task.name, "trylock", sem.down_read_trylock() and sem.up_read() is None))
            await sem.down_read(task)
            log.append((task.name, "read", k.clock.now // MS))
            await k.clock.sleep(task, hold * MS, "D")
            sem.up_read()
        return body

    async def writer(k, task):
        await k.clock.sleep(task, 1 * MS, "D")
        sem = task.mm.mmap_sem
        await sem.down_write(task)
        log.append(("writer", "write", k.clock.now // MS))
        await k.clock.sleep(task, 3 * MS, "D")
        sem.up_write(task)

    app = process("app", heap="4MiB", threads=[("r1", []), ("w", []), ("r2", []), ("r3", [])])
    run(scenario("s", app), calls={"app/r1": reader(0, 5), "app/w": writer,
                                   "app/r2": reader(2, 1), "app/r3": reader(3, 1)})
    assert ("r2", "trylock", False) in log and ("r3", "trylock", False) in log
    reads = [(name, t) for name, what, t in log if what in ("read", "write")]
    # r1 reads at 0; the writer queued at 1 holds r2 and r3 off until r1 is done
    # (5) and it has written (5..8); then both readers go in together.
    assert reads == [("r1", 0), ("writer", 5), ("r2", 8), ("r3", 8)]


def test_a_killable_writer_that_gives_up_lets_the_readers_behind_it_in(run):
    got = {}

    async def r1(k, task):
        await task.mm.mmap_sem.down_read(task)
        await k.clock.sleep(task, 10 * MS, "D")
        task.mm.mmap_sem.up_read()

    async def w(k, task):
        await k.clock.sleep(task, 1 * MS, "D")
        got["writer"] = await task.mm.mmap_sem.down_write(task, TASK_KILLABLE)

    async def r2(k, task):
        await k.clock.sleep(task, 2 * MS, "D")
        await task.mm.mmap_sem.down_read(task)
        got["r2"] = k.clock.now // MS
        task.mm.mmap_sem.up_read()

    async def killer(k, task):
        from workbench.kernel import signal
        await k.clock.sleep(task, 4 * MS, "D")
        signal.send_sigkill(k, next(p for p in k.processes if p.comm == "wproc"))

    run(scenario("s", process("owner", heap="4MiB", threads=[("r1", []), ("r2", [])]),
                 process("wproc", extra='shares_mm_with = "owner"'), process("killer")),
        calls={"owner/r1": r1, "owner/r2": r2, "wproc/main": w, "killer/main": killer})
    assert got == {"writer": False, "r2": 4}


def test_exit_group_takes_the_other_threads_down(run):
    r = run(scenario("s", process("app", threads=[
        ("main", ['{ sleep = "5ms" }', '{ exit = 3 }']), ("worker", ['{ sleep = "10s" }'])])))
    exits = {e["thread"]: (e["t"], e["code"]) for e in r.of("exit")}
    assert exits == {"main": (0.005, 3), "worker": (0.005, 3)}
