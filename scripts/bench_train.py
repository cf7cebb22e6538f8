"""Benchmark the training step: stock mmseg/mmengine vs seglab on the same model and inputs.

Prints figures, asserts nothing:
    .venv/bin/python scripts/bench_train.py [--repeats 3] [--steps 20] [--model b2]

Both sides build mmseg's own SegFormer config (``mmseg::segformer/...``: its AdamW with
``paramwise_cfg``), randomly initialised, on the same seed, and train on the same random
batches. Stock builds the optimizer with mmengine's ``DefaultOptimWrapperConstructor`` (one
param group per tensor); seglab with ``StepJoinedGroupsConstructor`` (the step runs over the
groups joined by equal settings). Two figures:
  * the optimizer step alone (gradients fixed), with torch's default for these tensors
    (for-loop on the CPU) and with ``foreach=True`` (what torch picks for CUDA tensors);
  * a whole training step (forward, loss, backward, step) at a small crop, in img/s, and
    the largest weight difference between the sides after it (0 means bitwise equal).
  * mmseg's ``RandomCrop(cat_max_ratio=0.75)`` vs seglab's ``CountingRandomCrop`` on
    512x512 crops of 683x512 masks (ADE20K's size after the resize), per image on one
    worker, and whether every output was bitwise equal.
Sides alternate within each repeat; medians over the repeats.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

CONFIGS = {"b0": "segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py",
           "b2": "segformer/segformer_mit-b2_8xb2-160k_ade20k-512x512.py"}


def build(model_key: str, joined: bool, foreach: bool | None):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from seglab.config.walk import mmseg_config_dir
    from seglab.engine.param_groups import StepJoinedGroupsConstructor

    init_default_scope("mmseg")
    cfg = Config.fromfile(str(mmseg_config_dir() / CONFIGS[model_key]))
    cfg.model.backbone.init_cfg = None  # random weights: nothing is downloaded
    cfg.model.data_preprocessor = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    optim = copy.deepcopy(cfg.optim_wrapper.to_dict())
    optim["optimizer"]["foreach"] = foreach
    paramwise = optim.pop("paramwise_cfg")
    if joined:
        wrapper = StepJoinedGroupsConstructor(optim, paramwise)(model)
    else:
        from mmengine.optim import DefaultOptimWrapperConstructor

        wrapper = DefaultOptimWrapperConstructor(optim, paramwise)(model)
    return model, wrapper


def time_optimizer_step(model_key: str, joined: bool, foreach: bool | None,
                        steps: int) -> float:
    model, wrapper = build(model_key, joined, foreach)
    torch.manual_seed(1)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    wrapper.optimizer.step()  # state created outside the timing
    start = time.perf_counter()
    for _ in range(steps):
        wrapper.optimizer.step()
    return (time.perf_counter() - start) / steps


def batch(crop: int, classes: int, seed: int):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(2, 3, crop, crop, generator=generator)
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(crop, crop), pad_shape=(crop, crop)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, classes, (1, crop, crop),
                                                         generator=generator))
        samples.append(sample)
    return inputs, samples


def time_train_steps(model_key: str, joined: bool, steps: int, crop: int):
    model, wrapper = build(model_key, joined, None)
    model.train()
    classes = model.decode_head.num_classes
    data = [batch(crop, classes, seed) for seed in range(steps + 1)]

    def one(inputs, samples) -> None:
        losses = model.loss(inputs, samples)
        wrapper.update_params(sum(v for k, v in losses.items() if "loss" in k))

    one(*data[0])  # the first step builds state and caches
    start = time.perf_counter()
    for inputs, samples in data[1:]:
        one(inputs, samples)
    elapsed = time.perf_counter() - start
    return 2 * steps / elapsed, [p.detach().clone() for p in model.parameters()]


def time_random_crop(counting: bool, images: int) -> tuple[float, list]:
    import numpy as np
    from mmseg.datasets.transforms import RandomCrop

    from seglab.data.transforms import CountingRandomCrop

    transform = (CountingRandomCrop if counting else RandomCrop)(crop_size=(512, 512),
                                                                 cat_max_ratio=0.75)
    rng = np.random.default_rng(0)
    scenes = []
    for _ in range(images):  # a few large regions, as scenes are
        mask = np.zeros((512, 683), np.uint8)
        for label in rng.integers(0, 150, size=6):
            y, x = rng.integers(0, 400), rng.integers(0, 560)
            mask[y:y + rng.integers(50, 400), x:x + rng.integers(50, 500)] = label
        scenes.append({"img": np.zeros((512, 683, 3), np.uint8), "gt_seg_map": mask,
                       "seg_fields": ["gt_seg_map"]})
    np.random.seed(0)
    start = time.perf_counter()
    outputs = [transform(dict(scene))["gt_seg_map"] for scene in scenes]
    return (time.perf_counter() - start) / images, outputs


SIDES = ("stock", "seglab")


def interleaved(repeats: int, run) -> dict[str, list]:
    """``run(seglab)`` for both sides ``repeats`` times, the side that goes first alternating."""
    results: dict[str, list] = {side: [] for side in SIDES}
    for repeat in range(repeats):
        for side in SIDES if repeat % 2 == 0 else SIDES[::-1]:
            results[side].append(run(side == "seglab"))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps timed")
    parser.add_argument("--train-steps", type=int, default=4)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--model", choices=sorted(CONFIGS), default="b2")
    args = parser.parse_args()
    from mmengine.logging import MMLogger

    MMLogger.get_instance("bench_train", log_level="WARNING")  # mmengine's per-tensor lines

    _, stock_wrapper = build(args.model, False, None)
    _, joined_wrapper = build(args.model, True, None)
    from seglab.engine.param_groups import join_param_groups

    print(f"SegFormer-MiT-{args.model.upper()} ({CONFIGS[args.model]}): "
          f"{len(stock_wrapper.optimizer.param_groups)} param groups (mmengine), "
          f"{len(join_param_groups(joined_wrapper.optimizer.param_groups))} joined (seglab); "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for foreach in (None, True):
        times = interleaved(args.repeats, lambda seglab, foreach=foreach: time_optimizer_step(
            args.model, seglab, foreach, args.steps))
        stock, ours = (statistics.median(times[side]) for side in SIDES)
        label = "default (for-loop on CPU)" if foreach is None else "foreach=True (CUDA's default)"
        print(f"optimizer step, {label}: stock {stock * 1e3:.1f} ms, seglab {ours * 1e3:.1f} ms, "
              f"ratio {stock / ours:.2f}x")

    runs = interleaved(args.repeats, lambda seglab: time_train_steps(
        args.model, seglab, args.train_steps, args.crop))
    weights = [run[-1][1] for run in runs.values()]  # the last repeat's weights of each side
    diff = max((a - b).abs().max().item() for a, b in zip(*weights, strict=True))
    stock, ours = (statistics.median(rate for rate, _ in runs[side]) for side in SIDES)
    print(f"training step at {args.crop}x{args.crop}, batch 2: stock {stock:.2f} img/s, seglab "
          f"{ours:.2f} img/s, ratio {ours / stock:.2f}x; largest weight difference after "
          f"{args.train_steps + 1} steps: {diff:.3g}")

    import numpy as np

    runs = interleaved(args.repeats, lambda seglab: time_random_crop(seglab, 40))
    crops = [run[-1][1] for run in runs.values()]
    same = all(np.array_equal(a, b) for a, b in zip(*crops, strict=True))
    stock, ours = (statistics.median(seconds for seconds, _ in runs[side]) for side in SIDES)
    print(f"RandomCrop(cat_max_ratio=0.75), 512x512 of 683x512: stock {stock * 1e3:.1f} ms, "
          f"seglab {ours * 1e3:.1f} ms per image, ratio {stock / ours:.2f}x; outputs "
          f"{'bitwise equal' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
