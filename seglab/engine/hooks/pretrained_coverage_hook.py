"""``PretrainedCoverageHook``: say (and enforce) before step 1 how much of the model the
pretrained checkpoint filled; the measurement is :mod:`seglab.weights.coverage`."""

from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from seglab.config.walk import pretrained_init
from seglab.engine.runner_fields import runner_arg
from seglab.weights.coverage import (
    DEFAULT_MIN_COVERAGE,
    Coverage,
    PretrainedCoverageError,
    checkpoint_state_dict,
    measure_coverage,
    prefix_hint,
)


@HOOKS.register_module()
class PretrainedCoverageHook(Hook):
    """Report (and enforce) how much of the model the pretrained weights filled.

    Fine-tunes (``load_from``) are measured over the whole model, fresh runs over
    the backbone's ``init_cfg`` checkpoint; resumed runs are skipped (their
    weights come from the run itself).

    Args:
        min_coverage (float): the fraction of the measured parameters (model or
            backbone) the checkpoint must fill, else training stops before step 1
            with ``PretrainedCoverageError``; 0 only reports. Defaults to 0.9
            (``seglab.weights.coverage.DEFAULT_MIN_COVERAGE``).
    """

    priority = "VERY_LOW"

    def __init__(self, min_coverage: float = DEFAULT_MIN_COVERAGE) -> None:
        self.min_coverage = min_coverage
        self.coverage: Coverage | None = None

    def before_train(self, runner) -> None:
        if runner_arg(runner, "resume"):
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        load_from = runner_arg(runner, "load_from")
        if load_from:
            target, name, (source, prefix) = model, "model", (load_from, None)
        else:
            backbone = getattr(model, "backbone", None)
            init = pretrained_init(backbone) if backbone is not None else None
            if init is None:
                return  # random initialisation: nothing to cover
            target, name = backbone, "backbone"
            source, prefix = init["checkpoint"], init.get("prefix")
        state = checkpoint_state_dict(source, prefix)
        self.coverage = cov = measure_coverage(target, state, source, name)
        message = cov.summary()
        if cov.fraction < self.min_coverage:
            raise PretrainedCoverageError(
                f"{message}\nOnly {cov.fraction:.1%} of the {name} came from {source} "
                f"(minimum {self.min_coverage:.0%}): the checkpoint does not fit this "
                f"architecture.{prefix_hint(target, state)} Fix: use weights made for this "
                f"{name} type, or pass --min-pretrained-coverage 0 to train anyway.")
        print_log(f"seglab: {message}", logger="current")
