"""The experiment and scenario files (docs/config.md): TOML schema and loading.

pydantic validates the shape of every file and reports every problem at once
with its location; `workload.scenario` then resolves names, pids and cross
references.  Every problem becomes one line "FILE: KEY.PATH: what was expected".
"""

from __future__ import annotations

import codecs
import difflib
import glob
import math
import os
import re
import stat
from dataclasses import dataclass
import tomllib
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (BaseModel, ConfigDict, Discriminator, Field, PlainSerializer, PlainValidator,
                      Strict, StrictBool, Tag, ValidationError, field_validator)

from workbench.kernel.gfp import parse_gfp
from workbench.metrics import OUTCOMES
from workbench.units import INT64_MAX, Duration, parse_duration, parse_rate, parse_size


class ConfigError(Exception):
    """Every problem found in a config, one "file: key: message" line each."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


# -- value types --------------------------------------------------------------

Size = Annotated[int, PlainValidator(parse_size)]
Dur = Annotated[Duration, PlainValidator(parse_duration), PlainSerializer(str, return_type=str)]
Rate = Annotated[int, PlainValidator(parse_rate)]
Gfp = Annotated[int, PlainValidator(parse_gfp)]


def _min_free(value: object) -> int | Literal["auto"]:
    if value == "auto":
        return "auto"
    try:
        return parse_size(value)
    except ValueError:
        raise ValueError('expected "auto" or a size such as "64MiB"') from None


def _repeat(value: object) -> int | Literal["forever"]:
    if value == "forever" or (isinstance(value, int) and not isinstance(value, bool)
                              and 1 <= value <= REPEAT_MAX):
        return value
    raise ValueError(f'expected a count from 1 to {REPEAT_MAX} or "forever", got {value!r}')


def _outcomes(value: object) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if isinstance(values, list) and values and all(v in OUTCOMES for v in values):
        return tuple(values)
    raise ValueError(f"expected one of {', '.join(OUTCOMES)} or a list of them, got {value!r}")


def _number_range(value: object) -> tuple[float | None, float | None]:
    """An expected number: exact, or { min = .., max = .. } (either may be left out)."""
    if _number(value):
        return (value, value)
    if isinstance(value, dict) and value and set(value) <= {"min", "max"} and all(
            _number(v) for v in value.values()):
        return (value.get("min"), value.get("max"))
    raise ValueError(f"expected a finite number or {{ min = .., max = .. }} of them (integers "
                     f"within 64 bits), got {value!r}")


def _number(value: object) -> bool:
    """A number the log can hold as written: finite, and a 64-bit integer."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return -INT64_MAX - 1 <= value <= INT64_MAX


SEED_MAX = INT64_MAX              # seeds are logged as signed 64-bit integers
REPEAT_MAX = INT64_MAX            # so are repeat counts
UID_MAX = (1 << 32) - 2           # uid_t; (uid_t)-1 is INVALID_UID
PID_MAX_DEFAULT = 0x8000          # include/linux/threads.h: the default pid_max
MAX_MAP_COUNT = 65530             # DEFAULT_MAX_MAP_COUNT, include/linux/mm.h
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"
NAME_HINT = ("a name of 1 to 64 letters, digits, '.', '_', '+' or '-', starting with a letter "
             "or digit (it names a directory of logs)")


def _path_name(value: object) -> str:
    """Scenario and arm names become directories under `out`: only a safe
    alphabet, so that no name can climb out of it or mean two paths."""
    if isinstance(value, str) and re.match(NAME_RE, value):
        if value.startswith("manifest.json"):
            raise ValueError(f"{value} is the run's manifest in `out`: choose another name")
        return value
    raise ValueError(f"expected {NAME_HINT}, got {value!r}")


PathName = Annotated[str, PlainValidator(_path_name)]


def _comm(value: object) -> str:
    """task->comm: TASK_COMM_LEN (16) bytes with the NUL, printed verbatim in
    the kill line and the task dump, so no control characters."""
    if (isinstance(value, str) and value and value.isprintable()
            and len(value.encode("utf-8", "surrogatepass")) <= 15):
        return value
    raise ValueError(f"expected 1 to 15 bytes of printable UTF-8 (TASK_COMM_LEN), got {value!r}")


Comm = Annotated[str, PlainValidator(_comm)]
# Integers a TOML file writes as integers: "100", 100.0 and true are refused.
StrictInt = Annotated[int, Strict()]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- machine and limits (every key optional: scenario values override the experiment's) --

class MachinePatch(_Model):
    memory: Size | None = None
    swap: Size | None = None
    hz: int | None = Field(None, ge=1, le=10000)
    min_free: Annotated[int | Literal["auto"], PlainValidator(_min_free)] | None = None
    fault_rate: Rate | None = None
    exit_rate: Rate | None = None
    reap_rate: Rate | None = None
    reclaim_rate: Rate | None = None
    reclaim_round: Dur | None = None
    quantum: Dur | None = None
    # vm_swappiness (mm/vmscan.c, 4.5: 60); /proc/sys/vm/swappiness takes 0..100
    swappiness: StrictInt | None = Field(None, ge=0, le=100)
    swap_rate: Rate | None = None
    writeback_rate: Rate | None = None

    @field_validator("swap")
    @classmethod
    def _whole_pages(cls, v: int | None) -> int | None:
        if v is not None and v % 4096:
            raise ValueError("expected a whole number of 4KiB pages (swap slots are pages)")
        return v

    @field_validator("memory")
    @classmethod
    def _enough_memory(cls, v: int | None) -> int | None:
        if v is not None and v < 16 << 20:
            raise ValueError("expected at least 16MiB")
        return v


MACHINE_DEFAULTS = MachinePatch.model_validate({
    "memory": "2GiB", "swap": "0B", "hz": 1000, "min_free": "auto",
    "fault_rate": "4GiB/s", "exit_rate": "2GiB/s", "reap_rate": "4GiB/s",
    "reclaim_rate": "1GiB/s", "reclaim_round": "1ms",
    # vm_swappiness, and the speed of the swap device (writes and reads alike)
    "swappiness": 60, "swap_rate": "512MiB/s",
    # the flusher's speed writing dirty page cache back (a disk's order)
    "writeback_rate": "128MiB/s",
    # virtual time per chunk of faulting, exit unmapping and reaping: one step each
    "quantum": "1ms"})


STEPS_MAX = 10**12


class LimitsPatch(_Model):
    time: Dur | None = None
    stall: Dur | None = None
    # (below a thousand, a run's start-up alone could reach them)
    steps: int | None = Field(None, ge=1000, le=STEPS_MAX)
    steps_per_instant: int | None = Field(None, ge=1000, le=STEPS_MAX)


# steps: units of work (kernel/core.py step(), docs/config.md).  A run that takes
# more, in all or at one virtual instant, ends with outcome "error" naming the cause.
LIMITS_DEFAULTS = LimitsPatch.model_validate({"time": "60s", "stall": "10s",
                                              "steps": 2_000_000,
                                              "steps_per_instant": 100_000})


# -- the step language ---------------------------------------------------------

LockMode = Literal["uninterruptible", "killable"]


class AllocStep(_Model):
    alloc: Size
    vma: str
    gfp: Gfp = Field(default_factory=lambda: parse_gfp("GFP_KERNEL"))


class KallocStep(_Model):
    kalloc: Size
    gfp: Gfp = Field(default_factory=lambda: parse_gfp("GFP_KERNEL"))


class KfreeStep(_Model):
    kfree: Size


class FreeStep(_Model):
    free: Size
    vma: str


class LockStep(_Model):
    lock: str
    mode: LockMode = "uninterruptible"


class UnlockStep(_Model):
    unlock: str


class MmapLockStep(_Model):
    mmap_lock: Literal["read", "write"]
    mode: LockMode = "uninterruptible"


class MmapUnlockStep(_Model):
    mmap_unlock: Literal[True]


class FutexLockStep(_Model):
    futex_lock: str = Field(min_length=1)
    robust: bool = False              # PTHREAD_MUTEX_ROBUST: on the thread's robust list


class FutexUnlockStep(_Model):
    futex_unlock: str = Field(min_length=1)


class CoreDumpStep(_Model):
    core_dump: str = Field(min_length=1)


class PipeReadStep(_Model):
    pipe_read: str = Field(min_length=1)
    gfp: Gfp = Field(default_factory=lambda: parse_gfp("GFP_KERNEL"))
    rate: Rate | None = None          # how fast it writes the core out (a disk)


class VforkStep(_Model):
    vfork: str = Field(min_length=1)


class SleepStep(_Model):
    sleep: Dur
    mode: Literal["interruptible", "uninterruptible", "killable"] = "interruptible"
    jitter: Dur = Duration()


class ExitStep(_Model):
    exit: int = Field(ge=0, le=255)


class RepeatStep(_Model):
    repeat: Annotated[int | Literal["forever"], PlainValidator(_repeat)]
    do: list[Step] = Field(min_length=1)


STEP_TYPES: dict[str, type[_Model]] = {
    "alloc": AllocStep, "kalloc": KallocStep, "kfree": KfreeStep, "free": FreeStep,
    "lock": LockStep, "unlock": UnlockStep, "mmap_lock": MmapLockStep,
    "mmap_unlock": MmapUnlockStep, "futex_lock": FutexLockStep, "futex_unlock": FutexUnlockStep,
    "core_dump": CoreDumpStep, "pipe_read": PipeReadStep, "vfork": VforkStep, "sleep": SleepStep,
    "exit": ExitStep, "repeat": RepeatStep,
}


def _step_kind(value: object) -> str | None:
    if isinstance(value, dict):
        kinds = [k for k in STEP_TYPES if k in value]
        return kinds[0] if len(kinds) == 1 else None
    if isinstance(value, BaseModel):
        return next((k for k, t in STEP_TYPES.items() if isinstance(value, t)), None)
    return None


Step = Annotated[
    Annotated[AllocStep, Tag("alloc")] | Annotated[KallocStep, Tag("kalloc")]
    | Annotated[KfreeStep, Tag("kfree")] | Annotated[FreeStep, Tag("free")]
    | Annotated[LockStep, Tag("lock")] | Annotated[UnlockStep, Tag("unlock")]
    | Annotated[MmapLockStep, Tag("mmap_lock")] | Annotated[MmapUnlockStep, Tag("mmap_unlock")]
    | Annotated[FutexLockStep, Tag("futex_lock")]
    | Annotated[FutexUnlockStep, Tag("futex_unlock")]
    | Annotated[CoreDumpStep, Tag("core_dump")] | Annotated[PipeReadStep, Tag("pipe_read")]
    | Annotated[VforkStep, Tag("vfork")]
    | Annotated[SleepStep, Tag("sleep")] | Annotated[ExitStep, Tag("exit")]
    | Annotated[RepeatStep, Tag("repeat")],
    Discriminator(_step_kind, custom_error_type="step",
                  custom_error_message="expected a table with exactly one step key of "
                  + ", ".join(STEP_TYPES)),
]
RepeatStep.model_rebuild()


# -- processes -----------------------------------------------------------------

class Vma(_Model):
    name: str = Field(min_length=1)
    kind: Literal["anon", "file", "shmem", "hugetlb"]
    size: Size
    resident: Size = 0
    dirty: Size = 0
    swapped: Size = 0                 # pages already swapped out at start: swap entries
    locked: bool = False
    shared: bool | None = None


class Thread(_Model):
    name: str = Field(min_length=1)
    robust_list: str | None = Field(None, min_length=1)   # the VMA of its struct pthread
    program: list[Step] = Field(default_factory=list)


class Process(_Model):
    name: Comm
    comm: Comm | None = None           # shown; need not be unique
    pid: StrictInt | None = Field(None, ge=1, le=PID_MAX_DEFAULT - 1)
    cap_sys_admin: StrictBool | None = None  # true | false; default: uid 0
    pgtables: Size | None = None       # page-table memory, overriding the derived pages
    count: int | None = Field(None, ge=1, le=PID_MAX_DEFAULT)
    start: Dur = Duration()
    start_jitter: Dur = Duration()
    uid: StrictInt = Field(1000, ge=0, le=UID_MAX)
    oom_score_adj: StrictInt | None = Field(None, ge=-1000, le=1000)
    parent: str | None = None
    cgroup: str | None = None
    kthread: bool = False
    init: bool = False
    shares_mm_with: str | None = None
    vfork: bool = False
    vma: list[Vma] = Field(default_factory=list, max_length=MAX_MAP_COUNT)
    thread: list[Thread] = Field(min_length=1, max_length=PID_MAX_DEFAULT)


class Cgroup(_Model):
    name: str = Field(min_length=1)
    memory_max: Size
    memsw_max: Size | None = None     # memory.memsw.limit_in_bytes (cgroup v1)
    oom_group: bool = False


NumberExpect = Annotated[tuple[float | None, float | None], PlainValidator(_number_range)]


class CgroupExpect(_Model):
    outcome: Literal["recovered", "lockup"] | None = None
    max_stall_s: NumberExpect | None = None


class Expect(_Model):
    """Expected results of one arm (docs/metrics.md)."""

    outcome: Annotated[tuple[str, ...], PlainValidator(_outcomes)] | None = None
    killed: list[str] | None = None
    killed_sharers: list[str] | None = None
    oom_invocations: NumberExpect | None = None
    kills: NumberExpect | None = None
    first_oom_s: NumberExpect | None = None
    recovery_s: NumberExpect | None = None
    max_stall_s: NumberExpect | None = None
    reaped_kb: NumberExpect | None = None
    reap_attempts: NumberExpect | None = None
    reap_failures: NumberExpect | None = None
    reaper_dropped: NumberExpect | None = None
    core_dumps: NumberExpect | None = None
    core_incomplete: NumberExpect | None = None
    exit_freed_kb: NumberExpect | None = None
    invariant_violations: NumberExpect | None = None
    cgroups_recovered: NumberExpect | None = None
    cgroups_locked_up: NumberExpect | None = None
    cgroups: dict[str, CgroupExpect] | None = None
    userspace_kills: NumberExpect | None = None
    userspace_killed: list[str] | None = None


class Scenario(_Model):
    name: PathName
    description: str = ""
    machine: MachinePatch = MachinePatch()
    limits: LimitsPatch = LimitsPatch()
    expect: dict[str, Expect] = Field(default_factory=dict)
    cgroup: list[Cgroup] = Field(default_factory=list)
    process: list[Process] = Field(min_length=1)

    @classmethod
    def salvage(cls, data: object) -> Salvaged | None:
        """What of a broken scenario is valid on its own (keys, and processes
        one by one), so that its references can be checked too."""
        if not isinstance(data, dict) or not isinstance(data.get("process"), list):
            return None
        good = _valid_keys(cls, {k: v for k, v in data.items() if k != "process"})
        good["name"] = good.get("name", "unnamed")
        index = [i for i, p in enumerate(data["process"]) if _valid(Process, p)]
        if not index:
            return None
        good["process"] = [data["process"][i] for i in index]
        names = {p["name"] for p in data["process"]
                 if isinstance(p, dict) and isinstance(p.get("name"), str)}
        return Salvaged(cls.model_validate(good), names, index)


@dataclass(frozen=True)
class Salvaged:
    scenario: Scenario
    names: set[str]         # every process name the file declares, valid or not
    index: list[int]        # the file's index of each salvaged process


# -- the experiment file ---------------------------------------------------------

class ArmOptions(_Model):
    victim: dict[str, Any] = Field(default_factory=dict)
    reaper: dict[str, Any] = Field(default_factory=dict)
    vma_filter: dict[str, Any] = Field(default_factory=dict)
    userspace: dict[str, Any] = Field(default_factory=dict)


class Arm(_Model):
    name: PathName
    preset: str = "patch"
    follow_ups: list[str] = Field(default_factory=list)   # "+name" adds, "-name" removes
    victim: str | None = None
    reaper: str | None = None
    vma_filter: str | None = None
    userspace: str | None = None
    options: ArmOptions = ArmOptions()


class PluginSettings(_Model):
    """The keys of an experiment file that decide which plugins load (read
    before the rest, since the arms name the policies those plugins bring)."""

    plugins_dir: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    disable: list[str] = Field(default_factory=list)

    @field_validator("plugins_dir", mode="before")
    @classmethod
    def _one_or_more(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v


class ExperimentFile(_Model):
    title: str = ""
    plugins_dir: Any = None                 # checked as PluginSettings
    disable: Any = None
    seeds: list[Annotated[int, Field(ge=0, le=SEED_MAX)]] = Field(default_factory=lambda: [1],
                                                                  min_length=1)
    scenarios: list[str] = Field(default_factory=list)
    scenario: list[dict[str, Any]] = Field(default_factory=list)  # validated as Scenario below
    out: str | None = Field(None, min_length=1)
    machine: MachinePatch = MachinePatch()
    limits: LimitsPatch = LimitsPatch()
    arm: list[dict[str, Any]] = Field(default_factory=lambda: [{"name": "patch"}],
                                      min_length=1)  # each an Arm

    @classmethod
    def salvage(cls, data: dict[str, Any]) -> ExperimentFile:
        """The keys that are valid on their own, defaults for the rest: lets
        the scenarios and arms of a broken file be checked too."""
        return cls.model_validate(_valid_keys(cls, data))


def _valid(model: type[_Model], data: object) -> bool:
    try:
        model.model_validate(data)
    except ValidationError:
        return False
    return True


def _valid_keys(model: type[_Model], data: dict[str, Any]) -> dict[str, Any]:
    """The known keys of data whose values are valid (their errors were
    reported by the full validation already)."""
    try:
        model.model_validate(data)
        return dict(data)
    except ValidationError as e:
        bad = {err["loc"][0] for err in e.errors() if err["loc"]}
    return {k: v for k, v in data.items() if k in model.model_fields and k not in bad}


# -- loading -------------------------------------------------------------------

def read_toml(path: Path, problems: list[str]) -> dict | None:
    """The parsed file, or None with the reason appended to problems.

    Only regular files are read (a FIFO or a device would block or never
    end), and the text must be UTF-8 as TOML requires."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            problems.append(f"{path}: not a regular file")
            return None
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        problems.append(f"{path}: no such file")
        return None
    except OSError as e:
        problems.append(f"{path}: cannot read: {e.strerror or e}")
        return None
    if raw.startswith(codecs.BOM_UTF8):
        problems.append(f"{path}: starts with a UTF-8 byte-order mark (BOM), which TOML does "
                        "not allow: save the file as UTF-8 without a BOM")
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        problems.append(f"{path}: not UTF-8: byte 0x{raw[e.start]:02x} at line {line}, column "
                        f"{column} (TOML files are UTF-8)")
        return None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        problems.append(f"{path}: TOML syntax error: {e}")
    except RecursionError:
        problems.append(f"{path}: nested too deeply to read (arrays and tables within each other)")
    return None


def validate(model: type[_Model], data: object, where: str, problems: list[str],
             prefix: str = "") -> Any:
    """model.model_validate(data), turning each error into a problem line."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            problems.append(f"{where}: {key_path(err['loc'], prefix)}: {_message(err, model)}")
        return None
    except RecursionError:
        problems.append(f"{where}: {prefix or '(top level)'}: nested too deeply")
        return None


def key_path(loc: tuple, prefix: str = "") -> str:
    """('process', 2, 'thread', 0, 'program', 3, 'alloc', 'vma') -> process[2].thread[0].program[3].vma

    The step kind pydantic inserts after a program index is dropped: the
    user wrote no such level."""
    out = prefix
    previous: object = None
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif not (isinstance(previous, int) and part in STEP_TYPES and i >= 2
                  and loc[i - 2] in ("program", "do")):
            out += ("." if out else "") + str(part)
        previous = part
    return out or "(top level)"


def _message(err: dict, model: type[BaseModel]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key" + _suggest(err["loc"], model)
    if kind == "missing":
        return "required key missing"
    msg = err["msg"]
    return msg.removeprefix("Value error, ")


def _suggest(loc: tuple, model: type[BaseModel]) -> str:
    """ " (did you mean 'memory'?)" for a near miss, else the keys the table takes."""
    table = _model_at(model, loc[:-1])
    if table is None:
        return ""
    keys = list(table.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), keys, n=1, cutoff=0.6)
    if close and table is not Expect:
        return f" (did you mean {close[0]!r}?)"
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f" ({hint}{'expect' if table is Expect else 'valid'} keys: {', '.join(keys)})"


def _model_at(model: Any, loc: tuple) -> type[BaseModel] | None:
    """The model of the table at loc under model (None if loc leads elsewhere)."""
    current: Any = model
    for part in loc:
        current = _descend(current, part)
        if current is None:
            return None
    return _as_model(current)


def _descend(t: Any, part: object) -> Any:
    model = _as_model(t)
    if model is not None:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field is not None else None
    origin, args = get_origin(t), get_args(t)
    if origin is Annotated:
        return _descend(args[0], part)
    if origin in (Union, UnionType):
        if isinstance(part, str) and part in STEP_TYPES:     # a step's tag
            return STEP_TYPES[part]
        rest = [a for a in args if a is not type(None)]
        return _descend(rest[0], part) if len(rest) == 1 else None
    if origin is list and isinstance(part, int):
        return args[0]
    if origin is dict:
        return args[1]
    return None


def _as_model(t: Any) -> type[BaseModel] | None:
    while get_origin(t) is Annotated or (get_origin(t) in (Union, UnionType)
                                         and len([a for a in get_args(t)
                                                  if a is not type(None)]) == 1):
        t = next(a for a in get_args(t) if a is not type(None))
    return t if isinstance(t, type) and issubclass(t, BaseModel) else None


def expand_scenario_globs(config_path: Path, patterns: list[str], problems: list[str]) -> list[Path]:
    """The files the `scenarios` globs match, in a stable order; a pattern
    that matches no regular file is a problem (directories are skipped)."""
    base = config_path.parent
    files: list[Path] = []
    for i, pattern in enumerate(patterns):
        where = f"{config_path}: scenarios[{i}]"
        if not pattern.strip():
            problems.append(f"{where}: expected a file name or glob such as "
                            f"\"scenarios/*.toml\", got {pattern!r}")
            continue
        matched = sorted(Path(p) for p in glob.glob(str(base / pattern), recursive=True))
        regular = [m for m in matched if m.is_file()]
        for m in matched:
            if not m.is_file() and not m.is_dir():      # a FIFO would block the reader
                problems.append(f"{where}: {m}: not a regular file")
        if not regular:
            what = "only directories" if matched else "no file"
            problems.append(f"{where}: {pattern!r} matches {what}")
        files.extend(m for m in regular if m not in files)
    return files
