"""The main job on the embedded default: generate data, train, test, show where everything is."""

from __future__ import annotations

import os.path as osp
import time

from seglab import REPO_ROOT

DEMO_CONFIG = REPO_ROOT / "configs" / "demo" / "segformer_mit-b0_synth-voc_v1.0.py"
DEMO_DATA = {"num_train": 384, "num_val": 48, "seed": 0}


def best_checkpoint(work_dir: str) -> str:
    """The ``save_best`` checkpoint, else the newest one that loads."""
    from seglab.engine.checkpoint import best_or_latest_checkpoint

    found = best_or_latest_checkpoint(work_dir)
    if found is None:
        raise FileNotFoundError(f"no checkpoint in {work_dir}")
    return found


def run_demo(data_dir: str = "data/synth", work_dir: str | None = None) -> dict[str, float]:
    """Synthesize VOC-layout data, train the demo config, test its best checkpoint."""
    from seglab.data.synth import write_synth_dataset
    from seglab.engine.runner import test, train

    start = time.monotonic()
    summary = write_synth_dataset("voc", data_dir, **DEMO_DATA)
    work_dir = work_dir or osp.join("work_dirs", time.strftime("demo_%Y%m%d_%H%M%S"))
    runner = train(str(DEMO_CONFIG), work_dir=work_dir, data_root=str(summary.root))
    train_log_dir = runner.log_dir
    checkpoint = best_checkpoint(work_dir)
    metrics = test(str(DEMO_CONFIG), checkpoint, work_dir=work_dir, data_root=str(summary.root))
    from seglab.results.report import build_report

    report, _ = build_report(work_dir)
    minutes = (time.monotonic() - start) / 60
    print(
        "\n".join([
            "",
            "seglab demo finished",
            f"  wall time      {minutes:.1f} min",
            f"  test mIoU      {metrics['mIoU']:.2f}  (aAcc {metrics['aAcc']:.2f}, "
            f"mAcc {metrics['mAcc']:.2f})",
            f"  dataset        {summary.root}",
            f"  config         {DEMO_CONFIG.relative_to(REPO_ROOT)}",
            f"  checkpoint     {checkpoint}",
            f"  training log   {osp.join(train_log_dir, osp.basename(train_log_dir) + '.log')}",
            f"  TensorBoard    tensorboard --logdir {osp.join(train_log_dir, 'vis_data')}",
            f"  report         {report} (per-class table, curves, confusions, overlays)",
            f"  resume         seglab train {DEMO_CONFIG.relative_to(REPO_ROOT)} "
            f"--work-dir {work_dir} --resume",
        ]),
        flush=True,
    )
    return metrics
