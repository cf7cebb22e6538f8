"""Starting runs: rank and world size as any launcher announces them (``env``), CPU process
groups and launcher-bound ranks (``distributed``), whether the GPUs are usable (``device``),
detached tmux sessions with the caller's environment (``tmux``)."""
