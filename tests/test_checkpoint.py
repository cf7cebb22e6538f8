"""Checkpoints load with weights_only=True: mmengine's own types pass, anything else is refused."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch

from seglab.checkpoint import CheckpointError, load_checkpoint_file


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


def test_untrusted_object_is_refused_with_file_and_type(tmp_path: Path) -> None:
    path = tmp_path / "untrusted.pth"
    torch.save({"state_dict": {}, "payload": collections.Counter(a=1)}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint_file(str(path))
    message = str(err.value)
    assert str(path) in message and "collections.Counter" in message
    assert "weights_only" in message


def test_truncated_file_is_reported_as_corrupt(tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"w": torch.ones(1000)}}, good)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(good.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
        load_checkpoint_file(str(bad))
    assert str(bad) in str(err.value)


def test_mmengine_uses_seglabs_loader_for_local_files(tmp_path: Path) -> None:
    import seglab.register  # noqa: F401
    from mmengine.runner.checkpoint import CheckpointLoader

    path = tmp_path / "untrusted.pth"
    torch.save({"payload": collections.Counter(a=1)}, path)
    with pytest.raises(CheckpointError):
        CheckpointLoader.load_checkpoint(str(path))
