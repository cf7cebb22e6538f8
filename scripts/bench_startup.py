"""Benchmark start-up: launch to the end of the first training step, stock mmseg vs seglab.

Prints figures, asserts nothing:
    .venv/bin/python scripts/bench_startup.py [--runs 5] [--config CONFIG]

Both sides train the same config (default: the VOC demo) on the same generated VOC-layout
data (8 training images: one step of the demo's batch of 8), each run a fresh process:
stock is mmseg's own ``tools/train.py`` (the one inside the mmsegmentation package), seglab is
``python -m seglab.cli train``. One probe hook, the same on both sides, records the wall time
from launch to the runner being built and to the end of the first step; seglab's breakdown
(imports, config, doctor, data check, runner, first step) is its own ``start-up`` log line. The
sides alternate which goes first; medians over ``--runs``. The data check's cache is warm after
the first seglab run (a launch on unchanged data), and so is the page cache for both.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VOC_DEMO = REPO_ROOT / "configs" / "demo" / "segformer_mit-b0_synth-voc_v1.0.py"
PROBE = '''
import json, os, time
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

T0 = float(os.environ["BENCH_T0"])
MARKS = {"probe imported": time.time() - T0}


@HOOKS.register_module()
class StartupProbe(Hook):
    priority = "VERY_LOW"

    def before_run(self, runner):
        MARKS["runner built"] = time.time() - T0

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if "first step" not in MARKS:
            MARKS["first step"] = time.time() - T0
            with open(os.environ["BENCH_OUT"], "w") as f:
                json.dump(MARKS, f)
'''
SEGLAB_LINE = re.compile(r"seglab: start-up ([\d.]+) s to the first step: (.*)")


def stock_train_py() -> Path:
    import mmseg

    return Path(mmseg.__file__).parent / ".mim" / "tools" / "train.py"


# The config both sides train: CONFIG with the probe added (it replaces CONFIG's custom_hooks,
# which the demo configs do not have; seglab adds its own hooks to every run).
PROBED_CONFIG = """_base_ = [{config!r}]
custom_imports = dict(imports=['seglab.register', 'startup_probe'], allow_failed_imports=False)
custom_hooks = [dict(type='StartupProbe')]
"""


def options(data_root: str) -> list[str]:
    opts = ["train_cfg.max_epochs=1", "train_cfg.val_interval=10",
            "train_dataloader.dataset.indices=8", "default_hooks.checkpoint.interval=10"]
    return opts + [f"{split}_dataloader.dataset.data_root={data_root}"
                   for split in ("train", "val", "test")]


def one_run(side: str, config: str, data_root: str, work: Path, probe_dir: Path) -> dict:
    out = work / f"{side}.json"
    command = ([sys.executable, str(stock_train_py()), config] if side == "mmseg" else
               [sys.executable, "-m", "seglab.cli", "train", config, "--min-pretrained-coverage",
                "0"])
    command += ["--work-dir", str(work / side), "--cfg-options", *options(data_root)]
    env = {**os.environ, "BENCH_OUT": str(out),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(probe_dir),
                                                       os.environ.get("PYTHONPATH")]))}
    env["BENCH_T0"] = repr(time.time())
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not out.is_file():
        raise SystemExit(f"{side} run failed (rc {done.returncode}):\n{done.stderr[-3000:]}")
    marks = json.loads(out.read_text())
    found = SEGLAB_LINE.search(done.stdout + done.stderr)
    if found:
        marks["phases"] = {name.strip(): float(seconds) for name, seconds in
                           re.findall(r"([a-z ]+?) ([\d.]+) s", found.group(2))}
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--config", default=str(VOC_DEMO))
    args = parser.parse_args()
    from seglab.data.synth import write_synth_dataset

    with tempfile.TemporaryDirectory(prefix="seglab-bench-startup-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "startup_probe.py").write_text(PROBE)
        config = tmp_path / Path(args.config).name
        config.write_text(PROBED_CONFIG.format(config=str(Path(args.config).resolve())))
        data_root = str(write_synth_dataset("voc", tmp_path / "data", num_train=8, num_val=4,
                                            seed=0).root)
        runs: dict[str, list[dict]] = {"mmseg": [], "seglab": []}
        for i in range(args.runs):
            for side in (("mmseg", "seglab") if i % 2 == 0 else ("seglab", "mmseg")):
                work = tmp_path / f"run{i}"
                runs[side].append(one_run(side, str(config), data_root, work, tmp_path))
                print(f"run {i} {side}: {runs[side][-1]['first step']:.2f} s to the first step",
                      flush=True)

    def median(side: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[side])

    print(f"\nlaunch -> end of the first training step, median of {args.runs} "
          f"({Path(args.config).name}, {os.cpu_count()} CPUs):")
    print("| side | probe imported (imports + config) | runner built | first step |")
    print("| --- | --- | --- | --- |")
    for side in runs:
        print(f"| {side} | {median(side, 'probe imported'):.2f} s | "
              f"{median(side, 'runner built'):.2f} s | {median(side, 'first step'):.2f} s |")
    stock, ours = median("mmseg", "first step"), median("seglab", "first step")
    print(f"seglab - mmseg: {ours - stock:+.2f} s; seglab / mmseg: {ours / stock:.3f}")
    phases = [r["phases"] for r in runs["seglab"] if "phases" in r]
    if phases:
        print("seglab's own breakdown (median s): " + ", ".join(
            f"{name} {statistics.median(p[name] for p in phases):.2f}" for name in phases[0]))


if __name__ == "__main__":
    main()
