"""Set up seglab's Python environment: pinned torch, mmcv with compiled ops, seglab.

This module runs before torch or mmcv exist, so it uses only the standard
library (and, on Python 3.10, pip's vendored TOML parser): ``python -m seglab.platform.install``
(``scripts/setup_env.sh`` calls it with the project's virtualenv Python).

mmsegmentation 1.2.2 imports ``mmcv.ops`` at import time, so it needs mmcv 2.1.0
built *with* its C++ ops. PyPI has only mmcv's sdist, whose ``setup.py``
hard-codes ``-std=c++17``; torch >= 2.10 headers need C++20. The one adjustment
made here is to drop mmcv's hard-coded standard so that torch's own
``BuildExtension`` adds the standard torch was built with. The built wheel is
cached outside the repository, keyed by mmcv, torch, Python, platform and op
variant (CPU, or CUDA version + arch list), so a second set-up only installs it.
The variant is also recorded in the install stamp and compared with what this
machine needs (a GPU and nvcc: CUDA ops for its arches), so a CPU-ops mmcv carried
onto a GPU node is replaced instead of failing at the first step of a run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import operator
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from pathlib import Path

from seglab import REPO_ROOT
from seglab.errors import UserError
from seglab.platform.mmcv_ops import CPU, OpsVariant

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as pip vendors it (tomli)
    from pip._vendor import tomli as tomllib

PYPROJECT = REPO_ROOT / "pyproject.toml"
# pyproject.toml's optional-dependencies that `make env` (and so `make test`, CI) installs:
# pytest/ruff, the Hugging Face weight conversion, and mmdet/mmpretrain for the whole zoo.
DEFAULT_EXTRAS = "dev,hf,zoo"

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
    print(f"[seglab.platform.install] {msg}", flush=True)


VERSION_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
               "==": operator.eq, "!=": operator.ne}
PIN = re.compile(r"([A-Za-z0-9_.-]+)==([^;\s]+)"
                 r"(?:\s*;\s*python_version\s*(<=|>=|==|!=|<|>)\s*[\"'](\d+)\.(\d+)[\"'])?")


def _python_is(op: str, major: str, minor: str, python: tuple[int, int]) -> bool:
    return VERSION_OPS[op](python, (int(major), int(minor)))


def read_pins(
    pyproject: Path = PYPROJECT, python: tuple[int, int] = sys.version_info[:2]
) -> tuple[dict[str, str], list[str]]:
    """Return ``{name: version}`` of ``project.dependencies`` and the mmcv build requirements.

    Args:
        pyproject: the ``pyproject.toml`` to read.
        python: ``(major, minor)`` that ``python_version`` markers are evaluated for; a pin
            whose marker is false there is left out.
    """
    data = tomllib.loads(pyproject.read_text())
    pins: dict[str, str] = {}
    for spec in data["project"]["dependencies"]:
        match = PIN.fullmatch(spec.strip())
        if not match:
            raise InstallError(f"{pyproject}: dependency {spec!r} is not pinned with '==' "
                               "(a marker may only be 'python_version <op> \"X.Y\"')")
        name, version, op, major, minor = match.groups()
        if op is None or _python_is(op, major, minor, python):
            pins[name.lower()] = version
    return pins, list(data["tool"]["seglab"]["mmcv-build"]["requires"])


def check_python(
    pyproject: Path = PYPROJECT, python: tuple[int, int] = sys.version_info[:2]
) -> None:
    """Refuse an interpreter outside ``project.requires-python`` (e.g. ``>=3.10,<3.14``).

    Args:
        pyproject: the ``pyproject.toml`` to read.
        python: ``(major, minor)`` of the interpreter to check.
    """
    spec = tomllib.loads(pyproject.read_text())["project"]["requires-python"]
    clauses = [re.fullmatch(r"\s*(<=|>=|==|!=|<|>)\s*(\d+)\.(\d+)\s*", c) for c in spec.split(",")]
    if not all(clauses):
        raise InstallError(f"{pyproject}: requires-python {spec!r}: seglab.platform.install reads "
                           "only clauses like '>=3.10' and '<3.14'")
    if not all(_python_is(*c.groups(), python) for c in clauses):
        raise InstallError(
            f"seglab needs Python {spec} (pyproject.toml requires-python); this is Python "
            f"{python[0]}.{python[1]} ({sys.executable}). Fix: make env PYTHON=python3.11 (or "
            "python3.10, 3.12, 3.13), which recreates .venv with that interpreter.")


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


def find_nvcc(env: dict[str, str]) -> Path | None:
    """The nvcc torch's ``BuildExtension`` will use: ``$CUDA_HOME/bin/nvcc``, else PATH's.

    Args:
        env: the build environment (``CUDA_HOME``/``CUDA_PATH``, ``PATH``).
    """
    home = env.get("CUDA_HOME") or env.get("CUDA_PATH")
    if home:  # torch prefers CUDA_HOME over PATH, so a stale one must not be looked past
        nvcc = Path(home) / "bin" / "nvcc"
        return nvcc if nvcc.is_file() else None
    found = shutil.which("nvcc", path=env.get("PATH"))
    return Path(found) if found else None


def check_nvcc(env: dict[str, str], torch_cuda: str) -> str:
    """Refuse an nvcc whose CUDA major differs from torch's; return nvcc's version.

    torch refuses such a build itself, but only minutes into mmcv's ``setup.py``.

    Args:
        env: the build environment nvcc is looked up in (see :func:`find_nvcc`).
        torch_cuda: ``torch.version.cuda``, e.g. ``"13.0"``.
    """
    nvcc = find_nvcc(env)
    if nvcc is None:
        raise InstallError("nvcc (the CUDA compiler) not found: put it on PATH or set CUDA_HOME")
    out = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True, env=env)
    match = re.search(r"release (\d+)\.(\d+)", out.stdout)
    if out.returncode != 0 or not match:
        raise InstallError(f"{nvcc} --version failed or printed no 'release X.Y':\n"
                           f"{(out.stdout + out.stderr).strip()}")
    version = f"{match.group(1)}.{match.group(2)}"
    if match.group(1) != torch_cuda.split(".")[0]:
        major = torch_cuda.split(".")[0]
        raise InstallError(
            f"nvcc at {nvcc} is CUDA {version}, but torch was built with CUDA {torch_cuda}: "
            "mmcv's CUDA ops must be compiled with the CUDA major version torch uses. Fix: put "
            f"a CUDA {major}.x toolkit's nvcc first (e.g. export CUDA_HOME=/usr/local/cuda-"
            f"{torch_cuda} PATH=/usr/local/cuda-{torch_cuda}/bin:$PATH, or 'module load "
            f"cuda/{torch_cuda}'), or build CPU-only ops with SEGLAB_MMCV_CPU_ONLY=1.")
    return version


def _cuda_variant(torch_facts: dict, env: dict[str, str]) -> tuple[str, str]:
    """(arch list, variant) of a CUDA build for ``TORCH_CUDA_ARCH_LIST`` or the visible GPUs."""
    arch = env.get("TORCH_CUDA_ARCH_LIST") or ";".join(torch_facts["capabilities"])
    if not arch:
        raise InstallError(
            "FORCE_CUDA=1 but no GPU is visible: set TORCH_CUDA_ARCH_LIST, e.g. '8.0;9.0'."
        )
    try:
        return arch, str(OpsVariant.from_arch_list(torch_facts["cuda_version"], arch))
    except ValueError as err:
        raise InstallError(str(err)) from err


def mmcv_variant(
    torch_facts: dict, env: dict[str, str] | None = None
) -> tuple[str, dict[str, str]]:
    """Decide CPU-only or CUDA ops; return a cache-key fragment and the build env.

    CUDA ops are built when a GPU is visible and ``nvcc`` is found (or when
    ``FORCE_CUDA=1``). ``TORCH_CUDA_ARCH_LIST`` (e.g. ``"8.0;9.0"``) chooses the
    GPU architectures; without it, those of the visible GPUs are used. A GPU without
    nvcc, or ``SEGLAB_MMCV_CPU_ONLY=1``, gives CPU ops (``FORCE_CUDA=1`` then is an error).

    Args:
        torch_facts: what :func:`probe_torch` reports.
        env: the environment to build in (default: ``os.environ``).
    """
    env = dict(os.environ if env is None else env)
    forced = env.get("FORCE_CUDA") == "1"
    if not (forced or torch_facts["cuda_available"]):
        env["FORCE_CUDA"] = "0"
        return CPU, env
    if torch_facts["cuda_version"] is None:
        raise InstallError(f"FORCE_CUDA=1, but torch {torch_facts['torch']} is a CPU-only build: "
                           "unset FORCE_CUDA, or install a CUDA build of torch.")
    if find_nvcc(env) is None or (env.get("SEGLAB_MMCV_CPU_ONLY") == "1" and not forced):
        if forced:
            raise InstallError(
                "FORCE_CUDA=1 but nvcc (the CUDA compiler) was not found: install the CUDA "
                f"toolkit {torch_facts['cuda_version']} (torch's) and put nvcc on PATH or set "
                "CUDA_HOME; or unset FORCE_CUDA to build CPU-only ops.")
        env["CUDA_VISIBLE_DEVICES"] = ""  # setup.py builds CUDA ops whenever torch sees a GPU
        env["FORCE_CUDA"] = "0"
        return CPU, env
    arch, variant = _cuda_variant(torch_facts, env)
    env["TORCH_CUDA_ARCH_LIST"] = arch
    env["FORCE_CUDA"] = "1"
    return variant, env


def pick_variant(
    torch_facts: dict, mmcv: str, env: dict[str, str] | None = None
) -> tuple[str, dict[str, str]]:
    """:func:`mmcv_variant`, except that a GPU node without nvcc takes a cached CUDA wheel
    for its GPUs (built on another node into a shared ``$SEGLAB_CACHE``) over CPU ops.

    Args:
        torch_facts: what :func:`probe_torch` reports.
        mmcv: the pinned mmcv version.
        env: the environment to build in (default: ``os.environ``).
    """
    variant, build_env = mmcv_variant(torch_facts, env)
    if variant == CPU and torch_facts["cuda_available"] and (
            build_env.get("SEGLAB_MMCV_CPU_ONLY") != "1"):
        _, cuda = _cuda_variant(torch_facts, build_env)
        if cached_wheel(wheel_cache_dir(mmcv, torch_facts, cuda)):
            return cuda, build_env
    return variant, build_env


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


def no_debug_info(cflags: str) -> str:
    """``cflags`` with ``-g0`` last, so the ops compile without debug information.

    Python's own CFLAGS (``sysconfig``: ``-DNDEBUG -g -fwrapv -O3``) reach every extension
    compile, and distutils appends the environment's ``CFLAGS`` after them, so a trailing
    ``-g0`` cancels ``-g``. Debug information changes neither the generated code nor the
    optimisation level; it only costs compile time and wheel size.

    Args:
        cflags: the build environment's ``CFLAGS`` (may be empty).
    """
    return f"{cflags} -g0".strip()


def build_mmcv_wheel(python: str, mmcv: str, env: dict[str, str], dest: Path) -> Path:
    """Download mmcv's sdist, patch it, build a wheel with ops into ``dest``."""
    check_toolchain(env)
    with tempfile.TemporaryDirectory(prefix="seglab-mmcv-") as tmp:
        tmp_path = Path(tmp)
        pip(python, "download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
            f"mmcv=={mmcv}", "-d", str(tmp_path))
        sdist = tmp_path / f"mmcv-{mmcv}.tar.gz"
        # filter="data" (refuse links and paths out of tmp) exists from 3.10.12 and 3.11.4
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp_path, **safe)
        src = tmp_path / f"mmcv-{mmcv}"
        patch_mmcv_setup(src / "setup.py")
        env = dict(env, MMCV_WITH_OPS="1", CFLAGS=no_debug_info(env.get("CFLAGS", "")))
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


def ensure_mmcv(python: str, pins: dict[str, str], build_requires: list[str],
                torch_facts: dict, variant: str, env: dict[str, str]) -> dict:
    """Install mmcv with ``variant`` ops from the wheel cache, building the wheel on a miss.

    Args:
        python: the venv's interpreter.
        pins: ``project.dependencies`` as :func:`read_pins` returns them.
        build_requires: the mmcv build tools to install before a build.
        torch_facts: what :func:`probe_torch` reports.
        variant: the ops variant, as :func:`pick_variant` chose it.
        env: the build environment :func:`pick_variant` returned.
    """
    cache_dir = wheel_cache_dir(pins["mmcv"], torch_facts, variant)
    wheel = cached_wheel(cache_dir)
    built = wheel is None
    if built:
        if variant != CPU:  # before anything is installed or compiled
            log(f"nvcc is CUDA {check_nvcc(env, torch_facts['cuda_version'])}, "
                f"torch's is {torch_facts['cuda_version']}")
        log(f"no cached mmcv wheel in {cache_dir}; building it")
        pip(python, "install", "-q", *build_requires)
        wheel = build_mmcv_wheel(python, pins["mmcv"], env, cache_dir)
    else:
        log(f"using cached mmcv wheel {wheel}")
    pip(python, "install", "-q", "--no-deps", "--force-reinstall", str(wheel))
    return {"wheel": str(wheel), "built": built, "variant": variant, **torch_facts}


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


def probe_mmcv(python: str) -> dict | None:
    """``{"mmcv", "variant", "describe"}`` of the mmcv that ``python`` imports (see
    ``seglab.platform.mmcv_ops``); None when mmcv or its compiled ops do not load."""
    # cwd: seglab is importable from the checkout before its editable install
    out = subprocess.run([python, "-m", "seglab.platform.mmcv_ops"], cwd=REPO_ROOT,
                         capture_output=True, text=True)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def variant_shortfall(installed: str | None, needed: str) -> str | None:
    """Why an mmcv of ops variant ``installed`` does not fit a machine that needs ``needed``.

    Args:
        installed: the installed (or stamped) variant; None when not known.
        needed: what :func:`pick_variant` chose for this machine.
    """
    if installed is None:
        return "variant not recorded"
    try:
        return OpsVariant.parse(installed).shortfall(OpsVariant.parse(needed))
    except ValueError as err:
        return str(err)


def mmcv_has_ops(python: str, mmcv_version: str, needed: str) -> bool:
    """Whether ``python`` imports mmcv ``mmcv_version`` with ops that fit ``needed``.

    A CPU-ops mmcv does not fit a machine with a GPU and nvcc (``needed`` is
    ``cuda<ver>-sm<archs>``); a CUDA one fits a CPU-only machine too.

    Args:
        python: the venv's interpreter.
        mmcv_version: the pinned version.
        needed: the variant :func:`pick_variant` chose for this machine.
    """
    info = probe_mmcv(python)
    if info is None or info["mmcv"] != mmcv_version:
        return False
    why = variant_shortfall(info["variant"], needed)
    if why:
        log(f"the installed {info['describe']} does not fit this machine ({why}); "
            f"installing the {needed} build")
    return why is None


def zoo_families_needing_cuda(python: str) -> list[str]:
    """One line per zoo family that needs mmcv CUDA kernels (``seglab.platform.mmcv_ops --zoo``).

    Args:
        python: the venv's interpreter (with mmseg installed).
    """
    out = subprocess.run([python, "-m", "seglab.platform.mmcv_ops", "--zoo"], cwd=REPO_ROOT,
                         capture_output=True, text=True)
    if out.returncode != 0:
        return [f"(not listed: {(out.stderr.strip().splitlines() or ['?'])[-1]})"]
    return out.stdout.strip().splitlines()


def cpu_ops_on_gpu_message(torch_facts: dict, families: list[str]) -> str:
    """What to say when a GPU node ends up with CPU-only mmcv ops.

    Args:
        torch_facts: what :func:`probe_torch` reports.
        families: :func:`zoo_families_needing_cuda`'s lines.
    """
    lines = [
        "A GPU is visible, but mmcv was built with CPU ops only (no nvcc found, or "
        "SEGLAB_MMCV_CPU_ONLY=1). Configs using an mmcv op without a PyTorch path cannot "
        "train on the GPU (`seglab train` refuses them before building); these zoo families:",
        *(f"  {line}" for line in families),
        "Every other family and config runs on the GPU. For CUDA ops: install the CUDA "
        f"{torch_facts['cuda_version']} toolkit (torch's), put nvcc on PATH or set CUDA_HOME, "
        "unset SEGLAB_MMCV_CPU_ONLY, and run `make env` again (it then builds mmcv for this GPU).",
    ]
    return "\n".join(lines)


def warn_cpu_ops_on_gpu(python: str, torch_facts: dict, variant: str) -> None:
    """Log :func:`cpu_ops_on_gpu_message` when a GPU is visible and ``variant`` is CPU-only.

    Args:
        python: the venv's interpreter.
        torch_facts: what :func:`probe_torch` reports.
        variant: the installed mmcv's ops variant.
    """
    if variant == CPU and torch_facts["cuda_available"]:
        log(cpu_ops_on_gpu_message(torch_facts, zoo_families_needing_cuda(python)))


def stamp_path() -> Path:
    """Marks a venv whose install matches the current pyproject.toml."""
    return Path(sys.prefix) / ".seglab-install-stamp"


def stamp_value() -> str:
    return hashlib.sha256(PYPROJECT.read_bytes() + sys.version.encode()).hexdigest()


def read_stamp() -> dict:
    """``{"inputs": stamp_value(), "mmcv_variant": ...}`` of the last install; {} if none."""
    try:
        stamp = json.loads(stamp_path().read_text())
    except (OSError, ValueError):  # none yet, or a stamp written before variants were recorded
        return {}
    return stamp if isinstance(stamp, dict) else {}


def up_to_date(python: str, mmcv: str) -> bool:
    """Whether the stamp matches pyproject.toml and this interpreter, its mmcv ops variant
    fits this machine, and the stack imports; logs why not.

    Args:
        python: the venv's interpreter.
        mmcv: the pinned mmcv version.
    """
    stamp = read_stamp()
    if stamp.get("inputs") != stamp_value():
        return False
    try:
        facts = probe_torch(python)
        needed, _ = pick_variant(facts, mmcv)
        why = variant_shortfall(stamp.get("mmcv_variant"), needed)
        if why:
            log(f"mmcv ops {stamp.get('mmcv_variant')} do not fit this machine ({why}), "
                f"which needs {needed}: reinstalling mmcv")
            return False
        log(f"up to date: {verify(python)}; mmcv ops {stamp['mmcv_variant']}")
    except (InstallError, subprocess.CalledProcessError) as err:
        log(f"stamp present but the stack is broken, reinstalling: {err}")
        return False
    warn_cpu_ops_on_gpu(python, facts, stamp["mmcv_variant"])
    return True


def install(python: str = sys.executable, extras: str = DEFAULT_EXTRAS,
            force: bool = False) -> None:
    """Install the pinned stack into ``python``'s venv; a no-op when the stamp says it is
    there with an mmcv ops variant that fits this machine.

    Args:
        python: the venv's interpreter.
        extras: pip extras of seglab to install.
        force: reinstall mmcv and seglab even if up to date.
    """
    start = time.monotonic()
    check_python()
    pins, build_requires = read_pins()
    if not force and up_to_date(python, pins["mmcv"]):
        return
    log(f"installing torch {pins['torch']}, torchvision {pins['torchvision']}")
    # opencv goes in before mmcv is built: mmcv's setup.py then records no second
    # (headless) opencv requirement that would shadow this one's cv2.
    first = ("torch", "torchvision", "numpy", "setuptools", "opencv-python")
    pip(python, "install", "-q", *(f"{name}=={pins[name]}" for name in first))
    facts = probe_torch(python)
    variant, env = pick_variant(facts, pins["mmcv"])
    if not force and mmcv_has_ops(python, pins["mmcv"], variant):
        log(f"mmcv {pins['mmcv']} with ops already installed")
    else:
        info = ensure_mmcv(python, pins, build_requires, facts, variant, env)
        log(f"mmcv ops variant {info['variant']} ({'built' if info['built'] else 'cached'})")
    target = f"{REPO_ROOT}[{extras}]" if extras else str(REPO_ROOT)
    pip(python, "install", "-q", "-e", target)
    log(verify(python))
    installed = probe_mmcv(python)
    if installed is None:
        raise InstallError(f"mmcv's ops do not load after the install: run {python} -m "
                           "seglab.platform.mmcv_ops to see why")
    stamp_path().write_text(json.dumps({"inputs": stamp_value(),
                                        "mmcv_variant": installed["variant"]}))
    warn_cpu_ops_on_gpu(python, facts, installed["variant"])
    log(f"environment ready in {time.monotonic() - start:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seglab.platform.install", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extras", default=DEFAULT_EXTRAS,
                        help=f"pip extras of seglab to install (default: {DEFAULT_EXTRAS})")
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
