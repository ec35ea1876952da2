"""Writing under `out`, and nowhere else.

Scenario and arm names are restricted to a safe alphabet (workbench/config.py),
and every directory a run writes to is checked to resolve inside `out` before
anything is made in it, so a symlinked directory cannot lead a log elsewhere.
Files are created fresh: a symlink already at a `.tmp` name is removed, never
followed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO


# Create if missing, never through a symlink, and not into child processes.
_CREATE = os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC


class OutError(Exception):
    """`out` or a directory under it cannot be used; the message says why."""


def prepare_out(out: Path) -> None:
    """Create `out` (and its parents), or say plainly why it cannot be."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutError(f"{out}: exists and is not a directory") from None
    except NotADirectoryError:
        raise OutError(f"{out}: a part of the path is a file, not a directory") from None
    except OSError as e:
        raise OutError(f"{out}: cannot create the directory: {e.strerror or e}") from None
    if not out.is_dir():
        raise OutError(f"{out}: exists and is not a directory")


def lock_out(out: Path) -> BinaryIO:
    """Hold out for this invocation: two runs writing the same logs would
    replace each other's files.  The lock goes with the returned file (and
    with the process, however it ends)."""
    path = out / ".workbench.lock"
    try:
        f = os.fdopen(os.open(path, os.O_RDWR | _CREATE, 0o644), "r+b")
    except OSError as e:
        raise OutError(f"{path}: cannot be opened: {e.strerror or e}") from None
    try:
        import fcntl
    except ImportError:                 # no flock() here: no protection either
        return f
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise OutError(f"{out}: another workbench run is writing there") from None
    return f


def contained_dir(out: Path, *parts: str) -> Path:
    """out/part/... created level by level, each checked to lie inside out
    once resolved before anything is made beneath it."""
    prepare_out(out)
    root = out.resolve()
    d = out
    for part in parts:
        d = d / part
        if not d.resolve().is_relative_to(root):
            raise OutError(f"{d}: resolves to {d.resolve()}, outside {out}")
        try:
            d.mkdir(exist_ok=True)
        except OSError as e:
            raise OutError(f"{d}: cannot create the directory: {e.strerror or e}") from None
    return d


def open_new(path: Path, buffering: int = -1) -> BinaryIO:
    """A new file at path for writing: whatever was there (a stale file, a
    symlink to somewhere else) is unlinked first, and O_EXCL | O_NOFOLLOW
    make sure nothing else is opened in its place."""
    if os.path.lexists(path):
        os.unlink(path)
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_EXCL | _CREATE, 0o644), "wb",
                     buffering=buffering)


def write_atomic(path: Path, data: bytes) -> None:
    """path.tmp written fresh, then renamed over path (rename replaces a
    symlink at path itself, never its target)."""
    tmp = path.with_name(path.name + ".tmp")
    with open_new(tmp) as f:
        f.write(data)
    os.replace(tmp, path)


def clear_logs(out: Path) -> int:
    """Remove the run logs an earlier invocation left in out
    (<scenario>/<arm>/seed-<n>.jsonl and unfinished .tmp ones), so that none
    sits beside the new ones as if it belonged to them.  Only regular files of
    that shape, inside out, go.  Returns how many."""
    removed = 0
    for pattern in ("*/*/seed-*.jsonl", "*/*/seed-*.jsonl.tmp"):
        for path in out.glob(pattern):
            if path.is_symlink() or not path.is_file():
                continue
            try:
                path.unlink()
                removed += 1
            except OSError:
                pass
    return removed
