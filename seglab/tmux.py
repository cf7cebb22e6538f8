"""Start a training run in a detached tmux session that outlives the terminal (and ssh)."""

from __future__ import annotations

import os.path as osp
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from seglab import REPO_ROOT
from seglab.config import default_work_dir
from seglab.errors import UserError


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


def start_training_session(config: str, gpus: int, train_args: list[str],
                           session: str | None = None) -> str:
    """Run ``tools/dist_train.sh CONFIG GPUS ARGS`` in tmux, teeing output to the work dir."""
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
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-c", str(Path.cwd()),
                    "bash", "-c", shell], check=True)
    resume = ["scripts/tmux_train.sh", config, str(gpus),
              *[a for a in train_args if a != "--resume"], "--resume"]
    print("\n".join([
        f"seglab: training in tmux session {session!r} ({gpus} process(es))",
        f"  log      {log}",
        f"  attach   tmux attach -t {session}    (detach: Ctrl-b d)",
        f"  resume   {shlex.join(resume)}",
    ]))
    return session
