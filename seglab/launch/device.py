"""Which device a run trains on, decided loudly: never a silent fall back to the CPU.

seglab runs GPU-written configs on CPU-only machines (gloo, BN for SyncBN, fp32 for
AMP). On a GPU node whose torch cannot use the GPUs (a driver older than the CUDA
runtime torch was built for, a CPU-only torch wheel, a card torch no longer
supports) the same adaptation would start ``dist_train.sh CONFIG 8`` as eight CPU
processes and say nothing. This module tells the two machines apart.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import warnings

import torch

from seglab.errors import UserError


class CudaUnusable(UserError):
    """The machine has NVIDIA GPUs but this torch cannot use them."""


def nvidia_devices() -> list[str]:
    """Evidence of NVIDIA GPUs on this machine, whatever torch thinks: device nodes, else
    the GPUs ``nvidia-smi -L`` lists (an image can ship nvidia-smi without a GPU, so its
    presence alone proves nothing). Empty on a CPU-only machine."""
    found = sorted(glob.glob("/dev/nvidia[0-9]*"))
    smi = shutil.which("nvidia-smi")
    if found or smi is None:
        return found
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.split(" (UUID")[0] for line in listed.splitlines() if line.startswith("GPU ")]


def cuda_unavailable_reason() -> str:
    """Why ``torch.cuda.is_available()`` is False, in torch's own words where it has them."""
    if torch.version.cuda is None:
        return (f"this torch ({torch.__version__}) is a CPU-only build; install a CUDA build "
                "(python -m seglab.platform.install --force on this node)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            torch.cuda.init()
        except Exception as err:  # torch raises RuntimeError/AssertionError with the reason
            return f"{type(err).__name__}: {err}".strip()
    said = "; ".join(str(w.message) for w in caught)
    return said or f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no usable GPU"


def check_cuda_usable(allow_cpu: bool = False) -> None:
    """Refuse to train on the CPU of a GPU machine unless ``allow_cpu``.

    Args:
        allow_cpu: proceed on the CPU anyway (``--allow-cpu``).

    Raises:
        CudaUnusable: NVIDIA devices exist but torch cannot use them.
    """
    if allow_cpu or torch.cuda.is_available():
        return
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return  # the user hid the GPUs: a deliberate CPU run
    devices = nvidia_devices()
    if not devices:
        return  # a CPU-only machine: the CPU adaptation is what the user wants
    raise CudaUnusable(
        f"this machine has NVIDIA GPUs ({', '.join(devices[:4])}"
        f"{', ...' if len(devices) > 4 else ''}) but torch cannot use them: "
        f"{cuda_unavailable_reason()}. seglab will not silently train on the CPU. Fix: "
        f"check `nvidia-smi` (torch {torch.__version__} was built for CUDA "
        f"{torch.version.cuda or 'none'} and needs a driver at least that new), or pass "
        "--allow-cpu to train on the CPU anyway.")
