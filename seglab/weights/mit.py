"""MiT (SegFormer's encoder) in its three spellings: mmseg's, Hugging Face's, NVlabs'.

mmseg's ``MixVisionTransformer`` names its tensors ``layers.{stage}.{0: patch embed, 1:
blocks, 2: norm}``, fuses q/k/v into ``nn.MultiheadAttention``'s ``in_proj`` and keeps the
MLP's linear layers as 1x1 convolutions. The Hugging Face port (``nvidia/mit-b*``, as
``save_pretrained`` writes it) and the NVlabs release (``mit_b*.pth``) name every tensor
differently and keep q, k and v (or q and kv) apart. Each target tensor here says where it
comes from in each source spelling; a tensor the source lacks is named, never skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

NUM_HEADS = (1, 2, 5, 8)
SR_RATIOS = (8, 4, 2, 1)
PATCH_SIZES = (7, 3, 3, 3)
STRIDES = (4, 2, 2, 2)
MLP_RATIO = 4
# mmseg's MixVisionTransformer default, as the NVlabs original trained; the Hugging Face port
# builds nn.LayerNorm with PyTorch's default 1e-5 instead (same weights, other epsilon)
MMSEG_LN_EPS = 1e-6


@dataclass(frozen=True)
class MitArch:
    """One MiT size: base width and blocks per stage (heads and sr ratios are MiT's own)."""

    name: str
    embed_dims: int
    depths: tuple[int, int, int, int]

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(self.embed_dims * heads for heads in NUM_HEADS)

    def backbone_cfg(self, ln_eps: float = MMSEG_LN_EPS) -> dict:
        """mmseg's backbone config for this size (eval: no dropout, no drop path)."""
        return dict(type="MixVisionTransformer", in_channels=3, embed_dims=self.embed_dims,
                    num_stages=4, num_layers=list(self.depths), num_heads=list(NUM_HEADS),
                    patch_sizes=list(PATCH_SIZES), strides=list(STRIDES),
                    sr_ratios=list(SR_RATIOS), out_indices=(0, 1, 2, 3), mlp_ratio=MLP_RATIO,
                    qkv_bias=True, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0,
                    norm_cfg=dict(type="LN", eps=ln_eps))

    def describe(self) -> str:
        return f"{self.name} (widths {list(self.widths)}, blocks {list(self.depths)})"


# SegFormer paper, Table 6; the same numbers as mmseg's segformer_mit-b* configs
ARCHS = {arch.name: arch for arch in (
    MitArch("mit-b0", 32, (2, 2, 2, 2)),
    MitArch("mit-b1", 64, (2, 2, 2, 2)),
    MitArch("mit-b2", 64, (3, 4, 6, 3)),
    MitArch("mit-b3", 64, (3, 4, 18, 3)),
    MitArch("mit-b4", 64, (3, 8, 27, 3)),
    MitArch("mit-b5", 64, (3, 6, 40, 3)),
)}


def arch_named(name: str) -> MitArch | None:
    """``mit-b2``, ``mit_b2``, ``b2`` -> the size; None when unknown."""
    key = name.lower().replace("_", "-")
    key = key if key.startswith("mit-") else f"mit-{key}"
    return ARCHS.get(key)


def arch_of(widths: tuple[int, ...], depths: tuple[int, ...]) -> MitArch | None:
    for arch in ARCHS.values():
        if arch.widths == tuple(widths) and arch.depths == tuple(depths):
            return arch
    return None


# (mmseg target, Hugging Face source, NVlabs source) per tensor kind; {i} stage from 0,
# {s} stage from 1 (NVlabs), {j} block. A tuple of sources is concatenated along dim 0
# (q, k, v -> in_proj).
_PATCH = [
    ("layers.{i}.0.projection.{p}", "encoder.patch_embeddings.{i}.proj.{p}",
     "patch_embed{s}.proj.{p}"),
    ("layers.{i}.0.norm.{p}", "encoder.patch_embeddings.{i}.layer_norm.{p}",
     "patch_embed{s}.norm.{p}"),
    ("layers.{i}.2.{p}", "encoder.layer_norm.{i}.{p}", "norm{s}.{p}"),
]
_HF_ATTN = "encoder.block.{i}.{j}.attention"
_BLOCK = [
    ("layers.{i}.1.{j}.norm1.{p}", "encoder.block.{i}.{j}.layer_norm_1.{p}",
     "block{s}.{j}.norm1.{p}"),
    ("layers.{i}.1.{j}.attn.attn.in_proj_{p}",
     (f"{_HF_ATTN}.self.query.{{p}}", f"{_HF_ATTN}.self.key.{{p}}",
      f"{_HF_ATTN}.self.value.{{p}}"),
     ("block{s}.{j}.attn.q.{p}", "block{s}.{j}.attn.kv.{p}")),
    ("layers.{i}.1.{j}.attn.attn.out_proj.{p}", f"{_HF_ATTN}.output.dense.{{p}}",
     "block{s}.{j}.attn.proj.{p}"),
    ("layers.{i}.1.{j}.norm2.{p}", "encoder.block.{i}.{j}.layer_norm_2.{p}",
     "block{s}.{j}.norm2.{p}"),
    ("layers.{i}.1.{j}.ffn.layers.0.{p}", "encoder.block.{i}.{j}.mlp.dense1.{p}",
     "block{s}.{j}.mlp.fc1.{p}"),
    ("layers.{i}.1.{j}.ffn.layers.1.{p}", "encoder.block.{i}.{j}.mlp.dwconv.dwconv.{p}",
     "block{s}.{j}.mlp.dwconv.dwconv.{p}"),
    ("layers.{i}.1.{j}.ffn.layers.4.{p}", "encoder.block.{i}.{j}.mlp.dense2.{p}",
     "block{s}.{j}.mlp.fc2.{p}"),
]
_REDUCTION = [  # stages whose sr ratio is above 1 shrink keys/values with a strided conv
    ("layers.{i}.1.{j}.attn.sr.{p}", f"{_HF_ATTN}.self.sr.{{p}}", "block{s}.{j}.attn.sr.{p}"),
    ("layers.{i}.1.{j}.attn.norm.{p}", f"{_HF_ATTN}.self.layer_norm.{{p}}",
     "block{s}.{j}.attn.norm.{p}"),
]
FORMATS = ("hf", "nvlabs")


def tensor_plan(arch: MitArch, fmt: str) -> dict[str, tuple[str, ...]]:
    """mmseg tensor name -> the source tensor(s) it is made of, for every tensor of ``arch``."""
    column = FORMATS.index(fmt) + 1
    plan: dict[str, tuple[str, ...]] = {}

    def add(rows: list, **names: int) -> None:
        for row in rows:
            for p in ("weight", "bias"):
                sources = row[column] if isinstance(row[column], tuple) else (row[column],)
                plan[row[0].format(p=p, **names)] = tuple(s.format(p=p, **names)
                                                          for s in sources)

    for i, depth in enumerate(arch.depths):
        add(_PATCH, i=i, s=i + 1)
        for j in range(depth):
            add(_BLOCK, i=i, s=i + 1, j=j)
            if SR_RATIOS[i] > 1:
                add(_REDUCTION, i=i, s=i + 1, j=j)
    return plan


def source_arch(state: dict[str, torch.Tensor], fmt: str) -> tuple[tuple[int, ...],
                                                                   tuple[int, ...]]:
    """(widths, blocks per stage) read from a source state dict's own tensors."""
    if fmt == "hf":
        proj, block = "encoder.patch_embeddings.{i}.proj.weight", r"encoder\.block\.{i}\.(\d+)\."
    else:
        proj, block = "patch_embed{s}.proj.weight", r"block{s}\.(\d+)\."
    widths, depths = [], []
    for i in range(4):
        weight = state.get(proj.format(i=i, s=i + 1))
        widths.append(int(weight.shape[0]) if weight is not None else 0)
        pattern = re.compile(block.format(i=i, s=i + 1))
        blocks = {int(m.group(1)) for k in state if (m := pattern.match(k))}
        depths.append(max(blocks) + 1 if blocks else 0)
    return tuple(widths), tuple(depths)


def _as_conv1x1(tensor: torch.Tensor) -> torch.Tensor:
    """A Linear weight (out, in) as the 1x1 conv weight (out, in, 1, 1) mmseg's MixFFN has."""
    return tensor.reshape(*tensor.shape, 1, 1) if tensor.dim() == 2 else tensor


# mmseg keeps the MLP's two linear layers as 1x1 convolutions
_RESHAPE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "ffn.layers.0.weight": _as_conv1x1, "ffn.layers.4.weight": _as_conv1x1}


def convert_tensors(state: dict[str, torch.Tensor], plan: dict[str, tuple[str, ...]],
                    ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The mmseg state dict, and the source tensors the plan names but ``state`` lacks."""
    converted: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    for target, sources in plan.items():
        absent = [s for s in sources if s not in state]
        if absent:
            missing += absent
            continue
        tensor = torch.cat([state[s] for s in sources]) if len(sources) > 1 \
            else state[sources[0]]
        reshape = next((f for suffix, f in _RESHAPE.items() if target.endswith(suffix)), None)
        converted[target] = (reshape(tensor) if reshape else tensor).clone().contiguous()
    return converted, missing
