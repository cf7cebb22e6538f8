"""``StartupTimeHook``: logs where the run's start-up went, once, at its first step."""

from __future__ import annotations

import json

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from seglab.engine import startup


@HOOKS.register_module()
class StartupTimeHook(Hook):
    """At the end of the first training step, logs ``seglab: start-up N s to the first step:
    imports, config, doctor, data check, runner, first step`` (from
    :data:`seglab.engine.startup.CURRENT`, which :func:`seglab.engine.runner.train` marks)
    and keeps the phases in the message hub's runtime info (``startup_seconds``).

    Takes no arguments. A resumed run reports its own start-up (its first step is the first
    after the resume).
    """

    priority = "VERY_LOW"

    def __init__(self) -> None:
        self._done = False

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self._done:
            return
        self._done = True
        timeline = startup.CURRENT
        if not timeline.marks:  # built outside train(): nothing was marked
            return
        timeline.mark("first step")
        runner.message_hub.update_info("startup_seconds", json.dumps(timeline.phases()))
        print_log(f"seglab: {timeline.line()}", logger="current")
