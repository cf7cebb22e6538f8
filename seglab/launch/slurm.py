"""Inside a Slurm job: the rendezvous of ``--launcher slurm`` ranks and the job's requeue.

mmengine's ``--launcher slurm`` (mmseg's ``tools/slurm_train.sh``) reads the rendezvous
from Slurm's variables but takes port 29500 for every job, so two jobs whose first node
is the same fail with "address already in use", and it calls ``torch.cuda.set_device``,
so it cannot run on CPU ranks. seglab sets the variables itself: the job's first node
as ``MASTER_ADDR`` and a port derived from the job id, which every rank of the job
computes alike and other jobs differ in (``MASTER_PORT``/``MASTER_ADDR`` set by the
user win). mmengine then finds them on GPUs; on CPUs seglab starts gloo from them.
"""

from __future__ import annotations

import os
import re
import subprocess

from mmengine.logging import print_log

# Below Linux's ephemeral range (32768+), where the OS hands out ports to clients.
JOB_PORT_BASE, JOB_PORT_SPAN = 15000, 15000


def job_port(job_id: str) -> int:
    """The rendezvous port of Slurm job ``job_id`` (an array task has its own job id)."""
    return JOB_PORT_BASE + int(re.sub(r"\D", "", job_id) or 0) % JOB_PORT_SPAN


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list (``node[03-05,7]`` -> ``node03``)."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                             text=True, timeout=30, check=True).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass  # no scontrol on this host: expand the list's first entry by hand
    head = re.match(r"([^,\[]+)(?:\[([^,\]-]+))?", nodelist)
    if head is None:
        raise ValueError(f"cannot read the Slurm node list {nodelist!r}")
    return head.group(1) + (head.group(2) or "")


def slurm_rendezvous() -> list[str]:
    """Set torch's ``env://`` variables for this srun task from Slurm's; return a note."""
    env = os.environ
    env.setdefault("MASTER_ADDR", first_host(env.get("SLURM_STEP_NODELIST")
                                             or env["SLURM_NODELIST"]))
    env.setdefault("MASTER_PORT", str(job_port(env.get("SLURM_JOB_ID", "0"))))
    env["WORLD_SIZE"], env["RANK"] = env["SLURM_NTASKS"], env["SLURM_PROCID"]
    env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
    return [f"Slurm rendezvous {env['MASTER_ADDR']}:{env['MASTER_PORT']}, "
            f"{env['WORLD_SIZE']} tasks (MASTER_ADDR/MASTER_PORT to choose)"]


def requeue_this_job() -> bool:
    """Put this Slurm batch job back in the queue (it is stopped, then starts again)."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return False
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        done = subprocess.CompletedProcess([], 1, "", str(err))
    if done.returncode != 0:
        print_log(f"seglab: `scontrol requeue {job}` failed ({done.stderr.strip()}); the "
                  "job ends here: submit it again with --resume", logger="current")
        return False
    return True
