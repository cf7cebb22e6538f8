"""`seglab data doctor` finds each injected defect and nothing on a clean dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.data.synth import write_synth_dataset
from seglab.doctor.dataset import (
    DataDoctorReport,
    DatasetSpec,
    config_for_target,
    run_doctor,
    specs_from_config,
)
from seglab.doctor.finding import Finding
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("doctor")
    return {"voc": write_synth_dataset("voc", root, num_train=6, num_val=4, seed=9).root,
            "ade20k": write_synth_dataset("ade20k", root, num_train=6, num_val=4, seed=9).root}


def _doctor(root: Path) -> DataDoctorReport:
    return run_doctor(specs_from_config(config_for_target(root, None)))


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
