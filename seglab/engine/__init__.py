"""The training engine: mmengine's ``Runner`` with seglab's hooks, optim wrapper and
resumable loop. ``runner`` holds the train/test entry points the CLI calls;
``checkpoint``, ``resume``, ``fast_resume`` and ``rng`` are what ``--resume`` rests on.
Importing this package registers its classes."""

from seglab.engine.fast_resume import ResumableInfiniteSampler, ResumableIterBasedTrainLoop
from seglab.engine.hooks import (
                                 ClassMetricsHook,
                                 NonFiniteLossHook,
                                 PretrainedCoverageHook,
                                 RNGStateHook,
)
from seglab.engine.optim_wrapper import SkipNonFiniteOptimWrapper
from seglab.engine.param_groups import StepJoinedGroupsConstructor

__all__ = ["ClassMetricsHook", "NonFiniteLossHook", "PretrainedCoverageHook", "RNGStateHook",
           "ResumableInfiniteSampler", "ResumableIterBasedTrainLoop",
           "SkipNonFiniteOptimWrapper", "StepJoinedGroupsConstructor"]
