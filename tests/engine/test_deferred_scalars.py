"""Sync-free bookkeeping: ``DeferredRuntimeInfoHook`` logs mmengine's numbers and
``NonFiniteLossHook`` keeps its guarantees, with no host read between check points."""

from __future__ import annotations

import contextlib
import json
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import LoggerHook, RuntimeInfoHook
from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper
from mmengine.structures import BaseDataElement

from seglab.engine.hooks.deferred_runtime_info_hook import (
    DeferredRuntimeInfoHook,
    use_deferred_runtime_info,
)
from seglab.engine.hooks.nonfinite_loss_hook import NonFiniteLossHook, TrainingDiverged

INTERVAL, STEPS = 4, 10


@contextlib.contextmanager
def host_reads() -> Iterator[Counter]:
    """Counts what copies a tensor's values to the host (on a GPU: waits for its kernels),
    by the seglab/mmengine module that asked."""
    import sys

    counts: Counter = Counter()
    originals = {name: getattr(torch.Tensor, name)
                 for name in ("item", "tolist", "__float__", "__bool__", "__int__")}

    def counting(name):
        def read(self, *args, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            counts[caller.split(".")[0]] += 1
            return originals[name](self, *args, **kwargs)
        return read

    for name in originals:
        setattr(torch.Tensor, name, counting(name))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def _runner(tmp_path: Path, hooks: list, clip: bool = False) -> SimpleNamespace:
    hub = MessageHub.get_instance(f"deferred_{random.random()}")  # the wrappers' hub too
    param = torch.nn.Parameter(torch.ones(3))
    wrapper = OptimWrapper(torch.optim.SGD([param], lr=0.1),
                           clip_grad=dict(max_norm=1.0) if clip else None)
    return SimpleNamespace(
        hooks=[LoggerHook(interval=INTERVAL), *hooks], optim_wrapper=wrapper, iter=0, epoch=0,
        message_hub=hub,
        train_dataloader=SimpleNamespace(dataset=None),  # no length: no epoch end
        max_epochs=1, max_iters=STEPS, work_dir=str(tmp_path), param=param)


def _outputs(step: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(step)
    return {"loss": torch.rand((), generator=generator).requires_grad_(),
            "decode.acc_seg": torch.rand(1, generator=generator) * 100,
            "count": torch.tensor(step)}


def _train(runner, hook, steps: int = STEPS, clip_step=None) -> list[Counter]:
    """Run ``steps`` fake iterations through ``hook``; the host reads counted per step."""
    reads = []
    hook.before_train(runner)
    for step in range(steps):
        runner.iter = step
        with host_reads() as counts:
            if clip_step is not None:
                clip_step(runner, step)
            hook.after_train_iter(runner, step, outputs=_outputs(step))
        reads.append(counts)
    return reads


def _history(hub: MessageHub) -> dict[str, list]:
    return {k: (v.data[0].tolist(), v.data[0].dtype) for k, v in hub.log_scalars.items()}


def _clip_step(runner, step: int) -> None:
    runner.param.grad = torch.full((3,), float(step + 1))
    runner.optim_wrapper.step()  # clips, records the norm


def test_the_message_hub_ends_up_with_mmengines_numbers_read_once_per_interval(
        tmp_path) -> None:
    stock, deferred = _runner(tmp_path, []), _runner(tmp_path, [])
    _train(stock, RuntimeInfoHook())
    hook = DeferredRuntimeInfoHook()
    reads = _train(deferred, hook)
    assert len(_history(deferred.message_hub)["train/loss"][0]) == STEPS // INTERVAL * INTERVAL
    hook.after_train(deferred)  # the steps after the last log step
    assert _history(deferred.message_hub) == _history(stock.message_hub)
    log_steps = [s for s in range(STEPS) if (s + 1) % INTERVAL == 0]
    assert [s for s, c in enumerate(reads) if c["seglab"] or c["mmengine"]] == log_steps
    assert all(reads[s]["seglab"] == 1 for s in log_steps), "one copy for all held values"


def test_the_clipped_gradient_norm_waits_too_and_a_checkpoint_gets_the_whole_hub(
        tmp_path) -> None:
    stock, deferred = _runner(tmp_path, [], clip=True), _runner(tmp_path, [], clip=True)
    _train(stock, RuntimeInfoHook(), steps=3, clip_step=_clip_step)
    hook = DeferredRuntimeInfoHook()
    reads = _train(deferred, hook, steps=3, clip_step=_clip_step)
    assert not any(c["mmengine"] or c["seglab"] for c in reads), "float(grad_norm) per step"
    assert "train/grad_norm" not in deferred.message_hub.log_scalars
    checkpoint = {"message_hub": deferred.message_hub.state_dict()}
    hook.before_save_checkpoint(deferred, checkpoint)
    assert _history(deferred.message_hub) == _history(stock.message_hub)
    saved = checkpoint["message_hub"]["log_scalars"]["train/grad_norm"]
    assert saved.data[0].tolist() == stock.message_hub.log_scalars["train/grad_norm"].data[
        0].tolist()


def _step_with(runner, hooks, step: int, loss: float, batch=None) -> None:
    runner.iter = step
    outputs = {"loss": torch.tensor(loss), "decode.loss_ce": torch.tensor(loss)}
    for hook in hooks:
        hook.after_train_iter(runner, step, batch, outputs=outputs)


def _batch(step: int) -> dict:
    return {"data_samples": [BaseDataElement(metainfo={"img_path": f"img_{step}_{i}.jpg"})
                             for i in range(2)]}


def test_a_nan_is_named_at_its_step_at_the_next_check_with_no_read_before(tmp_path) -> None:
    guard = NonFiniteLossHook()
    deferred = DeferredRuntimeInfoHook()
    runner = _runner(tmp_path, [deferred, guard])
    for hook in (deferred, guard):
        hook.before_train(runner)
    with host_reads() as counts:
        for step in range(INTERVAL - 1):  # the NaN is the second step; no check point yet
            _step_with(runner, [deferred, guard], step, float("nan") if step == 1 else 1.0,
                       _batch(step))
    assert not counts["seglab"] and not counts["mmengine"]
    with pytest.raises(TrainingDiverged) as stop:
        _step_with(runner, [deferred, guard], INTERVAL - 1, 1.0)
    message = str(stop.value)
    assert "diverged at iter 2 " in message and "decode.loss_ce=nan, loss=nan" in message
    assert f"found at iter {INTERVAL}" in message
    record = json.loads((tmp_path / "nonfinite_iter_2.json").read_text())
    assert record["img_paths"] == ["img_1_0.jpg", "img_1_1.jpg"]


def test_no_checkpoint_is_written_after_a_held_nan(tmp_path) -> None:
    guard = NonFiniteLossHook(check_interval=100)
    runner = _runner(tmp_path, [guard])
    guard.before_train(runner)
    _step_with(runner, [guard], 0, 1.0)
    guard.before_save_checkpoint(runner, {})  # finite so far: the save goes on
    _step_with(runner, [guard], 1, float("inf"))
    with pytest.raises(TrainingDiverged, match="at iter 2 "):
        guard.before_save_checkpoint(runner, {})


def test_check_interval_1_and_the_skip_policy_judge_every_step(tmp_path) -> None:
    """The skip policy reads every step's gradients to decide that step: it is judged at
    once (here its plain wrapper did not skip, so the NaN stops the run)."""
    for guard in (NonFiniteLossHook(check_interval=1), NonFiniteLossHook(policy="skip")):
        runner = _runner(tmp_path, [guard])
        guard.before_train(runner)
        with pytest.raises(TrainingDiverged, match="at iter 1 ") as stop:
            _step_with(runner, [guard], 0, float("nan"))
        assert "found at" not in str(stop.value)


def test_the_swap_keeps_a_configs_own_hook_its_none_and_its_settings() -> None:
    for written, expected in [
            ({}, {"type": "DeferredRuntimeInfoHook"}),
            ({"runtime_info": {"type": "RuntimeInfoHook", "priority": "HIGH"}},
             {"type": "DeferredRuntimeInfoHook", "priority": "HIGH"}),
            ({"runtime_info": None}, None),
            ({"runtime_info": {"type": "MyInfoHook"}}, {"type": "MyInfoHook"})]:
        cfg = Config({"default_hooks": written})
        notes = use_deferred_runtime_info(cfg)
        assert cfg.default_hooks.runtime_info == expected
        assert bool(notes) == (expected is not None
                               and expected["type"] == "DeferredRuntimeInfoHook")


def test_a_seglab_run_holds_its_scalars_and_computes_acc_seg_without_a_sync(
        voc_two_epochs) -> None:
    """The trained fixture: the hook is the run's, every step reached the hub (the ones after
    the last log step too), and the accuracy swap was logged for the run."""
    runner, work_dir = voc_two_epochs
    assert [type(h) for h in runner.hooks if isinstance(h, RuntimeInfoHook)] == [
        DeferredRuntimeInfoHook]
    assert len(runner.message_hub.log_scalars["train/loss"].data[0]) == runner.iter
    log = next(Path(work_dir).glob("*/*.log")).read_text()
    assert "acc_seg without a host sync (bitwise mmseg's) in mmseg.models.decode_heads" in log
    from mmseg.models.decode_heads import decode_head
    from mmseg.models.losses import accuracy

    assert decode_head.accuracy is accuracy, "the swap outlived the run"
