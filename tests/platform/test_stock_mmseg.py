"""The venv `make env` builds serves stock mmseg as well: a fresh interpreter that never imports
seglab imports ``mmseg.apis``, builds every zoo family through mmseg's registry, and mmseg's own
``tools/train.py`` trains a packaged config. (With the zoo extra beside transformers 5, every
``import mmseg.apis`` there failed: mmpretrain's multimodal models need transformers 4.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from seglab.config import zoo

pytestmark = [pytest.mark.slow, pytest.mark.zoo]

# Run by a fresh interpreter: mmseg, mmengine and the standard library only.
BUILD_EVERY_FAMILY = """
import json, sys
from mmengine.config import Config
from mmengine.registry import init_default_scope
import mmseg.apis  # noqa: F401  (what a notebook imports first)
from mmseg.registry import MODELS

def random_init(node):
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'  # no process group on the CPU
        if 'pretrained' in node:
            node['pretrained'] = None
        if isinstance(node.get('init_cfg'), dict) and node['init_cfg'].get('type') == 'Pretrained':
            node['init_cfg'] = None
        for value in node.values():
            random_init(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            random_init(value)

init_default_scope('mmseg')
built = {}
for name, path in json.loads(sys.argv[1]).items():
    model = Config.fromfile(path).model  # a ConfigDict: mmdet's heads read attributes
    random_init(model)
    built[name] = sum(p.numel() for p in MODELS.build(model).parameters())
print(json.dumps({'built': built, 'seglab': sorted(m for m in sys.modules if m == 'seglab'
                                                  or m.startswith('seglab.'))}))
"""


def test_stock_mmseg_imports_builds_every_family_and_trains_without_seglab(tmp_path) -> None:
    from seglab.config.walk import mmseg_config_dir
    from seglab.data.synth import write_synth_dataset
    from seglab.platform.gpu_check import Sizes, throughput_config

    missing = {p for f in zoo.FAMILIES for p in zoo.missing_packages(f)}
    if missing:
        pytest.skip(f"{', '.join(sorted(missing))} not installed: the zoo extra (make env)")
    configs = {f.name: str(mmseg_config_dir() / f.config) for f in zoo.FAMILIES}
    out = subprocess.run([sys.executable, "-c", BUILD_EVERY_FAMILY, json.dumps(configs)],
                         capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["seglab"] == []
    assert set(result["built"]) == set(configs) and all(n > 0 for n in result["built"].values())

    data = {"ade20k": str(write_synth_dataset("ade20k", tmp_path / "data", num_train=2,
                                              num_val=1, seed=0).root)}
    sizes = Sizes(crop=(64, 64), batch_size=2, num_workers=1, throughput_iters=1, log_interval=1)
    config = throughput_config("segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py", data,
                               tmp_path, sizes, batch=2)
    assert "seglab" not in config.read_text()
    train_py = mmseg_config_dir().parent / "tools" / "train.py"
    work = tmp_path / "work"
    trained = subprocess.run([sys.executable, str(train_py), str(config), "--work-dir", str(work)],
                             capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    log = next(work.glob("*/*.log")).read_text()
    assert re.search(r"Iter\(train\) \[1/1\].* loss: \d+\.\d+", log), log[-2000:]
