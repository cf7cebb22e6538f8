"""Where a run's start-up goes: seconds from the process's start to each phase of
:func:`seglab.engine.runner.train` and to the end of the first training step.

A launch pays its start-up once per rank and again after every requeue, so the log says where
it went (``StartupTimeHook`` writes the line at the first step) and ``scripts/bench_startup.py``
compares it with stock mmseg's ``tools/train.py``. Times are the process's age, read from
``/proc`` (the interpreter's own start and the imports included); elsewhere, the time since
this module was imported.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from seglab.results.status import process_start

_IMPORTED_AT = time.monotonic()


def process_age() -> float:
    """Seconds since this process started (``/proc``: 10 ms steps), else since import."""
    started = process_start(os.getpid())  # clock ticks since boot
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(uptime - int(started) / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, TypeError):  # TypeError: no /proc (started is None)
        return time.monotonic() - _IMPORTED_AT


class StartupTimeline:
    """The end of each start-up phase, as the process's age in seconds, in order."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float]] = []

    def mark(self, phase: str) -> None:
        """``phase`` ended now."""
        self.marks.append((phase, round(process_age(), 3)))

    def phases(self) -> dict[str, float]:
        """Seconds each phase took (the first: from the process's start)."""
        out, previous = {}, 0.0
        for phase, at in self.marks:
            out[phase] = round(at - previous, 3)
            previous = at
        return out

    def line(self) -> str:
        """``start-up 9.1 s to the first step: imports 4.2 s, config 1.0 s, ...``"""
        total = self.marks[-1][1] if self.marks else 0.0
        parts = ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in self.phases().items())
        return f"start-up {total:.1f} s to the first step: {parts}"


# One run per process (train() starts it anew); the hook reads it at the first step.
CURRENT = StartupTimeline()


def start() -> StartupTimeline:
    """A new timeline for the run train() is starting; its first phase, the imports, ends now."""
    global CURRENT
    CURRENT = StartupTimeline()
    CURRENT.mark("imports")
    return CURRENT
