"""mmcv's ops variant (CPU-only or CUDA + arches) and the configs that need CUDA kernels.

A CPU-only mmcv on a GPU node is faked by replacing the probe; the configs are real
(mmseg's zoo configs, seglab's own), so the op map is checked against what they contain.
"""

from __future__ import annotations

import glob
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from seglab.config import zoo
from seglab.config.loading import ConfigError, load_config
from seglab.config.walk import mmseg_config_dir
from seglab.platform import mmcv_ops
from seglab.platform.mmcv_ops import InstalledOps, OpsVariant
from tests.conftest import REPO_ROOT

CPU_ONLY = InstalledOps("2.1.0", OpsVariant())
CUDA_SM80 = InstalledOps("2.1.0", OpsVariant.parse("cuda13.0-sm80"))
# The ops the zoo really needs on a GPU: PSANet's PSAMask, Mask2Former's deformable
# attention, MaskFormer's mmdet FocalLoss. CCNet, PointRend and the rest have PyTorch paths.
ZOO_NEEDS = {
    "psanet": ("model.decode_head.type=PSAHead", "mmcv.ops.PSAMask"),
    "mask2former": ("model.decode_head.pixel_decoder.type=mmdet.MSDeformAttnPixelDecoder",
                    "mmcv.ops.MultiScaleDeformableAttention"),
    "maskformer": ("model.decode_head.loss_mask.type=mmdet.FocalLoss",
                   "mmcv.ops.sigmoid_focal_loss"),
}


def mmseg_config(relative: str) -> Config:
    """One of mmseg's packaged configs; custom_imports (mmdet) are not needed to read it."""
    return Config.fromfile(str(mmseg_config_dir() / relative), import_custom_modules=False)


@pytest.fixture
def cpu_only_mmcv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mmcv_ops, "probe_mmcv_ops", lambda: CPU_ONLY)


@pytest.mark.parametrize("text", ["cpu", "cuda13.0", "cuda13.0-sm80_90", "cuda12.4-sm80_90+PTX",
                                  "cuda13.0-sm100_120"])
def test_variant_text_round_trips(text: str) -> None:
    assert str(OpsVariant.parse(text)) == text


def test_variant_from_arch_list_is_the_install_cache_key() -> None:
    assert str(OpsVariant.from_arch_list("13.0", "9.0+PTX;8.0 8.6")) == "cuda13.0-sm80_86_90+PTX"
    with pytest.raises(ValueError, match="TORCH_CUDA_ARCH_LIST='Ampere'"):
        OpsVariant.from_arch_list("13.0", "Ampere")


@pytest.mark.parametrize(("installed", "needed", "why"), [
    ("cpu", "cpu", None),
    ("cuda13.0-sm90", "cpu", None),  # CUDA builds carry the CPU kernels too
    ("cpu", "cuda13.0-sm90", "built without CUDA ops"),
    ("cuda12.4-sm90", "cuda13.0-sm90", "built with CUDA 12.4, torch uses CUDA 13.0"),
    ("cuda13.0-sm80", "cuda13.0-sm86", None),  # same major, newer minor: the cubin runs
    ("cuda13.0-sm80", "cuda13.0-sm90", "no kernels for sm_90 (built for sm_80)"),
    ("cuda13.0-sm80+PTX", "cuda13.0-sm120", None),  # PTX is JIT-compiled for newer GPUs
    ("cuda13.0", "cuda13.0-sm90", None),  # arches unknown: only CUDA is compared
])
def test_shortfall(installed: str, needed: str, why: str | None) -> None:
    assert OpsVariant.parse(installed).shortfall(OpsVariant.parse(needed)) == why


@pytest.mark.skipif(torch.version.cuda is None, reason="a CPU-only torch ships no CUDA kernels")
def test_fatbin_arches_reads_the_kernels_of_a_cuda_library() -> None:
    """torchvision's ops library stands in for a CUDA mmcv._ext: same ELF/fatbin layout."""
    import torchvision

    (library,) = glob.glob(str(Path(torchvision.__file__).parent / "_C*.so"))
    sass, ptx = mmcv_ops.fatbin_arches(library)
    assert sass and all(7 <= major <= 12 and minor < 10 for major, minor in sass | ptx)
    assert mmcv_ops.fatbin_arches(sys.executable) == (frozenset(), frozenset())  # no kernels


@pytest.mark.slow
def test_probe_reports_the_installed_build() -> None:
    from mmcv.ops import get_compiling_cuda_version

    ops = mmcv_ops.probe_mmcv_ops()
    assert ops.version == "2.1.0"
    assert (ops.variant.cuda is None) == (get_compiling_cuda_version() == "not available")
    out = subprocess.run([sys.executable, "-m", "seglab.platform.mmcv_ops"], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {"mmcv": "2.1.0", "variant": str(ops.variant),
                                      "describe": ops.describe()}


@pytest.mark.parametrize("family", zoo.FAMILIES, ids=lambda f: f.name)
def test_zoo_configs_on_a_gpu_with_cpu_only_mmcv(family: zoo.Family, cpu_only_mmcv) -> None:
    cfg = mmseg_config(family.config)
    if family.name not in ZOO_NEEDS:
        mmcv_ops.check_mmcv_kernels(cfg, "cuda")
        return
    key, op = ZOO_NEEDS[family.name]
    with pytest.raises(ConfigError) as err:
        mmcv_ops.check_mmcv_kernels(cfg, "cuda")
    message = str(err.value)
    assert f"{key}: {op}" in message
    assert "mmcv 2.1.0 built without CUDA ops" in message
    assert "FORCE_CUDA=1" in message and "seglab.platform.install --force" in message
    mmcv_ops.check_mmcv_kernels(cfg, "cpu")  # mmcv's CPU ops or PyTorch paths suffice there


def test_zoo_listing_names_exactly_the_three_families() -> None:
    found = mmcv_ops.zoo_kernel_needs()
    assert {name: (str(n[0]), n[0].op) for name, n in found.items()} == ZOO_NEEDS


def test_ops_with_a_pytorch_path_are_not_flagged(cpu_only_mmcv) -> None:
    """CCNet's CrissCrossAttention is einsum in mmcv 2.x; seglab's FocalLoss has a fallback."""
    mmcv_ops.check_mmcv_kernels(mmseg_config("ccnet/ccnet_r50-d8_4xb4-80k_ade20k-512x512.py"),
                                "cuda")
    seed = load_config(REPO_ROOT / "configs/segformer/segformer_mit-b2_ade20k_v1.0.py")
    assert {d.type for d in seed.model.decode_head.loss_decode} >= {"FocalLoss"}
    mmcv_ops.check_mmcv_kernels(seed, "cuda")
    seed.model.decode_head.loss_decode[0].type = "mmdet.FocalLoss"
    with pytest.raises(ConfigError, match="model.decode_head.loss_decode.0.type=mmdet.Focal"):
        mmcv_ops.check_mmcv_kernels(seed, "cuda")


@pytest.mark.parametrize(("edit", "key"), [
    (lambda cfg: cfg.model.backbone.update(dcn=dict(type="DCN"),
                                           stage_with_dcn=(False, True, True, True)),
     "model.backbone.dcn.type=DCN"),
    (lambda cfg: cfg.model.backbone.update(dcn=dict(type="DCN")), None),  # no stage uses it
    (lambda cfg: cfg.model.decode_head.update(conv_cfg=dict(type="DCNv2")),
     "model.decode_head.conv_cfg.type=DCNv2"),
    (lambda cfg: cfg.model.backbone.update(conv_cfg=dict(type="SAC", use_deform=True)),
     "model.backbone.conv_cfg.type=SAC"),
    (lambda cfg: cfg.model.backbone.update(conv_cfg=dict(type="SAC")), None),
    (lambda cfg: cfg.model.backbone.update(norm_cfg=dict(type="MMSyncBN")),
     "model.backbone.norm_cfg.type=MMSyncBN"),
    (lambda cfg: cfg.model.decode_head.update(type="PSAHead", mask_size=(97, 97), compact=True),
     None),  # the compact form reshapes instead of calling PSAMask
])
def test_op_map_reads_the_arguments_that_decide(edit, key: str | None) -> None:
    cfg = mmseg_config(zoo.BY_NAME["fcn"].config)
    edit(cfg)
    assert [str(n) for n in mmcv_ops.kernel_needs(cfg)] == ([key] if key else [])


def test_cuda_build_for_another_gpu_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mmcv_ops, "probe_mmcv_ops", lambda: CUDA_SM80)
    monkeypatch.setattr(mmcv_ops, "_needed_on",
                        lambda device, ops: OpsVariant.parse("cuda13.0-sm90"))
    psanet = mmseg_config(zoo.BY_NAME["psanet"].config)
    with pytest.raises(ConfigError, match=r"(?s)no kernels for sm_90.*TORCH_CUDA_ARCH_LIST='9.0'"):
        mmcv_ops.check_mmcv_kernels(psanet, "cuda")
    monkeypatch.setattr(mmcv_ops, "_needed_on",
                        lambda device, ops: OpsVariant.parse("cuda13.0-sm86"))
    mmcv_ops.check_mmcv_kernels(psanet, "cuda")
