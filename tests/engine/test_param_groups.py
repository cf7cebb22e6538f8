"""Optimizer steps over param groups joined by settings: bitwise the same weights, optimizer
state and schedule as mmengine's one-group-per-tensor optimizer, checkpoints in its layout."""

from __future__ import annotations

import copy

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.optim.scheduler import PolyLR
from torch import nn

from seglab.engine.param_groups import (
    StepJoinedGroupsConstructor,
    join_param_groups,
    use_joined_param_groups,
)

# mmseg's SegFormer recipe: AdamW, no decay for position blocks and norms, 10x LR in the head
SEGFORMER_OPTIM = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={"pos_block": dict(decay_mult=0.0),
                                    "norm": dict(decay_mult=0.0), "head": dict(lr_mult=10.0)}))


def tiny_segformer() -> nn.Module:
    from mmseg.models.backbones import MixVisionTransformer

    torch.manual_seed(0)
    model = nn.Module()
    model.backbone = MixVisionTransformer(in_channels=3, embed_dims=8, num_stages=2,
                                          num_layers=[1, 1], num_heads=[1, 2],
                                          patch_sizes=[7, 3], strides=[4, 2],
                                          out_indices=(0, 1), sr_ratios=[2, 1])
    model.head = nn.Conv2d(16, 4, 1)
    return model


def batches(n: int) -> list[torch.Tensor]:
    torch.manual_seed(1)
    return [torch.randn(2, 3, 32, 32) for _ in range(n)]


def step(model: nn.Module, wrapper, batch: torch.Tensor) -> None:
    wrapper.update_params(model.head(model.backbone(batch)[-1]).square().mean())


def build(constructor: type, model: nn.Module, optim_cfg: dict = SEGFORMER_OPTIM):
    """The optim wrapper as mmengine's ``build_optim_wrapper`` builds it."""
    optim_cfg = copy.deepcopy(optim_cfg)
    return constructor(optim_cfg, optim_cfg.pop("paramwise_cfg", None))(model)


def train_steps(constructor: type, model: nn.Module, optim_cfg: dict, steps: int = 4):
    wrapper = build(constructor, model, optim_cfg)
    wrapper.groups_seen_by_step = []  # torch's step pre-hooks run inside the step
    wrapper.optimizer.register_step_pre_hook(
        lambda optimizer, args, kwargs: wrapper.groups_seen_by_step.append(
            len(optimizer.param_groups)))
    schedule = PolyLR(wrapper.optimizer, eta_min=0.0, power=1.0, begin=0, end=steps,
                      by_epoch=False)
    for batch in batches(steps):
        step(model, wrapper, batch)
        schedule.step()
    return model, wrapper, schedule


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("foreach", [None, True], ids=["default", "foreach"])
def test_joined_steps_give_mmengines_weights_state_and_schedule_bitwise(foreach) -> None:
    optim_cfg = copy.deepcopy(SEGFORMER_OPTIM)
    optim_cfg["optimizer"]["foreach"] = foreach
    stock, stock_wrapper, stock_schedule = train_steps(DefaultOptimWrapperConstructor,
                                                       tiny_segformer(), optim_cfg)
    ours, our_wrapper, our_schedule = train_steps(StepJoinedGroupsConstructor,
                                                  tiny_segformer(), optim_cfg)
    groups = our_wrapper.optimizer.param_groups
    assert len(groups) == len(stock_wrapper.optimizer.param_groups) == len(list(ours.parameters()))
    assert len(join_param_groups(groups)) == 3  # (lr, decay): backbone, its norms and pos, head
    assert our_wrapper.groups_seen_by_step == [3] * 4  # the steps ran over the joined groups
    assert stock_wrapper.groups_seen_by_step == [len(groups)] * 4
    assert _equal(dict(stock.named_parameters()), dict(ours.named_parameters()))
    # a checkpoint holds what mmengine's optimizer and schedule would have written
    assert _equal(stock_wrapper.state_dict(), our_wrapper.state_dict())
    assert _equal({k: v for k, v in stock_schedule.state_dict().items() if k != "optimizer"},
                  {k: v for k, v in our_schedule.state_dict().items() if k != "optimizer"})
    assert getattr(our_wrapper.optimizer.step, "_with_counter", False)  # the schedule's count


def test_a_stock_runs_optimizer_state_resumes_into_joined_steps_bitwise() -> None:
    """Two steps with mmengine's optimizer, its state loaded into seglab's, two more there:
    the same weights as four steps with mmengine's (and the other way round)."""
    data = batches(4)
    for first, second in ((DefaultOptimWrapperConstructor, StepJoinedGroupsConstructor),
                          (StepJoinedGroupsConstructor, DefaultOptimWrapperConstructor)):
        reference, resumed = tiny_segformer(), tiny_segformer()
        whole = build(DefaultOptimWrapperConstructor, reference)
        for batch in data:
            step(reference, whole, batch)
        before = build(first, resumed)
        for batch in data[:2]:
            step(resumed, before, batch)
        after = build(second, resumed)
        after.load_state_dict(before.state_dict())
        for batch in data[2:]:
            step(resumed, after, batch)
        assert _equal(dict(reference.named_parameters()), dict(resumed.named_parameters()))


def test_only_the_default_constructor_with_paramwise_settings_is_swapped() -> None:
    cfg = Config(dict(optim_wrapper=copy.deepcopy(SEGFORMER_OPTIM)))
    assert use_joined_param_groups(cfg) and cfg.optim_wrapper.constructor == (
        "StepJoinedGroupsConstructor")
    plain = Config(dict(optim_wrapper=dict(type="OptimWrapper", optimizer=dict(type="SGD",
                                                                               lr=0.01))))
    layer_decay = Config(dict(optim_wrapper=dict(
        **SEGFORMER_OPTIM, constructor="LearningRateDecayOptimizerConstructor")))
    for cfg in (plain, layer_decay):  # one group already; mmseg's own grouping kept
        before = cfg.pretty_text
        assert use_joined_param_groups(cfg) == [] and cfg.pretty_text == before


class AdamWOfOwnKind(torch.optim.AdamW):
    """A user's optimizer: it may keep values by group (D-Adaptation, Prodigy do)."""


@pytest.mark.parametrize("optimizer", [
    dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=0.01, fused=True),  # "first step"
    dict(type=AdamWOfOwnKind, lr=0.1, weight_decay=0.01),                   # is per group
], ids=["fused-sgd", "not-torchs-own"])
def test_optimizers_that_may_keep_values_by_group_step_over_mmengines_groups(optimizer) -> None:
    optim_cfg = dict(SEGFORMER_OPTIM, optimizer=optimizer)
    wrapper = build(StepJoinedGroupsConstructor, tiny_segformer(), optim_cfg)
    assert "step" not in vars(wrapper.optimizer)  # the class's own step, untouched
    assert "step" in vars(build(StepJoinedGroupsConstructor, tiny_segformer()).optimizer)


def test_a_parameter_whose_first_gradient_comes_late_steps_bitwise_the_same() -> None:
    """A branch unused at first (or unfrozen later) meets tensors that already have state."""
    results = []
    for constructor in (DefaultOptimWrapperConstructor, StepJoinedGroupsConstructor):
        model = tiny_segformer()
        wrapper = build(constructor, model)
        for i, batch in enumerate(batches(3)):
            loss = model.head(model.backbone(batch)[-1]).square().mean()
            if i == 0:  # the head's bias gets no gradient at the first step
                loss = loss + 0 * model.head.weight.sum()
                model.head.bias.requires_grad_(False)
            else:
                model.head.bias.requires_grad_(True)
            wrapper.update_params(loss)
        results.append(dict(model.named_parameters()))
    assert _equal(*results)


def test_resuming_a_run_from_before_the_joined_steps_reports_no_change() -> None:
    from seglab.engine.resume import SavedRun, resume_report

    before = Config(dict(optim_wrapper=copy.deepcopy(SEGFORMER_OPTIM)))
    now = Config(dict(optim_wrapper=copy.deepcopy(SEGFORMER_OPTIM)))
    use_joined_param_groups(now)
    assert resume_report(SavedRun(cfg=before, epoch=1, iter=10, last_lrs=[]), now) == []
    now.optim_wrapper.optimizer.lr = 1e-4  # a real change is still said
    assert resume_report(SavedRun(cfg=before, epoch=1, iter=10, last_lrs=[]), now)
