"""``seglab.register`` (what configs import) registers every seglab extension, each with the
``Args:`` section mmengine's registered classes carry: what a config may set."""

from __future__ import annotations

import inspect

import pytest
from mmengine.registry import DATA_SAMPLERS, HOOKS, LOOPS, METRICS, MODEL_WRAPPERS, OPTIM_WRAPPERS
from mmseg.registry import METRICS as MMSEG_METRICS
from mmseg.registry import MODELS, TRANSFORMS

import seglab.register  # noqa: F401

REGISTRIES = (HOOKS, LOOPS, DATA_SAMPLERS, OPTIM_WRAPPERS, MODEL_WRAPPERS, METRICS,
              MMSEG_METRICS, MODELS, TRANSFORMS)


def _seglab_classes() -> dict[str, type]:
    return {f"{registry.name}.{name}": cls for registry in REGISTRIES
            for name, cls in registry.module_dict.items()
            if getattr(cls, "__module__", "").startswith("seglab.")}


def test_register_registers_every_extension() -> None:
    names = {key.split(".", 1)[1] for key in _seglab_classes()}
    assert {"NonFiniteLossHook", "RNGStateHook", "PretrainedCoverageHook", "ClassMetricsHook",
            "ResumableIterBasedTrainLoop", "ResumableInfiniteSampler",
            "SkipNonFiniteOptimWrapper", "CPUAwareDDP", "ClassIoUMetric",
            "FocalLoss", "GuardedLoad", "CheckLoadedSample"} <= names


@pytest.mark.parametrize("key", sorted(_seglab_classes()))
def test_registered_class_documents_its_arguments(key: str) -> None:
    cls = _seglab_classes()[key]
    doc = inspect.getdoc(cls) or ""
    params = [p for p in inspect.signature(cls.__init__).parameters.values()
              if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if "Args:" not in doc:
        assert not params and "no arguments" in doc, f"{key}: no Args: section"
        return
    args = doc.split("Args:", 1)[1]
    for param in params:
        assert f"{param.name} (" in args, f"{key}: Args: does not describe {param.name!r}"
