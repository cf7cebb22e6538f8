"""A sample that cannot be read, or whose mask disagrees with its image, stops the run with
one error naming its dataset index and both files, or (``--on-bad-sample skip``) is skipped
and recorded in ``WORK_DIR/bad_samples.json``; more than ``--max-bad-samples`` stop it."""

from __future__ import annotations

import copy
import inspect
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.config.loading import ConfigError, load_config
from seglab.data.bad_samples import (
    RECORD_FILE,
    BadSampleError,
    CheckLoadedSample,
    GuardedLoad,
    TooManyBadSamples,
    add_record,
    read_records,
    use_sample_checks,
)
from seglab.data.synth import write_synth_dataset
from tests.conftest import VOC_DEMO, run_cli

SPOILED = 3  # the training sample each test spoils


@pytest.fixture(scope="module")
def demo_cfg():
    return load_config(VOC_DEMO)


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    return write_synth_dataset("voc", tmp_path / "data", num_train=8, num_val=4, seed=0).root


def _checked_cfg(demo_cfg, root: Path, work_dir: Path, on_bad_sample: str = "raise",
                 max_bad_samples: int | None = None):
    cfg = copy.deepcopy(demo_cfg)
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[loader].dataset.data_root = str(root)
    cfg.work_dir = str(work_dir)
    notes = use_sample_checks(cfg, on_bad_sample, max_bad_samples)
    assert notes
    return cfg


def _dataset(demo_cfg, root: Path, work_dir: Path, loader: str = "train_dataloader", **policy):
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    init_default_scope("mmseg")
    cfg = _checked_cfg(demo_cfg, root, work_dir, **policy)
    return DATASETS.build(cfg[loader].dataset)


def _files(dataset, index: int) -> tuple[Path, Path]:
    info = dataset.get_data_info(index)
    return Path(info["img_path"]), Path(info["seg_map_path"])


def _assert_names_sample(err: BaseException, dataset, index: int) -> str:
    message = str(err)
    image, mask = _files(dataset, index)
    assert f"dataset index {index}" in message
    assert str(image) in message and str(mask) in message
    assert "seglab data doctor" in message and "Traceback" not in message
    return message


def _set_mask(path: Path, change) -> None:
    mask = Image.open(path)
    palette = mask.getpalette()
    out = change(mask)
    if out.mode == "P" and palette:
        out.putpalette(palette)
    out.save(path)


def _with_label(value: int):
    def change(mask: Image.Image) -> Image.Image:
        labels = np.array(mask)
        labels[:4, :4] = value
        return Image.fromarray(labels, mode="P")
    return change


# --- raise: one error naming the index and both files -------------------------------------

def test_truncated_jpeg_names_index_and_both_files(demo_cfg, voc, tmp_path) -> None:
    dataset = _dataset(demo_cfg, voc, tmp_path / "work")
    image, _ = _files(dataset, SPOILED)
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    assert dataset[SPOILED - 1]["inputs"].shape[0] == 3  # the others still load
    with pytest.raises(BadSampleError) as err:
        dataset[SPOILED]
    message = _assert_names_sample(err.value, dataset, SPOILED)
    assert "image cannot be decoded" in message and "--on-bad-sample skip" in message
    assert err.value.index == SPOILED and err.value.img_path == str(image)


def test_empty_image_and_missing_mask_say_so(demo_cfg, voc, tmp_path) -> None:
    dataset = _dataset(demo_cfg, voc, tmp_path / "work")
    _files(dataset, SPOILED)[0].write_bytes(b"")
    with pytest.raises(BadSampleError, match="image file is empty") as err:
        dataset[SPOILED]
    _assert_names_sample(err.value, dataset, SPOILED)
    _files(dataset, 0)[1].unlink()
    with pytest.raises(BadSampleError, match="mask file does not exist") as err:
        dataset[0]
    _assert_names_sample(err.value, dataset, 0)


def test_mask_of_another_size_names_both_shapes(demo_cfg, voc, tmp_path) -> None:
    dataset = _dataset(demo_cfg, voc, tmp_path / "work")
    _, mask = _files(dataset, SPOILED)
    width, height = Image.open(mask).size
    _set_mask(mask, lambda m: m.resize((width // 2, height // 2), Image.NEAREST))
    with pytest.raises(BadSampleError) as err:
        dataset[SPOILED]
    message = _assert_names_sample(err.value, dataset, SPOILED)
    assert f"the mask is {height // 2}x{width // 2} (HxW) but its image is {height}x{width}" \
        in message


def test_rgb_mask_is_named_as_such(demo_cfg, voc, tmp_path) -> None:
    dataset = _dataset(demo_cfg, voc, tmp_path / "work")
    _set_mask(_files(dataset, SPOILED)[1], lambda m: m.convert("RGB"))
    with pytest.raises(BadSampleError, match="3 channels, an RGB colour image") as err:
        dataset[SPOILED]
    _assert_names_sample(err.value, dataset, SPOILED)


def test_label_outside_the_classes_raises(demo_cfg, voc, tmp_path) -> None:
    dataset = _dataset(demo_cfg, voc, tmp_path / "work")
    _set_mask(_files(dataset, SPOILED)[1], _with_label(200))
    with pytest.raises(BadSampleError) as err:
        dataset[SPOILED]
    message = _assert_names_sample(err.value, dataset, SPOILED)
    assert "label(s) 200 (16 pixels)" in message
    assert "labels are 0..20 (21 classes) and 255 (ignore_index)" in message
    _set_mask(_files(dataset, 0)[1], _with_label(20))  # the last class: fine
    assert dataset[0]["inputs"].shape[0] == 3


def test_val_sample_is_checked_before_resize_and_never_skipped(demo_cfg, voc, tmp_path) -> None:
    dataset = _dataset(demo_cfg, voc, tmp_path / "work", loader="val_dataloader",
                       on_bad_sample="skip")
    _set_mask(_files(dataset, 1)[1], lambda m: m.resize((40, 30), Image.NEAREST))
    with pytest.raises(BadSampleError) as err:
        dataset[1]
    message = _assert_names_sample(err.value, dataset, 1)
    assert "bad val sample" in message and "val samples are never skipped" in message
    assert "the mask is 30x40" in message
    assert not (tmp_path / "work" / RECORD_FILE).exists()


def test_error_from_a_worker_reads_as_the_original_message() -> None:
    """torch re-creates a worker's exception from its formatted traceback; the message the
    user reads is the original one."""
    from torch._utils import ExceptionWrapper

    try:
        try:
            raise OSError("image file is truncated")
        except OSError as cause:
            raise BadSampleError("bad train sample (dataset index 3): x\n  image: a.jpg") \
                from cause
    except BadSampleError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(BadSampleError) as err:
        wrapped.reraise()
    assert str(err.value) == "bad train sample (dataset index 3): x\n  image: a.jpg"


# --- skip: another sample, a record, a limit ---------------------------------------------

def test_skip_returns_another_sample_and_records_it(demo_cfg, voc, tmp_path) -> None:
    dataset = _dataset(demo_cfg, voc, tmp_path / "work", on_bad_sample="skip")
    image, mask = _files(dataset, SPOILED)
    image.write_bytes(image.read_bytes()[:100])
    for _ in range(2):
        sample = dataset[SPOILED]
        assert sample["data_samples"].img_path != str(image)
        assert sample["inputs"].shape[0] == 3
    records = read_records(str(tmp_path / "work" / RECORD_FILE))
    assert records == [{"split": "train", "index": SPOILED, "img_path": str(image),
                        "seg_map_path": str(mask),
                        "reason": records[0]["reason"]}]  # once, however often it is drawn
    assert "image cannot be decoded" in records[0]["reason"]


def test_skip_stops_after_max_bad_samples(demo_cfg, voc, tmp_path) -> None:
    dataset = _dataset(demo_cfg, voc, tmp_path / "work", on_bad_sample="skip",
                       max_bad_samples=1)
    for index in (1, 5):
        _set_mask(_files(dataset, index)[1], _with_label(99))
    with pytest.raises(TooManyBadSamples) as err:
        for index in (1, 5):
            dataset[index]
    record = tmp_path / "work" / RECORD_FILE
    assert "2 bad train samples, more than --max-bad-samples 1" in str(err.value)
    assert str(record) in str(err.value)
    assert sorted(r["index"] for r in read_records(str(record))) == [1, 5]


def _add_many(path: str, worker: int) -> None:
    for index in range(10):
        add_record(path, {"split": "train", "index": worker * 100 + index,
                          "img_path": f"{worker}-{index}.jpg", "seg_map_path": None,
                          "reason": "r"})


def test_records_from_concurrent_workers_all_land(tmp_path) -> None:
    path = str(tmp_path / RECORD_FILE)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_add_many, args=(path, w)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(read_records(path)) == 40
    assert add_record(path, read_records(path)[0]) == (40, False)  # already recorded
    assert not list(tmp_path.glob(".bad_samples.*"))  # no temporary file left


# --- the config edit and the command line -------------------------------------------------

def _types(pipeline) -> list[str]:
    return [step["type"] if step["type"] != "GuardedLoad"
            else f"Guarded({step['transform']['type']})" for step in pipeline]


def test_loaders_guarded_and_check_right_after_the_last_one(demo_cfg, tmp_path) -> None:
    cfg = _checked_cfg(demo_cfg, tmp_path, tmp_path / "work", "skip", 7)
    assert _types(cfg.train_dataloader.dataset.pipeline) == [
        "Guarded(LoadImageFromFile)", "Guarded(LoadAnnotations)", "CheckLoadedSample",
        "RandomResize", "RandomCrop", "RandomFlip", "PackSegInputs"]
    assert _types(cfg.test_dataloader.dataset.pipeline) == [
        "Guarded(LoadImageFromFile)", "Resize", "Guarded(LoadAnnotations)",
        "CheckLoadedSample", "PackSegInputs"]
    check = cfg.train_dataloader.dataset.pipeline[2]
    assert (check.num_classes, check.ignore_index, check.on_bad_sample, check.max_bad_samples,
            check.record_file) == (21, 255, "skip", 7, str(tmp_path / "work" / RECORD_FILE))
    assert cfg.val_dataloader.dataset.pipeline[3].on_bad_sample == "raise"
    assert cfg.train_pipeline[0] == {"type": "LoadImageFromFile"}  # only the loaders' copies
    # a saved training config tested again: restored first, then checked with raise
    use_sample_checks(cfg)
    assert _types(cfg.train_dataloader.dataset.pipeline)[:3] == [
        "Guarded(LoadImageFromFile)", "Guarded(LoadAnnotations)", "CheckLoadedSample"]
    assert {s.get("on_bad_sample") for s in cfg.train_dataloader.dataset.pipeline} == {
        "raise", None}


def test_bad_options_are_refused_and_a_fresh_run_starts_a_fresh_record(demo_cfg,
                                                                       tmp_path) -> None:
    with pytest.raises(ConfigError, match="applies to --on-bad-sample skip"):
        _checked_cfg(demo_cfg, tmp_path, tmp_path, "raise", 5)
    with pytest.raises(ConfigError, match="expected 0 or more"):
        _checked_cfg(demo_cfg, tmp_path, tmp_path, "skip", -1)
    record = tmp_path / RECORD_FILE
    record.write_text("[]")
    resumed = copy.deepcopy(demo_cfg)
    resumed.merge_from_dict({"work_dir": str(tmp_path), "resume": True})
    use_sample_checks(resumed, "skip")
    assert record.exists()
    _checked_cfg(demo_cfg, tmp_path, tmp_path, "skip")
    assert not record.exists()


def test_train_command_line_options() -> None:
    from seglab.cli import _forwarded_train_args, train_parser

    args = train_parser().parse_args(["c.py", "--on-bad-sample", "skip",
                                      "--max-bad-samples", "3"])
    assert (args.on_bad_sample, args.max_bad_samples) == ("skip", 3)
    assert _forwarded_train_args(args) == ["--on-bad-sample=skip", "--max-bad-samples=3"]
    defaults = train_parser().parse_args(["c.py"])
    assert (defaults.on_bad_sample, defaults.max_bad_samples) == ("raise", None)


@pytest.mark.parametrize("cls", [GuardedLoad, CheckLoadedSample])
def test_transforms_document_their_arguments(cls) -> None:
    args = (inspect.getdoc(cls) or "").split("Args:", 1)[1]
    for name in list(inspect.signature(cls.__init__).parameters)[1:]:
        assert f"{name} (" in args


# --- end to end ---------------------------------------------------------------------------

def _spoil_first_image(root: Path) -> Path:
    image = root / "JPEGImages" / "2012_000004.jpg"
    image.write_bytes(image.read_bytes()[:200])
    return image


@pytest.mark.slow
def test_train_skip_records_and_finishes(voc, tmp_path) -> None:
    image = _spoil_first_image(voc)
    work_dir = tmp_path / "work"
    out = run_cli("train", str(VOC_DEMO), "--data-root", str(voc), "--work-dir", str(work_dir),
                  "--on-bad-sample", "skip", "--cfg-options", "train_cfg.max_epochs=1")
    assert out.returncode == 0, out.stderr[-3000:]
    # the data check found it first and left it to the loader (a warning, not a refusal)
    assert "(skipped at load time: --on-bad-sample skip)" in out.stdout + out.stderr
    records = read_records(str(work_dir / RECORD_FILE))
    assert [(r["split"], r["img_path"]) for r in records] == [("train", str(image))]
    assert (work_dir / "epoch_1.pth").is_file()


@pytest.mark.slow
def test_train_raise_names_the_sample_without_a_worker_traceback(voc, tmp_path) -> None:
    image = _spoil_first_image(voc)
    out = run_cli("train", str(VOC_DEMO), "--data-root", str(voc), "--work-dir",
                  str(tmp_path / "work"), "--skip-data-check",
                  "--cfg-options", "train_cfg.max_epochs=1")
    assert out.returncode == 2, out.stderr[-3000:]
    assert "dataset index 3" in out.stderr and str(image) in out.stderr
    assert str(image.parent.parent / "SegmentationClass" / "2012_000004.png") in out.stderr
    assert "Traceback" not in out.stderr and "DataLoader worker" not in out.stderr
    assert not (tmp_path / "work" / RECORD_FILE).exists()
