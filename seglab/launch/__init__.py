"""Starting runs: CPU process groups and launcher-bound ranks (``distributed``), whether the
GPUs are usable (``device``), detached tmux sessions with the caller's environment (``tmux``)."""
