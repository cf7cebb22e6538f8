"""Device choice and AMP on a GPU node, faked on the CPU: GPUs torch cannot use, bf16
support, mmseg's ``--amp``."""

from __future__ import annotations

import pytest
import torch

from seglab.config.adapt import enable_amp
from seglab.config.loading import ConfigError, load_config
from seglab.launch import device
from seglab.launch.device import CudaUnusable, check_cuda_usable
from tests.conftest import REPO_ROOT, VOC_DEMO, run_cli

ADE_V12 = REPO_ROOT / "configs" / "segformer" / "segformer_mit-b2_ade20k_v1.2.py"


def fake_gpu_node(monkeypatch: pytest.MonkeyPatch, reason: str = "") -> None:
    """Eight GPUs on the machine; torch cannot use them (a driver too old, say)."""
    monkeypatch.setattr(device, "nvidia_devices", lambda: [f"/dev/nvidia{i}" for i in range(8)])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if reason:
        def init() -> None:
            raise RuntimeError(reason)

        monkeypatch.setattr(torch.version, "cuda", "13.0")
        monkeypatch.setattr(torch.cuda, "init", init)


def test_gpus_torch_cannot_use_stop_the_run_with_torchs_reason(monkeypatch) -> None:
    fake_gpu_node(monkeypatch, "The NVIDIA driver on your system is too old (found version "
                               "12040)")
    with pytest.raises(CudaUnusable) as err:
        check_cuda_usable()
    message = str(err.value)
    assert "/dev/nvidia0" in message and "driver on your system is too old" in message
    assert "--allow-cpu" in message
    check_cuda_usable(allow_cpu=True)  # the user's explicit choice


def test_a_cpu_only_torch_on_a_gpu_node_is_named(monkeypatch) -> None:
    fake_gpu_node(monkeypatch)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(CudaUnusable, match="CPU-only build"):
        check_cuda_usable()


def test_a_cpu_only_machine_keeps_training_on_the_cpu(monkeypatch) -> None:
    monkeypatch.setattr(device, "nvidia_devices", lambda: [])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check_cuda_usable()


def test_nvidia_smi_without_gpus_is_no_evidence(monkeypatch, tmp_path) -> None:
    """Images ship nvidia-smi without a GPU; only the GPUs it lists count."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'No devices were found'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setattr(device.glob, "glob", lambda pattern: [])
    assert device.nvidia_devices() == []
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)'\n")
    assert device.nvidia_devices() == ["GPU 0: NVIDIA H100 80GB HBM3"]


@pytest.mark.slow
def test_seglab_train_refuses_before_building_anything(tmp_path) -> None:
    """The CLI on a faked GPU node: one clear error, exit 2, nothing written."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: NVIDIA A100 (UUID: GPU-1)'\n")
    (fake / "nvidia-smi").chmod(0o755)
    import os

    result = run_cli("train", str(VOC_DEMO), "--work-dir", str(tmp_path / "run"),
                     env={"PATH": f"{fake}:{os.environ['PATH']}"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "NVIDIA A100" in result.stderr and "--allow-cpu" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_amp_flag_is_mmsegs_and_picks_bf16_where_the_gpu_computes_it(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    cfg = load_config(VOC_DEMO)
    notes = enable_amp(cfg, amp=True)
    assert cfg.optim_wrapper.type == "AmpOptimWrapper"
    assert cfg.optim_wrapper.loss_scale == "dynamic" and cfg.optim_wrapper.dtype == "bfloat16"
    assert any("--amp" in n for n in notes)
    # a V100: torch.cuda.is_bf16_supported() says True (emulated), the capability says 7.0
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    cfg = load_config(VOC_DEMO)
    enable_amp(cfg, amp=True)
    assert cfg.optim_wrapper.dtype == "float16"


def test_amp_on_a_cpu_falls_back_to_an_optimizer_wrapper_that_builds() -> None:
    from mmengine.optim import OptimWrapper, build_optim_wrapper

    from seglab.config.adapt import adapt_to_device

    cfg = load_config(VOC_DEMO)
    enable_amp(cfg, amp=True, amp_dtype="bf16")
    adapt_to_device(cfg, launcher="none")
    wrapper = build_optim_wrapper(torch.nn.Linear(2, 2), cfg.optim_wrapper)
    assert type(wrapper) is OptimWrapper  # exactly: not the AMP one


def test_hiding_the_gpus_is_a_deliberate_cpu_run(monkeypatch) -> None:
    fake_gpu_node(monkeypatch, "no CUDA-capable device is detected")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    check_cuda_usable()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(CudaUnusable):
        check_cuda_usable()


def test_a_config_with_amp_keeps_its_dtype_unless_asked(monkeypatch) -> None:
    """A seed config reproduces its run: fp16 stays fp16 unless --amp-dtype says otherwise."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    cfg = load_config(ADE_V12)
    assert enable_amp(cfg) == [] and "dtype" not in cfg.optim_wrapper
    enable_amp(cfg, amp=True)
    assert "dtype" not in cfg.optim_wrapper
    enable_amp(cfg, amp_dtype="bf16")
    assert cfg.optim_wrapper.dtype == "bfloat16"


def test_amp_dtype_without_amp_is_refused() -> None:
    with pytest.raises(ConfigError, match="add --amp"):
        enable_amp(load_config(VOC_DEMO), amp_dtype="fp16")


def test_tools_train_accepts_mmsegs_amp_flag() -> None:
    from seglab.cli import build_parser

    args = build_parser().parse_args(["train", str(VOC_DEMO), "--amp", "--amp-dtype", "fp16",
                                      "--allow-cpu"])
    assert args.amp and args.amp_dtype == "fp16" and args.allow_cpu
