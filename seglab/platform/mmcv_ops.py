"""Which ops variant the installed mmcv was built with, and which configs need more.

mmcv's compiled ops (``mmcv._ext``) are built either with CUDA kernels or CPU-only (no GPU
or no ``nvcc`` where it was built, or ``SEGLAB_MMCV_CPU_ONLY=1``). Both import alike, so a
CPU-only build on a GPU node goes unnoticed until the first forward pass of an op that has
no PyTorch path: ``psamask_forward_impl: implementation for device cuda:0 not found``.
:func:`check_mmcv_kernels` finds those ops in a config before anything is built.

Importing this module needs only the standard library: ``seglab.platform.install`` compares
variants before torch or mmcv are installed. ``python -m seglab.platform.mmcv_ops`` prints the
installed variant as JSON; ``--zoo`` lists the zoo families that need CUDA kernels.
"""

from __future__ import annotations

import argparse
import functools
import json
import mmap
import re
import struct
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmengine.config import Config

Arch = tuple[int, int]  # CUDA compute capability, e.g. (9, 0) for sm_90

CPU = "cpu"


def _arch_text(arch: Arch) -> str:
    return f"sm_{arch[0]}{arch[1]}"


@dataclass(frozen=True)
class OpsVariant:
    """An mmcv ops build: CPU-only, or the CUDA version and GPU architectures compiled in.

    Its text form is the op-variant part of ``seglab.platform.install``'s wheel-cache key: ``cpu``;
    ``cuda13.0-sm80_90`` for ``TORCH_CUDA_ARCH_LIST="8.0;9.0"``, with ``+PTX`` after an
    arch that also carries PTX; ``cuda13.0`` alone when the arches are not known.
    """

    cuda: str | None = None  # CUDA version the kernels were compiled with; None: CPU only
    sass: frozenset[Arch] = frozenset()  # arches with compiled kernels
    ptx: frozenset[Arch] = frozenset()  # arches with PTX, which newer GPUs JIT-compile

    @classmethod
    def parse(cls, text: str) -> OpsVariant:
        """Read ``cpu``, ``cuda<ver>`` or ``cuda<ver>-sm<arch>_<arch>...``.

        Args:
            text: a variant as ``str(OpsVariant)`` writes it.
        """
        if text == CPU:
            return cls()
        match = re.fullmatch(r"cuda(\d+\.\d+)(?:-sm([0-9a-z_+PTX]+))?", text)
        if not match:
            raise ValueError(f"not an mmcv ops variant: {text!r} "
                             "(expected 'cpu' or 'cuda<version>-sm<archs>')")
        arches = [re.fullmatch(r"(\d+)(\d)[a-z]?(\+PTX)?", a)
                  for a in (match.group(2) or "").split("_") if a]
        if not all(arches):
            raise ValueError(f"not an mmcv ops variant: {text!r} (arches like sm80_90+PTX)")
        return cls._of(match.group(1), [(int(a[1]), int(a[2]), bool(a[3])) for a in arches])

    @classmethod
    def from_arch_list(cls, cuda: str, arch_list: str) -> OpsVariant:
        """The variant a build with ``TORCH_CUDA_ARCH_LIST=arch_list`` produces.

        Args:
            cuda: the CUDA version torch was built with, e.g. ``"13.0"``.
            arch_list: ``TORCH_CUDA_ARCH_LIST`` syntax, e.g. ``"8.0;9.0+PTX"`` (``;`` or
                spaces between arches).
        """
        arches = [re.fullmatch(r"(\d+)\.(\d)[a-z]?(\+PTX)?", a.strip())
                  for a in re.split(r"[;\s]+", arch_list.strip()) if a]
        if not arches or not all(arches):
            raise ValueError(f"TORCH_CUDA_ARCH_LIST={arch_list!r}: expected numeric arches "
                             "such as '8.0;9.0' or '9.0+PTX'")
        return cls._of(cuda, [(int(a[1]), int(a[2]), bool(a[3])) for a in arches])

    @classmethod
    def _of(cls, cuda: str, arches: list[tuple[int, int, bool]]) -> OpsVariant:
        sass = frozenset((major, minor) for major, minor, _ in arches)
        ptx = frozenset((major, minor) for major, minor, with_ptx in arches if with_ptx)
        return cls(cuda, sass, ptx)

    def __str__(self) -> str:
        if self.cuda is None:
            return CPU
        if not self.sass | self.ptx:
            return f"cuda{self.cuda}"
        archs = "_".join(f"{major}{minor}" + ("+PTX" if (major, minor) in self.ptx else "")
                         for major, minor in sorted(self.sass | self.ptx))
        return f"cuda{self.cuda}-sm{archs}"

    def runs_on(self, arch: Arch) -> bool:
        """Whether a GPU of compute capability ``arch`` can run these kernels.

        Args:
            arch: ``(major, minor)``, as ``torch.cuda.get_device_capability`` gives it.
        """
        # A cubin runs on its own major at an equal or higher minor; PTX on any newer GPU.
        return (any(major == arch[0] and minor <= arch[1] for major, minor in self.sass)
                or any(p <= arch for p in self.ptx))

    def shortfall(self, needed: OpsVariant) -> str | None:
        """Why this build cannot stand in for ``needed``; None when it can.

        Args:
            needed: what the machine needs: ``cpu`` (every build has mmcv's CPU kernels), or
                torch's CUDA version and the GPUs' arches (none: arches not compared).
        """
        if needed.cuda is None:
            return None
        if self.cuda is None:
            return "built without CUDA ops"
        if self.cuda.split(".")[0] != needed.cuda.split(".")[0]:
            return f"built with CUDA {self.cuda}, torch uses CUDA {needed.cuda}"
        missing = sorted(a for a in needed.sass if not self.runs_on(a))
        if missing and self.sass | self.ptx:  # unknown arches (no fatbin found): benefit of doubt
            have = ", ".join(map(_arch_text, sorted(self.sass | self.ptx)))
            return f"no kernels for {', '.join(map(_arch_text, missing))} (built for {have})"
        return None


def fatbin_arches(path: str | Path) -> tuple[frozenset[Arch], frozenset[Arch]]:
    """The GPU arches of the CUDA kernels embedded in a shared library: (cubin, PTX).

    Reads the ELF ``.nv_fatbin`` section that nvcc writes (what ``cuobjdump --list-elf``
    lists), so no CUDA toolkit is needed. A library without that section has no kernels.

    Args:
        path: a 64-bit little-endian ELF file, e.g. mmcv's ``_ext*.so``.
    """
    sass: set[Arch] = set()
    ptx: set[Arch] = set()
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        section = _elf_section(data, b".nv_fatbin")
        if section is None:
            return frozenset(), frozenset()
        start, end = section
        magic = struct.pack("<I", 0xBA55ED50)
        pos = data.find(magic, start, end)
        while pos != -1:  # one fatbin per translation unit, each padded to alignment
            header_size, fat_size = struct.unpack_from("<HQ", data, pos + 6)
            entry, stop = pos + header_size, pos + header_size + fat_size
            while entry < stop:
                kind, _, entry_header, size = struct.unpack_from("<HHIQ", data, entry)
                (arch,) = struct.unpack_from("<I", data, entry + 28)
                (ptx if kind == 1 else sass).add((arch // 10, arch % 10))
                entry += entry_header + size
            pos = data.find(magic, stop, end)
    return frozenset(sass), frozenset(ptx)


def _elf_section(data: mmap.mmap, name: bytes) -> tuple[int, int] | None:
    if data[:6] != b"\x7fELF\x02\x01":
        raise ValueError("not a 64-bit little-endian ELF file")
    (section_headers,) = struct.unpack_from("<Q", data, 0x28)
    entry_size, count, names_index = struct.unpack_from("<HHH", data, 0x3A)

    def header(index: int) -> tuple[int, int, int]:
        name_offset, _, _, _, offset, size = struct.unpack_from(
            "<IIQQQQ", data, section_headers + index * entry_size)
        return name_offset, offset, size

    names = header(names_index)[1]
    for index in range(count):
        name_offset, offset, size = header(index)
        start = names + name_offset
        if data[start:data.find(b"\0", start)] == name:
            return offset, offset + size
    return None


@dataclass(frozen=True)
class InstalledOps:
    """The mmcv in this environment and its ops variant."""

    version: str
    variant: OpsVariant

    def describe(self) -> str:
        """E.g. ``mmcv 2.1.0 built without CUDA ops``."""
        v = self.variant
        if v.cuda is None:
            return f"mmcv {self.version} built without CUDA ops"
        arches = ", ".join(map(_arch_text, sorted(v.sass | v.ptx))) or "unknown GPU arches"
        return f"mmcv {self.version} built with CUDA {v.cuda} ops for {arches}"


@functools.cache
def _probe() -> InstalledOps:
    import importlib.metadata
    import importlib.util

    from mmcv.ops import get_compiling_cuda_version

    version = importlib.metadata.version("mmcv")
    cuda = get_compiling_cuda_version()  # 'not available' when built without CUDA
    if not re.fullmatch(r"\d+\.\d+", cuda):
        return InstalledOps(version, OpsVariant())
    spec = importlib.util.find_spec("mmcv._ext")
    try:
        sass, ptx = fatbin_arches(spec.origin) if spec and spec.origin else (frozenset(),) * 2
    except (OSError, ValueError, struct.error):  # unreadable: arches unknown, CUDA still known
        sass, ptx = frozenset(), frozenset()
    return InstalledOps(version, OpsVariant(cuda, sass, ptx))


def probe_mmcv_ops() -> InstalledOps:
    """The installed mmcv's version and ops variant (imports ``mmcv.ops``; cached)."""
    return _probe()


@dataclass(frozen=True)
class KernelNeed:
    """A config entry that runs an mmcv op with no PyTorch path on CUDA tensors."""

    key: str  # e.g. 'model.decode_head.type'
    type: str  # the config's value there, e.g. 'PSAHead'
    op: str  # the mmcv op, e.g. 'mmcv.ops.PSAMask'
    why: str

    def __str__(self) -> str:
        return f"{self.key}={self.type}"


def _always(node: Mapping[str, Any]) -> bool:
    return True


@dataclass(frozen=True)
class _Rule:
    names: frozenset[str]  # scope-qualified types; '*.X' matches X from any scope
    op: str
    why: str
    applies: Callable[[Mapping[str, Any]], bool] = field(default=_always)


# Read from mmcv 2.1.0, mmseg 1.2.2 and mmdet 3.3.0. Left out on purpose, as they have a
# PyTorch path: CrissCrossAttention (CCNet; einsum), point_sample (PointRend,
# Mask2Former; grid_sample), MultiScaleDeformableAttention on CPU tensors, mmseg's
# FocalLoss (seglab registers a PyTorch fallback over it). Every op below has CPU kernels
# or none at all; what matters here is that it has no PyTorch path on CUDA tensors.
_RULES = (
    _Rule(frozenset({"mmseg.PSAHead"}), "mmcv.ops.PSAMask",
          "PSAHead gathers its point-wise attention with PSAMask (psamask_forward)",
          applies=lambda node: not node.get("compact", False)),  # compact: a view, no PSAMask
    _Rule(frozenset({"mmdet.MSDeformAttnPixelDecoder", "*.MultiScaleDeformableAttention"}),
          "mmcv.ops.MultiScaleDeformableAttention",
          "Mask2Former's pixel decoder runs MultiScaleDeformableAttention, which calls "
          "ms_deform_attn_forward for CUDA tensors (its PyTorch path is CPU-only)"),
    _Rule(frozenset({"mmdet.FocalLoss"}), "mmcv.ops.sigmoid_focal_loss",
          "mmdet's FocalLoss calls sigmoid_focal_loss_forward for CUDA tensors with class-"
          "index targets (MaskFormer's mask loss); seglab's fallback covers mmseg's only",
          applies=lambda node: bool(node.get("use_sigmoid", True) and not node.get("activated"))),
    _Rule(frozenset({"*.DCN"}), "mmcv.ops.DeformConv2dPack",
          "deformable convolution (deform_conv_forward)"),
    _Rule(frozenset({"*.DCNv2"}), "mmcv.ops.ModulatedDeformConv2dPack",
          "modulated deformable convolution (modulated_deform_conv_forward)"),
    _Rule(frozenset({"*.SAC"}), "mmcv.ops.SAConv2d",
          "switchable atrous convolution with use_deform=True (deform_conv_forward)",
          applies=lambda node: bool(node.get("use_deform"))),
    _Rule(frozenset({"*.carafe"}), "mmcv.ops.CARAFEPack",
          "CARAFE upsampling (carafe_forward; CUDA kernels only)"),
    _Rule(frozenset({"*.MMSyncBN"}), "mmcv.ops.SyncBatchNorm",
          "mmcv's SyncBN normalises with sync_bn_forward_* kernels while training"),
)


def _rule_for(type_name: Any, scope: str) -> _Rule | None:
    if not isinstance(type_name, str):  # a class object (lazy-import configs): not ours
        return None
    name_scope, _, name = type_name.rpartition(".")
    qualified = f"{name_scope or scope}.{name}"
    return next((r for r in _RULES if qualified in r.names or f"*.{name}" in r.names), None)


def kernel_needs(cfg: Config | Mapping[str, Any]) -> list[KernelNeed]:
    """Every entry of ``cfg.model`` whose op has no PyTorch path on CUDA tensors.

    Args:
        cfg: a resolved mmengine config (or its dict); only ``model`` is read.
    """
    scope = cfg.get("default_scope") or "mmseg"
    needs: list[KernelNeed] = []

    def walk(node: Any, path: str, covered: frozenset[str]) -> None:
        if isinstance(node, Mapping):
            rule = _rule_for(node.get("type"), scope)
            if rule and rule.op not in covered and rule.applies(node):
                needs.append(KernelNeed(f"{path}.type", node["type"], rule.op, rule.why))
                covered |= {rule.op}  # one entry per op and subtree: the outermost names it
            for key, value in node.items():
                # ResNet's dcn= builds DCN only in the stages stage_with_dcn turns on
                if key == "dcn" and not any(node.get("stage_with_dcn") or ()):
                    continue
                walk(value, f"{path}.{key}", covered)
        elif isinstance(node, (list, tuple)):
            for index, value in enumerate(node):
                walk(value, f"{path}.{index}", covered)

    walk(cfg.get("model") or {}, "model", frozenset())
    return needs


def _needed_on(device: str, ops: InstalledOps) -> OpsVariant:
    """torch's CUDA version and, when the GPU is visible, its arch."""
    import torch

    # A CPU-only torch cannot use a GPU at all (seglab.launch.device refuses that first), so only
    # "has CUDA ops or not" is compared then.
    cuda = torch.version.cuda or ops.variant.cuda or "0.0"
    if not torch.cuda.is_available():
        return OpsVariant(cuda)
    return OpsVariant(cuda, frozenset({torch.cuda.get_device_capability(device)}))


def cuda_kernel_gap(device: str = "cuda") -> str | None:
    """Why the installed mmcv's CUDA kernels cannot run on ``device``; None when they can
    (also where no GPU is visible: arches are then not compared).

    Args:
        device: ``'cuda'`` or ``'cuda:N'``.
    """
    ops = probe_mmcv_ops()
    return ops.variant.shortfall(_needed_on(device, ops))


def missing_cuda_kernels(cfg: Config, device: str) -> list[KernelNeed]:
    """The config entries that need an mmcv CUDA kernel the installed mmcv lacks.

    Args:
        cfg: the resolved config the run will build.
        device: where the model will run: ``'cuda'`` (or ``'cuda:N'``) or ``'cpu'``. On the
            CPU nothing is needed beyond mmcv's CPU ops, which every build has.
    """
    if not device.startswith("cuda"):
        return []
    needs = kernel_needs(cfg)
    if not needs:
        return []
    ops = probe_mmcv_ops()
    return needs if ops.variant.shortfall(_needed_on(device, ops)) else []


def check_mmcv_kernels(cfg: Config, device: str) -> None:
    """Refuse, before anything is built, a config that would fail at its first step on
    ``device`` because the installed mmcv lacks a CUDA kernel it needs.

    Args:
        cfg: the resolved config the run will build.
        device: ``'cuda'`` (or ``'cuda:N'``) or ``'cpu'``.

    Raises:
        seglab.config.ConfigError: naming each op, its config key, the installed mmcv and
            the fix.
    """
    missing = missing_cuda_kernels(cfg, device)
    if not missing:
        return
    from seglab.config.loading import ConfigError

    ops = probe_mmcv_ops()
    raise ConfigError(kernel_error(missing, ops, _needed_on(device, ops), device))


def kernel_error(missing: list[KernelNeed], ops: InstalledOps, needed: OpsVariant,
                 device: str) -> str:
    """The message of :func:`check_mmcv_kernels`.

    Args:
        missing: what :func:`missing_cuda_kernels` found.
        ops: the installed mmcv.
        needed: torch's CUDA version and the GPU's arch.
        device: the device of the run.
    """
    if ops.variant.cuda is None:
        state, symptom = ops.describe(), "implementation for device cuda:0 not found"
    else:
        state = f"{ops.describe()}: {ops.variant.shortfall(needed)}"
        symptom = "no kernel image is available for execution on the device"
    arch_list = ";".join(f"{a}.{b}" for a, b in sorted(needed.sass)) or "8.0;9.0"
    lines = [f"this config needs mmcv CUDA kernels that the installed mmcv lacks ({state}); "
             f"on {device} it would stop at its first step with '...{symptom}':"]
    lines += [f"  {need}: {need.op}: {need.why}" for need in missing]
    lines.append(
        "Fix: on a node with this GPU and nvcc from CUDA "
        f"{needed.cuda.split('.')[0]}.x (torch's), run `make env` (it rebuilds mmcv for the "
        f"GPUs it sees), or choose the arches: FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST='{arch_list}' "
        ".venv/bin/python -m seglab.platform.install --force. The wheel is cached per variant, "
        "so other "
        "nodes then install it without compiling. Or run on the CPU: CUDA_VISIBLE_DEVICES=''.")
    return "\n".join(lines)


def zoo_kernel_needs() -> dict[str, list[KernelNeed]]:
    """``{family: needs}`` for the zoo families that need mmcv CUDA kernels on a GPU.

    Reads mmseg's configs without their ``custom_imports``, so families that need mmdet
    are listed whether or not it is installed.
    """
    from mmengine.config import Config

    from seglab.config import zoo
    from seglab.config.walk import mmseg_config_dir

    found = {}
    for family in zoo.FAMILIES:
        path = mmseg_config_dir() / family.config
        needs = kernel_needs(Config.fromfile(str(path), import_custom_modules=False))
        if needs:
            found[family.name] = needs
    return found


def main(argv: list[str] | None = None) -> int:
    """``python -m seglab.platform.mmcv_ops [--zoo]``: the installed variant as JSON (exit 1 when
    mmcv's ops do not load), or one line per zoo family that needs CUDA kernels.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(prog="python -m seglab.platform.mmcv_ops", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", action="store_true",
                        help="list the zoo families that need mmcv CUDA kernels")
    args = parser.parse_args(argv)
    if args.zoo:
        for name, needs in zoo_kernel_needs().items():
            print(f"{name}: " + "; ".join(f"{need} ({need.op})" for need in needs))
        return 0
    try:
        ops = probe_mmcv_ops()
    except Exception as err:  # ImportError, or the OSError of a broken _ext: both "no ops"
        print(f"mmcv ops do not load: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"mmcv": ops.version, "variant": str(ops.variant),
                      "describe": ops.describe()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
