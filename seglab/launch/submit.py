"""``seglab submit``: a Slurm batch job (or job array) that survives its time limit.

The job is a generated sbatch script, kept in the run's folder: a file a researcher
and a cluster admin can read, edit and ``sbatch`` again, and that runs with whatever
Python the cluster's nodes have. (submitit pickles a Python function instead, which
ties every node to the submitting environment and hides the job from both.)

What makes the job preemption-safe: ``--signal=USR1@LEAD`` asks Slurm for SIGUSR1
``LEAD`` seconds before the time limit (and at preemption, where the cluster sets
``PreemptParameters=send_user_signal``); seglab's ``PreemptionCheckpointHook``
writes a checkpoint at the current iteration and runs ``scontrol requeue``;
``--requeue`` allows it; each start runs ``train --resume auto``, which continues from
the newest checkpoint (the first start has none and begins the run).
"""

from __future__ import annotations

import datetime
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from seglab import REPO_ROOT
from seglab.errors import UserError

DEFAULT_SIGNAL_LEAD_S = 180  # a validation pass and a checkpoint save fit in it
TIME_RE = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")


class SubmitError(UserError):
    """A submission refused before anything reached the scheduler."""


@dataclass
class SlurmJob:
    """What to run and where: one config and work dir per array element.

    Args:
        configs (list[str]): config files (more than one: a job array).
        work_dirs (list[str]): one work dir per config.
        nodes (int): nodes per run.
        gpus_per_node (int): GPUs per node, one rank each (0: CPU ranks).
        tasks_per_node (int, optional): ranks per node (default: gpus_per_node, else 1).
        cpus_per_task (int): CPU cores per rank (dataloader workers).
        partition (str, optional): Slurm partition.
        time (str, optional): time limit, Slurm's format (``HH:MM:SS``, ``D-HH:MM``...).
        job_name (str): the job's name in squeue.
        signal_lead_s (int): seconds before the limit at which SIGUSR1 comes.
        train_args (list[str]): more ``seglab train`` options for every run.
        sbatch_args (list[str]): more ``sbatch`` options (``--account``, ``--qos``...).
        max_parallel (int, optional): array elements running at once (``%N``).
    """

    configs: list[str]
    work_dirs: list[str]
    nodes: int = 1
    gpus_per_node: int = 1
    tasks_per_node: int | None = None
    cpus_per_task: int = 4
    partition: str | None = None
    time: str | None = None
    job_name: str = "seglab"
    signal_lead_s: int = DEFAULT_SIGNAL_LEAD_S
    train_args: list[str] = field(default_factory=list)
    sbatch_args: list[str] = field(default_factory=list)
    max_parallel: int | None = None

    @property
    def ranks_per_node(self) -> int:
        return self.tasks_per_node or self.gpus_per_node or 1

    def check(self) -> None:
        """Refuse a job that would fail in the queue, naming the option and the fix."""
        if len(self.configs) != len(self.work_dirs):
            raise SubmitError("one work dir per config is needed")
        for config in self.configs:
            if not Path(config).is_file():
                raise SubmitError(f"config {config!r} not found")
        if len(set(map(os.path.abspath, self.work_dirs))) != len(self.work_dirs):
            raise SubmitError("two runs of the array share a work dir: they would write each "
                              "other's checkpoints. Fix: one --work-dir per config.")
        if self.nodes < 1 or self.gpus_per_node < 0 or self.ranks_per_node < 1:
            raise SubmitError(f"--nodes {self.nodes} --gpus-per-node {self.gpus_per_node}: "
                              "need at least 1 node and 0 or more GPUs")
        if self.time is not None and not TIME_RE.match(self.time):
            raise SubmitError(f"--time {self.time!r}: use Slurm's format, e.g. 12:00:00 or "
                              "2-00:00:00")
        if self.time is not None and _seconds(self.time) <= self.signal_lead_s:
            raise SubmitError(f"--time {self.time} is not longer than --signal-lead "
                              f"{self.signal_lead_s} s: the job would be told to stop at once")


def _seconds(limit: str) -> int:
    """Slurm's time limit in seconds: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``."""
    days, _, clock = limit.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:
        h, m, s = (parts + [0, 0])[:3]
    else:
        h, m, s = {1: [0, parts[0], 0], 2: [0, *parts], 3: parts}[len(parts)]
    return int(days or 0) * 86400 + h * 3600 + m * 60 + s


def sbatch_script(job: SlurmJob, log_dir: Path, command_line: str) -> str:
    """The batch script: directives, the runs of the array, and one ``srun`` of
    ``tools/train.py --launcher slurm --resume auto``."""
    array = len(job.configs) > 1
    directives = [
        f"--job-name={job.job_name}",
        f"--nodes={job.nodes}",
        f"--ntasks-per-node={job.ranks_per_node}",
        f"--cpus-per-task={job.cpus_per_task}",
        *([f"--gres=gpu:{job.gpus_per_node}"] if job.gpus_per_node else []),
        *([f"--partition={job.partition}"] if job.partition else []),
        *([f"--time={job.time}"] if job.time else []),
        f"--signal=USR1@{job.signal_lead_s}",
        "--requeue",
        "--open-mode=append",  # a requeued start appends to the same log
        f"--output={log_dir / ('%x-%A_%a.out' if array else '%x-%j.out')}",
        *([f"--array=0-{len(job.configs) - 1}"
           + (f"%{job.max_parallel}" if job.max_parallel else "")] if array else []),
        *job.sbatch_args,
    ]
    configs = " ".join(shlex.quote(os.path.abspath(c)) for c in job.configs)
    work_dirs = " ".join(shlex.quote(os.path.abspath(w)) for w in job.work_dirs)
    train = [shlex.quote(sys.executable), "-u", shlex.quote(str(REPO_ROOT / "tools" / "train.py")),
             '"${CONFIGS[$i]}"', "--launcher", "slurm", "--work-dir", '"${WORK_DIRS[$i]}"',
             "--resume", "auto", *map(shlex.quote, job.train_args)]
    return "\n".join([
        "#!/bin/bash",
        f"# Written by `{command_line}` on {datetime.datetime.now():%Y-%m-%d %H:%M}.",
        "# sbatch this file again to rerun; each start continues the newest checkpoint.",
        *(f"#SBATCH {d}" for d in directives),
        "set -euo pipefail",
        f"CONFIGS=({configs})",
        f"WORK_DIRS=({work_dirs})",
        "i=${SLURM_ARRAY_TASK_ID:-0}",
        'echo "seglab: job ${SLURM_JOB_ID} start $(date -u +%FT%T.%NZ)'
        ' restart ${SLURM_RESTART_COUNT:-0} on ${SLURM_JOB_NODELIST}: ${CONFIGS[$i]}"',
        "srun --kill-on-bad-exit=1 " + " ".join(train),
        "",
    ])


def submit(job: SlurmJob, script_dir: Path, command_line: str, dry_run: bool = False,
           resume: bool = False) -> tuple[Path, str | None]:
    """Write the batch script into ``script_dir`` and ``sbatch`` it; return it and the job id.

    Refuses, before writing anything, a run whose work dir already holds checkpoints
    (``--resume auto`` would continue that run) unless ``resume``.
    """
    job.check()
    if not resume:
        for work_dir in job.work_dirs:
            held = sorted(Path(work_dir).glob("*.pth")) if Path(work_dir).is_dir() else []
            if held:
                raise SubmitError(
                    f"work dir {work_dir!r} already holds checkpoints ({held[-1].name}); the "
                    "job would continue that run. Fix: --resume to continue it, or another "
                    "--work-dir.")
    if not dry_run and shutil.which("sbatch") is None:
        raise SubmitError("sbatch not found: run seglab submit on a Slurm login node "
                          "(--dry-run writes the script without submitting)")
    script_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S_%f")
    path = script_dir / f"{job.job_name}_{stamp}.sbatch"
    path.write_text(sbatch_script(job, script_dir, command_line))
    if dry_run:
        return path, None
    done = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True,
                          timeout=120)
    if done.returncode != 0:
        raise SubmitError(f"sbatch refused {path}: {done.stderr.strip()}")
    return path, done.stdout.strip().split(";")[0]
