"""Sizes, durations and rates as the config language writes them.

Sizes follow the kernel's memparse(): binary multipliers whatever the
spelling, so "1GB" is 1 GiB.  Durations are kept in integer nanoseconds so
that sums of virtual time are exact (10 x 100ms is exactly 1s); "jiffies"
stay symbolic until the machine's HZ is known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

PAGE_SIZE = 4096
NSEC_PER_SEC = 1_000_000_000
# The largest size the language takes: 4 PiB, the 52-bit physical address
# space of x86-64 (MAX_PHYSMEM_BITS with 5-level paging).  With at most
# DEFAULT_MAX_MAP_COUNT VMAs per mm, every count the log writes then fits a
# signed 64-bit integer.
MAX_SIZE = 1 << 52
# The largest integer the log holds: JSON readers take it as a signed 64-bit one.
INT64_MAX = (1 << 63) - 1
# The longest duration: KTIME_MAX, the kernel's signed 64-bit nanoseconds.
KTIME_MAX = INT64_MAX
_MAX_DIGITS = 40            # longer numbers are over every limit: refuse before arithmetic

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
    "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
    "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
    "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
}
_DURATION_UNITS = {
    "ns": 1, "us": 1_000, "ms": 1_000_000, "s": NSEC_PER_SEC, "min": 60 * NSEC_PER_SEC,
}
_NUMBER = r"\s*(\d+(?:\.\d+)?)\s*"
_SIZE_RE = re.compile(_NUMBER + r"([a-zA-Z]*)\s*$")
_DURATION_RE = re.compile(_NUMBER + r"(ns|us|ms|s|min|jiffies|jiffy)\s*$")

SIZE_HINT = 'a size such as "4KiB", "512MiB" or "2GiB" (B, KiB, MiB, GiB, TiB; kB, MB, GB mean the same)'
DURATION_HINT = 'a duration such as "100ms", "10s" or "1jiffies" (ns, us, ms, s, min, jiffies)'
RATE_HINT = 'a rate such as "4GiB/s"'


def parse_size(value: object) -> int:
    """Bytes in a size: an integer (bytes) or a string with a unit."""
    if isinstance(value, bool):
        raise ValueError(f"expected {SIZE_HINT}, got {value!r}")
    if isinstance(value, int):
        return _size_in_range(value, value)
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            return _size_in_range(_exact(m.group(1), _SIZE_UNITS[m.group(2).lower()]), value)
    raise ValueError(f"expected {SIZE_HINT}, got {_show(value)}")


def _exact(number: str, unit: int) -> int | None:
    """number x unit rounded to an integer, exactly (no float on the way);
    None when the number has more digits than any limit allows."""
    if len(number) > _MAX_DIGITS:
        return None
    return round(Fraction(number) * unit)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _size_in_range(nbytes: int | None, value: object) -> int:
    if nbytes is not None and nbytes < 0:
        raise ValueError(f"expected a size of at least 0, got {_show(value)}")
    if nbytes is None or nbytes > MAX_SIZE:
        raise ValueError(f"expected a size of at most 4PiB (4096TiB), got {_show(value)}")
    return nbytes


@dataclass(frozen=True)
class Duration:
    """A duration in nanoseconds, or in jiffies until HZ is known."""

    ns: int = 0
    jiffies: int = 0

    def to_ns(self, hz: int) -> int:
        return self.ns + self.jiffies * jiffy_ns(hz)

    def __str__(self) -> str:
        if self.jiffies:
            return f"{self.jiffies}jiffies"
        return format_duration(self.ns)


def parse_duration(value: object) -> Duration:
    if isinstance(value, Duration):
        return value
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            number, unit = m.groups()
            if unit.startswith("jiff"):
                if "." in number:
                    raise ValueError(f"expected a whole number of jiffies, got {_show(value)}")
                # A jiffy is at most 1s (HZ >= 1): this bound keeps to_ns() within KTIME_MAX.
                n = int(number) if len(number) <= _MAX_DIGITS else None
                if n is None or n > KTIME_MAX // NSEC_PER_SEC:
                    raise ValueError(f"expected at most {KTIME_MAX // NSEC_PER_SEC} jiffies, "
                                     f"got {_show(value)}")
                return Duration(jiffies=n)
            ns = _exact(number, _DURATION_UNITS[unit])
            if ns is None or ns > KTIME_MAX:
                raise ValueError(f"expected a duration of at most {KTIME_MAX}ns (KTIME_MAX, "
                                 f"about 292 years), got {_show(value)}")
            return Duration(ns=ns)
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return Duration()
    raise ValueError(f"expected {DURATION_HINT}, got {_show(value)}")


def parse_rate(value: object) -> int:
    """Bytes per second."""
    if isinstance(value, str) and value.strip().endswith("/s"):
        try:
            rate = parse_size(value.strip()[:-2])
        except ValueError:
            pass
        else:
            if rate > 0:
                return rate
    raise ValueError(f"expected {RATE_HINT} (more than 0, at most 4PiB/s), got {_show(value)}")


def jiffy_ns(hz: int) -> int:
    return NSEC_PER_SEC // hz


def pages(nbytes: int) -> int:
    """Pages needed to hold nbytes (allocations round up to whole pages)."""
    return -(-nbytes // PAGE_SIZE)


def kb(npages: int) -> int:
    """The kernel's K(): pages to KiB."""
    return npages * (PAGE_SIZE // 1024)


def seconds(ns: int) -> float:
    """Virtual nanoseconds as the float seconds written to the event log."""
    return ns / NSEC_PER_SEC


def format_size(nbytes: int) -> str:
    for unit, mult in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= mult and nbytes % mult == 0:
            return f"{nbytes // mult}{unit}"
    return f"{nbytes}B"


def format_duration(ns: int) -> str:
    for unit, mult in (("s", NSEC_PER_SEC), ("ms", 1_000_000), ("us", 1_000)):
        if ns >= mult and ns % mult == 0:
            return f"{ns // mult}{unit}"
    return f"{ns}ns"
