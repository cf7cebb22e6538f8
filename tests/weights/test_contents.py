"""``seglab weights inspect``: what a file holds, including seglab's own training checkpoints
(which carry mmengine's message hub and optimizer, not only tensors)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seglab.errors import UserError
from seglab.weights.contents import describe
from tests.conftest import VOC_DEMO, run_cli


def test_a_training_checkpoint_is_described_not_refused(voc_two_epochs) -> None:
    _, work_dir = voc_two_epochs
    checkpoint = sorted(Path(work_dir).glob("epoch_*.pth"))[-1]
    lines = describe(str(checkpoint))
    text = "\n".join(lines)
    assert "layout: an mmengine training checkpoint (mmseg MixVisionTransformer" \
        not in text  # the demo model is a whole segmentor: its keys start with backbone.
    assert "layout: an mmengine training checkpoint (a whole mmseg model" in text
    assert "wrapped in: " in text and "optimizer" in text and "message_hub" in text
    result = run_cli("weights", "inspect", str(checkpoint), "--config", str(VOC_DEMO))
    assert result.returncode == 0, result.stderr
    assert "pretrained coverage: 100.0% of the model's parameters" in result.stdout


def test_plain_tensors_are_counted_by_prefix_and_dtype(tmp_path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3), "layer1.0.bn1.weight": torch.ones(4),
                "layer1.0.bn1.num_batches_tracked": torch.tensor(3)}, path)
    text = "\n".join(describe(str(path)))
    assert "layout: a ResNet backbone" in text
    assert "tensors: 3 (113 values" in text
    assert "float32 x2" in text and "int64 x1" in text
    assert "prefixes: layer1. x2, conv1. x1" in text


def test_an_unsafe_pickle_is_refused_with_the_reason(tmp_path) -> None:
    path = tmp_path / "unsafe.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": pytest.approx(1.0)}, path)
    with pytest.raises(UserError, match="not in seglab's allow-list"):
        describe(str(path))
