"""The ``seglab`` command: one entry point, one sub-command per job.

Heavy imports (torch, mmseg) happen inside each sub-command, so ``seglab
--help`` and argument errors come back in well under a second (mmengine's
config module, for ``--cfg-options``, costs about 0.3 s).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from mmengine.config import DictAction

from seglab.demo import DEMO_DATA
from seglab.errors import report_error, report_interrupt

CFG_OPTIONS_EXAMPLE = "train_cfg.max_epochs=12"


def cfg_option_item(item: str) -> str:
    """One ``--cfg-options`` item, checked as argparse converts it: mmengine's
    ``DictAction`` raises a bare ValueError for an item without "=" (and an
    AssertionError for unbalanced brackets), which argparse does not turn into a usage
    error, so the user got a traceback."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(
            f"{item!r} is not KEY=VALUE. Fix: write each item as KEY=VALUE, e.g. "
            f"{CFG_OPTIONS_EXAMPLE}; the option takes every word up to the next option, "
            "so put positional arguments (CONFIG ...) before it.")
    try:
        DictAction._parse_iterable(value)  # what DictAction will do with it
    except AssertionError:  # its only check: "Imbalanced brackets exist in ..."
        raise argparse.ArgumentTypeError(
            f"{item!r}: unbalanced brackets in the value {value!r}. Fix: close every [ "
            "and (, e.g. optim_wrapper.optimizer.betas=(0.9,0.999), and quote an item with "
            "spaces so that the shell keeps it one item.") from None
    return item


def add_cfg_options(parser: argparse.ArgumentParser) -> None:
    """``--cfg-options KEY=VALUE ...``, the same for every sub-command that has it."""
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        type=cfg_option_item, metavar="KEY=VALUE",
                        help=f"override config keys, e.g. {CFG_OPTIONS_EXAMPLE}")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by train and test (mmseg's tools/train.py and test.py names)."""
    parser.add_argument("--work-dir", help="where logs and checkpoints go "
                        "(default: work_dirs/<config name>)")
    parser.add_argument("--data-root", help="dataset root for every dataloader "
                        "(overrides data_root in the config)")
    add_cfg_options(parser)
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run on the CPU even though this machine has NVIDIA GPUs that "
                        "torch cannot use (otherwise an error names the driver/CUDA problem)")
    parser.add_argument("--skip-data-check", action="store_true",
                        help="start without first decoding every image and mask the run reads "
                        "(the check is cached per file under the data root: seconds once done)")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"],
                        default="none", help="job launcher (tools/dist_train.sh sets pytorch)")
    # the deprecated torch.distributed.launch passes it; torchrun uses $LOCAL_RANK
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0,
                        help=argparse.SUPPRESS)


def train_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="seglab train")
    parser.add_argument("config", help="experiment config file")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                        help="continue a run: from CHECKPOINT, or the newest one in the work "
                        "dir; `--resume auto`: the newest one if any, else start (what a "
                        "requeued cluster job runs)")
    parser.add_argument("--finetune-from", metavar="CHECKPOINT",
                        help="load only the weights of CHECKPOINT; fresh optimizer and schedule "
                        "from the config (what a new LR or warm-up needs; --resume ignores them)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run even if the work dir holds checkpoints")
    parser.add_argument("--ignore-doctor-errors", action="store_true",
                        help="train even when `seglab doctor` reports errors in the config")
    parser.add_argument("--min-pretrained-coverage", type=float, default=None, metavar="F",
                        help="stop before step 1 when less than this fraction of the backbone "
                        "(or, with load_from, the model) came from its checkpoint "
                        "(default 0.9; 0 turns the check off)")
    parser.add_argument("--on-nonfinite", choices=["stop", "skip"], default="stop",
                        help="a NaN/Inf loss or gradient stops the run (default), or skips "
                        "that step (5 in a row stop it); the batch is saved either way")
    parser.add_argument("--on-bad-sample", choices=["raise", "skip"], default="raise",
                        help="a training image or mask that cannot be read, or a mask whose "
                        "size or labels disagree with its image, stops the run naming its "
                        "index and files (default), or is skipped and recorded in "
                        "WORK_DIR/bad_samples.json (a bad val sample always stops it)")
    parser.add_argument("--max-bad-samples", type=int, default=None, metavar="N",
                        help="with --on-bad-sample skip: stop when more than N distinct bad "
                        "samples were skipped (default 100)")
    parser.add_argument("--amp", action="store_true",
                        help="automatic mixed precision, as mmseg's tools/train.py --amp "
                        "(AmpOptimWrapper, dynamic loss scale; bf16 where the GPU has it)")
    parser.add_argument("--amp-dtype", choices=["bf16", "fp16"],
                        help="autocast dtype of an AMP run (with --amp, or for a config that "
                        "enables AMP itself)")
    world = parser.add_mutually_exclusive_group()
    world.add_argument("--scale-lr", action="store_true",
                       help="when the world size is not the config's gpu_count: scale "
                       "optim_wrapper.optimizer.lr to the new total batch (linear rule)")
    world.add_argument("--as-written", action="store_true",
                       help="refuse to start unless the world size is the config's gpu_count")
    parser.add_argument("--tmux", action="store_true",
                        help="run in a detached tmux session, logged under the work dir")
    parser.add_argument("--gpus", type=int, default=1,
                        help="with --tmux: processes to launch via tools/dist_train.sh")
    _add_run_options(parser)
    return parser


def test_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="seglab test")
    parser.add_argument("config", help="experiment config file")
    parser.add_argument("checkpoint", help="checkpoint to evaluate")
    parser.add_argument("--show-dir", help="save a prediction overlay for every test image "
                        "in this folder (relative to the work dir)")
    _add_run_options(parser)
    return parser


def _die_with_launcher() -> None:
    """Under torchrun, before anything slow: a rank never outlives its launcher."""
    import os

    if "TORCHELASTIC_RUN_ID" in os.environ:
        from seglab.launch.distributed import die_with_launcher

        die_with_launcher()


def cmd_train(args: argparse.Namespace) -> int:
    _die_with_launcher()
    if args.tmux:
        from seglab.launch.tmux import start_training_session

        start_training_session(args.config, args.gpus, _forwarded_train_args(args))
        return 0
    from seglab.engine.hooks.preemption_hook import RunPreempted

    try:
        _train(args)
    except RunPreempted as stop:
        print(f"seglab train: {stop}", file=sys.stderr)
        return _end_run(args, 0 if stop.requeued else 128 + stop.signum)  # as the signal would
    return _end_run(args, 0)


def _end_run(args: argparse.Namespace, code: int) -> int:
    """Wait for every rank and end the process group; a launched rank then exits at once."""
    from seglab.launch.distributed import end_process_group, exit_launched_rank, is_launched_rank

    end_process_group()
    if args.whole_process and is_launched_rank(args.launcher):
        exit_launched_rank(code)
    return code


def _defer_unneeded_packages(args: argparse.Namespace) -> None:
    """Before mmseg's models are imported: keep the optional packages this one config does
    not name (mmdet, and with it transformers and mmpretrain) out of the process. Only when
    the command is the whole process (a caller of ``main(argv)`` may build other models
    later). A config that cannot be read is left to the full load, which reports it."""
    if not args.whole_process:
        return
    from seglab import optional_imports
    from seglab.config import memo
    from seglab.config.loading import parse_for_load
    from seglab.config.walk import packages_named

    memo.install()
    try:
        cfg = parse_for_load(args.config)  # the full load takes this parse over
        cfg.merge_from_dict(args.cfg_options)
    except Exception:  # noqa: BLE001 (reported by load_config, with the fix)
        return
    optional_imports.defer_unneeded(packages_named(cfg))


def _train(args: argparse.Namespace) -> None:
    _defer_unneeded_packages(args)
    from seglab.engine.runner import train

    train(args.config, work_dir=args.work_dir, resume=args.resume, cfg_options=args.cfg_options,
          data_root=args.data_root, launcher=args.launcher, overwrite=args.overwrite,
          finetune_from=args.finetune_from, ignore_doctor_errors=args.ignore_doctor_errors,
          skip_data_check=args.skip_data_check,
          on_bad_sample=args.on_bad_sample, max_bad_samples=args.max_bad_samples,
          on_nonfinite=args.on_nonfinite, amp=args.amp, amp_dtype=args.amp_dtype,
          allow_cpu=args.allow_cpu, scale_lr=args.scale_lr, as_written=args.as_written,
          **({} if args.min_pretrained_coverage is None
             else {"min_pretrained_coverage": args.min_pretrained_coverage}))


def _forwarded_train_args(args: argparse.Namespace) -> list[str]:
    """The parsed ``seglab train`` options that differ from their defaults, as arguments that
    parse back to the same values; CONFIG (dist_train.sh's own argument) and the options of the
    launch itself (--tmux, --gpus, --launcher) left out.

    Built from the parsed result, not sliced from argv: argv cannot tell CONFIG from the
    options around it (``train --tmux CONFIG`` forwarded CONFIG twice). Every option of
    ``train_parser`` is considered, so a new one is forwarded without a change here.
    """
    def cfg_option_text(value: object) -> str:
        """What mmengine's ``DictAction`` parses back to ``value`` (its inverse)."""
        if isinstance(value, list | tuple):
            items = ",".join(cfg_option_text(v) for v in value)
            return f"[{items}]" if isinstance(value, list) else f"({items})"
        return repr(value) if isinstance(value, float) else str(value)

    launch_only = {"help", "config", "tmux", "gpus", "launcher", "local_rank"}
    out: list[str] = []
    for action in train_parser()._actions:  # argparse has no public list of its actions
        value = getattr(args, action.dest, action.default)
        if action.dest in launch_only or value == action.default:
            continue
        flag = action.option_strings[0]
        if action.nargs == 0 or value is True:  # a switch, or --resume without a path
            out.append(flag)
        elif isinstance(value, dict):  # --cfg-options
            out += [flag, *(f"{k}={cfg_option_text(v)}" for k, v in value.items())]
        else:  # one value; "=" so that a value starting with "-" stays a value
            out.append(f"{flag}={value}")
    return out


def cmd_test(args: argparse.Namespace) -> int:
    _die_with_launcher()
    _defer_unneeded_packages(args)
    from seglab.engine.runner import test

    test(args.config, args.checkpoint, work_dir=args.work_dir, show_dir=args.show_dir,
         cfg_options=args.cfg_options, data_root=args.data_root, launcher=args.launcher,
         allow_cpu=args.allow_cpu, skip_data_check=args.skip_data_check)
    return _end_run(args, 0)


def cmd_data_synth(args: argparse.Namespace) -> int:
    from seglab.data.synth import write_synth_dataset

    summary = write_synth_dataset(args.layout, args.out, num_train=args.num_train,
                                  num_val=args.num_val, seed=args.seed)
    counts = ", ".join(f"{split} {len(ids)}" for split, ids in summary.splits.items())
    print(f"seglab data synth: {args.layout} layout at {summary.root} ({counts})")
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from seglab.data.prepare import PREPARERS

    options = {"checksum": args.checksum, "skip_checksum": args.skip_checksum}
    if args.dataset == "sbd":
        options["nproc"] = args.nproc
    report = PREPARERS[args.dataset](Path(args.archive), Path(args.data_dir), **options)
    counts = ", ".join(f"{k} {v}" for k, v in report.counts.items())
    print(f"seglab data prepare: {args.dataset} ready at {report.target} ({counts}; "
          f"{report.extracted} files extracted, {report.skipped} already there)")
    return 0


def cmd_data_doctor(args: argparse.Namespace) -> int:
    from seglab.doctor.dataset import (
        config_for_target,
        run_doctor,
        specs_from_config,
        summary_text,
        write_json,
    )

    result = run_doctor(specs_from_config(config_for_target(Path(args.target), args.data_root)))
    print(summary_text(result))
    if args.json:
        write_json(result, Path(args.json))
    return 1 if result.errors else 0


def cmd_doctor(args: argparse.Namespace) -> int:
    import json

    from seglab.config.loading import load_config
    from seglab.doctor.config_doctor import examine_config, report_text

    cfg = load_config(args.config, args.cfg_options, args.data_root)
    report = examine_config(cfg, args.config, args.gpus)
    print(report_text(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=1))
    return 1 if report.errors else 0


def cmd_report(args: argparse.Namespace) -> int:
    import time

    from seglab.results.report import build_report

    start = time.perf_counter()
    html_path, md_path = build_report(args.work_dir, overlays=args.overlays, worst=args.worst)
    print(f"seglab report: {html_path} ({html_path.stat().st_size / 1024:.0f} KiB) and "
          f"{md_path.name} in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from seglab.results.compare import run_compare

    print(run_compare(args.runs, threshold=args.threshold, out=args.out), end="")
    if args.out:
        print(f"seglab compare: written to {args.out}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from seglab.results.status import find_runs, run_status, status_table

    statuses = [run_status(path) for path in find_runs(args.work_dirs)]
    if args.json:
        print(json.dumps([s.to_dict() for s in statuses], indent=1))
    else:
        print(status_table(statuses))
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    from seglab.results.infer import run_infer

    run_infer(args.config, args.checkpoint, args.images, args.out,
              batch_size=args.batch_size, overwrite=args.overwrite)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from seglab.demo import run_demo

    run_demo(data_dir=args.data_dir, work_dir=args.work_dir)
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    from seglab.config.loading import load_config

    print(load_config(args.config, args.cfg_options, args.data_root).pretty_text)
    return 0


def cmd_config_diff(args: argparse.Namespace) -> int:
    from seglab.config.diff import diff_configs
    from seglab.config.loading import load_config

    rows = diff_configs(load_config(args.config_a), load_config(args.config_b))
    print(f"--- {args.config_a}\n+++ {args.config_b}")
    for key, a, b in rows:
        print(f"{key}: {a!r} -> {b!r}")
    print(f"{len(rows)} resolved field(s) differ")
    return 0


def cmd_zoo_list(args: argparse.Namespace) -> int:
    from seglab.config.zoo import list_rows

    rows = [("family", "group", "mmseg config", "status"), *list_rows()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)), row[3])
    return 0


def cmd_zoo_train(args: argparse.Namespace) -> int:
    import subprocess

    from seglab.config.zoo import FAMILIES, write_zoo_config

    if args.all == bool(args.family):
        raise _usage_error("zoo train: name a FAMILY or pass --all (not both)")
    families = [f.name for f in FAMILIES] if args.all else [args.family]
    if args.slurm:
        root = args.work_dir or "work_dirs/zoo"
        work_dirs = [f"{root}/{name}_ade20k" for name in families]
        configs = [str(write_zoo_config(name, wd)) for name, wd in zip(families, work_dirs,
                                                                        strict=True)]
        return _submit(args, configs, work_dirs, Path(root) / "slurm")
    if args.all:
        raise _usage_error("zoo train --all runs on a cluster: add --slurm (one job array)")
    work_dir = args.work_dir or f"work_dirs/zoo/{args.family}_ade20k"
    config = write_zoo_config(args.family, work_dir)
    print(f"seglab zoo: {args.family} -> {config}")
    if args.gpus > 1:
        from seglab import REPO_ROOT

        launcher = str(REPO_ROOT / "tools" / "dist_train.sh")
        extra = ["--resume"] if args.resume else []
        return subprocess.call(["bash", launcher, str(config), str(args.gpus),
                                "--work-dir", work_dir, *extra])
    from seglab.engine.runner import train

    train(str(config), work_dir=work_dir, resume=args.resume)
    return 0


def _usage_error(message: str) -> Exception:
    from seglab.errors import UserError

    return UserError(message)


def cmd_submit(args: argparse.Namespace) -> int:
    from seglab.config.loading import default_work_dir

    if len(args.configs) == 1:
        work_dirs = [args.work_dir or default_work_dir(args.configs[0])]
        script_dir = Path(work_dirs[0]) / "slurm"
    else:  # an array: WORK_DIR/<config name> each, as work_dirs/<config name> without it
        root = Path(args.work_dir or "work_dirs")
        work_dirs = [str(root / Path(config).stem) for config in args.configs]
        script_dir = root / "slurm"
    return _submit(args, args.configs, work_dirs, script_dir)


def _submit(args: argparse.Namespace, configs: list[str], work_dirs: list[str],
            script_dir: Path) -> int:
    from seglab.launch.submit import SlurmJob, submit

    job = SlurmJob(configs=configs, work_dirs=work_dirs, nodes=args.nodes,
                   gpus_per_node=args.gpus_per_node, tasks_per_node=args.tasks_per_node,
                   cpus_per_task=args.cpus_per_task, partition=args.partition, time=args.time,
                   job_name=args.job_name, signal_lead_s=args.signal_lead,
                   train_args=shlex.split(args.train_args),
                   sbatch_args=shlex.split(args.sbatch_args), max_parallel=args.max_parallel)
    script, job_id = submit(job, script_dir, "seglab " + shlex.join(args.argv),
                            dry_run=args.dry_run, resume=args.resume)
    runs = f"{len(configs)} runs (job array)" if len(configs) > 1 else work_dirs[0]
    if job_id is None:
        print(f"seglab submit: wrote {script} (not submitted: --dry-run)")
    else:
        print(f"seglab submit: job {job_id}: {runs}; script {script}; "
              f"`seglab status {' '.join(dict.fromkeys(str(Path(w).parent) for w in work_dirs))}`"
              " shows where it stands")
    return 0


def _add_submit_options(parser: argparse.ArgumentParser) -> None:
    """The Slurm job's shape, shared by ``submit`` and ``zoo train --slurm``."""
    from seglab.launch.submit import DEFAULT_SIGNAL_LEAD_S

    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=1,
                        help="GPUs per node, one rank each (0: CPU ranks)")
    parser.add_argument("--tasks-per-node", type=int,
                        help="ranks per node (default: --gpus-per-node, or 1 without GPUs)")
    parser.add_argument("--cpus-per-task", type=int, default=4,
                        help="cores per rank, for its dataloader workers (default 4)")
    parser.add_argument("--partition")
    parser.add_argument("--time", help="time limit, e.g. 12:00:00; the job checkpoints and "
                        "requeues itself before it")
    parser.add_argument("--job-name", default="seglab")
    parser.add_argument("--signal-lead", type=int, default=DEFAULT_SIGNAL_LEAD_S, metavar="S",
                        help="seconds before the limit at which SIGUSR1 asks for a checkpoint "
                        f"(default {DEFAULT_SIGNAL_LEAD_S}: a validation pass must fit)")
    parser.add_argument("--max-parallel", type=int, metavar="N",
                        help="array elements running at once")
    parser.add_argument("--train-args", default="",
                        help="more `seglab train` options for every run, one string")
    parser.add_argument("--sbatch-args", default="",
                        help="more sbatch options (--account, --qos, ...), one string")
    parser.add_argument("--dry-run", action="store_true",
                        help="write the batch script, do not submit it")


def cmd_weights_convert(args: argparse.Namespace) -> int:
    from seglab.weights.convert import convert

    convert(args.src, to=args.to, arch_name=args.arch, checkpoints=Path(args.dir),
            force=args.force, check=not args.no_verify)
    return 0


def cmd_weights_fetch(args: argparse.Namespace) -> int:
    from seglab.weights.fetch import fetch

    path = fetch(args.name, Path(args.dir), mirror=args.mirror)
    print(f"seglab weights fetch: {path}")
    return 0


def cmd_weights_inspect(args: argparse.Namespace) -> int:
    from seglab.weights.contents import coverage_for_config, describe

    print("\n".join(describe(args.file)))
    if args.config:
        print(coverage_for_config(args.file, args.config).summary())
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    from seglab.platform import install

    return install.main(args.install_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seglab", description="Config-driven semantic segmentation on MMSegmentation 1.x.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a config (mmseg tools/train.py + seglab guards)")
    train_parser(p).set_defaults(func=cmd_train)
    p = sub.add_parser("test", help="evaluate a checkpoint; prints the per-class IoU/Acc table")
    test_parser(p).set_defaults(func=cmd_test)

    data = sub.add_parser("data", help="dataset tools").add_subparsers(
        dest="data_command", required=True, metavar="DATA_COMMAND")
    p = data.add_parser("synth", help="generate a small dataset in a real on-disk layout")
    p.add_argument("layout", choices=["voc", "ade20k"])
    p.add_argument("--out", default="data/synth", help="parent folder (default: data/synth)")
    p.add_argument("--num-train", type=int, default=DEMO_DATA["num_train"])
    p.add_argument("--num-val", type=int, default=DEMO_DATA["num_val"])
    p.add_argument("--seed", type=int, default=DEMO_DATA["seed"])
    p.set_defaults(func=cmd_data_synth)
    p = data.add_parser("prepare", help="extract and convert a downloaded archive into data/")
    p.add_argument("dataset", choices=["voc", "sbd", "ade20k"])
    p.add_argument("--archive", required=True, help="VOCtrainval_11-May-2012.tar, "
                   "benchmark.tgz or ADEChallengeData2016.zip")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--checksum", help="expected md5 (VOC, SBD) or sha1 (ADE20K) of your "
                   "archive instead of the published one")
    p.add_argument("--skip-checksum", action="store_true")
    p.add_argument("--nproc", type=int, default=1, help="processes for the SBD conversion")
    p.set_defaults(func=cmd_data_prepare)
    p = data.add_parser("doctor", help="check the datasets a config reads (or a dataset root); "
                        "exit 1 on problems that would break training")
    p.add_argument("target", help="config file, or a VOC2012 / ADEChallengeData2016 folder")
    p.add_argument("--data-root", help="with a config: read the data from here")
    p.add_argument("--json", help="also write the machine-readable report here")
    p.set_defaults(func=cmd_data_doctor)

    p = sub.add_parser("doctor", help="check a config for known mistakes and print the "
                       "dry-run plan (seconds, no GPU, no images read); exit 1 on errors")
    p.add_argument("config")
    p.add_argument("--gpus", type=int, help="processes the run will use (default: the "
                   "config's gpu_count, else 1)")
    p.add_argument("--data-root", help="count the dataset found here")
    add_cfg_options(p)
    p.add_argument("--json", help="also write the report as JSON here")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("report", help="one self-contained HTML + Markdown report of a run")
    p.add_argument("work_dir")
    p.add_argument("--overlays", type=int, default=6,
                   help="validation images drawn as image | truth | prediction (0: none)")
    p.add_argument("--worst", type=int, default=10, help="worst classes listed with their "
                   "most-confused classes")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("compare", help="per-class deltas, summaries, curves and config diff "
                       "of runs (work dirs, records, logs or pasted tables)")
    p.add_argument("runs", nargs="+", help="work dir, class_metrics/*.json, or a text file "
                   "with tools/test.py's table (FILE#N: its N-th table); the first is the "
                   "baseline")
    p.add_argument("--threshold", type=float, default=1.0,
                   help="IoU points from which a change is flagged (default 1.0)")
    p.add_argument("--out", help="also write the comparison here (.html with curves, or .md)")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("status", help="where each run stands: state, iteration, last "
                       "checkpoint, loss, mIoU, speed, ETA (one row a run)")
    p.add_argument("work_dirs", nargs="+", metavar="WORK_DIR",
                   help="a run's work dir, or a folder of them (e.g. work_dirs/zoo)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("infer", help="index masks and overlays for any images")
    p.add_argument("config")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=cmd_infer)

    config = sub.add_parser("config", help="inspect resolved configs").add_subparsers(
        dest="config_command", required=True, metavar="CONFIG_COMMAND")
    p = config.add_parser("show", help="print the fully resolved config (_base_ chain and "
                          "--cfg-options applied)")
    p.add_argument("config")
    add_cfg_options(p)
    p.add_argument("--data-root")
    p.set_defaults(func=cmd_config_show)
    p = config.add_parser("diff", help="list the resolved fields that differ between two configs")
    p.add_argument("config_a")
    p.add_argument("config_b")
    p.set_defaults(func=cmd_config_diff)

    zoo = sub.add_parser("zoo", help="seed 004's ADE20K model zoo (29 families)").add_subparsers(
        dest="zoo_command", required=True, metavar="ZOO_COMMAND")
    p = zoo.add_parser("list", help="families, their mmseg configs and what they need")
    p.set_defaults(func=cmd_zoo_list)
    p = zoo.add_parser("train", help="train a family on ADE20K with the unified settings; "
                       "--all --slurm: all 29 as one Slurm job array")
    p.add_argument("family", nargs="?")
    p.add_argument("--all", action="store_true", help="every family (with --slurm)")
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--work-dir", help="default: work_dirs/zoo/<family>_ade20k (with --slurm: "
                   "the folder of the families' work dirs, default work_dirs/zoo)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--slurm", action="store_true", help="submit as a Slurm job (array) that "
                   "checkpoints and requeues itself at its time limit")
    _add_submit_options(p)
    p.set_defaults(func=cmd_zoo_train)

    p = sub.add_parser("submit", help="a Slurm batch job (several configs: a job array) that "
                       "checkpoints and requeues itself at its time limit or preemption")
    p.add_argument("configs", nargs="+", metavar="CONFIG")
    p.add_argument("--work-dir", help="the run's folder (default: work_dirs/<config name>); "
                   "with several configs, the folder of their work dirs")
    p.add_argument("--resume", action="store_true",
                   help="the work dir holds a run: the job continues it")
    _add_submit_options(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("demo", help="the main job on the embedded default: synth data, "
                       "train, test, per-class table")
    p.add_argument("--data-dir", default="data/synth")
    p.add_argument("--work-dir", default=None, help="default: work_dirs/demo_<time>")
    p.set_defaults(func=cmd_demo)

    weights = sub.add_parser("weights", help="pretrained weights: fetch, convert, inspect"
                             ).add_subparsers(dest="weights_command", required=True,
                                              metavar="WEIGHTS_COMMAND")
    p = weights.add_parser("convert", help="MiT weights from Hugging Face (nvidia/mit-b*, a "
                           "save_pretrained folder) or NVlabs (mit_b*.pth) into mmseg's names, "
                           "verified against the source model")
    p.add_argument("src", help="a folder with config.json + model.safetensors or "
                   "pytorch_model.bin, a weight file, or a hub id such as nvidia/mit-b2")
    p.add_argument("--to", help="output file (default: DIR/mit_bN_converted_from_hf.pth, the "
                   "name the seed configs read)")
    p.add_argument("--dir", default="checkpoints", help="folder of the default output")
    p.add_argument("--arch", help="expected size, mit-b0 ... mit-b5 (default: read from the "
                   "source; a mismatch is an error)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--no-verify", action="store_true", help="write without running the "
                   "source model beside mmseg's (no transformers needed)")
    p.set_defaults(func=cmd_weights_convert)
    p = weights.add_parser("fetch", help="download the weights mmseg's configs name "
                           "(mit-b0 ... mit-b5, resnet50_v1c, resnet101_v1c): resumable, "
                           "hash-checked")
    p.add_argument("name")
    p.add_argument("--dir", default="checkpoints")
    p.add_argument("--mirror", help="base URL replacing https://download.openmmlab.com "
                   "(default: $SEGLAB_WEIGHTS_MIRROR)")
    p.set_defaults(func=cmd_weights_fetch)
    p = weights.add_parser("inspect", help="what a checkpoint holds; with --config, which "
                           "modules of that model it fills")
    p.add_argument("file")
    p.add_argument("--config")
    p.set_defaults(func=cmd_weights_inspect)

    p = sub.add_parser("install", help="set up the pinned stack (mmcv with ops, cached)",
                       add_help=False)
    p.add_argument("install_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_install)
    return parser


def main(argv: Sequence[str] | None = None, whole_process: bool | None = None) -> int:
    """The ``seglab`` command. ``whole_process``: the command is this process (the ``seglab``
    entry point, ``tools/*.py``), not one call of a notebook or test; defaults to whether
    ``argv`` is None."""
    # mmengine 0.10.7 imports pkg_resources (pinned setuptools keeps it); not the user's concern
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    whole_process = argv is None if whole_process is None else whole_process
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv, args.whole_process = argv, whole_process
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return report_interrupt(resumable="train" in (args.command,
                                                      getattr(args, "zoo_command", None)))
    except Exception as err:  # bad input: a message and exit 2; anything else: traceback, 1
        return report_error(err, "seglab " + shlex.join(argv),
                            getattr(args, "cfg_options", None))


if __name__ == "__main__":
    sys.exit(main())
