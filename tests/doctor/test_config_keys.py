"""``seglab doctor``'s unknown-key rule: a typo'd key is one error naming the closest valid
key, and no valid config (the library's, the zoo's) gets any finding from it."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config

from seglab.config import zoo
from seglab.config.loading import load_config
from seglab.doctor.config_doctor import examine_config
from seglab.doctor.finding import finding_line
from seglab.doctor.rules.keys import accepted_keys, unknown_keys
from tests.conftest import REPO_ROOT, VOC_DEMO, run_cli

ALL_CONFIGS = sorted(p for p in (REPO_ROOT / "configs").rglob("*.py") if "_base_" not in p.parts)
RULE = "unknown-key"


@functools.cache
def _demo() -> Config:
    return load_config(VOC_DEMO)


def demo(options: dict) -> Config:
    """The VOC demo config with ``--cfg-options`` (loaded once: loading takes ~1.3 s)."""
    cfg = copy.deepcopy(_demo())
    cfg.merge_from_dict(options)
    return cfg


def key_findings(cfg) -> list:
    """This rule alone on a resolved config (the doctor sets the default scope first)."""
    from mmengine.registry import init_default_scope

    init_default_scope(cfg.get("default_scope", "mmseg"))
    return list(unknown_keys(SimpleNamespace(cfg=cfg)))


def test_a_typo_in_the_head_is_one_error_naming_the_closest_key() -> None:
    report = examine_config(demo({"model.decode_head.num_clases": 21}), str(VOC_DEMO))
    [error] = report.errors
    assert (error.rule, error.where, error.fix) == (RULE, "model.decode_head.num_clases",
                                                    "num_classes?")
    assert finding_line(error) == ("ERROR [unknown-key] model.decode_head.num_clases: "
                                   "SegformerHead has no argument 'num_clases'. "
                                   "Fix: num_classes?")


TYPOS = {  # cfg option -> the fix suggested
    "train_dataloader.dataset.pipeline.2.ratio_ranges": "ratio_range?",  # RandomResize
    "optim_wrapper.optimizer.weight_decy": "weight_decay?",  # AdamW
    "model.backbone.num_layer": "num_layers?",  # MixVisionTransformer
    "model.decode_head.loss_decode.loss_weigth": "loss_weight?",  # CrossEntropyLoss
    "model.data_preprocessor.seg_pad_vall": "seg_pad_val?",
    "train_dataloader.dataset.reduce_zero_labels": "reduce_zero_label?",  # via BaseSegDataset
    "train_dataloader.num_worker": "num_workers?",  # torch's DataLoader
    "param_scheduler.1.eta_mn": "eta_min?",  # PolyLR
    "default_hooks.logger.intervl": "interval?",  # LoggerHook
    "train_cfg.val_intervals": "val_interval?",  # EpochBasedTrainLoop
}


@pytest.mark.parametrize("option", sorted(TYPOS))
def test_typos_everywhere_are_found(option: str) -> None:
    [finding] = key_findings(demo({option: 1}))
    assert (finding.severity, finding.where, finding.fix) == ("error", option, TYPOS[option])


def test_keys_the_builders_take_out_first_are_accepted() -> None:
    from mmseg.models.decode_heads import SegformerHead

    cfg = demo({
        "default_hooks.logger.priority": "VERY_LOW",  # Runner.register_hook
        "custom_hooks": [dict(type="EmptyCacheHook", after_iter=True, priority=49)],
        "optim_wrapper.paramwise_cfg": dict(custom_keys={"head": dict(lr_mult=10.0)}),
        "optim_wrapper.constructor": "DefaultOptimWrapperConstructor",
        "model.decode_head._scope_": "mmseg",
        "model.decode_head.norm_cfg": dict(type="BN", requires_grad=True),  # build_norm_layer
        "model.backbone.type": "mmseg.MixVisionTransformer",
        "train_dataloader.dataset.lazy_init": True,
    })
    assert cfg.param_scheduler[1].convert_to_iter_based  # build_scheduler_from_cfg's own
    assert key_findings(cfg) == []
    cfg.model.decode_head.type = SegformerHead  # a class rather than its name
    assert key_findings(cfg) == []
    cfg.model.decode_head.num_clases = 21
    assert [f.where for f in key_findings(cfg)] == ["model.decode_head.num_clases"]


def test_unknown_types_and_unknowable_kwargs_are_left_alone() -> None:
    cfg = demo({
        "model.decode_head.type": "NoSuchHead",  # the build (or another rule) says so
        "default_hooks.checkpoint.intervl": 1,  # CheckpointHook keeps its **kwargs
        "val_evaluator.iou_metric": ["mDice"],  # IoUMetric swallows its **kwargs
    })
    assert key_findings(cfg) == []


def test_albu_transforms_are_albumentations_not_mmseg_transforms() -> None:
    """``Albu``'s ``transforms`` name albumentations classes (``Resize(height, width)``):
    judged as mmseg transforms they would be false errors that stop ``seglab train``."""
    pipeline = list(_demo().train_dataloader.dataset.pipeline)
    albu = dict(type="Albu", transforms=[dict(type="Resize", height=64, width=64),
                                         dict(type="Normalize", max_pixel_value=255.0)])
    cfg = demo({"train_dataloader.dataset.pipeline": [*pipeline, albu]})
    assert key_findings(cfg) == []
    choice = dict(type="RandomChoice", transforms=[[dict(type="RandomFlip", prob=0.5)],
                                                   [dict(type="RandomFlip", probb=0.5)]])
    cfg = demo({"train_dataloader.dataset.pipeline": [*pipeline, choice]})
    assert [f.fix for f in key_findings(cfg)] == ["prob?"]  # mmcv's wrappers are still read


def test_a_functions_signature_is_checked() -> None:
    cfg = demo({"train_dataloader.collate_fn": dict(type="pseudo_collate", batch=1)})
    [finding] = key_findings(cfg)
    assert finding.where == "train_dataloader.collate_fn.batch"
    assert "pseudo_collate" in finding.message


# ---------------------------------------------------------------- signatures along the MRO

class _Root:
    def __init__(self, root: int = 0, *, flag: bool = False) -> None:
        pass


class _Passes(_Root):
    def __init__(self, own: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)


class _PassesExplicitly(_Root):
    def __init__(self, mine: int = 0, **kwargs) -> None:
        _Root.__init__(self, **kwargs)


class _Keeps(_Root):
    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.kwargs = kwargs


class _PassesToKeeps(_Keeps):
    def __init__(self, extra: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)


class _Swallows(_Root):
    def __init__(self, own: int = 0, **kwargs) -> None:
        super().__init__()


def _renames(init):
    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        kwargs["own"] = kwargs.pop("old_name", 0)
        return init(self, *args, **kwargs)
    return wrapper


class _Decorated(_Root):
    @_renames
    def __init__(self, own: int = 0) -> None:
        pass


class _Layer(torch.nn.Module):
    def __init__(self, width: int, **kwargs) -> None:
        super().__init__(**kwargs)


def _function(a: int, b: int = 0) -> None:
    pass


def _open_function(a: int, **kwargs) -> None:
    pass


def test_accepted_keys_follow_kwargs_up_the_mro() -> None:
    assert accepted_keys(_Root) == {"root", "flag"}
    assert accepted_keys(_Passes) == {"own", "root", "flag"}
    assert accepted_keys(_PassesExplicitly) == {"mine", "root", "flag"}
    assert accepted_keys(_Layer) == {"width"}  # nn.Module takes no keyword
    assert accepted_keys(_function) == {"a", "b"}


@pytest.mark.parametrize("target", [_Keeps, _PassesToKeeps, _Swallows, _Decorated,
                                    _open_function])
def test_kwargs_that_go_anywhere_else_are_unknowable(target) -> None:
    assert accepted_keys(target) is None


# ---------------------------------------------------------------- no valid config is flagged

@pytest.mark.parametrize("config", ALL_CONFIGS, ids=lambda p: p.stem)
@pytest.mark.slow  # ~1.5 s a config to load; test_config_doctor's no-errors test is the fast check
def test_no_config_in_the_library_has_an_unknown_key(config: Path) -> None:
    assert key_findings(load_config(config)) == []


@pytest.mark.parametrize("family", zoo.FAMILIES, ids=lambda f: f.name)
@pytest.mark.slow
def test_no_zoo_family_has_an_unknown_key(family: zoo.Family) -> None:
    if zoo.missing_packages(family):
        pytest.skip(f"{family.name} needs {', '.join(zoo.missing_packages(family))}")
    assert key_findings(zoo.zoo_config(family.name)) == []


@pytest.mark.slow
def test_train_refuses_a_typo_before_building(tmp_path: Path) -> None:
    work_dir = tmp_path / "typo"
    result = run_cli("train", str(VOC_DEMO), "--work-dir", str(work_dir),
                     "--cfg-options", "model.decode_head.num_clases=21")
    assert result.returncode == 2, result.stderr
    assert ("[unknown-key] model.decode_head.num_clases: SegformerHead has no argument "
            "'num_clases'. Fix: num_classes?") in result.stderr
    assert "Traceback" not in result.stderr
    assert not work_dir.exists()
