"""The prepared device check: does seglab train, resume and test on this machine's GPU?

``scripts/gpu_check.sh`` runs it. On a CUDA machine: every config in ``configs/``
trains for 20 iterations at its own crop and per-GPU batch with its AMP setting
(losses must stay finite), ``tools/dist_train.sh CONFIG 1`` over NCCL, a
``kill -9`` + ``--resume``, ``seglab test`` with the per-class record, and a
throughput table (mmseg's own ``tools/train.py`` vs ``seglab train`` on the same
config). ``--tiny`` runs the same stages at CPU size, which CI does so the script
cannot rot. Results go to ``OUT/gpu_check.json`` and ``.md`` after every stage, so a
run cut off by its time limit still returns what it did.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seglab import REPO_ROOT

CONFIGS_DIR = REPO_ROOT / "configs"
DEMO_CONFIG = CONFIGS_DIR / "demo" / "segformer_mit-b0_synth-voc_v1.0.py"
# (name, mmseg's packaged config, per-GPU batch, AMP) for the throughput table
THROUGHPUT_MODELS = (
    ("SegFormer-MiT-B2 512x512", "segformer/segformer_mit-b2_8xb2-160k_ade20k-512x512.py", 2,
     True),
    ("UPerNet-R50 512x512", "upernet/upernet_r50_4xb4-80k_ade20k-512x512.py", 4, False),
)
PSANET = "psanet/psanet_r50-d8_4xb4-80k_ade20k-512x512.py"


@dataclass
class Sizes:
    """How big each stage is: the device sizes, or the CI-sized ``--tiny`` ones."""

    iterations: int = 20  # per config
    crop: tuple[int, int] | None = None  # None: each config's own crop
    batch_size: int | None = None  # None: each config's own per-GPU batch
    num_workers: int = 4
    synth_images: int = 160  # 20 steps of the demo configs' batch of 8
    resume_images: int = 96  # 12 steps an epoch: the kill lands inside a later epoch
    resume_epochs: int = 4
    throughput_iters: int = 80
    throughput_warmup: int = 20
    log_interval: int = 5
    config_glob: str = "**/*.py"

    @classmethod
    def tiny(cls) -> Sizes:
        return cls(iterations=2, crop=(64, 64), batch_size=2, num_workers=1, synth_images=8,
                   resume_images=16, resume_epochs=2, throughput_iters=4, throughput_warmup=1,
                   log_interval=1, config_glob="demo/*.py")


@dataclass
class Recorder:
    """Results so far, written as JSON and Markdown after every change."""

    out: Path
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.data.setdefault("stages", {})

    def write(self) -> None:
        for name, text in (("gpu_check.json", json.dumps(self.data, indent=1, default=str)),
                           ("gpu_check.md", markdown(self.data))):
            partial = self.out / (name + ".partial")
            partial.write_text(text)
            partial.replace(self.out / name)

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        """Record one stage: its figures, ``ok``/``failed``, seconds; a failure is kept and the
        next stage still runs."""
        entry: dict[str, Any] = {"status": "running"}
        self.data["stages"][name] = entry
        self.write()
        start = time.monotonic()
        try:
            yield entry
            entry["status"] = "failed" if entry.get("failures") else "ok"
        except Exception as err:  # a stage's failure is a finding, not the end of the check
            entry["status"] = "failed"
            entry["error"] = f"{type(err).__name__}: {err}"[-2000:]
            entry["traceback"] = traceback.format_exc()[-4000:]
        entry["seconds"] = round(time.monotonic() - start, 1)
        self.write()


def environment() -> dict[str, Any]:
    import mmcv
    import mmengine
    import mmseg
    import torch
    from mmcv.ops import get_compiling_cuda_version

    facts: dict[str, Any] = {
        "python": sys.version.split()[0], "torch": torch.__version__,
        "torch_cuda": torch.version.cuda, "mmcv": mmcv.__version__,
        "mmcv_ops_cuda": get_compiling_cuda_version(), "mmengine": mmengine.__version__,
        "mmseg": mmseg.__version__, "cuda_available": torch.cuda.is_available(),
        "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts.update(gpu=props.name, gpus=torch.cuda.device_count(),
                     gpu_memory_gib=round(props.total_memory / 2**30, 1),
                     capability=f"{props.major}.{props.minor}",
                     bf16=torch.cuda.is_bf16_supported(),
                     nccl=".".join(map(str, torch.cuda.nccl.version())))
    return facts


def kernel_readiness() -> dict[str, Any]:
    """What the installed mmcv means on a GPU: FocalLoss's path, and the refusal of a config
    whose op has no PyTorch path (PSANet's PSAMask) when mmcv lacks CUDA kernels."""
    import torch

    from seglab.config.loading import ConfigError, load_config
    from seglab.config.walk import mmseg_config_dir
    from seglab.models.focal_loss import mmcv_focal_kernel_supports
    from seglab.platform.mmcv_ops import check_mmcv_kernels

    facts: dict[str, Any] = {
        f"focal_kernel_cuda_{dtype}": mmcv_focal_kernel_supports("cuda", getattr(torch, dtype))
        for dtype in ("float32", "float16", "bfloat16")}
    try:
        check_mmcv_kernels(load_config(mmseg_config_dir() / PSANET), "cuda")
        facts["psanet_on_cuda"] = "accepted (mmcv has the CUDA kernels)"
    except ConfigError as err:
        facts["psanet_on_cuda"] = f"refused before building: {err}"
    return facts


def make_data(root: Path, images: int) -> dict[str, str]:
    from seglab.data.synth import write_synth_dataset

    voc = write_synth_dataset("voc", root, num_train=images, num_val=8, seed=5, with_aug=True)
    ade = write_synth_dataset("ade20k", root, num_train=images, num_val=8, seed=5)
    return {"voc": str(voc.root), "ade20k": str(ade.root)}


def _finite(values: list[float]) -> bool:
    return all(v == v and abs(v) < float("inf") for v in values)


def train_one_config(path: Path, data: dict[str, str], work: Path, sizes: Sizes) -> dict:
    """One config through ``seglab.engine.runner.train`` (seglab's hooks on): its table row."""
    import torch
    from mmengine.config import Config

    from seglab.config.loading import load_config
    from seglab.engine.runner import train
    from seglab.testing.smoke import smoke_config

    row: dict[str, Any] = {"config": path.relative_to(CONFIGS_DIR).as_posix()}
    run_dir = work / "configs" / path.stem
    try:
        cfg = smoke_config(load_config(path), data, str(run_dir), sizes.iterations,
                           sizes.batch_size, sizes.crop, sizes.num_workers)
        wrapper = cfg.optim_wrapper
        row.update(batch=cfg.train_dataloader.batch_size,
                   crop=list(cfg.model.data_preprocessor.size or ()),
                   amp=wrapper.get("dtype", "float16")
                   if wrapper.get("type") == "AmpOptimWrapper" else "fp32")
        shrunk = work / "configs" / f"{path.stem}.py"
        shrunk.parent.mkdir(parents=True, exist_ok=True)
        Config.dump(cfg, str(shrunk))
        runner = train(str(shrunk), work_dir=str(run_dir), ignore_doctor_errors=True,
                       min_pretrained_coverage=0.0)
        hub = runner.message_hub
        losses = [float(v) for v in hub.get_scalar("train/loss").data[0]]
        times = [float(v) for v in hub.get_scalar("train/time").data[0]]
        # mmengine's log processor resets the peak each interval, so the logged values hold
        # it; the first steps' include cuDNN's algorithm search (cudnn_benchmark), not training
        memory = [r["memory"] for r in _scalars(run_dir) if "memory" in r]
        memory = memory[len(memory) // 2:]
        row.update(iterations=runner.iter, loss_first=round(losses[0], 4),
                   loss_last=round(losses[-1], 4), finite=_finite(losses),
                   s_per_iter=round(statistics.median(times[len(times) // 2:]), 4),
                   device=str(next(runner.model.parameters()).device),
                   peak_gib=round(max(memory) / 1024, 2) if memory else None,
                   ok=_finite(losses) and runner.iter == sizes.iterations)
        del runner
    except Exception as err:
        row.update(error=f"{type(err).__name__}: {err}"[-1500:], ok=False)
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return row


def train_every_config(entry: dict, data: dict[str, str], work: Path, sizes: Sizes,
                       jobs: int = 1, flush: Callable[[], None] = lambda: None) -> None:
    """Every config in ``configs/``; ``jobs`` > 1 trains that many at once on the GPU (each
    in its own spawned process), which cuts the stage's wall time, mostly start-up."""
    configs = sorted(p for p in CONFIGS_DIR.glob(sizes.config_glob) if "_base_" not in p.parts)
    entry["configs"], entry["failures"] = [], []

    def record(row: dict) -> None:
        entry["configs"].append(row)
        if not row["ok"]:
            entry["failures"].append(row["config"])
        flush()

    if jobs <= 1:
        for path in configs:
            record(train_one_config(path, data, work, sizes))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # Not multiprocessing.Pool: its workers are daemons, which may not start the
    # DataLoader's worker processes. Spawned, since CUDA cannot be used after a fork.
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(train_one_config, p, data, work, sizes) for p in configs]
        for future in as_completed(futures):
            record(future.result())
    entry["configs"].sort(key=lambda r: r["config"])


def _train_command(config: Path | str, gpus: int, *args: str) -> list[str]:
    """``tools/dist_train.sh CONFIG N`` where CUDA is; ``seglab train`` on the CPU."""
    if gpus:
        return ["bash", str(REPO_ROOT / "tools" / "dist_train.sh"), str(config), str(gpus), *args]
    return [sys.executable, "-m", "seglab.cli", "train", str(config), *args]


# ``time.time()`` after which no step may still run (``run_check`` sets it; None: no limit)
DEADLINE: list[float | None] = [None]


def _time_left(cap: float) -> float:
    """``cap`` seconds, or less when the check's deadline comes first."""
    if DEADLINE[0] is None:
        return cap
    return max(1.0, min(cap, DEADLINE[0] - time.time()))


def _run(command: list[str], log: Path, timeout: float) -> int:
    with log.open("w") as out:
        return subprocess.run(command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                              timeout=_time_left(timeout)).returncode


def _tail(log: Path, chars: int = 1500) -> str:
    """The end of a subprocess's log, kept in the results of a failed step."""
    return log.read_text(errors="replace")[-chars:] if log.is_file() else "(no log)"


def _scalars(work_dir: Path) -> list[dict[str, Any]]:
    """mmengine's per-interval training records (``vis_data/scalars.json``) of a run."""
    rows = []
    for path in sorted(work_dir.glob("*/vis_data/scalars.json")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if "loss" in r and "iter" in r]


def _weights(checkpoint: Path) -> dict[str, Any]:
    from seglab.engine.checkpoint import load_checkpoint_file

    return load_checkpoint_file(str(checkpoint), map_location="cpu")["state_dict"]


def processes_mentioning(text: str, settle_s: float = 0.0) -> list[int]:
    """Live processes whose command line contains ``text``, waiting up to ``settle_s`` for
    them to end (a killed process takes a moment to go)."""
    deadline = time.monotonic() + settle_s
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                        found.append(int(entry.name))
                except OSError:
                    continue  # ended while we looked
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s")
        time.sleep(0.2)


def resume_after_kill(entry: dict, data: dict[str, str], work: Path, sizes: Sizes,
                      gpus: int) -> Path:
    """A straight run, and one killed with SIGKILL after its first checkpoint then resumed:
    both through ``tools/dist_train.sh`` (NCCL on GPUs). Returns the final checkpoint."""
    args = ["--data-root", data["voc"], "--cfg-options",
            f"train_cfg.max_epochs={sizes.resume_epochs}", "train_cfg.val_interval=100",
            f"train_dataloader.dataset.indices={sizes.resume_images}",
            f"train_dataloader.num_workers={max(sizes.num_workers, 1)}",
            "train_dataloader.persistent_workers=False", "default_hooks.logger.interval=1",
            "randomness.seed=7"]
    straight, killed = work / "resume_straight", work / "resume_killed"
    rc = _run(_train_command(DEMO_CONFIG, gpus, "--work-dir", str(straight), *args),
              work / "resume_straight.log", 600)
    entry["straight_rc"] = rc
    log_text = (work / "resume_straight.log").read_text(errors="replace")
    if "Distributed training: True" not in log_text:
        entry["backend"] = "none (one process)"
    else:  # seglab logs the switch to gloo; otherwise the config's NCCL is what ran
        entry["backend"] = "gloo" if "dist_cfg.backend=gloo" in log_text else "nccl"
    command = _train_command(DEMO_CONFIG, gpus, "--work-dir", str(killed), *args)
    with (work / "resume_killed.log").open("w") as out:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        _wait_for(lambda: (killed / "last_checkpoint").exists() or proc.poll() is not None,
                  _time_left(300))
        time.sleep(random.Random().uniform(0.0, 0.5))
        entry["killed_while_running"] = proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    entry["killed_at_checkpoint"] = (killed / "last_checkpoint").read_text().strip()
    left = processes_mentioning(str(killed), settle_s=10)
    entry["ranks_left_after_kill"] = len(left)
    for pid in left:  # a rank that outlived its launcher would write over the resume
        os.kill(pid, signal.SIGKILL)
    rc_resume = _run(_train_command(DEMO_CONFIG, gpus, "--work-dir", str(killed), "--resume",
                                    *args), work / "resume_resumed.log", 600)
    entry["resumed_rc"] = rc_resume
    final = killed / f"epoch_{sizes.resume_epochs}.pth"
    failures = [f"{len(left)} rank process(es) still ran after kill -9"] if left else []
    if rc or rc_resume or not final.is_file():
        failures.append(f"runs ended rc={rc}/{rc_resume}, final checkpoint "
                        f"{'present' if final.is_file() else 'missing'}: "
                        + _tail(work / ("resume_straight.log" if rc else "resume_resumed.log")))
    else:
        a, b = _weights(straight / final.name), _weights(final)
        diffs = [float((a[k].float() - b[k].float()).abs().max()) for k in a
                 if a[k].is_floating_point()]
        entry["weights_max_abs_diff"] = max(diffs)
        entry["tensors_bitwise_equal"] = f"{sum(d == 0 for d in diffs)}/{len(diffs)}"
        first_loss = {r["iter"]: r["loss"] for r in _scalars(straight)}
        resumed = {r["iter"]: r["loss"] for r in _scalars(killed)}
        common = sorted(set(first_loss) & set(resumed))
        entry["loss_max_rel_diff"] = max(abs(first_loss[i] - resumed[i]) / max(abs(
            first_loss[i]), 1e-12) for i in common) if common else None
    entry["failures"] = failures
    return final


def test_checkpoint(entry: dict, data: dict[str, str], work: Path, checkpoint: Path) -> None:
    """``seglab test`` on the resumed run's checkpoint: the table and the per-class record."""
    log = work / "test.log"
    rc = _run([sys.executable, "-m", "seglab.cli", "test", str(DEMO_CONFIG), str(checkpoint),
               "--work-dir", str(work / "test"), "--data-root", data["voc"]], log, 300)
    record = work / "test" / "class_metrics" / "test.json"
    entry["rc"] = rc
    entry["table_printed"] = "per class results" in log.read_text()
    if record.is_file():
        summary = json.loads(record.read_text())
        entry["classes"] = len(summary.get("classes", []))
        entry["mIoU"] = summary.get("summary", {}).get("mIoU")
    entry["failures"] = [] if rc == 0 and entry["table_printed"] and record.is_file() else [
        f"seglab test rc={rc}, table printed={entry['table_printed']}, record "
        f"{'present' if record.is_file() else 'missing'}: {_tail(log)}"]


def _throughput_run(command: list[str], work_dir: Path, batch: int, sizes: Sizes,
                    log: Path) -> dict[str, Any]:
    start = time.monotonic()
    rc = _run(command, log, 600)
    rows = [r for r in _scalars(work_dir) if r["iter"] > sizes.throughput_warmup]
    result: dict[str, Any] = {"rc": rc, "wall_s": round(time.monotonic() - start, 1)}
    if rc == 0 and rows:
        steps = [r["time"] for r in rows]
        result["img_per_s"] = round(batch / statistics.median(steps), 2)
        # how much the step time moved within the run: a seglab/mmseg ratio inside this
        # spread is noise (a small-batch AMP step is bound by kernel launches on the CPU)
        result["step_cv"] = round(statistics.pstdev(steps) / statistics.fmean(steps), 3)
        memory = [r["memory"] for r in rows if "memory" in r]
        result["peak_gib"] = round(max(memory) / 1024, 2) if memory else None
    return result


def throughput_config(rel: str, data: dict[str, str], work: Path, sizes: Sizes,
                      batch: int) -> Path:
    """mmseg's packaged config with only the run's length, data, batch and (``--tiny``) size
    changed, written once so that both paths train the very same file."""
    from mmengine.config import Config

    from seglab.config.loading import set_data_root
    from seglab.config.walk import mmseg_config_dir, replace_types, strip_pretrained
    from seglab.testing.smoke import shrink_pipeline

    cfg = Config.fromfile(str(mmseg_config_dir() / rel))
    set_data_root(cfg, data["ade20k"])
    strip_pretrained(cfg.model)  # random initialisation: nothing is downloaded
    cfg.train_dataloader.update(batch_size=batch, num_workers=max(sizes.num_workers, 1))
    cfg.train_cfg.update(max_iters=sizes.throughput_iters, val_interval=10**6)
    cfg.default_hooks.logger.interval = sizes.log_interval
    cfg.default_hooks.checkpoint.update(interval=10**6, save_last=False)
    if sizes.crop is not None:  # CPU-sized; SyncBN needs CUDA and a process group
        shrink_pipeline(cfg.train_dataloader.dataset.pipeline, sizes.crop)
        cfg.model.data_preprocessor.size = sizes.crop
        replace_types(cfg.model, "SyncBN", "BN")
    path = work / "throughput" / Path(rel).name
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg.dump(str(path))
    return path


def throughput(entry: dict, data: dict[str, str], work: Path, sizes: Sizes, gpus: int,
               flush: Callable[[], None] = lambda: None) -> None:
    """img/s and peak memory, mmseg's ``tools/train.py`` vs ``seglab train``, same config."""
    from seglab.config.walk import mmseg_config_dir

    tools = mmseg_config_dir().parent / "tools" / "train.py"
    entry["rows"], entry["failures"] = [], []
    for index, (name, rel, batch, amp) in enumerate(THROUGHPUT_MODELS):
        config = throughput_config(rel, data, work, sizes, batch)
        amp_args = ["--amp"] if amp and gpus else []
        # mmseg's --amp autocasts to fp16; seglab's would pick bf16 on this GPU
        seglab_amp = [*amp_args, "--amp-dtype", "fp16"] if amp_args else []
        # the side that runs first alternates between models, so that the first GPU process
        # of the stage (cold clocks, cold page cache) is not always the same side's
        order = ("mmseg", "seglab") if index % 2 == 0 else ("seglab", "mmseg")
        row: dict[str, Any] = {"model": name, "config": f"mmseg::{rel}", "batch": batch,
                               "amp": bool(amp_args), "order": list(order)}
        for label in order:
            run_dir = work / "throughput" / f"{config.stem}_{label}"
            log = work / f"throughput_{config.stem}_{label}.log"
            if label == "mmseg":
                launch = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                           str(gpus), "--master_port", str(_free_port()), str(tools)]
                          if gpus else [sys.executable, str(tools)])
                command = [*launch, str(config), "--work-dir", str(run_dir), *amp_args,
                           "--launcher", "pytorch" if gpus else "none"]
            else:
                command = _train_command(config, gpus, "--work-dir", str(run_dir), *seglab_amp,
                                         "--ignore-doctor-errors", "--min-pretrained-coverage",
                                         "0")
            row[label] = _throughput_run(command, run_dir, batch, sizes, log)
            if row[label]["rc"] != 0:
                entry["failures"].append(f"{name} via {label}: rc={row[label]['rc']}: "
                                         + _tail(log))
        if row["mmseg"].get("img_per_s") and row["seglab"].get("img_per_s"):
            row["seglab_vs_mmseg"] = round(row["seglab"]["img_per_s"]
                                           / row["mmseg"]["img_per_s"], 3)
        entry["rows"].append(row)
        flush()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def markdown(data: dict[str, Any]) -> str:
    """The human-readable summary: environment, stage status, tables."""
    env = data.get("environment", {})
    lines = ["# seglab device check", "",
             f"mode: {data.get('mode')}; started {data.get('started')}", ""]
    if env:
        lines += ["| fact | value |", "| --- | --- |",
                  *(f"| {k} | {v} |" for k, v in env.items()), ""]
    lines += ["| stage | status | seconds |", "| --- | --- | --- |"]
    stages = data.get("stages", {})
    for name, entry in stages.items():
        lines.append(f"| {name} | {entry.get('status')} | {entry.get('seconds', '')} |")
    configs = stages.get("configs", {}).get("configs", [])
    if configs:
        lines += ["", "| config | batch | crop | AMP | iters | loss first -> last | finite | "
                  "s/iter | peak GiB |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in configs:
            loss = (f"{r.get('loss_first')} -> {r.get('loss_last')}" if "loss_first" in r
                    else r.get("error", "")[:120])
            lines.append(f"| {r['config']} | {r.get('batch', '')} | {r.get('crop', '')} | "
                         f"{r.get('amp', '')} | {r.get('iterations', '')} | {loss} | "
                         f"{r.get('finite', '')} | {r.get('s_per_iter', '')} | "
                         f"{r.get('peak_gib', '')} |")
    rows = stages.get("throughput", {}).get("rows", [])
    if rows:
        lines += ["", "| model | batch | AMP | first | mmseg img/s | seglab img/s | seglab/mmseg | "
                  "step CV mmseg / seglab | mmseg peak GiB | seglab peak GiB |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            m, s = r.get("mmseg", {}), r.get("seglab", {})
            lines.append(f"| {r['model']} | {r['batch']} | {r['amp']} | "
                         f"{r.get('order', ['mmseg'])[0]} | {m.get('img_per_s')} | "
                         f"{s.get('img_per_s')} | {r.get('seglab_vs_mmseg')} | "
                         f"{m.get('step_cv')} / {s.get('step_cv')} | "
                         f"{m.get('peak_gib')} | {s.get('peak_gib')} |")
    for name, entry in stages.items():
        details = {k: v for k, v in entry.items()
                   if k not in ("configs", "rows", "status", "seconds", "traceback")}
        if details:
            lines += ["", f"## {name}", "", "```", json.dumps(details, indent=1, default=str),
                      "```"]
    return "\n".join(lines) + "\n"


STAGES = ("environment", "configs", "resume", "test", "throughput")
# Seconds each stage needs on one H100 at full size (measured there on 2026-11-26: 16 configs
# 3 at a time 166 s, resume 126 s, test 22 s, throughput at 50 iterations 185 s; now 80):
# a stage is skipped, and says so, when the deadline leaves less.
STAGE_SECONDS = {"configs": 170, "resume": 130, "test": 25, "throughput": 200}


def run_check(out: Path, tiny: bool = False, only: tuple[str, ...] = STAGES,
              work: Path | None = None, deadline: float | None = None,
              jobs: int = 1) -> dict[str, Any]:
    """Run the stages in ``only``; return the recorded results (also in ``out``).

    Data, runs and logs go to ``work`` (default ``$TMPDIR/seglab_gpu_check``). ``deadline`` is a
    ``time.time()`` after which no stage should still run (the device's time limit);
    ``jobs`` configs train at once in the configs stage.
    """
    import torch

    sizes = Sizes.tiny() if tiny else Sizes()
    gpus = torch.cuda.device_count() and 1  # the check uses one GPU, as a node's rank does
    recorder = Recorder(out, {"mode": "tiny" if tiny else "full",
                              "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "command": shlex.join(sys.argv)})
    work = work or Path(tempfile.gettempdir()) / "seglab_gpu_check"
    DEADLINE[0] = deadline

    def wanted(stage: str) -> bool:
        if stage not in only:
            return False
        left = None if deadline is None else deadline - time.time()
        if left is not None and left < STAGE_SECONDS[stage]:
            recorder.data["stages"][stage] = {
                "status": "skipped", "why": f"{left:.0f} s left before the deadline, the stage "
                f"needs ~{STAGE_SECONDS[stage]} s: rerun with --only {stage}"}
            recorder.write()
            return False
        return True

    with recorder.stage("environment") as entry:
        recorder.data["environment"] = environment()
        entry["mmcv_kernels"] = kernel_readiness()
        data = make_data(work / "data", sizes.synth_images)
        entry["data"] = data
    if wanted("configs"):
        with recorder.stage("configs") as entry:
            train_every_config(entry, data, work, sizes, jobs, recorder.write)
    checkpoint = None
    if wanted("resume"):
        with recorder.stage("resume") as entry:
            checkpoint = resume_after_kill(entry, data, work, sizes, gpus)
    if checkpoint is not None and checkpoint.is_file() and wanted("test"):
        with recorder.stage("test") as entry:
            test_checkpoint(entry, data, work, checkpoint)
    if wanted("throughput"):
        with recorder.stage("throughput") as entry:
            throughput(entry, data, work, sizes, gpus, recorder.write)
    return recorder.data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT") or "work_dirs/gpu_check",
                        help="results folder (default: $OUT, else work_dirs/gpu_check)")
    parser.add_argument("--tiny", action="store_true", help="CPU-sized run (what CI does)")
    parser.add_argument("--only", nargs="+", choices=STAGES, default=list(STAGES),
                        help="stages to run (environment always runs)")
    parser.add_argument("--work", type=Path, help="data, runs and logs (default: "
                        "$TMPDIR/seglab_gpu_check, so that OUT holds only the results)")
    parser.add_argument("--deadline-s", type=float, help="seconds (from GPU_CHECK_STARTED, "
                        "else now) after which no stage may still run: later stages are "
                        "skipped and say so")
    parser.add_argument("--jobs", type=int, help="configs trained at once (default: 3 on a "
                        "GPU, 1 on the CPU)")
    args = parser.parse_args(argv)
    import torch

    started = float(os.environ.get("GPU_CHECK_STARTED") or time.time())
    deadline = started + args.deadline_s if args.deadline_s else None
    jobs = args.jobs or (3 if torch.cuda.is_available() else 1)
    data = run_check(Path(args.out), tiny=args.tiny, only=tuple(args.only), work=args.work,
                     deadline=deadline, jobs=jobs)
    failed = [n for n, e in data["stages"].items() if e["status"] != "ok"]
    print(markdown(data))
    print(f"seglab gpu check: {len(data['stages']) - len(failed)} stage(s) ok"
          + (f", failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
