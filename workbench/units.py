"""Sizes, durations and rates as the config language writes them.

Sizes follow the kernel's memparse(): binary multipliers whatever the
spelling, so "1GB" is 1 GiB.  Durations are kept in integer nanoseconds so
that sums of virtual time are exact (10 x 100ms is exactly 1s); "jiffies"
stay symbolic until the machine's HZ is known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PAGE_SIZE = 4096
NSEC_PER_SEC = 1_000_000_000

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
        if value < 0:
            raise ValueError(f"expected a size of at least 0, got {value}")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            return round(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    raise ValueError(f"expected {SIZE_HINT}, got {value!r}")


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
                    raise ValueError(f"expected a whole number of jiffies, got {value!r}")
                return Duration(jiffies=int(number))
            return Duration(ns=round(float(number) * _DURATION_UNITS[unit]))
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return Duration()
    raise ValueError(f"expected {DURATION_HINT}, got {value!r}")


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
    raise ValueError(f"expected {RATE_HINT} (more than 0), got {value!r}")


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
