"""Distributed training on CPU ranks (gloo), so multi-process runs work without GPUs.

mmengine's ``init_dist`` calls ``torch.cuda.set_device`` and its DDP wrapper
passes ``device_ids=[LOCAL_RANK]``; both fail on a CPU-only machine. seglab
starts the gloo process group itself (mmengine then skips ``init_dist``) and
wraps the model in ``CPUAwareDDP``. On GPUs neither is used.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import sys
from typing import Any, NoReturn

import torch
import torch.distributed as torch_dist
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS

from seglab.launch.env import RANK_VARIABLE


@MODEL_WRAPPERS.register_module()
class CPUAwareDDP(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that also accepts a module on the CPU.

    Configured as ``MMDistributedDataParallel`` in ``model_wrapper_cfg``; on a
    CPU module ``device_ids`` is dropped.

    Args:
        module (nn.Module): the model to wrap (the runner passes it).
        detect_anomalous_params (bool): log the parameters outside the loss's
            computation graph (for debugging; slows training). Defaults to False.
        **kwargs: ``torch.nn.parallel.DistributedDataParallel``'s arguments
            (``broadcast_buffers``, ``find_unused_parameters``, ``device_ids``...).
    """

    def __init__(self, module: torch.nn.Module, **kwargs: Any) -> None:
        if all(p.device.type == "cpu" for p in module.parameters()):
            kwargs["device_ids"] = None  # torch's DDP rejects device ids for CPU modules
        super().__init__(module=module, **kwargs)


def init_cpu_process_group(timeout_s: int = 1800) -> None:
    """Join the torchrun job with gloo, from the env vars torchrun sets."""
    if torch_dist.is_initialized():
        return
    from datetime import timedelta

    torch_dist.init_process_group(
        backend="gloo",
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        timeout=timedelta(seconds=timeout_s),
    )


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_launcher() -> bool:
    """Make this rank die when its torchrun agent does; return whether it was arranged.

    torchrun starts each rank of a script in a session of its own, so ``kill -9`` of
    ``tools/dist_train.sh`` (or of torchrun) leaves the ranks training on as orphans:
    they hold the GPUs and keep writing checkpoints into the work dir that the next
    ``--resume`` reads. Linux can send a signal to a process when its parent exits;
    SIGKILL cannot be forwarded by torchrun, so the kernel does it. Checkpoints are
    written atomically, so a rank killed mid-save leaves the previous one intact.
    """
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return False
    launcher = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    # The launcher died before the request took effect. (A parent of 1 is no proof of
    # that: torchrun is PID 1 in a container started with it; seglab asks first thing.)
    if os.getppid() != launcher:
        os.kill(os.getpid(), signal.SIGKILL)
    return True


def end_process_group() -> None:
    """Wait for every rank, then tear the process group down before the interpreter exits.

    Left to interpreter exit, a gloo rank can abort in its C++ destructors ("terminate called
    without an active exception", exit -6) after training finished, and torchrun then reports
    the whole job as failed; NCCL warns that the group leaks resources. The barrier keeps a
    rank that finished first from tearing down while another still collects its metrics.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()


def exit_launched_rank(code: int) -> NoReturn:
    """End a rank that a launcher started, with ``code``, without the interpreter's teardown.

    After training a rank's exit status must be the command's: torchrun reports the whole
    job failed, and Slurm requeues or marks it, on one rank's -6. Even with the process group
    ended, C++ objects (gloo's, the DDP reducer's, CUDA's) can be freed while the interpreter
    is being torn down and abort ("terminate called without an active exception"), seen
    with two jobs training on one node. The ``atexit`` handlers a normal exit runs still run
    first (DataLoader workers are shut down, loggers and coverage flushed); then the process
    ends as a ``multiprocessing`` child does, with ``os._exit``.
    """
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken pipe: nothing left to say
            stream.flush()
    os._exit(code)


def is_launched_rank(launcher: str) -> bool:
    """Whether this process is one rank of a launched job (not a caller of ``main(argv)``
    in a process of its own, such as a notebook or a test)."""
    return RANK_VARIABLE.get(launcher, "") in os.environ  # the launcher announced its rank
