"""Environment set-up: pins, the mmcv patch, op-variant choice, clear errors, the wheel cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from seglab import install
from tests.conftest import REPO_ROOT

# The exact lines of mmcv 2.1.0's setup.py that the build patches.
MMCV_SETUP_EXCERPT = """
        if platform.system() != 'Windows':
            if parse_version(torch.__version__) <= parse_version('1.12.1'):
                extra_compile_args['cxx'] = ['-std=c++14']
            else:
                extra_compile_args['cxx'] = ['-std=c++17']

            define_macros += [('MMCV_WITH_MPS', None)]
            extra_compile_args = {}
            extra_compile_args['cxx'] = ['-Wall', '-std=c++17']

        if 'nvcc' in extra_compile_args and platform.system() != 'Windows':
            if parse_version(torch.__version__) <= parse_version('1.12.1'):
                extra_compile_args['nvcc'] += ['-std=c++14']
            else:
                extra_compile_args['nvcc'] += ['-std=c++17']
"""

CPU_TORCH = {"torch": "2.14.1", "cuda_version": "13.0", "cuda_available": False,
             "capabilities": []}
GPU_TORCH = {**CPU_TORCH, "cuda_available": True, "capabilities": ["9.0"]}


def test_every_dependency_is_pinned_and_matches_the_running_stack() -> None:
    import importlib.metadata as metadata

    pins, build_requires = install.read_pins()
    for name in ("torch", "torchvision", "mmcv", "mmengine", "mmsegmentation", "tensorboard"):
        assert metadata.version(name).split("+")[0] == pins[name], name
    assert all("==" in spec for spec in build_requires)


def test_patch_drops_the_hard_coded_cxx_standard(tmp_path: Path) -> None:
    setup_py = tmp_path / "setup.py"
    setup_py.write_text(MMCV_SETUP_EXCERPT)
    install.patch_mmcv_setup(setup_py)
    patched = setup_py.read_text()
    assert "c++17" not in patched
    assert "extra_compile_args['cxx'] = ['-Wall']" in patched
    assert "-std=c++14" in patched  # untouched: only the torch>1.12 branches change


def test_patch_refuses_an_unknown_setup_py(tmp_path: Path) -> None:
    setup_py = tmp_path / "setup.py"
    setup_py.write_text("extra_compile_args = {'cxx': ['-std=c++14']}\n")
    with pytest.raises(install.InstallError, match="not the mmcv sdist"):
        install.patch_mmcv_setup(setup_py)


def test_variant_is_cpu_without_a_gpu_even_with_nvcc() -> None:
    variant, env = install.mmcv_variant(CPU_TORCH, {"PATH": os.environ["PATH"]})
    assert variant == "cpu" and env["FORCE_CUDA"] == "0"


def test_variant_with_gpu_and_nvcc_keys_on_cuda_and_arch(tmp_path: Path) -> None:
    nvcc = tmp_path / "nvcc"
    nvcc.write_text("#!/bin/sh\n")
    nvcc.chmod(0o755)
    variant, env = install.mmcv_variant(GPU_TORCH, {"PATH": str(tmp_path)})
    assert variant == "cuda13.0-sm90"
    assert env["TORCH_CUDA_ARCH_LIST"] == "9.0" and env["FORCE_CUDA"] == "1"
    variant, _ = install.mmcv_variant(
        GPU_TORCH, {"PATH": str(tmp_path), "TORCH_CUDA_ARCH_LIST": "8.0;9.0"})
    assert variant == "cuda13.0-sm80_90"


def test_gpu_without_nvcc_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(install.InstallError, match="nvcc"):
        install.mmcv_variant(GPU_TORCH, {"PATH": str(tmp_path)})
    variant, env = install.mmcv_variant(
        GPU_TORCH, {"PATH": str(tmp_path), "SEGLAB_MMCV_CPU_ONLY": "1"})
    assert variant == "cpu" and env["CUDA_VISIBLE_DEVICES"] == ""


def test_missing_compiler_is_named(tmp_path: Path) -> None:
    with pytest.raises(install.InstallError, match="No C\\+\\+ compiler.*g\\+\\+-nonexistent"):
        install.check_toolchain({"PATH": str(tmp_path), "CXX": "g++-nonexistent"})


def test_compiler_without_cxx20_is_named(tmp_path: Path) -> None:
    fake = tmp_path / "old-g++"
    fake.write_text("#!/bin/sh\necho 'unrecognized option -std=c++20' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(install.InstallError, match="cannot compile C\\+\\+20"):
        install.check_toolchain({"PATH": str(tmp_path), "CXX": str(fake)})


def test_second_setup_reuses_the_cached_wheel_without_a_compiler(tmp_path: Path) -> None:
    """Re-run the whole set-up with every compiler replaced by one that fails."""
    failing = tmp_path / "fail"
    failing.write_text("#!/bin/sh\necho compiler was run >&2\nexit 1\n")
    failing.chmod(0o755)
    env = {**os.environ, "CC": str(failing), "CXX": str(failing)}
    out = subprocess.run([sys.executable, "-m", "seglab.install", "--force"], cwd=REPO_ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "using cached mmcv wheel" in out.stdout
    assert "compiler was run" not in out.stderr
