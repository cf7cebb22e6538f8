"""Set up seglab's Python environment: pinned torch, mmcv with compiled ops, seglab.

This module runs before torch or mmcv exist, so it uses only the standard
library: ``python -m seglab.install`` (``scripts/setup_env.sh`` calls it with
the project's virtualenv Python).

mmsegmentation 1.2.2 imports ``mmcv.ops`` at import time, so it needs mmcv 2.1.0
built *with* its C++ ops. PyPI has only mmcv's sdist, whose ``setup.py``
hard-codes ``-std=c++17``; torch >= 2.10 headers need C++20. The one adjustment
made here is to drop mmcv's hard-coded standard so that torch's own
``BuildExtension`` adds the standard torch was built with. The built wheel is
cached outside the repository, keyed by mmcv, torch, Python, platform and op
variant (CPU, or CUDA version + arch list), so a second set-up only installs it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import tomllib
from pathlib import Path

from seglab import REPO_ROOT
from seglab.errors import UserError

PYPROJECT = REPO_ROOT / "pyproject.toml"

# mmcv 2.1.0's setup.py pins these C++ standards for torch > 1.12; each is
# removed so that torch's BuildExtension appends the standard torch requires.
MMCV_STD_FLAGS = (
    ("extra_compile_args['cxx'] = ['-std=c++17']", "extra_compile_args['cxx'] = []"),
    ("extra_compile_args['cxx'] = ['-Wall', '-std=c++17']",
     "extra_compile_args['cxx'] = ['-Wall']"),
    ("extra_compile_args['nvcc'] += ['-std=c++17']", "extra_compile_args['nvcc'] += []"),
)


class InstallError(UserError):
    """A set-up step failed for a reason the user can fix; the message says how."""


def log(msg: str) -> None:
    print(f"[seglab.install] {msg}", flush=True)


def read_pins(pyproject: Path = PYPROJECT) -> tuple[dict[str, str], list[str]]:
    """Return ``{name: version}`` of ``project.dependencies`` and the mmcv build requirements."""
    data = tomllib.loads(pyproject.read_text())
    pins: dict[str, str] = {}
    for spec in data["project"]["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^;\s]+)", spec.strip())
        if not match:
            raise InstallError(f"{pyproject}: dependency {spec!r} is not pinned with '=='")
        pins[match.group(1).lower()] = match.group(2)
    return pins, list(data["tool"]["seglab"]["mmcv-build"]["requires"])


def cache_root() -> Path:
    """Where built wheels are kept: ``$SEGLAB_CACHE`` or ``~/.cache/seglab``."""
    return Path(os.environ.get("SEGLAB_CACHE", Path.home() / ".cache" / "seglab"))


def pip(python: str, *args: str) -> None:
    subprocess.run([python, "-m", "pip", "--disable-pip-version-check", *args], check=True)


def probe_torch(python: str) -> dict:
    """Facts about the installed torch that decide the mmcv build."""
    code = (
        "import json, torch\n"
        "cuda = torch.cuda.is_available()\n"
        "caps = sorted({'%d.%d' % torch.cuda.get_device_capability(i)"
        " for i in range(torch.cuda.device_count())}) if cuda else []\n"
        "print(json.dumps({'torch': torch.__version__.split('+')[0],"
        " 'cuda_version': torch.version.cuda, 'cuda_available': cuda, 'capabilities': caps}))"
    )
    out = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def mmcv_variant(
    torch_facts: dict, env: dict[str, str] | None = None
) -> tuple[str, dict[str, str]]:
    """Decide CPU-only or CUDA ops; return a cache-key fragment and the build env.

    CUDA ops are built when a GPU is visible and ``nvcc`` is found (or when
    ``FORCE_CUDA=1``). ``TORCH_CUDA_ARCH_LIST`` (e.g. ``"8.0;9.0"``) chooses the
    GPU architectures; without it, those of the visible GPUs are used.
    """
    env = dict(os.environ if env is None else env)
    forced = env.get("FORCE_CUDA") == "1"
    has_nvcc = shutil.which("nvcc", path=env.get("PATH")) is not None or bool(env.get("CUDA_HOME"))
    if not (forced or torch_facts["cuda_available"]):
        env["FORCE_CUDA"] = "0"
        return "cpu", env
    if not has_nvcc:
        if env.get("SEGLAB_MMCV_CPU_ONLY") == "1":
            env["CUDA_VISIBLE_DEVICES"] = ""  # setup.py checks torch.cuda.is_available()
            env["FORCE_CUDA"] = "0"
            return "cpu", env
        raise InstallError(
            "A GPU is visible but nvcc (the CUDA compiler) was not found, so mmcv's CUDA ops "
            f"cannot be built. Install the CUDA toolkit {torch_facts['cuda_version']} (the version "
            "torch was built with) and put nvcc on PATH or set CUDA_HOME; or set "
            "SEGLAB_MMCV_CPU_ONLY=1 to build CPU-only ops."
        )
    arch = env.get("TORCH_CUDA_ARCH_LIST") or ";".join(torch_facts["capabilities"])
    if not arch:
        raise InstallError(
            "FORCE_CUDA=1 but no GPU is visible: set TORCH_CUDA_ARCH_LIST, e.g. '8.0;9.0'."
        )
    env["TORCH_CUDA_ARCH_LIST"] = arch
    env["FORCE_CUDA"] = "1"
    return f"cuda{torch_facts['cuda_version']}-sm{arch.replace(';', '_').replace('.', '')}", env


def wheel_cache_dir(mmcv: str, torch_facts: dict, variant: str) -> Path:
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    platform_tag = sysconfig.get_platform().replace("-", "_")
    key = f"mmcv-{mmcv}_torch-{torch_facts['torch']}_{tag}_{platform_tag}_{variant}"
    return cache_root() / "wheels" / key


def check_toolchain(env: dict[str, str]) -> None:
    """Fail early, naming the missing piece, instead of deep inside setup.py."""
    cxx = env.get("CXX", "g++")
    if shutil.which(cxx, path=env.get("PATH")) is None:
        raise InstallError(
            f"No C++ compiler ({cxx!r}) found: mmcv's ops must be compiled. "
            "Install one (Debian/Ubuntu: 'apt-get install g++') or set CXX to its path."
        )
    python_h = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not python_h.exists():
        raise InstallError(
            f"Python headers not found ({python_h}): install the dev package for Python "
            f"{sys.version_info.major}.{sys.version_info.minor} "
            "(e.g. 'apt-get install python3-dev')."
        )
    probe = subprocess.run(
        [cxx, "-std=c++20", "-x", "c++", "-", "-fsyntax-only"],
        input="#include <concepts>\nint main() { return 0; }\n",
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        raise InstallError(
            f"{cxx} cannot compile C++20 (torch's headers need it): use GCC >= 10 or "
            f"clang >= 11.\n{probe.stderr.strip()}"
        )


def patch_mmcv_setup(setup_py: Path) -> None:
    """Drop mmcv's hard-coded ``-std=c++17`` so torch chooses the standard."""
    text = setup_py.read_text()
    for old, new in MMCV_STD_FLAGS:
        if old not in text:
            raise InstallError(
                f"{setup_py}: expected {old!r}; this is not the mmcv sdist seglab was tested "
                "with. Check the mmcv pin in pyproject.toml."
            )
        text = text.replace(old, new)
    setup_py.write_text(text)


def build_mmcv_wheel(python: str, mmcv: str, env: dict[str, str], dest: Path) -> Path:
    """Download mmcv's sdist, patch it, build a wheel with ops into ``dest``."""
    check_toolchain(env)
    with tempfile.TemporaryDirectory(prefix="seglab-mmcv-") as tmp:
        tmp_path = Path(tmp)
        pip(python, "download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
            f"mmcv=={mmcv}", "-d", str(tmp_path))
        sdist = tmp_path / f"mmcv-{mmcv}.tar.gz"
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp_path, filter="data")
        src = tmp_path / f"mmcv-{mmcv}"
        patch_mmcv_setup(src / "setup.py")
        env = dict(env, MMCV_WITH_OPS="1")
        env.setdefault("MAX_JOBS", str(os.cpu_count() or 1))
        log(f"compiling mmcv {mmcv} ops with {env['MAX_JOBS']} jobs (about 20 min on 2 cores)")
        out = tmp_path / "dist"
        subprocess.run(
            [python, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", str(out),
             str(src)],
            check=True,
            env=env,
        )
        (wheel,) = out.glob("mmcv-*.whl")
        dest.mkdir(parents=True, exist_ok=True)
        # Copy then rename, so an interrupted build never leaves a partial wheel in the cache.
        partial = dest / (wheel.name + ".partial")
        shutil.copy2(wheel, partial)
        partial.replace(dest / wheel.name)
        return dest / wheel.name


def cached_wheel(cache_dir: Path) -> Path | None:
    wheels = sorted(cache_dir.glob("mmcv-*.whl"))
    return wheels[0] if wheels else None


def ensure_mmcv(python: str, pins: dict[str, str], build_requires: list[str]) -> dict:
    """Install mmcv with ops from the wheel cache, building the wheel on a miss."""
    facts = probe_torch(python)
    variant, env = mmcv_variant(facts)
    cache_dir = wheel_cache_dir(pins["mmcv"], facts, variant)
    wheel = cached_wheel(cache_dir)
    built = wheel is None
    if built:
        log(f"no cached mmcv wheel in {cache_dir}; building it")
        pip(python, "install", "-q", *build_requires)
        wheel = build_mmcv_wheel(python, pins["mmcv"], env, cache_dir)
    else:
        log(f"using cached mmcv wheel {wheel}")
    pip(python, "install", "-q", "--no-deps", "--force-reinstall", str(wheel))
    return {"wheel": str(wheel), "built": built, "variant": variant, **facts}


def verify(python: str) -> str:
    """Import the stack as mmseg does; return a one-line version summary."""
    code = (
        "import torch, mmcv, mmengine, mmseg\n"
        "from mmcv.ops import nms  # needs the compiled mmcv._ext\n"
        "print(f'torch {torch.__version__}, mmcv {mmcv.__version__}, '"
        " f'mmengine {mmengine.__version__}, mmseg {mmseg.__version__}')"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        raise InstallError(f"the installed stack does not import:\n{out.stderr.strip()}")
    return out.stdout.strip().splitlines()[-1]


def mmcv_has_ops(python: str, mmcv_version: str) -> bool:
    code = (
        "import importlib.metadata as m, mmcv._ext\n"
        f"assert m.version('mmcv') == {mmcv_version!r}"
    )
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def stamp_path() -> Path:
    """Marks a venv whose install matches the current pyproject.toml."""
    return Path(sys.prefix) / ".seglab-install-stamp"


def stamp_value() -> str:
    return hashlib.sha256(PYPROJECT.read_bytes() + sys.version.encode()).hexdigest()


def install(python: str = sys.executable, extras: str = "dev", force: bool = False) -> None:
    start = time.monotonic()
    if sys.version_info[:2] != (3, 11):
        raise InstallError(
            f"seglab is pinned and tested on Python 3.11; this is {platform_python()}. "
            "Create the venv with python3.11 (scripts/setup_env.sh does)."
        )
    stamp = stamp_path()
    if not force and stamp.exists() and stamp.read_text() == stamp_value():
        try:
            log(f"up to date: {verify(python)}")
            return
        except InstallError as err:
            log(f"stamp present but the stack is broken, reinstalling: {err}")
    pins, build_requires = read_pins()
    log(f"installing torch {pins['torch']}, torchvision {pins['torchvision']}")
    # opencv goes in before mmcv is built: mmcv's setup.py then records no second
    # (headless) opencv requirement that would shadow this one's cv2.
    first = ("torch", "torchvision", "numpy", "setuptools", "opencv-python")
    pip(python, "install", "-q", *(f"{name}=={pins[name]}" for name in first))
    if not force and mmcv_has_ops(python, pins["mmcv"]):
        log(f"mmcv {pins['mmcv']} with ops already installed")
    else:
        info = ensure_mmcv(python, pins, build_requires)
        log(f"mmcv ops variant {info['variant']} ({'built' if info['built'] else 'cached'})")
    target = f"{REPO_ROOT}[{extras}]" if extras else str(REPO_ROOT)
    pip(python, "install", "-q", "-e", target)
    log(verify(python))
    stamp.write_text(stamp_value())
    log(f"environment ready in {time.monotonic() - start:.0f} s")


def platform_python() -> str:
    return f"Python {sys.version.split()[0]} at {sys.executable}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seglab.install", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extras", default="dev", help="pip extras of seglab to install")
    parser.add_argument("--force", action="store_true", help="reinstall even if up to date")
    args = parser.parse_args(argv)
    try:
        install(extras=args.extras, force=args.force)
    except InstallError as err:
        print(f"seglab install: error: {err}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as err:
        print(f"seglab install: error: command failed ({err.returncode}): "
              f"{' '.join(map(str, err.cmd))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
