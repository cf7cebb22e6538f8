"""Both doctors report one kind of finding and print it as one kind of line.

``seglab doctor CONFIG``, ``seglab data doctor`` and the check ``seglab train``
runs before training all print ``SEVERITY [rule] where: message. Fix: fix``
through ``seglab.doctor.finding``; their JSON files keep their own field names.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from seglab.cli import main
from seglab.config.loading import load_config
from seglab.data.synth import write_synth_dataset
from seglab.doctor.config_doctor import examine_config
from seglab.doctor.dataset import config_for_target, run_doctor, specs_from_config, write_json
from seglab.doctor.finding import Finding, count_line, finding_line
from tests.doctor.test_config_doctor import UPERNET_VOC, write_config

LINE = re.compile(r"^(ERROR|WARNING|INFO) \[[a-z0-9-]+\] \S[^:]*: .+\. Fix: .+$")


@pytest.fixture(scope="module")
def broken_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VOC folder with one mask at the wrong size."""
    clean = write_synth_dataset("voc", tmp_path_factory.mktemp("clean"), num_train=4,
                                num_val=2, seed=3).root
    root = tmp_path_factory.mktemp("broken") / "VOC2012"
    shutil.copytree(clean, root)
    first = (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]
    mask = root / "SegmentationClass" / f"{first}.png"
    Image.open(mask).resize((7, 5)).save(mask)
    return root


@pytest.fixture(scope="module")
def infinite_sampler(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("config"), UPERNET_VOC,
                        "train_dataloader = dict(sampler=dict(type='InfiniteSampler'))")


def _finding_lines(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines()
            if line.strip().startswith(("ERROR ", "WARNING ", "INFO "))]


def test_both_doctors_print_their_findings_through_one_formatter(
        broken_voc: Path, infinite_sampler: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = run_doctor(specs_from_config(config_for_target(broken_voc, None)))
    config = examine_config(load_config(infinite_sampler), str(infinite_sampler))
    assert data.findings and config.findings
    assert all(type(f) is Finding for f in data.findings + config.findings)

    assert main(["data", "doctor", str(broken_voc)]) == 1
    data_out = capsys.readouterr().out
    assert main(["doctor", str(infinite_sampler)]) == 1
    config_out = capsys.readouterr().out
    for out, findings in ((data_out, data.findings), (config_out, config.findings)):
        lines = _finding_lines(out)
        assert lines == [finding_line(f) for f in findings]
        assert all(LINE.match(line) for line in lines), lines
        assert out.rstrip().endswith(count_line(findings))
    assert "ERROR [size] " in data_out and "ERROR [sampler-loop] " in config_out


def test_train_prints_the_same_lines_as_seglab_doctor(infinite_sampler: Path) -> None:
    from seglab.engine.runner import _run_doctor

    cfg = load_config(infinite_sampler)
    _, logged = _run_doctor(cfg, str(infinite_sampler), "none", ignore_errors=True)
    report = examine_config(load_config(infinite_sampler), str(infinite_sampler))
    assert logged == [f"doctor: {finding_line(f)}" for f in report.findings
                      if f.severity != "info"]


def test_json_files_keep_each_doctors_field_names(broken_voc: Path, tmp_path: Path,
                                                   infinite_sampler: Path) -> None:
    out = tmp_path / "data.json"
    write_json(run_doctor(specs_from_config(config_for_target(broken_voc, None))), out)
    data = json.loads(out.read_text())
    assert list(data) == ["datasets", "errors", "warnings", "classes_absent_from_val"]
    assert data["errors"] == 1 and data["warnings"] == 0
    (finding,) = [f for d in data["datasets"] for f in d["findings"]]
    assert list(finding) == ["severity", "check", "file", "message", "fix"]
    assert list(data["datasets"][0]) == ["name", "images", "num_classes", "reduce_zero_label",
                                         "class_pixels", "class_images", "findings"]
    config = examine_config(load_config(infinite_sampler), str(infinite_sampler)).to_dict()
    assert list(config["findings"][0]) == ["severity", "rule", "key", "message", "fix"]
