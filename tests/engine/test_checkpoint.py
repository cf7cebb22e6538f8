"""Checkpoints load with weights_only=True: mmengine's own types pass, anything else is refused."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

from seglab.engine.checkpoint import CheckpointError, load_checkpoint_file
from seglab.errors import UserError


@pytest.mark.slow
def test_training_checkpoint_needs_the_allow_list_and_loads_with_it(voc_two_epochs) -> None:
    _, work_dir = voc_two_epochs
    ckpt = Path(work_dir) / "epoch_2.pth"
    # What mmengine 0.10.7 does on torch >= 2.6 (weights_only by default) fails ...
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(ckpt)
    # ... seglab's loader keeps weights_only on and restores the full training state.
    state = load_checkpoint_file(str(ckpt))
    assert state["meta"]["epoch"] == 2
    assert {"state_dict", "optimizer", "param_schedulers", "message_hub"} <= state.keys()


def test_the_allow_list_is_scoped_to_seglabs_loader(voc_two_epochs) -> None:
    _, work_dir = voc_two_epochs
    load_checkpoint_file(str(Path(work_dir) / "epoch_2.pth"))
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(Path(work_dir) / "epoch_2.pth")


class CallsOnLoad:
    """Pickles as "call builtins.print on load": the shape of a code-execution payload."""

    def __reduce__(self):
        return (print, ("payload ran",))


def test_untrusted_object_is_refused_with_file_and_type(tmp_path: Path, capsys) -> None:
    path = tmp_path / "untrusted.pth"
    torch.save({"state_dict": {}, "payload": CallsOnLoad()}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint_file(str(path))
    message = str(err.value)
    assert str(path) in message and "print" in message and "weights_only" in message
    assert "payload ran" not in capsys.readouterr().out


class GetattrPayload:
    def __init__(self, owner: object, name: str) -> None:
        self.owner, self.name = owner, name

    def __reduce__(self):
        return (getattr, (self.owner, self.name))


@pytest.mark.parametrize("owner,name", [(np.ndarray, "tofile"), (HistoryBuffer, "__init__")])
def test_getattr_is_allowed_only_for_history_buffer_statistics(tmp_path: Path, owner,
                                                                name: str) -> None:
    path = tmp_path / "getattr.pth"
    torch.save({"payload": GetattrPayload(owner, name)}, path)
    with pytest.raises(CheckpointError, match="getattr"):
        load_checkpoint_file(str(path))


def test_truncated_file_is_reported_as_corrupt(tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"w": torch.ones(1000)}}, good)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(good.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
        load_checkpoint_file(str(bad))
    assert str(bad) in str(err.value)


def test_mmengine_uses_seglabs_loader_for_local_files(tmp_path: Path) -> None:
    from mmengine.runner.checkpoint import CheckpointLoader

    import seglab.register  # noqa: F401

    path = tmp_path / "untrusted.pth"
    torch.save({"payload": CallsOnLoad()}, path)
    with pytest.raises(CheckpointError):
        CheckpointLoader.load_checkpoint(str(path))


def _fail_second_save(error: BaseException, writes: list[int]):
    """A ``_write_bytes`` that writes half of the second checkpoint, then raises ``error``;
    ``writes`` collects the sizes it was asked to write."""

    def write(handle, data: bytes) -> None:
        writes.append(len(data))
        if len(writes) == 2:
            handle.write(data[: len(data) // 2])
            raise error
        handle.write(data)

    return write


@pytest.mark.slow
def test_crash_during_save_keeps_the_newest_checkpoint_loadable(voc_root, tmp_path,
                                                                monkeypatch) -> None:
    """The process dies half-way through writing epoch_2.pth."""
    from seglab.engine import checkpoint as ckpt
    from seglab.engine import runner as engine
    from tests.conftest import TINY_SUBSET, VOC_DEMO

    crash = SystemExit("simulated crash during checkpoint save")
    monkeypatch.setattr(ckpt, "_write_bytes", _fail_second_save(crash, []))
    options = {"train_cfg.max_epochs": 3, "train_cfg.val_interval": 10,
               "default_hooks.checkpoint.save_best": None, **TINY_SUBSET}
    with pytest.raises(SystemExit):
        engine.train(str(VOC_DEMO), work_dir=str(tmp_path), data_root=str(voc_root),
                     cfg_options=options)
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["epoch_1.pth"]  # no torso
    assert not list(tmp_path.glob(".*.tmp"))
    assert Path((tmp_path / "last_checkpoint").read_text()).name == "epoch_1.pth"
    assert load_checkpoint_file(str(tmp_path / "epoch_1.pth"))["meta"]["epoch"] == 1
    monkeypatch.undo()
    runner = engine.train(str(VOC_DEMO), work_dir=str(tmp_path), data_root=str(voc_root),
                          resume=True, cfg_options={**options, "train_cfg.max_epochs": 2})
    assert runner.epoch == 2


TRAINING_STATE = {"state_dict": {"w": torch.ones(3)}, "meta": {"epoch": 1},
                  "message_hub": {}, "optimizer": {"state": {}, "param_groups": []}}
WEIGHTS_ONLY = {k: v for k, v in TRAINING_STATE.items() if k != "optimizer"}  # as save_best


def test_resume_skips_a_stale_or_truncated_newest_file(tmp_path) -> None:
    from seglab.engine.checkpoint import find_latest_checkpoint

    good = tmp_path / "epoch_1.pth"
    torch.save(TRAINING_STATE, good)
    bad = tmp_path / "epoch_2.pth"  # e.g. copied in by hand, cut short
    bad.write_bytes(good.read_bytes()[:100])
    (tmp_path / "last_checkpoint").write_text(str(bad))
    assert find_latest_checkpoint(str(tmp_path)).path == str(good)
    (tmp_path / "last_checkpoint").write_text("")  # a pointer cut short
    assert find_latest_checkpoint(str(tmp_path)).path == str(good)


def test_resume_passes_over_a_newer_weights_only_best_file_and_says_so(tmp_path) -> None:
    """mmengine's save_best writes weights without the optimizer: continuing from it would
    start a fresh optimizer and schedule, and end on other weights than the run would."""
    from seglab.engine.checkpoint import find_latest_checkpoint

    epoch_1 = tmp_path / "epoch_1.pth"
    torch.save(TRAINING_STATE, epoch_1)
    best = tmp_path / "best_mIoU_epoch_2.pth"
    torch.save(WEIGHTS_ONLY, best)
    epoch_2 = tmp_path / "epoch_2.pth"
    epoch_2.write_bytes(epoch_1.read_bytes()[:100])  # the crash cut it short
    for age, path in enumerate((epoch_2, best, epoch_1)):
        os.utime(path, (1e9 - age, 1e9 - age))  # newest first: epoch_2, best, epoch_1
    (tmp_path / "last_checkpoint").write_text(str(epoch_2))
    found = find_latest_checkpoint(str(tmp_path))
    assert found.path == str(epoch_1)
    assert [why.split(":")[0] for why in found.passed_over] == [str(epoch_2), str(best)]
    assert "truncated or corrupt" in found.passed_over[0]
    assert "weights only (no optimizer), cannot continue a run" in found.passed_over[1]
    assert find_latest_checkpoint(str(tmp_path), training_state=False).path == str(best)


def test_a_run_that_saves_no_optimizer_resumes_from_its_epoch_files_not_the_best(
        tmp_path) -> None:
    """default_hooks.checkpoint.save_optimizer=False: every file is weights only, and the
    newest epoch file is where the run stopped; save_best's copy is not."""
    from mmengine.config import Config

    from seglab.engine.checkpoint import find_latest_checkpoint, saves_optimizer

    cfg = Config(dict(default_hooks=dict(checkpoint=dict(type="CheckpointHook",
                                                         save_optimizer=False))))
    assert not saves_optimizer(cfg) and saves_optimizer(Config(dict()))
    epoch_1, best = tmp_path / "epoch_1.pth", tmp_path / "best_mIoU_epoch_1.pth"
    for age, path in enumerate((best, epoch_1)):
        torch.save(WEIGHTS_ONLY, path)
        os.utime(path, (1e9 - age, 1e9 - age))  # the best file is the newer
    found = find_latest_checkpoint(str(tmp_path), optimizer=saves_optimizer(cfg))
    assert found.path == str(epoch_1)
    assert found.passed_over == (f"{best}: save_best's copy of the best weights, not a point "
                                 "to continue from",)
    without_hub = tmp_path / "epoch_2.pth"  # mmcv 1.x wrote no message hub: resume needs it
    torch.save({k: v for k, v in WEIGHTS_ONLY.items() if k != "message_hub"}, without_hub)
    assert "no message_hub" in find_latest_checkpoint(str(tmp_path), optimizer=False
                                                      ).passed_over[0]


@pytest.mark.parametrize("pointer", [bytes(range(256)) * 4, b"x" * 5000 + b"\n",
                                     b"/ok/path\0garbage"], ids=["random", "long", "nul"])
def test_a_garbage_last_checkpoint_falls_back_to_the_newest_file(tmp_path, pointer) -> None:
    from seglab.engine.checkpoint import find_latest_checkpoint

    torch.save(TRAINING_STATE, tmp_path / "epoch_1.pth")
    (tmp_path / "last_checkpoint").write_bytes(pointer)
    found = find_latest_checkpoint(str(tmp_path))
    assert found.path == str(tmp_path / "epoch_1.pth")
    assert found.passed_over == (f"{tmp_path / 'last_checkpoint'}: does not hold a checkpoint "
                                 "path (a crash or another program wrote it)",)


def test_resume_with_nothing_to_continue_names_what_it_passed_over(tmp_path) -> None:
    from seglab.engine.runner import train
    from tests.conftest import VOC_DEMO

    torch.save(WEIGHTS_ONLY, tmp_path / "best_mIoU_epoch_2.pth")
    with pytest.raises(UserError, match=r"no loadable checkpoint found .*; passed over "
                       r".*best_mIoU_epoch_2.pth: weights only \(no optimizer\)"):
        train(str(VOC_DEMO), work_dir=str(tmp_path), resume=True,
              data_root=str(tmp_path / "absent"))
    with pytest.raises(UserError, match=r"already holds checkpoints .*; --resume passed over "
                       r".*best_mIoU_epoch_2.pth: weights only"):  # a requeued job says why
        train(str(VOC_DEMO), work_dir=str(tmp_path), resume="auto",
              data_root=str(tmp_path / "absent"))


def test_rng_state_survives_a_weights_only_checkpoint_and_validation(tmp_path) -> None:
    import random
    from types import SimpleNamespace

    import numpy as np

    from seglab.engine.hooks.rng_state_hook import RNGStateHook
    from seglab.engine.rng import RNG_KEY, capture_rng_state, restore_rng_state

    def draws() -> tuple:
        return torch.rand(4).tolist(), np.random.rand(4).tolist(), random.random()

    hook = RNGStateHook()
    runner = SimpleNamespace(_resume=True, seed=0, train_dataloader=SimpleNamespace())
    checkpoint: dict = {}
    hook.before_save_checkpoint(runner, checkpoint)
    expected = draws()
    torch.save(checkpoint, tmp_path / "ckpt.pth")
    hook.after_load_checkpoint(runner, load_checkpoint_file(str(tmp_path / "ckpt.pth")))
    hook.before_train(runner)  # after mmengine's own reseeding
    assert draws() == expected and RNG_KEY in checkpoint

    state = capture_rng_state()
    expected = draws()  # what training draws next when nothing runs in between
    restore_rng_state(state)
    hook.before_val_epoch(runner)
    draws(), draws()  # whatever validation consumes
    hook.after_val_epoch(runner)
    assert draws() == expected


# Save every iteration of a small batch: the second checkpoint comes after two steps.
EVERY_ITER = {"train_cfg.max_epochs": 1, "train_dataloader.batch_size": 2,
              "default_hooks.checkpoint.by_epoch": False, "default_hooks.checkpoint.interval": 1,
              "default_hooks.checkpoint.save_best": None}


@pytest.mark.slow
def test_full_disk_during_save_keeps_the_previous_checkpoint(voc_root, tmp_path,
                                                             monkeypatch) -> None:
    import errno

    from seglab.engine import checkpoint as ckpt
    from seglab.engine import runner as engine
    from seglab.engine.disk_space import DiskSpaceError
    from tests.conftest import VOC_DEMO

    writes: list[int] = []
    disk_full = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(ckpt, "_write_bytes", _fail_second_save(disk_full, writes))
    with pytest.raises(DiskSpaceError) as err:
        engine.train(str(VOC_DEMO), work_dir=str(tmp_path), data_root=str(voc_root),
                     cfg_options=EVERY_ITER, skip_data_check=True)
    message = str(err.value)
    assert f"{tmp_path / 'iter_2.pth'}: not saved: No space left on device" in message
    assert f"({writes[1]} bytes)" in message and "free on that disk" in message
    assert f"previous checkpoint {tmp_path / 'iter_1.pth'} is kept" in message
    assert "--work-dir" in message and "max_keep_ckpts" in message
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["iter_1.pth"]
    assert not list(tmp_path.glob(".*.tmp"))
    assert Path((tmp_path / "last_checkpoint").read_text()).name == "iter_1.pth"
    assert "state_dict" in load_checkpoint_file(str(tmp_path / "iter_1.pth"))


@pytest.mark.slow
def test_unwritable_work_dir_is_refused_at_start(voc_root, tmp_path, monkeypatch,
                                                 capsys) -> None:
    import errno
    import os

    from seglab import cli
    from seglab.engine import disk_space
    from tests.conftest import VOC_DEMO

    work_dir = tmp_path / "read_only"
    work_dir.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root writes anywhere: fail the probe as the file system would

        def denied(folder: Path) -> None:
            raise PermissionError(errno.EACCES, "Permission denied", str(folder))

        monkeypatch.setattr(disk_space, "_write_probe", denied)
    try:
        code = cli.main(["train", str(VOC_DEMO), "--work-dir", str(work_dir),
                         "--data-root", str(voc_root), "--skip-data-check"])
    finally:
        work_dir.chmod(0o700)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"seglab: error: work dir {str(work_dir)!r} is not writable (Permission denied)" in err
    assert "--work-dir" in err
    assert list(work_dir.iterdir()) == []


@pytest.mark.slow
def test_too_little_free_space_is_refused_before_training(voc_root, tmp_path,
                                                          monkeypatch) -> None:
    import shutil

    from mmengine.runner import Runner

    from seglab.engine import runner as engine
    from seglab.engine.disk_space import DiskSpaceError
    from tests.conftest import VOC_DEMO

    real_usage = shutil.disk_usage
    tight = real_usage(tmp_path)._replace(free=50 * 2**20)  # 50 MiB
    monkeypatch.setattr(shutil, "disk_usage", lambda path: tight)
    monkeypatch.setattr(Runner, "train", lambda self: pytest.fail("training started"))
    with pytest.raises(DiskSpaceError) as err:
        engine.train(str(VOC_DEMO), work_dir=str(tmp_path), data_root=str(voc_root),
                     skip_data_check=True)
    message = str(err.value)
    assert f"not enough free space for this run's checkpoints in {tmp_path}" in message
    assert "3 kept (max_keep_ckpts=3) + 1 best (save_best) = 4 checkpoints" in message
    assert "for a best one: weights only" in message
    assert "0.05 GiB are free" in message and "--work-dir" in message
    assert not list(tmp_path.glob("*.pth"))


def test_checkpoint_size_and_copies_without_building_a_run() -> None:
    from mmengine.config import Config

    from seglab.engine.disk_space import (
        CHECKPOINT_OVERHEAD,
        checkpoint_copies,
        estimate_checkpoint_bytes,
    )

    model = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.BatchNorm1d(10))
    model[1].weight.requires_grad_(False)
    weights = (110 + 10 + 10) * 4 + (10 + 10) * 4 + 8  # params, BN running stats, int64 count
    trained = 110 + 10
    for optimizer, state in [(dict(type="AdamW"), 2), (dict(type="SGD", momentum=0.9), 1),
                             (dict(type="SGD"), 0)]:
        assert estimate_checkpoint_bytes(model, dict(optimizer=optimizer)) == int(
            (weights + trained * 4 * state) * CHECKPOINT_OVERHEAD)

    cfg = Config(dict(train_cfg=dict(max_epochs=10), default_hooks=dict(
        checkpoint=dict(type="CheckpointHook", interval=4, max_keep_ckpts=-1))))
    assert checkpoint_copies(cfg) == (
        (3, 0), "3 saved and all kept (max_keep_ckpts not set) = 3 checkpoints")
    # mmengine removes the oldest kept (and the previous best) before writing the next
    cfg.default_hooks.checkpoint.update(max_keep_ckpts=2, save_best=["mIoU", "aAcc"])
    assert checkpoint_copies(cfg)[0] == (2, 2)
    assert estimate_checkpoint_bytes(model) == int(weights * CHECKPOINT_OVERHEAD)


def test_a_save_that_runs_out_of_space_leaves_the_previous_file_and_no_torso(
        tmp_path, monkeypatch) -> None:
    import errno

    from seglab.engine import checkpoint as ckpt
    from seglab.engine.disk_space import DiskSpaceError

    backend = ckpt.AtomicLocalBackend()
    backend.put(b"epoch 1 weights", tmp_path / "epoch_1.pth")
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "epoch_1.pth"))

    def disk_full(handle, data: bytes) -> None:
        handle.write(data[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "_write_bytes", disk_full)
    with pytest.raises(DiskSpaceError, match=r"epoch_2.pth: not saved: No space left on device; "
                       r"it needs 0.00 GiB \(5000 bytes\) and [\d.]+ GiB is free"):
        backend.put(b"x" * 5000, tmp_path / "epoch_2.pth")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_1.pth", "last_checkpoint"]
    assert (tmp_path / "epoch_1.pth").read_bytes() == b"epoch 1 weights"


def test_every_rank_raises_the_space_refusal_rank_0_measured(monkeypatch) -> None:
    """Rank 0 alone measures; a rank >= 1 must raise too, not go on into the first
    collective and wait for the NCCL timeout while rank 0 has exited."""
    import mmengine.dist as dist

    from seglab.engine import disk_space

    broadcasts = []

    def fake_broadcast(objects: list) -> None:  # what rank 0 sent
        broadcasts.append(list(objects))
        objects[0] = "not enough free space (measured on rank 0)"

    monkeypatch.setattr(dist, "is_main_process", lambda: False)
    monkeypatch.setattr(dist, "get_world_size", lambda: 8)
    monkeypatch.setattr(dist, "broadcast_object_list", fake_broadcast)
    monkeypatch.setattr(disk_space, "_space_shortfall",
                        lambda runner: pytest.fail("only rank 0 measures"))
    with pytest.raises(disk_space.DiskSpaceError, match="measured on rank 0"):
        disk_space.check_checkpoint_space(object())
    assert broadcasts == [[None]]
