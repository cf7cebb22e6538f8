"""Official-recipe baselines resolve to mmseg's own configs, field by field, with epoch loops."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mmengine.config import Config

from seglab.config.diff import diff_configs
from seglab.config.loading import load_config
from seglab.config.walk import mmseg_config_dir
from tests.conftest import REPO_ROOT

MMSEG_CONFIGS = mmseg_config_dir()
# mmseg's VOC-aug ConcatDataset: VOC train.txt (1,464) + aug.txt, the SBD images outside
# VOC train/val (9,118; tools/dataset_converters/voc_aug.py asserts the sum is 10,582)
VOC_AUG_IMAGES = 10582
ADE20K_IMAGES = 20210

BASELINES = [
    ("upernet/upernet_r50_4xb4-60e_voc12aug-512x512.py",
     "upernet/upernet_r50_4xb4-40k_voc12aug-512x512.py", VOC_AUG_IMAGES),
    ("upernet/upernet_r50_4xb4-30e_voc12aug-512x512.py",
     "upernet/upernet_r50_4xb4-20k_voc12aug-512x512.py", VOC_AUG_IMAGES),
    ("segformer/segformer_mit-b2_8xb2-127e_ade20k-512x512.py",
     "segformer/segformer_mit-b2_8xb2-160k_ade20k-512x512.py", ADE20K_IMAGES),
    ("segformer/segformer_mit-b0_8xb2-127e_ade20k-512x512.py",
     "segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py", ADE20K_IMAGES),
]
# What a recipe is: the same model, optimizer, LR schedule, data and batch.
RECIPE_KEYS = ("model", "optim_wrapper", "param_scheduler", "train_dataloader.dataset",
               "train_dataloader.batch_size", "test_dataloader.dataset", "test_evaluator")


def _recipe(cfg: Config) -> Config:
    picked = {}
    for key in RECIPE_KEYS:
        node = cfg
        for part in key.split("."):
            node = node[part]
        picked[key] = node
    return Config(picked)


@pytest.mark.parametrize("ours,official,dataset_size", BASELINES,
                         ids=[Path(b[0]).stem for b in BASELINES])
def test_baseline_is_the_official_recipe_with_epochs(ours: str, official: str,
                                                     dataset_size: int) -> None:
    mine = load_config(REPO_ROOT / "configs" / ours)
    theirs = Config.fromfile(str(MMSEG_CONFIGS / official))
    differences = diff_configs(_recipe(theirs), _recipe(mine))
    differences = [d for d in differences if not d[0].endswith("_scope_")]
    assert differences == [], differences

    gpus, per_gpu = map(int, re.search(r"_(\d+)xb(\d+)-", official).groups())
    assert per_gpu == mine.train_dataloader.batch_size
    official_images = theirs.train_cfg.max_iters * gpus * per_gpu
    epoch_images = mine.train_cfg.max_epochs * dataset_size
    assert abs(epoch_images - official_images) <= dataset_size / 2  # nearest whole epoch
    assert mine.train_cfg.type == "EpochBasedTrainLoop"
    assert mine.train_dataloader.sampler.type == "DefaultSampler"
    assert mine.default_hooks.checkpoint.by_epoch
