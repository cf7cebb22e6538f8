"""Shared fixtures: generated datasets and one short training run reused by several tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Two xdist workers share the 2 cores (make test): at 2 OpenMP threads each, every worker's
# threads spin on barriers while the other holds a core, and a training step took 3.6x as long
# (4.9 s vs 1.3 s for a demo step measured beside another run). One thread each, set before
# torch is imported; the seglab processes a test starts inherit it.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    for _threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_threads, "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
VOC_DEMO = REPO_ROOT / "configs" / "demo" / "segformer_mit-b0_synth-voc_v1.0.py"
ADE_DEMO = REPO_ROOT / "configs" / "demo" / "segformer_mit-b0_synth-ade20k_v1.0.py"
# Enough images that 2 epochs give the model ~70 optimizer steps at batch 8.
TRAIN_IMAGES, VAL_IMAGES = 288, 32


def run_cli(*args: str, cwd: Path = REPO_ROOT, timeout: int = 900,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``seglab ARGS`` in a subprocess, capturing its output."""
    return subprocess.run([sys.executable, "-m", "seglab.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def seed_weights_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding the file the seed SegFormer configs read,
    ``checkpoints/mit_b2_converted_from_hf.pth`` (``seglab weights convert`` makes it), so
    the doctor lets them through; for tests that stop before any weight is loaded."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "mit_b2_converted_from_hf.pth").write_bytes(b"not loaded")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("synth")


@pytest.fixture(scope="session")
def voc_root(synth_root: Path) -> Path:
    from seglab.data.synth import write_synth_dataset

    return write_synth_dataset("voc", synth_root, num_train=TRAIN_IMAGES, num_val=VAL_IMAGES,
                               seed=0).root


@pytest.fixture(scope="session")
def ade_root(synth_root: Path) -> Path:
    from seglab.data.synth import write_synth_dataset

    return write_synth_dataset("ade20k", synth_root, num_train=TRAIN_IMAGES,
                               num_val=VAL_IMAGES, seed=0).root


# A run that tests a mechanism (a crash, a signal, a resume), not learning: 16 training images
# are 2 steps an epoch at the demo's batch of 8, and 4 validation images.
TINY_TRAIN_IMAGES = 16
TINY_SUBSET = {"train_dataloader.dataset.indices": TINY_TRAIN_IMAGES,
               "val_dataloader.dataset.indices": 4}


def short_run(data_root: Path, epochs: int) -> dict[str, object]:
    """``train``/``test`` arguments: a demo config on ``data_root``, stopping after ``epochs``."""
    return {"data_root": str(data_root), "cfg_options": {"train_cfg.max_epochs": epochs}}


@pytest.fixture(scope="session")
def voc_two_epochs(voc_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """The VOC demo config trained for 2 epochs (shared by the mIoU, resume and test tests)."""
    from seglab.engine.runner import train

    work_dir = tmp_path_factory.mktemp("voc_run")
    runner = train(str(VOC_DEMO), work_dir=str(work_dir),
                   **short_run(voc_root, 2))
    return runner, work_dir


TRAINING_FIXTURES = {"voc_two_epochs"}
LONG_CHAINS = ("device_check", "slurm")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs a training fixture is slow whoever wrote it: `make test-fast`
    (``-m "not slow"``) must never start a training run. Under `make test`'s two workers
    (``--dist loadgroup``) the tests that share one training run are one group, so the run is
    trained once, by the worker that has them all."""
    for item in items:
        shared = TRAINING_FIXTURES & set(getattr(item, "fixturenames", ()))
        if shared:
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.xdist_group(name=sorted(shared)[0]))
    # The longest chains first (each runs on one worker), so that no worker is left with one
    # of them at the end while the other has nothing to do.
    items.sort(key=lambda item: not any(item.get_closest_marker(m) for m in LONG_CHAINS)
               and not TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())))
