"""GFP flags with their Linux 4.5 values (include/linux/gfp.h).

Only the bits the allocator model looks at carry behaviour; the others are
kept so that `gfp_mask` in the event log reads exactly as 4.5 printed it
("gfp_mask=0x%x", no flag names until 4.6).
"""

from __future__ import annotations

__GFP_HIGHMEM = 0x02
__GFP_MOVABLE = 0x08
__GFP_HIGH = 0x20
__GFP_IO = 0x40
__GFP_FS = 0x80
__GFP_NOWARN = 0x200
__GFP_REPEAT = 0x400
__GFP_NOFAIL = 0x800
__GFP_NORETRY = 0x1000
__GFP_MEMALLOC = 0x2000
__GFP_ZERO = 0x8000
__GFP_NOMEMALLOC = 0x10000
__GFP_HARDWALL = 0x20000
__GFP_ATOMIC = 0x80000
__GFP_DIRECT_RECLAIM = 0x400000
__GFP_KSWAPD_RECLAIM = 0x2000000
__GFP_RECLAIM = __GFP_DIRECT_RECLAIM | __GFP_KSWAPD_RECLAIM

GFP_ATOMIC = __GFP_HIGH | __GFP_ATOMIC | __GFP_KSWAPD_RECLAIM
GFP_NOWAIT = __GFP_KSWAPD_RECLAIM
GFP_NOIO = __GFP_RECLAIM
GFP_NOFS = __GFP_RECLAIM | __GFP_IO
GFP_KERNEL = __GFP_RECLAIM | __GFP_IO | __GFP_FS
GFP_USER = __GFP_RECLAIM | __GFP_IO | __GFP_FS | __GFP_HARDWALL
GFP_HIGHUSER = GFP_USER | __GFP_HIGHMEM
GFP_HIGHUSER_MOVABLE = GFP_HIGHUSER | __GFP_MOVABLE

NAMES = {
    "GFP_ATOMIC": GFP_ATOMIC, "GFP_NOWAIT": GFP_NOWAIT, "GFP_NOIO": GFP_NOIO,
    "GFP_NOFS": GFP_NOFS, "GFP_KERNEL": GFP_KERNEL, "GFP_USER": GFP_USER,
    "GFP_HIGHUSER": GFP_HIGHUSER, "GFP_HIGHUSER_MOVABLE": GFP_HIGHUSER_MOVABLE,
    "__GFP_HIGH": __GFP_HIGH, "__GFP_IO": __GFP_IO, "__GFP_FS": __GFP_FS,
    "__GFP_NOWARN": __GFP_NOWARN, "__GFP_REPEAT": __GFP_REPEAT,
    "__GFP_NOFAIL": __GFP_NOFAIL, "__GFP_NORETRY": __GFP_NORETRY,
    "__GFP_ZERO": __GFP_ZERO, "__GFP_NOMEMALLOC": __GFP_NOMEMALLOC,
    "__GFP_DIRECT_RECLAIM": __GFP_DIRECT_RECLAIM, "__GFP_KSWAPD_RECLAIM": __GFP_KSWAPD_RECLAIM,
}


def parse_gfp(value: object) -> int:
    """'GFP_KERNEL|__GFP_NOFAIL' -> its 4.5 mask."""
    if isinstance(value, str) and value.strip():
        parts = [p.strip() for p in value.split("|")]
        unknown = [p for p in parts if p not in NAMES]
        if not unknown:
            mask = 0
            for p in parts:
                mask |= NAMES[p]
            return mask
    raise ValueError(f"expected GFP flags joined by '|' such as \"GFP_KERNEL|__GFP_NOFAIL\" "
                     f"(known: {', '.join(NAMES)}), got {value!r}")


# Predicates: the dunder names above must not be spelled inside class bodies,
# where Python would mangle them.


def can_direct_reclaim(gfp: int) -> bool:
    return bool(gfp & __GFP_DIRECT_RECLAIM)


def nofail(gfp: int) -> bool:
    return bool(gfp & __GFP_NOFAIL)


def fs_allowed(gfp: int) -> bool:
    """__GFP_FS: only such allocations may invoke the OOM killer in 4.5."""
    return bool(gfp & __GFP_FS)


def noretry(gfp: int) -> bool:
    return bool(gfp & __GFP_NORETRY)


def nowarn(gfp: int) -> bool:
    return bool(gfp & __GFP_NOWARN)


def high(gfp: int) -> bool:
    """__GFP_HIGH: ALLOC_HIGH lowers the watermark by half."""
    return bool(gfp & __GFP_HIGH)


def atomic(gfp: int) -> bool:
    """__GFP_ATOMIC: ALLOC_HARDER lowers it by a further quarter."""
    return bool(gfp & __GFP_ATOMIC)


def nomemalloc(gfp: int) -> bool:
    """__GFP_NOMEMALLOC: never use the emergency reserves."""
    return bool(gfp & __GFP_NOMEMALLOC)
