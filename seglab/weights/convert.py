"""``seglab weights convert``: MiT weights from Hugging Face or NVlabs into mmseg's names, proven.

A wrong conversion is silent: the keys load, the shapes match and training starts from
garbage. So the converted weights are loaded (strictly) into mmseg's
``MixVisionTransformer`` and run on the same random image as the source model; the four
stage outputs must agree (max abs difference <= 1e-4 in fp32) before anything is written.
The source model is transformers' ``SegformerModel`` for a Hugging Face folder; an NVlabs
file is compared tensor for tensor with mmseg's own ``mit2mmseg`` converter (shipped in
mmseg's package), and with ``SegformerModel`` too where transformers is installed.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seglab.atomic_files import atomic_write
from seglab.errors import UserError
from seglab.weights import mit

TOLERANCE = 1e-4  # fp32: a correct mapping lands near 1e-6; a wrong one near 1
PROBE_SIZE = 128  # the last stage sees 4x4
# Tensors of a whole-model source that are not the encoder's: dropped, and said so
NOT_ENCODER = re.compile(r"^(classifier|decode_head|head)\.")
SEED_NAME = "mit_{size}_converted_from_{origin}.pth"  # what the seed configs point at
# one tensor each layout has, to find a layout under a prefix nobody expects
_LAYOUT_MARKS = ("encoder.patch_embeddings.0.proj.weight", "patch_embed1.proj.weight")


class ConversionError(UserError):
    """A source that cannot become mmseg's MiT; the message names the tensor and the fix."""


@dataclass
class Source:
    """Tensors of a source checkpoint, its spelling and what it says about itself."""

    path: Path
    fmt: str  # "hf", "nvlabs"
    state: dict[str, torch.Tensor]
    hf_config: dict[str, Any] | None = None
    dropped: list[str] = field(default_factory=list)  # classifier / decode head
    dtype: str = "float32"  # the source's; read, verified and written in fp32 (mmseg's)


@dataclass
class Report:
    arch: mit.MitArch
    converted: int
    total: int
    dropped: int
    stage_diffs: list[float] | None  # None: no forward run (NVlabs without transformers)
    scale: float  # the largest |reference output|: the limit is relative to it
    reference: str
    ln_eps: float
    config_eps_diffs: list[float] | None = None
    mmseg_converter_equal: str | None = None

    @property
    def max_diff(self) -> float | None:
        return max(self.stage_diffs) if self.stage_diffs else None

    @property
    def relative_diff(self) -> float:
        return (self.max_diff or 0.0) / max(self.scale, 1.0)

    def lines(self) -> list[str]:
        out = [f"architecture: {self.arch.describe()}",
               f"coverage: {self.converted}/{self.total} backbone tensors converted; every "
               "source tensor used"
               + (f"; {self.dropped} classifier/decode-head tensor(s) dropped (not the "
                  "encoder)" if self.dropped else "")]
        if self.stage_diffs is None:
            out.append("stage outputs: not compared (no transformers to run a source model; "
                       "pip install 'seglab[hf]')")
        else:
            out.append(f"stage outputs vs {self.reference} on one random {PROBE_SIZE}x"
                       f"{PROBE_SIZE} image (fp32, LayerNorm eps {self.ln_eps:g}): max abs "
                       "diff " + ", ".join(f"{d:.2e}" for d in self.stage_diffs)
                       + f" (outputs up to {self.scale:.1f}; limit {TOLERANCE:g} x "
                       "max(1, that))")
        if self.mmseg_converter_equal:
            out.append(f"mmseg's own mit2mmseg converter: {self.mmseg_converter_equal}")
        if self.config_eps_diffs is not None:
            out.append(
                f"note: mmseg's MiT uses LayerNorm eps {mit.MMSEG_LN_EPS:g} (as the NVlabs "
                f"original trained) where this source's model uses {self.ln_eps:g}; with "
                "mmseg's eps the stage outputs differ by "
                + ", ".join(f"{d:.2e}" for d in self.config_eps_diffs)
                + " (same weights; not a conversion error)")
        return out


# ---- reading a source ------------------------------------------------------------------

def _load_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:
            raise ConversionError(f"{path}: reading .safetensors needs the safetensors "
                                  "package: pip install 'seglab[hf]'") from err
        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own SafetensorError
            raise ConversionError(f"{path}: not a readable safetensors file ({err}); "
                                  "download it again") from err
    from seglab.engine.checkpoint import load_checkpoint_file

    # weights_only with the types mmengine writes; separate messages for corrupt and unsafe
    loaded = load_checkpoint_file(str(path), map_location="cpu")
    if isinstance(loaded, dict):
        for key in ("state_dict", "model"):  # training checkpoints wrap the weights
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict):
        raise ConversionError(f"{path}: holds a {type(loaded).__name__}, not a state dict")
    return {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConversionError(f"{path}: not readable JSON ({err}); download it again") from err


def _json_type(value: object) -> str:
    """What a JSON value is, in JSON's words (a message shows the user their file's terms)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {str: "a string", int: "a number", float: "a number", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def _described(value: object) -> str:
    """``a string ("64")``: the kind and (the start of) the value as the file spells it."""
    if value is None:
        return "null"
    text = json.dumps(value)
    return f"{_json_type(value)} ({text if len(text) <= 60 else text[:57] + '...'})"


def _shard_files(index: Path) -> list[Path]:
    """The shards an index (``*.index.json``) maps the tensors to, each once, sorted.

    Everything but ``weight_map`` (tensor name -> shard file) is metadata nobody needs here;
    a hand-edited or foreign index is refused naming the key rather than failing on it."""
    fix = "Fix: download the folder again (save_pretrained writes the index with its shards)"
    data = _read_json(index)
    if not isinstance(data, dict):
        raise ConversionError(f"{index}: the index is {_json_type(data)}, not a JSON object "
                              f"with a 'weight_map'. {fix}.")
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        what = ("missing" if "weight_map" not in data else
                "empty" if isinstance(weight_map, dict) else
                _described(weight_map))
        raise ConversionError(f"{index}: key 'weight_map' is {what}; it must be an object "
                              "mapping each tensor name to its shard file. "
                              f"{fix}.")
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or not shard:
            raise ConversionError(f"{index}: key 'weight_map' maps tensor {tensor!r} to "
                                  f"{_described(shard)}, not a shard file name. {fix}.")
    shards = [index.parent / shard for shard in sorted(set(weight_map.values()))]
    for shard in shards:
        if not shard.is_file():
            raise ConversionError(f"{index}: key 'weight_map' names the shard {shard.name!r}, "
                                  f"which is not in {index.parent}: the download is "
                                  "incomplete. Fix: download the missing shard(s) again.")
    return shards


def _hf_weight_files(folder: Path) -> list[Path]:
    """The weight files ``save_pretrained`` wrote, safetensors first, shards followed."""
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index = folder / index_name
        if index.is_file():
            return _shard_files(index)
        if (folder / single).is_file():
            return [folder / single]
    return []


# config.json fields that transformers' SegformerModel is built from (SegformerEncoder reads
# the per-stage lists by stage index, the numbers as they are) and that convert writes into
# the checkpoint's meta (``architectures``); another field is transformers' business alone
_WHOLE_NUMBERS = ("num_encoder_blocks", "num_channels")
_NUMBERS = ("drop_path_rate", "hidden_dropout_prob", "attention_probs_dropout_prob",
            "initializer_range", "layer_norm_eps")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


_WHOLE = (_is_whole, "whole numbers of at least 1")
_STAGE_LISTS = {"depths": _WHOLE, "sr_ratios": _WHOLE, "hidden_sizes": _WHOLE,
                "patch_sizes": _WHOLE, "strides": _WHOLE, "num_attention_heads": _WHOLE,
                "mlp_ratios": (_is_positive, "positive numbers")}  # the MLP's width / input's


def _hf_config(path: Path) -> dict[str, Any]:
    """``config.json`` of a Hugging Face folder, its fields the source model is built from
    checked: a wrong type there would stop transformers mid-construction with a TypeError."""
    config = _read_json(path)
    fix = ("Fix: restore the file as save_pretrained writes it (download it again), or remove "
           "it to verify against MiT's own numbers for the size the tensors show")

    def refuse(key: str, expected: str) -> ConversionError:
        return ConversionError(f"{path}: key {key!r} is {_described(config[key])}, expected "
                               f"{expected}. {fix}.")

    if not isinstance(config, dict):
        raise ConversionError(f"{path}: the file is {_json_type(config)}, not a JSON object "
                              f"of model settings. {fix}.")
    for key in _WHOLE_NUMBERS:
        if key in config and not _is_whole(config[key]):
            raise refuse(key, "a whole number of at least 1")
    stages = config.get("num_encoder_blocks", 4)  # SegformerConfig's default: MiT's 4 stages
    for key, (fits, what) in _STAGE_LISTS.items():
        values = config.get(key)
        # transformers indexes these by stage: a shorter list ends in an IndexError
        if key in config and not (isinstance(values, list) and len(values) >= stages
                                  and all(map(fits, values))):
            raise refuse(key, f"a list of {stages} {what}, one per stage")
    for key in _NUMBERS:
        if key in config and not _is_number(config[key]):
            raise refuse(key, "a number")
    if "hidden_act" in config and not isinstance(config["hidden_act"], str):
        raise refuse("hidden_act", "the name of an activation such as \"gelu\"")
    architectures = config.get("architectures")
    if architectures is not None and not (isinstance(architectures, list)
                                          and all(isinstance(a, str) for a in architectures)):
        raise refuse("architectures", "a list of class names such as [\"SegformerModel\"]")
    return config


def _resolve_hub_id(src: str) -> Path:
    """``nvidia/mit-b2``: the local Hugging Face cache, else a download when online."""
    fix = (f"download it where there is network: `hf download {src} "
           f"--local-dir checkpoints/hf/{src.split('/')[-1]}`, then `seglab weights convert "
           f"checkpoints/hf/{src.split('/')[-1]}`")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise ConversionError(f"{src!r} is not a file or folder here, and fetching it from the "
                              "Hugging Face hub needs huggingface_hub: pip install "
                              f"'seglab[hf]', or {fix}") from err
    patterns = ["config.json", "*.safetensors", "*.bin", "*.json"]
    for local_only in (True, False):
        try:
            return Path(snapshot_download(src, allow_patterns=patterns,
                                          local_files_only=local_only))
        except Exception as err:  # offline, unknown repo, gated: all end the same way
            if not local_only:
                raise ConversionError(f"{src!r} is not a file or folder here and could not be "
                                      f"fetched from the Hugging Face hub ({type(err).__name__}"
                                      f"): {fix}") from err
    raise AssertionError("unreachable")


def _looks_like_hub_id(src: str) -> bool:
    """``owner/name``, not a mistyped local path (a file suffix, or a first part that exists
    here, such as ``checkpoints/mit_b2.safetensors``)."""
    return (re.fullmatch(r"[\w.-]+/[\w.-]+", src) is not None
            and Path(src).suffix.lower() not in {".pth", ".pt", ".bin", ".safetensors", ".ckpt"}
            and not Path(src.split("/")[0]).exists())


def read_source(src: str) -> Source:
    """A file or folder (Hugging Face ``save_pretrained`` output, NVlabs ``mit_b*.pth``), or a
    hub id such as ``nvidia/mit-b2``."""
    path = Path(src).expanduser()
    if not path.exists():
        if _looks_like_hub_id(src):
            path = _resolve_hub_id(src)
        else:
            raise ConversionError(f"{src}: no such file or folder")
    folder = path if path.is_dir() else None
    if folder is not None:
        files = _hf_weight_files(folder)
        if not files:
            raise ConversionError(f"{folder}: no model.safetensors or pytorch_model.bin in this "
                                  "folder (what save_pretrained writes); give the weight file "
                                  "itself for other layouts")
    else:
        files = [path]
        folder = path.parent if (path.parent / "config.json").is_file() else None
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(_load_file(file))
    source = _classify(path, state)
    # only the Hugging Face layout has a config.json of its own: one beside an NVlabs file
    # is someone else's and is not read
    if source.fmt == "hf" and folder is not None and (folder / "config.json").is_file():
        source.hf_config = _hf_config(folder / "config.json")
    return source


def _classify(path: Path, state: dict[str, torch.Tensor]) -> Source:
    dtypes = Counter(str(v.dtype).removeprefix("torch.") for v in state.values()
                     if v.is_floating_point())
    state = {re.sub(r"^module\.", "", k): v.float() if v.is_floating_point() else v
             for k, v in state.items()}
    if any(k.startswith("segformer.encoder.") for k in state):
        state = {k[len("segformer."):] if k.startswith("segformer.") else k: v
                 for k, v in state.items()}
    dropped = sorted(k for k in state if NOT_ENCODER.match(k))
    state = {k: v for k, v in state.items() if k not in dropped}
    if any(k.startswith("encoder.patch_embeddings.") for k in state):
        fmt = "hf"
    elif any(k.startswith("patch_embed1.") for k in state):
        fmt = "nvlabs"
    elif any(re.match(r"^(backbone\.)?layers\.0\.0\.projection\.", k) for k in state):
        raise ConversionError(f"{path}: already in mmseg's MixVisionTransformer names; point "
                              "the config's init_cfg.checkpoint at it as it is")
    elif prefixed := next((k for k in state if k.endswith(_LAYOUT_MARKS)), None):
        mark = next(m for m in _LAYOUT_MARKS if prefixed.endswith(m))
        prefix = prefixed[: -len(mark)]
        raise ConversionError(
            f"{path}: every tensor carries the prefix {prefix!r} (e.g. {prefixed!r}): strip it "
            f"(keys[len({prefix!r}):]) and save the file again, then convert that")
    else:
        raise ConversionError(
            f"{path}: not a MiT/SegFormer checkpoint in a known layout (first keys: "
            f"{', '.join(sorted(state)[:4]) or 'none'}); expected Hugging Face "
            "'encoder.patch_embeddings.0.*' or NVlabs 'patch_embed1.*'")
    return Source(path, fmt, state, dropped=dropped,
                  dtype=dtypes.most_common(1)[0][0] if dtypes else "float32")


def _choose_arch(source: Source, arch_name: str | None) -> mit.MitArch:
    widths, depths = mit.source_arch(source.state, source.fmt)
    for stage, width in enumerate(widths):  # a stage's patch embedding gives its width
        if width == 0:
            name = mit.tensor_plan(mit.ARCHS["mit-b0"], source.fmt)[
                f"layers.{stage}.0.projection.weight"][0]
            raise ConversionError(f"{source.path}: tensor {name!r} is missing: the file is "
                                  "incomplete or another model")
    found = mit.arch_of(widths, depths)
    if arch_name is None:
        if found is None:
            raise ConversionError(
                f"{source.path}: widths {list(widths)} and blocks {list(depths)} are no MiT "
                f"size (b0-b5: {', '.join(a.describe() for a in mit.ARCHS.values())}); is the "
                "file complete?")
        return found
    arch = mit.arch_named(arch_name)
    if arch is None:
        raise ConversionError(f"--arch {arch_name}: unknown; choose one of "
                              f"{', '.join(mit.ARCHS)}")
    if arch != found:
        for stage, (want, have) in enumerate(zip(arch.depths, depths, strict=True)):
            if want != have:
                raise ConversionError(
                    f"--arch {arch.name} has {want} blocks in stage {stage + 1}, the source "
                    f"{have} (widths {list(widths)}, blocks {list(depths)}): "
                    + (f"it is {found.name}; drop --arch" if found else
                       "the file is incomplete or another model"))
        raise ConversionError(f"--arch {arch.name} has widths {list(arch.widths)}, the source "
                              f"{list(widths)}" + (f": it is {found.name}" if found else ""))
    return arch


# ---- proving it ------------------------------------------------------------------------

def build_backbone(arch: mit.MitArch, ln_eps: float = mit.MMSEG_LN_EPS) -> torch.nn.Module:
    """mmseg's MixVisionTransformer of ``arch``, randomly initialised."""
    from mmseg.models.backbones import MixVisionTransformer

    cfg = arch.backbone_cfg(ln_eps)
    cfg.pop("type")
    return MixVisionTransformer(**cfg)


def _mmseg_backbone(arch: mit.MitArch, state: dict[str, torch.Tensor], ln_eps: float,
                    ) -> torch.nn.Module:
    backbone = build_backbone(arch, ln_eps)
    result = backbone.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:  # the plan and mmseg disagree: a bug
        raise AssertionError(f"mmseg's MixVisionTransformer did not take the converted "
                             f"tensors: missing {result.missing_keys[:5]}, unexpected "
                             f"{result.unexpected_keys[:5]}")
    return backbone.eval()


def _stage_outputs(model: Callable[[torch.Tensor], Any], image: torch.Tensor,
                   ) -> list[torch.Tensor]:
    with torch.no_grad():
        return list(model(image))


def _hf_model(source: Source, arch: mit.MitArch) -> torch.nn.Module:
    """transformers' SegformerModel holding exactly the tensors that were converted: built
    from the source's config.json (MiT's own numbers for ``arch`` when there is none, as for
    a lone weight file or an NVlabs release), NVlabs tensors under the Hugging Face names."""
    from transformers import SegformerConfig, SegformerModel
    from transformers.utils import logging as hf_logging

    fields = {k: v for k, v in (source.hf_config or {}).items() if k != "architectures"}
    config = SegformerConfig(**fields) if fields else SegformerConfig(
        hidden_sizes=list(arch.widths), depths=list(arch.depths),
        num_attention_heads=list(mit.NUM_HEADS), sr_ratios=list(mit.SR_RATIOS))
    legacy = source.state if source.fmt == "hf" else _nvlabs_as_hf(source.state, arch)
    # its load report lists what it leaves out, which the coverage line says already
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = SegformerModel(config)
        _load_legacy_hf(model, legacy)
    except (RuntimeError, ValueError, KeyError) as err:  # config.json and tensors disagree
        raise ConversionError(f"{source.path}: transformers cannot build the source model from "
                              f"its config.json and tensors ({str(err).splitlines()[0][:300]})"
                              ) from err
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.eval()


def _load_legacy_hf(model: torch.nn.Module, legacy: dict[str, torch.Tensor]) -> None:
    """Load tensors named as ``save_pretrained`` writes them (``segformer.`` prefixes, as a
    segmentation head's file has them) into a live SegformerModel by saving and loading through
    a temporary folder: ``from_pretrained`` maps the names as it would for the user's folder."""
    import tempfile

    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        model.config.save_pretrained(tmp)
        save_file({k: v.contiguous() for k, v in legacy.items()}, f"{tmp}/model.safetensors")
        loaded = type(model).from_pretrained(tmp, torch_dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())


def _nvlabs_as_hf(state: dict[str, torch.Tensor], arch: mit.MitArch) -> dict[str, torch.Tensor]:
    """NVlabs tensors under the Hugging Face names (q/kv split into query/key/value)."""
    hf_plan, nv_plan = mit.tensor_plan(arch, "hf"), mit.tensor_plan(arch, "nvlabs")
    out = {}
    for target, hf_names in hf_plan.items():
        nv = torch.cat([state[n] for n in nv_plan[target]])
        for name, part in zip(hf_names, nv.chunk(len(hf_names)), strict=True):
            out[name] = part.clone()
    return out


def _hf_stage_outputs(model: torch.nn.Module) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    def run(image: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return list(model(pixel_values=image, output_hidden_states=True).hidden_states)
    return run


def _layer_norm_eps(model: torch.nn.Module) -> float:
    return next(m.eps for m in model.modules() if isinstance(m, torch.nn.LayerNorm))


def _max_diffs(a: list[torch.Tensor], b: list[torch.Tensor]) -> list[float]:
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b, strict=False)):
        raise AssertionError(f"stage output shapes differ: {[tuple(x.shape) for x in a]} vs "
                             f"{[tuple(y.shape) for y in b]}")
    return [float((x - y).abs().max()) for x, y in zip(a, b, strict=True)]


def _mmseg_converter(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """mmseg's ``tools/model_converters/mit2mmseg.py:convert_mit`` from the installed package."""
    import importlib.util

    from seglab.config.walk import mmseg_config_dir

    script = mmseg_config_dir().parent / "tools" / "model_converters" / "mit2mmseg.py"
    if not script.is_file():
        return None
    spec = importlib.util.spec_from_file_location("_mmseg_mit2mmseg", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.convert_mit(state))


def verify(source: Source, arch: mit.MitArch, converted: dict[str, torch.Tensor]) -> Report:
    """Run the converted weights in mmseg's backbone beside the source model; for NVlabs
    sources also compare with mmseg's own converter, tensor for tensor."""
    equal = None
    if source.fmt == "nvlabs":
        reference = _mmseg_converter(source.state)
        if reference is not None:
            same = sum(1 for k, v in converted.items()
                       if k in reference and torch.equal(v, reference[k]))
            equal = f"{same}/{len(converted)} tensors equal"
            extra = sorted(set(reference) - set(converted))
            if same != len(converted) or extra:
                raise AssertionError(f"seglab's conversion differs from mmseg's mit2mmseg: "
                                     f"{equal}, extra there: {extra[:5]}")
    try:
        hf = _hf_model(source, arch)
    except ImportError:
        hf = None
    report = Report(arch, len(converted), len(mit.tensor_plan(arch, source.fmt)),
                    len(source.dropped), None, 0.0, "transformers' SegformerModel",
                    mit.MMSEG_LN_EPS, mmseg_converter_equal=equal)
    if hf is None:
        if equal is None:  # nothing independent to compare with: refuse rather than guess
            raise ConversionError(
                f"{source.path}: verifying the conversion needs transformers (to run the source "
                "model): pip install 'seglab[hf]', or --no-verify to write it unproven")
        return report
    torch.manual_seed(0)
    image = torch.randn(1, 3, PROBE_SIZE, PROBE_SIZE)
    report.ln_eps = _layer_norm_eps(hf)
    expected = _hf_stage_outputs(hf)(image)
    report.scale = max(float(t.abs().max()) for t in expected)
    report.stage_diffs = _max_diffs(
        _stage_outputs(_mmseg_backbone(arch, converted, report.ln_eps), image), expected)
    if report.ln_eps != mit.MMSEG_LN_EPS:
        report.config_eps_diffs = _max_diffs(
            _stage_outputs(_mmseg_backbone(arch, converted, mit.MMSEG_LN_EPS), image), expected)
    return report


# ---- the command -----------------------------------------------------------------------

def convert_hint(checkpoint: str) -> str | None:
    """The command that makes ``checkpoint`` when its name says it is a converted MiT
    (``checkpoints/mit_b2_converted_from_hf.pth``); None otherwise."""
    found = re.search(r"mit_(b[0-5])_converted_from_(hf|nvlabs)", Path(checkpoint).name)
    if found is None:
        return None
    size, origin = found.groups()
    src = f"nvidia/mit-{size}" if origin == "hf" else f"mit_{size}.pth"
    return f"seglab weights convert {src} --to {checkpoint}"


def default_output(source: Source, arch: mit.MitArch, checkpoints: Path) -> Path:
    """The seeds' file name: ``checkpoints/mit_b2_converted_from_hf.pth``."""
    origin = "hf" if source.fmt == "hf" else "nvlabs"
    return checkpoints / SEED_NAME.format(size=arch.name.split("-")[1], origin=origin)


def convert(src: str, to: str | os.PathLike[str] | None = None, arch_name: str | None = None,
            checkpoints: Path = Path("checkpoints"), force: bool = False, check: bool = True,
            echo: Callable[[str], None] = print) -> Path:
    """Convert ``src`` to mmseg's MiT state dict, prove it, write it atomically; the path."""
    source = read_source(src)
    arch = _choose_arch(source, arch_name)
    if to is None and any(k.startswith("decode_head.") for k in source.dropped):
        # a segmentation model's encoder has been trained on its dataset: under the seeds'
        # ImageNet file name it would quietly become the "pretrained" start of new runs
        raise ConversionError(f"{source.path}: a whole segmentation model (it has a decode "
                              "head): its encoder is fine-tuned, not ImageNet weights, so it "
                              "gets no default name; give --to FILE")
    out = Path(to) if to else default_output(source, arch, checkpoints)
    _refuse_existing(out, force)
    plan = mit.tensor_plan(arch, source.fmt)
    converted, missing = mit.convert_tensors(source.state, plan)
    if missing:
        raise ConversionError(f"{source.path}: tensor {missing[0]!r} is missing"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                              + f"; {arch.name} needs it: the file is incomplete or another "
                              "model")
    used = {name for names in plan.values() for name in names}
    unused = sorted(set(source.state) - used)  # refused: a tensor nowhere is a wrong model
    if unused:
        raise ConversionError(f"{source.path}: tensor {unused[0]!r} has no place in mmseg's "
                              f"{arch.name}" + (f" (and {len(unused) - 1} more)"
                                                if len(unused) > 1 else "")
                              + ": another model or an extra prefix; strip it, or give --arch")
    bad_shape = _shape_mismatch(arch, converted)
    if bad_shape:
        raise ConversionError(f"{source.path}: {bad_shape}")
    echo(f"converting {source.path} ({'Hugging Face' if source.fmt == 'hf' else 'NVlabs'} "
         f"layout) -> {out}")
    report = None
    if check:
        report = verify(source, arch, converted)
        for line in report.lines():
            echo(f"  {line}")
        if report.relative_diff > TOLERANCE:
            raise ConversionError(f"{source.path}: converted stage outputs differ from the "
                                  f"source model by {report.max_diff:.2e} (outputs up to "
                                  f"{report.scale:.1f}; limit {TOLERANCE:g} x max(1, that)); "
                                  "nothing written. Report this with the source's config.json")
    else:
        echo("  not verified (--no-verify)")
    meta = {"converted_from": str(source.path), "source_format": source.fmt,
            "source_dtype": source.dtype, "arch": arch.name,
            "architectures": ",".join((source.hf_config or {}).get("architectures") or []),
            "max_abs_diff": report.max_diff if report else None}
    _refuse_existing(out, force)  # again: verifying took a while, the user may have saved one
    with atomic_write(out, "wb", fsync=True) as handle:
        torch.save({"state_dict": converted, "meta": meta}, handle)
    echo(f"wrote {out} ({len(converted)} tensors); use it as "
         f"init_cfg=dict(type='Pretrained', checkpoint={str(out)!r})")
    return out


def _refuse_existing(out: Path, force: bool) -> None:
    if out.is_dir():
        raise ConversionError(f"--to {out} is a folder; give a file name such as "
                              f"{out / 'mit_b2_converted_from_hf.pth'}")
    if out.exists() and not force:
        raise ConversionError(f"{out} exists: seglab does not overwrite it; choose another "
                              "--to, or --force")


def _shape_mismatch(arch: mit.MitArch, converted: dict[str, torch.Tensor]) -> str | None:
    """Which converted tensor does not fit mmseg's backbone of ``arch``."""
    expected = build_backbone(arch).state_dict()
    for name, tensor in converted.items():
        if name in expected and tuple(expected[name].shape) != tuple(tensor.shape):
            return (f"tensor for {name!r} has shape {list(tensor.shape)}, {arch.name} needs "
                    f"{list(expected[name].shape)}")
    return None
