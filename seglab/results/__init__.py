"""What a run produced, read back: per-class records (``records``), the recorded and reference
results of configs/ (``metafile``), ``report``, ``compare``, ``infer`` and their ``render``ing."""
