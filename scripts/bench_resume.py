"""Benchmark resuming an iteration-based run at iteration k: stock mmengine vs seglab.

Prints figures, asserts nothing:
    .venv/bin/python scripts/bench_resume.py [--ks 0 500 2000] [--images 200]

Same config and data for both: SegFormer-B0, VOC-layout images at VOC's 375x500
with mmseg's VOC training pipeline (RandomResize 0.5-2.0, 512 crop, flip,
photometric distortion), batch 2, 2 persistent workers, IterBasedTrainLoop +
InfiniteSampler. A one-iteration checkpoint is re-labelled as iteration k
(weights and state are irrelevant to the timing). Each run is a fresh process;
"launch" is the time from starting it to the end of the first new training
step; "resume" is from ``before_train`` to the start of that step (its batch
in hand): the part k can change.
Stock: mmengine's Runner on the config as written (replays k batches). seglab:
``seglab.engine.runner.train`` (doctor, guards, sampler-level skip).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VOC_DEMO = REPO_ROOT / "configs" / "demo" / "segformer_mit-b0_synth-voc_v1.0.py"
CONFIG = f"""_base_ = [{str(VOC_DEMO)!r}]
crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
model = dict(data_preprocessor=dict(size=crop_size))
train_dataloader = dict(batch_size=2, num_workers=2, persistent_workers=True,
                        sampler=dict(type='InfiniteSampler', shuffle=True),
                        dataset=dict(pipeline=train_pipeline))
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=1)
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None
param_scheduler = [dict(type='PolyLR', by_epoch=False, begin=0, end=1000000, eta_min=0.0)]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=1000000, save_best=None,
                                     save_last=False),
                     logger=dict(interval=1, log_metric_by_epoch=False))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
"""


def child(mode: str, config: str, work_dir: str, checkpoint: str, k: int, t0: float,
          out: str) -> None:
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS

    times: dict[str, float] = {}

    @HOOKS.register_module(force=True)
    class FirstStepTimer(Hook):
        priority = "LOWEST"

        def before_train(self, runner) -> None:
            times["before_train"] = time.time()

        def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
            times.setdefault("first_batch", time.time())

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            if "first_step" not in times:
                times["first_step"] = time.time()
                Path(out).write_text(json.dumps({
                    "launch_s": times["first_step"] - t0,
                    "resume_s": times["first_batch"] - times["before_train"]}))

    options = {"train_cfg.max_iters": k + 1, "custom_hooks": [dict(type="FirstStepTimer")]}
    resume = checkpoint if k > 0 else False
    if mode == "seglab":
        from seglab.engine.runner import train

        train(config, work_dir=work_dir, resume=resume, cfg_options=options)
        return
    from mmengine.config import Config
    from mmengine.runner import Runner

    cfg = Config.fromfile(config)
    cfg.merge_from_dict(options)
    cfg.work_dir = work_dir
    if resume:
        cfg.resume, cfg.load_from = True, checkpoint
    Runner.from_cfg(cfg).train()


def make_checkpoints(config: Path, root: Path, ks: list[int]) -> dict[int, Path]:
    """One real iteration's checkpoint, re-labelled as iteration k for each k."""
    import torch

    from seglab.engine.checkpoint import load_checkpoint_file
    from seglab.engine.runner import train

    first = root / "first"
    train(str(config), work_dir=str(first), cfg_options={"default_hooks.checkpoint.interval": 1})
    state = load_checkpoint_file(str(first / "iter_1.pth"))
    paths = {}
    for k in ks:
        state["meta"]["iter"] = k
        paths[k] = root / f"iter_{k}.pth"
        torch.save(state, paths[k])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[0, 500, 2000])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, config, work_dir, ckpt, k, t0, out = args.child
        child(mode, config, work_dir, ckpt, int(k), float(t0), out)
        return

    from seglab.data.synth import write_synth_dataset

    root = Path(tempfile.mkdtemp(prefix="bench_resume_"))
    data = write_synth_dataset("voc", root / "data", num_train=args.images, num_val=2, seed=0,
                               size=(375, 500))
    config = root / "iter_voc.py"
    config.write_text(CONFIG.replace("dataset=dict(pipeline=train_pipeline))",
                                     f"dataset=dict(data_root={str(data.root)!r}, "
                                     "pipeline=train_pipeline))"))
    checkpoints = make_checkpoints(config, root, args.ks)
    print(f"{args.images} images at 375x500, batch 2, 2 workers, {Path.cwd()}; "
          f"work in {root}")
    print(f"{'k':>6} {'stock launch':>13} {'seglab launch':>14} {'ratio':>6} "
          f"{'stock resume':>13} {'seglab resume':>14} {'ratio':>6}")
    for k in args.ks:
        row = {}
        for mode in ("stock", "seglab"):
            out = root / f"{mode}_{k}.json"
            t0 = time.time()
            subprocess.run([sys.executable, __file__, "--child", mode, str(config),
                            str(root / f"{mode}_{k}"), str(checkpoints[k]), str(k), str(t0),
                            str(out)], cwd=REPO_ROOT, check=True, capture_output=True)
            row[mode] = json.loads(out.read_text())
        s, g = row["stock"], row["seglab"]
        print(f"{k:>6} {s['launch_s']:>12.1f}s {g['launch_s']:>13.1f}s "
              f"{s['launch_s'] / g['launch_s']:>5.1f}x {s['resume_s']:>12.2f}s "
              f"{g['resume_s']:>13.2f}s {s['resume_s'] / g['resume_s']:>5.1f}x", flush=True)


if __name__ == "__main__":
    main()
