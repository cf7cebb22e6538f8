"""The machine under seglab: the pinned install and mmcv build (``install``), which mmcv ops
are compiled (``mmcv_ops``), the offline kit (``kit``) and the prepared GPU check (``gpu_check``).
Importing this package (and ``install``) needs no torch: it runs before torch is installed."""
