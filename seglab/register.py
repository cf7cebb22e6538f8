"""Registers seglab into mmengine/mmseg; configs pull it in with ``custom_imports``.

``custom_imports = dict(imports=['seglab.register'], allow_failed_imports=False)``
"""

from seglab import distributed, losses  # noqa: F401  (CPUAwareDDP; FocalLoss CPU fix)
from seglab.checkpoint import install_safe_local_loader

install_safe_local_loader()
