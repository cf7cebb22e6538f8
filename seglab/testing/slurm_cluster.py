"""A real one-node Slurm on 127.0.0.1 for the tests: munged, slurmctld and slurmd from
Debian's ``slurm-wlm``, each with its own socket, ports, state and logs in one folder.

Nothing outside that folder is touched (no ``/etc/slurm``, no system munge): clients
find the cluster through ``SLURM_CONF``, which :attr:`LocalSlurm.env` sets. The node
declares more CPUs than the machine has (``config_overrides``), so a 2-task job and a
3-element array run at once on a 2-core CI machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
NODE_CPUS = 6

SLURM_CONF = """\
ClusterName=seglab
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
CredType=cred/munge
SlurmUser={user}
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
PlugStackConfig={root}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
JobRequeue=1
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
KillWait=15
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=16000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def slurm_missing() -> str | None:
    """Why a local Slurm cannot start here (None: it can)."""
    for program in (*DAEMONS, "sbatch", "scontrol"):
        if shutil.which(program) is None:
            return (f"{program} not found: install Debian's slurm-wlm and munge "
                    "(scripts/install_test_packages.sh does, as root)")
    if os.geteuid() != 0:
        return "slurmd must run as root to start jobs as their user"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    """Start with :meth:`start`, stop with :meth:`stop` (also on a failed start).

    Args:
        root (Path): folder for its configuration, state, sockets and logs.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.host = socket.gethostname().split(".")[0]

    @property
    def env(self) -> dict[str, str]:
        """The environment that points Slurm's commands at this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(args, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def start(self, timeout_s: float = 60) -> LocalSlurm:
        for sub in ("munge", "state", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        (self.root / "plugstack.conf").write_text("")
        self.conf.write_text(SLURM_CONF.format(
            host=self.host, root=self.root, cpus=NODE_CPUS, user=os.environ.get("USER", "root"),
            ctld_port=_free_port(), d_port=_free_port()))
        munge = self.root / "munge"
        subprocess.run(["munged", "--force", f"--socket={munge / 'munge.socket'}",
                        f"--key-file={key}", f"--pid-file={munge / 'munged.pid'}",
                        f"--log-file={munge / 'munged.log'}", f"--seed-file={munge / 'seed'}"],
                       check=True, capture_output=True, timeout=30)
        subprocess.run(["slurmctld", "-f", str(self.conf)], env=self.env, check=True,
                       capture_output=True, timeout=30)
        subprocess.run(["slurmd", "-f", str(self.conf)], env=self.env, check=True,
                       capture_output=True, timeout=30)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.run("sinfo", "-h", "-o", "%T").stdout.strip()
            if state == "idle":
                return self
            time.sleep(0.5)
        raise RuntimeError(f"local Slurm did not come up (node state {state!r}); see "
                           f"{self.root}/slurmctld.log and slurmd.log")

    def stop(self) -> None:
        """End the three daemons (slurmd first, so no job outlives the cluster)."""
        self.run("scancel", "--full", "--user", os.environ.get("USER", "root"), timeout=30)
        for pid_file in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            path = self.root / pid_file
            if not path.is_file():
                continue
            try:
                pid = int(path.read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.1)
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, ValueError, IndexError):
                pass

    def job_state(self, job_id: str) -> str:
        out = self.run("scontrol", "show", "job", job_id).stdout
        fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
        return fields.get("JobState", "UNKNOWN")

    def wait_for(self, job_id: str, states: tuple[str, ...], timeout_s: float) -> str:
        """Wait until job ``job_id`` is in one of ``states``; return it."""
        deadline, state = time.monotonic() + timeout_s, ""
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            if state in states:
                return state
            time.sleep(1)
        raise TimeoutError(f"job {job_id} still {state} after {timeout_s:.0f} s "
                           f"(wanted {'/'.join(states)})")
