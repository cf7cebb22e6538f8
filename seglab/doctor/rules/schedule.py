"""Rules on the loop, the schedulers, validation, checkpoints and ``save_best``.

Mistakes in how the run is counted: an infinite sampler under an epoch loop,
schedulers or checkpoints counting epochs in an iteration loop, a decay that
ends before or after training, validation or saving that never happens, a
``save_best`` key the evaluator does not produce.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from seglab.config.walk import schedulers
from seglab.doctor.finding import Finding
from seglab.doctor.plan import Facts
from seglab.doctor.rules import rule

# IoUMetric's iou_metrics entry -> the keys it returns (aAcc always).
METRIC_KEYS = {"mIoU": ("mIoU", "mAcc"), "mDice": ("mDice", "mAcc"),
               "mFscore": ("mFscore", "mPrecision", "mRecall", "mAcc")}


@rule
def sampler_vs_loop(facts: Facts) -> Iterator[Finding]:
    sampler = facts.cfg.train_dataloader.get("sampler", {}).get("type", "")
    if facts.epoch_loop and "Infinite" in str(sampler):
        yield Finding(
            "error", "sampler-loop", "train_dataloader.sampler.type",
            f"an epoch-based loop over {sampler} never finishes an epoch, so no checkpoint and "
            "no validation ever happen (seed 002; mmseg #2566, #2912)",
            "train_dataloader.sampler = dict(type='DefaultSampler', shuffle=True)")


@rule
def scheduler_vs_loop(facts: Facts) -> Iterator[Finding]:
    scheds = schedulers(facts.cfg)
    total = facts.plan.total_iters
    for i, sched in enumerate(scheds):
        key = f"param_scheduler.{i}"
        by_epoch = sched.get("by_epoch", True)
        if by_epoch and not facts.epoch_loop:
            yield Finding(
                "error", "scheduler-by-epoch", f"{key}.by_epoch",
                f"{sched.get('type')} counts epochs but the loop is iteration-based: it steps "
                "once, at the very end, so the LR never changes during training",
                f"{key}.by_epoch=False with begin/end in iterations")
            continue
    decay = scheds[-1] if scheds else None
    if decay is None or total is None or "end" not in decay:
        return
    key = f"param_scheduler.{len(scheds) - 1}"
    by_epoch = decay.get("by_epoch", True)
    begin = facts.to_iters(decay.get("begin", 0), by_epoch)
    end = facts.to_iters(decay["end"], by_epoch)
    if end is None or begin is None:
        return
    stop = (f"iteration {total:,} (epoch {facts.plan.max_epochs})" if facts.epoch_loop
            else f"iteration {total:,}")
    unit = "epoch" if by_epoch else "iteration"
    fixed_end = facts.plan.max_epochs if by_epoch and facts.epoch_loop else total
    if end > total:
        left = ((1 - (total - begin) / (end - begin)) ** decay.get("power", 1.0)
                if decay.get("type") == "PolyLR" and end > begin else None)
        share = f"; {left:.1%} of the decay is still ahead when training stops" if left else ""
        yield Finding(
            "warning" if left is None or left > 0.05 else "info", "scheduler-end",
            f"{key}.end",
            f"{decay.get('type')} ends at {unit} {decay['end']} ({int(end):,} iterations) but "
            f"training stops at {stop}: the LR never reaches eta_min{share}",
            f"{key}.end={fixed_end} (the loop length in the scheduler's unit)")
    elif end < 0.9 * total:
        yield Finding(
            "warning", "scheduler-end", f"{key}.end",
            f"{decay.get('type')} ends at {unit} {decay['end']} ({int(end):,} iterations) but "
            f"training stops at {stop}: the last {1 - end / total:.0%} of training runs at "
            "the final LR", f"{key}.end={fixed_end}, or shorten the loop")


@rule
def validation_and_checkpoints(facts: Facts) -> Iterator[Finding]:
    cfg, plan = facts.cfg, facts.plan
    length = plan.max_epochs if facts.epoch_loop else plan.max_iters
    unit = "epochs" if facts.epoch_loop else "iterations"
    if length is None:
        return
    if cfg.get("val_cfg") and cfg.train_cfg.get("val_begin", 1) > length:
        yield Finding(
            "error", "val-interval", "train_cfg.val_begin",
            f"validation begins after training ends ({length} {unit}): no mIoU, no best "
            "checkpoint", f"train_cfg.val_begin <= {length}")
    elif cfg.get("val_cfg") and cfg.train_cfg.get("val_interval", 1) > length:
        yield Finding(
            "warning", "val-interval", "train_cfg.val_interval",
            f"val_interval {cfg.train_cfg.val_interval} is longer than training ({length} "
            f"{unit}): validation runs once, at the end, so a failing run is found late and "
            "save_best has one candidate", f"train_cfg.val_interval <= {length}")
    ckpt = cfg.get("default_hooks", {}).get("checkpoint") or {}
    if ckpt.get("by_epoch", True) and not facts.epoch_loop:
        yield Finding(
            "error", "checkpoint-by-epoch", "default_hooks.checkpoint.by_epoch",
            "CheckpointHook counts epochs in an iteration-based loop: nothing is saved until "
            "training ends, so an interruption loses the whole run",
            "default_hooks.checkpoint.by_epoch=False with interval in iterations")
    elif ckpt.get("interval", -1) > length:
        yield Finding(
            "warning", "checkpoint-interval", "default_hooks.checkpoint.interval",
            f"checkpoint interval {ckpt.interval} is longer than training ({length} {unit}): "
            "only the final checkpoint is written, an interruption loses the whole run",
            f"default_hooks.checkpoint.interval <= {length}")


def _evaluator_keys(evaluator: Any) -> set[str]:
    metrics = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
    keys = set()
    for metric in metrics:
        if not isinstance(metric, dict):
            continue
        if "IoUMetric" in str(metric.get("type", "")):
            keys.add("aAcc")
            for name in metric.get("iou_metrics", ["mIoU"]):
                keys.update(METRIC_KEYS.get(name, ()))
        else:
            return set()  # another metric: its keys are not known here
    return keys


@rule
def save_best_key(facts: Facts) -> Iterator[Finding]:
    ckpt = facts.cfg.get("default_hooks", {}).get("checkpoint") or {}
    wanted = ckpt.get("save_best")
    if not wanted or wanted == "auto" or not facts.cfg.get("val_evaluator"):
        return
    produced = _evaluator_keys(facts.cfg.val_evaluator)
    for key in [wanted] if isinstance(wanted, str) else list(wanted):
        if produced and key not in produced:
            yield Finding(
                "error", "save-best-key", "default_hooks.checkpoint.save_best",
                f"save_best={key!r} but the evaluator produces {sorted(produced)}: the best "
                "checkpoint is never saved (CheckpointHook fails at the first validation)",
                f"save_best one of {sorted(produced)}, or add it to val_evaluator.iou_metrics")
