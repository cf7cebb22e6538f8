"""Train and test runs: mmseg's ``tools/train.py``/``test.py`` logic plus seglab's guards."""

from __future__ import annotations

import logging
import os
import os.path as osp
import uuid
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from seglab import register  # noqa: F401  (safe checkpoint loader, CPU DDP)
from seglab.config.adapt import (
    adapt_to_device,
    enable_amp,
    fit_dataloader_workers,
    fit_world_size,
)
from seglab.config.loading import ConfigError, default_work_dir, load_config
from seglab.data.bad_samples import use_sample_checks
from seglab.data.transforms import use_counting_random_crop
from seglab.engine import startup
from seglab.engine.checkpoint import (
    FoundCheckpoint,
    find_latest_checkpoint,
    saves_optimizer,
)
from seglab.engine.disk_space import check_checkpoint_space, check_work_dir_writable
from seglab.engine.fast_resume import use_fast_resume
from seglab.engine.hooks.deferred_runtime_info_hook import use_deferred_runtime_info
from seglab.engine.hooks.preemption_hook import RunPreempted, release_stop_signals
from seglab.engine.param_groups import use_joined_param_groups
from seglab.engine.work_dir_lock import LOCK_WAIT_REQUEUED_S, LOCK_WAIT_S, lock_work_dir
from seglab.launch.device import check_cuda_usable
from seglab.launch.distributed import die_with_launcher, init_cpu_process_group
from seglab.launch.env import launch_rank, launch_world_size
from seglab.launch.slurm import slurm_rendezvous
from seglab.models.accuracy import use_sync_free_accuracy
from seglab.platform.mmcv_ops import check_mmcv_kernels
from seglab.results.status import mark_run_state
from seglab.weights.coverage import DEFAULT_MIN_COVERAGE


def _build_runner(cfg: Config) -> Runner:
    return RUNNERS.build(cfg) if "runner_type" in cfg else Runner.from_cfg(cfg)


def _existing_checkpoints(work_dir: str) -> list[str]:
    if not osp.isdir(work_dir):
        return []
    return sorted(f for f in os.listdir(work_dir) if f.endswith(".pth"))


def _set_work_dir(cfg: Config, config_path: str, work_dir: str | None) -> None:
    """CLI > ``work_dir`` in the file > ``work_dirs/<config name>``, as in mmseg's tools."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get("work_dir") is None:
        cfg.work_dir = default_work_dir(config_path)


def _prepare(cfg: Config, launcher: str) -> list[str]:
    """Launcher and device fit shared by train and test; returns what was adapted.

    Refuses, before anything is built, a config that needs an mmcv CUDA kernel this
    mmcv was built without (the GPUs themselves are checked first of all: see
    ``check_cuda_usable`` in ``train``/``test``).
    """
    check_mmcv_kernels(cfg, "cuda" if torch.cuda.is_available() else "cpu")
    cfg.launcher = launcher
    notes = adapt_to_device(cfg, launcher) + fit_dataloader_workers(cfg)
    if launcher == "pytorch" and die_with_launcher():
        notes.append("this rank is killed with its torchrun agent (no orphan after kill -9)")
    if launcher == "slurm":
        notes += slurm_rendezvous()
    if launcher in ("pytorch", "slurm") and not torch.cuda.is_available():
        init_cpu_process_group()  # mmengine's init_dist would call torch.cuda.set_device
    if cfg.get("visualizer"):
        # mmengine returns the existing visualizer of the same name, so a second run in one
        # process (demo, sweeps, notebooks) would log its scalars into the first run's folder
        cfg.visualizer.name = f"{cfg.visualizer.get('name', 'visualizer')}_{uuid.uuid4().hex[:8]}"
    return notes


def _log_notes(notes: list[str]) -> None:
    for note in notes:
        print_log(f"seglab: adapted for this machine: {note}", logger="current")


def train(
    config: str,
    work_dir: str | None = None,
    resume: bool | str = False,
    cfg_options: dict[str, Any] | None = None,
    data_root: str | None = None,
    launcher: str = "none",
    overwrite: bool = False,
    finetune_from: str | None = None,
    ignore_doctor_errors: bool = False,
    min_pretrained_coverage: float = DEFAULT_MIN_COVERAGE,
    on_nonfinite: str = "stop",
    amp: bool = False,
    amp_dtype: str | None = None,
    allow_cpu: bool = False,
    scale_lr: bool = False,
    as_written: bool = False,
    skip_data_check: bool = False,
    on_bad_sample: str = "raise",
    max_bad_samples: int | None = None,
) -> Runner:
    """Train ``config``; ``resume=True`` continues from the newest checkpoint in the work dir,
    ``resume="auto"`` too, or starts a new run where there is none (a requeued job).

    ``finetune_from`` loads only the weights of a checkpoint and starts a fresh
    optimizer and schedule. Refuses, before building anything, to resume from
    nothing and to start a fresh run over an existing run's checkpoints (which it
    would overwrite); says which changed settings a resume ignores. ``amp`` and
    ``amp_dtype`` are mmseg's ``--amp`` and seglab's ``--amp-dtype bf16|fp16``;
    ``allow_cpu`` trains on the CPU of a machine whose GPUs torch cannot use. A config
    whose ``gpu_count`` is not the world size logs the total batch written and now;
    ``scale_lr`` scales the LR to it (linear rule), ``as_written`` refuses to start.
    ``on_bad_sample``/``max_bad_samples``: what a sample that fails to load does (see
    :func:`seglab.data.bad_samples.use_sample_checks`).
    """
    timeline = startup.start()
    check_cuda_usable(allow_cpu)  # the machine first: before the data check decodes files
    cfg = load_config(config, cfg_options, data_root)
    fit_notes = enable_amp(cfg, amp, amp_dtype)
    _set_work_dir(cfg, config, work_dir)
    timeline.mark("config")
    # the config as written (before --resume/--finetune-from set load_from)
    plan, warnings = _run_doctor(cfg, config, launcher, ignore_doctor_errors)
    timeline.mark("doctor")
    # a gpu_count config on another world size: say so, scale the LR or refuse
    warnings += fit_world_size(cfg, launch_world_size(launcher), scale_lr, as_written)
    # before the resume report: it compares with the saved config, which has the swap
    fit_notes += (use_fast_resume(cfg) + use_joined_param_groups(cfg)
                  + use_counting_random_crop(cfg) + use_deferred_runtime_info(cfg))
    existing = _existing_checkpoints(cfg.work_dir)
    requeued = resume == "auto"
    found = (find_latest_checkpoint(cfg.work_dir, saves_optimizer(cfg))
             if resume is True or requeued else FoundCheckpoint(None))
    if resume == "auto":  # a (re)started cluster job: continue if there is a run, else start
        resume = found.path or False
    if isinstance(resume, str):
        if not osp.isfile(resume):
            raise ConfigError(f"--resume {resume!r}: no such checkpoint file")
        cfg.resume, cfg.load_from = True, resume
    elif resume:
        latest = found.path
        if latest is None:
            raise ConfigError(
                f"--resume: no loadable checkpoint found in work dir {cfg.work_dir!r}"
                + "".join(f"; passed over {why}" for why in found.passed_over)
                + ". Fix: drop --resume to start a new run, or pass --work-dir of the run to "
                "continue, or --resume PATH/TO/epoch_N.pth."
            )
        cfg.resume, cfg.load_from = True, latest
    if resume and finetune_from:
        raise ConfigError("--resume and --finetune-from exclude each other: resume continues "
                          "a run's optimizer and schedule, fine-tuning starts new ones.")
    if finetune_from is not None and not osp.isfile(finetune_from):
        raise ConfigError(f"--finetune-from {finetune_from!r}: no such checkpoint file")
    if existing and not overwrite and not resume:
        raise ConfigError(
            f"work dir {cfg.work_dir!r} already holds checkpoints ({', '.join(existing[:3])}"
            f"{', ...' if len(existing) > 3 else ''}); a new run would overwrite them"
            + "".join(f"; --resume passed over {why}" for why in found.passed_over)
            + ". Fix: add --resume to continue that run, --work-dir NEW_DIR for a new one, or "
            "--overwrite."
        )
    resume_from = cfg.load_from if resume else None
    if found.passed_over:  # say which file the run continues from, and why not a newer one
        warnings += [f"--resume passed over {why}" for why in found.passed_over]
        if resume_from:
            warnings.append(f"--resume continues from {resume_from}")
    warnings += _resume_warnings(cfg, resume_from, finetune_from)
    if finetune_from is not None:
        cfg.load_from, cfg.resume = finetune_from, False
    if on_bad_sample == "skip":  # the loader skips bad training samples and records them
        warnings += _run_data_check(cfg, config, ("train",), launcher, skip_data_check,
                                    errors_skipped_at_load=True)
        warnings += _run_data_check(cfg, config, ("val",), launcher, skip_data_check)
    else:
        warnings += _run_data_check(cfg, config, ("train", "val"), launcher, skip_data_check)
    timeline.mark("data check")
    check_work_dir_writable(cfg.work_dir)
    # before anything is built, a second run into this work dir is refused (its data check
    # read the first run's cache). A requeued job waits longer: the dead node's lock on a
    # shared disk can outlive it by an NFS lease. Other ranks stop with rank 0, as torchrun
    # and seglab's srun (--kill-on-bad-exit) ensure.
    lock = (lock_work_dir(cfg.work_dir, wait_s=LOCK_WAIT_REQUEUED_S if requeued else
                          LOCK_WAIT_S) if launch_rank(launcher) == 0 else None)
    try:
        notes = (fit_notes + _prepare(cfg, launcher)
                 + _use_class_metrics(cfg) + use_sample_checks(cfg, on_bad_sample, max_bad_samples)
                 + _add_guard_hooks(cfg, min_pretrained_coverage, on_nonfinite))
        runner = _build_runner(cfg)
        check_checkpoint_space(runner)  # the model exists now: its size is known
        timeline.mark("runner")
        _log_notes(notes)
        print_log(plan, logger="current")
        for line in warnings:
            print_log(f"seglab: {line}", logger="current", level=logging.WARNING)
        try:
            with use_sync_free_accuracy() as swapped:
                _log_notes(["acc_seg without a host sync (bitwise mmseg's) in "
                            + ", ".join(swapped)] if swapped else [])
                runner.train()
        except RunPreempted:
            raise  # the hook recorded it
        except KeyboardInterrupt:
            mark_run_state(cfg.work_dir, "stopped", error="KeyboardInterrupt")
            raise
        except Exception as err:  # mmengine calls no hook for a run that raises
            mark_run_state(cfg.work_dir, "failed", error=err)
            raise
        finally:  # a run that raised never reached after_train, which gives the signals back
            release_stop_signals(runner)
    finally:
        if lock is not None:
            lock.release()
    return runner


def _run_doctor(cfg: Config, config: str, launcher: str,
                ignore_errors: bool) -> tuple[str, list[str]]:
    """Run ``seglab doctor`` on the resolved config; refuse errors unless told otherwise.

    Returns the dry-run plan and the findings to log once the run's logger exists.
    """
    from seglab.doctor.config_doctor import examine_config, plan_text
    from seglab.doctor.finding import finding_line

    world = launch_world_size(launcher)
    report = examine_config(cfg, config, gpus=world)
    lines = [finding_line(f) for f in report.findings if f.severity != "info"]
    if report.errors and not ignore_errors:
        raise ConfigError(
            f"seglab doctor found {len(report.errors)} error(s) in {config}:\n  "
            + "\n  ".join(lines[:len(report.errors)])
            + "\nFix them, or pass --ignore-doctor-errors to train anyway.")
    plan = "seglab doctor plan:\n" + "\n".join(plan_text(report.plan))
    return plan, [f"doctor: {line}" for line in lines]


def _run_data_check(cfg: Config, config: str, splits: tuple[str, ...], launcher: str,
                    skip: bool, what: str = "train", errors_skipped_at_load: bool = False,
                    ) -> list[str]:
    """Decode every image and mask of the ``splits``' datasets before anything is built
    or written (``seglab data doctor``'s checks, cached per file under the data root);
    refuse errors unless ``skip``. Returns the warnings to log once the logger exists.

    Under a launcher every rank checks, as every rank runs the config doctor: all of
    them then stop with the same error, none builds a model or touches the work dir
    while another has refused, and no process group is needed yet. The ranks take
    turns on the data root's cache, so one decodes (on all cores) and the others read
    its results in seconds; the rank that decodes says so, rank 0 also prints progress.
    """
    if skip:
        return ["data check skipped (--skip-data-check): a bad image or mask is found only "
                "when it is loaded (it stops the run, or is skipped with --on-bad-sample skip)"]
    from seglab.doctor.dataset import check_data

    return check_data(cfg, config, splits, progress=launcher == "none" or launch_rank() == 0,
                      what=what, errors_skipped_at_load=errors_skipped_at_load)


def _add_hook(cfg: Config, hook: dict[str, Any], note: str) -> list[str]:
    """Append ``hook`` to ``custom_hooks`` unless the config already has one of its type."""
    hooks = list(cfg.get("custom_hooks", []))
    if any(h.get("type") == hook["type"] for h in hooks):
        return []
    cfg.custom_hooks = [*hooks, hook]
    return [f"custom_hooks += {hook['type']} ({note})"]


def _use_class_metrics(cfg: Config) -> list[str]:
    """Evaluate with ``ClassIoUMetric`` (mmseg's numbers + the per-class record) and record it."""
    from seglab.evaluation.class_iou_metric import swap_iou_metric
    from seglab.evaluation.record import RECORD_DIR

    swapped = swap_iou_metric(cfg)
    if not swapped:
        return []
    return [f"{swapped} IoUMetric -> ClassIoUMetric (same numbers, plus a confusion matrix)",
            *_add_hook(cfg, dict(type="ClassMetricsHook"),
                       f"per-class JSON/CSV in {RECORD_DIR}/, val/IoU/<class> scalars")]


def _add_guard_hooks(cfg: Config, min_pretrained_coverage: float,
                     on_nonfinite: str = "stop") -> list[str]:
    """Every seglab training run stops at the first NaN/Inf (or skips such steps, by policy)
    and checks what the pretrained weights covered (configs may inherit mmseg's own
    runtime, which has neither)."""
    notes = []
    if on_nonfinite == "skip" and cfg.optim_wrapper.get("type", "OptimWrapper") == "OptimWrapper":
        cfg.optim_wrapper.type = "SkipNonFiniteOptimWrapper"
        notes.append("optim_wrapper OptimWrapper -> SkipNonFiniteOptimWrapper (NaN/Inf "
                     "gradients skip the step)")
    what = ("skips NaN/Inf steps, stops after 5 in a row" if on_nonfinite == "skip"
            else "stops at the first NaN/Inf loss")
    return (notes + _add_hook(cfg, dict(type="NonFiniteLossHook", policy=on_nonfinite), what)
            + _add_hook(cfg, dict(type="RNGStateHook"), "--resume continues the random streams")
            + _add_hook(cfg, dict(type="RunStatusHook"), "run_status.json for `seglab status`")
            + _add_hook(cfg, dict(type="PreemptionCheckpointHook"),
                        "SIGUSR1/SIGTERM: checkpoint at this iteration (Slurm: requeue), stop")
            + _add_hook(cfg, dict(type="PretrainedCoverageHook",
                                  min_coverage=min_pretrained_coverage),
                        f"stops below {min_pretrained_coverage:.0%} pretrained coverage")
            + _add_hook(cfg, dict(type="StartupTimeHook"), "logs where the start-up went"))


def _resume_warnings(cfg: Config, resume_from: str | None,
                     finetune_from: str | None) -> list[str]:
    from seglab.engine.resume import base_lr, lr_jump_warning, read_saved_run, resume_report

    if finetune_from is not None:
        warning = lr_jump_warning(read_saved_run(finetune_from), base_lr(cfg))
        return [f"fine-tuning from {finetune_from}: " + warning] if warning else []
    if resume_from is None:
        return []
    report = resume_report(read_saved_run(resume_from), cfg)
    return [f"resuming from {resume_from}; changed since that run: " + line for line in report]


def trigger_visualization(cfg: Config, show_dir: str) -> str:
    """Save a prediction overlay for every test image (mmseg's default keeps every 50th).

    A relative ``show_dir`` is taken under the work dir, not the current
    directory. Returns the folder the images land in.
    """
    hook = cfg.default_hooks.get("visualization")
    if hook is None:
        raise ConfigError(
            "--show-dir needs default_hooks.visualization in the config "
            "(e.g. dict(type='SegVisualizationHook')).")
    hook.update(draw=True, interval=1)
    cfg.visualizer.save_dir = osp.join(cfg.work_dir, show_dir)
    return osp.join(cfg.visualizer.save_dir, "vis_data", "vis_image")


def test(
    config: str,
    checkpoint: str,
    work_dir: str | None = None,
    show_dir: str | None = None,
    cfg_options: dict[str, Any] | None = None,
    data_root: str | None = None,
    launcher: str = "none",
    allow_cpu: bool = False,
    skip_data_check: bool = False,
) -> dict[str, float]:
    """Evaluate ``checkpoint`` on the config's test set; return the metrics.

    mmseg's ``IoUMetric`` logs the per-class IoU/Acc table; seglab returns the
    summary numbers too.
    """
    if not Path(checkpoint).is_file():
        raise ConfigError(f"checkpoint {checkpoint!r} not found")
    check_cuda_usable(allow_cpu)  # the machine first: before the data check decodes files
    cfg = load_config(config, cfg_options, data_root)
    cfg.load_from = checkpoint
    _set_work_dir(cfg, config, work_dir)
    warnings = _run_data_check(cfg, config, ("test",), launcher, skip_data_check, "test")
    notes = _prepare(cfg, launcher) + _use_class_metrics(cfg) + use_sample_checks(cfg)
    image_dir = trigger_visualization(cfg, show_dir) if show_dir else None
    runner = _build_runner(cfg)
    _log_notes(notes)
    for line in warnings:
        print_log(f"seglab: {line}", logger="current", level=logging.WARNING)
    metrics = runner.test()
    if image_dir:
        print_log(f"seglab: {len(os.listdir(image_dir))} prediction overlays saved in {image_dir}",
                  logger="current")
    return metrics
