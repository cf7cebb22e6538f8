"""seglab.compat: with the zoo extra (mmdet, mmpretrain) beside the hf extra's transformers 5,
``import mmseg.models`` still works in a fresh process that imports seglab first."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

needs_mmpretrain = pytest.mark.skipif(importlib.util.find_spec("mmpretrain") is None,
                                      reason="mmpretrain not installed (seglab's 'zoo' extra)")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)


def test_importing_seglab_stays_cheap() -> None:
    out = _python("import sys, seglab; print(sorted({'torch', 'mmpretrain'} & set(sys.modules)))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@needs_mmpretrain
@pytest.mark.slow  # a fresh interpreter importing torch, mmseg, mmdet and mmpretrain: ~7 s
def test_mmseg_mmdet_and_mmpretrain_models_import_after_seglab() -> None:
    out = _python("import seglab, mmseg.models, mmdet.models, mmpretrain.models\n"
                  "from mmpretrain.utils.dependency import WITH_MULTIMODAL\n"
                  "from mmseg.models.decode_heads.mask2former_head import MMDET_Mask2FormerHead\n"
                  "print(WITH_MULTIMODAL, MMDET_Mask2FormerHead.__module__)")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-2:] == ["False", "mmdet.models.dense_heads.mask2former_head"]


@needs_mmpretrain
def test_mmpretrain_multimodal_models_are_placeholders_that_say_why() -> None:
    from seglab import compat

    compat.install()  # `import seglab` did it already; mmpretrain must come after
    importlib.import_module("mmpretrain.models")
    models = importlib.import_module("mmpretrain.registry").MODELS
    placeholder = models.module_dict["BlipCaption"]  # mmpretrain's own, whatever scope is current
    with pytest.raises(ImportError, match="multi-modal"):
        placeholder()
