"""How much of a model the pretrained checkpoint actually filled, said before step 1.

mmengine loads pretrained weights with ``strict=False`` and reports problems as
one long "missing keys" warning that scrolls away (seed 003: torchvision's
ResNet-50 into a ResNetV1c leaves the deep stem random). This compares every
parameter of the target module with the checkpoint after initialisation: a
parameter counts as loaded only if the checkpoint holds the same name, the same
shape and the same values. The report names the modules left out and why;
below a threshold the run stops before the first iteration.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import nn

from seglab.errors import UserError

DEFAULT_MIN_COVERAGE = 0.9
SHOWN_MODULES = 8


class PretrainedCoverageError(UserError):
    """Too little of the model came from the pretrained checkpoint."""


@dataclass
class Coverage:
    source: str
    target: str  # "backbone" or "model"
    loaded: int = 0  # parameter elements
    total: int = 0
    missing: list[str] = field(default_factory=list)  # not in the checkpoint
    mismatched: list[str] = field(default_factory=list)  # in it, other shape
    unchanged: list[str] = field(default_factory=list)  # in it, same shape, values not loaded
    unused: int = 0  # checkpoint tensors nothing took

    @property
    def fraction(self) -> float:
        return self.loaded / self.total if self.total else 1.0

    def summary(self) -> str:
        lines = [f"pretrained coverage: {self.fraction:.1%} of the {self.target}'s parameters "
                 f"({self.loaded:,}/{self.total:,} values) loaded from {self.source}; "
                 f"{self.unused} checkpoint tensor(s) unused"]
        for why, names in (("missing from the checkpoint", self.missing),
                           ("shape differs", self.mismatched),
                           ("same shape but not loaded", self.unchanged)):
            if names:
                modules = _modules(names)
                shown = ", ".join(modules[:SHOWN_MODULES])
                more = f" and {len(modules) - SHOWN_MODULES} more" if len(modules) > SHOWN_MODULES \
                    else ""
                lines.append(f"  not loaded ({why}): {shown}{more}")
        return "\n".join(lines)


def _modules(names: list[str]) -> list[str]:
    """Parameter names grouped by their module (``stem.0.weight`` -> ``stem.0``)."""
    return list(OrderedDict.fromkeys(name.rsplit(".", 1)[0] for name in names))


def checkpoint_state_dict(source: str, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors mmengine would load from ``source``, keyed as it keys them."""
    from mmengine.runner import CheckpointLoader

    return tensors(CheckpointLoader.load_checkpoint(source, map_location="cpu"), prefix)


def tensors(checkpoint: object, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint as mmengine keys them (``state_dict`` unwrapped,
    ``module.`` stripped), under ``prefix`` only when given (the prefix removed)."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else {}
    state = {re.sub(r"^module\.", "", k): v for k, v in state.items()
             if isinstance(v, torch.Tensor)}
    if prefix:
        prefix = prefix if prefix.endswith(".") else prefix + "."
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def measure_coverage(module: nn.Module, state: dict[str, torch.Tensor], source: str,
                     target: str) -> Coverage:
    """Compare ``module``'s parameters, after initialisation, with the checkpoint's tensors."""
    cov = Coverage(source, target)
    used = set()
    for name, param in module.named_parameters():
        cov.total += param.numel()
        saved = state.get(name)
        if saved is None:
            cov.missing.append(name)
        elif saved.shape != param.shape:
            cov.mismatched.append(name)
            used.add(name)
        elif torch.equal(saved.to(param.dtype), param.detach().cpu()):
            cov.loaded += param.numel()
            used.add(name)
        else:
            cov.unchanged.append(name)
            used.add(name)
    buffers = {name for name, _ in module.named_buffers()}
    cov.unused = len(set(state) - used - buffers)
    return cov


def prefix_hint(module: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """When nothing matched: does the checkpoint carry a prefix the module lacks?"""
    names = {name for name, _ in module.named_parameters()}
    for key in state:
        head, _, rest = key.partition(".")
        if rest in names:
            return f" The checkpoint's keys start with '{head}.': set init_cfg.prefix='{head}.'."
    return ""
