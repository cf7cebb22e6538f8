"""One training run per work dir at a time.

Two ``seglab train`` runs started into one work dir (a command pasted into two tmux panes, a
job submitted twice, a ``--resume`` while the first run still trains) both train and write
``epoch_N.pth`` and ``last_checkpoint`` in turn: the next ``--resume`` continues a mix of
the two. The run's first rank holds an exclusive ``flock`` on ``WORK_DIR/.seglab-train.lock``
from after the data check (read from the first run's cache) until it returns, before anything
is built; a second run is refused with who holds it. The kernel releases the lock when its
holder exits in any way, ``kill -9`` and a preempted node included, so no stale lock survives
the run (a lock file the holder left behind is just a file). On a file system without locks
the run goes on unlocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path

from seglab.errors import UserError

LOCK_NAME = ".seglab-train.lock"
# A run killed a moment ago holds its lock until the kernel has closed its files (seconds for
# a process with large GPU or pinned mappings); a requeued job's previous node may hold it on
# a shared disk until the server's lease ends (NFSv4: about 90 s).
LOCK_WAIT_S = 5.0
LOCK_WAIT_REQUEUED_S = 180.0
# Descriptors of the locks this process holds. A forked child (a DataLoader worker) gets a
# copy of each, and the flock lasts until every copy is closed: a worker that outlives a
# ``kill -9`` of its run by a few seconds would refuse the ``--resume`` that follows.
_HELD: set[int] = set()


def _close_in_child() -> None:
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)  # the child's copy only: the parent keeps its lock
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


class WorkDirBusy(UserError):
    """Another run holds the work dir."""


class WorkDirLock:
    """The held lock of one work dir; ``release()`` (or the process's exit) ends it."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            _HELD.discard(self._fd)
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def lock_work_dir(work_dir: str | os.PathLike[str], wait_s: float = 0.0) -> WorkDirLock:
    """Take ``work_dir``'s lock (creating the folder) or raise ``WorkDirBusy`` naming its holder.

    Args:
        work_dir (str | PathLike): the run's work dir.
        wait_s (float): how long to keep trying while another process holds it (saying so
            once). Defaults to 0.
    """
    try:
        import fcntl
    except ImportError:  # not a POSIX system: nothing to lock with
        return WorkDirLock(None)
    path = Path(work_dir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    deadline, said = time.monotonic() + wait_s, False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise
                if not said and wait_s >= 30:  # a wait of seconds is not worth a line
                    print(f"seglab: work dir {str(work_dir)!r} is held by {_holder(fd)}; "
                          f"waiting up to {wait_s:.0f} s for it", file=sys.stderr, flush=True)
                    said = True
                time.sleep(0.25)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise WorkDirBusy(
            f"work dir {str(work_dir)!r} is in use by another training run ({holder}): two "
            "runs in one work dir interleave their checkpoints and last_checkpoint. Fix: wait "
            "for that run to end or stop it (then --resume continues it), or pass --work-dir "
            "NEW_DIR for a run of its own.") from None
    except OSError:  # ENOLCK/ENOSYS/EOPNOTSUPP: a file system without locks
        os.close(fd)
        return WorkDirLock(None)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
            "command": " ".join(sys.argv)}
    with contextlib.suppress(OSError):  # who holds it is for the message only
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
    _HELD.add(fd)
    return WorkDirLock(fd)


def _holder(fd: int) -> str:
    """Who the lock file says holds it: pid, host, since when, the command."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"pid {info['pid']} on {info['host']} since {since}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "its process did not say who it is"
