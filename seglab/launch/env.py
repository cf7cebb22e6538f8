"""What a launcher announces in the environment before any process group exists.

torchrun sets ``RANK``/``WORLD_SIZE``, Slurm's srun ``SLURM_PROCID``/``SLURM_NTASKS``,
Open MPI ``OMPI_COMM_WORLD_RANK``/``OMPI_COMM_WORLD_SIZE`` (what mmengine's ``init_dist``
reads for each launcher). seglab's checks that run before the process group (the data
check, error prefixes, the world size vs the config's ``gpu_count``) read them here, the
same way for every launcher. Importing this module needs no torch.
"""

from __future__ import annotations

import os

RANK_VARIABLE = {"pytorch": "RANK", "slurm": "SLURM_PROCID", "mpi": "OMPI_COMM_WORLD_RANK"}
RANK_VARIABLES = tuple(RANK_VARIABLE.values())
WORLD_SIZE_VARIABLES = {"pytorch": "WORLD_SIZE", "slurm": "SLURM_NTASKS",
                        "mpi": "OMPI_COMM_WORLD_SIZE"}


def launch_world_size(launcher: str) -> int:
    """The number of processes of this run as ``launcher`` announces it; 1 without one."""
    variable = WORLD_SIZE_VARIABLES.get(launcher)
    return int(os.environ.get(variable, "1")) if variable else 1


def launch_rank(launcher: str | None = None) -> int:
    """This process's global rank as ``launcher`` announces it (``"none"``: 0, a run of its
    own even inside ``srun -n N``); without ``launcher``, as any launcher does; 0 outside a job.
    """
    if launcher is not None:
        variable = RANK_VARIABLE.get(launcher)
        return int(os.environ.get(variable) or 0) if variable else 0
    for variable in RANK_VARIABLES:
        value = os.environ.get(variable)
        if value:
            return int(value)
    return 0


def in_multi_process_job() -> bool:
    """Whether a launcher started several processes (of which this is one)."""
    return any(int(os.environ.get(v) or "1") > 1 for v in WORLD_SIZE_VARIABLES.values())
