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


def io_allowed(gfp: int) -> bool:
    return bool(gfp & __GFP_IO)


def kswapd_reclaim(gfp: int) -> bool:
    return bool(gfp & __GFP_KSWAPD_RECLAIM)


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


# -- printing a mask as a kernel of each era printed it --------------------------------

# 4.6 include/trace/events/mmflags.h __def_gfpflag_names (4.5 and 4.6 share the bit
# values), matched in order by lib/vsprintf.c format_flags() for %pGg.
_NAMES_4_6 = [
    (0x352ca, "GFP_TRANSHUGE"), (0x24200ca, "GFP_HIGHUSER_MOVABLE"),
    (0x24200c2, "GFP_HIGHUSER"), (0x24200c0, "GFP_USER"), (0x24000d0, "GFP_TEMPORARY"),
    (0x25000c0, "GFP_KERNEL_ACCOUNT"), (0x24000c0, "GFP_KERNEL"), (0x2400040, "GFP_NOFS"),
    (0x2080020, "GFP_ATOMIC"), (0x2400000, "GFP_NOIO"), (0x2000000, "GFP_NOWAIT"),
    (0x1, "GFP_DMA"), (0x2, "__GFP_HIGHMEM"), (0x4, "GFP_DMA32"), (0x20, "__GFP_HIGH"),
    (0x80000, "__GFP_ATOMIC"), (0x40, "__GFP_IO"), (0x80, "__GFP_FS"), (0x100, "__GFP_COLD"),
    (0x200, "__GFP_NOWARN"), (0x400, "__GFP_REPEAT"), (0x800, "__GFP_NOFAIL"),
    (0x1000, "__GFP_NORETRY"), (0x4000, "__GFP_COMP"), (0x8000, "__GFP_ZERO"),
    (0x10000, "__GFP_NOMEMALLOC"), (0x2000, "__GFP_MEMALLOC"), (0x20000, "__GFP_HARDWALL"),
    (0x40000, "__GFP_THISNODE"), (0x10, "__GFP_RECLAIMABLE"), (0x8, "__GFP_MOVABLE"),
    (0x100000, "__GFP_ACCOUNT"), (0x200000, "__GFP_NOTRACK"), (0x1000000, "__GFP_WRITE"),
    (0x2400000, "__GFP_RECLAIM"), (0x400000, "__GFP_DIRECT_RECLAIM"),
    (0x2000000, "__GFP_KSWAPD_RECLAIM"), (0x800000, "__GFP_OTHER_NODE"),
]

# 6.19 include/linux/gfp_types.h (x86-64, no LOCKDEP): each 4.5 bit's 6.19 value; bits
# that no longer exist (__GFP_COLD, __GFP_ATOMIC, __GFP_NOTRACK, __GFP_OTHER_NODE) drop,
# __GFP_REPEAT became __GFP_RETRY_MAYFAIL (4.13).
_BITS_6_19 = {
    0x1: 0x1, 0x2: 0x2, 0x4: 0x4, 0x8: 0x8, 0x10: 0x10, 0x20: 0x20, 0x40: 0x40, 0x80: 0x80,
    0x200: 0x2000, 0x400: 0x4000, 0x800: 0x8000, 0x1000: 0x10000, 0x2000: 0x20000,
    0x4000: 0x40000, 0x8000: 0x100, 0x10000: 0x80000, 0x20000: 0x100000, 0x40000: 0x200000,
    0x100000: 0x400000, 0x400000: 0x400, 0x1000000: 0x1000, 0x2000000: 0x800,
}

# 6.19 include/trace/events/mmflags.h __def_gfpflag_names, in order.
_NAMES_6_19 = [
    (0x1c24ca, "GFP_TRANSHUGE"), (0x1c20ca, "GFP_TRANSHUGE_LIGHT"),
    (0x100cca, "GFP_HIGHUSER_MOVABLE"), (0x100cc2, "GFP_HIGHUSER"), (0x100cc0, "GFP_USER"),
    (0x400cc0, "GFP_KERNEL_ACCOUNT"), (0xcc0, "GFP_KERNEL"), (0xc40, "GFP_NOFS"),
    (0x820, "GFP_ATOMIC"), (0xc00, "GFP_NOIO"), (0x2800, "GFP_NOWAIT"), (0x1, "GFP_DMA"),
    (0x4, "GFP_DMA32"), (0xc00, "__GFP_RECLAIM"), (0x1, "__GFP_DMA"), (0x2, "__GFP_HIGHMEM"),
    (0x4, "__GFP_DMA32"), (0x8, "__GFP_MOVABLE"), (0x10, "__GFP_RECLAIMABLE"),
    (0x20, "__GFP_HIGH"), (0x40, "__GFP_IO"), (0x80, "__GFP_FS"), (0x100, "__GFP_ZERO"),
    (0x400, "__GFP_DIRECT_RECLAIM"), (0x800, "__GFP_KSWAPD_RECLAIM"), (0x1000, "__GFP_WRITE"),
    (0x2000, "__GFP_NOWARN"), (0x4000, "__GFP_RETRY_MAYFAIL"), (0x8000, "__GFP_NOFAIL"),
    (0x10000, "__GFP_NORETRY"), (0x20000, "__GFP_MEMALLOC"), (0x40000, "__GFP_COMP"),
    (0x80000, "__GFP_NOMEMALLOC"), (0x100000, "__GFP_HARDWALL"), (0x200000, "__GFP_THISNODE"),
    (0x400000, "__GFP_ACCOUNT"),
]


def _format_flags(mask: int, names: list[tuple[int, str]]) -> str:
    """lib/vsprintf.c format_flags(): names matched in order, bits left in hex."""
    out = []
    for bits, name in names:
        if mask and mask & bits == bits:
            out.append(name)
            mask &= ~bits
    if mask:
        out.append(f"0x{mask:x}")
    return "|".join(out)


def to_6_19(mask: int) -> int:
    return sum(new for old, new in _BITS_6_19.items() if mask & old)


def show(mask: int, names: bool, modern: bool) -> str:
    """A mask as the kernel printed it: 4.5 "0x%x"; 4.6 "%#x(%pGg)"; 6.19 the same
    with 6.19's bit values (the kernel's %#x prints 0 as 0x0)."""
    if modern:
        mask = to_6_19(mask)
        return f"0x{mask:x}({_format_flags(mask, _NAMES_6_19)})"
    if names:
        return f"0x{mask:x}({_format_flags(mask, _NAMES_4_6)})"
    return f"0x{mask:x}"
