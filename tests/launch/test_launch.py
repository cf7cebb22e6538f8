"""Launching runs: tools/dist_*.sh ports, tmux sessions' environment, forwarded arguments.

Most tests stop at torchrun: an activated "venv" whose ``torchrun`` records what it was
started with, so everything up to it (the shims, ``seglab train --tmux``, tmux) is the real
code and nothing trains. One test trains for real: two jobs on one node at once.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from seglab.cli import _forwarded_train_args, build_parser
from tests.conftest import REPO_ROOT, VOC_DEMO

# The caller's variables a test sets itself; an outer shell's must not leak in.
LAUNCH_VARIABLES = ("TMUX", "TMUX_PANE", "TMUX_TMPDIR", "PORT", "MASTER_PORT", "MASTER_ADDR",
                    "NNODES", "NODE_RANK", "CUDA_VISIBLE_DEVICES", "VIRTUAL_ENV")
STUB_TORCHRUN = """#!/usr/bin/env bash
# torchrun stand-in: records its arguments and environment, then tells a waiting test (in tmux)
printf '%s\\0' "$@" > {record}/argv
env -0 > {record}/env
if [ -n "${{TMUX:-}}" ]; then tmux wait-for -S seglab-recorded; fi
"""


def _clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}


@pytest.fixture
def stub_torchrun(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """(the caller's environment, with a venv activated whose torchrun is the stub; where the
    stub writes its record). The real venv stays on PATH for seglab and python."""
    venv, record = tmp_path / "venv", tmp_path / "record"
    (venv / "bin").mkdir(parents=True)
    record.mkdir()
    stub = venv / "bin" / "torchrun"
    stub.write_text(STUB_TORCHRUN.format(record=shlex.quote(str(record))))
    stub.chmod(0o755)
    path = os.pathsep.join([str(venv / "bin"), str(Path(sys.executable).parent),
                            os.environ["PATH"]])
    return {**_clean_environ(), "VIRTUAL_ENV": str(venv), "PATH": path}, record


def _recorded(record: Path) -> tuple[list[str], dict[str, str]]:
    argv = (record / "argv").read_text().split("\0")[:-1]
    env = dict(e.split("=", 1) for e in (record / "env").read_text().split("\0")[:-1])
    return argv, env


def _master_port(argv: list[str]) -> int:
    (port,) = [a.split("=", 1)[1] for a in argv if a.startswith("--master_port=")]
    return int(port)


@pytest.mark.parametrize(("variables", "expected"), [
    ({"PORT": "29611"}, 29611),
    ({"MASTER_PORT": "29622"}, 29622),
    ({"NNODES": "2", "NODE_RANK": "1"}, 29500),  # nodes must agree: the fixed default
    ({}, None),  # one node, no PORT: a free port
])
@pytest.mark.parametrize("script", ["dist_train.sh", "dist_test.sh"])
@pytest.mark.slow  # the shell scripts as subprocesses: not in make test-fast
def test_dist_scripts_choose_and_print_the_rendezvous_port(
        script: str, variables: dict[str, str], expected: int | None, stub_torchrun) -> None:
    env, record = stub_torchrun
    args = [str(VOC_DEMO), *(["ckpt.pth"] if script == "dist_test.sh" else []), "2"]
    out = subprocess.run(["bash", str(REPO_ROOT / "tools" / script), *args],
                         env={**env, **variables}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    argv, _ = _recorded(record)
    port = _master_port(argv)
    assert f"seglab: rendezvous port {port} (" in out.stderr
    if expected is None:
        assert port != 29500 and 1024 <= port < 65536
    else:
        assert port == expected
    assert f"--nnodes={variables.get('NNODES', 1)}" in argv and "--nproc_per_node=2" in argv


@pytest.mark.slow
def test_two_jobs_on_one_node_at_once_both_train(voc_root: Path, tmp_path: Path) -> None:
    """Two 2-rank jobs started together, no PORT: with one default port the second fails
    with "address in use"."""
    from seglab.config.loading import load_config
    from seglab.testing.smoke import smoke_config

    env = {**_clean_environ(), "OMP_NUM_THREADS": "1"}
    jobs = []
    for name in ("a", "b"):
        config = tmp_path / f"smoke_{name}.py"  # 2 steps of 2 images at 64 px: 1 per rank
        smoke_config(load_config(VOC_DEMO), {"voc": str(voc_root)},
                     str(tmp_path / name)).dump(str(config))
        jobs.append(subprocess.Popen(
            ["bash", str(REPO_ROOT / "tools" / "dist_train.sh"), str(config), "2"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True))
    outputs = [job.communicate(timeout=600)[0] for job in jobs]
    for job, output in zip(jobs, outputs, strict=True):
        assert job.returncode == 0, output[-3000:]
        assert "Epoch(train) [1][1/1]" in output, output[-3000:]
    ports = {re.search(r"seglab: rendezvous port (\d+)", o).group(1) for o in outputs}
    assert len(ports) == 2


@pytest.fixture
def tmux_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A private tmux server (tmux's own TMUX_TMPDIR picks it; a user's server is never
    touched), started the way a user's long-lived one was: from another shell, with other
    GPUs, another PORT and a variable the caller does not have. Yields the selecting variable.
    """
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    select = {"TMUX_TMPDIR": str(tmp_path_factory.mktemp("tmux"))}  # short: socket paths
    server_env = {"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "7", "PORT": "1",
                  "NCCL_P2P_DISABLE": "1", **select}
    subprocess.run(["tmux", "new-session", "-d", "-s", "older", "sleep", "600"],
                   env=server_env, check=True)
    try:
        yield select
    finally:
        subprocess.run(["tmux", "kill-server"], env=server_env)


@pytest.mark.parametrize("launch", [
    # CONFIG after --tmux: the form that forwarded CONFIG twice
    [sys.executable, "-m", "seglab.cli", "train", "--tmux", str(VOC_DEMO), "--gpus", "2",
     "--resume"],
    ["bash", str(REPO_ROOT / "scripts" / "tmux_train.sh"), str(VOC_DEMO), "2", "--resume"],
], ids=["seglab-train-tmux", "tmux_train.sh"])
@pytest.mark.slow
def test_tmux_run_gets_the_callers_environment_and_arguments(
        launch: list[str], tmux_server, stub_torchrun, tmp_path: Path) -> None:
    env, record = stub_torchrun
    (tmp_path / "tmp").mkdir()
    caller = {**env, **tmux_server, "CUDA_VISIBLE_DEVICES": "3,5", "PORT": "29633",
              "NCCL_DEBUG": "INFO", "TMPDIR": str(tmp_path / "tmp")}
    out = subprocess.run(launch, cwd=tmp_path, env=caller, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"scripts/tmux_train.sh {VOC_DEMO} 2 --resume\n" in out.stdout
    try:
        subprocess.run(["tmux", "wait-for", "seglab-recorded"], env=caller, timeout=60)
    except subprocess.TimeoutExpired:
        log = tmp_path / "work_dirs" / VOC_DEMO.stem / "tmux_train.log"
        pytest.fail(f"the stub torchrun did not run; the session's log:\n{log.read_text()}")
    argv, seen = _recorded(record)
    assert argv == ["--nnodes=1", "--node_rank=0", "--master_addr=127.0.0.1",
                    "--master_port=29633", "--nproc_per_node=2",
                    str(REPO_ROOT / "tools" / "train.py"), str(VOC_DEMO),
                    "--launcher", "pytorch", "--resume"]
    for name in ("CUDA_VISIBLE_DEVICES", "PORT", "NCCL_DEBUG", "VIRTUAL_ENV", "PATH"):
        assert seen.get(name) == caller[name], name
    assert "NCCL_P2P_DISABLE" not in seen  # the server's own, which the caller does not have
    assert seen["TMUX"].startswith(tmux_server["TMUX_TMPDIR"])  # the pane's, not the caller's
    assert not list((tmp_path / "tmp").iterdir())  # the saved environment was deleted


CONFIG = "configs/demo/x.py"


@pytest.mark.parametrize(("argv", "forwarded"), [
    (["train", CONFIG, "--tmux", "--gpus", "2", "--resume"], ["--resume"]),
    (["train", "--tmux", CONFIG], []),
    (["train", "--gpus=4", "--tmux", "--launcher", "pytorch", CONFIG, "--resume", "e_1.pth"],
     ["--resume=e_1.pth"]),
    (["train", CONFIG, "--tmux", "--work-dir=-odd", "--overwrite", "--on-nonfinite", "skip",
      "--min-pretrained-coverage", "0"],
     ["--overwrite", "--min-pretrained-coverage=0.0", "--on-nonfinite=skip", "--work-dir=-odd"]),
    (["train", CONFIG, "--tmux", "--cfg-options", "a=1", "b=0.5", "c=1e-05", "d=[1,(2,x)]",
      "e=True", "f=None", "g=x,y", "h=()", "i=[]", "j=inf", "k=s.py", "--cfg-options", "l=2"],
     ["--cfg-options", "a=1", "b=0.5", "c=1e-05", "d=[1,(2,x)]", "e=True", "f=None",
      "g=[x,y]", "h=()", "i=[]", "j=inf", "k=s.py", "l=2"]),
])
def test_tmux_forwards_the_parsed_options_once(argv: list[str], forwarded: list[str]) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    assert _forwarded_train_args(args) == forwarded
    # what dist_train.sh hands `seglab train` parses to the same run
    again = parser.parse_args(["train", CONFIG, "--launcher", "pytorch", *forwarded])
    launch_only = {"tmux", "gpus", "launcher", "argv"}
    assert ({k: v for k, v in vars(again).items() if k not in launch_only}
            == {k: v for k, v in vars(args).items() if k not in launch_only})


@pytest.mark.slow
def test_kill_9_of_dist_train_leaves_no_rank_training_on(voc_root: Path, tmp_path: Path) -> None:
    """torchrun starts each rank in a session of its own: without seglab arranging for the
    kernel to kill a rank with its launcher, the rank trains on as an orphan after
    ``kill -9`` and keeps writing checkpoints into the work dir the next --resume reads."""
    import signal
    import time

    from seglab.platform.gpu_check import processes_mentioning

    work_dir = tmp_path / "killed_run"
    proc = subprocess.Popen(
        ["bash", str(REPO_ROOT / "tools" / "dist_train.sh"), str(VOC_DEMO), "1",
         "--work-dir", str(work_dir), "--data-root", str(voc_root), "--cfg-options",
         "train_cfg.max_epochs=50", "train_dataloader.dataset.indices=16",
         "train_cfg.val_interval=100"],
        cwd=REPO_ROOT, env={**_clean_environ(), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (work_dir / "last_checkpoint").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "no first checkpoint"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    survivors = processes_mentioning(str(work_dir), settle_s=10)
    for pid in survivors:  # don't leave them to the rest of the suite
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"ranks still running after kill -9 of dist_train.sh: {survivors}"


@pytest.mark.parametrize("command", ["train", "test"])
def test_a_launched_rank_exits_after_its_exit_handlers_skipping_the_teardown(
        command, tmp_path, monkeypatch) -> None:
    """Two jobs training on one node: a rank aborted in C++ destructors while the interpreter
    was torn down after training finished (-6), and torchrun reported the job failed."""
    import atexit

    import torch.distributed as dist

    from seglab import cli
    from seglab.engine import runner

    calls: list[object] = []

    def exit_now(code: int) -> None:
        calls.append(("os._exit", code, dist.is_initialized()))
        raise SystemExit(code)  # stands in for the end of the process

    monkeypatch.setattr(cli, "_die_with_launcher", lambda: None)  # no PDEATHSIG on pytest
    monkeypatch.setattr(cli, "_defer_unneeded_packages", lambda args: None)  # pytest's modules
    monkeypatch.setattr(runner, command, lambda *a, **k: calls.append(command))
    monkeypatch.setattr(atexit, "_run_exitfuncs", lambda: calls.append("atexit handlers"))
    monkeypatch.setattr(os, "_exit", exit_now)
    monkeypatch.setenv("RANK", "0")  # what torchrun sets for its ranks
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        args = [command, str(VOC_DEMO), "--launcher", "pytorch"]
        with pytest.raises(SystemExit):  # as tools/train.py and tools/test.py call it
            cli.main(args + (["ckpt.pth"] if command == "test" else []), whole_process=True)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert calls == [command, "atexit handlers", ("os._exit", 0, False)]
    calls.clear()  # a caller of main(argv) in a process of its own (a notebook, a test) stays
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store2'}", rank=0,
                            world_size=1)
    try:
        assert cli.main(args + (["ckpt.pth"] if command == "test" else [])) == 0
    finally:
        ended = not dist.is_initialized()
        if not ended:
            dist.destroy_process_group()
    assert calls == [command] and ended


@pytest.mark.parametrize("command", ["train", "test"])
def test_the_process_group_is_ended_before_the_command_returns(command, tmp_path,
                                                               monkeypatch) -> None:
    """Left to interpreter exit, a gloo rank can abort in its destructors after training
    finished ("terminate called without an active exception", exit -6) and torchrun reports
    the job failed; NCCL warns of leaked resources. train/test end the group themselves."""
    import torch.distributed as dist

    from seglab.cli import main
    from seglab.engine import runner

    seen = {}
    monkeypatch.setattr(runner, command, lambda *a, **k: seen.setdefault(
        "initialized during the run", dist.is_initialized()))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        args = [command, str(VOC_DEMO)] + (["ckpt.pth"] if command == "test" else [])
        assert main(args) == 0
    finally:
        ended = not dist.is_initialized()
        if not ended:
            dist.destroy_process_group()
    assert seen == {"initialized during the run": True} and ended
