"""Start a training run in a detached tmux session that outlives the terminal (and ssh)."""

from __future__ import annotations

import json
import os
import os.path as osp
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from seglab import REPO_ROOT
from seglab.config.loading import default_work_dir
from seglab.errors import UserError

# Variables that describe the pane, not the caller: tmux sets them for the session, and the
# caller's (its own terminal, or another tmux it runs in) would be wrong inside it.
PANE_VARIABLES = ("TMUX", "TMUX_PANE", "TERM")

# A new session's first process gets the environment the tmux *server* was started with
# (maybe days ago, from another shell), not the caller's: CUDA_VISIBLE_DEVICES, PORT, NCCL_*,
# an activated venv... would silently be the server's. So the session runs this first: it
# replaces its environment with the caller's whole environment, saved to a private file that
# it deletes, and execs the launch. The whole environment, not a list of "relevant" ones:
# a run reads many (LD_LIBRARY_PATH, HF_HOME, proxies, ``{{$VAR}}`` in configs, ...) and a
# detached run should behave exactly as if started in the caller's shell.
# Why a file, not ``new-session -e VAR=VALUE``: -e needs tmux >= 3.2 (Ubuntu 20.04 ships
# 3.0a), and a tmux command travels in one message of at most 16 KiB, which an environment
# as arguments exceeds with conda or module systems ("command too long"). -I: the server's
# PYTHON* variables must not reach this interpreter; it imports nothing from seglab, so it
# works however seglab is installed.
_EXEC_WITH_SAVED_ENV = f"""\
import json, os, sys
path, argv = sys.argv[1], sys.argv[2:]
with open(path) as f:
    env = json.load(f)
os.remove(path)
env.update({{k: os.environ[k] for k in {PANE_VARIABLES!r} if k in os.environ}})
os.execvpe(argv[0], argv, env)
"""


def session_name(config: str) -> str:
    """tmux forbids '.' and ':' in names: ``segformer_mit-b2_ade20k_v1.2`` -> ``..._v1-2``."""
    return "seglab_" + re.sub(r"[^A-Za-z0-9_-]", "-", Path(config).stem)


def _work_dir(config: str, train_args: list[str]) -> str:
    for i, arg in enumerate(train_args):
        if arg == "--work-dir" and i + 1 < len(train_args):
            return train_args[i + 1]
        if arg.startswith("--work-dir="):
            return arg.split("=", 1)[1]
    return default_work_dir(config)


def _save_environment() -> str:
    """The caller's environment in a file only the caller can read (it may hold tokens)."""
    fd, path = tempfile.mkstemp(prefix="seglab-tmux-env-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        # JSON keeps any value (newlines, undecodable bytes as surrogate escapes) intact
        json.dump({k: v for k, v in os.environ.items() if k not in PANE_VARIABLES}, f)
    return path


def _resume_args(train_args: list[str]) -> list[str]:
    """``train_args`` to continue the run: --resume in place of any --resume or --finetune-from
    (seglab refuses the two together; the CLI passes valued options as ``--opt=value``)."""
    replaced = ("--resume", "--finetune-from")
    return [*(a for a in train_args if a.split("=", 1)[0] not in replaced), "--resume"]


def start_training_session(config: str, gpus: int, train_args: list[str],
                           session: str | None = None) -> str:
    """Run ``tools/dist_train.sh CONFIG GPUS ARGS`` in tmux, teeing output to the work dir.

    The run sees the caller's environment (GPUs, PORT, venv), whatever the tmux server's is.
    """
    if shutil.which("tmux") is None:
        raise UserError("tmux is not installed (Debian/Ubuntu: apt-get install tmux)")
    if not Path(config).is_file():
        raise UserError(f"config file {config!r} not found")
    session = session or session_name(config)
    if subprocess.run(["tmux", "has-session", "-t", f"={session}"],
                      capture_output=True).returncode == 0:
        raise UserError(
            f"tmux session {session!r} already exists (a run of this config is going?). "
            f"Attach with: tmux attach -t {session}; or stop it: tmux kill-session -t {session}")
    work_dir = _work_dir(config, train_args)
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    log = osp.join(work_dir, "tmux_train.log")
    launch = [str(REPO_ROOT / "tools" / "dist_train.sh"), config, str(gpus), *train_args]
    # pipefail: the session's exit status is the training's, not tee's.
    shell = f"set -o pipefail; {shlex.join(launch)} 2>&1 | tee -a {shlex.quote(log)}"
    env_file = _save_environment()
    try:
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-c", str(Path.cwd()),
                        sys.executable, "-I", "-c", _EXEC_WITH_SAVED_ENV, env_file,
                        "bash", "-c", shell], check=True)
    except (subprocess.CalledProcessError, OSError):
        os.remove(env_file)  # no session will read it
        raise
    resume = ["scripts/tmux_train.sh", config, str(gpus), *_resume_args(train_args)]
    print("\n".join([
        f"seglab: training in tmux session {session!r} ({gpus} process(es))",
        f"  log      {log}",
        f"  attach   tmux attach -t {session}    (detach: Ctrl-b d)",
        f"  resume   {shlex.join(resume)}",
    ]))
    return session
