"""Environment set-up: pins, the mmcv patch, op-variant choice, clear errors, the wheel cache."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from seglab.platform import install
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


def test_gpu_without_nvcc_builds_cpu_ops(tmp_path: Path) -> None:
    """Was an error; now CPU ops, with mmcv's setup.py kept from building CUDA ones."""
    variant, env = install.mmcv_variant(GPU_TORCH, {"PATH": str(tmp_path)})
    assert variant == "cpu" and env["CUDA_VISIBLE_DEVICES"] == "" and env["FORCE_CUDA"] == "0"
    with pytest.raises(install.InstallError, match="FORCE_CUDA=1 but nvcc"):
        install.mmcv_variant(GPU_TORCH, {"PATH": str(tmp_path), "FORCE_CUDA": "1"})
    # a CUDA_HOME without nvcc is what torch would use: not found, even with nvcc on PATH
    nvcc_dir = fake_nvcc(tmp_path / "path", "13.0")
    variant, _ = install.mmcv_variant(
        GPU_TORCH, {"PATH": str(nvcc_dir), "CUDA_HOME": str(tmp_path / "no-cuda")})
    assert variant == "cpu"


def test_cpu_only_request_wins_over_nvcc(tmp_path: Path) -> None:
    nvcc_dir = fake_nvcc(tmp_path, "13.0")
    variant, env = install.mmcv_variant(
        GPU_TORCH, {"PATH": str(nvcc_dir), "SEGLAB_MMCV_CPU_ONLY": "1"})
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


@pytest.mark.slow
def test_second_setup_reuses_the_cached_wheel_without_a_compiler(tmp_path: Path) -> None:
    """Re-run the whole set-up with every compiler replaced by one that fails."""
    failing = tmp_path / "fail"
    failing.write_text("#!/bin/sh\necho compiler was run >&2\nexit 1\n")
    failing.chmod(0o755)
    env = {**os.environ, "CC": str(failing), "CXX": str(failing)}
    out = subprocess.run([sys.executable, "-m", "seglab.platform.install", "--force"],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "using cached mmcv wheel" in out.stdout
    assert "compiler was run" not in out.stderr


def fake_nvcc(bin_dir: Path, release: str) -> Path:
    """A directory holding an ``nvcc`` that prints ``nvcc --version`` for CUDA ``release``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    nvcc = bin_dir / "nvcc"
    nvcc.write_text(  # echo is a shell builtin: PATH may hold nothing else
        "#!/bin/sh\necho 'nvcc: NVIDIA (R) Cuda compiler driver'\n"
        f"echo 'Cuda compilation tools, release {release}, V{release}.41'\n"
        f"echo 'Build cuda_{release}.r{release}/compiler.0'\n")
    nvcc.chmod(0o755)
    return bin_dir


def test_nvcc_must_match_torchs_cuda_major(tmp_path: Path) -> None:
    old = {"PATH": str(fake_nvcc(tmp_path / "old", "12.4"))}
    with pytest.raises(install.InstallError) as err:
        install.check_nvcc(old, "13.0")
    assert "is CUDA 12.4, but torch was built with CUDA 13.0" in str(err.value)
    assert "CUDA_HOME=/usr/local/cuda-13.0" in str(err.value)
    assert install.check_nvcc({"PATH": str(fake_nvcc(tmp_path / "new", "13.1"))}, "13.0") == "13.1"


def test_cuda_build_stops_on_an_nvcc_mismatch_before_installing_anything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(install, "pip", lambda *a: pytest.fail(f"pip ran: {a}"))
    variant, env = install.mmcv_variant(GPU_TORCH, {"PATH": str(fake_nvcc(tmp_path, "12.4"))})
    pins, requires = install.read_pins()
    with pytest.raises(install.InstallError, match="CUDA 12.4, but torch was built with CUDA 13.0"):
        install.ensure_mmcv(sys.executable, pins, requires, GPU_TORCH, variant, env)


@pytest.mark.parametrize(("installed", "needed", "fits"), [
    ("cpu", "cuda13.0-sm90", False),  # the issue: CPU ops on a GPU node that has nvcc
    ("cpu", "cpu", True),
    ("cuda13.0-sm90", "cuda13.0-sm90", True),
    ("cuda13.0-sm90", "cpu", True),
    ("cuda13.0-sm80", "cuda13.0-sm90", False),
    ("cuda12.4-sm90", "cuda13.0-sm90", False),
])
def test_installed_mmcv_is_compared_by_ops_variant(
        installed: str, needed: str, fits: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install, "probe_mmcv", lambda python: {
        "mmcv": "2.1.0", "variant": installed, "describe": f"mmcv 2.1.0 ({installed})"})
    assert install.mmcv_has_ops(sys.executable, "2.1.0", needed) is fits
    assert install.mmcv_has_ops(sys.executable, "2.2.0", needed) is False


class FakeMachine:
    """install() on a faked machine: torch facts, nvcc, mmcv probe; pip and builds recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, torch_facts: dict,
                 nvcc_release: str | None, installed: str | None) -> None:
        self.installed, self.ensured, self.pip_calls = installed, [], []
        cuda_home = tmp_path / "cuda"  # CUDA_HOME decides over PATH: hides any real nvcc
        cuda_home.mkdir()
        if nvcc_release:
            fake_nvcc(cuda_home / "bin", nvcc_release)
        monkeypatch.setenv("CUDA_HOME", str(cuda_home))
        monkeypatch.setenv("SEGLAB_CACHE", str(tmp_path / "cache"))
        for name in ("FORCE_CUDA", "SEGLAB_MMCV_CPU_ONLY", "TORCH_CUDA_ARCH_LIST", "CUDA_PATH"):
            monkeypatch.delenv(name, raising=False)
        self.stamp = tmp_path / "stamp"
        monkeypatch.setattr(install, "stamp_path", lambda: self.stamp)
        monkeypatch.setattr(install, "probe_torch", lambda python: torch_facts)
        monkeypatch.setattr(install, "pip", lambda python, *args: self.pip_calls.append(args))
        monkeypatch.setattr(install, "verify", lambda python: "stack imports")
        monkeypatch.setattr(install, "probe_mmcv", self.probe)
        monkeypatch.setattr(install, "ensure_mmcv", self.ensure)

    def probe(self, python: str) -> dict | None:
        if self.installed is None:
            return None
        return {"mmcv": "2.1.0", "variant": self.installed, "describe": self.installed}

    def ensure(self, python, pins, build_requires, torch_facts, variant, env) -> dict:
        self.ensured.append(variant)
        self.installed = variant
        return {"variant": variant, "built": False}

    def write_stamp(self, variant: str) -> None:
        self.stamp.write_text(json.dumps({"inputs": install.stamp_value(),
                                          "mmcv_variant": variant}))

    def stamped_variant(self) -> str:
        return json.loads(self.stamp.read_text())["mmcv_variant"]


def test_cpu_ops_stamp_on_a_gpu_node_with_nvcc_is_replaced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The venv was set up on a login node (CPU ops); this node has a GPU and nvcc."""
    machine = FakeMachine(monkeypatch, tmp_path, GPU_TORCH, "13.0", installed="cpu")
    machine.write_stamp("cpu")
    install.install()
    assert machine.ensured == ["cuda13.0-sm90"]
    assert machine.stamped_variant() == "cuda13.0-sm90"
    out = capsys.readouterr().out
    assert "mmcv ops cpu do not fit this machine (built without CUDA ops)" in out
    # the next set-up on this node is a no-op
    machine.pip_calls.clear()
    install.install()
    assert machine.ensured == ["cuda13.0-sm90"] and machine.pip_calls == []
    assert "up to date: stack imports; mmcv ops cuda13.0-sm90" in capsys.readouterr().out


@pytest.mark.slow
def test_gpu_node_without_nvcc_gets_cpu_ops_and_the_families_they_block(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    machine = FakeMachine(monkeypatch, tmp_path, GPU_TORCH, None, installed=None)
    install.install()  # the real zoo listing: mmseg's configs, read by platform.mmcv_ops
    assert machine.ensured == ["cpu"] and machine.stamped_variant() == "cpu"
    out = capsys.readouterr().out
    assert "A GPU is visible, but mmcv was built with CPU ops only" in out
    listed = [line.split(":")[0].strip() for line in out.splitlines() if line.startswith("  ")]
    assert listed == ["psanet", "mask2former", "maskformer"]
    assert "psanet: model.decode_head.type=PSAHead (mmcv.ops.PSAMask)" in out
    assert "install the CUDA 13.0 toolkit" in out


def test_gpu_node_without_nvcc_takes_a_cached_cuda_wheel(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGLAB_CACHE", str(tmp_path / "cache"))
    env = {"PATH": str(tmp_path)}
    assert install.pick_variant(GPU_TORCH, "2.1.0", env)[0] == "cpu"
    built_elsewhere = install.wheel_cache_dir("2.1.0", GPU_TORCH, "cuda13.0-sm90")
    built_elsewhere.mkdir(parents=True)
    (built_elsewhere / "mmcv-2.1.0-cp311-cp311-linux_x86_64.whl").write_bytes(b"")
    assert install.pick_variant(GPU_TORCH, "2.1.0", env)[0] == "cuda13.0-sm90"
    cpu_only = {**env, "SEGLAB_MMCV_CPU_ONLY": "1"}
    assert install.pick_variant(GPU_TORCH, "2.1.0", cpu_only)[0] == "cpu"


SETUP_ENV = REPO_ROOT / "scripts" / "setup_env.sh"
SUPPORTED = re.search(r'SUPPORTED="([^"]+)"', SETUP_ENV.read_text()).group(1).split()


def test_setup_env_and_pyproject_accept_the_same_pythons() -> None:
    assert SUPPORTED == ["3.10", "3.11", "3.12", "3.13"]
    for version in SUPPORTED:
        major, minor = map(int, version.split("."))
        install.check_python(python=(major, minor))
        pins, _ = install.read_pins(python=(major, minor))
        assert pins["scipy"] == ("1.15.3" if minor == 10 else "1.16.3")  # no cp310 1.16 wheels
    for outside in ((3, 9), (3, 14)):
        with pytest.raises(install.InstallError, match=r"needs Python >=3\.10,<3\.14"):
            install.check_python(python=outside)


def test_pin_markers_other_than_python_version_are_refused(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\ndependencies = ["numpy==2.2.6; sys_platform == \'linux\'"]\n'
        '[tool.seglab.mmcv-build]\nrequires = []\n')
    with pytest.raises(install.InstallError, match="python_version <op>"):
        install.read_pins(pyproject)


def fake_python(bin_dir: Path, name: str, version: str | None) -> None:
    """``bin_dir/name``: prints ``version`` for the version probe, and makes a .venv whose
    python reports who created it; None: a pyenv shim of an inactive version (exit 127)."""
    script = bin_dir / name
    if version is None:
        script.write_text(f"#!/bin/sh\necho 'pyenv: {name}: command not found' >&2\nexit 127\n")
    else:
        venv_python = (f'#!/bin/sh\n[ "$1" = -c ] && echo {version} && exit 0\n'
                       f'echo "venv of {name} ({version}) runs: $*"\n')
        script.write_text(
            f'#!/bin/sh\nif [ "$1" = -c ]; then echo {version}; exit 0; fi\n'
            'mkdir -p .venv/bin\n'
            f"cat > .venv/bin/python <<'EOF'\n{venv_python}EOF\n"
            'chmod +x .venv/bin/python\n'
            f'echo "{name} made .venv with: $*"\n')
    script.chmod(0o755)


def run_setup_env(tmp_path: Path, pythons: dict[str, str | None],
                  python: str | None = None) -> subprocess.CompletedProcess:
    """scripts/setup_env.sh in a scratch checkout, with only the fake pythons on PATH."""
    repo, bin_dir = tmp_path / "repo", tmp_path / "bin"
    (repo / "scripts").mkdir(parents=True, exist_ok=True)
    bin_dir.mkdir(exist_ok=True)
    shutil.copy(SETUP_ENV, repo / "scripts" / "setup_env.sh")
    for tool in ("dirname", "sed", "mkdir", "cat", "chmod"):
        target = bin_dir / tool
        if not target.exists():
            target.symlink_to(shutil.which(tool))
    for name, version in pythons.items():
        fake_python(bin_dir, name, version)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    if python is not None:
        env["PYTHON"] = python
    return subprocess.run([shutil.which("bash"), str(repo / "scripts" / "setup_env.sh"),
                           "--extras", "dev"], env=env, capture_output=True, text=True,
                          timeout=60)


def test_setup_env_takes_the_first_python_that_runs(tmp_path: Path) -> None:
    # python3.11 is a shim that exits 127, as pyenv's are for versions not activated
    out = run_setup_env(tmp_path, {"python3.11": None, "python3.13": "3.13",
                                   "python3.12": "3.12", "python3.10": "3.10"})
    assert out.returncode == 0, out.stderr
    assert "python3.12 made .venv with: -m venv --clear .venv" in out.stdout
    assert "venv of python3.12 (3.12) runs: -m seglab.platform.install --extras dev" in out.stdout
    again = run_setup_env(tmp_path, {})  # the existing venv is reused
    assert "made .venv" not in again.stdout and "venv of python3.12" in again.stdout


def test_setup_env_honours_python_and_recreates_a_venv_of_another_version(
        tmp_path: Path) -> None:
    pythons = {"python3.11": "3.11", "python3.10": "3.10"}
    assert run_setup_env(tmp_path, pythons).returncode == 0
    out = run_setup_env(tmp_path, pythons, python="python3.10")
    assert out.returncode == 0, out.stderr
    assert ".venv is Python 3.11; recreating it with python3.10" in out.stdout
    assert "venv of python3.10 (3.10) runs: -m seglab.platform.install" in out.stdout


def test_setup_env_names_what_is_missing(tmp_path: Path) -> None:
    none = run_setup_env(tmp_path, {"python3.11": None, "python3.9": "3.9"})
    assert none.returncode == 1
    assert "none of python3.11, python3.12, python3.13, python3.10 runs here" in none.stderr
    old = run_setup_env(tmp_path, {}, python="python3.9")
    assert old.returncode == 1 and "PYTHON=python3.9 is Python 3.9" in old.stderr
    broken = run_setup_env(tmp_path, {}, python="python3.11")
    assert broken.returncode == 1 and "PYTHON=python3.11 does not run here" in broken.stderr


def test_mmcv_ops_compile_without_debug_info(tmp_path: Path, monkeypatch) -> None:
    """Python's CFLAGS carry -g; the build appends -g0 after whatever the user set, so GCC
    writes no debug sections (2.5x faster on mmcv's largest file, same code)."""
    import tarfile

    src = tmp_path / "mmcv-2.1.0"
    src.mkdir()
    (src / "setup.py").write_text(MMCV_SETUP_EXCERPT)
    sdist = tmp_path / "mmcv-2.1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(src, arcname=src.name)

    def fake_pip(python: str, *args: str) -> None:  # `pip download` of the sdist
        shutil.copy(sdist, Path(args[args.index("-d") + 1]) / sdist.name)

    seen = {}

    def fake_wheel_build(command, check, env):
        seen.update(env)
        out = Path(command[command.index("-w") + 1])
        out.mkdir(parents=True)
        (out / "mmcv-2.1.0-cp311-cp311-linux_x86_64.whl").write_bytes(b"wheel")

    monkeypatch.setattr(install, "check_toolchain", lambda env: None)
    monkeypatch.setattr(install, "pip", fake_pip)
    monkeypatch.setattr(install.subprocess, "run", fake_wheel_build)
    wheel = install.build_mmcv_wheel(sys.executable, "2.1.0", {"CFLAGS": "-march=native"},
                                     tmp_path / "cache")
    assert wheel.read_bytes() == b"wheel"
    assert seen["CFLAGS"] == "-march=native -g0" and seen["MMCV_WITH_OPS"] == "1"
    assert install.no_debug_info("") == "-g0"
