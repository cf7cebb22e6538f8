"""seglab.optional_imports: a seglab run imports mmdet (and with it mmpretrain, transformers)
only when its config names a model part that needs it; importing seglab stays cheap."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)


def test_importing_seglab_stays_cheap() -> None:
    out = _python("import sys, seglab; print(sorted({'torch', 'mmpretrain'} & set(sys.modules)))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


DEFERRAL_PROBE = """
import sys
from argparse import Namespace
from seglab import cli
cli._defer_unneeded_packages(Namespace(config={config!r}, cfg_options={{}},
                                       whole_process={whole!r}))
import seglab.register
from mmseg.models.decode_heads.mask2former_head import MMDET_Mask2FormerHead
print(sorted({{'mmdet', 'mmpretrain'}} & set(sys.modules)), MMDET_Mask2FormerHead.__module__)
"""


@pytest.mark.slow  # three fresh interpreters importing torch and mmseg
def test_a_run_imports_mmdet_only_when_its_config_names_it(tmp_path) -> None:
    from seglab.config.zoo import write_zoo_config
    from tests.conftest import VOC_DEMO

    demo = _python(DEFERRAL_PROBE.format(config=str(VOC_DEMO), whole=True))
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert demo.stdout.split()[-2:] == ["[]", "mmengine.model.base_module"]
    # main(argv) from a caller's process (a notebook, a test): that process may build a
    # Mask2Former later, so nothing is deferred
    library = _python(DEFERRAL_PROBE.format(config=str(VOC_DEMO), whole=False))
    assert library.returncode == 0, library.stderr[-3000:]
    if importlib.util.find_spec("mmdet") is not None:
        assert "'mmdet'" in library.stdout
    if importlib.util.find_spec("mmdet") is None:
        return
    mask2former = write_zoo_config("mask2former", tmp_path)
    zoo = _python(DEFERRAL_PROBE.format(config=str(mask2former), whole=True))
    assert zoo.returncode == 0, zoo.stderr[-3000:]
    assert "'mmdet'" in zoo.stdout and zoo.stdout.split()[-1] == (
        "mmdet.models.dense_heads.mask2former_head")


def test_the_packages_a_config_names() -> None:
    from seglab.config.walk import packages_named

    cfg = {"custom_imports": {"imports": ["seglab.register", "my_lab.models"]},
           "model": {"type": "EncoderDecoder", "backbone": {"type": "mmpretrain.PoolFormer"},
                     "decode_head": {"type": "Mask2FormerHead",
                                     "pixel_decoder": {"type": "mmdet::MSDeformAttnPixelDecoder"}}}}
    assert packages_named(cfg) == {"seglab", "my_lab", "mmpretrain", "mmdet"}
    assert packages_named({"model": {"type": "EncoderDecoder"}}) == set()


def test_deferring_after_the_heads_are_imported_changes_nothing(monkeypatch) -> None:
    from seglab import optional_imports

    monkeypatch.setitem(sys.modules, optional_imports.MMDET_BASED_HEADS[0], object())
    assert optional_imports.defer_unneeded(set()) == []
