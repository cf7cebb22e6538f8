"""Registers seglab into mmengine/mmseg; configs pull it in with ``custom_imports``.

``custom_imports = dict(imports=['seglab.register'], allow_failed_imports=False)``
"""

from seglab import distributed  # noqa: F401  (registers CPUAwareDDP)
from seglab.checkpoint import install_safe_local_loader

install_safe_local_loader()
