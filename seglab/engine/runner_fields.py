"""The one place seglab reads a private field of mmengine's ``Runner``."""

from __future__ import annotations

from typing import Any

# The fields in which mmengine 0.10.7's ``Runner.__init__`` keeps these arguments.
_RUNNER_FIELDS = {"resume": "_resume", "load_from": "_load_from",
                  "randomness": "_randomness_cfg"}


def runner_arg(runner: Any, name: str) -> Any:
    """The ``resume``, ``load_from`` or ``randomness`` argument ``runner`` was built with.

    mmengine 0.10.7 has no public accessor for them: ``Runner`` keeps them in private
    fields. ``runner.cfg`` is no substitute: it holds them only for a runner built with
    ``Runner.from_cfg``, and is empty for ``Runner(model, work_dir, resume=True, ...)``;
    ``Runner.resume`` also updates the seed in the private ``randomness`` alone. So the
    private reads are kept here, not spread over hooks.
    """
    return getattr(runner, _RUNNER_FIELDS[name])
