"""A config's ``gpu_count`` against the run's world size: said, scaled (--scale-lr) or
refused (--as-written), before anything is built."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from mmengine.config import Config

from seglab.cli import _forwarded_train_args, main, train_parser
from seglab.config.adapt import fit_world_size
from seglab.config.loading import ConfigError
from seglab.launch.env import launch_world_size
from tests.conftest import REPO_ROOT

# seed 000's ADE20K v1.0: gpu_count = 3, samples_per_gpu = 2, lr 6e-6 (total batch 6)
GPU_COUNT_3 = REPO_ROOT / "configs" / "segformer" / "segformer_mit-b2_ade20k_v1.0.py"


def written_for(gpu_count: int | None, lr: float = 6e-6, **extra) -> Config:
    cfg = dict(train_dataloader=dict(batch_size=2), optim_wrapper=dict(
        type="OptimWrapper", optimizer=dict(type="AdamW", lr=lr)), **extra)
    if gpu_count is not None:
        cfg["gpu_count"] = gpu_count
    return Config(cfg)


def test_world_size_comes_from_the_launcher(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert launch_world_size("pytorch") == 8
    assert launch_world_size("slurm") == 4
    assert launch_world_size("mpi") == 2
    assert launch_world_size("none") == 1  # a stray WORLD_SIZE without a launcher: 1 process
    monkeypatch.delenv("WORLD_SIZE")
    assert launch_world_size("pytorch") == 1


def test_the_written_world_size_says_nothing() -> None:
    cfg = written_for(3)
    assert fit_world_size(cfg, 3) == []
    assert fit_world_size(cfg, 3, as_written=True) == []
    assert fit_world_size(written_for(None), 8, as_written=True) == []  # no gpu_count
    assert cfg.optim_wrapper.optimizer.lr == 6e-6


def test_another_world_size_is_one_explicit_line_with_the_lr_unchanged(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "8")
    cfg = written_for(3)
    (line,) = fit_world_size(cfg, launch_world_size("pytorch"))
    assert "gpu_count=3 but world size 8" in line
    assert "total batch 16 (8 x 2), not the 6 (3 x 2)" in line
    assert "LR unchanged at 6e-06" in line and "--scale-lr" in line
    assert cfg.optim_wrapper.optimizer.lr == 6e-6


def test_scale_lr_applies_the_linear_rule(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "8")
    cfg = written_for(3)
    (line,) = fit_world_size(cfg, launch_world_size("pytorch"), scale_lr=True)
    assert math.isclose(cfg.optim_wrapper.optimizer.lr, 6e-6 * 16 / 6)
    assert "LR scaled by the linear rule (--scale-lr): 6e-06 x 16/6 = 1.6e-05" in line
    fewer = written_for(3)
    fit_world_size(fewer, 1, scale_lr=True)
    assert math.isclose(fewer.optim_wrapper.optimizer.lr, 2e-6)


def test_scale_lr_leaves_auto_scale_lr_alone() -> None:
    cfg = written_for(3, auto_scale_lr=dict(enable=True, base_batch_size=16))
    (line,) = fit_world_size(cfg, 8, scale_lr=True)
    assert cfg.optim_wrapper.optimizer.lr == 6e-6  # mmengine scales it once, at build
    assert "auto_scale_lr" in line and "not applied on top" in line


def test_as_written_refuses_another_world_size(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "8")
    with pytest.raises(ConfigError, match=r"gpu_count=3 but this run has 8 process") as err:
        fit_world_size(written_for(3), launch_world_size("pytorch"), as_written=True)
    assert "dist_train.sh CONFIG 3" in str(err.value)


def test_the_flags_parse_exclude_each_other_and_are_forwarded(capsys) -> None:
    args = train_parser().parse_args([str(GPU_COUNT_3), "--scale-lr"])
    assert (args.scale_lr, args.as_written) == (True, False)
    assert _forwarded_train_args(args) == ["--scale-lr"]
    args = train_parser().parse_args([str(GPU_COUNT_3), "--as-written"])
    assert _forwarded_train_args(args) == ["--as-written"]
    with pytest.raises(SystemExit) as exc:
        train_parser().parse_args([str(GPU_COUNT_3), "--scale-lr", "--as-written"])
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_as_written_exits_2_before_building(tmp_path: Path, monkeypatch, capsys,
                                                   seed_weights_cwd: Path) -> None:
    """``tools/dist_train.sh CONFIG 8 --as-written`` on a gpu_count=3 config: each rank sees
    WORLD_SIZE=8 and refuses after the doctor, before a process group or model exists."""
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    work_dir = tmp_path / "run"
    code = main(["train", str(GPU_COUNT_3), "--launcher", "pytorch", "--as-written",
                 "--work-dir", str(work_dir)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "seglab: error: --as-written:" in err and "Traceback" not in err
    assert "gpu_count=3" in err and "8 process(es)" in err and "Fix:" in err
    assert not work_dir.exists()


@pytest.mark.slow
def test_train_builds_the_runner_from_the_scaled_lr(tmp_path: Path, monkeypatch,
                                                    seed_weights_cwd: Path) -> None:
    """Through ``train()`` without a launcher (world size 1) on the gpu_count=3 config:
    --scale-lr reaches the config the runner is built from (stopped there)."""
    from seglab.data.synth import write_synth_dataset
    from seglab.engine import runner as engine

    class Built(Exception):
        pass

    def stop(cfg: Config) -> None:
        raise Built(cfg)

    monkeypatch.setattr(engine, "_build_runner", stop)
    root = write_synth_dataset("ade20k", tmp_path, num_train=4, num_val=2, seed=0).root
    with pytest.raises(Built) as built:
        engine.train(str(GPU_COUNT_3), work_dir=str(tmp_path / "run"), data_root=str(root),
                     scale_lr=True)
    cfg = built.value.args[0]
    assert math.isclose(cfg.optim_wrapper.optimizer.lr, 6e-6 * 2 / 6)
