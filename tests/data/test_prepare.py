"""`seglab data prepare` on small archives in the real download formats."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.data.prepare import STAGING, THROTTLE_ENV, prepare_ade20k, prepare_sbd, prepare_voc
from seglab.data.synth import write_archives
from seglab.errors import UserError
from tests.conftest import REPO_ROOT

NUM_TRAIN, NUM_VAL = 6, 3


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_archives(tmp_path_factory.mktemp("archives"), NUM_TRAIN, NUM_VAL, seed=5)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): _md5(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _dataset_len(config: str, split: str, data_root: Path) -> int:
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    from seglab.config.loading import load_config

    init_default_scope("mmseg")
    cfg = load_config(REPO_ROOT / "configs" / config, data_root=str(data_root))
    return len(DATASETS.build(cfg[f"{split}_dataloader"].dataset))


@pytest.mark.slow
def test_prepared_datasets_load_in_their_configs(archives, tmp_path) -> None:
    voc = prepare_voc(archives["voc"], tmp_path, checksum=_md5(archives["voc"]))
    assert voc.counts == {"train": NUM_TRAIN, "val": NUM_VAL}
    assert _dataset_len("upernet/upernet_r50_voc12_v1.0.py", "train", voc.target) == NUM_TRAIN
    assert _dataset_len("upernet/upernet_r50_voc12_v1.0.py", "val", voc.target) == NUM_VAL

    sbd = prepare_sbd(archives["sbd"], tmp_path, checksum=_md5(archives["sbd"]), nproc=2)
    sets = voc.target / "ImageSets" / "Segmentation"
    val = set((sets / "val.txt").read_text().split())
    train = set((sets / "train.txt").read_text().split())
    aug = set((sets / "aug.txt").read_text().split())
    trainaug = set((sets / "trainaug.txt").read_text().split())
    assert not (aug | trainaug) & val, "a validation image leaked into training"
    assert trainaug == train | aug and sbd.counts["trainaug"] == 2 * NUM_TRAIN
    assert _dataset_len("upernet/upernet_r50_voc12aug_v2.0.py", "train",
                        voc.target) == len(train) + len(aug)

    ade = prepare_ade20k(archives["ade20k"], tmp_path, skip_checksum=True)
    assert ade.counts == {"training": NUM_TRAIN, "validation": NUM_VAL}
    config = "segformer/segformer_mit-b2_ade20k_v1.0.py"
    assert _dataset_len(config, "train", ade.target) == NUM_TRAIN
    assert _dataset_len(config, "val", ade.target) == NUM_VAL
    assert not (tmp_path / STAGING).exists()


def test_rerun_is_a_no_op(archives, tmp_path) -> None:
    prepare_voc(archives["voc"], tmp_path, skip_checksum=True)
    before = _snapshot(tmp_path)
    again = prepare_voc(archives["voc"], tmp_path, skip_checksum=True)
    assert again.extracted == 0 and again.skipped > 0 and _snapshot(tmp_path) == before


@pytest.mark.slow  # a subprocess CLI: not in make test-fast
def test_killed_prepare_resumes_to_identical_output(archives, tmp_path) -> None:
    reference = tmp_path / "reference"
    prepare_voc(archives["voc"], reference, skip_checksum=True)
    data = tmp_path / "interrupted"
    command = [sys.executable, "-m", "seglab.cli", "data", "prepare", "voc", "--archive",
               str(archives["voc"]), "--data-dir", str(data), "--skip-checksum"]
    proc = subprocess.Popen(command, env={**os.environ, THROTTLE_ENV: "0.2"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    staging = data / STAGING / "voc"
    deadline = time.monotonic() + 120
    while len([p for p in staging.rglob("*") if p.is_file()]) < 3:
        assert time.monotonic() < deadline and proc.poll() is None, "never got mid-way"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (data / "VOCdevkit").exists()  # nothing published mid-way
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "already there" in done.stdout and not (data / STAGING).exists()
    assert _snapshot(data) == _snapshot(reference)


def _rewrite_voc_tar(source: Path, target: Path, replace: dict[str, bytes]) -> None:
    with tarfile.open(source) as src, tarfile.open(target, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            for suffix, new in replace.items():
                if member.name.endswith(suffix):
                    data = new
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(buffer, format="PNG")
    return buffer.getvalue()


def _first_mask_name(archive: Path) -> str:
    with tarfile.open(archive) as tar:
        return next(n for n in tar.getnames() if "/SegmentationClass/" in n).split("VOC2012/")[1]


@pytest.mark.parametrize("case", ["missing", "checksum", "corrupt", "rgb_mask", "label_200",
                                  "full_ade"])
def test_bad_input_gives_one_clear_error_and_leaves_data_alone(case, archives, tmp_path) -> None:
    data = tmp_path / "data"
    (data / "mine.txt").parent.mkdir()
    (data / "mine.txt").write_text("a user's file")
    before = _snapshot(data)
    archive, kind, options = archives["voc"], "voc", {"skip_checksum": True}
    if case == "missing":
        archive = tmp_path / "VOCtrainval_11-May-2012.tar"
        expected = ["not found", "--archive"]
    elif case == "checksum":
        options = {}
        expected = [str(archive), "6cd6e144f989b92b3379bac3b3de84fd", "--checksum"]
    elif case == "corrupt":
        archive = tmp_path / "truncated.tar"
        archive.write_bytes(archives["voc"].read_bytes()[: archives["voc"].stat().st_size // 2])
        expected = [str(archive), "corrupt or truncated", "download it again"]
    elif case in ("rgb_mask", "label_200"):
        name = _first_mask_name(archives["voc"])
        mask = np.zeros((8, 8), dtype=np.uint8)
        if case == "label_200":
            mask[0, 0] = 200
            new = _png(mask)
        else:
            new = _png(np.stack([mask + 128] * 3, axis=-1))
        archive = tmp_path / "edited.tar"
        _rewrite_voc_tar(archives["voc"], archive, {name: new})
        expected = [Path(name).name, "RGB" if case == "rgb_mask" else "[200]", "Fix:"]
    else:
        archive, kind, options = archives["full_ade"], "ade20k", {}
        expected = ["full ADE20K release", "ADEChallengeData2016.zip"]
    prepare = {"voc": prepare_voc, "ade20k": prepare_ade20k}[kind]
    with pytest.raises(UserError) as err:
        prepare(archive, data, **options)
    for text in expected:
        assert text in str(err.value)
    assert _snapshot(data) == before and sorted(p.name for p in data.iterdir()) == ["mine.txt"]


def test_sbd_needs_voc_first(archives, tmp_path) -> None:
    with pytest.raises(UserError, match="prepare voc"):
        prepare_sbd(archives["sbd"], tmp_path, skip_checksum=True)
