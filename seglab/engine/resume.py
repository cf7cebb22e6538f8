"""What ``--resume`` keeps and what ``--finetune-from`` resets, said before training starts.

``--resume`` continues exactly: weights, optimizer state (including each group's
current LR) and scheduler positions come from the checkpoint, so a new LR,
warm-up or schedule in the config is silently ignored (seed 001 V3).
``--finetune-from`` loads weights only and starts a fresh optimizer and schedule
at iteration 0. Raising the LR above a converged checkpoint's last LR destroys
it (seed 000 V1.1: mIoU collapsed to ~0), so both paths say so loudly.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmengine.config import Config

from seglab.config.diff import MISSING, diff_configs
from seglab.engine.checkpoint import load_checkpoint_file

# Fields whose new values --resume replaces with the checkpoint's state.
RESTORED_BY_RESUME = ("optim_wrapper.optimizer.", "param_scheduler.")


@dataclass
class SavedRun:
    cfg: Config
    epoch: int
    iter: int
    last_lrs: list[float]


def read_saved_run(path: str) -> SavedRun:
    """Config, position and last LRs stored in a checkpoint (tensors memory-mapped, not read)."""
    state = load_checkpoint_file(path, map_location="cpu", mmap=True)
    meta = state.get("meta", {})
    groups = state.get("optimizer", {}).get("param_groups", [])
    cfg_text = meta.get("cfg", "")  # absent in weights-only files (e.g. model-zoo downloads)
    return SavedRun(cfg=Config.fromstring(cfg_text, file_format=".py") if cfg_text else Config(),
                    epoch=int(meta.get("epoch", 0)), iter=int(meta.get("iter", 0)),
                    last_lrs=[float(g["lr"]) for g in groups if "lr" in g])


def base_lr(cfg: Config) -> float:
    return float(cfg.optim_wrapper.optimizer.lr)


# Constructors that build the same optimizer updates (seglab's joins mmengine's groups per step)
SAME_UPDATES_CONSTRUCTORS = {MISSING, "DefaultOptimWrapperConstructor",
                             "StepJoinedGroupsConstructor"}


def resume_report(saved: SavedRun, cfg: Config) -> list[str]:
    """One line per changed hyper-parameter: restored from the checkpoint, or in effect."""
    if not saved.cfg.keys():
        return []  # no stored config to compare with
    lines = []
    for key, old, new in diff_configs(saved.cfg, cfg):
        if not key.startswith(("optim_wrapper", "param_scheduler", "train_cfg", "model")):
            continue
        if key == "optim_wrapper.constructor" and {old, new} <= SAME_UPDATES_CONSTRUCTORS:
            continue  # a run started before seglab joined the groups: the same updates
        effect = ("IGNORED: restored from the checkpoint" if key.startswith(RESTORED_BY_RESUME)
                  else "takes effect")
        lines.append(f"{key}: {old!r} -> {new!r} ({effect})")
    if any("IGNORED" in line for line in lines):
        lines.append("To train with the new optimizer/schedule settings from these weights, use "
                     "--finetune-from CHECKPOINT instead of --resume.")
    return lines


def lr_jump_warning(saved: SavedRun, new_lr: float) -> str | None:
    """Loud warning when a run would start above the checkpoint's last LR."""
    if not saved.last_lrs or new_lr <= min(saved.last_lrs):
        return None
    return (f"LR {new_lr:g} is above the checkpoint's last LR {min(saved.last_lrs):g} "
            f"(epoch {saved.epoch}, iter {saved.iter}). Raising the LR on a converged model "
            "can destroy it (seed 000 v1.1: mIoU fell to ~0); fine-tune at or below the "
            "last LR.")
