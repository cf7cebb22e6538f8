"""`seglab train`/`test` decode every image and mask first: a bad file stops the run before
the model is built, with the file named, exit 2 and nothing in the work dir."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from seglab.cli import main
from seglab.data.synth import write_synth_dataset
from seglab.doctor import file_check
from seglab.engine import runner as engine
from tests.conftest import REPO_ROOT, VOC_DEMO
from tests.doctor.spoil import (
    SPOILERS,
    copy_dataset,
    count_decodes,
    first_id,
    truncated_jpeg,
)


class Built(Exception):
    """Raised in place of building the runner: the run got past every check."""


@pytest.fixture(scope="module")
def clean_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synth_dataset("voc", tmp_path_factory.mktemp("data_check"), num_train=8,
                               num_val=4).root


@pytest.fixture
def no_build(monkeypatch: pytest.MonkeyPatch) -> None:
    def build(cfg):
        raise Built

    monkeypatch.setattr(engine, "_build_runner", build)


def _train_argv(root: Path, work_dir: Path) -> list[str]:
    return ["train", str(VOC_DEMO), "--data-root", str(root), "--work-dir", str(work_dir)]


@pytest.mark.parametrize("spoil", sorted(SPOILERS))
def test_train_stops_before_building_on_a_spoiled_file(clean_voc, tmp_path, no_build, capsys,
                                                       spoil) -> None:
    root = copy_dataset(clean_voc, tmp_path / "VOC2012")
    path, rule = SPOILERS[spoil](root, first_id(root))
    work_dir = tmp_path / "work"
    assert main(_train_argv(root, work_dir)) == 2
    err = capsys.readouterr().err
    assert "seglab data check found 1 error(s)" in err, err
    assert f"ERROR [{rule}] {path}: " in err and "--skip-data-check" in err
    assert "Traceback" not in err
    assert not work_dir.exists()


def test_clean_data_passes_and_the_second_run_reads_the_cache(clean_voc, tmp_path, no_build,
                                                              monkeypatch) -> None:
    root = copy_dataset(clean_voc, tmp_path / "VOC2012")
    run = dict(data_root=str(root), work_dir=str(tmp_path / "work"))
    with pytest.raises(Built):
        engine.train(str(VOC_DEMO), **run)
    assert (root / file_check.CACHE_NAME).is_file()
    decoded = count_decodes(monkeypatch)
    with pytest.raises(Built):
        engine.train(str(VOC_DEMO), **run)
    assert decoded == []


def test_skip_data_check_starts_on_spoiled_data(clean_voc, tmp_path, no_build) -> None:
    root = copy_dataset(clean_voc, tmp_path / "VOC2012")
    truncated_jpeg(root, first_id(root))
    with pytest.raises(Built):
        engine.train(str(VOC_DEMO), data_root=str(root), work_dir=str(tmp_path / "work"),
                     skip_data_check=True)
    assert not (root / file_check.CACHE_NAME).exists()


def test_test_checks_the_test_split(clean_voc, tmp_path, no_build, capsys) -> None:
    root = copy_dataset(clean_voc, tmp_path / "VOC2012")
    path, _ = truncated_jpeg(root, first_id(root, "val"))  # the demo tests on val
    checkpoint = tmp_path / "epoch_1.pth"
    checkpoint.write_bytes(b"never read")
    work_dir = tmp_path / "work"
    assert main(["test", str(VOC_DEMO), str(checkpoint), "--data-root", str(root),
                 "--work-dir", str(work_dir)]) == 2
    assert f"ERROR [unreadable] {path}: " in capsys.readouterr().err
    assert not work_dir.exists()
    with pytest.raises(Built):
        engine.test(str(VOC_DEMO), str(checkpoint), data_root=str(root),
                    work_dir=str(work_dir), skip_data_check=True)


@pytest.mark.slow
def test_every_rank_of_dist_train_stops_on_a_spoiled_file(clean_voc, tmp_path) -> None:
    """Each rank checks (taking turns on the cache) and refuses alike: torchrun's job
    fails with the file named and no rank has built a model or made the work dir."""
    root = copy_dataset(clean_voc, tmp_path / "VOC2012")
    path, _ = truncated_jpeg(root, first_id(root))
    work_dir = tmp_path / "work"
    config, *options = _train_argv(root, work_dir)[1:]
    out = subprocess.run(
        ["bash", str(REPO_ROOT / "tools" / "dist_train.sh"), config, "2", *options],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode != 0
    # torchrun may stop the second rank as soon as the first one fails
    assert f"ERROR [unreadable] {path}: " in out.stderr, out.stderr[-3000:]
    assert not work_dir.exists()
