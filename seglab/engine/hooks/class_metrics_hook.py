"""``ClassMetricsHook``: the per-class record of each evaluation written to the work dir
(JSON + CSV) and logged as ``val/IoU/<class>`` scalars to every visualisation backend."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

from mmengine.hooks import Hook, LoggerHook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from seglab.evaluation.record import RECORD_DIR, write_record


@HOOKS.register_module()
class ClassMetricsHook(Hook):
    """After each validation/test: per-class JSON + CSV in the work dir, per-class scalars.

    A validation during training is named by its epoch (or iteration, when the
    ``LoggerHook`` logs metrics by iteration); a test, or a validation outside
    training, is ``final``.

    Takes no arguments: ``custom_hooks = [dict(type='ClassMetricsHook')]``.
    """

    priority = "LOW"  # after the evaluator, before nothing in particular

    def __init__(self) -> None:
        self._training = False

    def before_train(self, runner) -> None:
        self._training = True  # validations from here on are the training run's

    def after_train(self, runner) -> None:
        self._training = False

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        self._record(runner, "val", runner.val_evaluator)

    def after_test_epoch(self, runner, metrics: dict | None = None) -> None:
        self._record(runner, "test", runner.test_evaluator)

    def _position(self, runner, mode: str) -> tuple[str, int]:
        if mode == "test" or not self._training:
            return "final", 0
        logger_hook = next((h for h in runner.hooks if isinstance(h, LoggerHook)), None)
        by_epoch = getattr(logger_hook, "log_metric_by_epoch", True)
        return ("epoch", runner.epoch) if by_epoch else ("iter", runner.iter)

    def _record(self, runner, mode: str, evaluator: Any) -> None:
        for metric in getattr(evaluator, "metrics", []):
            record = getattr(metric, "last_record", None)
            if record is None:
                continue  # another metric, or a rank that did not compute
            unit, step = self._position(runner, mode)
            record = {**record, "mode": mode, unit: step}
            name = f"{mode}_{unit}_{step}" if unit != "final" else mode
            json_path, _ = write_record(record, Path(runner.work_dir) / RECORD_DIR / name)
            scalars = OrderedDict(
                (f"{mode}/{key}/{cls}", value)
                for key, values in record["per_class"].items()
                for cls, value in zip(record["classes"], values, strict=True)
                if value is not None)
            runner.visualizer.add_scalars(scalars, step=step)
            print_log(f"seglab: per-class {mode} results in {json_path} (and .csv)",
                      logger="current")
            metric.last_record = None
