"""Distributed training on CPU ranks (gloo), so multi-process runs work without GPUs.

mmengine's ``init_dist`` calls ``torch.cuda.set_device`` and its DDP wrapper
passes ``device_ids=[LOCAL_RANK]``; both fail on a CPU-only machine. seglab
starts the gloo process group itself (mmengine then skips ``init_dist``) and
wraps the model in ``CPUAwareDDP``. On GPUs neither is used.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as torch_dist
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class CPUAwareDDP(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that also accepts a module on the CPU."""

    def __init__(self, module: torch.nn.Module, **kwargs: Any) -> None:
        if all(p.device.type == "cpu" for p in module.parameters()):
            kwargs["device_ids"] = None  # torch's DDP rejects device ids for CPU modules
        super().__init__(module=module, **kwargs)


def init_cpu_process_group(timeout_s: int = 1800) -> None:
    """Join the torchrun job with gloo, from the env vars torchrun sets."""
    if torch_dist.is_initialized():
        return
    from datetime import timedelta

    torch_dist.init_process_group(
        backend="gloo",
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        timeout=timedelta(seconds=timeout_s),
    )
