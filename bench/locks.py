"""One lock mechanism for every file several processes may work on at once: a record being run, a cached reference
policy being trained, a dataset being downloaded; and one check that a folder the suite writes can be written.

A lock is an ``flock`` on a lock file beside what it protects, holding the holder's pid and host for the others'
messages. The kernel releases an flock when its process dies, so a killed holder leaves no stale lock: the next
process takes it over at once. The holder removes the lock file before releasing it, so nothing is left behind; a
process that was waiting on the removed file sees that it is gone and locks the new one, so two processes never both
hold "the" lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path


class FolderError(ValueError):
    """A folder the suite must write in (results, a cache) is a file or cannot be written."""


def writable_folder(path: Path, named: str, fix: str) -> Path:
    """``path``, created if missing, once a file can be made in it; else :class:`FolderError` in one line: ``named``
    (how the user gave it: ``--out x``, ``BENCH_DATA_DIR=x``), what is wrong, then ``fix``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FolderError(f"{named} is a file; {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise FolderError(f"{named}: cannot write there ({e.strerror or e}); {fix}") from None
    return path


class LockHeld(RuntimeError):
    """Another process holds the lock; ``holder`` says which ("process 123 on node7")."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


@contextlib.contextmanager
def file_lock(path: Path, wait: bool = True, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock file ``path`` while the block runs. Held by another process: raise :class:`LockHeld` at once
    (``wait`` False), or call ``on_wait(holder)`` once and wait for it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    told = False
    while True:
        f = open(path, "a+")  # noqa: SIM115 - held past this block: closed in the finally below
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(f)
            if not wait:
                f.close()
                raise LockHeld(holder) from None
            if on_wait is not None and not told:
                on_wait(holder)
                told = True
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(f.fileno()).st_ino:
            break
        f.close()  # its last holder removed the file we locked: lock the one that is there now
    try:
        f.truncate(0)
        f.write(f"process {os.getpid()} on {platform.node()}")
        f.flush()
        yield
    finally:
        path.unlink(missing_ok=True)  # while still holding it (see the module docstring)
        f.close()


def _holder(f) -> str:
    """Who holds the lock of the open lock file ``f``: what it wrote there (it writes right after locking)."""
    for _ in range(20):
        f.seek(0)
        if text := f.read().strip():
            return text
        time.sleep(0.025)
    return "another process"
