"""`seglab data doctor` finds each injected defect and nothing on a clean dataset."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.cli import main
from seglab.config.loading import load_config
from seglab.data.synth import write_synth_dataset
from seglab.doctor import file_check
from seglab.doctor.dataset import (
    DataDoctorReport,
    DatasetSpec,
    config_for_target,
    run_doctor,
    specs_from_config,
    summary_text,
)
from seglab.doctor.finding import Finding
from tests.conftest import REPO_ROOT, run_cli
from tests.doctor.spoil import (
    SPOILERS,
    copy_dataset,
    count_decodes,
    first_id,
    truncated_jpeg,
)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("doctor")
    return {"voc": write_synth_dataset("voc", root, num_train=6, num_val=4, seed=9).root,
            "ade20k": write_synth_dataset("ade20k", root, num_train=6, num_val=4, seed=9).root}


def _doctor(root: Path, **options) -> DataDoctorReport:
    return run_doctor(specs_from_config(config_for_target(root, None)), **options)


def _findings(result: DataDoctorReport) -> list[Finding]:
    return [f for d in result.datasets for f in d.findings]


@pytest.mark.parametrize("layout", ["voc", "ade20k"])
def test_clean_dataset_has_no_findings(clean, layout) -> None:
    result = _doctor(clean[layout])
    assert _findings(result) == [] and result.errors == result.warnings == []
    assert all(d.images > 0 and sum(d.class_pixels) > 0 for d in result.datasets)


@pytest.mark.slow
def test_each_injected_voc_defect_is_reported(clean, tmp_path) -> None:
    root = tmp_path / "VOC2012"
    shutil.copytree(clean["voc"], root)
    masks = root / "SegmentationClass"
    ids = (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    (masks / f"{ids[0]}.png").unlink()                                        # pairing
    Image.open(masks / f"{ids[1]}.png").resize((7, 5)).save(masks / f"{ids[1]}.png")  # size
    Image.open(masks / f"{ids[2]}.png").convert("RGB").save(masks / f"{ids[2]}.png")  # colour
    labels = np.asarray(Image.open(masks / f"{ids[3]}.png")).copy()
    labels[0, 0] = 200                                                        # out of range
    Image.fromarray(labels).save(masks / f"{ids[3]}.png")
    found = {(f.rule, Path(f.where).stem) for f in _findings(_doctor(root))}
    assert found == {("pairing", ids[0]), ("size", ids[1]), ("mask-mode", ids[2]),
                     ("label-range", ids[3])}
    report = tmp_path / "doctor.json"
    out = run_cli("data", "doctor", str(root), "--json", str(report))
    assert out.returncode == 1 and "4 error(s)" in out.stdout and "Fix:" in out.stdout
    assert json.loads(report.read_text())["errors"] == 4


def test_one_based_labels_without_reduce_zero_label_are_caught(clean, tmp_path) -> None:
    ann = tmp_path / "annotations"
    shutil.copytree(clean["ade20k"] / "annotations" / "validation", ann)
    first = sorted(ann.glob("*.png"))[0]
    labels = np.asarray(Image.open(first)).copy()
    labels[0, 0] = 150  # ADE20K's last class, legal only with reduce_zero_label=True
    Image.fromarray(labels).save(first)
    spec = dict(name="val[0] ADE20KDataset", img_dir=clean["ade20k"] / "images" / "validation",
                seg_dir=ann, ids=None, classes=tuple(str(i) for i in range(150)))
    assert _findings(run_doctor([DatasetSpec(**spec, reduce_zero_label=True)])) == []
    (finding,) = _findings(run_doctor([DatasetSpec(**spec, reduce_zero_label=False)]))
    assert finding.rule == "label-range" and "reduce_zero_label=True" in finding.message


def test_full_ade20k_release_folder_is_explained(tmp_path) -> None:
    from seglab.errors import UserError

    full = tmp_path / "ADE20K_2021_17_01"
    full.mkdir()
    (full / "index_ade20k.pkl").write_bytes(b"")
    with pytest.raises(UserError, match="full ADE20K release.*ADEChallengeData2016.zip"):
        config_for_target(full, None)


@pytest.mark.parametrize("spoil", sorted(SPOILERS))
def test_each_spoiled_file_is_one_error_naming_it(clean, tmp_path, spoil) -> None:
    """Truncated, empty, wrong-size, colour, out-of-range or missing: a finding with the
    file and the fix, never an exception."""
    root = copy_dataset(clean["voc"], tmp_path / "VOC2012")
    path, rule = SPOILERS[spoil](root, first_id(root))
    result = _doctor(root, progress=None)
    assert [(f.rule, Path(f.where)) for f in result.findings] == [(rule, path)]
    assert result.errors[0].fix


def test_data_doctor_command_reports_a_truncated_jpeg(clean, tmp_path, capsys) -> None:
    root = copy_dataset(clean["voc"], tmp_path / "VOC2012")
    path, _ = truncated_jpeg(root, first_id(root))
    assert main(["data", "doctor", str(root)]) == 1
    out, err = capsys.readouterr()
    assert f"ERROR [unreadable] {path}: image cannot be decoded" in out
    assert "Fix:" in out and "Traceback" not in err
    assert "data check: 20/20 files" in err  # 6 + 4 pairs


def test_second_check_decodes_only_what_changed(clean, tmp_path, monkeypatch) -> None:
    root = copy_dataset(clean["voc"], tmp_path / "VOC2012")
    first = _doctor(root, progress=None)
    assert (first.files_decoded, first.files_cached) == (20, 0)
    assert (root / file_check.CACHE_NAME).is_file()
    decoded = count_decodes(monkeypatch)
    again = _doctor(root, progress=None)
    assert decoded == [] and (again.files_decoded, again.files_cached) == (0, 20)
    assert again.to_dict() == first.to_dict()
    path, _ = truncated_jpeg(root, first_id(root, "val"))
    spoiled = _doctor(root, progress=None)
    assert decoded == [str(path)] and [Path(f.where) for f in spoiled.errors] == [path]


def test_read_only_data_root_caches_in_the_user_cache(clean, tmp_path, monkeypatch) -> None:
    root = copy_dataset(clean["voc"], tmp_path / "VOC2012")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    monkeypatch.setattr(file_check, "_writable", lambda folder: False)
    _doctor(root, progress=None)
    assert not (root / file_check.CACHE_NAME).exists()
    (cache,) = (tmp_path / "home-cache" / "seglab" / "data-check").glob("*.json")
    assert _doctor(root, progress=None).files_decoded == 0


def test_a_damaged_cache_is_ignored(clean, tmp_path) -> None:
    root = copy_dataset(clean["voc"], tmp_path / "VOC2012")
    (root / file_check.CACHE_NAME).write_text('{"version": 1, "files": ')
    assert _doctor(root, progress=None).files_decoded == 20


@pytest.mark.slow
def test_a_process_pool_decodes_the_same_facts_with_progress(clean, tmp_path,
                                                             monkeypatch) -> None:
    root = copy_dataset(clean["voc"], tmp_path / "VOC2012")
    serial = _doctor(root, use_cache=False, progress=None)
    monkeypatch.setattr(file_check, "PARALLEL_FROM", 1)
    lines: list[str] = []
    pooled = _doctor(root, use_cache=False, workers=2, progress=lines.append)
    assert pooled.to_dict() == serial.to_dict()
    assert "decoding 20 on 2 process(es)" in lines[0]
    assert any(line.endswith("/20 files") for line in lines[1:-1])
    assert lines[-1].startswith("data check: 20/20 files in ")


def test_a_second_process_waits_for_the_first_ones_check(clean, tmp_path) -> None:
    """The ranks of a torchrun job take turns on a data root: one decodes, the others
    read its cache afterwards instead of all decoding at once."""
    import threading
    import time

    root = copy_dataset(clean["voc"], tmp_path / "VOC2012")
    specs = specs_from_config(config_for_target(root, None))
    lines: list[str] = []
    with file_check._turn(root, None):  # another process checking this root
        waiter = threading.Thread(target=run_doctor, args=(specs,),
                                  kwargs={"progress": lines.append})
        waiter.start()
        deadline = time.monotonic() + 10
        while not lines and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert waiter.is_alive() and lines == [
            f"data check: waiting for another seglab process checking {root}"]
    waiter.join(timeout=30)
    assert not waiter.is_alive() and lines[-1].startswith("data check: 20/20 files")


# ---------------------------------------------------------------- the datasets as mmseg reads them

VOC_FRAGMENT = REPO_ROOT / "configs" / "_base_" / "datasets" / "pascal_voc12.py"


def test_unprepared_data_is_a_user_error_naming_the_fix(tmp_path, capsys) -> None:
    """mmseg's VOC dataset asserts its folders exist with no message: the doctor says
    which folder, under which data root, and how to get it; ``seglab doctor`` falls
    back to the published size."""
    from seglab.doctor.plan import describe_dataset

    absent = tmp_path / "VOC2012"
    assert main(["data", "doctor", str(VOC_FRAGMENT), "--data-root", str(absent)]) == 2
    err = capsys.readouterr().err
    assert f"image folder {absent / 'JPEGImages'} not found (data root {absent})" in err
    assert "seglab data prepare voc --archive" in err and "--data-root DIR" in err
    assert "Traceback" not in err
    info = describe_dataset(load_config(VOC_FRAGMENT, data_root=str(absent)).train_dataloader
                            .dataset)
    assert (info.num_classes, info.images, info.images_source) == (21, 1464, "published")


def test_classes_the_dataset_does_not_have_are_a_user_error(clean) -> None:
    from seglab.errors import UserError

    cfg = config_for_target(clean["voc"], None)
    cfg.train_dataloader.dataset.metainfo = dict(classes=("background", "dragon"))
    with pytest.raises(UserError, match=r"train\[0\] PascalVOCDataset: metainfo.classes.*dragon"):
        specs_from_config(cfg)


def test_dataset_wrappers_are_opened_up(clean) -> None:
    """mmseg's DRIVE/STARE/HRF configs wrap theirs in a RepeatDataset."""
    from mmengine.config import ConfigDict

    from seglab.config.walk import leaf_datasets

    nested = ConfigDict(type="MultiImageMixDataset", dataset=dict(
        type="ConcatDataset", datasets=[dict(type="A"), dict(
            type="mmengine.RepeatDataset", times=2, dataset=dict(
                type="ClassBalancedDataset", oversample_thr=0.1, dataset=dict(type="B")))]))
    assert [leaf.type for leaf in leaf_datasets(nested)] == ["A", "B"]
    cfg = config_for_target(clean["voc"], None)
    cfg.train_dataloader.dataset = dict(type="RepeatDataset", times=40,
                                        dataset=cfg.train_dataloader.dataset)
    specs = specs_from_config(cfg)
    assert [s.name for s in specs] == ["train[0] PascalVOCDataset", "val[0] PascalVOCDataset"]
    assert run_doctor(specs, progress=None).findings == []


def _load_annotations(mask: Path, spec: DatasetSpec) -> set[int]:
    """The labels mmseg's LoadAnnotations makes of ``mask`` for ``spec``'s dataset."""
    from mmseg.datasets.transforms import LoadAnnotations

    results = LoadAnnotations()(dict(seg_map_path=str(mask), seg_fields=[],
                                     reduce_zero_label=spec.reduce_zero_label,
                                     label_map=spec.label_map))
    return set(np.unique(results["gt_seg_map"]).tolist())


@pytest.mark.parametrize("layout", ["voc", "ade20k"])
def test_a_subset_of_the_classes_maps_the_others_to_ignore(clean, layout) -> None:
    """``metainfo.classes`` a subset of the dataset's: mmseg maps the other labels to 255
    (after reduce_zero_label), so they are not out of range."""
    import dataclasses

    cfg = config_for_target(clean[layout], None)
    classes = specs_from_config(cfg)[0].classes[:3]
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.dataset.metainfo = dict(classes=classes)
    specs = specs_from_config(cfg)
    result = run_doctor(specs, progress=None)
    assert result.findings == [] and all(d.num_classes == 3 for d in result.datasets)
    unmapped = [dataclasses.replace(s, label_map=None) for s in specs]
    assert {f.rule for f in run_doctor(unmapped, progress=None).findings} == {"label-range"}
    spec = specs[1]
    for _, mask in spec.pairs():
        raw = np.unique(np.asarray(Image.open(mask))).tolist()
        assert {spec.label(v) for v in raw} == _load_annotations(mask, spec)


def test_a_test_set_without_masks_has_its_images_checked(clean, tmp_path) -> None:
    """A submission's test set (``format_only``): no ``seg_map_path``, or a pipeline
    without ``LoadAnnotations``, and no mask folder."""
    root = copy_dataset(clean["voc"], tmp_path / "VOC2012")
    shutil.rmtree(root / "SegmentationClass")
    path, _ = truncated_jpeg(root, first_id(root, "val"))
    cfg = config_for_target(root, None)
    test = cfg.test_dataloader.dataset
    test.pipeline = [step for step in test.pipeline if step.type != "LoadAnnotations"]
    for data_prefix in (dict(img_path="JPEGImages"), test.data_prefix):
        test.data_prefix = data_prefix
        (spec,) = specs_from_config(cfg, ("test",))
        assert spec.seg_dir is None
        result = run_doctor([spec], progress=None)
        assert [(f.rule, Path(f.where)) for f in result.findings] == [("unreadable", path)]
        assert result.datasets[0].images == 4
        assert "no masks (images checked only)" in summary_text(result)


def test_an_image_folder_is_listed_as_mmseg_lists_it(tmp_path) -> None:
    """Without a split list: recursively (Cityscapes' city folders), hidden files left out,
    in mmseg's order; ``indices`` as mmengine takes them."""
    from mmseg.datasets import BaseSegDataset

    images, masks = tmp_path / "img", tmp_path / "ann"
    for name in ("a", "a-b", "sub/c", "sub/deeper/d", ".hidden", ".hdir/e", "f_leftImg8bit"):
        for folder, suffix in ((images, ".jpg"), (masks, ".png")):
            (folder / f"{name}{suffix}").parent.mkdir(parents=True, exist_ok=True)
            (folder / f"{name}{suffix}").write_bytes(b"")
    (images / "g.png").write_bytes(b"")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "h.jpg").write_bytes(b"")
    (images / "linked").symlink_to(tmp_path / "elsewhere")  # a linked folder is followed
    for indices in (None, 3, -2, [0, 2]):
        spec = DatasetSpec("train[0] X", images, masks, None, ("bg",), False, indices=indices)
        mmseg = BaseSegDataset(data_prefix=dict(img_path=str(images), seg_map_path=str(masks)),
                               img_suffix=".jpg", seg_map_suffix=".png", indices=indices)
        assert spec.pairs() == [(Path(info["img_path"]), Path(info["seg_map_path"]))
                                for info in (mmseg.get_data_info(i) for i in range(len(mmseg)))]
    assert len(DatasetSpec("x", images, masks, None, ("bg",), False).pairs()) == 7


def test_a_symlink_loop_in_an_image_folder_is_a_finding_naming_it(clean, tmp_path,
                                                                  capsys) -> None:
    """An image folder without a split list (ADE20K's) is listed by mmengine, which raised
    on a link to itself, and on a link to a folder holding it once 40 links deep: a
    traceback. Each is an error naming the link; the other images are still checked."""
    root = copy_dataset(clean["ade20k"], tmp_path / "ADEChallengeData2016")
    images = root / "images" / "training"
    (images / "loop").symlink_to(images)
    (images / "x.jpg").symlink_to("x.jpg")
    assert main(["data", "doctor", str(root)]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert (f"ERROR [symlink-loop] {images / 'loop'}: symbolic link to "
            f"{os.path.realpath(images)}, a folder that holds it") in out
    assert (f"ERROR [symlink-loop] {images / 'x.jpg'}: symbolic link that loops "
            "(x.jpg -> x.jpg: ") in out
    assert out.count("Fix: delete the link") == 2
    assert "train[0] ADE20KDataset: 6 images" in out and "2 error(s), 0 warning(s)" in out


def test_later_ranks_announce_only_the_decoding_they_do(clean, tmp_path, capsys) -> None:
    """``seglab train`` under torchrun: rank 0 prints progress, any other rank that ends up
    decoding says so (start and end), a rank that reads the cache prints nothing."""
    from seglab.doctor.dataset import check_data

    root = copy_dataset(clean["voc"], tmp_path / "VOC2012")
    cfg = config_for_target(root, None)
    check_data(cfg, "voc.py", ("val",), progress=False)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "decoding 8 on 1 process(es)" in lines[0]
    assert lines[1].startswith("data check: 8/8 files in ")
    check_data(cfg, "voc.py", ("val",), progress=False)
    assert capsys.readouterr().err == ""
    check_data(cfg, "voc.py", ("val",), progress=True)
    assert capsys.readouterr().err.startswith("data check: 8/8 files in ")
