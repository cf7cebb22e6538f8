"""``seglab weights inspect FILE [--config CONFIG]``: what a checkpoint holds and what it fills.

Before a week of training starts from a file, the questions are: which layout is it
(mmseg's, Hugging Face's, NVlabs', a whole training checkpoint), how many tensors of which
dtype under which prefixes, and, for a config, which of the model's modules it would fill
(the same measurement ``PretrainedCoverageHook`` makes before step 1, made now).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import torch

from seglab.errors import UserError
from seglab.weights.coverage import Coverage, measure_coverage, tensors

_LAYOUTS = (  # (key pattern, what a file whose keys match it is), first match wins
    (r"^(decode_head|auxiliary_head)\.", "a whole mmseg model (backbone + heads)"),
    (r"^(backbone\.)?layers\.0\.0\.projection\.", "mmseg MixVisionTransformer (MiT) weights"),
    (r"^(segformer\.)?encoder\.patch_embeddings\.", "Hugging Face SegFormer/MiT weights: "
                                                    "convert with `seglab weights convert`"),
    (r"^patch_embed1\.", "NVlabs MiT weights: convert with `seglab weights convert`"),
    (r"^backbone\.", "mmseg backbone weights"),
    (r"^(stem|conv1)\.", "a ResNet backbone"),
)


def describe(path: str) -> list[str]:
    """Lines saying what ``path`` holds: layout, tensors, prefixes, dtypes, size, meta."""
    from seglab.engine.checkpoint import load_checkpoint_file

    file = Path(path)
    if not file.is_file():
        raise UserError(f"{path}: no such file (`seglab weights fetch NAME` or `seglab weights "
                        "convert SRC` makes one)")
    # seglab's allow-listed weights_only load: training checkpoints (message hub, optimizer)
    # load too; an unsafe or corrupt file gets its own message
    raw = load_checkpoint_file(str(file), map_location="cpu")
    wrapper = sorted(raw) if isinstance(raw, dict) and "state_dict" in raw else []
    state = tensors(raw)
    layout = next((what for pattern, what in _LAYOUTS
                   if any(re.match(pattern, k) for k in state)), "unrecognised layout")
    if "optimizer" in wrapper or "message_hub" in wrapper:
        layout = f"an mmengine training checkpoint ({layout}); resume it or use load_from"
    values = sum(t.numel() for t in state.values())
    size = sum(t.numel() * t.element_size() for t in state.values())
    dtypes = Counter(str(t.dtype).replace("torch.", "") for t in state.values())
    prefixes = Counter(k.split(".")[0] for k in state)
    lines = [f"file: {file} ({file.stat().st_size / 2**20:.1f} MiB)",
             f"layout: {layout}",
             f"tensors: {len(state)} ({values:,} values, {size / 2**20:.1f} MiB), dtype "
             + ", ".join(f"{d} x{n}" for d, n in dtypes.most_common()),
             "prefixes: " + ", ".join(f"{p}. x{n}" for p, n in prefixes.most_common(8))
             + (f" and {len(prefixes) - 8} more" if len(prefixes) > 8 else "")]
    if wrapper:
        lines.append("wrapped in: " + ", ".join(wrapper))
    meta = raw.get("meta") if isinstance(raw, dict) else None
    if isinstance(meta, dict):
        shown = {k: v for k, v in meta.items() if isinstance(v, (str, int, float)) or v is None}
        lines.append("meta: " + ", ".join(f"{k}={v}" for k, v in list(shown.items())[:8]))
    return lines


def coverage_for_config(path: str, config: str) -> Coverage:
    """Which parameters of ``config``'s model the file would fill, by name, shape and values
    once loaded: the backbone when the file is backbone weights, else the whole model."""
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    from seglab.config.loading import load_config
    from seglab.config.walk import pretrained_init, replace_types, strip_pretrained

    register_all_modules()
    cfg = load_config(config)
    prefix = (pretrained_init(cfg.model.get("backbone", {})) or {}).get("prefix")
    strip_pretrained(cfg.model)  # built random here; the file is loaded below, once
    replace_types(cfg.model, "SyncBN", "BN")  # SyncBN needs a process group to run, not here
    model = MODELS.build(cfg.model)
    from seglab.engine.checkpoint import load_checkpoint_file

    whole = tensors(load_checkpoint_file(path, map_location="cpu"))
    backbone_state = tensors(whole, prefix or "backbone") or whole
    candidates = [(model.backbone, "backbone", backbone_state), (model, "model", whole)] \
        if hasattr(model, "backbone") else [(model, "model", whole)]
    best = None
    for module, name, state in candidates:
        _load_matching(module, state)
        cov = measure_coverage(module, state, path, name)
        # the larger share wins; at equal shares the larger part (a whole model's file)
        if best is None or (cov.fraction, cov.loaded) > (best.fraction, best.loaded):
            best = cov
    return best


def _load_matching(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load the tensors whose names and shapes match, as mmengine's non-strict load does
    (a shape mismatch is reported by the coverage, not raised)."""
    own = module.state_dict()
    module.load_state_dict({k: v for k, v in state.items()
                            if k in own and own[k].shape == v.shape}, strict=False)
