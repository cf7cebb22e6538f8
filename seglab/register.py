"""Registers seglab into mmengine/mmseg; configs pull it in with ``custom_imports``.

``custom_imports = dict(imports=['seglab.register'], allow_failed_imports=False)``
"""

# Importing a package registers what it defines: hooks, the NaN-skipping optim wrapper,
# the resumable loop and sampler (engine); ClassIoUMetric (evaluation); FocalLoss with a
# PyTorch path (models); CPUAwareDDP (launch.distributed).
from seglab import engine, evaluation, models  # noqa: F401
from seglab.config import memo
from seglab.data import bad_samples, transforms  # noqa: F401  (GuardedLoad, CountingRandomCrop)
from seglab.engine.checkpoint import install_safe_local_loader
from seglab.launch import distributed  # noqa: F401
from seglab.weights.remote import install_safe_remote_loaders

install_safe_local_loader()
install_safe_remote_loaders()  # URLs, open-mmlab://, torchvision://: the same allow-list
memo.install()  # yapf once per config text, mmseg:: package look-ups once per process
