"""Flatten and diff resolved configs (``seglab config diff``, resume reports, compare)."""

from __future__ import annotations

from typing import Any

from mmengine.config import Config

MISSING = "<absent>"


def flatten_config(node: Any, prefix: str = "") -> dict[str, Any]:
    """Resolved config as ``{"optim_wrapper.optimizer.lr": 6e-05, "param_scheduler.0.end": 20}``."""
    if isinstance(node, Config):
        node = node.to_dict()
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in node):
        items = enumerate(node)
    else:
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten_config(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def diff_configs(a: Config, b: Config) -> list[tuple[str, Any, Any]]:
    """``(key, value in a, value in b)`` for every resolved field that differs."""
    flat_a, flat_b = flatten_config(a), flatten_config(b)
    keys = sorted(set(flat_a) | set(flat_b))
    return [(k, flat_a.get(k, MISSING), flat_b.get(k, MISSING)) for k in keys
            if flat_a.get(k, MISSING) != flat_b.get(k, MISSING)]
