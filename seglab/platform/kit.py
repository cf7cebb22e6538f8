"""Put seglab's stack on a GPU machine that has torch but no network.

``python -m seglab.platform.kit KIT SITE``.

A lent device machine, or a cluster node behind a firewall, has its own Python and
torch and cannot reach PyPI. The kit is a folder of wheels (mmengine, mmseg and the
small packages they import) plus mmcv's sdist, which is built here against the
machine's own torch (``MAX_JOBS`` = all cores). Everything is installed with
``pip --target`` into one folder that goes on ``PYTHONPATH``; the machine's
packages are left alone. Standard library only: it runs before mmcv exists.

Fill the folder on a machine with PyPI (README, "GPU check"):
``pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl NAME==VER``
for each wheel, and ``pip download --no-deps --no-binary=:all: mmcv==2.1.0 -d .whl``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from seglab.platform.install import log, patch_mmcv_setup


def _pip(*args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                   check=True, env=env)


def build_mmcv(sdist: Path, site: Path, cuda_ops: bool) -> Path:
    """Build mmcv's wheel from ``sdist`` against this machine's torch; return the wheel.

    ``cuda_ops=False`` builds the CPU ops only (about a tenth of the compile time): seglab
    then runs FocalLoss through its PyTorch path and refuses configs whose ops need
    mmcv's CUDA kernels (``seglab.platform.mmcv_ops``).
    """
    build = Path(os.environ.get("TMPDIR", "/tmp")) / "seglab-mmcv-build"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        tar.extractall(build, filter="data")
    (src,) = [p for p in build.iterdir() if p.is_dir()]
    patch_mmcv_setup(src / "setup.py")
    env = dict(os.environ, MMCV_WITH_OPS="1", MAX_JOBS=str(os.cpu_count() or 1),
               FORCE_CUDA="1" if cuda_ops else "0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(site),
                                                        os.environ.get("PYTHONPATH")])))
    if not cuda_ops:
        env["CUDA_VISIBLE_DEVICES"] = ""  # mmcv's setup.py builds CUDA ops when it sees a GPU
    start = time.monotonic()
    log(f"building mmcv from {sdist.name} with {env['MAX_JOBS']} jobs "
        f"({'CUDA' if cuda_ops else 'CPU'} ops)")
    _pip("wheel", "--no-build-isolation", "--no-deps", "-w", str(build / "dist"), str(src),
         env=env)
    (wheel,) = (build / "dist").glob("mmcv-*.whl")
    log(f"mmcv built in {time.monotonic() - start:.0f} s: {wheel.name}")
    return wheel


# The device tool returns files of at most 16 MiB; a CPU-ops mmcv wheel is ~31 MiB.
PART_BYTES = 15 * 2**20


def split_file(path: Path, dest: Path) -> list[Path]:
    """``path`` as ``NAME.part-0``, ``NAME.part-1``... of at most ``PART_BYTES`` in ``dest``."""
    parts = []
    with path.open("rb") as src:
        while chunk := src.read(PART_BYTES):
            parts.append(dest / f"{path.name}.part-{len(parts)}")
            parts[-1].write_bytes(chunk)
    return parts


def join_parts(kit: Path) -> list[Path]:
    """Reassemble ``NAME.part-N`` files in ``kit`` into ``NAME`` (a wheel a run sent back)."""
    joined = []
    for first in sorted(kit.glob("*.part-0")):
        name = first.name[: -len(".part-0")]
        parts = sorted(kit.glob(f"{name}.part-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
        partial = kit / f"{name}.partial"
        partial.write_bytes(b"".join(p.read_bytes() for p in parts))
        partial.replace(kit / name)
        joined.append(kit / name)
    return joined


def install_kit(kit: Path, site: Path, cuda_ops: bool = False) -> None:
    """Install every wheel in ``kit`` into ``site``; build mmcv when no mmcv wheel is there.

    A built mmcv wheel is copied back into ``kit`` and, in parts small enough for the
    device tool to return, into ``$OUT`` when set: carried next time (``join_parts``),
    it installs in seconds instead of two minutes of compiling.
    """
    join_parts(kit)
    wheels = sorted(p for p in kit.glob("*.whl"))
    if cuda_ops:  # a carried mmcv wheel is a CPU-ops build (same file name): build anew
        wheels = [p for p in wheels if not p.name.startswith("mmcv-")]
    if not any(p.name.startswith("mmcv-") for p in wheels):
        sdists = sorted(kit.glob("mmcv-*.tar.gz"))
        if not sdists:
            raise SystemExit(f"seglab.platform.kit: {kit} has neither an mmcv wheel nor "
                             "mmcv's sdist")
        others = [str(p) for p in wheels]
        # setuptools < 81 (pkg_resources) and wheel must be importable for mmcv's setup.py
        _pip("install", "-q", "--no-index", "--no-deps", "--no-compile", "--upgrade",
             "--target", str(site), *others)
        wheel = build_mmcv(sdists[-1], site, cuda_ops)
        shutil.copy2(wheel, kit / wheel.name)
        if os.environ.get("OUT"):
            split_file(wheel, Path(os.environ["OUT"]))
        wheels = [*wheels, wheel]
    _pip("install", "-q", "--no-index", "--no-deps", "--no-compile", "--upgrade", "--target",
         str(site), *map(str, wheels))
    log(f"kit installed into {site}: {len(wheels)} wheels")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m seglab.platform.kit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kit", type=Path, help="folder of wheels + mmcv sdist")
    parser.add_argument("site", type=Path, help="folder to install into (put it on PYTHONPATH)")
    parser.add_argument("--cuda-ops", action="store_true",
                        default=os.environ.get("SEGLAB_KIT_CUDA_OPS") == "1",
                        help="build mmcv's CUDA ops too (minutes more; SEGLAB_KIT_CUDA_OPS=1)")
    args = parser.parse_args(argv)
    install_kit(args.kit, args.site, args.cuda_ops)
    return 0


if __name__ == "__main__":
    sys.exit(main())
