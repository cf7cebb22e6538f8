"""Rules on the learning rate: against the official recipe, the world size, auto_scale_lr,
and when fine-tuning or resuming from a checkpoint.

The recipe's LR is moved to the run's total batch by the linear scaling rule;
a fine-tuning LR is judged against the checkpoint's last LR where it can be read,
and ``resume=True`` in a config is flagged because it ignores the new schedule.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

from seglab.config.walk import has_pretrained_backbone
from seglab.doctor.finding import Finding
from seglab.doctor.plan import Facts
from seglab.doctor.rules import rule

LR_RATIO_TOLERANCE = 2.0  # per-image LR further than 2x from the recipe's is flagged


@rule
def learning_rate(facts: Facts) -> Iterator[Finding]:
    cfg, plan, recipe = facts.cfg, facts.plan, facts.plan.recipe
    if plan.lr is None:
        return
    gpu_count = cfg.get("gpu_count")
    if facts.gpus_given and isinstance(gpu_count, int) and gpu_count != facts.gpus_given:
        yield Finding(
            "warning", "lr-world-size", "gpu_count",
            f"the config computes its batch and LR for gpu_count={gpu_count} but the run "
            f"uses {facts.gpus_given} processes: the total batch is "
            f"{facts.gpus_given * plan.batch_per_gpu}, not {gpu_count * plan.batch_per_gpu}, "
            "and the hand-scaled LR no longer matches it",
            f"gpu_count={facts.gpus_given}, or the recipe LR with auto_scale_lr.enable=True")
    if recipe is None:
        return
    scaled = recipe.lr_for_batch(plan.total_batch)
    hand_scaled = (plan.total_batch != recipe.total_batch
                   and math.isclose(plan.lr, scaled, rel_tol=1e-6))
    if hand_scaled and plan.auto_scale_lr:
        yield Finding(
            "error", "lr-scaled-twice", "auto_scale_lr.enable",
            f"lr {plan.lr:g} is already the recipe's {recipe.lr:g} scaled to a batch of "
            f"{plan.total_batch}, and auto_scale_lr scales it again to {plan.effective_lr:g}",
            f"optim_wrapper.optimizer.lr={recipe.lr:g} (auto_scale_lr does the scaling)")
    elif hand_scaled:
        yield Finding(
            "info", "lr-hand-scaled", "optim_wrapper.optimizer.lr",
            f"lr {plan.lr:g} = {recipe.lr:g} x {plan.total_batch}/{recipe.total_batch} by hand "
            "(seed 003): right only for this GPU count", f"optim_wrapper.optimizer.lr="
            f"{recipe.lr:g} and auto_scale_lr=dict(enable=True, base_batch_size="
            f"{recipe.total_batch})")
    if cfg.get("load_from") or cfg.get("resume"):
        return  # fine-tuning LRs are judged against the checkpoint (rule below)
    if not has_pretrained_backbone(cfg.model):
        return  # recipes start from ImageNet weights; from-scratch runs are another regime
    ratio = plan.effective_lr / scaled
    if not 1 / LR_RATIO_TOLERANCE <= ratio <= LR_RATIO_TOLERANCE:
        effect = ("learning crawls: seed 000 v1 trained at 0.27x and reached 26.6 mIoU "
                  "against a published 45.6" if ratio < 1 else
                  "pretrained features get overwritten and the loss may diverge")
        yield Finding(
            "warning", "lr-vs-recipe", "optim_wrapper.optimizer.lr",
            f"LR {plan.effective_lr:g} at a total batch of {plan.total_batch} is {ratio:.2g}x "
            f"the official recipe ({recipe.lr:g} at {recipe.total_batch}, i.e. {scaled:.3g} "
            f"at {plan.total_batch}; {recipe.config}): {effect}",
            f"optim_wrapper.optimizer.lr={scaled:.3g}, or {recipe.lr:g} with auto_scale_lr")


@rule
def fine_tune_and_resume(facts: Facts) -> Iterator[Finding]:
    from seglab.engine.resume import lr_jump_warning, read_saved_run, resume_report

    cfg, plan = facts.cfg, facts.plan
    load_from = cfg.get("load_from")
    if not load_from or plan.lr is None:
        return
    saved = read_saved_run(load_from) if os.path.isfile(load_from) else None
    if cfg.get("resume"):
        changes = resume_report(saved, cfg) if saved else []
        ignored = [line for line in changes if "IGNORED" in line]
        yield Finding(
            "warning" if ignored or not saved else "info", "resume-in-config", "resume",
            f"resume=True restores the optimizer (with its LR) and the scheduler from "
            f"{load_from}: this config's LR, warm-up and schedule are ignored (seed 001 v3)"
            + (": " + "; ".join(ignored) if ignored else ""),
            "drop resume=True and use `seglab train --finetune-from CKPT` for a new schedule; "
            "`--resume` on the command line to continue a run")
        return
    if saved is not None:
        warning = lr_jump_warning(saved, plan.effective_lr)
        if warning:
            yield Finding("warning", "finetune-lr", "optim_wrapper.optimizer.lr",
                                warning, f"optim_wrapper.optimizer.lr <= {min(saved.last_lrs):g}")
        return
    recipe = plan.recipe
    if recipe is not None and plan.effective_lr >= 0.5 * recipe.lr_for_batch(plan.total_batch):
        yield Finding(
            "warning", "finetune-lr", "optim_wrapper.optimizer.lr",
            f"fine-tuning {load_from} at LR {plan.effective_lr:g}, the from-scratch level "
            f"({recipe.lr:g} at {recipe.total_batch}): on a converged model this destroys it "
            "(seed 000 v1.1: mIoU fell to ~0)",
            "start at or below the checkpoint's last LR (typically 10x lower)")
