"""Hooks seglab adds to a run, one a file (as mmengine's ``mmengine/hooks/``)."""

from seglab.engine.hooks.class_metrics_hook import ClassMetricsHook
from seglab.engine.hooks.deferred_runtime_info_hook import DeferredRuntimeInfoHook
from seglab.engine.hooks.nonfinite_loss_hook import NonFiniteLossHook
from seglab.engine.hooks.preemption_hook import PreemptionCheckpointHook
from seglab.engine.hooks.pretrained_coverage_hook import PretrainedCoverageHook
from seglab.engine.hooks.rng_state_hook import RNGStateHook
from seglab.engine.hooks.run_status_hook import RunStatusHook
from seglab.engine.hooks.startup_time_hook import StartupTimeHook

__all__ = ["ClassMetricsHook", "DeferredRuntimeInfoHook", "NonFiniteLossHook",
           "PreemptionCheckpointHook", "PretrainedCoverageHook", "RNGStateHook", "RunStatusHook",
           "StartupTimeHook"]
