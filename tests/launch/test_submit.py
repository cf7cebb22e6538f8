"""seglab submit's batch script and refusals, and the Slurm rendezvous, without a cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from seglab.launch.slurm import first_host, job_port, slurm_rendezvous
from seglab.launch.submit import SlurmJob, SubmitError, sbatch_script, submit
from tests.conftest import VOC_DEMO


def test_the_script_asks_for_the_signal_the_requeue_and_resumes_auto(tmp_path) -> None:
    job = SlurmJob([str(VOC_DEMO)], [str(tmp_path / "run")], nodes=2, gpus_per_node=8,
                   partition="gpu", time="1-00:00:00", train_args=["--amp"],
                   sbatch_args=["--qos=high"])
    text = sbatch_script(job, tmp_path, "seglab submit ...")
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gres=gpu:8",
                 "#SBATCH --partition=gpu", "#SBATCH --time=1-00:00:00",
                 "#SBATCH --signal=USR1@180", "#SBATCH --requeue", "#SBATCH --qos=high",
                 "#SBATCH --open-mode=append"):
        assert line in text.splitlines()
    assert "--launcher slurm" in text and "--resume auto --amp" in text
    assert "--array" not in text


def test_cpu_ranks_ask_for_no_gpus_and_an_array_gets_one_element_per_config(tmp_path) -> None:
    job = SlurmJob([str(VOC_DEMO)] * 3, [str(tmp_path / n) for n in "abc"], gpus_per_node=0,
                   max_parallel=2)
    text = sbatch_script(job, tmp_path, "seglab submit ...")
    assert "--gres" not in text and "#SBATCH --ntasks-per-node=1" in text
    assert "#SBATCH --array=0-2%2" in text and "%A_%a.out" in text


@pytest.mark.parametrize("change,message", [
    ({"configs": ["nope.py"]}, "config 'nope.py' not found"),
    ({"time": "12h"}, "--time '12h'"),
    ({"time": "2:00", "signal_lead_s": 180}, "not longer than --signal-lead"),
    ({"work_dirs": ["same"], "configs": [str(VOC_DEMO)]}, None),
])
def test_bad_jobs_are_refused_before_anything_is_written(tmp_path, change, message) -> None:
    job = SlurmJob(**{"configs": [str(VOC_DEMO)], "work_dirs": [str(tmp_path / "w")],
                      **change})
    if message is None:  # a valid job: only checks
        job.check()
        return
    with pytest.raises(SubmitError, match=message):
        submit(job, tmp_path / "scripts", "seglab submit", dry_run=True)
    assert not (tmp_path / "scripts").exists()


def test_array_elements_sharing_a_work_dir_are_refused(tmp_path) -> None:
    job = SlurmJob([str(VOC_DEMO)] * 2, [str(tmp_path / "w"), str(tmp_path / "w")])
    with pytest.raises(SubmitError, match="share a work dir"):
        job.check()


def test_a_work_dir_holding_a_run_needs_resume(tmp_path) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "epoch_3.pth").write_bytes(b"")
    job = SlurmJob([str(VOC_DEMO)], [str(tmp_path / "w")])
    with pytest.raises(SubmitError, match="epoch_3.pth.*--resume"):
        submit(job, tmp_path / "s", "seglab submit", dry_run=True)
    script, job_id = submit(job, tmp_path / "s", "seglab submit", dry_run=True, resume=True)
    assert job_id is None and script.read_text().startswith("#!/bin/bash")


def test_without_sbatch_the_error_says_where_to_run(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SubmitError, match="login node"):
        submit(SlurmJob([str(VOC_DEMO)], [str(tmp_path / "w")]), tmp_path / "s", "x")


def test_rendezvous_from_slurm_variables(monkeypatch, tmp_path) -> None:
    """What each srun task computes alike: the first node, a port of this job's own."""
    for name in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.setenv(name, "")  # so the test's own values are undone after it
        monkeypatch.delenv(name)
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol: the list is expanded by hand
    env = {"SLURM_NODELIST": "gpu[07-09,12]", "SLURM_JOB_ID": "123456", "SLURM_NTASKS": "16",
           "SLURM_PROCID": "9", "SLURM_LOCALID": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    slurm_rendezvous()
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == ("gpu07", str(job_port(
        "123456")))
    assert (os.environ["WORLD_SIZE"], os.environ["RANK"], os.environ["LOCAL_RANK"]) == (
        "16", "9", "1")
    assert job_port("123456") != job_port("123457") and 15000 <= job_port("123456") < 30000
    assert first_host("node1,node2") == "node1"


@pytest.mark.slow  # a subprocess CLI: not in make test-fast
def test_submit_cli_writes_the_script_with_dry_run(tmp_path) -> None:
    from tests.conftest import run_cli

    done = run_cli("submit", str(VOC_DEMO), "--work-dir", str(tmp_path / "w"), "--dry-run",
                   "--time", "4:00:00", "--gpus-per-node", "4")
    assert done.returncode == 0, done.stderr
    (script,) = Path(tmp_path / "w" / "slurm").glob("*.sbatch")
    assert "#SBATCH --gres=gpu:4" in script.read_text()
    bad = run_cli("submit", str(VOC_DEMO), "--time", "soon", "--dry-run")
    assert bad.returncode == 2 and "--time 'soon'" in bad.stderr
    assert "Traceback" not in bad.stderr
