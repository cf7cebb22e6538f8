"""``seglab weights convert``: randomly initialised Hugging Face and NVlabs MiT weights become
mmseg's, and mmseg's backbone loaded from the written file computes what the source model
computes. Nothing is downloaded: the sources are built here and saved as their tools save them.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    SegformerConfig,
    SegformerForImageClassification,
    SegformerForSemanticSegmentation,
    SegformerModel,
)

from seglab.cli import main
from seglab.errors import UserError
from seglab.weights import mit
from seglab.weights.convert import ConversionError, convert, convert_hint
from tests.conftest import REPO_ROOT, run_cli

SEED_ADE = REPO_ROOT / "configs" / "segformer" / "segformer_mit-b2_ade20k_v1.0.py"


def hf_source(folder: Path, arch: mit.MitArch, cls=SegformerForImageClassification,
              weights: str = "safetensors", seed: int = 0, shard_size: str | None = None,
              ) -> Path:
    """What ``save_pretrained`` writes for a randomly initialised MiT of ``arch``
    (``shard_size``: in shards of at most that size, with their index)."""
    torch.manual_seed(seed)
    config = SegformerConfig(hidden_sizes=list(arch.widths), depths=list(arch.depths),
                             num_labels=10)
    cls(config).save_pretrained(folder, **({"max_shard_size": shard_size} if shard_size else {}))
    if weights == "bin":  # what transformers < 4.35 wrote: same names, pickled
        torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    return folder


def max_stage_diffs(converted: Path, source_folder: Path, arch: mit.MitArch) -> list[float]:
    """mmseg's backbone, loaded from the written file the way a config's init_cfg loads it,
    vs transformers' SegformerModel from the source folder, on one random image."""
    from mmengine.runner import load_checkpoint
    from mmseg.models.backbones import MixVisionTransformer

    reference = SegformerModel.from_pretrained(source_folder).eval()
    eps = next(m.eps for m in reference.modules() if isinstance(m, torch.nn.LayerNorm))
    cfg = arch.backbone_cfg(ln_eps=eps)
    cfg.pop("type")
    backbone = MixVisionTransformer(**cfg).eval()
    load_checkpoint(backbone, str(converted), map_location="cpu", strict=True)
    image = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = backbone(image)
        theirs = reference(pixel_values=image, output_hidden_states=True).hidden_states
    assert [tuple(o.shape) for o in ours] == [tuple(t.shape) for t in theirs]
    return [float((o - t).abs().max()) for o, t in zip(ours, theirs, strict=True)]


@pytest.mark.parametrize(("size", "cls", "weights"), [
    ("mit-b0", SegformerForImageClassification, "safetensors"),
    ("mit-b2", SegformerForImageClassification, "bin"),
    ("mit-b2", SegformerModel, "safetensors"),
])
def test_hugging_face_weights_convert_to_the_same_stage_outputs(tmp_path, size, cls,
                                                                weights) -> None:
    arch = mit.ARCHS[size]
    source = hf_source(tmp_path / "src", arch, cls, weights)
    said: list[str] = []
    out = convert(str(source), checkpoints=tmp_path / "checkpoints", echo=said.append)
    # the seeds' file name, loadable without unpickling arbitrary objects
    assert out == tmp_path / "checkpoints" / f"mit_{size[4:]}_converted_from_hf.pth"
    _assert_converted(out, source, arch, said)


def _assert_converted(out: Path, source: Path, arch: mit.MitArch, said: list[str]) -> None:
    saved = torch.load(out, map_location="cpu", weights_only=True)
    assert len(saved["state_dict"]) == len(mit.tensor_plan(arch, "hf"))
    diffs = max_stage_diffs(out, source, arch)
    assert max(diffs) <= 1e-5, diffs
    text = "\n".join(said)
    total = len(saved["state_dict"])
    assert f"coverage: {total}/{total} backbone tensors converted; every source tensor used" \
        in text
    assert "stage outputs vs transformers' SegformerModel" in text


def test_a_segmentation_models_encoder_needs_a_name_of_its_own(tmp_path) -> None:
    """A fine-tuned SegformerForSemanticSegmentation is not ImageNet weights: it gets no
    default (seed) name, and converts with --to, its decode head dropped."""
    arch = mit.ARCHS["mit-b0"]
    source = hf_source(tmp_path / "src", arch, SegformerForSemanticSegmentation, "bin")
    with pytest.raises(ConversionError, match="not ImageNet weights.*give --to FILE"):
        convert(str(source), checkpoints=tmp_path / "checkpoints")
    said: list[str] = []
    out = convert(str(source), to=tmp_path / "ade_encoder.pth", echo=said.append)
    _assert_converted(out, source, arch, said)
    assert any("decode-head tensor(s) dropped" in line for line in said)


def test_a_lone_half_precision_weight_file_converts(tmp_path) -> None:
    """A weight file with no config.json beside it (the model is rebuilt from MiT's own
    numbers), saved in fp16: read, verified and written in fp32."""
    arch = mit.ARCHS["mit-b1"]
    source = hf_source(tmp_path / "src", arch)
    lone = tmp_path / "elsewhere" / "weights.safetensors"
    lone.parent.mkdir()
    save_file({k: v.half() for k, v in load_file(source / "model.safetensors").items()}, lone)
    said: list[str] = []
    out = convert(str(lone), to=tmp_path / "out.pth", echo=said.append)
    saved = torch.load(out, weights_only=True)
    assert saved["meta"]["source_dtype"] == "float16"
    assert {t.dtype for t in saved["state_dict"].values()} == {torch.float32}
    assert any("stage outputs vs transformers' SegformerModel" in line for line in said)


def as_nvlabs(hf_folder: Path) -> dict[str, torch.Tensor]:
    """The NVlabs release's names for a Hugging Face MiT (``mit_b*.pth``), written out by
    hand here so the test does not lean on seglab's own table."""
    state = {k.removeprefix("segformer."): v
             for k, v in load_file(hf_folder / "model.safetensors").items()}
    block_names = (("layer_norm_1", "norm1"), ("layer_norm_2", "norm2"),
                   ("attention.self.query", "attn.q"), ("attention.self.sr", "attn.sr"),
                   ("attention.self.layer_norm", "attn.norm"),
                   ("attention.output.dense", "attn.proj"), ("mlp.dense1", "mlp.fc1"),
                   ("mlp.dense2", "mlp.fc2"), ("mlp.dwconv.dwconv", "mlp.dwconv.dwconv"))
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "classifier":
            out[f"head.{parts[1]}"] = value
        elif parts[1] == "patch_embeddings":  # encoder.patch_embeddings.I.{proj,layer_norm}.P
            layer = {"proj": "proj", "layer_norm": "norm"}[parts[3]]
            out[f"patch_embed{int(parts[2]) + 1}.{layer}.{parts[4]}"] = value
        elif parts[1] == "layer_norm":  # encoder.layer_norm.I.P
            out[f"norm{int(parts[2]) + 1}.{parts[3]}"] = value
        else:  # encoder.block.I.J.rest
            block, rest = f"block{int(parts[2]) + 1}.{parts[3]}", ".".join(parts[4:])
            if rest.startswith(("attention.self.key.", "attention.self.value.")):
                continue  # NVlabs keeps k and v as one kv tensor, below
            for hf_name, nv_name in block_names:
                if rest.startswith(hf_name + "."):
                    out[f"{block}.{nv_name}{rest[len(hf_name):]}"] = value
            if rest.startswith("attention.self.query."):
                attn, p = ".".join(parts[:4]) + ".attention.self.", parts[-1]
                out[f"{block}.attn.kv.{p}"] = torch.cat([state[f"{attn}key.{p}"],
                                                         state[f"{attn}value.{p}"]])
    return out


def test_an_nvlabs_file_converts_like_mmsegs_own_converter_and_runs_the_same(tmp_path) -> None:
    arch = mit.ARCHS["mit-b0"]
    source = hf_source(tmp_path / "hf", arch)
    nvlabs = tmp_path / "mit_b0.pth"
    torch.save(as_nvlabs(source), nvlabs)
    said: list[str] = []
    out = convert(str(nvlabs), checkpoints=tmp_path / "checkpoints", echo=said.append)
    assert out.name == "mit_b0_converted_from_nvlabs.pth"
    assert max(max_stage_diffs(out, source, arch)) <= 1e-5
    text = "\n".join(said)
    assert "mmseg's own mit2mmseg converter: 160/160 tensors equal" in text
    assert "2 classifier/decode-head tensor(s) dropped" in text


def test_mmsegs_layer_norm_epsilon_is_reported_not_blamed_on_the_conversion(tmp_path) -> None:
    """transformers' MiT uses LayerNorm eps 1e-5, mmseg's (and the original's) 1e-6: the
    same weights give slightly different outputs, which is said as a note."""
    source = hf_source(tmp_path / "src", mit.ARCHS["mit-b0"])
    said: list[str] = []
    convert(str(source), to=tmp_path / "out.pth", echo=said.append)
    note = next(line for line in said if "note:" in line)
    assert "eps 1e-06" in note and "1e-05" in note


def test_without_transformers_an_nvlabs_file_is_checked_against_mmseg_only(tmp_path,
                                                                          monkeypatch) -> None:
    """No source model can run: the report says the outputs were not compared, and the file
    records no measured difference."""
    import seglab.weights.convert as convert_module

    def no_transformers(*args, **kwargs):
        raise ImportError("No module named 'transformers'")

    source = hf_source(tmp_path / "hf", mit.ARCHS["mit-b0"])
    nvlabs = tmp_path / "mit_b0.pth"
    torch.save(as_nvlabs(source), nvlabs)
    monkeypatch.setattr(convert_module, "_hf_model", no_transformers)
    said: list[str] = []
    out = convert(str(nvlabs), to=tmp_path / "out.pth", echo=said.append)
    assert any("stage outputs: not compared" in line for line in said)
    assert any("mit2mmseg converter: 160/160 tensors equal" in line for line in said)
    assert torch.load(out, weights_only=True)["meta"]["max_abs_diff"] is None
    with pytest.raises(ConversionError, match="needs transformers"):  # nothing to compare
        convert(str(source), to=tmp_path / "hf_out.pth")


def _drop(name: str):
    def edit(state: dict[str, torch.Tensor]) -> None:
        del state[name]
    return edit


def _add(name: str):
    def edit(state: dict[str, torch.Tensor]) -> None:
        state[name] = torch.zeros(3)
    return edit


@pytest.mark.parametrize(("edit", "message"), [
    (_drop("segformer.encoder.patch_embeddings.2.proj.weight"),
     r"'encoder\.patch_embeddings\.2\.proj\.weight' is missing"),
    (_drop("segformer.encoder.block.1.0.mlp.dense2.weight"),
     r"'encoder\.block\.1\.0\.mlp\.dense2\.weight' is missing"),
    (_add("segformer.encoder.block.0.0.adapter.weight"),
     r"'encoder\.block\.0\.0\.adapter\.weight' has no place"),
], ids=["missing-patch-embedding", "missing-tensor", "extra-tensor"])
def test_a_missing_or_extra_tensor_is_named(tmp_path, edit, message) -> None:
    source = hf_source(tmp_path / "src", mit.ARCHS["mit-b0"])
    state = load_file(source / "model.safetensors")
    edit(state)
    save_file(state, source / "model.safetensors")
    with pytest.raises(ConversionError, match=message):
        convert(str(source), to=tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()


def test_an_extra_prefix_is_named_with_the_fix(tmp_path) -> None:
    source = hf_source(tmp_path / "src", mit.ARCHS["mit-b0"])
    state = {f"model.{k}": v for k, v in load_file(source / "model.safetensors").items()}
    file = tmp_path / "prefixed.safetensors"
    save_file(state, file)
    with pytest.raises(ConversionError, match=r"prefix 'model\.segformer\.'.*"
                                              r"model\.segformer\.encoder\.patch_embeddings"):
        convert(str(file), to=tmp_path / "out.pth")


def test_the_wrong_arch_is_refused_naming_the_stage(tmp_path) -> None:
    source = hf_source(tmp_path / "src", mit.ARCHS["mit-b0"])
    with pytest.raises(ConversionError, match=r"--arch mit-b2 has 3 blocks in stage 1, the "
                                              r"source 2.*it is mit-b0"):
        convert(str(source), to=tmp_path / "out.pth", arch_name="mit-b2")


def test_a_truncated_download_is_refused(tmp_path) -> None:
    source = hf_source(tmp_path / "src", mit.ARCHS["mit-b0"], weights="bin")
    data = (source / "pytorch_model.bin").read_bytes()
    (source / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"not a readable PyTorch checkpoint \(truncated or "
                                        r"corrupt\?\)(.|\n)*re-download"):
        convert(str(source), to=tmp_path / "out.pth")


@pytest.mark.parametrize(("edit", "message"), [
    (lambda config: [config],
     r"config\.json: the file is a list, not a JSON object of model settings"),
    (lambda config: {**config, "hidden_sizes": "64"},
     r"config\.json: key 'hidden_sizes' is a string \(\"64\"\), expected a list of 4 whole "
     r"numbers"),
    (lambda config: {**config, "num_encoder_blocks": None},
     r"config\.json: key 'num_encoder_blocks' is null, expected a whole number"),
    (lambda config: {**config, "depths": [2, 2]},
     r"config\.json: key 'depths' is a list \(\[2, 2\]\), expected a list of 4"),
    (lambda config: {**config, "architectures": [1]},
     r"config\.json: key 'architectures' is a list \(\[1\]\), expected a list of class names"),
], ids=["list", "string-widths", "null-stages", "short-depths", "number-architecture"])
def test_a_malformed_config_json_is_named_with_its_key(tmp_path, edit, message) -> None:
    source = hf_source(tmp_path / "src", mit.ARCHS["mit-b0"])
    config = source / "config.json"
    config.write_text(json.dumps(edit(json.loads(config.read_text()))))
    with pytest.raises(ConversionError, match=message + r".*Fix: restore the file"):
        convert(str(source), to=tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()


def test_a_config_json_with_some_settings_only_converts(tmp_path) -> None:
    """What config.json leaves out transformers takes from its defaults: nothing to refuse."""
    arch = mit.ARCHS["mit-b1"]
    source = hf_source(tmp_path / "src", arch)
    (source / "config.json").write_text(json.dumps({"model_type": "segformer",
                                                    "hidden_sizes": list(arch.widths)}))
    said: list[str] = []
    _assert_converted(convert(str(source), to=tmp_path / "out.pth", echo=said.append), source,
                      arch, said)


def test_a_config_json_beside_an_nvlabs_file_is_not_read(tmp_path) -> None:
    """Only the Hugging Face layout has a config.json of its own: whatever lies beside an
    NVlabs release (here not even an object) is not its settings and stops nothing."""
    source = hf_source(tmp_path / "hf", mit.ARCHS["mit-b0"])
    (tmp_path / "config.json").write_text("[]")
    nvlabs = tmp_path / "mit_b0.pth"
    torch.save(as_nvlabs(source), nvlabs)
    assert convert(str(nvlabs), to=tmp_path / "out.pth", check=False,
                   echo=lambda line: None).is_file()


def test_a_sharded_folder_converts(tmp_path) -> None:
    arch = mit.ARCHS["mit-b0"]
    source = hf_source(tmp_path / "src", arch, shard_size="4MB")
    assert len(list(source.glob("model-*.safetensors"))) > 1  # really sharded
    said: list[str] = []
    out = convert(str(source), to=tmp_path / "out.pth", echo=said.append)
    _assert_converted(out, source, arch, said)


@pytest.mark.parametrize(("weights", "index", "message"), [
    ("safetensors", {"metadata": {}, "weight_map": ["model-00001-of-00002.safetensors"]},
     r"key 'weight_map' is a list \(\[\"model-00001-of-00002\.safetensors\"\]\); it must "
     r"be an object mapping each tensor name to its shard file"),
    ("safetensors", {"metadata": {"total_size": 1}}, r"key 'weight_map' is missing"),
    ("bin", {"weight_map": {"encoder.layer_norm.0.weight": 3}},
     r"key 'weight_map' maps tensor 'encoder\.layer_norm\.0\.weight' to a number \(3\), not "
     r"a shard file name"),
    ("bin", [], r"the index is a list, not a JSON object with a 'weight_map'"),
    ("bin", {"weight_map": {"encoder.layer_norm.0.weight": "pytorch_model-00002.bin"}},
     r"key 'weight_map' names the shard 'pytorch_model-00002\.bin', which is not in"),
], ids=["list", "missing", "not-a-file-name", "not-an-object", "missing-shard"])
def test_a_malformed_shard_index_is_one_message_naming_its_key(tmp_path, capsys, weights, index,
                                                               message) -> None:
    source = hf_source(tmp_path / "src", mit.ARCHS["mit-b0"], weights=weights)
    name = {"safetensors": "model.safetensors.index.json",
            "bin": "pytorch_model.bin.index.json"}[weights]
    (source / name).write_text(json.dumps(index))
    assert main(["weights", "convert", str(source), "--to", str(tmp_path / "out.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"seglab: error: {source / name}: "), err
    assert re.search(message + r".*Fix: ", err) and "Traceback" not in err, err
    assert not (tmp_path / "out.pth").exists()


def test_an_existing_output_is_never_overwritten(tmp_path) -> None:
    source = hf_source(tmp_path / "src", mit.ARCHS["mit-b0"])
    out = tmp_path / "mine.pth"
    out.write_bytes(b"a user's file")
    with pytest.raises(ConversionError, match="exists: seglab does not overwrite it"):
        convert(str(source), to=out)
    assert out.read_bytes() == b"a user's file"


def test_a_hub_id_offline_says_how_to_get_it(tmp_path, monkeypatch) -> None:
    from huggingface_hub import constants

    # huggingface_hub reads HF_HUB_OFFLINE / HF_HOME when imported: set its constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))  # empty
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConversionError, match=r"`hf download nvidia/mit-b2 "
                                              r"--local-dir checkpoints/hf/mit-b2`"):
        convert("nvidia/mit-b2")
    assert not (tmp_path / "hf_cache").exists() or not any((tmp_path / "hf_cache").iterdir())


def test_a_mistyped_local_path_is_not_taken_for_a_hub_id(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ConversionError, match="checkpoints/mit_b2.safetensors: no such file"):
        convert("checkpoints/mit_b2.safetensors")


@pytest.mark.slow
def test_the_cli_converts_and_inspect_reports_full_coverage_of_the_seed_config(tmp_path) -> None:
    source = hf_source(tmp_path / "src", mit.ARCHS["mit-b2"])
    converted = run_cli("weights", "convert", str(source), "--dir", str(tmp_path / "ck"))
    assert converted.returncode == 0, converted.stderr
    out = tmp_path / "ck" / "mit_b2_converted_from_hf.pth"
    assert f"wrote {out}" in converted.stdout
    inspected = run_cli("weights", "inspect", str(out), "--config", str(SEED_ADE))
    assert inspected.returncode == 0, inspected.stderr
    assert "layout: mmseg MixVisionTransformer (MiT) weights" in inspected.stdout
    assert "tensors: 300 (" in inspected.stdout
    assert "pretrained coverage: 100.0% of the backbone's parameters" in inspected.stdout
    again = run_cli("weights", "convert", str(source), "--dir", str(tmp_path / "ck"))
    assert again.returncode == 2 and "does not overwrite" in again.stderr
    assert again.stderr.count("\n") <= 2  # one message, no traceback


def test_the_seed_file_names_point_to_the_command_that_makes_them() -> None:
    assert convert_hint("checkpoints/mit_b2_converted_from_hf.pth") == (
        "seglab weights convert nvidia/mit-b2 --to checkpoints/mit_b2_converted_from_hf.pth")
    assert convert_hint("checkpoints/mit_b0_converted_from_nvlabs.pth").startswith(
        "seglab weights convert mit_b0.pth")
    assert convert_hint("checkpoints/resnet50_v1c.pth") is None


@pytest.mark.slow
def test_a_seed_segformer_config_trains_from_the_converted_file_with_full_coverage(
        tmp_path, monkeypatch) -> None:
    from mmengine.runner import Runner

    import seglab.register  # noqa: F401
    from seglab.config.adapt import adapt_to_device
    from seglab.config.loading import load_config
    from seglab.data.synth import write_synth_dataset
    from seglab.engine.hooks.pretrained_coverage_hook import PretrainedCoverageHook
    from seglab.testing.smoke import smoke_config

    source = hf_source(tmp_path / "src", mit.ARCHS["mit-b2"])
    monkeypatch.chdir(tmp_path)  # the seed config reads checkpoints/ relative to here
    convert(str(source), checkpoints=Path("checkpoints"), echo=lambda line: None)
    ade = write_synth_dataset("ade20k", tmp_path / "data", num_train=4, num_val=2, seed=3)
    cfg = smoke_config(load_config(SEED_ADE), {"ade20k": str(ade.root)}, str(tmp_path / "w"),
                       pretrained=True)
    adapt_to_device(cfg, launcher="none")
    # what seglab train adds; at 1.0 it stops the run unless every backbone value loaded
    cfg.custom_hooks = [*cfg.get("custom_hooks", []),
                        dict(type="PretrainedCoverageHook", min_coverage=1.0)]
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2
    (hook,) = [h for h in runner.hooks if isinstance(h, PretrainedCoverageHook)]
    assert hook.coverage.fraction == 1.0 and hook.coverage.unused == 0
    shutil.rmtree(tmp_path / "w", ignore_errors=True)
