"""Registers seglab into mmengine/mmseg; configs pull it in with ``custom_imports``.

``custom_imports = dict(imports=['seglab.register'], allow_failed_imports=False)``
"""

# registrations: CPUAwareDDP; FocalLoss CPU fix; NonFiniteLossHook, RNGStateHook,
# PretrainedCoverageHook; ResumableIterBasedTrainLoop + ResumableInfiniteSampler;
# ClassIoUMetric + ClassMetricsHook
from seglab import coverage, distributed, fast_resume, hooks, losses, metrics  # noqa: F401
from seglab.checkpoint import install_safe_local_loader

install_safe_local_loader()
