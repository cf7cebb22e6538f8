"""Rank and world size as torchrun, Slurm's srun and Open MPI announce them: the checks
that run before the process group see the same numbers under every launcher."""

from __future__ import annotations

import pytest

from seglab.errors import rank_prefix
from seglab.launch.env import in_multi_process_job, launch_rank, launch_world_size

LAUNCHERS = {  # what each launcher exports for rank 3 of 8
    "pytorch": {"RANK": "3", "WORLD_SIZE": "8"},
    "slurm": {"SLURM_PROCID": "3", "SLURM_NTASKS": "8"},
    "mpi": {"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "8"},
}
ALL_VARIABLES = [v for env in LAUNCHERS.values() for v in env]


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_every_launcher_gives_the_same_rank_and_world_size(launcher, monkeypatch) -> None:
    for variable in ALL_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    for variable, value in LAUNCHERS[launcher].items():
        monkeypatch.setenv(variable, value)
    assert (launch_rank(), launch_world_size(launcher)) == (3, 8)
    assert in_multi_process_job() and rank_prefix() == "[rank 3] "


def test_outside_a_job_rank_0_of_1_and_no_prefix(monkeypatch) -> None:
    for variable in ALL_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    assert (launch_rank(), launch_world_size("none")) == (0, 1)
    assert not in_multi_process_job() and rank_prefix() == ""


def test_the_rank_is_read_from_the_launcher_in_use(monkeypatch) -> None:
    """``--launcher none`` inside ``srun -n 4``: four runs of their own, each its own rank 0
    (each takes the work dir's lock), not ranks 0..3 of one job."""
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.delenv("RANK", raising=False)
    assert launch_rank("none") == 0 and launch_rank("slurm") == 3 and launch_rank() == 3
    monkeypatch.setenv("RANK", "1")  # torchrun inside an srun step
    assert launch_rank("pytorch") == 1 and launch_rank("slurm") == 3
