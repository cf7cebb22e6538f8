"""Pretrained coverage: what fraction of the backbone its checkpoint actually filled."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.registry import init_default_scope

from seglab.weights.coverage import (
    PretrainedCoverageError,
    checkpoint_state_dict,
    measure_coverage,
    prefix_hint,
)
from tests.conftest import VOC_DEMO, short_run

MIT_B0 = dict(type="MixVisionTransformer", in_channels=3, embed_dims=32, num_stages=4,
              num_layers=[2, 2, 2, 2], num_heads=[1, 2, 5, 8], patch_sizes=[7, 3, 3, 3],
              sr_ratios=[8, 4, 2, 1], out_indices=(0, 1, 2, 3), mlp_ratio=4, qkv_bias=True)


def build(cfg: dict, checkpoint: Path | None = None, prefix: str | None = None):
    """A backbone initialised the way a run initialises it (init_cfg Pretrained)."""
    from mmseg.registry import MODELS

    init_default_scope("mmseg")
    init_cfg = None
    if checkpoint is not None:
        init_cfg = dict(type="Pretrained", checkpoint=str(checkpoint))
        if prefix:
            init_cfg["prefix"] = prefix
    module = MODELS.build({**cfg, "init_cfg": init_cfg})
    module.init_weights()
    return module


def coverage_of(cfg: dict, checkpoint: Path, prefix: str | None = None):
    module = build(cfg, checkpoint, prefix)
    return measure_coverage(module, checkpoint_state_dict(str(checkpoint), prefix),
                            str(checkpoint), "backbone"), module


def test_matching_weights_cover_everything(tmp_path: Path) -> None:
    ckpt = tmp_path / "mit_b0.pth"
    torch.save(build(MIT_B0).state_dict(), ckpt)
    cov, _ = coverage_of(MIT_B0, ckpt)
    assert cov.fraction == 1.0 and cov.loaded == cov.total > 3_000_000
    assert not (cov.missing or cov.mismatched or cov.unchanged) and cov.unused == 0


def test_torchvision_resnet50_into_resnet_v1c_leaves_the_stem_random(tmp_path: Path) -> None:
    """Seed 003: the only sign was a long 'missing keys' warning."""
    import torchvision

    ckpt = tmp_path / "resnet50_torchvision.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), ckpt)
    cov, _ = coverage_of(dict(type="ResNetV1c", depth=50), ckpt)
    stem = {"stem.0", "stem.1", "stem.3", "stem.4", "stem.6", "stem.7"}
    assert stem <= set(name.rsplit(".", 1)[0] for name in cov.missing)
    assert all(name.startswith("stem.") for name in cov.missing)
    assert 0.99 < cov.fraction < 1.0
    assert cov.unused >= 2  # conv1.weight, bn1.*, fc.* are never used
    assert "not loaded (missing from the checkpoint): stem.0, stem.1" in cov.summary()


def test_other_architecture_and_prefixed_keys(tmp_path: Path) -> None:
    wider = {**MIT_B0, "embed_dims": 64}  # MiT-B2's widths into a B0
    ckpt = tmp_path / "mit_wide.pth"
    torch.save(build(wider).state_dict(), ckpt)
    cov, _ = coverage_of(MIT_B0, ckpt)
    assert cov.fraction < 0.2 and cov.mismatched

    segmentor = tmp_path / "segmentor.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in build(MIT_B0).state_dict().items()},
                "meta": {}}, segmentor)
    cov, module = coverage_of(MIT_B0, segmentor)
    assert cov.fraction == 0.0
    assert "set init_cfg.prefix='backbone.'" in prefix_hint(
        module, checkpoint_state_dict(str(segmentor)))
    cov, _ = coverage_of(MIT_B0, segmentor, prefix="backbone.")
    assert cov.fraction == 1.0


@pytest.mark.slow
def test_training_stops_before_step_one_below_the_threshold(voc_root: Path,
                                                             tmp_path: Path) -> None:
    from seglab.engine.hooks import PretrainedCoverageHook
    from seglab.engine.runner import train

    ckpt = tmp_path / "mit_wide.pth"
    torch.save(build({**MIT_B0, "embed_dims": 64}).state_dict(), ckpt)
    run = short_run(voc_root, 1)
    run["cfg_options"].update({
        "model.backbone.init_cfg": dict(type="Pretrained", checkpoint=str(ckpt)),
        "train_dataloader.dataset.indices": 16})
    with pytest.raises(PretrainedCoverageError, match=r"(?s)% of the backbone.*"
                       "--min-pretrained-coverage 0"):
        train(str(VOC_DEMO), work_dir=str(tmp_path / "stopped"), **run)
    assert not list((tmp_path / "stopped").glob("*.pth"))

    runner = train(str(VOC_DEMO), work_dir=str(tmp_path / "forced"),
                   min_pretrained_coverage=0.0, **run)
    hook = next(h for h in runner.hooks if isinstance(h, PretrainedCoverageHook))
    assert hook.coverage.fraction < 0.2
    assert (tmp_path / "forced" / "epoch_1.pth").is_file()
