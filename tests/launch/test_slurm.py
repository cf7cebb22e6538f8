"""Past one node, on a real Slurm (slurmctld + slurmd + munge on 127.0.0.1, CPU ranks):
tools/slurm_train.sh, a preempted job that requeues itself, a job array, and a
two-"node" torchrun run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from seglab.testing.slurm_cluster import LocalSlurm, slurm_missing
from tests.conftest import REPO_ROOT, VOC_DEMO

# One cluster (a module fixture) for the whole file: one xdist worker runs it all.
pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.xdist_group(name="slurm")]

# 2 ranks of 4 images, 48 images: 6 steps an epoch; workers off and a fixed seed, so a
# resumed run draws what the uninterrupted one drew (see tests/engine/test_preemption.py)
EPOCHS, STEPS = 2, 6
CFG_OPTIONS = [f"train_cfg.max_epochs={EPOCHS}", f"train_cfg.val_interval={EPOCHS}",
               "train_dataloader.batch_size=4", "train_dataloader.dataset.indices=48",
               "val_dataloader.dataset.indices=4", "train_dataloader.num_workers=0",
               "train_dataloader.persistent_workers=False", "val_dataloader.num_workers=0",
               "val_dataloader.persistent_workers=False", "default_hooks.logger.interval=1",
               "randomness.seed=7", "randomness.deterministic=True"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurm]:
    why = slurm_missing()
    if why:
        pytest.skip(f"no local Slurm: {why}")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def _env(slurm: LocalSlurm, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in slurm.env.items() if not k.startswith(("SLURM_JOB", "MASTER_"))}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from seglab.engine.checkpoint import load_checkpoint_file

    return load_checkpoint_file(str(path))["state_dict"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    differing = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert wa.keys() == wb.keys() and not differing, f"{len(differing)} tensors differ"


def _submit(slurm: LocalSlurm, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "seglab.cli", "submit", *args],
                          cwd=REPO_ROOT, env=_env(slurm), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return re.search(r"seglab submit: job (\d+)", done.stdout).group(1)


def _log(work_dir: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in (work_dir / "slurm").glob("*.out"))


def test_slurm_train_sh_trains_two_tasks_and_writes_the_class_record(
        slurm: LocalSlurm, voc_root: Path, tmp_path: Path) -> None:
    work_dir = tmp_path / "run"
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "tools" / "slurm_train.sh"), "debug", "seglab-test",
         str(VOC_DEMO), "2", "--work-dir", str(work_dir), "--data-root", str(voc_root),
         "--cfg-options", *CFG_OPTIONS[1:], "train_cfg.max_epochs=1"],
        env=_env(slurm, GPUS_PER_NODE="0", CPUS_PER_TASK="1"), capture_output=True, text=True,
        timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert re.search(r"Slurm rendezvous \S+:(\d+), 2 tasks", output), output[-4000:]
    assert f"Epoch(train) [1][{STEPS}/{STEPS}]" in output  # 48 images over 2 ranks of 4
    record = json.loads((work_dir / "class_metrics" / "val_epoch_1.json").read_text())
    assert len(record["classes"]) == 21


def test_a_job_signalled_mid_epoch_checkpoints_requeues_and_ends_bitwise_equal(
        slurm: LocalSlurm, voc_root: Path, tmp_path: Path) -> None:
    options = ["--gpus-per-node", "0", "--tasks-per-node", "2", "--cpus-per-task", "1",
               "--train-args", " ".join(["--data-root", str(voc_root), "--cfg-options",
                                         *CFG_OPTIONS])]
    straight = _submit(slurm, str(VOC_DEMO), "--work-dir", str(tmp_path / "straight"),
                       "--job-name", "straight", *options)
    preempted_dir = tmp_path / "preempted"
    job = _submit(slurm, str(VOC_DEMO), "--work-dir", str(preempted_dir), "--job-name",
                  "preempted", *options)
    at = f"Epoch(train) [2][1/{STEPS}]"
    deadline = time.monotonic() + 900
    while at not in _log(preempted_dir):
        assert time.monotonic() < deadline and slurm.job_state(job) in ("PENDING", "RUNNING"), \
            _log(preempted_dir)[-4000:]
        time.sleep(0.5)
    signalled = time.time()
    assert slurm.run("scancel", "--signal=USR1", job).returncode == 0  # as --signal does

    slurm.wait_for(job, ("PENDING",), 300)  # requeued by the job itself
    # Slurm holds a requeued job back for about 2 minutes; the time to training again
    # is reported without that wait, which the scheduler decides, not seglab
    held = time.time()
    slurm.run("scontrol", "update", f"JobId={job}", "StartTime=now")
    assert slurm.wait_for(job, ("COMPLETED", "FAILED"), 900) == "COMPLETED", \
        _log(preempted_dir)[-4000:]
    assert slurm.wait_for(straight, ("COMPLETED", "FAILED"), 900) == "COMPLETED"

    log = _log(preempted_dir)
    stopped = re.search(r"stopped by SIGUSR1 at iteration (\d+)", log)
    assert stopped and "the Slurm job is requeued" in log, log[-4000:]
    iteration = int(stopped.group(1))
    assert STEPS < iteration < EPOCHS * STEPS  # mid-epoch 2
    assert f"resuming in epoch 2 at batch {iteration - STEPS + 1} of {STEPS}" in log
    assert "restart 1" in log
    _assert_same_weights(tmp_path / "straight" / f"epoch_{EPOCHS}.pth",
                         preempted_dir / f"epoch_{EPOCHS}.pth")
    resumed = re.search(r"(\d\d/\d\d \d\d:\d\d:\d\d) - mmengine - INFO - Epoch\(train\) \[2\]\["
                        rf"{iteration - STEPS + 1}/", log)
    assert resumed, log[-3000:]
    when = time.mktime(time.strptime(f"{time.localtime().tm_year}/{resumed.group(1)}",
                                     "%Y/%m/%d %H:%M:%S"))
    print(f"\nsignal -> requeued {held - signalled:.0f} s; signal -> training again "
          f"{when - signalled:.0f} s (Slurm's hold on a requeued job, ~2 min, released at once)")


def test_a_job_array_runs_three_configs_each_in_its_work_dir(
        slurm: LocalSlurm, voc_root: Path, tmp_path: Path) -> None:
    configs = []
    for lr in ("1e-3", "5e-4", "2e-4"):
        config = tmp_path / f"lr{lr}.py"
        config.write_text(f"_base_ = [{str(VOC_DEMO)!r}]\noptim_wrapper = dict(optimizer=dict("
                          f"lr={lr}))\n")
        configs.append(str(config))
    job = _submit(slurm, *configs, "--work-dir", str(tmp_path / "runs"), "--gpus-per-node",
                  "0", "--cpus-per-task", "1",
                  "--train-args", " ".join(["--data-root", str(voc_root), "--cfg-options",
                                            *CFG_OPTIONS[1:], "train_cfg.max_epochs=1",
                                            "train_dataloader.dataset.indices=8"]))
    for index in range(3):
        assert slurm.wait_for(f"{job}_{index}", ("COMPLETED", "FAILED"), 900) == "COMPLETED"
    from seglab.results.status import run_status

    for config, lr in zip(configs, ("1e-3", "5e-4", "2e-4"), strict=True):
        work_dir = tmp_path / "runs" / Path(config).stem
        assert (work_dir / "last_checkpoint").read_text().strip().endswith("epoch_1.pth")
        status = run_status(str(work_dir))
        assert status.state == "finished" and status.slurm_job is not None
        dumped = (work_dir / Path(config).name).read_text().replace(" ", "")
        assert f"lr={float(lr)!r}" in dumped  # each element trained its own config


def test_zoo_all_slurm_writes_one_array_of_29_runs(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "seglab.cli", "zoo", "train", "--all",
                           "--slurm", "--work-dir", str(tmp_path / "zoo"), "--dry-run",
                           "--gpus-per-node", "8", "--time", "2-00:00:00"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (script,) = (tmp_path / "zoo" / "slurm").glob("*.sbatch")
    text = script.read_text()
    assert "#SBATCH --array=0-28" in text and "#SBATCH --gres=gpu:8" in text
    work_dirs = re.search(r"WORK_DIRS=\((.*)\)", text).group(1).split()
    assert len(work_dirs) == 29 and all(Path(w, f"zoo_{Path(w).name[:-7]}_ade20k.py").is_file()
                                        for w in work_dirs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_torchrun_equals_two_processes_on_one_node(voc_root: Path,
                                                           tmp_path: Path) -> None:
    """NNODES=2 as two torchrun invocations (one process each) on 127.0.0.1."""
    args = ["--data-root", str(voc_root), "--cfg-options", *CFG_OPTIONS[1:],
            "train_cfg.max_epochs=1"]
    env = {k: v for k, v in os.environ.items()
           if k not in ("PORT", "MASTER_PORT", "MASTER_ADDR", "NNODES", "NODE_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    launcher = str(REPO_ROOT / "tools" / "dist_train.sh")
    one = subprocess.run(["bash", launcher, str(VOC_DEMO), "2", "--work-dir",
                          str(tmp_path / "one"), *args], env=env, capture_output=True,
                         text=True, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    port = str(_free_port())
    nodes = [subprocess.Popen(
        ["bash", launcher, str(VOC_DEMO), "1", "--work-dir", str(tmp_path / "two"), *args],
        env={**env, "NNODES": "2", "NODE_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
             "PORT": port}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)]
    try:
        outputs = [node.communicate(timeout=900)[0] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.send_signal(signal.SIGKILL)
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-3000:]
    assert f"Epoch(train) [1][{STEPS}/{STEPS}]" in outputs[0]
    _assert_same_weights(tmp_path / "one" / "epoch_1.pth", tmp_path / "two" / "epoch_1.pth")
