"""Files several processes share: written whole or not at all, locked one writer at a time.

Checkpoints, the data-check cache and the bad-sample record are written by one of many
processes (ranks, dataloader workers) and read by others, on local disks and on shared
file systems. A writer puts the bytes in a temporary file next to the target and renames
it over the target, so a reader (or a crash) sees the old or the new file, never half of
one. The file gets the permissions a plain ``open()`` would give (``mkstemp`` makes them
0600, which locks teammates out of a shared data root or work dir). The folder lock
serialises read-modify-write among processes; where the file system has no locks (some
Lustre/FUSE mounts raise ENOSYS/ENOLCK) it runs unlocked rather than failing the run.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO


def _umask() -> int:
    """This process's umask: from ``/proc`` where Linux shows it, else set and put back at
    once (a file another thread creates in between gets 0o022)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w",
                 fsync: bool = False) -> Iterator[IO]:
    """``open(path, mode)`` that lands whole: write the yielded handle; on success it
    replaces ``path`` (mode ``0666 & ~umask``), on any error it is removed.

    Args:
        path (str | PathLike): the file to write; its folder is created if missing.
        mode (str): ``'w'`` (text) or ``'wb'`` (bytes). Defaults to ``'w'``.
        fsync (bool): flush the bytes to disk before the rename (checkpoints).
            Defaults to False.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with contextlib.suppress(OSError):  # a file system that refuses chmod keeps 0600
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str],
                on_wait: Callable[[], None] | None = None) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``folder`` among processes; yields whether it is held
    (False where locking is not possible: no ``fcntl``, or a file system without locks).

    Args:
        folder (str | PathLike): the folder to lock (created if missing).
        on_wait (callable, optional): called once if another process holds the lock,
            before waiting for it (e.g. to say so). Defaults to None.
    """
    try:
        import fcntl

        Path(folder).mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                held = True
            except OSError:  # the lock's holder is on a file system that then refuses us
                held = False
        except OSError:  # ENOSYS/ENOLCK/EOPNOTSUPP: this file system has no locks
            held = False
        yield held
    finally:
        os.close(fd)  # releases the lock
